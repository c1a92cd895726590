"""Reading the stored tables for the figures: which trials belong together, which panel each
goes to, and the few reshapes every figure needs. Nothing here computes a diagnostic.

Grouping convention (all figures): a *setting* here is always a *panel setting* (see
:mod:`rnn_diag.experiments.labels`), a combination of the swept values other than the sequence
length and the seed (e.g. ``weight_scale=0.5``, or ``cell=gru · weight_scale=1.5``); each
setting gets its own panel, each sequence length its own colour, and the seeds of one
(setting, seq_len) are aggregated (mean line, min-max band).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...experiments.labels import format_value, short_names
from ...experiments.store import Table
from .style import weight_scale_text

__all__ = ["REMEDY", "SWEEP", "MissingData", "Trials", "downsample", "has_remedy_axis",
           "last_layer", "panel_layout", "require", "show_filled", "sweep_config", "sweep_table",
           "table"]

#: The column of a sweep's named axis of remedies (each value names a bundle of settings).
REMEDY = "remedy"

#: Settings that never define a panel: the colour (seq_len) and the aggregation (seed).
_NOT_SETTING = ("task.seq_len", "train.seed", "seed")


class MissingData(LookupError):
    """A figure cannot be drawn because its data were not recorded (the message says which and
    how to record them)."""


def has_remedy_axis(trials: pd.DataFrame | None) -> bool:
    """Whether the trials have a remedy axis: a :data:`REMEDY` column with at least two
    distinct names (missing values not counted).

    Example:
        >>> has_remedy_axis(pd.DataFrame({"remedy": ["none", "clip", None]}))
        True
        >>> has_remedy_axis(pd.DataFrame({"remedy": ["none", "none"]}))
        False
        >>> has_remedy_axis(pd.DataFrame({"task.seq_len": [10]}))
        False
    """
    if trials is None or REMEDY not in trials:
        return False
    return trials[REMEDY].dropna().astype(str).nunique() >= 2


def table(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame | None:
    """``tables[name]`` or None when absent or empty."""
    df = tables.get(name)
    return None if df is None or len(df) == 0 else df


def require(df: pd.DataFrame | None, name: str, columns: Sequence[str] = (),
            hint: str = "", message: str = "") -> pd.DataFrame:
    """``df`` if it has rows and ``columns``; otherwise :class:`MissingData` naming the table
    (or saying ``message``)."""
    if df is None or len(df) == 0:
        raise MissingData(message or f"the {name!r} table is empty or was not recorded{hint}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingData(f"the {name!r} table has no column(s) {', '.join(missing)}{hint}")
    return df


def _value_text(key: str, value) -> str:
    """A value in a panel title: the weight scale as the figures name it, other floats short
    (``:g``: an int column with a missing value reads back as floats, 10.0 -> ``10``), the
    rest (``null`` when missing) by :func:`~rnn_diag.experiments.labels.format_value`."""
    if key == "model.weight_scale":
        return weight_scale_text(value)
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:g}"
    return format_value(value)


def _sort_value(value):
    """Sort key that puts missing first and compares numbers as numbers, text as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


