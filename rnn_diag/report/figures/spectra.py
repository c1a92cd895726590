"""Figure 5: the recurrent weight matrix W_hh — eigenvalues in the complex plane with the unit
circle (init and end), singular values, and spectral radius ρ and spectral norm σ_max over
training."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from ._data import Trials, last_layer, require, snapshot_epoch, time_unit
from .style import BAND_ALPHA, MISSING_COLOUR, add_note, figure_style, new_figure, seq_len_palette

__all__ = ["weight_spectra"]

#: Marker of each gate block (rnn: hh; gru: r, z, n; lstm: i, f, g, o).
GATE_MARKERS = {"hh": "o", "r": "s", "z": "^", "n": "o", "i": "s", "f": "^", "g": "o",
                "o": "D"}
#: At most this many settings (rows) are drawn.
MAX_ROWS = 12


def _marker(gate: str) -> str:
    return GATE_MARKERS.get(str(gate), "o")


def _singular_values(ax, g: pd.DataFrame, colour, ls: str, marker: str, ms: float,
                     label: str) -> None:
    """σ_i against i: the mean over the trials (seeds) of ``g``, with a min-max band."""
    stats = g.groupby("index")["singular_value"].agg(["mean", "min", "max"])
    init = ls == "--"
    ax.plot(stats.index, stats["mean"], ls=ls, marker=marker, color=colour,
            mfc="none" if init else colour, ms=ms, lw=0.9 if init else 1.2, label=label)
    if g["trial"].nunique() > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=colour,
                        alpha=0.12 if init else BAND_ALPHA, lw=0)


def weight_spectra(trials: pd.DataFrame, spectra: pd.DataFrame) -> Figure:
    """Per setting (row): eigenvalues of W_hh in the complex plane with the unit circle (grey
    hollow = init, coloured = end, colour = seq_len), its singular values in decreasing order,
    and ρ(W_hh) (solid) and σ_max(W_hh) (dashed) at every stored snapshot.

    Args:
        trials: the trials table.
        spectra: :func:`rnn_diag.recurrent_spectra` rows with ``when`` ("init", "end" or an
            epoch as text): ``trial, when, layer, direction, gate, index, real, imag, modulus,
            singular_value``.

    The last layer (closest to the loss) and direction 0 are drawn. GRU/LSTM gate blocks get
    their own marker; ρ and σ_max over training are the largest over the gate blocks.
    """
    info = Trials.from_table(trials)
    require(spectra, "spectra", ["trial", "when", "index", "real", "imag", "modulus",
                                 "singular_value"])
    df = info.attach(spectra)
    df, n_layers = last_layer(df)
    require(df, "spectra", hint=" for the trials of this run")
    if "gate" not in df:
        df["gate"] = "hh"
    df["gate"] = df["gate"].astype(str)
    df["when"] = df["when"].astype(str)
    df["snap_epoch"] = [snapshot_epoch(w, info.info.at[t, "epochs_run"])
                        for w, t in zip(df["when"], df["trial"])]
    palette = seq_len_palette(info.seq_lens)
    settings = [v for v in info.settings if (df["setting"] == v).any()]
    notes = []
    if len(settings) > MAX_ROWS:
        notes.append(f"the first {MAX_ROWS} of {len(settings)} settings shown")
        settings = settings[:MAX_ROWS]
    gates = list(dict.fromkeys(zip(df["cell"].astype(str), df["gate"])))
    # markers on the singular values only while they can be told apart
    sv_marker = 3 if df["index"].max() < 32 else 0
    several_seeds = df.groupby(["setting", "seq_len"])["trial"].nunique().max() > 1
    with figure_style():
        fig, axes = new_figure(len(settings), 3, width=11.0, panel_height=2.7,
                               gridspec_kw=dict(width_ratios=[1.0, 1.25, 1.25]))
        for row, setting in zip(axes, settings):
            part = df[df["setting"] == setting]
            ax_eig, ax_sv, ax_rho = row
            ax_eig.add_patch(Circle((0, 0), 1.0, fill=False, color="black", lw=0.9, ls="-"))
            ax_sv.axhline(1.0, color="black", lw=0.9)
            ax_rho.axhline(1.0, color="black", lw=0.9)
            reach = 1.0
            init = part[part["when"] == "init"]
            end = part[part["when"] == "end"]
            for gate, g in init.groupby("gate", sort=False):
                ax_eig.plot(g["real"], g["imag"], _marker(gate), mfc="none", mec=MISSING_COLOUR,
                            ms=4.5, mew=0.8, ls="", label="_eig init")
                _singular_values(ax_sv, g, MISSING_COLOUR, "--", _marker(gate), sv_marker,
                                 "_sv init")
            for (seq_len, gate), g in end.groupby(["seq_len", "gate"], sort=False):
                colour = palette.get(seq_len, MISSING_COLOUR)
                ax_eig.plot(g["real"], g["imag"], _marker(gate), color=colour, ms=3.5,
                            alpha=0.85, ls="", label=f"_eig end seq_len={seq_len}")
                _singular_values(ax_sv, g, colour, "-", _marker(gate), sv_marker,
                                 f"_sv end seq_len={seq_len}")
            finite = part["modulus"][np.isfinite(part["modulus"])]
            if len(finite):
                reach = max(reach, float(finite.max()))
            lim = 1.12 * reach
            ax_eig.set_xlim(-lim, lim)
            ax_eig.set_ylim(-lim, lim)
            ax_eig.set_aspect("equal")
            ax_eig.set_ylabel(f"{info.setting_title(setting)}\n\nIm λ(W_hh)")
            ax_eig.set_xlabel("Re λ(W_hh)")
            ax_eig.set_title("eigenvalues, unit circle", fontsize=8.5)
            ax_sv.set_xlabel("index i (largest first)")
            ax_sv.set_ylabel("singular value σ_i(W_hh)")
            ax_sv.set_title("singular values", fontsize=8.5)
            top = part[part["index"] == 0]
            per_snap = top.groupby(["trial", "seq_len", "snap_epoch"])[["modulus",
                                                                        "singular_value"]].max()
            per_snap = per_snap.reset_index()
            for seq_len, g in per_snap.groupby("seq_len"):
                colour = palette.get(seq_len, MISSING_COLOUR)
                mean = g.groupby("snap_epoch")[["modulus", "singular_value"]].mean()
                mean = mean[np.isfinite(mean.index.to_numpy(dtype=float))]
                ax_rho.plot(mean.index, mean["modulus"], "-o", color=colour, ms=3.5, lw=1.3,
                            label=f"_rho seq_len={seq_len}")
                ax_rho.plot(mean.index, mean["singular_value"], "--s", color=colour, ms=3.5,
                            lw=1.3, label=f"_sigma seq_len={seq_len}")
            ax_rho.set_xlabel(f"{time_unit(trials)} (snapshot)")
            ax_rho.set_ylabel("ρ(W_hh), σ_max(W_hh)")
            ax_rho.set_title("spectral radius and norm over training", fontsize=8.5)
        handles = [Line2D([], [], color=palette[s], lw=2, label=f"seq_len={s}")
                   for s in info.seq_lens if (df["seq_len"] == s).any()]
        handles += [
            Line2D([], [], color=MISSING_COLOUR, marker="o", mfc="none", ls="--", ms=4,
                   label="at init"),
            Line2D([], [], color="black", marker="o", ls="-", ms=4, label="at end"),
            Line2D([], [], color="black", marker="o", ls="-", ms=3,
                   label="spectral radius ρ = max |λ|"),
            Line2D([], [], color="black", marker="s", ls="--", ms=3,
                   label="spectral norm σ_max"),
            Line2D([], [], color="black", lw=0.9, label="1 (unit circle)"),
        ]
        if len(gates) > 1:
            handles += [Line2D([], [], color="black", marker=_marker(g), ls="", ms=4,
                               label=f"{cell} gate block {g}") for cell, g in gates]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        if n_layers > 1:
            notes.insert(0, f"last of {n_layers} layers (closest to the loss)")
        if len(gates) > 1:
            notes.append("ρ and σ_max over training: the largest over the gate blocks")
        if several_seeds:
            notes.append("every seed's eigenvalues drawn; singular values, ρ and σ_max: mean "
                         "over seeds (bands: min-max)")
        add_note(fig, "; ".join(notes))
    return fig
