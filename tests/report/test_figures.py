"""The report's figure functions on small hand-made tables: panels, lines, labels and theory
lines checked against numbers written into the tables by hand; NaN/inf values, a single trial
and missing data must not break them."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402

from rnn_diag.report import figures  # noqa: E402
from rnn_diag.report.figures import (  # noqa: E402
    SECTIONS,
    MissingData,
    gradient_heatmaps,
    gradient_profiles,
    jacobian_norms,
    loss_history,
    lyapunov_spectra,
    next_step_predictions,
    phase_diagram,
    seq_len_palette,
    weight_spectra,
)

LN3 = math.log(3.0)
SLOPE = -0.1       # decades per step of the hand-made gradient profiles
LYAP = -0.1 * math.log(10.0)   # nats per step: -0.1 decades per step
SIGMA = {None: 0.8, 2.0: 2.0}  # stored spectral norms per weight scale


def _trials(specs, epochs=3):
    """specs: (id, seq_len, weight_scale, seed, status)."""
    rows = []
    for tid, T, ws, seed, status in specs:
        rows.append({
            "id": tid, "label": f"seq_len={T} weight_scale={ws}", "task.name": "weather",
            "task.seq_len": T, "model.cell": "rnn", "model.hidden_size": 2,
            "model.num_layers": 1, "model.init": "default",
            "model.weight_scale": math.nan if ws is None else ws,
            "train.clip_grad_norm": None, "train.seed": seed, "status": status,
            "epochs_run": epochs, "metric": "accuracy", "chance_loss": LN3,
            "chance_metric": 1 / 3,
            "decay_per_step_first": SLOPE if status == "ok" else math.nan,
            "verdict_first": ("stable" if T < 30 else "vanishing") if status == "ok" else None,
            "decay_per_step_last": 0.05 if status == "ok" else math.nan,
            "verdict_last": "exploding" if status == "ok" else None,
        })
    return pd.DataFrame(rows)


def _tables(specs=None, epochs=3):
    specs = specs or [("a", 5, None, 0, "ok"), ("b", 8, None, 0, "ok"),
                      ("c", 5, 2.0, 0, "ok"), ("d", 8, 2.0, 0, "ok")]
    trials = _trials(specs, epochs)
    curves, grads, spectra, lyap, preds = [], [], [], [], []
    for tid, T, ws, seed, status in specs:
        if status == "failed":
            continue  # a failed trial has no rows in the long tables
        for e in range(1, epochs + 1):
            curves.append({"trial": tid, "epoch": e, "train_loss": 1.2 - 0.01 * e - 0.001 * seed,
                           "val_loss": 1.15 + 0.01 * e})
        for e in (0, epochs - 1):
            for t in range(T):
                d = T - 1 - t
                for metric, value in (("total_mean", -1.0 + SLOPE * d),
                                      ("jacobian_mean", 2 * SLOPE * d)):
                    grads.append({"trial": tid, "epoch": e, "layer": 0, "direction": 0,
                                  "state": "h", "t": t, "metric": metric, "value": value})
        for when in ("init", "end"):
            for i, (re, im, sv) in enumerate([(0.5, 0.5, SIGMA.get(ws, 1.5)), (0.5, -0.5, 0.3)]):
                spectra.append({"trial": tid, "when": when, "module": "", "layer": 0,
                                "direction": 0, "gate": "hh", "index": i, "real": re,
                                "imag": im, "modulus": math.hypot(re, im),
                                "singular_value": sv})
            for i, x in enumerate([LYAP, -1.0]):
                lyap.append({"trial": tid, "when": when, "layer": 0, "index": i, "exponent": x})
        for c, (name, p) in enumerate([("Sunny", 0.5), ("Rainy", 0.3), ("Cloudy", 0.2)]):
            preds.append({"trial": tid, "class": c, "name": name, "probability": p,
                          "predicted": c == 0, "actual": c == 1})
    return {"trials": trials, "curves": pd.DataFrame(curves), "gradients": pd.DataFrame(grads),
            "summaries": pd.DataFrame(), "spectra": pd.DataFrame(spectra),
            "lyapunov": pd.DataFrame(lyap), "predictions": pd.DataFrame(preds)}


def _panels(fig):
    """Visible main axes (colour bars and secondary axes excluded)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"
            and ax.get_subplotspec() is not None]


