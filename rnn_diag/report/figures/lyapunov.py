"""Figure 6b: the Lyapunov spectrum of the recurrent dynamics at init and at the end.

For a diagonal scan (:mod:`.cells`) the exponents are one per channel, the time mean of
ln|a_t,i| over the training inputs, not necessarily stored in decreasing order: every spectrum
is drawn sorted, largest first (a no-op for the other cells, whose spectra are stored so)."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._data import Trials, last_layer, panel_layout, require, show_filled
from .cells import is_scan
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

    The top exponent λ₁ (rank 0) is the long-run rate of change of log‖∂L/∂h_t‖ per step:
    below 0 the gradient vanishes exponentially, above 0 it explodes. Each trial's spectrum is
    drawn sorted, largest first; a diagonal scan's exponents (one per channel) are said so in
    the note. Panels are laid out as the loss figure's (:func:`panel_layout`).
    """
    info = Trials.from_table(trials)
    require(lyapunov, "lyapunov", ["trial", "when", "index", "exponent"])
    df = info.attach(lyapunov)
    df, n_layers = last_layer(df)
    df = df[df["when"].astype(str).isin(["init", "end"])]
    df = df.assign(exponent=pd.to_numeric(df["exponent"], errors="coerce"))
    df = df[df["exponent"].map(math.isfinite)]
    require(df, "lyapunov", hint=": no finite init/end exponents for the trials of this run")
    df = df.assign(when=df["when"].astype(str))
    group = ["trial", "when"] + (["layer"] if "layer" in df else [])
    df = df.sort_values("exponent", ascending=False, kind="stable")
    df["index"] = df.groupby(group).cumcount()
    palette = seq_len_palette(info.seq_lens)
    settings = [v for v in info.settings if (df["setting"] == v).any()]
    nrows, ncols, where = panel_layout(info, settings, _MAX_COLS)
    seeds = False
    with figure_style():
        height = 3.2 if ncols == 1 else 2.6 if nrows < 4 else 2.1
        fig, axes = new_figure(nrows, ncols, sharey=True, panel_height=height)
        filled = show_filled(axes, where)
        for setting in settings:
            r, c = where[setting]
            ax = axes[r, c]
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
            ax.set_title(info.setting_title(setting), fontsize=8.5 if ncols > 2 else 9.5)
            ax.set_xlabel("index i (largest exponent first)" if ncols < 4 else
                          "index i (largest first)")
            ax.xaxis.set_tick_params(labelbottom=True)
            if c == 0:
                ax.set_ylabel("Lyapunov exponent λ_i (nats/step)")
            if (r, c + 1) not in filled:
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
        scans = sorted({str(c) for c in df["cell"] if is_scan(c)})
        if scans:
            notes.append(f"{', '.join(scans)}: one exponent per channel, the mean of ln|a_t,i| "
                         "over the training inputs, sorted")
        add_note(fig, "; ".join(notes))
    return fig
