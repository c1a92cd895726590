"""probes.fixed_points in a trial: the four tables with the columns of the contract, states that
match the module's own outputs, PCs checked against numpy, and the trial row's counts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rnn_diag.experiments.config import ConfigError, validate_config
from rnn_diag.experiments.derived_columns import fixed_point_columns
from rnn_diag.experiments.fixed_point_tables import fixed_point_tables, layer_states
from rnn_diag.experiments.grid import expand
from rnn_diag.experiments.store import INT_COLUMNS, Store, Table, trials_frame
from rnn_diag.experiments.trial import run_trial

COLUMNS = {
    Table.FIXED_POINTS: ["when", "layer", "point", "q", "converged", "outlier", "count",
                         "stability", "n_unstable", "max_modulus", "pc1", "pc2", "pc3",
                         "unstable_pc1", "unstable_pc2", "unstable_pc3"],
    Table.FIXED_POINT_EIGENVALUES: ["when", "layer", "point", "index", "real", "imag",
                                    "modulus"],
    Table.STATE_TRAJECTORIES: ["when", "layer", "sample", "t", "pc1", "pc2", "pc3"],
    Table.PCA: ["when", "layer", "component", "explained_variance_ratio"],
}
ROW_KEYS = ("fixed_points_stable_end", "fixed_points_saddle_end", "fixed_points_unstable_end",
            "fixed_points_marginal_end", "fixed_points_unconverged_end")


def config(cell="gru", layers=1, fixed_points=("init", 2, "end"), **probes):
    return {
        "name": "fp",
        "task": {"name": "flipflop", "seq_len": 12, "n_train": 32, "n_val": 16},
        "model": {"cell": cell, "hidden_size": 6, "num_layers": layers},
        "train": {"epochs": 3, "lr": 0.01, "seed": 1},
        "probes": {"gradients": False, "lyapunov": [], "spectra": [],
                   "fixed_points": list(fixed_points), "fixed_point_states": 24,
                   "fixed_point_trajectories": 3, **probes},
    }


def trial(data):
    return run_trial(expand(validate_config(data, "fp.yaml"))[0])


@pytest.mark.parametrize(("cell", "layers"), [("gru", 1), ("lstm", 2), ("rnn", 2)])
def test_trial_writes_the_tables_with_the_contract_columns(cell, layers, tmp_path):
    res = trial(config(cell, layers))
    assert res.row["status"] == "ok", res.row["error"]
    S = 12 if cell == "lstm" else 6  # LSTM: the joint [h | c]
    for name, columns in COLUMNS.items():
        df = res.tables[name]
        assert list(df.columns) == columns, name
        assert set(df["when"]) == {"init", "2", "end"}, name
        assert set(df["layer"]) == set(range(layers)), name
    fp, eig = res.tables[Table.FIXED_POINTS], res.tables[Table.FIXED_POINT_EIGENVALUES]
    for (when, layer), part in fp.groupby(["when", "layer"]):
        assert list(part["point"]) == list(range(len(part)))
        assert part["count"].sum() == 24  # every candidate lands in one point
        ev = eig[(eig["when"] == when) & (eig["layer"] == layer)]
        assert len(ev) == len(part) * S
        top = ev[ev["index"] == 0].set_index("point")["modulus"]
        np.testing.assert_allclose(top.loc[part["point"]].to_numpy(), part["max_modulus"])
        assert (ev.groupby("point")["modulus"].apply(lambda m: m.is_monotonic_decreasing)).all()
    has_unstable = fp["n_unstable"] >= 1
    unit = np.sqrt((fp[["unstable_pc1", "unstable_pc2", "unstable_pc3"]] ** 2).sum(axis=1))
    assert fp.loc[~has_unstable, "unstable_pc1"].isna().all()
    np.testing.assert_allclose(unit[has_unstable & fp["unstable_pc1"].notna()], 1.0)
    traj = res.tables[Table.STATE_TRAJECTORIES]
    assert len(traj) == 3 * layers * 3 * 12  # snapshots x layers x sequences x steps
    pca = res.tables[Table.PCA]
    assert (pca.groupby(["when", "layer"])["explained_variance_ratio"].sum() <= 1 + 1e-9).all()
    # the row: counts of the top layer at "end", stored as Int64
    end = fp[(fp["when"] == "end") & (fp["layer"] == layers - 1)]
    counted = end[end["converged"] & ~end["outlier"]]
    assert res.row["fixed_points_stable_end"] == int((counted["stability"] == "stable").sum())
    assert res.row["fixed_points_unconverged_end"] == int((~end["converged"]).sum())
    store = Store(tmp_path)
    store.save(res)
    trials = store.trials()
    for key in ROW_KEYS:
        assert str(trials[key].dtype) == "Int64" and key in INT_COLUMNS
    assert str(trials["slowest_stable_modulus_end"].dtype) == "float64"
    stored = store.table(Table.FIXED_POINTS)
    assert stored["trial"].unique().tolist() == [res.trial_id]
    assert stored["converged"].dtype == bool and stored["count"].dtype.kind == "i"


def test_layer_states_match_the_module():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 3)
    for module in (nn.LSTM(3, 4, num_layers=2, batch_first=True),
                   nn.GRU(3, 4, num_layers=2, batch_first=True)):
        states = layer_states(module, x)
        out, final = module(x)
        torch.testing.assert_close(states[-1][1], out)
        h_n = final[0] if isinstance(final, tuple) else final
        for layer, (s, o) in enumerate(states):
            torch.testing.assert_close(s[:, -1, :4], h_n[layer])
            torch.testing.assert_close(s[..., :4], o)
        if isinstance(module, nn.LSTM):
            for layer, (s, _) in enumerate(states):
                torch.testing.assert_close(s[:, -1, 4:], final[1][layer])  # c_T


def test_pcs_and_points_against_numpy():
    """With H = 3 the PCs are a rotation of the state, so the points can be recovered from the
    table and checked against the map tanh(W h + b) (zero input) and its Jacobian."""
    torch.manual_seed(3)
    rnn = nn.RNN(2, 3, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(6.0)  # several fixed points
    x = torch.randn(10, 9, 2)
    tables = fixed_point_tables(rnn, x, "end", n_states=60, n_trajectories=2, seed=0)
    states = layer_states(rnn, x)[0][0].double().reshape(-1, 3).numpy()
    mean = states.mean(0)
    _, sv, vt = np.linalg.svd(states - mean, full_matrices=False)
    np.testing.assert_allclose(tables["pca"]["explained_variance_ratio"],
                               sv**2 / (sv**2).sum())
    traj = tables["state_trajectories"]
    ref = (states[: 2 * 9] - mean) @ vt.T  # the first two sequences, sample-major
    got = traj[["pc1", "pc2", "pc3"]].to_numpy()
    signs = np.sign((got * ref).sum(0))  # PCs are defined up to sign
    np.testing.assert_allclose(got, ref * signs, atol=1e-10)
    fp, eig = tables["fixed_points"], tables["fixed_point_eigenvalues"]
    W = rnn.weight_hh_l0.double().detach().numpy()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).double().detach().numpy()
    conv = fp[fp["converged"]]
    assert len(conv) >= 2 and (conv["stability"] == "saddle").any()
    for _, point in conv.iterrows():
        h = mean + (point[["pc1", "pc2", "pc3"]].to_numpy(float) * signs) @ vt
        np.testing.assert_allclose(np.tanh(W @ h + b), h, atol=1e-8)
        lam = np.linalg.eigvals((1 - h**2)[:, None] * W)
        ours = eig[eig["point"] == point["point"]]
        np.testing.assert_allclose(np.sort(np.abs(lam))[::-1], ours["modulus"], atol=1e-7)
        assert point["n_unstable"] == int((np.abs(lam) > 1 + 1e-3).sum())
        vals, vecs = np.linalg.eig((1 - h**2)[:, None] * W)
        lead = np.argmax(np.abs(vals))
        if point["n_unstable"] >= 1 and abs(vals[lead].imag) < 1e-12:
            direction = (vecs[:, lead].real @ vt.T) * signs
            direction /= np.linalg.norm(direction)
            ours = point[["unstable_pc1", "unstable_pc2", "unstable_pc3"]].to_numpy(float)
            np.testing.assert_allclose(ours * np.sign(ours @ direction), direction, atol=1e-7)


def test_scan_cells_and_no_schedule_give_no_rows_and_missing_counts():
    res = trial({**config(), "model": {"cell": "lru", "hidden_size": 6}})
    assert res.row["status"] == "ok", res.row["error"]
    assert not set(COLUMNS) & set(res.tables)
    assert all(res.row[k] is None for k in ROW_KEYS)
    assert math.isnan(res.row["slowest_stable_modulus_end"])
    off = trial(config(fixed_points=()))
    assert not set(COLUMNS) & set(off.tables) and off.row["fixed_points_stable_end"] is None
    df = trials_frame([res.row, off.row])
    assert str(df["fixed_points_stable_end"].dtype) == "Int64"


def test_fixed_point_columns_use_the_top_layer_at_end():
    t = pd.DataFrame({
        "when": ["end", "end", "end", "end", "init"], "layer": [0, 1, 1, 1, 1],
        "converged": [True, True, True, False, True], "outlier": [False, False, True, False,
                                                                   False],
        "stability": ["stable", "stable", "stable", "saddle", "stable"],
        "max_modulus": [0.99, 0.5, 0.97, 1.5, 0.98]})
    row = fixed_point_columns(t)
    assert row == {"fixed_points_stable_end": 1, "fixed_points_saddle_end": 0,
                   "fixed_points_unstable_end": 0, "fixed_points_marginal_end": 0,
                   "fixed_points_unconverged_end": 1, "slowest_stable_modulus_end": 0.5}


@pytest.mark.parametrize(("probes", "pattern"), [
    ({"fixed_points": ["end", 9]}, r"probes\.fixed_points"),
    ({"fixed_point_states": 0}, "fixed_point_states"),
    ({"fixed_point_noise": -1.0}, "fixed_point_noise"),
    ({"fixed_point_tol_q": 0}, "fixed_point_tol_q"),
    ({"fixed_points": ["later"]}, "fixed_points"),
])
def test_bad_options_are_refused(probes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config({**config(), "probes": {**config()["probes"], **probes}}, "fp.yaml")


def test_schedule_is_ordered_and_defaults_to_never():
    cfg = validate_config({**config(fixed_points=("end", 0, 2))}, "fp.yaml")
    assert cfg.probes.fixed_points == ["init", 2, "end"]
    plain = validate_config({"name": "x", "task": {"name": "flipflop", "seq_len": 5}}, "x.yaml")
    assert plain.probes.fixed_points == []
    assert (plain.probes.fixed_point_states, plain.probes.fixed_point_noise) == (256, 0.5)


def test_trial_ids_change_only_when_a_fixed_point_key_is_set():
    from rnn_diag.experiments.config import ProbesConfig, canonical_settings
    from rnn_diag.experiments.config.schema import _LATER_KEYS

    defaults = ProbesConfig().model_dump()
    assert {k: defaults[k] for k in _LATER_KEYS["probes"]} == _LATER_KEYS["probes"]
    base = {"name": "x", "task": {"name": "adding", "seq_len": 20}}
    plain = validate_config(base, "x.yaml")
    assert "fixed_point" not in canonical_settings(plain)
    same = validate_config({**base, "probes": {"fixed_points": [], "fixed_point_states": 256}},
                           "x.yaml")
    assert expand(same)[0].id == expand(plain)[0].id
    for probes in ({"fixed_points": ["end"]}, {"fixed_point_noise": 0.2}):
        other = validate_config({**base, "probes": probes}, "x.yaml")
        assert expand(other)[0].id != expand(plain)[0].id