def _line(ax, label):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, f"{label!r} in {[ln.get_label() for ln in ax.get_lines()]}"
    return found[0]


def _grid(fig):
    """{(row, column): axes} of the visible main axes."""
    out = {}
    for ax in _panels(fig):
        spec = ax.get_subplotspec()
        out[spec.rowspan.start, spec.colspan.start] = ax
    return out


def _legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _slope(line):
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    return (y[-1] - y[0]) / (x[-1] - x[0])


def _texts(fig):
    out = [lab.get_text() for lab in (fig._supxlabel, fig._supylabel) if lab is not None]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
        out += [t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels()]
    for legend in fig.legends:
        out += [t.get_text() for t in legend.get_texts()]
    return out


def test_sections_are_in_report_order_and_build_figures():
    tables = _tables()
    assert [s.key for s in SECTIONS] == ["loss", "learning", "remedies", "profile", "heatmap",
                                         "phase", "spectra", "jacobians", "lyapunov",
                                         "predictions", "fixed_points",
                                         "fixed_point_eigenvalues"]
    for section in SECTIONS:
        assert section.title and len(section.caption) > 40
        assert "trials" in section.needs
        if not figures.applies_to(section, tables):  # learning: no task option × cell sweep;
            # remedies: no remedy axis (drawn in test_report_remedies.py); fixed points: not
            # recorded (drawn in test_report_fixed_points.py)
            assert section.key in ("learning", "remedies", "fixed_points",
                                   "fixed_point_eigenvalues")
            continue
        assert set(section.needs) <= set(tables)
        fig = section.build(tables)
        assert isinstance(fig, Figure), section.key
        assert _panels(fig), section.key


def test_palette_is_stable_distinct_and_shared_by_the_figures():
    palette = seq_len_palette([1000, 10, 100, 10, None])
    assert list(palette) == [10, 100, 1000]
    assert len(set(palette.values())) == 3
    assert seq_len_palette([10, 100, 1000]) == palette
    many = seq_len_palette(range(1, 15))
    assert len(set(many.values())) == 14
    tables = _tables()
    colours = seq_len_palette([5, 8])
    loss = loss_history(tables["trials"], tables["curves"])
    prof = gradient_profiles(tables["trials"], tables["gradients"])
    for ax, label in ((_panels(loss)[0], "_train_loss seq_len=8"),
                      (_grid(prof)[1, 0], "_measured last seq_len=8"),
                      (_grid(prof)[1, 0], "_measured first seq_len=8")):
        line = _line(ax, label)
        assert matplotlib.colors.to_hex(line.get_color()) == colours[8]


def test_loss_history_panels_lines_chance_and_labels():
    tables = _tables()
    fig = loss_history(tables["trials"], tables["curves"])
    panels = _panels(fig)
    assert len(panels) == 2  # two weight scales; seq_len is the colour
    assert [ax.get_title() for ax in panels] == ["weight_scale=default init", "weight_scale=2"]
    for ax in panels:
        for T in (5, 8):
            train = _line(ax, f"_train_loss seq_len={T}")
            assert list(train.get_xdata()) == [1, 2, 3]
            np.testing.assert_allclose(train.get_ydata(), [1.19, 1.18, 1.17])
            assert _line(ax, f"_val_loss seq_len={T}").get_linestyle() == "--"
        assert _line(ax, "_chance").get_ydata()[0] == pytest.approx(LN3)
    assert panels[0].get_ylabel() == "cross-entropy loss (nats)"
    assert all(ax.get_xlabel() == "epoch" for ax in panels)
    assert any("chance level (1.099)" in t for t in _texts(fig))


