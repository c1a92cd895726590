"""Figure 1: the loss history — the seed article's figure, told truthfully (train and held-out
loss per sequence length, seeds as bands, the chance level drawn)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ._data import Trials, panel_layout, require, show_filled
from .style import BAND_ALPHA, add_note, figure_style, new_figure, seq_len_palette

__all__ = ["loss_history"]

#: Axis labels by the trials' ``loss_name`` (what the task's loss computes).
_LOSS_LABELS = {"cross-entropy": "cross-entropy loss (nats)", "mse": "mean squared error"}
#: Runs stored before ``loss_name`` existed: the loss followed from the metric.
_LOSS_BY_METRIC = {"accuracy": "cross-entropy loss (nats)", "mse": "mean squared error"}
_MAX_COLS = 4


def _loss_label(trials: pd.DataFrame) -> str:
    if "loss_name" in trials and trials["loss_name"].notna().any():
        return _LOSS_LABELS.get(str(trials["loss_name"].dropna().iloc[0]), "loss")
    if "metric" in trials and trials["metric"].notna().any():
        return _LOSS_BY_METRIC.get(str(trials["metric"].dropna().iloc[0]), "loss")
    return "loss"


def _chance(trials: pd.DataFrame) -> float:
    if "chance_loss" not in trials:
        return math.nan
    values = pd.to_numeric(trials["chance_loss"], errors="coerce").dropna().unique()
    return float(values[0]) if len(values) == 1 else math.nan


def _ylim(values: np.ndarray, chance: float) -> tuple[float, float, bool]:
    """Limits covering 99% of the finite losses and the chance level; True when clipped."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0, False) if math.isnan(chance) else (0.9 * chance, 1.1 * chance, False)
    lo, top = float(finite.min()), float(finite.max())
    hi = float(np.percentile(finite, 99))
    if not math.isnan(chance):
        lo, hi = min(lo, chance), max(hi, chance)
    clipped = top > hi + 1e-12 and (top - lo) > 3 * (hi - lo)
    hi = hi if clipped else top
    pad = 0.06 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad, clipped


def loss_history(trials: pd.DataFrame, curves: pd.DataFrame) -> Figure:
    """Train (solid) and held-out (dashed) loss against epoch, one colour per ``seq_len``, one
    panel per setting (the swept values other than seq_len and seed).

    Args:
        trials: the trials table (``id``, ``task.seq_len``, settings, ``chance_loss``,
            ``metric``).
        curves: long table ``trial, epoch, train_loss, val_loss`` (``val_loss`` may be NaN when
            there is no held-out split).

    Seeds of the same (setting, seq_len) are drawn as their mean with a min-max band; NaN/inf
    losses (a diverged trial) are left out; a y axis clipped to 99% of the values is noted.
    """
    info = Trials.from_table(trials)
    unit = info.unit
    require(curves, "curves", ["trial", "epoch", "train_loss"])
    df = info.attach(curves)
    if "val_loss" not in df:
        df["val_loss"] = math.nan
    for col in ("train_loss", "val_loss"):
        df[col] = pd.to_numeric(df[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
    require(df, "curves", hint=" for the trials of this run")
    palette = seq_len_palette(info.seq_lens)
    chance = _chance(trials)
    settings = [v for v in info.settings if (df["setting"] == v).any()]
    nrows, ncols, where = panel_layout(info, settings, _MAX_COLS)
    lo, hi, clipped = _ylim(df[["train_loss", "val_loss"]].to_numpy().ravel(), chance)
    has_val = bool(df["val_loss"].notna().any())
    with figure_style():
        fig, axes = new_figure(nrows, ncols, sharex=True, sharey=True,
                               panel_height=2.5 if ncols > 1 else 3.2)
        filled = show_filled(axes, where)
        for setting in settings:
            ax = axes[where[setting]]
            part = df[df["setting"] == setting]
            for seq_len, group in part.groupby("seq_len"):
                colour = palette.get(seq_len, "#7f7f7f")
                for col, style in (("train_loss", "-"), ("val_loss", "--")):
                    stats = group.groupby("epoch")[col].agg(["mean", "min", "max", "count"])
                    stats = stats[stats["count"] > 0]
                    if stats.empty:
                        continue
                    x = stats.index.to_numpy()
                    ax.plot(x, stats["mean"], style, color=colour, lw=1.4,
                            label=f"_{col} seq_len={seq_len}")
                    if group["trial"].nunique() > 1:
                        ax.fill_between(x, stats["min"], stats["max"], color=colour,
                                        alpha=BAND_ALPHA, lw=0)
            if not math.isnan(chance):
                ax.axhline(chance, color="black", ls=":", lw=1.1, label="_chance")
            ax.set_title(info.setting_title(setting))
            ax.set_ylim(lo, hi)
        for ax in axes[-1, :]:
            ax.set_xlabel(unit)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes[:, 0]:
            ax.set_ylabel(_loss_label(trials))
        # the last row may be partly hidden: label the x axis of the panels above the gap too
        for r, c in filled:
            if (r + 1, c) not in filled:
                axes[r, c].set_xlabel(unit)
                axes[r, c].xaxis.set_tick_params(labelbottom=True)
        handles = [Line2D([], [], color=palette[s], lw=2, label=f"seq_len={s}")
                   for s in info.seq_lens if (df["seq_len"] == s).any()]
        handles.append(Line2D([], [], color="black", ls="-", label="train"))
        if has_val:
            handles.append(Line2D([], [], color="black", ls="--", label="held-out"))
        if not math.isnan(chance):
            handles.append(Line2D([], [], color="black", ls=":",
                                  label=f"chance level ({chance:.4g})"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        notes = []
        if df.groupby(["setting", "seq_len"])["trial"].nunique().max() > 1:
            notes.append("lines: mean over seeds, bands: min-max over seeds")
        if clipped:
            notes.append("y axis clipped at the 99th percentile of the losses")
        add_note(fig, "; ".join(notes))
    return fig
