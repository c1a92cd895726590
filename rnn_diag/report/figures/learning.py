"""Where each family stops learning, and why: for a sweep of a task option (``task.lag``, or
``task.seq_len``) × ``model.cell``, the held-out metric of every (family, value) against the
task's chance and best values, next to the gradient's horizon and the 3-decade timescale of the
slowest direction. Read by the figure of this module, the findings and the page's table, so the
three say the same.

Vocabulary:

* the *x key* is the swept numeric ``task.*`` option the view is drawn against: any other than
  ``task.seq_len`` when one is swept (``task.lag``), else ``task.seq_len``;
* a *family* is one combination of the other swept values except the seed (the cell, and
  e.g. the hidden size when that is swept too);
* *learned*: the median held-out metric over a point's ok seeds covers at least
  :data:`LEARNED_FRACTION` (half) of the way from the task's chance value to its best value,
  ``(val_metric − chance_metric) / (best_metric − chance_metric) ≥ 0.5`` (for accuracy, with
  chance 1/3 and best 0.933: an accuracy of at least 0.633; the same formula holds for a
  metric where lower is better). Where best equals chance (e.g. a lag longer than the window)
  there is nothing to learn and the point is not judged; without a stored ``best_metric`` no
  point is;
* *horizon*: the median ``horizon_last`` (steps back within 3 decades of the largest gradient);
* *timescale*: ``decade_steps(median lyapunov_top_end)``, the steps over which the slowest
  direction (channel) loses 3 decades (:func:`~.cells.decade_steps`).

The view exists only when ``model.cell`` and a numeric ``task.*`` option both vary between
trials (:func:`sweep_keys`) and the trials have no remedy axis (the "Remedies" section of
:mod:`.remedies` shows such a run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...experiments.labels import format_value, short_names
from ._data import MissingData, _sort_value, has_remedy_axis
from .cells import decade_steps
from .style import (
    BAND_ALPHA,
    MISSING_COLOUR,
    add_note,
    figure_style,
    new_figure,
    seq_len_palette,
)

__all__ = ["LEARNED_FRACTION", "FamilyReach", "LearningSweep", "family_reach",
           "learning_curves", "learning_sweep", "metric_fraction", "steps_text", "sweep_keys",
           "x_text"]

#: The fraction of the way from chance to best that counts as learned.
LEARNED_FRACTION = 0.5
#: A best value within this of chance: nothing to learn at that point (also the rounding
#: allowed at the threshold).
_SAME = 1e-9
_SEED = "train.seed"


def _texts(column: pd.Series) -> set[str]:
    return {format_value(v) for v in column.astype(object) if not _missing(v)}


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _numeric(column: pd.Series) -> bool:
    values = column.astype(object)
    present = values[[not _missing(v) for v in values]]
    if len(present) == 0 or any(isinstance(v, (bool, np.bool_, str)) for v in present):
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


def sweep_keys(trials: pd.DataFrame) -> tuple[str, tuple[str, ...]] | None:
    """``(x key, family keys)`` when ``model.cell`` and a numeric ``task.*`` option both vary
    between the trials, else None. The family keys are the other varying dotted keys but the
    seed, in column order.

    Example:
        >>> t = pd.DataFrame({"task.seq_len": [400] * 4, "task.lag": [2, 300, 2, 300],
        ...                   "model.cell": ["rnn", "rnn", "lru", "lru"], "train.seed": 0})
        >>> sweep_keys(t)
        ('task.lag', ('model.cell',))
        >>> sweep_keys(t.assign(**{"model.cell": "lru"})) is None
        True
    """
    if "model.cell" not in trials or len(_texts(trials["model.cell"])) < 2:
        return None
    varying = [c for c in trials.columns
               if "." in c and c != _SEED and len(_texts(trials[c])) > 1]
    candidates = [c for c in varying if c.startswith("task.") and _numeric(trials[c])]
    if not candidates:
        return None
    x = next((c for c in candidates if c != "task.seq_len"), candidates[0])
    return x, tuple(c for c in varying if c != x)


def x_text(key: str, value) -> str:
    """``"lag 300"``, ``"seq_len 60"``: a value of the x key as the findings write it."""
    return f"{short_names([key])[key]} {_number(value)}"


def steps_text(x: float) -> str:
    """A number of steps as the findings and the page write it: three significant digits with
    thousands separators, one decimal below 10.

    Example:
        >>> steps_text(3453.9), steps_text(690.8), steps_text(57.6), steps_text(4.61)
        ('3,450', '691', '58', '4.6')
    """
    if x < 10:
        return f"{x:.1f}"
    digits = 3 - 1 - math.floor(math.log10(x))
    return f"{round(x, min(digits, 0)):,.0f}"


def _value(value) -> str:
    """A family value as the figures write it: ``4`` for a whole float (a stored ``Int64``
    column reads back as float64), else as in YAML.

    >>> _value(4.0), _value(0.5), _value("lru"), _value(float("nan"))
    ('4', '0.5', 'lru', 'null')
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return format_value(value)