def test_loss_history_seeds_are_a_mean_with_a_band():
    specs = [("a", 5, None, 0, "ok"), ("b", 5, None, 1, "ok")]
    tables = _tables(specs)
    fig = loss_history(tables["trials"], tables["curves"])
    ax = _panels(fig)[0]
    # seeds 0 and 1 differ by 0.001: the mean is 0.0005 below seed 0
    np.testing.assert_allclose(_line(ax, "_train_loss seq_len=5").get_ydata(),
                               [1.1895, 1.1795, 1.1695])
    assert len(ax.collections) == 2  # train and held-out bands
    assert "mean over seeds" in fig._supxlabel.get_text()


def _with_distinct_epochs(tables):
    """The last recorded epoch (2) lifted by 0.5 decades, and the init snapshots changed (σ_max
    0.5, λ₁ = −2 decades/step), so a line drawn from the wrong epoch or snapshot shows."""
    g = tables["gradients"]
    g.loc[(g.epoch == 2) & (g.metric == "total_mean"), "value"] += 0.5
    sp, ly = tables["spectra"], tables["lyapunov"]
    sp.loc[(sp["when"] == "init") & (sp["index"] == 0), "singular_value"] = 0.5
    ly.loc[(ly["when"] == "init") & (ly["index"] == 0), "exponent"] = -2.0 * math.log(10.0)
    return tables


def test_gradient_profile_rows_are_seq_lens_columns_settings_with_both_epochs():
    tables = _with_distinct_epochs(_tables())
    fig = gradient_profiles(tables["trials"], tables["gradients"], tables["spectra"],
                            tables["lyapunov"])
    grid = _grid(fig)
    assert sorted(grid) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # rows T=5, 8; columns 2 scales
    assert [grid[0, c].get_title() for c in (0, 1)] == ["weight_scale=default init",
                                                         "weight_scale=2"]
    assert grid[1, 0].get_title() == grid[1, 1].get_title() == ""
    assert [grid[r, 0].get_ylabel() for r in (0, 1)] == ["T = 5", "T = 8"]
    assert fig._supylabel.get_text() == "log10 ‖∂L/∂h_t‖ (decades)"
    colours = seq_len_palette([5, 8])
    for (r, _c), ax in grid.items():
        T, other = (5, 8) if r == 0 else (8, 5)
        labels = [ln.get_label() for ln in ax.get_lines()]
        assert not [lab for lab in labels if f"seq_len={other}" in lab]
        assert sorted(labels) == sorted(f"_{k} seq_len={T}" for k in (
            "measured first", "measured last", "lyapunov", "pascanu"))
        first, last = _line(ax, f"_measured first seq_len={T}"), _line(ax, f"_measured last "
                                                                         f"seq_len={T}")
        np.testing.assert_allclose(first.get_xdata(), np.arange(T))
        np.testing.assert_allclose(first.get_ydata(), -1.0 + SLOPE * np.arange(T))
        np.testing.assert_allclose(last.get_ydata(), -0.5 + SLOPE * np.arange(T))
        assert first.get_linestyle() == "--" and last.get_linestyle() == "-"
        assert first.get_linewidth() < last.get_linewidth()
        assert first.get_alpha() < 1.0
        for line in (first, last):
            assert matplotlib.colors.to_hex(line.get_color()) == colours[T]
        # theory at the last epoch: from its value at distance 0, with the "end" snapshot
        lyap = _line(ax, f"_lyapunov seq_len={T}")
        assert _slope(lyap) == pytest.approx(SLOPE)
        assert lyap.get_ydata()[0] == pytest.approx(-0.5)
        assert list(lyap.get_xdata()) == [0, T - 1]
        assert _line(ax, f"_pascanu seq_len={T}").get_ydata()[0] == pytest.approx(-0.5)
        assert lyap.get_linestyle() == "-."
        assert ax.get_xlim() == pytest.approx((0, T - 1))
        assert ax.get_xlabel() == ("distance to the loss T−1−t (steps)" if r == 1 else "")
    assert _slope(_line(grid[1, 0], "_pascanu seq_len=8")) == pytest.approx(math.log10(0.8))
    assert _slope(_line(grid[1, 1], "_pascanu seq_len=8")) == pytest.approx(math.log10(2.0))
    legend = _legend_texts(fig)
    assert legend[:2] == ["measured, first recorded epoch (epoch 0)",
                          "measured, last recorded epoch (epoch 2)"]
    assert any(t.startswith("Lyapunov slope") for t in legend)
    assert any(t.startswith("Pascanu bound σ_max^(T−1−t)") for t in legend)
    assert "nearest the last epoch (end)" in fig._supxlabel.get_text()


