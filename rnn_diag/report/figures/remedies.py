"""Which remedy works at which memory length, and why: for a sweep with a named axis
``remedy`` (each value names a bundle of settings: none, clip, orthogonal, flossing, gru, ...),
the seeds each remedy solved on each task at each memory length, next to the gradient's
horizon and the top Lyapunov exponent stored for those trials. Read by the figure of this
module, the findings and the page's table, so the three say the same. Nothing here computes a
diagnostic: every number is a count or a median of a column of ``trials.parquet``.

Vocabulary:

* the *remedy axis*: a ``remedy`` column with at least two distinct names
  (:func:`~._data.has_remedy_axis`); its order is the config's (``sweep.remedy``: a mapping
  name → settings as written, or the list of names of a dumped config), then any other name
  in order of first appearance;
* the *memory length* of a trial: ``memory_steps``, the steps its task requires the network to
  bridge (delayed XOR: the delay; copy: length + seq_len; adding: seq_len − 1), or
  ``task.seq_len`` where that column is missing (runs stored before it);
* *solved*: a trial whose held-out metric covers at least :data:`SOLVED_FRACTION` (80%) of
  the way from the task's chance value to its best value,
  ``(val_metric − chance_metric) / (best_metric − chance_metric) ≥ 0.8``
  (:func:`~.learning.metric_fraction`; accuracy with chance 0.5 and best 1: at least 0.90;
  mse with chance 0.167 and best 0: at most 0.033);
* trials by status: an ``ok`` trial is judged (solved or not); a ``diverged`` one is judged
  and counts as not solved (and is counted as diverged); a ``failed`` one (an exception, or
  any other status) is left out and counted as failed; an ok trial without a finite fraction
  (no metric or best stored, or best = chance) is left out as not judged;
* the *baseline*: the remedy named ``none`` when there is one, else the first remedy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from ...experiments.labels import format_value, short_names
from ._data import REMEDY, MissingData, has_remedy_axis
from .learning import metric_fraction
from .style import MISSING_COLOUR, add_note, figure_style, new_figure

__all__ = ["BASELINE", "COLUMNS", "REMEDY", "SOLVED_FRACTION", "baseline_remedy", "exponent_text",
           "has_remedy_axis", "memory_steps", "number_text", "remedy_order", "remedy_palette",
           "remedy_success", "remedy_table", "repeated_seeds_text", "setting_columns",
           "steps_text", "task_threshold_text", "threshold_text"]

#: The fraction of the way from chance to best that counts as solved.
SOLVED_FRACTION = 0.8
#: The name of the remedy that changes nothing, the baseline of every comparison.
BASELINE = "none"
#: Rounding allowed at the threshold.
_SAME = 1e-9
_TASK = "task.name"
_FAILED = "failed"

#: The columns of :func:`remedy_table`, in order.
#: The summed gradient's horizon measures memory where the steps with a loss are at most this
#: share of the memory: losses at n steps alone give a horizon of about n, whatever the memory.
LOSS_SHARE = 0.25


def horizon_measures_memory(loss_steps, memory_steps) -> np.ndarray:
    """Where the horizon can be compared with the memory length: ``loss_steps ≤ LOSS_SHARE ×
    memory_steps``, element-wise; True where ``loss_steps`` is not stored (older runs: the
    caller says the comparison assumes few loss steps).

    >>> horizon_measures_memory([1, 3, 20, float("nan")], [99, 23, 40, 10]).tolist()
    [True, True, False, True]
    """
    loss = np.asarray(loss_steps, dtype=float)
    memory = np.asarray(memory_steps, dtype=float)
    with np.errstate(invalid="ignore"):
        return ~(loss > LOSS_SHARE * memory)


COLUMNS = ("remedy", "task", "memory_steps", "setting", "label", "loss_steps", "n_trials",
           "n_judged", "n_solved", "n_diverged", "n_failed", "n_unjudged", "n_repeated",
           "success", "horizon_first", "horizon_last", "lyapunov_top_init", "lyapunov_top_end",
           "metric", "chance", "best", "threshold")
#: The seed's column (``seed`` in a config's sweep).
SEED = "train.seed"
#: Config sections whose dotted columns may be swept (used when no config is given).
_SECTIONS = ("task.", "model.", "train.", "data.")


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df:
        return pd.to_numeric(df[name], errors="coerce").astype(float)
    return pd.Series(np.nan, index=df.index, dtype=float)


def _median(values: pd.Series) -> float:
    values = values[np.isfinite(values.to_numpy(dtype=float))]
    return float(np.median(values.to_numpy(dtype=float))) if len(values) else math.nan


def remedy_order(trials: pd.DataFrame, config: Mapping | None = None) -> tuple[str, ...]:
    """The remedy names of ``trials`` in the config's order (``config["sweep"]["remedy"]``: a
    mapping name → settings as written, or the list of names of a dumped config), then the
    others in order of first appearance.

    Example:
        >>> t = pd.DataFrame({"remedy": ["clip", "none", "gru", "clip"]})
        >>> remedy_order(t)
        ('clip', 'none', 'gru')
        >>> remedy_order(t, {"sweep": {"remedy": {"none": {}, "gru": {}, "clip": {}}}})
        ('none', 'gru', 'clip')
    """
    if REMEDY not in trials:
        return ()
    present = list(dict.fromkeys(str(v) for v in trials[REMEDY].dropna()))
    sweep = (config or {}).get("sweep") or {}
    given = sweep.get(REMEDY) if isinstance(sweep, Mapping) else None
    if isinstance(given, (Mapping, list, tuple)):
        first = [str(k) for k in given if str(k) in present]
    else:
        first = []
    return tuple(dict.fromkeys(first + present))


def baseline_remedy(names: Sequence[str]) -> str | None:
    """The remedy every other is compared with: :data:`BASELINE` ("none") when present, else
    the first name (None when there is none).

    >>> baseline_remedy(["clip", "none"]), baseline_remedy(["clip", "gru"]), baseline_remedy([])
    ('none', 'clip', None)
    """
    names = list(names)
    if BASELINE in names:
        return BASELINE
    return names[0] if names else None


def memory_steps(trials: pd.DataFrame) -> pd.Series:
    """Per trial, the steps its task requires the network to bridge (float): ``memory_steps``;
    for runs stored before that column existed (no column at all), ``task.seq_len``. A
    missing value in a stored ``memory_steps`` column (a task without a fixed span, such as
    the flip-flop) stays NaN: "memory n/a".

    >>> memory_steps(pd.DataFrame({"memory_steps": [40, None], "task.seq_len": [60, 50]})).tolist()
    [40.0, nan]
    >>> memory_steps(pd.DataFrame({"task.seq_len": [60, 50]})).tolist()
    [60.0, 50.0]
    """
    if "memory_steps" in trials:
        return _column(trials, "memory_steps")
    return _column(trials, "task.seq_len")


def setting_columns(trials: pd.DataFrame, config: Mapping | None = None) -> list[str]:
    """The columns that define a *setting* of a remedy sweep: every swept key of the config
    (``config["sweep"]``, in its order; a named axis such as ``problem`` is its own column)
    that is a column of ``trials``, but the seed and the remedy. Without a config (or a
    sweep), the dotted ``task.``/``model.``/``train.``/``data.`` columns (not the seed) that
    take more than one value within one remedy.

    Example:
        >>> t = pd.DataFrame({"remedy": ["none", "none", "clip", "clip"],
        ...     "model.hidden_size": [32, 256, 32, 256], "train.seed": 0,
        ...     "train.clip_grad_norm": [None, None, 1.0, 1.0]})
        >>> setting_columns(t, {"sweep": {"remedy": {"none": {}, "clip": {}},
        ...     "model.hidden_size": [32, 256], "seed": [0]}})
        ['model.hidden_size']
        >>> setting_columns(t)
        ['model.hidden_size']
    """
    sweep = (config or {}).get("sweep")
    if isinstance(sweep, Mapping) and sweep:
        keys = [SEED if str(k) == "seed" else str(k) for k in sweep]
        return [k for k in keys if k not in (SEED, REMEDY) and k in trials.columns]
    if REMEDY not in trials:
        return []
    out = []
    for key in trials.columns:
        if key == SEED or not str(key).startswith(_SECTIONS):
            continue
        texts = trials[key].map(_key_text)
        if (texts.groupby(trials[REMEDY].astype(str)).nunique() > 1).any():
            out.append(str(key))
    return out


def _key_text(value) -> str:
    """A setting's value as a hashable text (NaN and None read "null"; 10.0 reads "10")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return format_value(value)