def _number(value) -> str:
    x = float(value)
    return f"{x:g}" if not x.is_integer() else str(int(x))


@dataclass(frozen=True)
class LearningSweep:
    """The learning view of a run.

    Attributes:
        x_key: the swept task option (``"task.lag"``); ``x_name`` its short name (``"lag"``).
        family_keys: the keys that make a family (``("model.cell",)``).
        metric: the task's metric name (``"accuracy"``; ``"metric"`` when not stored).
        has_best: whether the trials store the task's best value (``best_metric``).
        families: the family labels in panel order (``"cell=lru"``, as the figures title
            their panels).
        xs: the x values, increasing.
        points: one row per (family, x): ``family, cell, others`` (the family's other values
            as text, "" when none), ``x, seq_len, n`` (trials), ``n_ok``, ``statuses`` (the
            statuses other than ok, as text), ``metric, metric_min, metric_max`` (median, min
            and max of ``val_metric`` over the ok trials), ``chance, best, learnable,
            fraction`` ((metric − chance)/(best − chance)), ``learned`` (True/False, None when
            not judged), ``n_learned`` (ok trials whose own metric counts as learned),
            ``horizon`` (median ``horizon_last`` ≥ 0, NaN when none is finite), ``lyapunov``
            (median ``lyapunov_top_end``), ``timescale`` (3-decade timescale, steps).
    """

    x_key: str
    family_keys: tuple[str, ...]
    metric: str
    has_best: bool
    families: tuple[str, ...]
    xs: tuple[float, ...]
    points: pd.DataFrame

    @property
    def x_name(self) -> str:
        return short_names([self.x_key])[self.x_key]


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df:
        return pd.to_numeric(df[name], errors="coerce")
    return pd.Series(np.nan, index=df.index, dtype=float)


def _median(values: pd.Series) -> float:
    values = values.dropna()
    return float(np.median(values.to_numpy(dtype=float))) if len(values) else math.nan


def metric_fraction(metric, chance, best) -> float:
    """How far ``metric`` went from the task's ``chance`` value towards its ``best`` value:
    ``(metric − chance) / (best − chance)``, 0 at chance, 1 at best, for a metric where higher
    is better (accuracy) and one where lower is better (mse) alike; NaN when a value is
    missing or best is within ``1e-9`` of chance (nothing to learn).

    Example:
        >>> metric_fraction(0.9, 0.5, 1.0), round(metric_fraction(0.03, 1 / 6, 0.0), 3)
        (0.8, 0.82)
        >>> metric_fraction(0.5, 0.5, 0.5)
        nan
    """
    if not all(map(math.isfinite, (metric, chance, best))) or abs(best - chance) <= _SAME:
        return math.nan
    return (metric - chance) / (best - chance)


