"""Figure 2: the gradient profile log10‖∂L/∂h_t‖ against the distance from the loss, one block of
panel rows per sequence length and one panel per setting in it (up to 4 a row, laid out as the
loss figure's), the first recorded epoch dashed and the last one solid, with theory
lines at the last epoch (Lyapunov slope, Pascanu bound).

The drawing is shared with figure 6 (Jacobian-product norms against distance), which has the
same axes and the same theory lines.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._data import Trials, downsample, last_layer, panel_layout, require
from .style import (
    BAND_ALPHA,
    MISSING_COLOUR,
    add_note,
    figure_style,
    new_figure,
    seq_len_palette,
)
from .theory import Snapshots

__all__ = ["gradient_profiles"]

#: Settings per panel row (more wrap over several rows, as in the loss figure), at most this many
#: sequence lengths (blocks of rows) and panels in all: beyond, evenly picked settings and
#: lengths are drawn and a note says how many.
_MAX_COLS = 4
_MAX_ROWS = 5
MAX_PANELS = 30
#: Points per drawn line: a T=1000 profile is smooth enough at this resolution and keeps the
#: figure small in SVG.
MAX_POINTS = 400


def profile_table(info: Trials, gradients: pd.DataFrame, metric: str,
                  state: str = "h") -> tuple[pd.DataFrame, int]:
    """Rows of ``metric`` for ``state`` of the last layer at each trial's first and last
    recorded epoch, with ``distance`` = T−1−t and ``when`` ("first" | "last"); plus the number
    of layers. Raises :class:`MissingData` when the metric was not recorded."""
    require(gradients, "gradients", ["trial", "epoch", "t", "metric", "value"])
    df = gradients[gradients["metric"] == metric]
    if "state" in df:
        df = df[df["state"] == state]
    hint = (" (Jacobian norms are recorded with probes.jacobians: estimate or exact)"
            if metric.startswith("jacobian") else "")
    require(df, "gradients", message=f"the 'gradients' table has no {metric!r} rows{hint}")
    df = info.attach(df)
    df, n_layers = last_layer(df)
    require(df, "gradients",
            message=f"the 'gradients' table has no {metric!r} rows for the trials of this run")
    epochs = df.groupby("trial")["epoch"].agg(["min", "max"])
    df = df.join(epochs, on="trial")
    first = df[df["epoch"] == df["min"]].assign(when="first")
    last = df[(df["epoch"] == df["max"]) & (df["max"] > df["min"])].assign(when="last")
    out = pd.concat([first, last], ignore_index=True)
    steps = out.groupby("trial")["t"].transform("max")
    out["distance"] = steps - out["t"]
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out.drop(columns=["min", "max"]), n_layers


def _aggregate(group: pd.DataFrame) -> pd.DataFrame:
    """Per distance over the seeds: mean/min/max of the finite values and whether any value is
    −inf (an exactly zero norm: underflow) or +inf (overflow)."""
    v = group["value"].to_numpy(dtype=float)
    finite = np.where(np.isfinite(v), v, np.nan)
    frame = pd.DataFrame({"distance": group["distance"].to_numpy(), "v": finite,
                          "neg": v == -np.inf, "pos": v == np.inf})
    g = frame.groupby("distance")
    return pd.DataFrame({"mean": g["v"].mean(), "min": g["v"].min(), "max": g["v"].max(),
                         "neg": g["neg"].any(), "pos": g["pos"].any()})


def _epoch_text(epochs: np.ndarray, unit: str = "epoch") -> str:
    """The epoch(s) of one role ("first" or "last") over the trials: "epoch 0", "epochs 5–99"
    (``unit`` "step" for a recording: "steps 0–400")."""
    lo, hi = int(np.min(epochs)), int(np.max(epochs))
    return f"{unit} {lo}" if lo == hi else f"{unit}s {lo}–{hi}"


def _ylim(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = max(0.06 * (hi - lo), 0.3)
    return lo - pad, hi + pad


def _pick(items: list, cap: int) -> list:
    """At most ``cap`` of ``items``, evenly spaced, the first and the last kept."""
    return [items[i] for i in downsample(np.arange(len(items)), cap)]


#: How each drawn role looks. Colour = the row's seq_len for the measurements, dark grey for
#: the theory lines, so a theory line is never mistaken for a measured one.
THEORY_COLOUR = "#3a3a3a"
_FIRST = {"ls": (0, (4, 2)), "lw": 1.0, "alpha": 0.6}
_LAST = {"ls": "-", "lw": 2.0, "alpha": 1.0}
# thinner than the measured lines and drawn over them: where they agree, both stay visible
_LYAPUNOV = {"ls": "-.", "lw": 0.9, "color": THEORY_COLOUR}
_PASCANU = {"ls": (0, (1, 1.5)), "lw": 1.2, "color": THEORY_COLOUR}


def _draw_measured(ax: Axes, stats: pd.DataFrame, colour: str, when: str, seq_len: int,
                   band: bool) -> bool:
    """One measured line (mean over seeds, min-max band when ``band``) with the ±inf of the
    full-resolution profile marked at the panel's edge; True when any was marked."""
    style = _FIRST if when == "first" else _LAST
    idx = downsample(stats.index.to_numpy(), MAX_POINTS)
    s = stats.iloc[idx]
    x = s.index.to_numpy(dtype=float)
    ax.plot(x, s["mean"], color=colour, **style, label=f"_measured {when} seq_len={seq_len}",
            zorder=3 if when == "last" else 2)
    if band:
        ax.fill_between(x, s["min"], s["max"], color=colour, lw=0,
                        alpha=BAND_ALPHA * (1.0 if when == "last" else 0.6))
    marked = False
    for flag, y, marker in (("neg", 0.0, "v"), ("pos", 1.0, "^")):
        d = stats.index[stats[flag].to_numpy()].to_numpy(dtype=float)
        if d.size:
            marked = True
            d = d[downsample(d, 60)]
            ax.plot(d, np.full(d.size, y), marker, color=colour, ms=3.5, alpha=style["alpha"],
                    transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"_{flag}inf {when} seq_len={seq_len}")
    return marked


