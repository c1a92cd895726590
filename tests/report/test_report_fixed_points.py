"""The fixed-point section and finding on hand-made tables of the runner's schema
(:mod:`fixed_point_tables`): points per stability class, hollow slow points, outliers left out
and counted, unstable directions through saddles only, the unit circle, the section only when
recorded, the finding's numbers, and a run folder read back by the report."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import fixed_point_tables as fpt  # noqa: E402  (this folder is on sys.path)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from rnn_diag.report import figures  # noqa: E402
from rnn_diag.report.figures import (  # noqa: E402
    SECTIONS,
    MissingData,
    fixed_point_portraits,
    fixed_point_spectra,
)
from rnn_diag.report.figures.fixed_points import STABILITY_COLOURS  # noqa: E402
from rnn_diag.report.findings import compute_findings  # noqa: E402
from rnn_diag.report.run_data import load_run  # noqa: E402

FP_KEYS = ("fixed_points", "fixed_point_eigenvalues")


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _scatters(ax):
    """{label: collection} of the fixed-point scatters of a panel."""
    return {c.get_label(): c for c in ax.collections if c.get_label().startswith("_")}


def _n(collection):
    """Points in a 2-D or 3-D scatter."""
    if hasattr(collection, "_offsets3d"):
        return len(np.asarray(collection._offsets3d[0]))
    return len(collection.get_offsets())


def _note(fig):
    return fig._supxlabel.get_text() if fig._supxlabel is not None else ""


def _portraits(t):
    return fixed_point_portraits(t["trials"], t["fixed_points"], t["state_trajectories"],
                                 t["pca"])


def test_portrait_draws_each_stability_class_with_its_count_and_colour():
    t = fpt.tables()
    fig = _portraits(t)
    panels = _panels(fig)
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "cell=gru", "cell=lstm", "cell=rnn"]
    assert all(ax.name == "3d" for ax in panels)
    for ax in panels:
        scatters = _scatters(ax)
        counts = {label: _n(c) for label, c in scatters.items()}
        # converged: 8 corners, 12 edge saddles, the centre, the marginal point; slow: one
        # stable and one saddle; the outlier saddle is not drawn
        assert counts == {"_stable converged": 8, "_saddle converged": 12,
                          "_unstable converged": 1, "_marginal converged": 1,
                          "_stable slow": 1, "_saddle slow": 1}
        for label, c in scatters.items():
            stability, kind = label[1:].split()
            edge = to_hex(c.get_edgecolor()[0])
            assert edge == STABILITY_COLOURS[stability]
            faces = c.get_facecolor()
            if kind == "slow":  # hollow
                assert len(faces) == 0 or faces[0][3] == 0
            else:
                assert to_hex(faces[0]) == STABILITY_COLOURS[stability]
        # the corners are where the table puts them
        xs, ys, zs = (np.asarray(v) for v in scatters["_stable converged"]._offsets3d)
        assert sorted(zip(xs, ys, zs)) == sorted(tuple(c) for c in fpt.CORNERS)
        # PCA shares on the axes and in the title
        assert ax.get_xlabel() == "PC1 (50%)" and ax.get_zlabel() == "PC3 (15%)"
        assert "PC1–3: 95% of the variance" in ax.get_title()
    note = _note(fig)
    assert "6 slow points (did not converge) drawn hollow" in note
    assert "3 outlier points (far from the trajectories) left out" in note
    legend = [x.get_text() for x in fig.legends[0].get_texts()]
    assert legend[:4] == ["stable", "saddle", "unstable", "marginal"]
    assert any("slow point" in x for x in legend)


def test_unstable_directions_are_drawn_through_saddles_only():
    t = fpt.tables(cells=("gru",))
    fig = _portraits(t)
    (ax,) = _panels(fig)
    lines = [ln for ln in ax.get_lines() if ln.get_label() == "_unstable direction"]
    # 12 converged saddles + 1 slow saddle; not the unstable centre, not the outlier
    assert len(lines) == 13
    fp = t["fixed_points"]
    saddles = fp[(fp.stability == "saddle") & ~fp.outlier]
    centres = {tuple(np.round(r[["pc1", "pc2", "pc3"]].to_numpy(float), 9))
               for _, r in saddles.iterrows()}
    directions = {}
    for _, r in saddles.iterrows():
        directions[tuple(np.round(r[["pc1", "pc2", "pc3"]].to_numpy(float), 9))] = \
            r[["unstable_pc1", "unstable_pc2", "unstable_pc3"]].to_numpy(float)
    for ln in lines:
        xyz = np.stack(ln.get_data_3d(), axis=1)
        assert xyz.shape == (2, 3)
        mid = tuple(np.round(xyz.mean(axis=0), 9))
        assert mid in centres  # through a saddle, centred on it
        seg = xyz[1] - xyz[0]
        assert abs(abs(np.dot(seg / np.linalg.norm(seg), directions[mid])) - 1) < 1e-9
        assert to_hex(ln.get_color()) == STABILITY_COLOURS["saddle"]
    # the trajectories: one grey line per stored sample
    assert len([ln for ln in ax.get_lines() if ln.get_label() == "_trajectory"]) == 3


def test_portrait_shows_first_seed_per_setting_and_the_end_snapshot():
    t = fpt.tables(cells=("rnn", "gru"), seeds=(1, 0), whens=("init", "end"))
    fp = t["fixed_points"]
    # at init only 2 points, and seed 1 lacks a corner at the end: seed 0 at "end" has 8
    drop = ((fp.when == "init") & (fp.point >= 2)) | (fp.trial.str.endswith("1") & (fp.point == 0))
    t["fixed_points"] = fp[~drop]
    fig = _portraits(t)
    panels = _panels(fig)
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["cell=gru", "cell=rnn"]
    for ax in panels:
        assert _n(_scatters(ax)["_stable converged"]) == 8
        assert "snapshot" not in ax.get_title()
    assert "first seed of each setting (2 of 4 trials)" in _note(fig)
    # without an "end" snapshot the latest one is drawn and named
    t["fixed_points"] = fp[fp.when == "init"]
    fig = _portraits(t)
    assert all("(snapshot init)" in ax.get_title() for ax in _panels(fig))


def test_portrait_without_pca_or_trajectories_says_so():
    t = fpt.tables(cells=("gru",))
    fig = fixed_point_portraits(t["trials"], t["fixed_points"])
    (ax,) = _panels(fig)
    assert ax.get_xlabel() == "PC1" and "variance" not in ax.get_title()
    assert "no trajectories recorded" in _note(fig)
    assert not [ln for ln in ax.get_lines() if ln.get_label() == "_trajectory"]


def test_portrait_caps_the_number_of_panels():
    cells = tuple(f"c{i}" for i in range(12))
    t = fpt.tables(cells=cells)
    fig = _portraits(t)
    assert len(_panels(fig)) == figures.fixed_points.MAX_PANELS
    assert f"{figures.fixed_points.MAX_PANELS} of 12 settings shown" in _note(fig)


def test_eigenvalue_panel_has_the_unit_circle_and_colours_by_stability():
    t = fpt.tables(cells=("gru", "lstm"))
    fig = fixed_point_spectra(t["trials"], t["fixed_points"], t["fixed_point_eigenvalues"])
    panels = _panels(fig)
    assert len(panels) == 2
    for ax in panels:
        circles = [p for p in ax.patches if isinstance(p, Circle)]
        assert len(circles) == 1 and circles[0].get_radius() == 1.0
        assert circles[0].center == (0, 0)
        scatters = _scatters(ax)
        # 4 eigenvalues per point; the outlier's are left out
        assert {k: _n(c) for k, c in scatters.items()} == {
            "_stable converged": 32, "_saddle converged": 48, "_unstable converged": 4,
            "_marginal converged": 4, "_stable slow": 4, "_saddle slow": 4}
        for label, c in scatters.items():
            assert to_hex(c.get_edgecolor()[0]) == STABILITY_COLOURS[label[1:].split()[0]]
        # the saddles' leading eigenvalue 1.3 lies outside the circle, in view
        offsets = scatters["_saddle converged"].get_offsets()
        assert np.isclose(np.abs(offsets[:, 0] + 1j * offsets[:, 1]).max(), 1.3)
        assert ax.get_xlim()[1] >= 1.5 and ax.get_aspect() == 1.0
    assert "eigenvalues of 2 outlier points left out" in _note(fig)
    assert "|λ| = 1 (unit circle)" in [x.get_text() for x in fig.legends[0].get_texts()]


def test_sections_only_when_fixed_points_were_recorded():
    sections = [s for s in SECTIONS if s.key in FP_KEYS]
    assert [s.key for s in sections] == list(FP_KEYS)
    t = fpt.tables(cells=("gru",))
    without = {k: v for k, v in t.items() if k == "trials"}
    empty = {**without, "fixed_points": pd.DataFrame()}
    for section in sections:
        assert "principal components" in section.caption or "unit circle" in section.caption
        assert not figures.applies_to(section, without)
        assert not figures.applies_to(section, empty)
        assert figures.applies_to(section, t)
        fig = section.build(t)
        assert _panels(fig)
    portraits = sections[0].caption
    assert "[h | c]" in portraits and "hollow" in portraits.lower()


def test_missing_columns_raise_missing_data():
    t = fpt.tables(cells=("gru",))
    with pytest.raises(MissingData, match="fixed_points"):
        fixed_point_portraits(t["trials"], t["fixed_points"].drop(columns="stability"))
    with pytest.raises(MissingData, match="fixed_point_eigenvalues"):
        fixed_point_spectra(t["trials"], t["fixed_points"], pd.DataFrame())


def _counts(stable, saddle, unstable=0, marginal=0, unconverged=0, slowest=math.nan):
    return {"fixed_points_stable_end": stable, "fixed_points_saddle_end": saddle,
            "fixed_points_unstable_end": unstable, "fixed_points_marginal_end": marginal,
            "fixed_points_unconverged_end": unconverged, "slowest_stable_modulus_end": slowest}


def test_finding_counts_per_setting_against_two_to_the_bits():
    counts = {("rnn", 0): _counts(8, 12, slowest=0.97),
              ("gru", 0): _counts(6, 3, unstable=1, unconverged=2, slowest=0.90),
              ("gru", 1): _counts(8, 5, unstable=1, marginal=1, slowest=0.95),
              ("gru", 2): _counts(7, 5, unstable=1, slowest=0.99)}
    t = fpt.trials(cells=("rnn", "gru"), seeds=(0, 1, 2), counts=counts)
    t = t[t["id"].isin(["rnn0", "gru0", "gru1", "gru2"])]
    config = {"task": {"name": "flipflop", "bits": 3}}
    (found,) = [f for f in compute_findings({"trials": t}, ["model.cell", "train.seed"], config)
                if f.key == "fixed_points"]
    text = found.text
    assert text.startswith("Fixed points of the trained network at zero input")
    # rnn: one seed, exactly 2^3 stable points; |λ| 0.97 halves in ln2/-ln0.97 = 22.8 steps
    assert ("cell rnn: 8 stable fixed points (= 2^3, one per pattern of the 3 bits) and 12 "
            "saddles; the slowest stable mode has |λ₁| = 0.970 (a perturbation along it halves "
            "in about 23 steps).") in text
    # gru: medians over 3 seeds with ranges; unstable and marginal named since some seed has one
    assert ("cell gru: 7 (6–8) stable fixed points (fewer than the 2^3 = 8 patterns of the 3 "
            "bits), 5 (3–5) saddles, 1 unstable fixed point and 0 (0–1) marginal fixed points; "
            "the slowest stable mode has |λ₁| = 0.950 (over the seeds 0.900–0.990; a "
            "perturbation along it halves in about 14 steps); 2 candidates (over the 3 seeds) "
            "did not converge: slow points, drawn hollow (medians over 3 seeds).") in text
    assert "unconverged" not in text and "marginal" not in text.split("cell rnn")[1]


def test_finding_without_bits_states_the_counts_and_without_columns_is_absent():
    t = fpt.trials(cells=("lstm",), counts={("lstm", 0): _counts(1, 0, slowest=0.5)})
    (found,) = [f for f in compute_findings({"trials": t}, ["model.cell"], {})
                if f.key == "fixed_points"]
    assert "1 stable fixed point and 0 saddles; the slowest stable mode has |λ₁| = 0.500 (a " \
           "perturbation along it halves in about 1.0 step)." in found.text
    assert "2^" not in found.text
    # a swept bits column wins over the config
    t["task.bits"] = 1
    (found,) = [f for f in compute_findings({"trials": t}, ["model.cell"], {"task": {"bits": 5}})
                if f.key == "fixed_points"]
    assert "fewer than the 2^1 = 2 patterns of the 1 bits" in found.text
    plain = fpt.trials(cells=("lstm",))
    assert not [f for f in compute_findings({"trials": plain}, ["model.cell"], {})
                if f.key == "fixed_points"]


def test_a_run_folder_with_fixed_point_tables_is_read_and_reported(tmp_path):
    from rnn_diag.experiments.store import trials_frame
    from rnn_diag.report.page import render_report

    t = fpt.tables(cells=("gru", "lstm"),
                   counts={("gru", 0): _counts(8, 12, unconverged=2, slowest=0.97),
                           ("lstm", 0): _counts(8, 12, slowest=0.98)})
    root = tmp_path / "run"
    root.mkdir()
    config = {"name": "ff", "task": {"name": "flipflop", "seq_len": 50, "bits": 3},
              "sweep": {"model.cell": ["gru", "lstm"]}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "manifest.json").write_text("{}")
    rows = t["trials"].to_dict("records")
    for row in rows:  # the store writes the counts as Int64
        row.update({k: int(v) for k, v in row.items() if k.startswith("fixed_points_")})
    trials_frame(rows).to_parquet(root / "trials.parquet", index=False)
    for name in ("fixed_points", "fixed_point_eigenvalues", "state_trajectories", "pca"):
        (root / name).mkdir()
        for trial, g in t[name].groupby("trial"):
            g.to_parquet(root / name / f"{trial}.parquet", index=False)
    run = load_run(root)
    assert len(run.tables["fixed_points"]) == len(t["fixed_points"])
    assert run.trials["fixed_points_stable_end"].dtype == "float64"  # Int64 read as floats
    rendered = render_report(run, jobs=1, sections=[s for s in SECTIONS if s.key in FP_KEYS])
    assert [(s.key, s.state) for s in rendered.sections] == [(k, "figure") for k in FP_KEYS]
    (found,) = [f for f in rendered.findings if f.key == "fixed_points"]
    assert "cell gru: 8 stable fixed points (= 2^3" in found.text
    assert 'id="fixed_points"' in rendered.html and 'href="#fixed_points"' in rendered.html


def test_loss_axis_names_the_task_loss_not_the_metric():
    """The flip-flop scores accuracy on an MSE loss: the label follows the stored loss_name;
    runs stored before that column fall back to the metric."""
    import pandas as pd

    from rnn_diag.report.figures.loss import _loss_label

    assert _loss_label(pd.DataFrame({"metric": ["accuracy"], "loss_name": ["mse"]})) == \
        "mean squared error"
    assert _loss_label(pd.DataFrame({"metric": ["accuracy"]})) == "cross-entropy loss (nats)"