def learning_sweep(trials: pd.DataFrame) -> LearningSweep | None:
    """The learning view of ``trials`` (the trials table), or None when the run has no sweep
    of a task option × ``model.cell`` (:func:`sweep_keys`) or no ``val_metric``, and when the
    trials have a remedy axis (:func:`~._data.has_remedy_axis`): such a run mixes tasks and
    bundles of settings that one x axis would conflate, and its "Remedies" section
    (:mod:`.remedies`) takes the learning view's place.

    Example:
        >>> t = pd.DataFrame({"id": list("abcd"), "task.seq_len": 400, "status": "ok",
        ...     "task.lag": [2, 300, 2, 300], "model.cell": ["rnn", "rnn", "lru", "lru"],
        ...     "val_metric": [0.9, 0.34, 0.92, 0.9], "chance_metric": 1 / 3,
        ...     "best_metric": 0.933, "horizon_last": [5, 8, 3, 350],
        ...     "lyapunov_top_end": [-0.5, -0.4, -0.01, -0.002]})
        >>> view = learning_sweep(t)
        >>> view.families, view.xs
        (('cell=lru', 'cell=rnn'), (2.0, 300.0))
        >>> view.points["learned"].tolist()  # lru at lags 2, 300, then rnn
        [True, True, True, False]
        >>> view.points["horizon"].tolist(), round(view.points["timescale"][1])
        ([3.0, 350.0, 5.0, 8.0], 3454)
    """
    if has_remedy_axis(trials):
        return None
    keys = sweep_keys(trials)
    if keys is None or "val_metric" not in trials:
        return None
    x_key, family_keys = keys
    df = trials.reset_index(drop=True)
    short = short_names(family_keys)
    parts = {k: df[k].astype(object).map(_value) for k in family_keys}
    family = pd.Series([" · ".join(f"{short[k]}={parts[k][i]}" for k in family_keys)
                        for i in range(len(df))], index=df.index)
    others = [k for k in family_keys if k != "model.cell"]
    other_text = pd.Series([", ".join(f"{short[k]} {parts[k][i]}" for k in others)
                            for i in range(len(df))], index=df.index)
    rank = pd.Series([tuple(_sort_value(df.at[i, k]) for k in family_keys)
                      for i in range(len(df))], index=df.index)
    x = _column(df, x_key)
    status = df["status"].astype(object).fillna("unknown") if "status" in df else \
        pd.Series("ok", index=df.index)
    metric, chance, best = (_column(df, c) for c in ("val_metric", "chance_metric",
                                                     "best_metric"))
    horizon = _column(df, "horizon_last")
    horizon = horizon.where(horizon >= 0)
    lyap, seq_len = _column(df, "lyapunov_top_end"), _column(df, "task.seq_len")
    rows = []
    keep = x.notna()
    for (fam, xv), idx in df[keep].groupby([family[keep], x[keep]], sort=False).groups.items():
        ok = [i for i in idx if status[i] == "ok"]
        m, c, b = _median(metric[ok]), _median(chance[idx]), _median(best[idx])
        learnable = math.isfinite(c) and math.isfinite(b) and abs(b - c) > _SAME
        frac = metric_fraction(m, c, b)
        if not learnable:
            learned = None
        elif math.isfinite(frac):
            learned = bool(frac >= LEARNED_FRACTION - _SAME)
        else:
            # no finished seed: a diverged one did not learn, a failed one is no evidence
            learned = False if any(status[i] == "diverged" for i in idx) else None
        own = [metric_fraction(metric[i], chance[i], best[i]) for i in ok]
        lyap_med = _median(lyap[ok])
        rows.append({
            "family": fam, "rank": rank[idx[0]], "cell": format_value(df.at[idx[0], "model.cell"]),
            "others": other_text[idx[0]], "x": float(xv), "seq_len": _median(seq_len[idx]),
            "n": len(idx), "n_ok": len(ok),
            "statuses": ", ".join(sorted({str(status[i]) for i in idx} - {"ok"})),
            "metric": m, "metric_min": float(metric[ok].min()) if ok else math.nan,
            "metric_max": float(metric[ok].max()) if ok else math.nan,
            "chance": c, "best": b, "learnable": learnable, "fraction": frac,
            "learned": learned,
            "n_learned": int(sum(f >= LEARNED_FRACTION - _SAME for f in own
                                 if math.isfinite(f))),
            "horizon": _median(horizon[ok]), "lyapunov": lyap_med,
            "timescale": decade_steps(lyap_med),
        })
    if not rows:
        return None
    points = pd.DataFrame(rows).sort_values(["rank", "x"], kind="stable")
    families = tuple(dict.fromkeys(points["family"]))
    points = points.drop(columns="rank").reset_index(drop=True)
    points["learned"] = pd.Series([None if v is None else bool(v) for v in points["learned"]],
                                  dtype=object)
    metric_name = "metric"
    if "metric" in df and df["metric"].notna().any():
        metric_name = str(df["metric"].dropna().iloc[0])
    return LearningSweep(x_key=x_key, family_keys=family_keys, metric=metric_name,
                         has_best=bool(best.notna().any()), families=families,
                         xs=tuple(sorted(float(v) for v in points["x"].unique())),
                         points=points)


