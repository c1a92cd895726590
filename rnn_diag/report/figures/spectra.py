"""Figure 5: the recurrent weight matrix W_hh — eigenvalues in the complex plane with the unit
circle (init and end), singular values, and spectral radius ρ and spectral norm σ_max over
training.

For a diagonal scan (:mod:`.cells`) the row shows the diagonal of its recurrence instead: the
LRU's fixed eigenvalues λ, or the decays a at zero input of minGRU and the selective SSM (whose
decay at a step depends on its input; their average over the training inputs is the Lyapunov
spectrum). A diagonal matrix's singular values are its moduli and σ_max = ρ, so those rows show
the moduli and one line over training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from ._data import (
    Trials,
    last_layer,
    panel_layout,
    require,
    show_filled,
    snapshot_epoch,
    time_unit,
)
from .cells import DIAGONAL_GATES, input_dependent, is_diagonal_gate
from .style import BAND_ALPHA, MISSING_COLOUR, add_note, figure_style, new_figure, seq_len_palette

__all__ = ["weight_spectra"]

#: Marker of each gate block (rnn: hh; gru: r, z, n; lstm: i, f, g, o; scans: one diagonal).
GATE_MARKERS = {"hh": "o", "r": "s", "z": "^", "n": "o", "i": "s", "f": "^", "g": "o",
                "o": "D", "lambda": "o", "a(x=0)": "o"}
#: Up to this many settings, a row each with eigenvalues, singular values and ρ/σ_max over
#: training; more: the eigenvalue planes only, in a grid (cell × lag gives one column per lag).
FULL_ROWS = 6
#: At most this many settings (panels) are drawn.
MAX_PANELS = 30
#: Eigenvalues per trial and gate block above which the points get small and translucent (an
#: SSM layer has d_inner·d_state = 1024 of them).
MANY = 64


def _marker(gate: str) -> str:
    return GATE_MARKERS.get(str(gate), "o")


def _symbol(part: pd.DataFrame) -> str:
    """What the points of a setting are: "λ(W_hh)", "λ" (fixed diagonal) or "a(x=0)"."""
    gates = set(part["gate"])
    if gates == {"lambda"}:
        return "λ"
    if gates and gates <= set(DIAGONAL_GATES):
        return "a(x=0)"
    return "λ(W_hh)"


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


def _eigenvalues(ax: Axes, part: pd.DataFrame, palette: dict) -> None:
    """The unit circle, init (grey hollow) and end (colour = seq_len) points, square limits
    covering the circle and every finite point. Many points are drawn small and translucent."""
    ax.add_patch(Circle((0, 0), 1.0, fill=False, color="black", lw=0.9, ls="-"))
    per_trial = part.groupby(["trial", "when", "gate"]).size()
    many = len(per_trial) > 0 and per_trial.max() > MANY
    for gate, g in part[part["when"] == "init"].groupby("gate", sort=False):
        if many:
            ax.plot(g["real"], g["imag"], ".", color=MISSING_COLOUR, ms=2.0, alpha=0.3,
                    mew=0, ls="", label="_eig init")
        else:
            ax.plot(g["real"], g["imag"], _marker(gate), mfc="none", mec=MISSING_COLOUR,
                    ms=4.5, mew=0.8, ls="", label="_eig init")
    end = part[part["when"] == "end"]
    for (seq_len, gate), g in end.groupby(["seq_len", "gate"], sort=False):
        colour = palette.get(seq_len, MISSING_COLOUR)
        if many:
            ax.plot(g["real"], g["imag"], ".", color=colour, ms=2.5, alpha=0.45, mew=0,
                    ls="", label=f"_eig end seq_len={seq_len}")
        else:
            ax.plot(g["real"], g["imag"], _marker(gate), color=colour, ms=3.5, alpha=0.85,
                    ls="", label=f"_eig end seq_len={seq_len}")
    reach = 1.0
    finite = part["modulus"][np.isfinite(part["modulus"])]
    if len(finite):
        reach = max(reach, float(finite.max()))
    lim = 1.12 * reach
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")


def _eigen_title(symbol: str) -> str:
    return {"λ": "fixed eigenvalues λ, unit circle",
            "a(x=0)": "decays a at zero input, unit circle"}.get(symbol, "eigenvalues, unit circle")


def _over_training(ax: Axes, part: pd.DataFrame, palette: dict, diagonal: bool) -> None:
    """ρ (solid) and σ_max (dashed; left out for a diagonal, where it equals ρ) per snapshot,
    mean over seeds, per seq_len."""
    top = part[part["index"] == 0]
    per_snap = top.groupby(["trial", "seq_len", "snap_epoch"])[["modulus",
                                                                "singular_value"]].max()
    per_snap = per_snap.reset_index()
    for seq_len, g in per_snap.groupby("seq_len"):
        colour = palette.get(seq_len, MISSING_COLOUR)
        mean = g.groupby("snap_epoch")[["modulus", "singular_value"]].mean()
        mean = mean[np.isfinite(mean.index.to_numpy(dtype=float))]
        ax.plot(mean.index, mean["modulus"], "-o", color=colour, ms=3.5, lw=1.3,
                label=f"_rho seq_len={seq_len}")
        if not diagonal:
            ax.plot(mean.index, mean["singular_value"], "--s", color=colour, ms=3.5,
                    lw=1.3, label=f"_sigma seq_len={seq_len}")


def _full_rows(axes, df: pd.DataFrame, settings: list, info: Trials, palette: dict,
               unit: str) -> None:
    """One row per setting: eigenvalue plane, singular values (moduli), ρ/σ_max over training."""
    sv_marker = 3 if df["index"].max() < 32 else 0
    for row, setting in zip(axes, settings):
        part = df[df["setting"] == setting]
        ax_eig, ax_sv, ax_rho = row
        symbol = _symbol(part)
        diagonal = symbol != "λ(W_hh)"
        ax_sv.axhline(1.0, color="black", lw=0.9)
        ax_rho.axhline(1.0, color="black", lw=0.9)
        _eigenvalues(ax_eig, part, palette)
        for gate, g in part[part["when"] == "init"].groupby("gate", sort=False):
            _singular_values(ax_sv, g, MISSING_COLOUR, "--", _marker(gate), sv_marker,
                             "_sv init")
        end = part[part["when"] == "end"]
        for (seq_len, gate), g in end.groupby(["seq_len", "gate"], sort=False):
            _singular_values(ax_sv, g, palette.get(seq_len, MISSING_COLOUR), "-",
                             _marker(gate), sv_marker, f"_sv end seq_len={seq_len}")
        ax_eig.set_ylabel(f"{info.setting_title(setting)}\n\nIm {symbol}")
        ax_eig.set_xlabel(f"Re {symbol}")
        ax_eig.set_title(_eigen_title(symbol), fontsize=8.5)
        ax_sv.set_xlabel("index i (largest first)")
        if diagonal:
            ax_sv.set_ylabel(f"|{symbol}_i| (= singular value σ_i)")
            ax_sv.set_title("moduli of the diagonal", fontsize=8.5)
        else:
            ax_sv.set_ylabel("singular value σ_i(W_hh)")
            ax_sv.set_title("singular values", fontsize=8.5)
        _over_training(ax_rho, part, palette, diagonal)
        ax_rho.set_xlabel(f"{unit} (snapshot)")
        if diagonal:
            ax_rho.set_ylabel(f"ρ = σ_max = max |{symbol}|")
            ax_rho.set_title("largest modulus over training", fontsize=8.5)
        else:
            ax_rho.set_ylabel("ρ(W_hh), σ_max(W_hh)")
            ax_rho.set_title("spectral radius and norm over training", fontsize=8.5)


def _compact(df: pd.DataFrame, settings: list, info: Trials, palette: dict) -> Figure:
    """The eigenvalue planes only, one panel per setting laid out by :func:`panel_layout`."""
    nrows, ncols, where = panel_layout(info, settings, max_cols=5)
    fig, axes = new_figure(nrows, ncols, panel_height=2.0, width=min(11.0, 3.2 + 1.65 * ncols))
    show_filled(axes, where)
    for setting in settings:
        r, c = where[setting]
        ax = axes[r, c]
        part = df[df["setting"] == setting]
        symbol = _symbol(part)
        _eigenvalues(ax, part, palette)
        ax.set_title(info.setting_title(setting), fontsize=7.5)
        ax.set_xlabel(f"Re {symbol}", fontsize=7.5, labelpad=1)
        ax.set_ylabel(f"Im {symbol}", fontsize=7.5, labelpad=1)
        ax.tick_params(labelsize=6.5)
    return fig


def weight_spectra(trials: pd.DataFrame, spectra: pd.DataFrame) -> Figure:
    """Per setting (row): eigenvalues of W_hh in the complex plane with the unit circle (grey
    hollow = init, coloured = end, colour = seq_len), its singular values in decreasing order,
    and ρ(W_hh) (solid) and σ_max(W_hh) (dashed) at every stored snapshot. With more than
    :data:`FULL_ROWS` settings, only the eigenvalue planes, one panel per setting in a grid.

    Args:
        trials: the trials table.
        spectra: :func:`rnn_diag.recurrent_spectra` rows with ``when`` ("init", "end" or an
            epoch as text): ``trial, when, layer, direction, gate, index, real, imag, modulus,
            singular_value``.

    The last layer (closest to the loss) and direction 0 are drawn. GRU/LSTM gate blocks get
    their own marker; ρ and σ_max over training are the largest over the gate blocks. A
    diagonal scan's rows (``gate`` "lambda": the LRU's fixed λ; "a(x=0)": an input-dependent
    decay at zero input) are labelled as such, show the moduli (its singular values) and ρ
    only (σ_max = ρ); more than 64 points per trial are drawn small and translucent.
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
    compact = len(settings) > FULL_ROWS
    if len(settings) > MAX_PANELS:
        notes.append(f"the first {MAX_PANELS} of {len(settings)} settings shown")
        settings = settings[:MAX_PANELS]
    df = df[df["setting"].isin(settings)]
    gates = list(dict.fromkeys(zip(df["cell"].astype(str), df["gate"])))
    several_seeds = df.groupby(["setting", "seq_len"])["trial"].nunique().max() > 1
    diagonal = {g for _, g in gates if is_diagonal_gate(g)}
    with figure_style():
        if compact:
            fig = _compact(df, settings, info, palette)
        else:
            fig, axes = new_figure(len(settings), 3, width=11.0, panel_height=2.7,
                                   gridspec_kw=dict(width_ratios=[1.0, 1.25, 1.25]))
            _full_rows(axes, df, settings, info, palette, time_unit(trials))
        handles = [Line2D([], [], color=palette[s], lw=2, label=f"seq_len={s}")
                   for s in info.seq_lens if (df["seq_len"] == s).any()]
        handles += [
            Line2D([], [], color=MISSING_COLOUR, marker="o", mfc="none", ls="--", ms=4,
                   label="at init"),
            Line2D([], [], color="black", marker="o", ls="-", ms=4, label="at end"),
        ]
        if not compact:
            handles.append(Line2D([], [], color="black", marker="o", ls="-", ms=3,
                                  label="spectral radius ρ = max |λ|"))
            if len(diagonal) < len({g for _, g in gates}):
                handles.append(Line2D([], [], color="black", marker="s", ls="--", ms=3,
                                      label="spectral norm σ_max"))
        handles.append(Line2D([], [], color="black", lw=0.9, label="1 (unit circle)"))
        blocks = [(cell, g) for cell, g in gates if not is_diagonal_gate(g)]
        if len({_marker(g) for _, g in blocks}) > 1:
            handles += [Line2D([], [], color="black", marker=_marker(g), ls="", ms=4,
                               label=f"{cell} gate block {g}") for cell, g in blocks]
        for cell, g in gates:
            if is_diagonal_gate(g):
                what = ("fixed eigenvalues λ" if g == "lambda" else
                        "a at zero input" + (" (input-dependent)" if input_dependent(cell)
                                             else ""))
                handles.append(Line2D([], [], color="black", marker=".", ls="", ms=5,
                                      label=f"{cell}: {what}"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        if n_layers > 1:
            notes.insert(0, f"last of {n_layers} layers (closest to the loss)")
        if compact:
            notes.append(f"more than {FULL_ROWS} settings: eigenvalues only (ρ and σ_max at "
                         "init: the trials table)")
        elif len({g for _, g in gates}) > 1 and len(blocks) > 1:
            notes.append("ρ and σ_max over training: the largest over the gate blocks")
        if "a(x=0)" in diagonal:
            notes.append("a(x=0): the decay of an input-dependent scan at zero input; the decay "
                         "applied at a step depends on its input (its average over the training "
                         "inputs: the Lyapunov spectrum)")
        if diagonal and not compact:
            notes.append("for a diagonal recurrence the singular values are the moduli and "
                         "σ_max = ρ")
        if several_seeds:
            notes.append("every seed's eigenvalues drawn" + (
                "" if compact else "; singular values, ρ and σ_max: mean over seeds "
                                   "(bands: min-max)"))
        add_note(fig, "; ".join(notes))
    return fig