def _task_names(trials: pd.DataFrame) -> pd.Series:
    if _TASK in trials:
        return trials[_TASK].astype(object).where(trials[_TASK].notna(), "task").astype(str)
    return pd.Series("task", index=trials.index, dtype=object)


def remedy_table(trials: pd.DataFrame, config: Mapping | None = None) -> pd.DataFrame | None:
    """The seeds each remedy solved in each setting (task, memory length and the other swept
    values).

    Args:
        trials: the trials table (one row per trial) with ``remedy``, ``task.name``,
            ``memory_steps`` (or ``task.seq_len``), ``status``, ``val_metric``,
            ``chance_metric``, ``best_metric`` and, where recorded, ``loss_steps``,
            ``horizon_first``, ``horizon_last`` (steps), ``lyapunov_top_init``,
            ``lyapunov_top_end`` (nats/step), ``train.seed`` and ``id``.
        config: the run's config mapping, for the order of the remedies (:func:`remedy_order`)
            and the swept keys that define a setting (:func:`setting_columns`).

    Returns:
        None when the trials have no remedy axis or no ``val_metric``; else one row per
        remedy × setting, a *setting* being one combination of the swept values other than the
        seed and the remedy (so seeds are only ever pooled within one setting); remedies in
        :func:`remedy_order`, tasks in order of first appearance, lengths increasing (memory
        n/a last), settings in order of first appearance; with the columns of
        :data:`COLUMNS`: ``remedy, task`` (str), ``memory_steps`` (float, steps; NaN for a task
        without a fixed span, "memory n/a"), ``setting`` (the setting's swept values, e.g.
        ``"problem=xor_10, hidden_size=256"``; "" when nothing but the seed and the remedy is
        swept), ``label`` (the part of ``setting`` that tells apart settings with the same task
        and memory length; "" when task × memory length identifies the setting), ``loss_steps``
        (the steps with a loss, NaN when not stored), ``n_trials`` (all trials),
        ``n_judged`` (ok with a finite fraction, plus diverged), ``n_solved``, ``n_diverged``,
        ``n_failed`` (left out), ``n_unjudged`` (ok without a finite fraction, left out),
        ``n_repeated`` (trials whose seed another trial of the same remedy and setting, with a
        different id, already has: a run folder holding trials of different configs under
        the same names; they are counted), ``success`` (n_solved / n_judged, NaN when none was
        judged), the medians over the ok trials of ``horizon_first, horizon_last`` (steps ≥ 0;
        a negative stored horizon, no finite norm, is left out) and ``lyapunov_top_init,
        lyapunov_top_end`` (nats per step; NaN when none is finite), ``metric`` (its name),
        ``chance, best`` (medians over the group) and ``threshold`` = chance + 0.8 · (best −
        chance), the value a metric must reach (≥ when best > chance, ≤ when best < chance)
        to count as solved.

    Example:
        >>> t = pd.DataFrame({"remedy": ["none", "none", "clip", "clip"],
        ...     "task.name": "adding", "memory_steps": 49, "train.seed": [0, 1, 0, 1],
        ...     "status": ["ok", "ok", "ok", "diverged"], "metric": "mse",
        ...     "val_metric": [0.16, 0.02, 0.01, float("nan")], "chance_metric": 1 / 6,
        ...     "best_metric": 0.0, "horizon_last": [5, 60, 70, -1]})
        >>> r = remedy_table(t)
        >>> r[["remedy", "n_judged", "n_solved", "n_diverged", "horizon_last"]].values.tolist()
        [['none', 2, 1, 0, 32.5], ['clip', 2, 1, 1, 70.0]]
        >>> round(float(r["threshold"][0]), 4)
        0.0333
    """
    if not has_remedy_axis(trials) or "val_metric" not in trials:
        return None
    df = trials.reset_index(drop=True)
    df = df[df[REMEDY].notna()].reset_index(drop=True)
    remedy = df[REMEDY].astype(str)
    task = _task_names(df)
    steps = memory_steps(df)
    keys = setting_columns(df, config)
    short = short_names(keys)
    values = {k: df[k].map(_key_text) for k in keys}
    loss_steps = _column(df, "loss_steps")
    seeds = df[SEED].map(_key_text) if SEED in df else pd.Series("null", index=df.index)
    ids = (df["id"].astype(str) if "id" in df
           else pd.Series([str(i) for i in df.index], index=df.index))
    status = (df["status"].astype(object).where(df["status"].notna(), _FAILED).astype(str)
              if "status" in df else pd.Series("ok", index=df.index))
    metric, chance, best = (_column(df, c) for c in ("val_metric", "chance_metric",
                                                     "best_metric"))
    fraction = pd.Series([metric_fraction(m, c, b) for m, c, b in zip(metric, chance, best)],
                         index=df.index, dtype=float)
    horizon_first, horizon_last = (_column(df, c) for c in ("horizon_first", "horizon_last"))
    horizon_first = horizon_first.where(horizon_first >= 0)
    horizon_last = horizon_last.where(horizon_last >= 0)
    lyap_init, lyap_end = (_column(df, c) for c in ("lyapunov_top_init", "lyapunov_top_end"))
    metric_name = "metric"
    if "metric" in df and df["metric"].notna().any():
        metric_name = str(df["metric"].dropna().iloc[0])
    names = df["metric"].astype(object) if "metric" in df else pd.Series(None, index=df.index)
    order = {name: k for k, name in enumerate(remedy_order(df, config))}
    tasks = {name: k for k, name in enumerate(dict.fromkeys(task))}
    groups: dict[tuple, list[int]] = {}
    for i in df.index:
        length = steps[i] if math.isfinite(steps[i]) else math.inf  # inf: memory n/a
        setting = tuple(values[k][i] for k in keys)
        groups.setdefault((remedy[i], task[i], length, setting), []).append(i)
    settings = list(dict.fromkeys(key[1:] for key in groups))
    labels = _distinguishing_labels(settings, keys, short)
    rank = {key: k for k, key in enumerate(settings)}
    rows = []
    for (rem, tsk, length, setting), idx in groups.items():
        ok = [i for i in idx if status[i] == "ok"]
        judged_ok = [i for i in ok if math.isfinite(fraction[i])]
        diverged = [i for i in idx if status[i] == "diverged"]
        solved = [i for i in judged_ok if fraction[i] >= SOLVED_FRACTION - _SAME]
        n_judged = len(judged_ok) + len(diverged)
        c, b = _median(chance[idx]), _median(best[idx])
        own = names[idx].dropna()
        seeded = [i for i in idx if seeds[i] != "null"]
        n_repeated = (len({(seeds[i], ids[i]) for i in seeded})
                      - len({seeds[i] for i in seeded}))
        ls = loss_steps[idx]
        rows.append({
            "remedy": rem, "task": tsk,
            "memory_steps": float(length) if math.isfinite(length) else math.nan,
            "setting": ", ".join(f"{short[k]}={v}" for k, v in zip(keys, setting)),
            "label": labels[(tsk, length, setting)],
            "loss_steps": float(ls.median()) if ls.notna().all() else math.nan,
            "n_trials": len(idx), "n_judged": n_judged, "n_solved": len(solved),
            "n_diverged": len(diverged),
            "n_failed": len([i for i in idx if status[i] not in ("ok", "diverged")]),
            "n_unjudged": len(ok) - len(judged_ok),
            "n_repeated": n_repeated,
            "success": len(solved) / n_judged if n_judged else math.nan,
            "horizon_first": _median(horizon_first[ok]),
            "horizon_last": _median(horizon_last[ok]),
            "lyapunov_top_init": _median(lyap_init[ok]),
            "lyapunov_top_end": _median(lyap_end[ok]),
            "metric": str(own.iloc[0]) if len(own) else metric_name,
            "chance": c, "best": b,
            "threshold": c + SOLVED_FRACTION * (b - c),
            "_rank": (order.get(rem, len(order)), tasks[tsk], float(length),
                      rank[(tsk, length, setting)]),
        })
    out = pd.DataFrame(rows)
    out = out.iloc[sorted(range(len(out)), key=lambda k: out["_rank"][k])]
    return out.drop(columns="_rank").reset_index(drop=True)[list(COLUMNS)]


