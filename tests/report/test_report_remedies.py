"""The "Remedies" section on hand-made trials: the table's counts and medians (diverged counted
as not solved, failed left out), the solved threshold for a metric where higher is better
(accuracy) and one where lower is better (mse), the findings' comparison with the baseline, the
learning view stepping aside, and a run folder rendered with and without a remedy axis."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from rnn_diag.report import figures  # noqa: E402
from rnn_diag.report.figures import SECTIONS, MissingData  # noqa: E402
from rnn_diag.report.figures.learning import learning_sweep, metric_fraction  # noqa: E402
from rnn_diag.report.figures.remedies import (  # noqa: E402
    SOLVED_FRACTION,
    baseline_remedy,
    memory_steps,
    remedy_order,
    remedy_success,
    remedy_table,
    task_threshold_text,
    threshold_text,
)
from rnn_diag.report.findings import compute_findings  # noqa: E402
from rnn_diag.report.run_data import load_run  # noqa: E402

NAN = float("nan")
REMEDIES = {"none": {}, "clip": {"train.clip_norm": 1.0}, "flossing": {"train.regularizer": "f"},
            "gru": {"model.cell": "gru"}}
CONFIG = {"sweep": {"remedy": REMEDIES, "problem": ["xor", "add"], "seed": [0, 1, 2]}}
SWEPT = ["remedy", "problem", "train.seed"]


def _row(remedy, task, steps, seed, value, status="ok", h0=20.0, h1=20.0, lam=-0.05):
    chance, best, metric = (0.5, 1.0, "accuracy") if task == "delayed_xor" else \
        (1 / 6, 0.0, "mse")
    return {"id": f"{remedy}-{task}-{steps}-{seed}", "label": f"{remedy} {task} {seed}",
            "remedy": remedy, "problem": task, "task.name": task, "memory_steps": steps,
            "task.seq_len": steps + 10, "train.seed": seed,
            "model.cell": "gru" if remedy == "gru" else "rnn", "status": status,
            "metric": metric, "val_metric": value, "chance_metric": chance, "best_metric": best,
            "horizon_first": h0, "horizon_last": h1, "lyapunov_top_init": -0.2,
            "lyapunov_top_end": lam, "epochs_run": 3}


def trials() -> pd.DataFrame:
    """delayed_xor at 10 and 40 steps, adding at 49, 3 seeds each, for 4 remedies.

    delayed_xor at 40: none 0/3 (horizon 22), clip 0/3, flossing 3/3 (horizon 22 → 140,
    λ −0.0104), gru 2/2 solved with seed 2 failed. At 10 every remedy solves 3/3. On adding
    (mse, threshold 1/30): none 1/3 (0.03 solved, 0.04 and 0.1 not), clip 1/3 with 2 diverged,
    flossing 2/3 (one exactly at the threshold), gru 3/3.
    """
    rows = []
    for seed in range(3):
        for remedy in REMEDIES:
            rows.append(_row(remedy, "delayed_xor", 10, seed, 0.99, h0=9.0, h1=9.0))
        rows.append(_row("none", "delayed_xor", 40, seed, 0.55, h0=22.0, h1=22.0, lam=-0.08))
        rows.append(_row("clip", "delayed_xor", 40, seed, 0.6 if seed else 0.89, h0=22.0,
                         h1=[20.0, 21.0, 26.0][seed]))
        rows.append(_row("flossing", "delayed_xor", 40, seed, 0.97, h0=22.0,
                         h1=[130.0, 140.0, 150.0][seed], lam=[-0.02, -0.0104, -0.001][seed]))
        rows.append(_row("gru", "delayed_xor", 40, seed, 0.95 if seed < 2 else NAN,
                         status="ok" if seed < 2 else "failed", h0=30.0, h1=90.0))
        rows.append(_row("none", "adding", 49, seed, [0.03, 0.04, 0.1][seed], h0=5.0, h1=6.0))
        rows.append(_row("clip", "adding", 49, seed, 0.02 if seed == 0 else NAN,
                         status="ok" if seed == 0 else "diverged", h0=5.0,
                         h1=7.0 if seed == 0 else -1.0))
        rows.append(_row("flossing", "adding", 49, seed, [0.01, 1 / 30, 0.05][seed], h0=5.0,
                         h1=48.0))
        rows.append(_row("gru", "adding", 49, seed, 0.001, h0=8.0, h1=49.0))
    return pd.DataFrame(rows)


def _cell(table, remedy, task, steps):
    found = table[(table.remedy == remedy) & (table.task == task)
                  & (table.memory_steps == steps)]
    assert len(found) == 1
    return found.iloc[0]


# --- the table --------------------------------------------------------------------------------

def test_table_counts_solved_diverged_and_failed_per_remedy_task_and_length():
    table = remedy_table(trials(), CONFIG)
    assert list(zip(table.remedy, table.task, table.memory_steps)) == [
        (r, t, s) for r in ("none", "clip", "flossing", "gru")
        for t, s in (("delayed_xor", 10.0), ("delayed_xor", 40.0), ("adding", 49.0))]
    counts = ["n_trials", "n_judged", "n_solved", "n_diverged", "n_failed", "n_unjudged"]
    assert _cell(table, "none", "delayed_xor", 40)[counts].tolist() == [3, 3, 0, 0, 0, 0]
    # 0.89 < 0.90: not solved
    assert _cell(table, "clip", "delayed_xor", 40)[counts].tolist() == [3, 3, 0, 0, 0, 0]
    assert _cell(table, "flossing", "delayed_xor", 40)[counts].tolist() == [3, 3, 3, 0, 0, 0]
    # the failed seed is left out of the judged ones and counted
    gru = _cell(table, "gru", "delayed_xor", 40)
    assert gru[counts].tolist() == [3, 2, 2, 0, 1, 0] and gru["success"] == 1.0
    # the diverged seeds are judged, not solved
    clip = _cell(table, "clip", "adding", 49)
    assert clip[counts].tolist() == [3, 3, 1, 2, 0, 0]
    assert clip["success"] == pytest.approx(1 / 3)
    assert _cell(table, "none", "adding", 49)[counts].tolist() == [3, 3, 1, 0, 0, 0]
    for remedy in REMEDIES:
        assert _cell(table, remedy, "delayed_xor", 10)[["n_solved", "n_judged"]].tolist() \
            == [3, 3]


def test_table_medians_are_over_the_finished_seeds():
    table = remedy_table(trials(), CONFIG)
    floss = _cell(table, "flossing", "delayed_xor", 40)
    assert floss[["horizon_first", "horizon_last"]].tolist() == [22.0, 140.0]
    assert floss["lyapunov_top_end"] == pytest.approx(-0.0104)
    assert floss["lyapunov_top_init"] == pytest.approx(-0.2)
    assert _cell(table, "clip", "delayed_xor", 40)["horizon_last"] == 21.0
    # the gru's failed seed and the clip's diverged seeds (horizon −1) are left out
    assert _cell(table, "gru", "delayed_xor", 40)["horizon_last"] == 90.0
    assert _cell(table, "clip", "adding", 49)["horizon_last"] == 7.0
    assert _cell(table, "none", "adding", 49)["horizon_first"] == 5.0


def test_threshold_for_accuracy_and_mse():
    assert SOLVED_FRACTION == 0.8
    table = remedy_table(trials(), CONFIG)
    assert _cell(table, "none", "delayed_xor", 40)["threshold"] == pytest.approx(0.9)
    assert _cell(table, "none", "adding", 49)["threshold"] == pytest.approx(1 / 30)
    assert threshold_text("accuracy", 0.5, 1.0) == "accuracy ≥ 0.90"
    assert threshold_text("mse", 1 / 6, 0.0) == "mse ≤ 0.033"
    assert threshold_text("accuracy", 0.5, 0.5) == ""
    assert task_threshold_text(table, "delayed_xor") == "accuracy ≥ 0.90"
    assert task_threshold_text(table, "adding") == "mse ≤ 0.033"
    # lower is better: 0.03 and exactly 1/30 solve, 0.04 does not
    assert metric_fraction(0.03, 1 / 6, 0.0) == pytest.approx(0.82)
    assert _cell(table, "flossing", "adding", 49)["n_solved"] == 2
    # higher is better: 0.90 solves, 0.89 does not
    one = pd.DataFrame([_row("none", "delayed_xor", 40, 0, 0.90),
                        _row("clip", "delayed_xor", 40, 0, 0.89)])
    assert remedy_table(one)["n_solved"].tolist() == [1, 0]


def test_order_baseline_and_memory_fallback():
    t = trials()
    assert remedy_order(t) == ("none", "clip", "flossing", "gru")
    shuffled = {"sweep": {"remedy": {"gru": {}, "flossing": {}, "none": {}, "clip": {}}}}
    assert remedy_order(t, shuffled) == ("gru", "flossing", "none", "clip")
    assert remedy_table(t, shuffled)["remedy"].iloc[0] == "gru"
    assert baseline_remedy(["clip", "none"]) == "none"
    assert baseline_remedy(["clip", "gru"]) == "clip"
    old = t.drop(columns="memory_steps")
    assert memory_steps(old).tolist()[:2] == [20.0, 20.0]  # task.seq_len
    assert sorted(remedy_table(old)["memory_steps"].unique()) == [20.0, 50.0, 59.0]
    # a stored memory_steps column with a missing value (flip-flop: no fixed span) stays
    # missing: the seq_len fallback is only for runs without the column
    mixed = t.assign(memory_steps=[NAN] + [40] * (len(t) - 1))
    assert str(memory_steps(mixed).tolist()[:2]) == "[nan, 40.0]"


def test_no_table_without_a_remedy_axis():
    t = trials()
    assert remedy_table(t.drop(columns="remedy")) is None
    assert remedy_table(t.assign(remedy="none")) is None
    with pytest.raises(MissingData, match="remedy axis"):
        remedy_success(t.drop(columns="remedy"))


# --- the findings -----------------------------------------------------------------------------

def _remedy_findings(t=None, config=CONFIG):
    t = trials() if t is None else t
    return [f.text for f in compute_findings({"trials": t}, SWEPT, config)
            if f.key == "remedies"]


def test_findings_compare_each_remedy_with_none():
    texts = _remedy_findings()
    xor = [x for x in texts if "delayed_xor" in x]
    add = [x for x in texts if "adding" in x]
    assert len(xor) == 2 and len(add) == 1
    assert xor[0].startswith("On delayed_xor, a seed counts as solved with a held-out accuracy "
                             "≥ 0.90 (80% of the way from chance 0.500 to best 1.00). ")
    assert ("delayed_xor at 40 memory steps: none solved 0/3 seeds (horizon 22 → 22 steps, "
            "λ₁ −0.080); more seeds solved with flossing 3/3 (horizon 22 → 140 steps, "
            "λ₁ −0.010); a higher solved rate with gru 2/2 (1 failed; horizon 30 → 90 steps, "
            "λ₁ −0.050) than none's 0/3; no change with clip 0/3 (horizon 21 steps).") in xor[0]
    assert xor[1] == ("delayed_xor at 10 memory steps: no remedy solved more or fewer seeds "
                      "than none (none: 3/3 at 10).")
    assert add[0].startswith("On adding, a seed counts as solved with a held-out mse ≤ 0.033 "
                             "(80% of the way from chance 0.167 to best 0). ")
    assert ("adding at 49 memory steps: none solved 1/3 seeds (horizon 5 → 6 steps, "
            "λ₁ −0.050); more seeds solved with flossing 2/3 (horizon 5 → 48 steps, λ₁ −0.050), "
            "gru 3/3 (horizon 8 → 49 steps, λ₁ −0.050); no change with clip 1/3 (2 diverged; "
            "horizon 7 steps).") in add[0]


def test_findings_name_a_remedy_that_made_things_worse_and_fall_back_to_the_first():
    t = trials()
    # clip loses the seed that none solved at delayed_xor 10
    t.loc[(t.remedy == "clip") & (t.memory_steps == 10) & (t["train.seed"] == 0),
          "val_metric"] = 0.7
    texts = _remedy_findings(t)
    (at10,) = [x for x in texts if "delayed_xor at 10 memory steps" in x]
    assert ("delayed_xor at 10 memory steps: none solved 3/3 seeds (horizon 9 → 9 steps, "
            "λ₁ −0.050); fewer seeds solved (worse) with clip 2/3 (horizon 9 → 9 steps, "
            "λ₁ −0.050); no change with flossing 3/3 (horizon 9 steps), gru 3/3 (horizon 9 "
            "steps).") in at10
    # without "none", the first remedy of the config is the baseline
    texts = _remedy_findings(t[t.remedy != "none"])
    assert any("delayed_xor at 40 memory steps: clip solved 0/3 seeds" in x for x in texts)
    assert any("more seeds solved with flossing 3/3" in x for x in texts)


def test_no_remedy_finding_and_no_section_without_the_axis():
    t = trials().drop(columns="remedy")
    assert _remedy_findings(t, {}) == []
    section = next(s for s in SECTIONS if s.key == "remedies")
    assert not figures.applies_to(section, {"trials": t})
    assert figures.applies_to(section, {"trials": trials()})


def test_learning_view_steps_aside_for_a_remedy_axis():
    t = trials()
    # cell and a numeric task option both vary: without the remedy column it is a learning sweep
    assert learning_sweep(t.drop(columns="remedy")) is not None
    assert learning_sweep(t) is None
    learning = next(s for s in SECTIONS if s.key == "learning")
    assert not figures.applies_to(learning, {"trials": t})


# --- the figure -------------------------------------------------------------------------------

def test_figure_has_one_panel_per_task_and_a_marker_per_remedy_and_length():
    fig = remedy_success(trials())
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["delayed_xor\nsolved: accuracy ≥ 0.90",
                                                 "adding\nsolved: mse ≤ 0.033"]
    xor = panels[0]
    markers = {ln.get_label(): ln for ln in xor.get_lines() if ln.get_label().startswith("_")
               and not ln.get_label().startswith("_child")}
    assert len([k for k in markers if k.endswith(" 40")]) == 4
    floss = markers["_flossing 40"]
    assert floss.get_xdata()[0] == 140.0
    assert floss.get_ydata()[0] == pytest.approx(1.0 + 0.5 * 0.012)
    assert markers["_none 40"].get_ydata()[0] == pytest.approx(0.0 - 1.5 * 0.012)
    # the dashed lines at the memory lengths
    dashed = [ln for ln in xor.get_lines() if ln.get_linestyle() == "--"]
    assert sorted(float(ln.get_xdata()[0]) for ln in dashed) == [10.0, 40.0]
    assert xor.get_xscale() == "symlog"  # horizons 9 to 150: wide
    legend = [x.get_text() for x in fig.legends[0].get_texts()]
    assert legend[:4] == ["none", "clip", "flossing", "gru"]


# --- the page ---------------------------------------------------------------------------------

def _write_run(root, t, config):
    from rnn_diag.experiments.store import trials_frame

    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "manifest.json").write_text("{}")
    trials_frame(t.to_dict("records")).to_parquet(root / "trials.parquet", index=False)
    return load_run(root)


def test_a_run_with_a_remedy_axis_renders_the_section_and_its_table(tmp_path):
    from rnn_diag.report.page import render_report

    config = {"name": "remedies", "task": {"name": "delayed_xor"}, **CONFIG}
    run = _write_run(tmp_path / "run", trials(), config)
    assert run.swept == ("remedy", "problem", "train.seed")
    sections = [s for s in SECTIONS if s.key in ("learning", "remedies")]
    rendered = render_report(run, jobs=1, sections=sections)
    assert [(s.key, s.state) for s in rendered.sections] == [("remedies", "figure")]
    html = rendered.html
    assert 'id="remedies"' in html and 'href="#remedies"' in html
    assert "solved: accuracy ≥ 0.90" in html and "solved: mse ≤ 0.033" in html
    table = html[html.index('<table class="trials learning remedies">'):]
    table = table[:table.index("</table>")]
    rows = table.split("<tr")[3:]  # two header rows
    assert [r.split('class="text label">')[1].split(" ")[0].split("<")[0] for r in rows] == [
        "none", "clip", "flossing", "gru"]
    # none: delayed_xor 10, 40, adding 49
    cells = rows[0].split("<td")[2:]
    assert cells[0].startswith(' class="learned">3/3')
    assert cells[1].startswith(' class="unlearned">0/3')
    assert "h 22 · λ −0.080" in cells[1]
    assert cells[2].startswith(' class="partly">1/3')
    clip = rows[1].split("<td")[2:]
    assert "2 diverged" in clip[2] and clip[2].startswith(' class="partly">1/3')
    gru = rows[3].split("<td")[2:]
    assert gru[1].startswith(' class="learned">2/2') and "1 failed" in gru[1]
    assert "h 140 · λ −0.010" in rows[2]
    assert any(f.key == "remedies" and "more seeds solved with flossing 3/3" in f.text
               for f in rendered.findings)


def test_a_run_without_a_remedy_column_has_no_remedies_section(tmp_path):
    from rnn_diag.report.page import render_report

    t = trials()
    t = t[t.remedy == "none"].drop(columns=["remedy"])
    config = {"name": "plain", "task": {"name": "delayed_xor"},
              "sweep": {"problem": ["xor", "add"], "seed": [0, 1, 2]}}
    run = _write_run(tmp_path / "run", t, config)
    rendered = render_report(run, jobs=1, sections=[s for s in SECTIONS if s.key == "remedies"])
    assert rendered.sections == []
    assert 'id="remedies"' not in rendered.html and "remedies" not in rendered.html.lower()
    assert not [f for f in rendered.findings if f.key == "remedies"]


# --- settings, repeated seeds, wording, loss steps, order -------------------------------------

def _pool_trials(hidden=(32, 256), memory=20, loss_steps=None):
    """none and flossing × hidden_size × 3 seeds: none solves only at hidden_size 256."""
    rows = []
    for remedy in ("none", "flossing"):
        for hs in hidden:
            for seed in range(3):
                row = _row(remedy, "delayed_xor", memory, seed,
                           0.97 if (hs == 256 or remedy == "flossing") else 0.55,
                           h0=5.0, h1=30.0)
                row.update({"id": f"{remedy}-{hs}-{seed}", "model.hidden_size": hs})
                if loss_steps is not None:
                    row["loss_steps"] = loss_steps
                rows.append(row)
    return pd.DataFrame(rows)


POOL_CONFIG = {"sweep": {"remedy": {"none": {}, "flossing": {}},
                         "model.hidden_size": [32, 256], "seed": [0, 1, 2]}}


def test_other_swept_settings_are_never_pooled_into_seeds():
    for config in (POOL_CONFIG, None):  # from the config, or inferred without one
        table = remedy_table(_pool_trials(), config)
        assert table[["remedy", "setting", "label", "n_trials", "n_solved"]].values.tolist() \
            == [["none", "hidden_size=32", "hidden_size=32", 3, 0],
                ["none", "hidden_size=256", "hidden_size=256", 3, 3],
                ["flossing", "hidden_size=32", "hidden_size=32", 3, 3],
                ["flossing", "hidden_size=256", "hidden_size=256", 3, 3]]
    texts = [f.text for f in compute_findings({"trials": _pool_trials()},
                                              ["remedy", "model.hidden_size", "train.seed"],
                                              POOL_CONFIG) if f.key == "remedies"]
    assert texts[0].endswith("delayed_xor at 20 memory steps (hidden_size=32): none solved "
                             "0/3 seeds (horizon 5 → 30 steps, λ₁ −0.050); more seeds solved "
                             "with flossing 3/3 (horizon 5 → 30 steps, λ₁ −0.050).")
    assert texts[1] == ("delayed_xor at 20 memory steps (hidden_size=256): no remedy solved "
                        "more or fewer seeds than none (none: 3/3 at 20 (hidden_size=256)).")
    assert not any("/6" in x for x in texts)
    # one hidden size: task × memory length identify the setting, no label
    one = remedy_table(_pool_trials(hidden=(256,)), POOL_CONFIG)
    assert one["label"].tolist() == ["", ""]
    assert one["setting"].tolist() == ["hidden_size=256", "hidden_size=256"]


def test_the_page_table_tells_apart_settings_with_the_same_task_and_length():
    from rnn_diag.report.page import _remedies_table

    page = _remedies_table(_pool_trials(), POOL_CONFIG)
    assert page["tasks"][0]["columns"] == ["20 steps · hidden_size=32",
                                           "20 steps · hidden_size=256"]
    assert [c["solved"] for c in page["rows"][0]["cells"]] == ["0/3", "3/3"]
    assert page["repeated"] == ""
    single = _remedies_table(_pool_trials(hidden=(256,)), POOL_CONFIG)
    assert single["tasks"][0]["columns"] == ["20 steps"]


def test_repeated_seeds_within_a_setting_are_warned_about(tmp_path):
    t = _pool_trials(hidden=(256,))
    # the folder was re-run with a changed "flossing": two more trials, same seeds, new ids
    again = t[(t.remedy == "flossing") & (t["train.seed"] < 2)].assign(
        id=lambda d: d["id"] + "-v2", val_metric=0.55)
    t = pd.concat([t, again], ignore_index=True)
    table = remedy_table(t, POOL_CONFIG)
    assert table[["remedy", "n_trials", "n_solved", "n_repeated"]].values.tolist() == [
        ["none", 3, 3, 0], ["flossing", 5, 3, 2]]
    warning = ("Warning: 2 trials repeat a seed within one remedy and setting: the run folder "
               "holds trials of different configs under the same names; counts include both — "
               "rerun with --fresh.")
    found = [f.text for f in compute_findings({"trials": t}, ["remedy", "train.seed"],
                                              POOL_CONFIG) if f.key == "remedies"]
    assert found[0] == warning
    from rnn_diag.report.page import render_report

    config = {"name": "again", "task": {"name": "delayed_xor"}, **POOL_CONFIG}
    run = _write_run(tmp_path / "run", t, config)
    html = render_report(run, jobs=1, sections=[s for s in SECTIONS
                                                if s.key == "remedies"]).html
    assert '<p class="warning">2 trials repeat a seed within one remedy and setting' in html
    assert "2 repeated seeds" in html
    # the same row twice (one id) is not a repeat
    dup = pd.concat([t.iloc[:1], t], ignore_index=True)
    assert remedy_table(dup, POOL_CONFIG)["n_repeated"].tolist() == [0, 2]


def test_findings_compare_counts_or_rates_as_they_say():
    config = {"sweep": {"remedy": {"none": {}, "clip": {}}}}
    # none: 1 ok (solved) + 2 failed; clip: 2 of 3 solved -> the judged counts differ
    rows = [_row("none", "delayed_xor", 20, 0, 0.97, h0=5.0, h1=30.0)]
    rows += [_row("none", "delayed_xor", 20, s, NAN, status="failed") for s in (1, 2)]
    rows += [_row("clip", "delayed_xor", 20, s, v, h0=5.0, h1=30.0)
             for s, v in ((0, 0.97), (1, 0.97), (2, 0.55))]
    texts = _remedy_findings(pd.DataFrame(rows), config)
    assert texts[0].endswith(
        "delayed_xor at 20 memory steps: none solved 1/1 seeds (2 failed; horizon 5 → 30 "
        "steps, λ₁ −0.050); a lower solved rate (worse) with clip 2/3 (horizon 5 → 30 steps, "
        "λ₁ −0.050) than none's 1/1.")
    assert "fewer" not in texts[0]
    # clip 2/2 (1 failed) against none 1/3
    rows = [_row("none", "delayed_xor", 20, s, v, h0=5.0, h1=30.0)
            for s, v in ((0, 0.97), (1, 0.55), (2, 0.55))]
    rows += [_row("clip", "delayed_xor", 20, s, v, h0=5.0, h1=30.0)
             for s, v in ((0, 0.97), (1, 0.97))]
    rows.append(_row("clip", "delayed_xor", 20, 2, NAN, status="failed", h0=5.0, h1=30.0))
    texts = _remedy_findings(pd.DataFrame(rows), config)
    assert texts[0].endswith(
        "; a higher solved rate with clip 2/2 (1 failed; horizon 5 → 30 steps, λ₁ −0.050) "
        "than none's 1/3.")
    assert "more seeds" not in texts[0]


def test_horizon_is_not_compared_with_memory_for_a_loss_at_many_steps():
    t = _pool_trials(hidden=(256,), loss_steps=20)
    texts = _remedy_findings(t, POOL_CONFIG)
    assert texts[0].endswith(
        " Horizon not comparable with memory here: a loss at 20 steps, so the summed gradient "
        "reaches back at least about 20 steps whatever the memory; compare λ₁ instead.")
    assert remedy_table(t, POOL_CONFIG)["loss_steps"].tolist() == [20.0, 20.0]
    fig = remedy_success(t, POOL_CONFIG)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"] == []
    legend = [x.get_text() for x in fig.legends[0].get_texts()]
    assert "memory length (horizon needed)" not in legend
    note = " ".join(x.get_text() for x in fig.texts)
    assert "delayed_xor: a loss at 20 steps, so its horizon is at least about that" in note
    # a loss at the last step only: the line, no caveat
    last = remedy_success(_pool_trials(hidden=(256,), loss_steps=1), POOL_CONFIG)
    (ax,) = [a for a in last.axes if a.get_visible()]
    assert [float(ln.get_xdata()[0]) for ln in ax.get_lines()
            if ln.get_linestyle() == "--"] == [20.0]
    assert "not stored (loss_steps)" not in " ".join(x.get_text() for x in last.texts)
    # unknown (an old run): the line, with the caveat
    old = remedy_success(_pool_trials(hidden=(256,)), POOL_CONFIG)
    assert ("the steps with a loss are not stored (loss_steps): the memory lines compare with "
            "the horizon only for a loss at a few last steps") in " ".join(
                x.get_text() for x in old.texts)


@pytest.mark.parametrize("loss_steps, compared", [(5, True), (6, False)])
def test_a_few_loss_steps_keep_the_comparison(loss_steps, compared):
    """Copy's 3 read-out steps against 23 memory steps are few: the horizon still measures
    memory up to a quarter of it (5 of 20 here), not beyond."""
    t = _pool_trials(hidden=(256,), loss_steps=loss_steps)
    (ax,) = [a for a in remedy_success(t, POOL_CONFIG).axes if a.get_visible()]
    lines = [float(ln.get_xdata()[0]) for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert lines == ([20.0] if compared else [])
    said = "Horizon not comparable with memory here" in _remedy_findings(t, POOL_CONFIG)[0]
    assert said is not compared


def test_the_figure_follows_the_config_order_through_the_section():
    from rnn_diag.report.figures._data import sweep_table

    t = trials().iloc[::-1].reset_index(drop=True)  # stored (completion) order: gru first
    assert remedy_order(t)[0] == "gru"
    section = next(s for s in SECTIONS if s.key == "remedies")
    fig = section.build({"trials": t, "sweep": sweep_table(CONFIG)})
    legend = [x.get_text() for x in fig.legends[0].get_texts()]
    assert legend[:4] == ["none", "clip", "flossing", "gru"]


def test_a_task_without_a_memory_span_is_memory_n_a():
    from rnn_diag.report.page import _remedies_table

    t = trials()
    adding = t["task.name"] == "adding"
    t.loc[adding, "task.name"] = "flip_flop"
    t.loc[adding, "memory_steps"] = NAN
    flip = remedy_table(t, CONFIG).query("task == 'flip_flop'")
    assert len(flip) == 4 and flip["memory_steps"].isna().all()
    page = _remedies_table(t, CONFIG)
    assert [x["columns"] for x in page["tasks"]] == [["10 steps", "40 steps"], ["memory n/a"]]
    assert any("flip_flop (memory n/a): none solved 1/3 seeds" in x
               for x in _remedy_findings(t))


def test_names_the_config_no_longer_lists_are_warned_about():
    """A folder re-run after renaming a remedy whose settings also changed keeps the old
    trials under the old name: the findings say so instead of listing it as a remedy."""
    config = {"sweep": {**CONFIG["sweep"], "remedy": {k: {} for k in REMEDIES if k != "clip"}}}
    texts = _remedy_findings(config=config)
    assert texts[0] == (
        "Warning: the trials named clip are not values of the remedy axis in config.yaml: an "
        "earlier run of this folder named them so (a rename, or settings that changed). They "
        "are shown under those names; rerun with --fresh to keep only this config's trials.")
    assert not any(t.startswith("Warning") for t in _remedy_findings())


def test_a_stored_config_with_a_single_value_sweep_still_renders(tmp_path):
    """config.yaml as stored may be one today's schema refuses (``seed: 3``, ``remedy:
    null``): the page lists what it can instead of failing."""
    from rnn_diag.report.page import render_report

    config = {"name": "odd", "task": {"name": "delayed_xor"},
              "sweep": {"remedy": None, "problem": ["xor", "add"], "seed": 3}}
    run = _write_run(tmp_path / "run", trials(), config)
    rendered = render_report(run, jobs=1, sections=[])
    html = rendered.html
    assert '<span class="mono">remedy</span> ∈ {}' in html
    assert '<span class="mono">train.seed</span> ∈ {3}' in html