@dataclass(frozen=True)
class FamilyReach:
    """Where one family stops learning.

    Attributes:
        family: the family label (as in :attr:`LearningSweep.families`).
        judged: the x values where learning was judged (something to learn), increasing.
        largest: the largest judged x that was learned (None: none was).
        stop: the smallest judged x above ``largest`` that was not learned (the first one when
            none was learned; None when every judged x up to the largest was learned).
        gaps: judged x values below ``largest`` that were not learned.
    """

    family: str
    judged: tuple[float, ...]
    largest: float | None
    stop: float | None
    gaps: tuple[float, ...]


def family_reach(sweep: LearningSweep) -> list[FamilyReach]:
    """Per family (in order), the largest x learned and where learning stops.

    Example:
        >>> t = pd.DataFrame({"id": list("abcdef"), "task.seq_len": 400, "status": "ok",
        ...     "task.lag": [2, 30, 300] * 2, "model.cell": ["rnn"] * 3 + ["lru"] * 3,
        ...     "val_metric": [0.9, 0.5, 0.34, 0.92, 0.91, 0.9], "chance_metric": 1 / 3,
        ...     "best_metric": 0.933})
        >>> [(r.family, r.largest, r.stop) for r in family_reach(learning_sweep(t))]
        [('cell=lru', 300.0, None), ('cell=rnn', 2.0, 30.0)]
    """
    out = []
    for fam in sweep.families:
        part = sweep.points[(sweep.points["family"] == fam) & sweep.points["learned"].notna()]
        judged = tuple(float(v) for v in part["x"])
        learned = [float(v) for v, ok in zip(part["x"], part["learned"]) if ok]
        largest = max(learned) if learned else None
        above = [v for v, ok in zip(part["x"], part["learned"])
                 if not ok and (largest is None or v > largest)]
        gaps = tuple(float(v) for v, ok in zip(part["x"], part["learned"])
                     if not ok and largest is not None and v < largest)
        out.append(FamilyReach(fam, judged, largest, min(above) if above else None, gaps))
    return out


# --- the figure -------------------------------------------------------------------------------

#: Families per row of panels (a block of two rows: the metric above, the steps below).
_MAX_COLS = 5
#: At most this many families are drawn (a note says how many when more).
MAX_FAMILIES = 15
_DARK = "#3a3a3a"
_GREY = "#8a8a8a"
_HORIZON = {"ls": "-", "marker": "o", "lw": 1.4, "ms": 4.0}
_TIMESCALE = {"ls": "-.", "marker": "s", "lw": 1.1, "ms": 3.5}


def _log_x(xs: tuple[float, ...]) -> bool:
    return len(xs) > 1 and xs[0] > 0 and xs[-1] / xs[0] >= 10


def _groups(part: pd.DataFrame, sweep: LearningSweep, palette: dict):
    """(label, colour, rows) of one panel: one line per seq_len, in its colour (one dark line
    when the x key is the sequence length itself)."""
    if sweep.x_key == "task.seq_len":
        return [("all", _DARK, part)]
    out = []
    for seq_len, rows in part.groupby("seq_len", sort=True):
        key = int(seq_len) if math.isfinite(seq_len) else None
        out.append((f"seq_len={key}", palette.get(key, MISSING_COLOUR), rows))
    return out


