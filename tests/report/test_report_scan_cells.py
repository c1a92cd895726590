"""The report on a run that mixes rnn/lstm with the diagonal scans lru/mingru/ssm over a lag
sweep: every figure draws the scan cells with the numbers written into the tables here, the
findings speak of their slowest channel with hand-computed numbers, and the learning view names
where each cell stops learning."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from rnn_diag.report.figures import (  # noqa: E402
    SECTIONS,
    MissingData,
    applies_to,
    learning_curves,
    weight_spectra,
)
from rnn_diag.report.figures.cells import decade_steps  # noqa: E402
from rnn_diag.report.figures.learning import family_reach, learning_sweep  # noqa: E402
from rnn_diag.report.findings import compute_findings  # noqa: E402
from rnn_diag.report.page import render_report  # noqa: E402
from rnn_diag.report.run_data import load_run  # noqa: E402

LN10 = math.log(10.0)
CELLS = ("rnn", "lstm", "lru", "mingru", "ssm")
LAGS = (2, 30, 100, 300)
SEQ_LEN = 400
EPOCHS = 3
CHANCE, BEST = 1 / 3, 0.9 + 0.1 / 3
#: top Lyapunov exponent at the end (nats/step), the same for every lag and seed
TOP = {"rnn": -0.05, "lstm": -0.01, "lru": -0.002, "mingru": -0.004, "ssm": -0.001}
#: the lags each cell learns (accuracy 0.92 for seed 0, 0.91 for seed 1; else 0.34 / 0.33)
LEARNS = {"rnn": (2, 30), "lstm": (2, 30, 100), "lru": LAGS, "mingru": (2, 30, 100),
          "ssm": LAGS}
HORIZON = {"rnn": 40, "lstm": 150, "lru": 399, "mingru": 250, "ssm": 399}
#: every model has 2 layers; the ssm stores both, the others only the top one (layer 1)
LAYERS = {"ssm": (0, 1)}
TOP_LAYER = 1
FAILED = ("ssm", 300, 1)  # (cell, lag, seed) of the one failed trial
#: two seeds at the long lags, one at the short ones (fewer panels to draw)
SEEDS = {2: (0,), 30: (0,), 100: (0, 1), 300: (0, 1)}
SWEEP = {"task.lag": list(LAGS), "model.cell": list(CELLS), "seed": [0, 1]}


def _diagonal(cell: str, when: str) -> tuple[str, np.ndarray]:
    """The gate and the (complex) diagonal of a scan cell's last layer."""
    shrink = 0.97 if when == "init" else 1.0
    if cell == "lru":
        r = np.linspace(0.8, math.exp(TOP["lru"]), 16) * shrink
        return "lambda", r * np.exp(1j * np.linspace(-math.pi / 3, math.pi / 3, 16))
    n = 32 if cell == "mingru" else 1024
    return "a(x=0)", np.linspace(0.5 if cell == "mingru" else 0.2, 0.995, n) * shrink + 0j


def _spectra(tid: str, cell: str) -> list[dict]:
    rows = []
    for when in ("init", "end"):
        for layer in LAYERS.get(cell, (TOP_LAYER,)):
            if cell in ("rnn", "lstm"):
                h = 8
                blocks = {"hh": 0.9} if cell == "rnn" else {g: 0.5 for g in "ifgo"}
                for gate, radius in blocks.items():
                    lam = radius * np.exp(2j * math.pi * np.arange(h) / h)
                    sv = np.linspace(1.2, 0.3, h)
                    rows += [{"trial": tid, "when": when, "module": "", "layer": layer,
                              "direction": 0, "gate": gate, "index": i, "real": z.real,
                              "imag": z.imag, "modulus": abs(z), "singular_value": s}
                             for i, (z, s) in enumerate(zip(lam, sv))]
                continue
            gate, diag = _diagonal(cell, when)
            if layer < TOP_LAYER:
                diag = diag * 0.5  # a lower layer: not drawn
            order = np.argsort(-np.abs(diag), kind="stable")
            diag = diag[order]
            rows += [{"trial": tid, "when": when, "module": "", "layer": layer, "direction": 0,
                      "gate": gate, "index": i, "real": z.real, "imag": z.imag,
                      "modulus": abs(z), "singular_value": abs(z)}
                     for i, z in enumerate(diag)]
    return rows