def _distinguishing_labels(settings: list[tuple], keys: list[str],
                           short: Mapping[str, str]) -> dict[tuple, str]:
    """For each (task, length, setting values): "" when no other setting has that task and
    length, else the values of the keys that differ among those settings
    (``"hidden_size=256"``)."""
    out = {}
    for tsk, length, setting in settings:
        same = [s for t, x, s in settings if t == tsk and x == length]
        if len(same) < 2:
            out[(tsk, length, setting)] = ""
            continue
        differ = [j for j in range(len(keys)) if len({s[j] for s in same}) > 1]
        out[(tsk, length, setting)] = ", ".join(f"{short[keys[j]]}={setting[j]}"
                                                for j in differ)
    return out


def repeated_seeds_text(table: pd.DataFrame) -> str:
    """The warning for a table with repeated seeds (:func:`remedy_table`'s ``n_repeated``):
    "" when none is repeated.

    >>> repeated_seeds_text(pd.DataFrame({"n_repeated": [0, 2]}))[:60]
    '2 trials repeat a seed within one remedy and setting: the ru'
    """
    n = int(table["n_repeated"].sum()) if "n_repeated" in table else 0
    if not n:
        return ""
    return (f"{n} trial{'s' if n != 1 else ''} repeat{'' if n != 1 else 's'} a seed within one "
            "remedy and setting: the run folder holds trials of different configs under the "
            "same names; counts include both — rerun with --fresh")