def test_gradient_profile_rows_have_their_own_y_scale():
    # -1 - 0.1 d: the T=10 profile spans 0.9 decades, the T=1000 one 99.9
    tables = _tables([("a", 10, None, 0, "ok"), ("b", 1000, None, 0, "ok"),
                      ("c", 10, 2.0, 0, "ok"), ("d", 1000, 2.0, 0, "ok")])
    fig = gradient_profiles(tables["trials"], tables["gradients"], tables["spectra"],
                            tables["lyapunov"])
    grid = _grid(fig)
    short, long = grid[0, 0].get_ylim(), grid[1, 0].get_ylim()
    assert grid[0, 1].get_ylim() == short and grid[1, 1].get_ylim() == long  # shared in a row
    assert short[0] < -1.9 and short[1] > -1.0 and short[1] - short[0] < 2.0
    assert long[0] < -100.9 and long[1] > -1.0 and long[1] - long[0] > 90.0
    assert grid[0, 0].get_xlim() == pytest.approx((0, 9))
    assert grid[1, 0].get_xlim() == pytest.approx((0, 999))
    # the Pascanu line of weight scale 2 rises 0.3 decades/step: it leaves the T=1000 panel
    # instead of stretching its scale
    assert _line(grid[1, 1], "_pascanu seq_len=1000").get_ydata()[-1] > long[1] + 100


def _two_key_tables(seq_lens, scales, lags):
    """One trial per (seq_len, weight scale, lag), a second swept key ``task.lag``; each trial's
    gradient profile lifted by its own offset so a panel shows which trial it draws."""
    specs, lag_of, offset = [], {}, {}
    for T in seq_lens:
        for i, ws in enumerate(scales):
            for j, lag in enumerate(lags):
                tid = f"T{T}_w{i}_l{j}"
                specs.append((tid, T, ws, 0, "ok"))
                lag_of[tid], offset[tid] = lag, 0.25 * (len(lags) * i + j)
    tables = _tables(specs, epochs=2)
    tables["trials"]["task.lag"] = tables["trials"]["id"].map(lag_of)
    g = tables["gradients"]
    g["value"] += g["trial"].map(offset)
    return tables, offset


def test_gradient_profile_wraps_many_settings_of_one_seq_len():
    # 3 weight scales x 4 lags = 12 settings: one T=6 block of 3 rows (scales) x 4 columns (lags)
    scales, lags = [None, 0.5, 2.0], [2, 10, 30, 50]
    tables, offset = _two_key_tables([6], scales, lags)
    fig = gradient_profiles(tables["trials"], tables["gradients"])
    grid = _grid(fig)
    assert sorted(grid) == [(r, c) for r in range(3) for c in range(4)]
    names = ["default init", "0.5", "2"]
    for (r, c), ax in grid.items():
        assert ax.get_title() == f"weight_scale={names[r]} · lag={lags[c]}"
        first = _line(ax, "_measured first seq_len=6")  # the trial of this setting
        assert first.get_ydata()[0] == pytest.approx(-1.0 + offset[f"T6_w{r}_l{c}"])
        assert ax.get_ylim() == grid[0, 0].get_ylim()  # one y scale for the block
        assert ax.get_xlim() == pytest.approx((0, 5))
        assert ax.get_xlabel() == ("distance T−1−t (steps)" if r == 2 else "")
        assert ax.get_ylabel() == ("T = 6" if c == 0 else "")
    assert len({ax.get_title() for ax in grid.values()}) == 12
    lo, hi = grid[0, 0].get_ylim()
    assert lo < -1.0 + SLOPE * 5 and hi > -1.0 + 0.25 * 11  # all 12 profiles in view
    assert "settings shown" not in fig._supxlabel.get_text()
    width, height = fig.get_size_inches()
    assert width <= 11 and height <= 8