def _fit_settings(settings: list, n_blocks: int, info: Trials) -> list:
    """``settings``, or as many of them as fit in :data:`MAX_PANELS` panels with ``n_blocks``
    seq_len blocks (evenly picked, the first and the last kept)."""
    for m in range(len(settings), 0, -1):
        picked = _pick(settings, m)
        rows, cols, _ = panel_layout(info, picked, _MAX_COLS)
        if m == 1 or rows * cols * n_blocks <= MAX_PANELS:
            return picked
    return settings


def draw_profiles(info: Trials, df: pd.DataFrame, snapshots: Snapshots | None, *,
                  ylabel: str, xlabel: str = "distance to the loss T−1−t (steps)",
                  ) -> tuple[Figure, list[str]]:
    """The grid of figures 2 and 6: one block of panel rows per seq_len (its own y scale, x
    from 0 to T−1), in it one panel per setting laid out as the loss figure's
    (:func:`panel_layout`: up to 4 columns, wrapped over rows); in each panel the first
    recorded epoch dashed and light, the last one solid (mean over seeds, min-max band), and at
    the last epoch the theory lines in dark grey: Lyapunov slope dash-dotted, Pascanu bound
    dotted. Returns the figure and the notes to add."""
    palette = seq_len_palette(info.seq_lens)
    all_settings = [v for v in info.settings if (df["setting"] == v).any()]
    all_lens = sorted(int(s) for s in df["seq_len"].unique())
    seq_lens = _pick(all_lens, _MAX_ROWS)
    settings = _fit_settings(all_settings, len(seq_lens), info)
    block, ncols, where = panel_layout(info, settings, _MAX_COLS)
    wrapped = block > 1
    nrows = block * len(seq_lens)
    used_lyap, used_pascanu = set(), set()
    marked_inf = seeds = False
    fig, axes = new_figure(nrows, ncols, panel_height=2.2 if ncols > 1 else 2.8)
    filled = set(where.values())
    for (r, c), ax in np.ndenumerate(axes):
        if (r % block, c) not in filled:
            ax.set_visible(False)
    for b, seq_len in enumerate(seq_lens):
        colour = palette.get(seq_len, MISSING_COLOUR)
        rows = df[df["seq_len"] == seq_len]
        top = b * block
        first_ax: Axes = axes[top, 0]
        for setting in settings:
            r, c = where[setting]
            ax: Axes = axes[top + r, c]
            if ax is not first_ax:  # one x and one y scale per seq_len block
                ax.sharex(first_ax)
                ax.sharey(first_ax)
            if c > 0:
                ax.tick_params(labelleft=False)
            below = (r + 1, c) in filled
            if below:  # the panel under it shows the ticks of the block's x scale
                ax.tick_params(labelbottom=False)
            if b == 0 or wrapped:
                ax.set_title(info.setting_title(setting), fontsize=9)
            part = rows[rows["setting"] == setting]
            if part.empty:
                ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center",
                        va="center", fontsize=8, color="#777777")
                continue
            whens = [w for w in ("first", "last") if (part["when"] == w).any()]
            for when in whens:
                group = part[part["when"] == when]
                trials = sorted(group["trial"].unique())
                seeds |= len(trials) > 1
                stats = _aggregate(group)
                marked_inf |= _draw_measured(ax, stats, colour, when, seq_len, len(trials) > 1)
            # theory at the latest epoch drawn (the last one, or the only one recorded)
            if snapshots is None:
                continue
            start = stats["mean"].dropna()
            if start.empty:
                continue
            d0, y0 = float(start.index[0]), float(start.iloc[0])
            dmax = float(stats.index.max())
            epoch = float(group["epoch"].median())
            for name, slope_of, style, used in (
                    ("lyapunov", snapshots.lyapunov_slope, _LYAPUNOV, used_lyap),
                    ("pascanu", snapshots.pascanu_slope, _PASCANU, used_pascanu)):
                slope, names = slope_of(trials, epoch)
                if math.isfinite(slope):
                    used.update(names)
                    ax.plot([d0, dmax], [y0, y0 + slope * (dmax - d0)], **style, zorder=4,
                            label=f"_{name} seq_len={seq_len}")
        # one y scale per block, from the measurements only (a theory line may leave the panel)
        lo, hi = _ylim(rows[rows["setting"].isin(settings)]["value"].to_numpy(dtype=float))
        first_ax.set_ylim(lo, hi)
        dmax = rows["distance"].max()
        first_ax.set_xlim(0, float(dmax) if dmax > 0 else 1.0)
        for r in range(block):
            axes[top + r, 0].set_ylabel(f"T = {seq_len}", color=colour, fontweight="bold")
    short = ncols > 3  # a long label would run into the next panel's
    for (r, c) in filled:  # the bottom panel of each column of the last block
        if (r + 1, c) not in filled:
            axes[nrows - block + r, c].set_xlabel("distance T−1−t (steps)" if short else xlabel)
    fig.supylabel(ylabel, fontsize=9)
    fig.align_ylabels(axes[:, 0])
    handles = []
    unit = info.unit
    for when, style in (("first", _FIRST), ("last", _LAST)):
        epochs = df.loc[df["when"] == when, "epoch"].to_numpy()
        if epochs.size:
            handles.append(Line2D([], [], color=THEORY_COLOUR, **style,
                                  label=f"measured, {when} recorded {unit} "
                                        f"({_epoch_text(epochs, unit)})"))
    if used_lyap:
        handles.append(Line2D([], [], **_LYAPUNOV, label=f"Lyapunov slope λ₁/ln10 (last {unit})"))
    if used_pascanu:
        handles.append(Line2D([], [], **_PASCANU,
                              label=f"Pascanu bound σ_max^(T−1−t) (last {unit})"))
    if marked_inf:
        handles.append(Line2D([], [], color=THEORY_COLOUR, ls="", marker="v", ms=4,
                              label="exact zero (−∞)"))
        handles.append(Line2D([], [], color=THEORY_COLOUR, ls="", marker="^", ms=4,
                              label="overflow (+∞)"))
    fig.legend(handles=handles, loc="outside upper center", frameon=False,
               ncols=min(len(handles), 3 if ncols > 2 else 2))
    notes = ["rows: sequence length T (colour), each row with its own y scale" if block == 1
             else f"rows: sequence length T (colour) in blocks of {block} rows, each block with "
                  "its own y scale"]
    if len(settings) < len(all_settings):
        notes.append(f"{len(settings)} of {len(all_settings)} settings shown")
    if len(seq_lens) < len(all_lens):
        notes.append(f"{len(seq_lens)} of {len(all_lens)} sequence lengths shown")
    if seeds:
        notes.append("lines: mean over seeds, bands: min-max")
    used = sorted(used_lyap | used_pascanu, key=lambda w: (w != "init", w != "end", w))
    if used:
        notes.append(f"theory lines from the snapshot nearest the last epoch ({', '.join(used)})")
    return fig, notes