def steps_text(length: float, label: str = "") -> str:
    """A column of the table: ``"20 steps"``, ``"memory n/a"`` (no fixed span), with the
    distinguishing label when there is one (``"20 steps · hidden_size=256"``).

    >>> steps_text(20.0), steps_text(float("nan")), steps_text(20.0, "hidden_size=256")
    ('20 steps', 'memory n/a', '20 steps · hidden_size=256')
    """
    text = f"{_steps_label(length)} steps" if math.isfinite(length) else "memory n/a"
    return f"{text} · {label}" if label else text


# --- words and numbers ------------------------------------------------------------------------

def number_text(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` significant digits, trailing zeros kept, a true minus sign.

    >>> number_text(0.9), number_text(1 / 30), number_text(-0.0104), number_text(0.0)
    ('0.90', '0.033', '−0.010', '0')
    >>> number_text(140.0), number_text(float("nan"))
    ('140', '')
    """
    if not math.isfinite(x):
        return "" if math.isnan(x) else ("∞" if x > 0 else "−∞")
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}"
    return text.replace("-", "−")


def exponent_text(x: float) -> str:
    """A top Lyapunov exponent (nats per step) as the page and findings write it, e.g.
    ``"−0.010"`` (two significant digits; "" when not measured)."""
    return number_text(x, 2)


def threshold_text(metric: str, chance: float, best: float) -> str:
    """What "solved" means for one task in plain words: ``"accuracy ≥ 0.90"`` (chance 0.5,
    best 1), ``"mse ≤ 0.033"`` (chance 0.167, best 0); "" when best or chance is missing.

    >>> threshold_text("accuracy", 0.5, 1.0), threshold_text("mse", 1 / 6, 0.0)
    ('accuracy ≥ 0.90', 'mse ≤ 0.033')
    """
    if not (math.isfinite(chance) and math.isfinite(best)) or abs(best - chance) <= _SAME:
        return ""
    sign = "≥" if best > chance else "≤"
    return f"{metric} {sign} {number_text(chance + SOLVED_FRACTION * (best - chance))}"


def task_threshold_text(table: pd.DataFrame, task: str) -> str:
    """:func:`threshold_text` of one task of a :func:`remedy_table`; where the threshold
    differs between memory lengths, its range (``"accuracy ≥ 0.87–0.90"``)."""
    part = table[(table["task"] == task) & np.isfinite(table["threshold"].to_numpy(float))]
    texts = list(dict.fromkeys(threshold_text(m, c, b)
                               for m, c, b in zip(part["metric"], part["chance"], part["best"])))
    texts = [t for t in texts if t]
    if len(texts) <= 1:
        return texts[0] if texts else ""
    lo, hi = part["threshold"].min(), part["threshold"].max()
    head = texts[0].rsplit(" ", 1)[0]
    return f"{head} {number_text(lo)}–{number_text(hi)}"


def remedy_palette(names: Sequence[str]) -> dict[str, str]:
    """One colour (hex) per remedy, in the given order: seaborn's "colorblind" palette (its
    10 colours, then "husl")."""
    names = list(names)
    base = sns.color_palette("colorblind")
    colours = base if len(names) <= len(base) else sns.color_palette("husl", len(names))
    return {name: to_hex(c) for name, c in zip(names, colours)}


# --- the figure -------------------------------------------------------------------------------

_MAX_COLS = 3
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
_JITTER = 0.012  # vertical offset between remedies, so equal success rates do not hide
_GREY = "#8a8a8a"


def _steps_label(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def remedy_success(trials: pd.DataFrame, config: Mapping | None = None) -> Figure:
    """Success rate against the gradient's horizon: one panel per task, one marker per
    (remedy, setting), the colour the remedy (config order), the marker shape the setting
    (memory length, with the other swept values where two settings share it); y the fraction
    of the judged seeds solved, x the median horizon at the end of training (steps;
    logarithmic when the values span a factor of 10 or more, linear below one step when a
    horizon is 0), with a dashed vertical line at each memory length (the horizon the task
    needs) where the steps with a loss are few (:func:`horizon_measures_memory`; not stored:
    the note then says the comparison holds for a loss at a few last steps). A setting with a
    loss at many steps gets no line: its summed gradient's horizon is at least about the
    number of loss steps and says little about memory. A (remedy, setting) with no finite
    horizon is a hollow marker on the left edge.

    Args:
        trials: the trials table of a run with a remedy axis (see :func:`remedy_table`).
        config: the run's config, for the order of the remedies and the swept keys of a
            setting (None: first appearance, settings inferred, see :func:`setting_columns`).

    Raises:
        MissingData: the run has no remedy axis or no held-out metric.
    """
    table = remedy_table(trials, config) if trials is not None else None
    if table is None:
        raise MissingData("the run has no remedy axis (a sweep of named remedies, column "
                          "'remedy') with a held-out metric")
    judged = table[table["n_judged"] > 0]
    if judged.empty:
        raise MissingData("no trial of the remedy sweep finished (all failed or not judged)")
    names = list(dict.fromkeys(table["remedy"]))
    palette = remedy_palette(names)
    tasks = list(dict.fromkeys(table["task"]))
    ncols = min(_MAX_COLS, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    loss_steps = table["loss_steps"].to_numpy(float)
    last_only = horizon_measures_memory(loss_steps, table["memory_steps"])  # line drawn
    lines = table.loc[last_only & np.isfinite(table["memory_steps"].to_numpy(float)),
                      "memory_steps"].to_numpy(float)
    finite = judged["horizon_last"].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    values = np.concatenate([finite, lines])
    if not len(values):
        values = np.array([1.0])
    lo, hi = max(float(values.min()), 1.0), max(float(values.max()), 1.0)
    zero = bool((values < 1).any())  # a horizon below one step: the axis starts at 0
    wide = hi / lo >= 10
    notes = []
    with figure_style():
        fig, axes = new_figure(nrows, ncols, panel_height=2.9,
                               width=min(11.0, 2.2 + 3.2 * ncols))
        for k in range(nrows * ncols):
            if k >= len(tasks):
                axes[k // ncols, k % ncols].set_visible(False)
        for k, task in enumerate(tasks):
            ax = axes[k // ncols, k % ncols]
            part = table[table["task"] == task]
            part = part.assign(_x=part["memory_steps"].fillna(math.inf)).sort_values(
                "_x", kind="stable")
            columns = list(dict.fromkeys(zip(part["_x"], part["setting"], part["label"])))
            shapes = {c[:2]: _MARKERS[j % len(_MARKERS)] for j, c in enumerate(columns)}
            texts = {c[:2]: (_steps_label(c[0]) if math.isfinite(c[0]) else "n/a")
                     + (f" · {c[2]}" if c[2] else "") for c in columns}
            edge = blended_transform_factory(ax.transAxes, ax.transData)
            measured = horizon_measures_memory(part["loss_steps"], part["memory_steps"])
            many = part[~measured]
            drawn = sorted(set(part.loc[measured & np.isfinite(part["_x"]), "_x"]))
            for x in drawn:
                ax.axvline(x, ls="--", color=_GREY, lw=0.9, zorder=1)
                ax.text(x, 0.5, f"{_steps_label(x)} steps", transform=ax.get_xaxis_transform(),
                        fontsize=6.5, color="#555555", ha="right", va="center", rotation=90,
                        zorder=2)
            if len(many):
                n = _steps_label(float(many["loss_steps"].min()))
                top = _steps_label(float(many["loss_steps"].max()))
                span = n if n == top else f"{n}–{top}"
                notes.append(f"{task}: a loss at {span} steps, so its horizon is at least about "
                             "that whatever the memory and is not comparable with a memory "
                             "length under 4× that (no line; compare λ₁ in the table)")
            for j, name in enumerate(names):
                mine = part[(part["remedy"] == name) & (part["n_judged"] > 0)]
                dy = (j - (len(names) - 1) / 2) * _JITTER
                for _, row in mine.iterrows():
                    y = row["success"] + dy
                    h = row["horizon_last"]
                    key = (row["_x"], row["setting"])
                    style = dict(marker=shapes[key], ms=6.5, ls="", color=palette[name],
                                 zorder=3, label=f"_{name} {texts[key]}")
                    if math.isfinite(h):
                        ax.plot([h], [y], mec="white", mew=0.6, **style)
                    else:
                        ax.plot([0.0], [y], mfc="white", clip_on=False, transform=edge, **style)
            failed = part[part["n_judged"] == 0]
            for _, row in failed.iterrows():
                notes.append(f"{task}: {row['remedy']} at "
                             f"{steps_text(row['memory_steps'], row['label'])} "
                             "not judged (no finished trial)")
            title = task
            threshold = task_threshold_text(table, task)
            if threshold:
                title += f"\nsolved: {threshold}"
            ax.set_title(title, fontsize=8.5)
            ax.set_ylim(-0.06, 1.06)
            ax.set_xlabel("median horizon at the end (steps)")
            if k % ncols == 0:
                ax.set_ylabel("fraction of seeds solved")
            if wide:
                ax.set_xscale("symlog", linthresh=1.0)
                ax.set_xlim(0 if zero else lo / 1.6, hi * 1.6)
            else:
                ax.set_xlim(0, hi * 1.1)
            ax.legend(handles=[Line2D([], [], marker=shapes[c[:2]], ls="", color=_GREY, ms=5,
                                      label=texts[c[:2]]) for c in columns],
                      title="memory steps", fontsize=6.5, title_fontsize=6.5, loc="best",
                      frameon=True, framealpha=0.8)
        handles = [Line2D([], [], marker="o", ls="", ms=6, color=palette[n], label=n)
                   for n in names]
        if len(lines):
            handles.append(Line2D([], [], ls="--", color=_GREY, lw=0.9,
                                  label="memory length (horizon needed)"))
        if (~np.isfinite(judged["horizon_last"].to_numpy(float))).any():
            handles.append(Line2D([], [], marker="o", ls="", ms=6, mfc="white",
                                  color=MISSING_COLOUR, label="no finite horizon"))
        fig.legend(handles=handles, title="remedy", loc="outside right upper", frameon=False)
        if np.isnan(loss_steps[last_only]).any() and len(lines):
            notes.append("the steps with a loss are not stored (loss_steps): the memory lines "
                         "compare with the horizon only for a loss at a few last steps")
        notes.append(f"solved: the held-out metric at least {SOLVED_FRACTION:.0%} of the way "
                     "from chance to the best possible value; failed trials left out, diverged "
                     "ones count as not solved")
        warning = repeated_seeds_text(table)
        if warning:
            notes.append(warning)
        if len(names) > 1:
            notes.append("markers offset vertically by remedy so that equal rates stay visible")
        add_note(fig, "; ".join(notes))
    return fig