def test_gradient_profile_wraps_settings_in_a_block_per_seq_len():
    # 3 seq_lens x (3 weight scales x 2 lags): per T a block of 2 rows (lags) x 3 columns
    scales, lags = [None, 0.5, 2.0], [1, 3]
    tables, offset = _two_key_tables([5, 8, 20], scales, lags)
    fig = jacobian_norms(tables["trials"], tables["gradients"])
    grid = _grid(fig)
    assert sorted(grid) == [(r, c) for r in range(6) for c in range(3)]
    names = ["default init", "0.5", "2"]
    for b, T in enumerate((5, 8, 20)):
        block = [grid[2 * b + i, j] for i in range(2) for j in range(3)]
        assert len({ax.get_ylim() for ax in block}) == 1
        for i in range(2):
            assert grid[2 * b + i, 0].get_ylabel() == f"T = {T}"
            for j in range(3):
                ax = grid[2 * b + i, j]
                assert ax.get_title() == f"weight_scale={names[j]} · lag={lags[i]}"
                assert ax.get_xlim() == pytest.approx((0, T - 1))
                y = _line(ax, f"_measured first seq_len={T}").get_ydata()
                assert y[0] == pytest.approx(offset[f"T{T}_w{j}_l{i}"])
                assert ax.get_xlabel() == ("distance to the last step T−1−t (steps)"
                                           if b == 2 and i == 1 else "")
    assert grid[0, 0].get_ylim() != grid[2, 0].get_ylim() != grid[4, 0].get_ylim()
    assert "blocks of 2 rows" in fig._supxlabel.get_text()
    assert "settings shown" not in fig._supxlabel.get_text()
    # the loss figure lays the 6 settings out the same way
    loss = _grid(loss_history(tables["trials"], tables["curves"]))
    assert {k: ax.get_title() for k, ax in loss.items()} == {
        (i, j): f"weight_scale={names[j]} · lag={lags[i]}" for i in range(2) for j in range(3)}


def test_gradient_profile_caps_rows_and_panels_and_says_so():
    specs = [(f"t{T}_{w}", T, float(w), 0, "ok") for T in range(2, 8) for w in range(12)]
    tables = _tables(specs, epochs=2)
    fig = gradient_profiles(tables["trials"], tables["gradients"])
    grid = _grid(fig)
    # 5 of 6 lengths; 12 settings in 5 blocks would be 60 panels: 6 settings, 2 rows x 3 each
    assert sorted(grid) == [(r, c) for r in range(10) for c in range(3)]
    # evenly picked: the shortest and the longest, the first and the last setting kept
    assert [grid[r, 0].get_ylabel() for r in range(0, 10, 2)] == ["T = 2", "T = 3", "T = 4",
                                                                  "T = 6", "T = 7"]
    assert [grid[r, c].get_title() for r in (0, 1) for c in range(3)] == [
        f"weight_scale={w}" for w in (0, 2, 4, 7, 9, 11)]
    note = fig._supxlabel.get_text()
    assert "6 of 12 settings shown" in note and "5 of 6 sequence lengths shown" in note
    assert fig.get_size_inches()[0] <= 11 and fig.get_size_inches()[1] <= 23


def test_gradient_profile_one_recorded_epoch_draws_one_line_with_theory():
    tables = _tables([("a", 5, None, 0, "ok")])
    g = tables["gradients"]
    fig = gradient_profiles(tables["trials"], g[g.epoch == 0], tables["spectra"],
                            tables["lyapunov"])
    (ax,) = _panels(fig)
    labels = sorted(ln.get_label() for ln in ax.get_lines())
    assert labels == ["_lyapunov seq_len=5", "_measured first seq_len=5", "_pascanu seq_len=5"]
    assert not [t for t in _legend_texts(fig) if "last recorded" in t]


def test_gradient_profile_without_theory_tables_draws_no_theory():
    tables = _tables()
    fig = gradient_profiles(tables["trials"], tables["gradients"])
    labels = [ln.get_label() for ax in _panels(fig) for ln in ax.get_lines()]
    assert not [lab for lab in labels if "lyapunov" in lab or "pascanu" in lab]