def _channels(cell: str) -> int:
    return {"rnn": 8, "lstm": 16, "lru": 16, "mingru": 32, "ssm": 1024}[cell]


def _lyapunov(tid: str, cell: str) -> list[dict]:
    rows = []
    n = _channels(cell)
    for when in ("init", "end"):
        top = TOP[cell] * (2 if when == "init" else 1)
        for layer in LAYERS.get(cell, (TOP_LAYER,)):
            values = np.linspace(top, -3.0, n)
            if layer < TOP_LAYER:
                values = values - 0.5  # a lower layer: not drawn
            if cell in ("lru", "mingru", "ssm"):  # one per channel, in channel order
                values = np.random.default_rng(n).permutation(values)
            rows += [{"trial": tid, "when": when, "layer": layer, "index": i, "exponent": x}
                     for i, x in enumerate(values)]
    return rows


def mixed_tables() -> dict[str, pd.DataFrame]:
    """The tables of a lag × cell × seed sweep with one failed trial (see the constants): 30
    trials, 29 finished."""
    trials, curves, grads, sums, spectra, lyap, preds = [], [], [], [], [], [], []
    for lag in LAGS:
        for cell in CELLS:
            for seed in SEEDS[lag]:
                tid = f"{cell}-{lag}-{seed}"
                failed = (cell, lag, seed) == FAILED
                learned = lag in LEARNS[cell]
                acc = (0.92 if learned else 0.34) - 0.01 * seed
                slope = TOP[cell] / LN10
                row = {"id": tid, "label": f"lag={lag} cell={cell} seed={seed}",
                       "task.name": "weather", "task.seq_len": SEQ_LEN, "task.lag": lag,
                       "model.cell": cell, "model.hidden_size": 8,
                       "model.num_layers": 2, "model.init": "default",
                       "model.weight_scale": math.nan, "train.clip_grad_norm": math.nan,
                       "train.seed": seed, "status": "failed" if failed else "ok",
                       "error": "RuntimeError: out of memory" if failed else None,
                       "epochs_run": 0 if failed else EPOCHS, "metric": "accuracy",
                       "chance_loss": math.log(3), "chance_metric": CHANCE,
                       "best_loss": 0.4, "best_metric": BEST}
                if not failed:
                    row.update({
                        "train_loss": 0.5 if learned else 1.09,
                        "val_loss": 0.5 if learned else 1.10, "train_metric": acc,
                        "val_metric": acc, "decay_per_step_first": 2 * slope,
                        "decay_per_step_last": slope, "verdict_first": "vanishing",
                        "verdict_last": "vanishing" if slope * 399 <= -3 else "stable",
                        "horizon_first": 10, "horizon_last": HORIZON[cell],
                        "ratio_log10_first": 2 * slope * 399, "ratio_log10_last": slope * 399,
                        "lyapunov_top_init": 2 * TOP[cell], "lyapunov_top_end": TOP[cell]})
                trials.append(row)
                if failed:
                    continue
                for e in range(1, EPOCHS + 1):
                    curves.append({"trial": tid, "epoch": e, "train_loss": 1.1 - 0.1 * e,
                                   "val_loss": 1.1 - 0.05 * e})
                top_layer = TOP_LAYER
                for e, s in ((0, 2 * slope), (EPOCHS, slope)):
                    for t in range(SEQ_LEN):
                        d = SEQ_LEN - 1 - t
                        for metric, value in (("total_mean", -1.0 + s * d),
                                              ("jacobian_mean", s * d)):
                            grads.append({"trial": tid, "epoch": e, "layer": top_layer,
                                          "direction": 0, "state": "h", "t": t,
                                          "metric": metric, "value": value})
                    sums.append({"trial": tid, "epoch": e, "layer": top_layer, "direction": 0,
                                 "horizon": HORIZON[cell] if e else 10, "anchor": SEQ_LEN - 1,
                                 "decay_per_step": s})
                spectra += _spectra(tid, cell)
                lyap += _lyapunov(tid, cell)
                for c, p in enumerate((0.8, 0.1, 0.1)):
                    preds.append({"trial": tid, "class": c, "name": f"c{c}", "probability": p,
                                  "predicted": c == 0, "actual": c == 0})
    frames = {"trials": pd.DataFrame(trials), "curves": pd.DataFrame(curves),
              "gradients": pd.DataFrame(grads), "summaries": pd.DataFrame(sums),
              "spectra": pd.DataFrame(spectra), "lyapunov": pd.DataFrame(lyap),
              "predictions": pd.DataFrame(preds)}
    return frames