def _draw_metric(ax, part: pd.DataFrame, sweep: LearningSweep, palette: dict) -> None:
    """Median held-out metric against x (band: min-max over the ok seeds); filled markers
    learned, hollow not learned, × not judged; chance, best and the learned threshold."""
    ref = part.sort_values("x")
    ax.plot(ref["x"], ref["chance"], ls=":", color="black", lw=1.1, label="_chance")
    judged = ref[ref["learnable"]]
    if len(judged):
        ax.plot(ref["x"], ref["best"], ls="--", color="black", lw=1.0, label="_best")
        threshold = judged["chance"] + LEARNED_FRACTION * (judged["best"] - judged["chance"])
        ax.plot(judged["x"], threshold, ls="-", color=_GREY, lw=0.8, label="_threshold")
    for name, colour, rows in _groups(part, sweep, palette):
        rows = rows.sort_values("x")
        ax.plot(rows["x"], rows["metric"], "-", color=colour, lw=1.4, label=f"_metric {name}")
        if (rows["n_ok"] > 1).any():
            ax.fill_between(rows["x"], rows["metric_min"], rows["metric_max"], color=colour,
                            alpha=BAND_ALPHA, lw=0)
        faces = [palette.get(int(s), colour) if sweep.x_key == "task.seq_len" else colour
                 for s in rows["seq_len"].fillna(-1)]
        for kind, mask in (("learned", rows["learned"].eq(True)),
                           ("not learned", rows["learned"].eq(False)),
                           ("not judged", rows["learned"].isna())):
            sel = rows[mask.to_numpy(dtype=bool)]
            if sel.empty:
                continue
            face = [f for f, m in zip(faces, mask) if m]
            if kind == "not judged":
                ax.scatter(sel["x"], sel["metric"], marker="x", c=face, s=22, lw=1.0, zorder=4,
                           label=f"_{kind} {name}")
            else:
                ax.scatter(sel["x"], sel["metric"], marker="o", s=26, zorder=4, lw=1.2,
                           facecolors=face if kind == "learned" else "white", edgecolors=face,
                           label=f"_{kind} {name}")
    for _, row in part[part["n_ok"] == 0].iterrows():
        ax.text(row["x"], row["chance"], row["statuses"] or "no result", fontsize=6.5,
                color=MISSING_COLOUR, ha="center", va="bottom", rotation=90)


def _draw_steps(ax, part: pd.DataFrame, sweep: LearningSweep, palette: dict, top: float,
                ) -> bool:
    """Median horizon and 3-decade timescale against x, with the line y = x; a timescale
    beyond ``top`` (or infinite) is a ▲ at the panel's top edge. True when one was."""
    xs = np.array(sorted(part["x"].unique()), dtype=float)
    ax.plot(xs, xs, ls=(0, (1, 1.5)), color=_GREY, lw=1.2, label="_diagonal")
    clipped = False
    for name, colour, rows in _groups(part, sweep, palette):
        rows = rows.sort_values("x")
        ax.plot(rows["x"], rows["horizon"], color=colour, **_HORIZON, label=f"_horizon {name}")
        tau = rows["timescale"].to_numpy(dtype=float)
        shown = np.where(tau <= top, tau, np.nan)
        ax.plot(rows["x"], shown, color=colour, mfc="white", **_TIMESCALE,
                label=f"_timescale {name}")
        over = rows["x"].to_numpy(dtype=float)[tau > top]
        if over.size:
            clipped = True
            ax.plot(over, np.ones(over.size), "^", color=colour, ms=4.5, clip_on=False,
                    transform=ax.get_xaxis_transform(), label=f"_timescale beyond {name}")
    return clipped


