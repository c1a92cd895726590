"""Figure 2: the gradient profile log10‖∂L/∂h_t‖ against the distance from the loss, at the
first and the last recorded epoch, with theory lines (Lyapunov slope, Pascanu bound).

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

from ._data import Trials, downsample, last_layer, require
from .style import BAND_ALPHA, add_note, figure_style, new_figure, seq_len_palette
from .theory import Snapshots

__all__ = ["gradient_profiles"]

_MAX_COLS = 4
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


def _epoch_text(epochs: np.ndarray) -> str:
    lo, hi = int(epochs.min()), int(epochs.max())
    if hi == 0:
        return "at init (epoch 0)"
    return f"after {lo} epochs" if lo == hi else f"after {lo}–{hi} epochs"


def _ylim(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = max(0.06 * (hi - lo), 0.3)
    return lo - pad, hi + pad


def draw_profiles(info: Trials, df: pd.DataFrame, snapshots: Snapshots | None, *,
                  ylabel: str, quantity: str,
                  xlabel: str = "distance to the loss T−1−t (steps)",
                  ) -> tuple[Figure, list[str]]:
    """The grid of figures 2 and 6: rows = first/last epoch (per block of variants), columns
    = variants, one line per seq_len (mean over seeds, min-max band), theory lines dashed
    (Lyapunov) and dotted (Pascanu). Returns the figure and the notes to add."""
    palette = seq_len_palette(info.seq_lens)
    variants = [v for v in info.variants if (df["variant"] == v).any()]
    whens = [w for w in ("first", "last") if (df["when"] == w).any()]
    ncols = min(_MAX_COLS, len(variants))
    blocks = math.ceil(len(variants) / ncols)
    nrows = blocks * len(whens)
    lo, hi = _ylim(df["value"].to_numpy(dtype=float))
    used_lyap, used_pascanu, marked_inf, seeds = set(), set(), False, False
    fig, axes = new_figure(nrows, ncols, sharex=True, sharey=True,
                           panel_height=2.3 if ncols > 1 else 3.0)
    for ax in axes.ravel():
        ax.set_visible(False)
    for i, variant in enumerate(variants):
        block, col = divmod(i, ncols)
        for j, when in enumerate(whens):
            ax: Axes = axes[block * len(whens) + j, col]
            part = df[(df["variant"] == variant) & (df["when"] == when)]
            if part.empty:
                continue
            ax.set_visible(True)
            ax.set_title(f"{info.variant_title(variant)}\n{_epoch_text(part['epoch'].unique())}",
                         fontsize=8.5)
            # longest first, so the shorter profiles (often on the same line) stay visible
            for seq_len, group in sorted(part.groupby("seq_len"), key=lambda g: -g[0]):
                colour = palette.get(seq_len, "#7f7f7f")
                stats = _aggregate(group)
                idx = downsample(stats.index.to_numpy(), MAX_POINTS)
                s = stats.iloc[idx]
                x = s.index.to_numpy(dtype=float)
                ax.plot(x, s["mean"], color=colour, lw=1.5, label=f"_measured seq_len={seq_len}")
                trials = sorted(group["trial"].unique())
                if len(trials) > 1:
                    seeds = True
                    ax.fill_between(x, s["min"], s["max"], color=colour, alpha=BAND_ALPHA, lw=0)
                # infinities of the full-resolution profile, marked at the panel's edge
                for flag, y, marker in (("neg", 0.0, "v"), ("pos", 1.0, "^")):
                    d = stats.index[stats[flag].to_numpy()].to_numpy(dtype=float)
                    if d.size:
                        marked_inf = True
                        d = d[downsample(d, 60)]
                        ax.plot(d, np.full(d.size, y), marker, color=colour, ms=3.5,
                                transform=ax.get_xaxis_transform(), clip_on=False,
                                label=f"_{flag}inf seq_len={seq_len}")
                if snapshots is None:
                    continue
                start = stats["mean"].dropna()
                if start.empty:
                    continue
                d0, y0 = float(start.index[0]), float(start.iloc[0])
                dmax = float(stats.index.max())
                epoch = float(group["epoch"].median())
                for name, slope_of, style, used in (
                        ("lyapunov", snapshots.lyapunov_slope, (0, (5, 3)), used_lyap),
                        ("pascanu", snapshots.pascanu_slope, ":", used_pascanu)):
                    slope, names = slope_of(trials, epoch)
                    if math.isfinite(slope):
                        used.update(names)
                        ax.plot([d0, dmax], [y0, y0 + slope * (dmax - d0)], ls=style,
                                color=colour, lw=1.1, alpha=0.9,
                                label=f"_{name} seq_len={seq_len}")
            ax.set_ylim(lo, hi)
            ax.set_xlim(left=0)
    for ax in axes.ravel():
        if ax.get_visible():
            # a long label would run into the next panel's
            ax.set_xlabel(xlabel if ncols <= 3 else "distance T−1−t (steps)")
            ax.xaxis.set_tick_params(labelbottom=True)
    for row in axes:
        visible = [ax for ax in row if ax.get_visible()]
        if visible:
            visible[0].set_ylabel(ylabel)
    handles = [Line2D([], [], color=palette[s], lw=2, label=f"seq_len={s}")
               for s in info.seq_lens if (df["seq_len"] == s).any()]
    handles.append(Line2D([], [], color="black", lw=1.5, label=f"measured {quantity}"))
    if used_lyap:
        handles.append(Line2D([], [], color="black", ls=(0, (5, 3)), lw=1.1,
                              label="Lyapunov slope λ₁/ln10"))
    if used_pascanu:
        handles.append(Line2D([], [], color="black", ls=":", lw=1.1,
                              label="Pascanu bound σ_max^(T−1−t)"))
    if marked_inf:
        handles.append(Line2D([], [], color="black", ls="", marker="v", ms=4,
                              label="exact zero (−∞)"))
        handles.append(Line2D([], [], color="black", ls="", marker="^", ms=4,
                              label="overflow (+∞)"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    notes = []
    if seeds:
        notes.append("lines: mean over seeds, bands: min-max")
    used = sorted(used_lyap | used_pascanu, key=lambda w: (w != "init", w != "end", w))
    if used:
        notes.append(f"theory lines from the snapshot nearest each epoch ({', '.join(used)})")
    return fig, notes


def gradient_profiles(trials: pd.DataFrame, gradients: pd.DataFrame,
                      spectra: pd.DataFrame | None = None,
                      lyapunov: pd.DataFrame | None = None) -> Figure:
    """log10‖∂L/∂h_t‖ (batch mean, decades) against the distance T−1−t from the loss, one
    line per seq_len, one column per variant, at each trial's first and last recorded epoch.

    Args:
        trials: the trials table.
        gradients: long table ``trial, epoch, layer, direction, state, t, metric, value``;
            the rows with ``metric == "total_mean"``, ``state == "h"`` of the last layer,
            direction 0, are drawn.
        spectra: optional ``recurrent_spectra`` rows with ``when``: the Pascanu bound
            σ_max^(T−1−t) (Elman RNN only).
        lyapunov: optional ``when, layer, index, exponent`` (nats/step): the slope λ₁/ln10.

    ±inf values (an exact zero or an overflow) are marked at the panel's lower/upper edge;
    long profiles are drawn with at most 400 points per line.
    """
    info = Trials.from_table(trials)
    df, n_layers = profile_table(info, gradients, "total_mean")
    snapshots = Snapshots(info.info, spectra, lyapunov)
    with figure_style():
        fig, notes = draw_profiles(info, df, snapshots, ylabel="log10 ‖∂L/∂h_t‖ (decades)",
                                   quantity="log10 ‖∂L/∂h_t‖")
        if n_layers > 1:
            notes.insert(0, f"last of {n_layers} layers (closest to the loss)")
        add_note(fig, "; ".join(notes))
    return fig