def write_run(root, tables=None):
    """``tables`` (default :func:`mixed_tables`) as a run folder under ``root``."""
    tables = tables or mixed_tables()
    root.mkdir(parents=True, exist_ok=True)
    config = {"name": "long_memory_synthetic", "description": "lag x cell, hand-made numbers",
              "task": {"name": "weather", "seq_len": SEQ_LEN, "p": 0.9, "lag": 2},
              "model": {"cell": "rnn", "hidden_size": 8}, "sweep": SWEEP}
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "manifest.json").write_text(json.dumps({"rnn_diag": "test"}))
    tables["trials"].to_parquet(root / "trials.parquet", index=False)
    for name, df in tables.items():
        if name == "trials" or df.empty:
            continue
        (root / name).mkdir(exist_ok=True)
        for tid, part in df.groupby("trial"):
            part.to_parquet(root / name / f"{tid}.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def tables():
    return mixed_tables()


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"
            and ax.get_subplotspec() is not None]


def _lines(ax, label):
    return [ln for ln in ax.get_lines() if ln.get_label() == label]


def _by_title(fig):
    return {ax.get_title(): ax for ax in _panels(fig)}


def _note(fig):
    return fig._supxlabel.get_text() if fig._supxlabel is not None else ""


def _legend(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _at(fig, row, col):
    """The visible axes at grid position (row, col)."""
    for ax in _panels(fig):
        spec = ax.get_subplotspec()
        if (spec.rowspan.start, spec.colspan.start) == (row, col):
            return ax
    raise KeyError((row, col))


def _tau(exponent):
    return 3 * LN10 / abs(exponent)


@pytest.fixture(scope="module")
def figs(tables):
    """Every section of the report drawn once from the mixed run (none raises)."""
    out = {}
    for section in SECTIONS:
        # not recorded here; no remedy axis here
        if section.key in ("fixed_points", "fixed_point_eigenvalues", "remedies"):
            assert not applies_to(section, tables), section.key
            continue
        assert applies_to(section, tables), section.key
        out[section.key] = section.build(tables)
    return out


def test_every_section_draws_every_cell(figs):
    for key in ("loss", "profile", "heatmap", "jacobians", "lyapunov"):
        titles = " ".join(ax.get_title() for ax in _panels(figs[key]))
        for cell in CELLS:
            assert f"cell={cell}" in titles, (key, cell)
    # the figures are drawable: the page encodes them (checked on a smaller run below)
    assert len(_panels(figs["spectra"])) == len(LAGS) * len(CELLS)


def test_eigenvalue_planes_draw_each_cells_own_points(figs):
    fig = figs["spectra"]
    panels = _by_title(fig)
    # more than 6 settings: a grid of eigenvalue planes, a row per lag, a column per cell
    assert _at(fig, 3, 0).get_title() == "lag=300 · cell=lru"
    assert _at(fig, 0, 4).get_title() == "lag=2 · cell=ssm"
    lru = panels["lag=300 · cell=lru"]
    (end,) = _lines(lru, "_eig end seq_len=400")
    _, diag = _diagonal("lru", "end")
    # both seeds' 16 eigenvalues
    np.testing.assert_allclose(np.sort(end.get_xdata()), np.sort(np.tile(diag.real, 2)))
    np.testing.assert_allclose(np.sort(end.get_ydata()), np.sort(np.tile(diag.imag, 2)))
    assert lru.get_xlabel() == "Re λ" and lru.get_ylabel() == "Im λ"
    circles = [p for p in lru.patches if isinstance(p, Circle)]
    assert len(circles) == 1 and circles[0].radius == 1.0
    # the ssm: its top layer's 1024 decays of the one finished seed, real and positive
    ssm = panels["lag=300 · cell=ssm"]
    (end,) = _lines(ssm, "_eig end seq_len=400")
    _, diag = _diagonal("ssm", "end")
    assert len(end.get_xdata()) == 1024
    np.testing.assert_allclose(np.sort(end.get_xdata()), np.sort(diag.real))
    assert np.all(np.asarray(end.get_ydata()) == 0)
    assert end.get_markersize() <= 3 and end.get_alpha() < 0.5  # 1024 points stay readable
    assert ssm.get_ylabel() == "Im a(x=0)"
    assert panels["lag=2 · cell=mingru"].get_ylabel() == "Im a(x=0)"
    assert panels["lag=2 · cell=rnn"].get_ylabel() == "Im λ(W_hh)"
    legend = _legend(fig)
    assert "lru: fixed eigenvalues λ" in legend
    assert "mingru: a at zero input (input-dependent)" in legend
    assert "ssm: a at zero input (input-dependent)" in legend
    assert "decay of an input-dependent scan at zero input" in _note(fig)


def test_full_spectra_rows_show_moduli_and_one_radius_for_a_diagonal(tables):
    trials = tables["trials"][tables["trials"]["task.lag"] == 300]
    fig = weight_spectra(trials, tables["spectra"])
    rows = {ax.get_ylabel().split("\n")[0]: ax.get_subplotspec().rowspan.start
            for ax in _panels(fig) if ax.get_subplotspec().colspan.start == 0}
    assert set(rows) == {f"cell={c}" for c in CELLS}
    lru_sv, lru_rho = _at(fig, rows["cell=lru"], 1), _at(fig, rows["cell=lru"], 2)
    assert lru_sv.get_ylabel() == "|λ_i| (= singular value σ_i)"
    assert lru_rho.get_ylabel() == "ρ = σ_max = max |λ|"
    (rho,) = _lines(lru_rho, "_rho seq_len=400")
    top = math.exp(TOP["lru"])
    np.testing.assert_allclose(rho.get_ydata(), [0.97 * top, top])  # init, end
    assert list(rho.get_xdata()) == [0.0, float(EPOCHS)]
    assert _lines(lru_rho, "_sigma seq_len=400") == []  # σ_max = ρ: one line
    (sv,) = _lines(lru_sv, "_sv end seq_len=400")
    np.testing.assert_allclose(sv.get_ydata(), np.sort(np.abs(_diagonal("lru", "end")[1]))[::-1])
    assert _at(fig, rows["cell=ssm"], 2).get_ylabel() == "ρ = σ_max = max |a(x=0)|"
    rnn_rho = _at(fig, rows["cell=rnn"], 2)
    assert len(_lines(rnn_rho, "_sigma seq_len=400")) == 1  # W_hh: both
    assert rnn_rho.get_ylabel() == "ρ(W_hh), σ_max(W_hh)"


def test_lyapunov_spectrum_of_a_scan_is_sorted_per_channel(figs):
    panels = _by_title(figs["lyapunov"])
    for cell in ("lru", "mingru", "ssm", "rnn"):
        (end,) = _lines(panels[f"lag=300 · cell={cell}"], "_end seq_len=400")
        y = np.asarray(end.get_ydata())
        # the top layer's exponents, stored in channel order, drawn largest first
        np.testing.assert_allclose(y, np.linspace(TOP[cell], -3.0, _channels(cell)))
    assert "lru, mingru, ssm: one exponent per channel" in _note(figs["lyapunov"])


def test_profiles_draw_the_lyapunov_slope_for_scans_and_pascanu_only_for_rnn(figs):
    for key, start in (("profile", -1.0), ("jacobians", 0.0)):
        panels = _by_title(figs[key])
        for cell in CELLS:
            ax = panels[f"lag=300 · cell={cell}"]
            (lyap,) = _lines(ax, "_lyapunov seq_len=400")
            x, y = np.asarray(lyap.get_xdata()), np.asarray(lyap.get_ydata())
            assert (y[-1] - y[0]) / (x[-1] - x[0]) == pytest.approx(TOP[cell] / LN10)
            assert y[0] == pytest.approx(start)
            assert len(_lines(ax, "_pascanu seq_len=400")) == (cell == "rnn"), (key, cell)
        (last,) = _lines(panels["lag=300 · cell=ssm"], "_measured last seq_len=400")
        d = np.arange(SEQ_LEN)
        np.testing.assert_allclose(last.get_ydata(), start + TOP["ssm"] / LN10 * d)


def test_phase_diagram_of_one_seq_len_is_a_cell_by_lag_table(figs):
    first, last = _panels(figs["phase"])
    assert [t.get_text() for t in last.get_xticklabels()] == ["2", "30", "100", "300"]
    assert [t.get_text() for t in last.get_yticklabels()] == sorted(CELLS)
    assert last.get_xlabel() == "lag (sequence length T = 400)"
    texts = [t.get_text() for t in last.texts]  # row by row, lag by lag
    # rnn (row 3): -0.05 / ln 10 = -0.0217 decades per step, 8.7 decades over 399 steps
    assert texts[3 * 4 + 3] == "vanishing\n-0.022"
    # mingru (row 2): -0.004 / ln 10 = -0.0017; 0.69 decades over the window: stable
    assert texts[2 * 4 + 0] == "stable\n-0.002"


def test_learning_view_values(tables):
    view = learning_sweep(tables["trials"])
    assert view.x_key == "task.lag" and view.family_keys == ("model.cell",)
    assert view.families == tuple(f"cell={c}" for c in sorted(CELLS))
    assert view.xs == (2.0, 30.0, 100.0, 300.0) and view.has_best
    pts = view.points.set_index(["family", "x"])
    rnn100 = pts.loc[("cell=rnn", 100.0)]
    assert rnn100["metric"] == pytest.approx(0.335)  # median of 0.34 and 0.33
    assert rnn100["learned"] is False and rnn100["n_learned"] == 0
    assert rnn100["horizon"] == 40
    assert rnn100["timescale"] == pytest.approx(_tau(-0.05))  # 138.2 steps
    assert decade_steps(-math.inf) == 0.0 and decade_steps(0.0) == math.inf
    assert rnn100["fraction"] == pytest.approx((0.335 - CHANCE) / (BEST - CHANCE))
    ssm300 = pts.loc[("cell=ssm", 300.0)]
    assert (ssm300["n"], ssm300["n_ok"], ssm300["statuses"]) == (2, 1, "failed")
    assert ssm300["metric"] == pytest.approx(0.92) and ssm300["learned"] is True
    reach = {r.family: (r.largest, r.stop, r.gaps) for r in family_reach(view)}
    assert reach == {"cell=lru": (300.0, None, ()), "cell=lstm": (100.0, 300.0, ()),
                     "cell=mingru": (100.0, 300.0, ()), "cell=rnn": (30.0, 100.0, ()),
                     "cell=ssm": (300.0, None, ())}


def _small_sweep(metrics, best=BEST, lags=(2, 30)):
    rows = []
    for i, (cell, lag, acc) in enumerate(metrics):
        rows.append({"id": f"t{i}", "task.seq_len": 60, "task.lag": lag, "model.cell": cell,
                     "status": "ok", "val_metric": acc, "chance_metric": CHANCE,
                     "best_metric": best if not callable(best) else best(lag),
                     "horizon_last": 5, "lyapunov_top_end": -0.1, "metric": "accuracy"})
    return pd.DataFrame(rows)


def test_learned_is_half_way_from_chance_to_best():
    half = CHANCE + 0.5 * (BEST - CHANCE)
    t = _small_sweep([("rnn", 2, half), ("rnn", 30, half - 0.01),
                      ("lru", 2, 0.30), ("lru", 30, 0.92)])
    learned = learning_sweep(t).points.set_index(["family", "x"])["learned"]
    assert learned[("cell=rnn", 2.0)] is True and learned[("cell=rnn", 30.0)] is False
    reach = {r.family: r for r in family_reach(learning_sweep(t))}
    assert reach["cell=lru"].largest == 30.0 and reach["cell=lru"].gaps == (2.0,)
    # a lag beyond the window: best = chance, nothing to learn, not judged
    beyond = _small_sweep([("rnn", 2, 0.9), ("rnn", 90, 0.34), ("lru", 2, 0.9),
                           ("lru", 90, 0.34)], best=lambda lag: BEST if lag < 60 else CHANCE)
    pts = learning_sweep(beyond).points.set_index(["family", "x"])
    assert pts.loc[("cell=rnn", 90.0), "learned"] is None
    assert [(r.largest, r.stop) for r in family_reach(learning_sweep(beyond))] == [
        (2.0, None), (2.0, None)]
    # without a stored best value nothing is judged, and the findings say why
    unknown = t.drop(columns="best_metric")
    assert learning_sweep(unknown).points["learned"].isna().all()
    (text,) = [f.text for f in compute_findings({"trials": unknown}, ("task.lag", "model.cell"))
               if f.key == "learning"]
    assert text.startswith("The run does not store the task's best accuracy (column "
                           "best_metric)")
    # no cell sweep, or no task option swept: no view
    assert learning_sweep(t[t["model.cell"] == "rnn"]) is None
    assert learning_sweep(t.assign(**{"task.lag": 2})) is None


def test_learning_figure_draws_the_view(figs, tables):
    fig = figs["learning"]
    col = {ax.get_title(): ax.get_subplotspec().colspan.start for ax in _panels(fig)
           if ax.get_title()}
    top, bottom = _at(fig, 0, col["cell=rnn"]), _at(fig, 1, col["cell=rnn"])
    (metric,) = _lines(top, "_metric seq_len=400")
    assert list(metric.get_xdata()) == [2, 30, 100, 300]
    np.testing.assert_allclose(metric.get_ydata(), [0.92, 0.92, 0.335, 0.335])  # 1, 1, 2, 2 seeds
    learned = [c for c in top.collections if c.get_label() == "_learned seq_len=400"]
    missed = [c for c in top.collections if c.get_label() == "_not learned seq_len=400"]
    assert learned[0].get_offsets()[:, 0].tolist() == [2, 30]
    assert missed[0].get_offsets()[:, 0].tolist() == [100, 300]
    np.testing.assert_allclose(_lines(top, "_chance")[0].get_ydata(), CHANCE)
    np.testing.assert_allclose(_lines(top, "_best")[0].get_ydata(), BEST)
    np.testing.assert_allclose(_lines(top, "_threshold")[0].get_ydata(), (CHANCE + BEST) / 2)
    np.testing.assert_allclose(_lines(bottom, "_horizon seq_len=400")[0].get_ydata(), 40)
    np.testing.assert_allclose(_lines(bottom, "_timescale seq_len=400")[0].get_ydata(),
                               _tau(-0.05))
    diagonal = _lines(bottom, "_diagonal")[0]
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata()) == [2, 30, 100, 300]
    assert _at(fig, 0, 0).get_ylabel() == "held-out accuracy" and bottom.get_xlabel() == "lag"
    assert _at(fig, 1, 0).get_ylabel() == "steps"
    # the ssm's 3-decade timescale (6,908 steps) fits under the axis top (10^4)
    ssm = _at(fig, 1, col["cell=ssm"])
    np.testing.assert_allclose(_lines(ssm, "_timescale seq_len=400")[0].get_ydata(),
                               _tau(-0.001))
    # no sweep of a task option × cell: no figure and no section
    one = tables["trials"][tables["trials"]["model.cell"] == "rnn"]
    with pytest.raises(MissingData, match="task.lag"):
        learning_curves(one)
    section = next(s for s in SECTIONS if s.key == "learning")
    assert not applies_to(section, {**tables, "trials": one})


