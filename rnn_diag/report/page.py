"""Render one run as a single self-contained HTML page.

The page holds a header (name, description, the config, the manifest), the findings, a
summary table of the trials and one section per figure of
:data:`rnn_diag.report.figures.SECTIONS`. Figures are inline ``data:`` URIs (see
:mod:`rnn_diag.report.embed`); the CSS is inline; there is no script, and a
Content-Security-Policy forbids every network request, so the page opens from ``file://``
anywhere. Every string that comes from the run (names, descriptions, config values, error
messages) goes through jinja2's autoescape.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import jinja2
import pandas as pd
from matplotlib.colors import to_hex
from tqdm.auto import tqdm

from .. import __version__
from ..experiments.labels import format_value
from . import figures
from .figures.cells import is_scan
from .figures.learning import family_reach, learning_sweep, steps_text
from .figures.remedies import (
    SOLVED_FRACTION,
    baseline_remedy,
    exponent_text,
    horizon_measures_memory,
    remedy_table,
    repeated_seeds_text,
    task_threshold_text,
)
from .figures.remedies import (
    steps_text as column_text,
)
from .findings import Finding, compute_findings, grid_order
from .parallel import default_jobs, draw_in_pool
from .run_data import RunData
from .sections import SectionResult, build_section, registered, unrecorded

__all__ = ["Rendered", "SectionResult", "render_report"]

#: Manifest entries shown in the header, in this order (others follow).
_MANIFEST_FIRST = ("rnn_diag", "torch", "python", "platform", "started", "ended", "command",
                   "config", "jobs", "git_commit")
_VERDICT_CLASS = {"vanishing": "vanishing", "exploding": "exploding", "stable": "stable",
                  "undetermined": "undetermined"}


@dataclass
class Rendered:
    """A rendered report: the HTML text and what happened on the way."""

    html: str
    sections: list[SectionResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[SectionResult]:
        """The sections whose figure raised (each one is a bug in a figure function)."""
        return [s for s in self.sections if s.state == "error"]


def _environment():
    return jinja2.Environment(
        loader=jinja2.PackageLoader("rnn_diag.report", "templates"),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _num(value, digits: int = 4) -> str:
    """A number for the table: ``""`` for missing, fixed decimals otherwise."""
    if value is None:
        return ""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return ""
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if abs(x) >= 1e4:  # a diverging loss: keep the column narrow
        return f"{x:.3g}"
    return f"{x:.{digits}f}"


def _int(value) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else str(int(x))


def _windows(summaries: pd.DataFrame) -> dict[str, int]:
    """Per trial, the number of steps the last summary covers (anchor + 1)."""
    if summaries.empty or not {"trial", "epoch", "anchor"} <= set(summaries.columns):
        return {}
    last = summaries[summaries.epoch == summaries.groupby("trial").epoch.transform("max")]
    return {str(k): int(v) + 1 for k, v in last.groupby("trial").anchor.max().items()}


def _colours(trials: pd.DataFrame, palette: Callable | None) -> dict:
    if palette is None or "task.seq_len" not in trials:
        return {}
    seq_lens = sorted({int(s) for s in trials["task.seq_len"].dropna()})
    try:
        return {k: to_hex(v) for k, v in palette(seq_lens).items()}
    except Exception:  # noqa: BLE001 - a swatch is decoration; the table stands without it
        return {}


def _trial_rows(run: RunData, palette: Callable | None) -> list[dict]:
    trials = grid_order(run.trials, run.swept)
    colours = _colours(trials, palette)
    windows = _windows(run.tables.get("summaries", pd.DataFrame()))
    rows = []
    for _, r in trials.iterrows():
        seq_len = r.get("task.seq_len")
        seq_key = None if seq_len is None or pd.isna(seq_len) else int(seq_len)
        verdict = r.get("verdict_last")
        verdict = None if verdict is None or pd.isna(verdict) else str(verdict)
        horizon = _int(r.get("horizon_last"))
        if horizon.startswith("-"):  # -1: no finite norm in the profile
            horizon = "none"
        window = windows.get(str(r.get("id")))
        rows.append({
            "id": str(r.get("id", "")),
            "label": str(r.get("label", "")),
            "colour": colours.get(seq_key, ""),
            "seq_len": "" if seq_key is None else str(seq_key),
            "status": str(r.get("status", "")),
            "error": "" if r.get("error") is None or pd.isna(r.get("error")) else str(r["error"]),
            "epochs": _int(r.get("epochs_run")),
            "train_loss": _num(r.get("train_loss")),
            "val_loss": _num(r.get("val_loss")),
            "chance_loss": _num(r.get("chance_loss")),
            "below_chance": bool(pd.notna(r.get("val_loss")) and pd.notna(r.get("chance_loss"))
                                 and r["val_loss"] < r["chance_loss"]),
            "val_metric": _num(r.get("val_metric"), 3),
            "chance_metric": _num(r.get("chance_metric"), 3),
            "verdict": verdict or "",
            "verdict_class": _VERDICT_CLASS.get(verdict or "", ""),
            "horizon": horizon,
            "window": "" if window is None else str(window),
            "decay": _num(r.get("decay_per_step_last"), 3),
            "radius": _num(r.get("spectral_radius_init"), 2),
            "norm": _num(r.get("spectral_norm_init"), 2),
        })
    return rows


def _learning_table(trials: pd.DataFrame) -> dict | None:
    """The table of the learning view (:mod:`rnn_diag.report.figures.learning`): one row per
    family, one column per swept value, each cell the median held-out metric (✓ learned,
    ✗ not), the seeds that learned, the horizon and the 3-decade timescale; None when the run
    has no sweep of a task option × cell."""
    sweep = learning_sweep(trials)
    if sweep is None:
        return None
    reach = {r.family: r for r in family_reach(sweep)}
    rows = []
    for family in sweep.families:
        part = sweep.points[sweep.points["family"] == family]
        cells = []
        for x in sweep.xs:
            found = part[part["x"] == x]
            if found.empty:
                cells.append(None)
                continue
            p = found.iloc[0]
            tau = p["timescale"]
            cells.append({
                "metric": _num(p["metric"], 3) or (p["statuses"] or "no result"),
                "learned": p["learned"],
                "mark": {True: "✓", False: "✗"}.get(p["learned"], ""),
                "seeds": _seeds_text(p),
                "horizon": _int(p["horizon"]) or "none",
                "timescale": ("∞" if tau == math.inf else steps_text(tau)
                              if math.isfinite(tau) else ""),
            })
        r = reach[family]
        largest = (_fmt(r.largest) if r.largest is not None
                   else "none" if r.judged else "not judged")
        rows.append({"family": family, "cells": cells, "largest": largest})
    chance = pd.to_numeric(sweep.points["chance"]).dropna().unique()
    return {"x_name": sweep.x_name, "xs": [_fmt(x) for x in sweep.xs], "metric": sweep.metric,
            "rows": rows, "has_best": sweep.has_best,
            "chance": _num(chance[0], 3) if len(chance) == 1 else ""}


def _remedies_table(trials: pd.DataFrame, config: Mapping) -> dict | None:
    """The table of the "Remedies" section (:mod:`rnn_diag.report.figures.remedies`): one row
    per remedy (config order), one column per setting (task × memory length, with the other
    swept values where two settings share those), each cell the seeds solved
    of those judged ("3/3"), the diverged and failed trials, the median horizon at the end of
    training (h, steps) and top Lyapunov exponent (λ, nats per step); None when the run has no
    remedy axis."""
    table = remedy_table(trials, config)
    if table is None:
        return None
    names = list(dict.fromkeys(table["remedy"]))
    length = table["memory_steps"].fillna(math.inf)
    tasks = []
    for task in dict.fromkeys(table["task"]):
        part = table[table["task"] == task].assign(x=length).sort_values("x", kind="stable")
        columns = list(dict.fromkeys((r.x, r.setting, r.label) for r in part.itertuples()))
        tasks.append({"name": task, "threshold": task_threshold_text(table, task),
                      "columns": columns})
    by_key = {(r.remedy, r.task, x, r.setting): r
              for r, x in zip(table.itertuples(index=False), length)}
    base = baseline_remedy(names)
    rows = []
    for name in names:
        cells = []
        for task in tasks:
            for x, setting, _ in task["columns"]:
                r = by_key.get((name, task["name"], x, setting))
                if r is None:
                    cells.append(None)
                    continue
                extra = [f"{r.n_diverged} diverged"] if r.n_diverged else []
                extra += [f"{r.n_failed} failed"] if r.n_failed else []
                extra += [f"{r.n_unjudged} not judged"] if r.n_unjudged else []
                extra += [f"{r.n_repeated} repeated seed{'s' if r.n_repeated != 1 else ''}"] \
                    if r.n_repeated else []
                why = []
                if math.isfinite(r.horizon_last):
                    why.append(f"h {_fmt(round(r.horizon_last, 1))}")
                if math.isfinite(r.lyapunov_top_end):
                    why.append(f"λ {exponent_text(r.lyapunov_top_end)}")
                cells.append({
                    "solved": f"{r.n_solved}/{r.n_judged}" if r.n_judged else "–",
                    "state": ("" if not r.n_judged else "learned" if r.n_solved == r.n_judged
                              else "unlearned" if r.n_solved == 0 else "partly"),
                    "extra": ", ".join(extra),
                    "why": " · ".join(why),
                })
        rows.append({"remedy": name, "baseline": name == base, "cells": cells})
    many = ~horizon_measures_memory(table["loss_steps"], table["memory_steps"])
    return {"tasks": [{**t, "columns": [column_text(x if math.isfinite(x) else math.nan, label)
                                        for x, _, label in t["columns"]]} for t in tasks],
            "rows": rows, "baseline": base, "fraction": f"{SOLVED_FRACTION:.0%}",
            "repeated": repeated_seeds_text(table),
            "many_loss_steps": ", ".join(dict.fromkeys(table.loc[many, "task"]))}


def _swept_values(config: Mapping, key: str) -> str:
    """The values of a swept key as the page lists them: a list's values, a named axis's names,
    or a single value as written (a stored config the current schema would refuse)."""
    sweep = config.get("sweep")
    values = sweep.get(key) if isinstance(sweep, Mapping) else None
    if not isinstance(values, (list, tuple, Mapping)):
        values = [] if values is None else [values]
    return ", ".join(format_value(v) for v in values)


def _seeds_text(point) -> str:
    """"2/2 seeds" (seeds that learned / finished seeds) where several finished, and the
    trials that did not finish ("1 failed")."""
    parts = []
    if point["n_ok"] > 1 and point["learned"] is not None:
        parts.append(f"{int(point['n_learned'])}/{int(point['n_ok'])} seeds")
    if point["statuses"] and point["n_ok"] > 0:
        parts.append(f"{int(point['n'] - point['n_ok'])} {point['statuses']}")
    return " · ".join(parts)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _manifest_items(manifest: Mapping) -> list[tuple[str, str]]:
    keys = [k for k in _MANIFEST_FIRST if k in manifest]
    keys += [k for k in manifest if k not in keys]
    items = []
    for k in keys:
        v = manifest[k]
        if k == "command" and isinstance(v, (list, tuple)):
            v = " ".join(str(p) for p in v)
        items.append((str(k), format_value(v)))
    return items


def _draw_sections(name: str, sections: Sequence, tables: Mapping[str, pd.DataFrame],
                   fmt: str, progress: bool, jobs: int | None) -> list[SectionResult]:
    """Every section's result, in order; in worker processes when the sections are the
    registered ones (workers look them up by key) and ``jobs`` allows more than one."""
    known = {id(s) for s in registered()}
    todo = [s for s in sections if not unrecorded(s, tables)]
    jobs = default_jobs(len(todo)) if jobs is None else jobs
    bar = tqdm(total=len(sections), desc=f"{name}: figures", unit="fig", disable=not progress,
               leave=False)
    with bar:
        if jobs > 1 and all(id(s) in known for s in todo):
            drawn = dict(zip([s.key for s in todo],
                             draw_in_pool([s.key for s in todo], tables, fmt, jobs,
                                          lambda: bar.update(1))))
        else:
            drawn = {}
        results = []
        for section in sections:
            if section.key in drawn:
                results.append(drawn[section.key])
            else:  # not recorded (no drawing), or drawn here
                results.append(build_section(section, tables, fmt))
                bar.update(1)
    return results


def render_report(run: RunData, sections: Sequence | None = None, *, fmt: str = "auto",
                  progress: bool = False, palette: Callable | None = None,
                  jobs: int | None = None) -> Rendered:
    """Render a run as one HTML page.

    Args:
        run: the loaded run (:func:`rnn_diag.report.run_data.load_run`).
        sections: the figure sections to draw (default:
            :data:`rnn_diag.report.figures.SECTIONS`); a section whose ``needs`` are not all
            recorded is listed as not recorded; one that raises shows an error box.
        fmt: image format of the figures, "png", "svg" or "auto" (the smaller).
        progress: show a tqdm bar over the figures.
        palette: ``seq_len_palette`` for the table's colour swatches (default: the figures').
        jobs: worker processes that draw the figures (None: one per CPU, at most 4; 1: draw
            them in this process). Only the registered sections are drawn in workers.

    Returns:
        :class:`Rendered` with the HTML text, each section's outcome and the findings.
    """
    t0 = time.perf_counter()
    if sections is None:
        sections = registered()
    if palette is None:
        palette = figures.seq_len_palette
    tables = run.for_figures()
    has_task = "task.name" in run.trials and run.trials["task.name"].notna().any()
    if not has_task and "time_unit" in run.trials:  # a recording: no task-specific figure
        sections = [s for s in sections if not getattr(s, "task_only", False)]
    sections = [s for s in sections if figures.applies_to(s, tables)]
    results = _draw_sections(run.name, sections, tables, fmt, progress, jobs)
    findings = compute_findings(tables, run.swept, run.config)
    keys = {s.key for s in results}
    links = [(f, f.key if f.key in keys or f.key == "trials" else "trials") for f in findings]
    metric = ""
    if "metric" in run.trials and run.trials["metric"].notna().any():
        metric = str(run.trials["metric"].dropna().iloc[0])
    status = run.trials.get("status", pd.Series(dtype=object))
    # one task: the chance levels are one number each, said once in the header
    chance = {}
    for col in ("chance_loss", "chance_metric"):
        values = pd.to_numeric(run.trials.get(col, pd.Series(dtype=float)), errors="coerce")
        values = values.dropna().unique()
        chance[col] = _num(values[0], 4 if col == "chance_loss" else 3) if len(values) == 1 \
            else None
    html = _environment().get_template("report.html.j2").render(
        name=run.name,
        description=run.description,
        has_task=has_task or "time_unit" not in run.trials,
        unit=figures.time_unit(run.trials),
        folder=str(run.root),
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        version=__version__,
        config_text=run.config_text,
        manifest=_manifest_items(run.manifest),
        warnings=list(run.warnings),
        findings=links,
        rows=_trial_rows(run, palette),
        metric=metric,
        chance=chance,
        counts={s: int((status == s).sum()) for s in ("ok", "diverged", "failed")},
        n_trials=len(run.trials),
        swept=[(k, _swept_values(run.config, k)) for k in run.swept],
        sections=results,
        learning=_learning_table(run.trials),
        remedies=_remedies_table(run.trials, run.config),
        has_scans=bool("model.cell" in run.trials
                       and run.trials["model.cell"].map(is_scan).any()),
    )
    return Rendered(html=html, sections=results, findings=findings,
                    seconds=time.perf_counter() - t0)