def test_pascanu_bound_only_for_an_elman_rnn():
    tables = _tables()
    tables["trials"]["model.cell"] = "lstm"
    fig = gradient_profiles(tables["trials"], tables["gradients"], tables["spectra"],
                            tables["lyapunov"])
    labels = {ln.get_label() for ax in _panels(fig) for ln in ax.get_lines()}
    assert "_lyapunov seq_len=8" in labels
    assert not [lab for lab in labels if "pascanu" in lab]


def test_nonfinite_values_are_marked_not_fatal():
    tables = _tables()
    g = tables["gradients"]
    t8 = (g.trial == "b") & (g.metric == "total_mean")
    g.loc[t8 & (g.t == 0), "value"] = -np.inf   # an exact zero (underflow)
    g.loc[t8 & (g.t == 1), "value"] = np.nan
    g.loc[(g.trial == "d") & (g.metric == "total_mean") & (g.t == 0), "value"] = np.inf
    tables["curves"].loc[0, "train_loss"] = np.inf
    tables["spectra"].loc[0, "modulus"] = np.nan
    tables["lyapunov"].loc[0, "exponent"] = -np.inf
    tables["predictions"].loc[0, "probability"] = np.nan
    for section in SECTIONS:
        if figures.applies_to(section, tables):  # not learning: no task option × cell sweep
            section.build(tables)
    fig = gradient_profiles(tables["trials"], g)
    grid = _grid(fig)
    labels = {ln.get_label() for ax in _panels(fig) for ln in ax.get_lines()}
    assert {"_neginf first seq_len=8", "_neginf last seq_len=8",
            "_posinf first seq_len=8", "_posinf last seq_len=8"} <= labels
    assert not [lab for lab in labels if "inf" in lab and "seq_len=5" in lab]
    ax = grid[1, 0]  # T=8, default init
    for when in ("first", "last"):
        y = _line(ax, f"_measured {when} seq_len=8").get_ydata()
        assert np.isnan(y[-1]) and np.isnan(y[-2]) and np.isfinite(y[:-2]).all()
    assert np.isfinite(ax.get_ylim()).all()
    assert ax.get_ylim()[0] < -1.0 + SLOPE * 5  # the finite part stays in view
    assert "exact zero (−∞)" in _legend_texts(fig)


def test_single_trial_draws_every_section():
    tables = _tables([("a", 6, 0.5, 0, "ok")])
    for section in SECTIONS:
        if not figures.applies_to(section, tables):  # learning: no sweep at all
            continue
        fig = section.build(tables)
        assert _panels(fig), section.key
        if section.key in ("profile", "jacobians"):
            (ax,) = _panels(fig)
            assert ax.get_ylabel() == "T = 6" and ax.get_title() == "all trials"
            assert {"_measured first seq_len=6", "_measured last seq_len=6"} <= {
                ln.get_label() for ln in ax.get_lines()}


def test_failed_trial_without_rows_is_skipped():
    tables = _tables([("a", 5, None, 0, "ok"), ("x", 99, None, 0, "failed")])
    fig = loss_history(tables["trials"], tables["curves"])
    labels = {ln.get_label() for ax in _panels(fig) for ln in ax.get_lines()}
    assert "_train_loss seq_len=5" in labels
    assert not [lab for lab in labels if "99" in lab]
    assert "seq_len=99" not in " ".join(_texts(fig))
    heat = gradient_heatmaps(tables["trials"], tables["gradients"])
    assert len([ax for ax in _panels(heat) if ax.collections]) == 1
    phase = phase_diagram(tables["trials"])
    assert "failed" in _texts(phase)