SWEPT = ("task.lag", "model.cell", "train.seed")


def test_findings_speak_of_the_slowest_channel_and_where_learning_stops(tables):
    found = compute_findings(tables, SWEPT, {"task": {"lag": 2}})
    learning = [f.text for f in found if f.key == "learning"]
    assert [t.split(" learns")[0].split(". ")[-1] for t in learning] == [
        "lru", "lstm", "mingru", "rnn", "ssm"]
    # 3 ln 10 / 0.002 = 3453.9 steps; / 0.05 = 138.2 steps; / 0.001 = 6907.8 steps
    assert learning[0] == (
        "Learned means a median held-out accuracy at least half-way from chance to the best "
        "possible value (here 0.633 or more). lru learns the task at every swept lag, up to lag "
        "300 (accuracy 0.915 against best 0.933 and chance 0.333; horizon 399 steps, 3-decade "
        "timescale about 3,450 steps).")
    assert learning[3] == (
        "rnn learns the task up to lag 30 (accuracy 0.920 against best 0.933 and chance 0.333; "
        "horizon 40 steps, 3-decade timescale about 138 steps) and stops at lag 100 (accuracy "
        "0.335; horizon 40 steps, 3-decade timescale about 138 steps): the horizon is shorter "
        "than the lag, the timescale is not.")
    assert learning[4].startswith("ssm learns the task at every swept lag, up to lag 300 "
                                  "(accuracy 0.920 against")
    assert "3-decade timescale about 6,910 steps" in learning[4]
    scans = [f.text for f in found if f.key == "lyapunov"][1:]
    assert [t.split(" ")[0] for t in scans] == ["lru", "mingru", "ssm"]  # not rnn, lstm
    # exp(-0.002) = 0.998002: a fixed λ is an eigenvalue
    assert scans[0].startswith(
        "lru (lag 300, median over 2 seeds): the slowest channel's eigenvalue has |λ| = 0.998 "
        "(top Lyapunov exponent -0.002 nats/step): the gradient along that channel falls 3 "
        "decades in about 3,450 steps, longer than the lag of 300 steps. The slowest channel's "
        "|λ| at the other settings: lag 2: 0.998 (-0.002 nats/step, falls 3 decades in about "
        "3,450 steps, longer than the lag of 2 steps);")
    # exp(-0.004) = 0.996008: an input-dependent decay is an average over the inputs
    assert scans[1].startswith(
        "mingru (lag 300, median over 2 seeds): the slowest channel's |a| averaged 0.996 over "
        "the training inputs (top Lyapunov exponent -0.004 nats/step): the gradient along that "
        "channel falls 3 decades in about 1,730 steps, longer than the lag of 300 steps.")
    assert scans[2].startswith("ssm (lag 300): the slowest channel's |a| averaged 0.999 over")