def gradient_profiles(trials: pd.DataFrame, gradients: pd.DataFrame,
                      spectra: pd.DataFrame | None = None,
                      lyapunov: pd.DataFrame | None = None) -> Figure:
    """log10‖∂L/∂h_t‖ (batch mean, decades) against the distance T−1−t from the loss: one row
    block of panel rows per seq_len (each with its own y scale, so a T=10 profile is not
    flattened by a T=1000 one), one panel per setting in it (up to 4 a row, wrapped as in the
    loss figure, each panel titled when wrapped), each trial's first recorded epoch dashed and
    its last one solid.

    Args:
        trials: the trials table.
        gradients: long table ``trial, epoch, layer, direction, state, t, metric, value``;
            the rows with ``metric == "total_mean"``, ``state == "h"`` of the last layer,
            direction 0, are drawn.
        spectra: optional ``recurrent_spectra`` rows with ``when``: the Pascanu bound
            σ_max^(T−1−t) (Elman RNN only).
        lyapunov: optional ``when, layer, index, exponent`` (nats/step): the slope λ₁/ln10.

    The theory lines are drawn for the last recorded epoch. ±inf values (an exact zero or an
    overflow) are marked at the panel's lower/upper edge; long profiles are drawn with at most
    400 points per line; at most 5 sequence lengths and 30 panels (evenly picked settings
    beyond, said in the note).
    """
    info = Trials.from_table(trials)
    df, n_layers = profile_table(info, gradients, "total_mean")
    snapshots = Snapshots(info.info, spectra, lyapunov)
    with figure_style():
        fig, notes = draw_profiles(info, df, snapshots, ylabel="log10 ‖∂L/∂h_t‖ (decades)")
        if n_layers > 1:
            notes.insert(0, f"last of {n_layers} layers (closest to the loss)")
        add_note(fig, "; ".join(notes))
    return fig