def test_long_profiles_are_downsampled():
    tables = _tables([("a", 1000, None, 0, "ok")])
    fig = gradient_profiles(tables["trials"], tables["gradients"])
    for when in ("first", "last"):
        x = _line(_panels(fig)[0], f"_measured {when} seq_len=1000").get_xdata()
        assert len(x) <= 400 and x[0] == 0 and x[-1] == 999
    heat = gradient_heatmaps(tables["trials"], tables["gradients"])
    mesh = next(c for c in _panels(heat)[0].collections if isinstance(c, QuadMesh))
    assert mesh.get_array().shape == (2, 150)
    # bin means of a linear profile: the first bin covers distances 0..6 (-1 - 0.1 * 3)
    assert mesh.get_array()[0, 0] == pytest.approx(-1.0 + SLOPE * 3.0, abs=0.05)


def test_heatmap_one_panel_per_trial_with_the_stored_values():
    tables = _tables()
    fig = gradient_heatmaps(tables["trials"], tables["gradients"])
    panels = [ax for ax in _panels(fig) if ax.collections]
    assert len(panels) == 4
    assert all(ax.get_ylabel() in ("epoch", "") for ax in panels)
    assert sum(ax.get_ylabel() == "epoch" for ax in panels) == 2  # one per row
    ax = next(a for a in panels if "seq_len=5" in a.get_title() and "default" in a.get_title())
    z = next(c for c in ax.collections if isinstance(c, QuadMesh)).get_array()
    np.testing.assert_allclose(z, np.tile(-1.0 + SLOPE * np.arange(5), (2, 1)))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "2"]


