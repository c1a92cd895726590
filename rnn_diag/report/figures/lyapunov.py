"""Figure 6b: the Lyapunov spectrum of the recurrent dynamics at init and at the end."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._data import Trials, last_layer, require
from .style import BAND_ALPHA, add_note, figure_style, new_figure, seq_len_palette
from .theory import LN10

__all__ = ["lyapunov_spectra"]

_MAX_COLS = 4


def lyapunov_spectra(trials: pd.DataFrame, lyapunov: pd.DataFrame) -> Figure:
    """Lyapunov exponents (nats per step, left axis; decades per step, right axis) against
    their rank, one line per seq_len (mean over seeds, min-max band), dashed at init and solid
    at the end, one panel per setting.

    Args:
        trials: the trials table.
        lyapunov: long table ``trial, when, layer, index, exponent`` (``when`` "init", "end" or
            an epoch; only init and end are drawn; last layer).

    The top exponent λ₁ (index 0) is the long-run rate of change of log‖∂L/∂h_t‖ per step:
    below 0 the gradient vanishes exponentially, above 0 it explodes.
    """
    info = Trials.from_table(trials)
    require(lyapunov, "lyapunov", ["trial", "when", "index", "exponent"])
    df = info.attach(lyapunov)
    df, n_layers = last_layer(df)
    df = df[df["when"].astype(str).isin(["init", "end"])]
    df = df.assign(exponent=pd.to_numeric(df["exponent"], errors="coerce"))
    df = df[df["exponent"].map(math.isfinite)]
    require(df, "lyapunov", hint=": no finite init/end exponents for the trials of this run")
    palette = seq_len_palette(info.seq_lens)
    settings = [v for v in info.settings if (df["setting"] == v).any()]
    ncols = min(_MAX_COLS, len(settings))
    nrows = math.ceil(len(settings) / ncols)
    seeds = False
    with figure_style():
        fig, axes = new_figure(nrows, ncols, sharey=True, panel_height=2.6 if ncols > 1 else 3.2)
        for ax in axes.ravel()[len(settings):]:
            ax.set_visible(False)
        for k, (ax, setting) in enumerate(zip(axes.ravel(), settings)):
            ax.axhline(0.0, color="black", lw=0.9)
            part = df[df["setting"] == setting]
            for (seq_len, when), g in part.groupby(["seq_len", "when"]):
                colour = palette.get(seq_len, "#7f7f7f")
                stats = g.groupby("index")["exponent"].agg(["mean", "min", "max"])
                ax.plot(stats.index, stats["mean"], "--" if when == "init" else "-",
                        color=colour, lw=1.3, marker="o" if len(stats) <= 32 else None, ms=2.5,
                        mfc="none" if when == "init" else colour,
                        label=f"_{when} seq_len={seq_len}")
                if g["trial"].nunique() > 1:
                    seeds = True
                    ax.fill_between(stats.index, stats["min"], stats["max"], color=colour,
                                    alpha=BAND_ALPHA, lw=0)
            ax.set_title(info.setting_title(setting))
            ax.set_xlabel("index i (largest exponent first)")
            ax.xaxis.set_tick_params(labelbottom=True)
            if k % ncols == 0:
                ax.set_ylabel("Lyapunov exponent λ_i (nats/step)")
            if k % ncols == ncols - 1 or k == len(settings) - 1:
                right = ax.secondary_yaxis("right", functions=(lambda x: x / LN10,
                                                               lambda x: x * LN10))
                right.set_ylabel("decades/step")
        handles = [Line2D([], [], color=palette[s], lw=2, label=f"seq_len={s}")
                   for s in info.seq_lens if (df["seq_len"] == s).any()]
        handles += [Line2D([], [], color="black", ls="--", marker="o", mfc="none", ms=3,
                           label="at init"),
                    Line2D([], [], color="black", ls="-", marker="o", ms=3, label="at end"),
                    Line2D([], [], color="black", lw=0.9, label="0: neither growth nor decay")]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        notes = []
        if n_layers > 1:
            notes.append(f"last of {n_layers} layers")
        if seeds:
            notes.append("lines: mean over seeds, bands: min-max")
        add_note(fig, "; ".join(notes))
    return fig