def learning_curves(trials: pd.DataFrame) -> Figure:
    """Where each family stops learning: per family (a column; up to 5 a row), above the
    held-out metric against the swept task option (median over seeds, band min-max; filled
    marker learned, hollow not learned, × not judged; black dotted chance, dashed best, grey
    the learned threshold half-way between), below the median horizon (solid) and the 3-decade
    timescale of the slowest direction (dash-dotted) in steps, with the line steps = x.

    Args:
        trials: the trials table of a sweep of a task option × ``model.cell``
            (:func:`learning_sweep`; ``best_metric`` for the learned markers).

    Raises:
        MissingData: the run has no such sweep.
    """
    sweep = learning_sweep(trials) if trials is not None else None
    if sweep is None:
        raise MissingData("the run has no sweep of a task option (e.g. task.lag) × model.cell "
                          "with a held-out metric")
    families = list(sweep.families)
    notes = []
    if len(families) > MAX_FAMILIES:
        notes.append(f"the first {MAX_FAMILIES} of {len(families)} families shown")
        families = families[:MAX_FAMILIES]
    ncols = min(_MAX_COLS, len(families))
    blocks = math.ceil(len(families) / ncols)
    points = sweep.points[sweep.points["family"].isin(families)]
    seq_lens = [int(s) for s in trials["task.seq_len"].dropna()] if "task.seq_len" in trials \
        else []
    palette = seq_len_palette(seq_lens)
    # the steps axis reaches the next power of ten above the horizons, the swept values and
    # the timescales up to 1000 times the largest swept value (longer ones: ▲ at the top)
    tau = points["timescale"].to_numpy(dtype=float)
    steps = np.concatenate([points["horizon"].to_numpy(dtype=float), np.array(sweep.xs),
                            tau[np.isfinite(tau) & (tau <= 1000 * max(sweep.xs))]])
    steps = steps[np.isfinite(steps)]
    top = 10.0 ** math.ceil(math.log10(max(float(steps.max()) if steps.size else 1.0, 1.0)
                                       * 1.5))
    log_x = _log_x(sweep.xs)
    clipped = False
    with figure_style():
        fig, axes = new_figure(2 * blocks, ncols, panel_height=2.2,
                               width=min(11.0, 1.6 + 2.25 * ncols))
        for k in range(blocks * ncols):
            if k >= len(families):
                axes[2 * (k // ncols), k % ncols].set_visible(False)
                axes[2 * (k // ncols) + 1, k % ncols].set_visible(False)
        first_metric, first_steps = axes[0, 0], axes[1, 0]
        for k, fam in enumerate(families):
            ax_m, ax_s = axes[2 * (k // ncols), k % ncols], axes[2 * (k // ncols) + 1, k % ncols]
            if k:
                ax_m.sharex(first_metric)
                ax_m.sharey(first_metric)
                ax_s.sharey(first_steps)
            if ax_s is not first_metric:
                ax_s.sharex(first_metric)
            part = points[points["family"] == fam]
            _draw_metric(ax_m, part, sweep, palette)
            clipped |= _draw_steps(ax_s, part, sweep, palette, top)
            ax_m.set_title(fam, fontsize=8)
            ax_s.set_xlabel(sweep.x_name)
            if k % ncols == 0:
                ax_m.set_ylabel(f"held-out {sweep.metric}")
                ax_s.set_ylabel("steps")
            else:
                ax_m.tick_params(labelleft=False)
                ax_s.tick_params(labelleft=False)
        if log_x:
            first_metric.set_xscale("log")
        first_steps.set_yscale("symlog", linthresh=1.0)
        first_steps.set_ylim(0, top)
        first_metric.set_xticks(list(sweep.xs), [_number(v) for v in sweep.xs])
        first_metric.minorticks_off()
        handles = [Line2D([], [], color=palette[s], lw=2, label=f"seq_len={s}")
                   for s in sorted(palette) if sweep.x_key != "task.seq_len"
                   and (points["seq_len"] == s).any()]
        if len(handles) == 1:
            handles = []  # one sequence length: said in the note
        handles.append(Line2D([], [], color=_DARK, lw=1.4,
                              label=f"median held-out {sweep.metric}"))
        if points["learned"].eq(True).any():
            handles.append(Line2D([], [], color=_DARK, marker="o", ls="", ms=5, label="learned"))
        if points["learned"].eq(False).any():
            handles.append(Line2D([], [], color=_DARK, marker="o", mfc="white", ls="", ms=5,
                                  label="not learned"))
        handles.append(Line2D([], [], color="black", ls=":", label="chance"))
        if points["learnable"].any():
            handles += [Line2D([], [], color="black", ls="--", label="best possible"),
                        Line2D([], [], color=_GREY, lw=0.8,
                               label="learned threshold (half-way)")]
        if points["learned"].isna().any():
            handles.append(Line2D([], [], color=_DARK, marker="x", ls="", ms=5,
                                  label="not judged" if sweep.has_best
                                  else "not judged (no best value stored)"))
        handles += [Line2D([], [], color=_DARK, **_HORIZON, label="horizon (median)"),
                    Line2D([], [], color=_DARK, mfc="white", **_TIMESCALE,
                           label="3-decade timescale 3·ln10/|λ₁|"),
                    Line2D([], [], color=_GREY, lw=1.2, ls=(0, (1, 1.5)),
                           label=f"steps = {sweep.x_name}")]
        if clipped:
            handles.append(Line2D([], [], color=_DARK, marker="^", ls="", ms=5,
                                  label="timescale off the axis (or no decay)"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        lens = sorted(set(points["seq_len"].dropna().astype(int)))
        if sweep.x_key != "task.seq_len" and len(lens) == 1:
            notes.insert(0, f"seq_len={lens[0]} (the horizon is at most {lens[0] - 1} steps)")
        if (points["n"] > 1).any():
            notes.append("median over seeds, band: min-max")
        notes.append(f"learned: median {sweep.metric} at least half-way from chance to best"
                     if sweep.has_best else "learned: not judged, the run stores no best value "
                     "of the task (best_metric)")
        add_note(fig, "; ".join(notes))
    return fig