def test_scan_findings_name_a_timescale_shorter_than_the_lag_and_growth():
    trials = pd.DataFrame([
        {"id": "a", "task.seq_len": 400, "model.cell": "lru", "lyapunov_top_end": -0.05,
         "status": "ok"},
        {"id": "b", "task.seq_len": 400, "model.cell": "mingru", "lyapunov_top_end": 0.02,
         "status": "ok"},
        {"id": "c", "task.seq_len": 400, "model.cell": "ssm", "lyapunov_top_end": -0.0004,
         "status": "ok"}])
    found = [f.text for f in compute_findings({"trials": trials}, ("model.cell",),
                                              {"task": {"lag": 300}}) if f.key == "lyapunov"]
    general, lru, mingru, ssm = found
    # exp(-0.05) = 0.951; 3 ln 10 / 0.05 = 138.2 steps < 300
    assert lru == ("lru: the slowest channel's eigenvalue has |λ| = 0.951 (top Lyapunov "
                   "exponent -0.050 nats/step): the gradient along that channel falls 3 decades "
                   "in about 138 steps, shorter than the lag of 300 steps: over that distance "
                   "even the slowest channel loses more than 3 decades.")
    # exp(0.02) = 1.0202; 3 ln 10 / 0.02 = 345.4 steps
    assert "|a| averaged 1.020 over the training inputs (top Lyapunov exponent +0.020 " \
           "nats/step): the gradient along that channel grows 3 decades in about 345 steps." \
           in mingru
    assert "chaotic" not in general
    assert "1 diagonal-scan trial ends with an exponent above +0.01 nats per step" in general
    # exp(-0.0004) = 0.99960: more digits rather than 1.000
    assert "|a| averaged 0.9996 over" in ssm and "-0.0004 nats/step" in ssm