def test_heatmap_caps_the_number_of_panels_and_says_so():
    specs = [(f"t{i}", 4 + i % 2, float(i // 2), 0, "ok") for i in range(50)]
    tables = _tables(specs, epochs=2)
    fig = gradient_heatmaps(tables["trials"], tables["gradients"])
    assert len([ax for ax in _panels(fig) if ax.collections]) == 48
    assert "48 of 50 trials shown" in fig._supxlabel.get_text()


def test_phase_diagram_cells_verdicts_and_centred_colours():
    tables = _tables([("a", 5, None, 0, "ok"), ("b", 50, None, 0, "ok"),
                      ("c", 5, 2.0, 0, "ok"), ("d", 50, 2.0, 0, "ok")])
    fig = phase_diagram(tables["trials"])
    panels = _panels(fig)
    assert len(panels) == 2
    first, last = panels
    assert [t.get_text() for t in first.texts].count("stable\n-0.100") == 2
    assert [t.get_text() for t in first.texts].count("vanishing\n-0.100") == 2
    assert [t.get_text() for t in last.texts] == ["exploding\n+0.050"] * 4
    mesh = next(c for c in first.collections if isinstance(c, QuadMesh))
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    assert [t.get_text() for t in first.get_yticklabels()] == ["default init", "2"]
    assert [t.get_text() for t in first.get_xticklabels()] == ["5", "50"]
    assert first.get_xlabel() == "sequence length T (steps)"


def test_phase_diagram_mixed_seed_verdicts_are_counted():
    tables = _tables([("a", 5, None, 0, "ok"), ("b", 5, None, 1, "ok"),
                      ("c", 5, None, 2, "ok")])
    tables["trials"].loc[2, "verdict_first"] = "vanishing"
    fig = phase_diagram(tables["trials"])
    assert _panels(fig)[0].texts[0].get_text() == "2 stable / 1 vanishing\n-0.100"


def test_weight_spectra_panels_unit_circle_and_norms():
    tables = _tables()
    fig = weight_spectra(tables["trials"], tables["spectra"])
    panels = _panels(fig)
    assert len(panels) == 6  # 2 weight scales x (eigenvalues, singular values, over training)
    eig, sv, rho = panels[:3]
    circles = [p for p in eig.patches if isinstance(p, Circle)]
    assert len(circles) == 1 and circles[0].radius == 1.0
    np.testing.assert_allclose(_line(eig, "_eig end seq_len=5").get_xdata(), [0.5, 0.5])
    assert _line(rho, "_rho seq_len=5").get_ydata() == pytest.approx([math.sqrt(0.5)] * 2)
    assert _line(rho, "_sigma seq_len=5").get_ydata() == pytest.approx([0.8, 0.8])
    assert list(_line(rho, "_rho seq_len=5").get_xdata()) == [0.0, 3.0]  # init, end = epoch 3
    assert eig.get_xlabel() == "Re λ(W_hh)" and sv.get_ylabel() == "singular value σ_i(W_hh)"


def test_jacobian_norms_drawn_when_recorded_and_missing_otherwise():
    tables = _tables()
    fig = jacobian_norms(tables["trials"], tables["gradients"], tables["spectra"],
                         tables["lyapunov"])
    grid = _grid(fig)
    assert sorted(grid) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    ax = grid[1, 0]
    assert ax.get_ylabel() == "T = 8"
    for when in ("first", "last"):
        np.testing.assert_allclose(_line(ax, f"_measured {when} seq_len=8").get_ydata(),
                                   2 * SLOPE * np.arange(8))
    # the product is the identity at distance 0: theory lines start at 0 decades
    lyap = _line(ax, "_lyapunov seq_len=8")
    assert lyap.get_ydata()[0] == pytest.approx(0.0) and _slope(lyap) == pytest.approx(SLOPE)
    assert _slope(_line(ax, "_pascanu seq_len=8")) == pytest.approx(math.log10(0.8))
    assert "∂h_{T−1}/∂h_t" in fig._supylabel.get_text()
    assert grid[1, 0].get_xlabel() == "distance to the last step T−1−t (steps)"
    without = tables["gradients"][tables["gradients"].metric != "jacobian_mean"]
    with pytest.raises(MissingData, match="probes.jacobians"):
        jacobian_norms(tables["trials"], without)
    section = next(s for s in SECTIONS if s.key == "jacobians")
    with pytest.raises(MissingData):
        section.build({**tables, "gradients": without})


def test_lyapunov_spectra_lines_and_units():
    tables = _tables()
    fig = lyapunov_spectra(tables["trials"], tables["lyapunov"])
    panels = _panels(fig)
    assert len(panels) == 2
    ax = panels[0]
    np.testing.assert_allclose(_line(ax, "_init seq_len=5").get_ydata(), [LYAP, -1.0])
    assert _line(ax, "_init seq_len=5").get_linestyle() == "--"
    assert _line(ax, "_end seq_len=8").get_linestyle() == "-"
    assert ax.get_ylabel() == "Lyapunov exponent λ_i (nats/step)"
    # the right axis of the last panel converts to decades per step (÷ ln 10)
    right = panels[-1].child_axes
    assert len(right) == 1 and right[0].get_ylabel() == "decades/step"


def test_next_step_predictions_probabilities_actual_and_predicted():
    tables = _tables()
    fig = next_step_predictions(tables["trials"], tables["predictions"])
    ax = _panels(fig)[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("0.500") == 4 and texts.count("0.300") == 4
    bold = [t.get_text() for t in ax.texts if t.get_fontweight() == "bold"]
    assert bold == ["0.500"] * 4
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == 4 and all(1 < b.get_x() < 2 for b in boxes)  # column "Rainy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Sunny", "Rainy", "Cloudy"]


def test_missing_tables_raise_missing_data():
    tables = _tables()
    with pytest.raises(MissingData, match="curves"):
        loss_history(tables["trials"], pd.DataFrame())
    with pytest.raises(MissingData, match="spectra"):
        weight_spectra(tables["trials"], None)
    assert issubclass(MissingData, LookupError)
    assert figures.MissingData is MissingData


def test_last_layer_and_hidden_state_are_drawn_and_said():
    tables = _tables([("a", 5, None, 0, "ok")])
    g = tables["gradients"]
    top = g.assign(layer=1, value=g["value"] + 10.0)    # the layer closest to the loss
    cell = g.assign(state="c", value=g["value"] - 50.0)  # an LSTM cell state: not this figure
    tables["trials"]["model.num_layers"] = 2
    fig = gradient_profiles(tables["trials"], pd.concat([g, top, cell], ignore_index=True))
    for when in ("first", "last"):
        y = _line(_panels(fig)[0], f"_measured {when} seq_len=5").get_ydata()
        np.testing.assert_allclose(y, 9.0 + SLOPE * np.arange(5))
    assert "last of 2 layers" in fig._supxlabel.get_text()