@dataclass(frozen=True)
class Trials:
    """The trials table reduced to what places a trial in a figure.

    Attributes:
        info: one row per trial, indexed by trial id, with columns ``seq_len`` (int),
            ``setting`` (panel label, "" when only seq_len/seed vary), ``setting_rank`` (panel
            order), ``seed``, ``status``, ``label``, ``cell``, ``weight_scale`` (float, NaN =
            default init) and ``epochs_run``.
        settings: the (panel) setting labels in panel order.
        setting_keys: the dotted keys whose values differ between settings.
        seq_lens: the sequence lengths, increasing.
        setting_parts: per setting (same order), the text of its value of each setting key.
        unit: the time axis, "epoch" or "step" (:func:`time_unit`).
    """

    info: pd.DataFrame
    settings: tuple[str, ...]
    setting_keys: tuple[str, ...]
    seq_lens: tuple[int, ...]
    setting_parts: tuple[tuple[str, ...], ...] = ()
    unit: str = "epoch"

    @staticmethod
    def from_table(trials: pd.DataFrame) -> Trials:
        require(trials, Table.TRIALS, ["id", "task.seq_len"])
        dotted = [c for c in trials.columns if "." in c and c not in _NOT_SETTING]
        keys = tuple(c for c in dotted if len({_value_text(c, v) for v in trials[c]}) > 1)
        info = pd.DataFrame(index=pd.Index(trials["id"].astype(str), name="trial"))
        info["seq_len"] = pd.to_numeric(trials["task.seq_len"], errors="coerce").to_numpy()
        info["seq_len"] = info["seq_len"].fillna(-1).astype(int)
        short = short_names(keys)
        labels, ranks, parts = [], [], {}
        for _, row in trials.iterrows():
            texts = tuple(_value_text(k, row[k]) for k in keys)
            labels.append(" · ".join(f"{short[k]}={v}" for k, v in zip(keys, texts)))
            ranks.append(tuple(_sort_value(row[k]) for k in keys))
            parts.setdefault(labels[-1], texts)
        info["setting"] = labels
        order = sorted(set(zip(ranks, labels)))
        settings = tuple(dict.fromkeys(label for _, label in order))
        info["setting_rank"] = [settings.index(v) for v in labels]
        for col, src, default in (("seed", "train.seed", 0), ("status", "status", "ok"),
                                  ("label", "label", ""), ("cell", "model.cell", "rnn"),
                                  ("weight_scale", "model.weight_scale", math.nan),
                                  ("epochs_run", "epochs_run", math.nan)):
            info[col] = trials[src].to_numpy() if src in trials else default
        info["weight_scale"] = pd.to_numeric(info["weight_scale"], errors="coerce")
        info["label"] = [lab if lab else tid for lab, tid in zip(info["label"], info.index)]
        seq_lens = tuple(sorted(v for v in info["seq_len"].unique() if v >= 0))
        return Trials(info, settings, keys, seq_lens, tuple(parts[v] for v in settings),
                      time_unit(trials))

    def attach(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` (a long table with a ``trial`` column) joined with ``seq_len``, ``setting``,
        ``setting_rank``, ``seed`` and ``cell``; rows of unknown trials are dropped."""
        cols = ["seq_len", "setting", "setting_rank", "seed", "cell"]
        out = df.copy()
        out["trial"] = out["trial"].astype(str)
        return out.join(self.info[cols], on="trial", how="inner")

    def setting_title(self, setting: str) -> str:
        return setting if setting else "all trials"


def panel_layout(info: Trials, settings: Sequence[str], max_cols: int = 4,
                 ) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """Where each of ``settings`` goes in a grid of panels: ``(rows, columns, {setting: (row,
    column)})``, shared by the figures with one panel per setting so they agree.

    Up to ``max_cols`` settings: one row. More: as few rows as ``max_cols`` columns allow; when
    the settings are every combination of the swept keys and one key has at most ``max_cols``
    values that fill that few rows, the columns are that key's values (the last such key:
    ``cell × lag`` gives one column per lag, one row per cell) and the rows the other keys';
    otherwise the settings fill the rows in order, the columns evened out (6 → 2 rows of 3).

    Example:
        >>> info = Trials.from_table(pd.DataFrame({
        ...     "id": list("abcdef"), "task.seq_len": 5,
        ...     "model.cell": ["gru", "gru", "lstm", "lstm", "rnn", "rnn"],
        ...     "train.clip": [1, 2, 1, 2, 1, 2]}))
        >>> rows, cols, where = panel_layout(info, info.settings)
        >>> rows, cols, where["cell=lstm · clip=2"]
        (2, 3, (1, 1))
    """
    n = len(settings)
    if n <= max_cols:
        return 1, max(n, 1), {v: (0, c) for c, v in enumerate(settings)}
    rows = math.ceil(n / max_cols)
    lookup = dict(zip(info.settings, info.setting_parts))
    parts = [lookup.get(v, ()) for v in settings]
    nkeys = len(info.setting_keys)
    if nkeys > 1 and all(len(p) == nkeys for p in parts) and len(set(parts)) == n:
        values = [list(dict.fromkeys(p[k] for p in parts)) for k in range(nkeys)]
        if math.prod(len(v) for v in values) == n:
            for k in reversed(range(nkeys)):
                if len(values[k]) <= max_cols and n // len(values[k]) <= rows:
                    others = [p[:k] + p[k + 1:] for p in parts]
                    row_of = {o: r for r, o in enumerate(dict.fromkeys(others))}
                    return n // len(values[k]), len(values[k]), {
                        v: (row_of[o], values[k].index(p[k]))
                        for v, p, o in zip(settings, parts, others)}
    cols = math.ceil(n / rows)
    return rows, cols, {v: divmod(i, cols) for i, v in enumerate(settings)}



def show_filled(axes, where: dict) -> set[tuple[int, int]]:
    """Hide the panels of the grid ``axes`` (a 2-D array of Axes) that :func:`panel_layout`'s
    ``where`` left empty; returns the filled ``(row, column)`` cells."""
    filled = set(where.values())
    for (r, c), ax in np.ndenumerate(axes):
        ax.set_visible((r, c) in filled)
    return filled

def last_layer(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows of the last layer (closest to the loss) of each trial, direction 0, and the largest
    number of layers seen (for the note)."""
    if "direction" in df.columns:
        df = df[df["direction"] == 0]
    if "layer" not in df.columns or len(df) == 0:
        return df, 1
    top = df.groupby("trial")["layer"].transform("max")
    return df[df["layer"] == top], int(df["layer"].max()) + 1


def downsample(x: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spaced elements of ``x`` (first and last kept).

    Example:
        >>> downsample(np.arange(10), 4).tolist()
        [0, 3, 6, 9]
    """
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def time_unit(trials: pd.DataFrame) -> str:
    """The report's time axis: "step" for a recording of a user's loop (every trial has
    ``time_unit`` "step", see :func:`rnn_diag.record`), else "epoch".

    >>> time_unit(pd.DataFrame({"time_unit": ["step"]})), time_unit(pd.DataFrame({"x": [1]}))
    ('step', 'epoch')
    """
    units = trials["time_unit"].dropna().unique() if "time_unit" in trials else []
    return "step" if len(units) == 1 and units[0] == "step" else "epoch"


def snapshot_epoch(when: str, epochs_run: float) -> float:
    """The epoch a spectra/Lyapunov snapshot was taken at: "init" = 0, "end" = epochs run, a
    number = itself (NaN when unknown)."""
    if when == "init":
        return 0.0
    if when == "end":
        return float(epochs_run) if epochs_run == epochs_run else math.nan
    try:
        return float(when)
    except (TypeError, ValueError):
        return math.nan


#: The name under which :meth:`~rnn_diag.report.run_data.RunData.for_figures` passes the
#: config's sweep to the figures (a figure receives only tables).
SWEEP = "sweep"


def sweep_table(config: Mapping | None) -> pd.DataFrame:
    """The config's ``sweep`` as a table for the figures: one row per swept value, in config
    order, with columns ``key`` (the swept key as stored), ``value`` (a value, or a name of a
    named axis) and ``named`` (whether the key is a named axis, a mapping name → settings).

    >>> sweep_table({"sweep": {"remedy": {"none": {}, "clip": {}}, "seed": [0]}}).values.tolist()
    [['remedy', 'none', True], ['remedy', 'clip', True], ['seed', 0, False]]
    """
    sweep = (config or {}).get("sweep")
    rows = []
    if isinstance(sweep, Mapping):
        for key, values in sweep.items():
            named = isinstance(values, Mapping)
            items = list(values) if isinstance(values, (Mapping, list, tuple)) else [values]
            rows += [{"key": str(key), "value": v, "named": named} for v in items]
    return pd.DataFrame(rows, columns=["key", "value", "named"]).astype(object)


def sweep_config(df: pd.DataFrame | None) -> dict | None:
    """The ``{"sweep": ...}`` mapping of a :func:`sweep_table` (a named axis as a mapping
    name → {}), the part of the config the figures use; None when there is none.

    >>> sweep_config(sweep_table({"sweep": {"remedy": {"none": {}}, "seed": [0, 1]}}))
    {'sweep': {'remedy': {'none': {}}, 'seed': [0, 1]}}
    """
    if df is None or len(df) == 0:
        return None
    sweep: dict = {}
    for key, value, named in zip(df["key"], df["value"], df["named"]):
        if named:
            sweep.setdefault(key, {})[value] = {}
        else:
            sweep.setdefault(key, []).append(value)
    return {"sweep": sweep}