def test_page_shows_the_learning_table_and_encodes_the_new_figures(tables, tmp_path):
    small = tables
    failed = small["trials"]["status"] == "failed"
    keep = small["trials"]["task.lag"].isin([30, 300]) & (
        (small["trials"]["train.seed"] == 0) | failed)
    ids = set(small["trials"].loc[keep, "id"])
    small = {k: (v[v["id"].isin(ids)] if k == "trials" else v[v["trial"].isin(ids)])
             for k, v in small.items()}
    run = load_run(write_run(tmp_path / "run", small))
    sections = [s for s in SECTIONS if s.key in ("learning", "spectra")]
    out = render_report(run, sections, jobs=1, fmt="png")
    assert [(s.key, s.state) for s in out.sections] == [("learning", "figure"),
                                                         ("spectra", "figure")]
    html = out.html
    table = html[html.index('<table class="trials learning">'):]
    table = table[:table.index("</table>")]
    assert "<th>lag 30</th><th>lag 300</th>" in table
    rnn = table[table.index("cell=rnn"):table.index("</tr>", table.index("cell=rnn"))]
    assert '<td class="learned">0.920 ✓' in rnn and '<td class="unlearned">0.340 ✗' in rnn
    assert "horizon 40 · τ₃ 138" in rnn and rnn.rstrip().endswith("<td>30</td>")
    ssm = table[table.index("cell=ssm"):]
    assert '0.920 ✓ <span class="sub">1 failed</span>' in ssm  # seed 1 of lag 300
    assert "<th>ρ init</th>" in html and "for a diagonal scan, of its diagonal" in html
    # a run without such a sweep has no learning section at all
    other = {**small, "trials": small["trials"].assign(**{"model.cell": "rnn"})}
    run = load_run(write_run(tmp_path / "other", other))
    out = render_report(run, sections[:1], jobs=1, fmt="png")
    assert out.sections == []
    assert 'class="trials learning"' not in out.html


def test_learning_view_is_generic_in_the_swept_option_and_the_family():
    rows = []
    for i, (cell, seq_len, hidden, acc) in enumerate([
            ("rnn", 10, 4, 0.9), ("rnn", 100, 4, 0.4), ("rnn", 10, 8, 0.9),
            ("rnn", 100, 8, 0.9), ("lru", 10, 4, 0.9), ("lru", 100, 4, 0.9),
            ("lru", 10, 8, 0.9), ("lru", 100, 8, 0.9)]):
        rows.append({"id": f"t{i}", "task.seq_len": seq_len, "model.cell": cell,
                     "model.hidden_size": hidden, "status": "ok", "val_metric": acc,
                     "chance_metric": CHANCE, "best_metric": BEST, "horizon_last": 5,
                     "lyapunov_top_end": 0.0, "metric": "accuracy"})
    trials = pd.DataFrame(rows)
    view = learning_sweep(trials)
    assert view.x_key == "task.seq_len"
    assert view.family_keys == ("model.cell", "model.hidden_size")
    assert view.families[0] == "cell=lru · hidden_size=4"
    fig = learning_curves(trials)
    assert len(_panels(fig)) == 8  # 4 families × (metric, steps)
    texts = [f.text for f in compute_findings({"trials": trials},
                                              ("task.seq_len", "model.cell",
                                               "model.hidden_size")) if f.key == "learning"]
    rnn4 = next(t for t in texts if t.startswith("rnn (hidden_size 4)"))
    # λ₁ = 0: the slowest direction does not decay; horizon 5 < window 100
    assert rnn4 == ("rnn (hidden_size 4) learns the task up to seq_len 10 (accuracy 0.900 "
                    "against best 0.933 and chance 0.333; horizon 5 steps, the slowest "
                    "direction does not decay) and stops at seq_len 100 (accuracy 0.400; "
                    "horizon 5 steps, the slowest direction does not decay): the horizon is "
                    "shorter than the window, the timescale is not.")
