"""Figure 3: per trial, a heatmap of log10‖∂L/∂h_t‖ over (recorded epoch, distance from the
loss): how the gradient profile changes during training."""

from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._data import Trials, last_layer, require, time_unit
from .style import add_note, figure_style, new_figure, seq_len_palette

__all__ = ["gradient_heatmaps"]

#: At most this many trials get a panel (a 48-trial sweep shows all of them).
MAX_PANELS = 48
#: Columns (distance bins) of one heatmap; longer profiles are averaged in log space per bin.
MAX_BINS = 150
_WRAP = 6


def _binned(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[epochs, bins]`` mean log10 norm (NaN where no finite value), the bin edges in
    distance and the epochs."""
    T = int(part["t"].max()) + 1
    epochs = np.sort(part["epoch"].unique())
    grid = np.full((len(epochs), T), np.nan)
    rows = np.searchsorted(epochs, part["epoch"].to_numpy())
    cols = T - 1 - part["t"].to_numpy(dtype=int)
    v = part["value"].to_numpy(dtype=float)
    grid[rows, cols] = np.where(np.isfinite(v), v, np.nan)
    nbins = min(T, MAX_BINS)
    edges = np.linspace(0, T, nbins + 1)
    starts = np.unique(np.ceil(edges[:-1] - 1e-9).astype(int))  # first step of each bin
    edges = np.append(starts, T).astype(float)
    ok = np.isfinite(grid)
    sums = np.add.reduceat(np.where(ok, grid, 0.0), starts, axis=1)
    counts = np.add.reduceat(ok.astype(float), starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return binned, edges - 0.5, epochs


def _colour_bar(fig: Figure, mesh, cax, orientation: str):
    bar = fig.colorbar(mesh, cax=cax, orientation=orientation)
    bar.ax.tick_params(labelsize=6, length=2, pad=1)
    bar.locator = MaxNLocator(4)
    bar.update_ticks()
    bar.outline.set_visible(False)
    return bar


def _layout(order: pd.DataFrame, seq_lens: tuple[int, ...]
            ) -> tuple[list[tuple[int, int]], int, int, bool]:
    """Panel position of each trial: rows = (setting, seed), columns = seq_len when 2..8
    lengths, else a plain wrapped grid of 6 columns."""
    if 2 <= len(seq_lens) <= 8:
        keys = list(dict.fromkeys(zip(order["setting_rank"], order["seed"])))
        pos = [(keys.index((r, s)), seq_lens.index(L))
               for r, s, L in zip(order["setting_rank"], order["seed"], order["seq_len"])]
        return pos, len(keys), len(seq_lens), True
    ncols = min(_WRAP, len(order))
    return ([divmod(i, ncols) for i in range(len(order))], math.ceil(len(order) / ncols), ncols,
            False)


def gradient_heatmaps(trials: pd.DataFrame, gradients: pd.DataFrame) -> Figure:
    """One small heatmap per trial: colour = log10‖∂L/∂h_t‖ (batch mean, decades, last layer),
    x = distance from the loss T−1−t (steps), y = recorded epoch (0 = init, at the bottom).

    Args:
        trials: the trials table.
        gradients: long table; rows with ``metric == "total_mean"``, ``state == "h"``.

    Panels are laid out with one column per seq_len (when there are 2 to 8 lengths) sharing one
    colour scale (its bar under the column), because the range spans a few decades at T=10 and
    hundreds at T=1000; otherwise each panel has its own scale and bar. Profiles longer than
    150 steps are averaged over bins of steps (in log space). Cells with no finite value (an
    exact zero or an overflow) are light grey. At most 48 trials are shown (one seed per
    setting first).
    """
    info = Trials.from_table(trials)
    require(gradients, "gradients", ["trial", "epoch", "t", "metric", "value"])
    df = gradients[gradients["metric"] == "total_mean"]
    if "state" in df:
        df = df[df["state"] == "h"]
    df = info.attach(df)
    df, n_layers = last_layer(df)
    require(df, "gradients", hint=": no 'total_mean' rows for the trials of this run")
    order = info.info.loc[info.info.index.isin(df["trial"].unique())].copy()
    order["seed_rank"] = order.groupby(["setting_rank", "seq_len"])["seed"].rank(method="first")
    notes = []
    if len(order) > MAX_PANELS:
        notes.append(f"{MAX_PANELS} of {len(order)} trials shown (the first seeds of each "
                     "setting first)")
        order = order.sort_values(["seed_rank", "setting_rank", "seq_len"]).head(MAX_PANELS)
    order = order.sort_values(["setting_rank", "seed", "seq_len"])
    seq_lens = tuple(sorted(order["seq_len"].unique()))
    positions, nrows, ncols, structured = _layout(order, seq_lens)
    palette = seq_len_palette(info.seq_lens)
    several_seeds = order.groupby(["setting_rank", "seq_len"]).size().max() > 1
    cmap = mpl.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    groups = dict(tuple(df.groupby("trial")))
    binned = {trial: _binned(groups[trial]) for trial in order.index}
    # one colour scale per column (one seq_len) in the structured layout: the trials of a
    # column are directly comparable and 3 colour bars draw much faster than 48
    by_column = structured
    scales = {}
    for (_, c), trial in zip(positions, order.index):
        key = c if by_column else trial
        z = binned[trial][0]
        finite = z[np.isfinite(z)]
        if finite.size:
            lo, hi = scales.get(key, (np.inf, -np.inf))
            scales[key] = (min(lo, float(finite.min())), max(hi, float(finite.max())))
    bottom = 1.35 if by_column else 0.7
    panel_h = 1.6 if nrows <= 6 else 1.35
    with figure_style():
        # fixed spacing instead of constrained layout: 4x faster to draw with 48 panels
        width = min(11.0, 0.9 + (min(3.3, 10.0 / ncols) if by_column else 1.95) * ncols)
        height = bottom + 0.35 + panel_h * nrows
        fig, axes = new_figure(nrows, ncols, width=width, panel_height=panel_h, layout=None,
                               gridspec_kw=dict(left=0.55 / width,
                                                right=1 - (0.15 if by_column else 0.45) / width,
                                                bottom=bottom / height, top=1 - 0.35 / height,
                                                wspace=0.25 if by_column else 0.55,
                                                hspace=0.6))
        fig.set_size_inches(width, height)
        for ax in axes.ravel():
            ax.set_visible(False)
        same_epochs = len({tuple(binned[t][2]) for t in order.index}) == 1
        meshes = {}
        for (r, c), (trial, row) in zip(positions, order.iterrows()):
            ax = axes[r, c]
            ax.set_visible(True)
            z, edges, epochs = binned[trial]
            vmin, vmax = scales.get(c if by_column else trial, (0.0, 1.0))
            if vmax - vmin < 1e-9:
                vmin, vmax = vmin - 0.5, vmax + 0.5
            mesh = ax.pcolormesh(edges, np.arange(len(epochs) + 1) - 0.5,
                                 np.ma.masked_invalid(z), cmap=cmap, vmin=vmin, vmax=vmax,
                                 rasterized=True, shading="flat")
            meshes[c] = mesh
            # a few labelled ticks only: every tick is an artist, 48 x 21 of them are slow
            step = max(1, math.ceil(len(epochs) / 5))
            ticks = sorted({*range(0, len(epochs), step), len(epochs) - 1})
            show_y = c == 0 or not (by_column and same_epochs)
            ax.set_yticks(ticks, [str(epochs[i]) if show_y else "" for i in ticks])
            ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
            ax.tick_params(labelsize=6.5, length=2, pad=1)
            ax.grid(False)
            title = info.setting_title(row["setting"]) if row["setting"] else ""
            if several_seeds:
                title = f"{title} · seed {row['seed']}" if title else f"seed {row['seed']}"
            ax.set_title(f"{title}\nseq_len={row['seq_len']}" if title
                         else f"seq_len={row['seq_len']}",
                         fontsize=6.8, color=palette.get(row["seq_len"], "black"), pad=2)
            for spine in ax.spines.values():
                spine.set_edgecolor(palette.get(row["seq_len"], "black"))
                spine.set_linewidth(1.2)
            if not by_column:
                _colour_bar(fig, mesh, ax.inset_axes([1.03, 0.0, 0.05, 1.0]), "vertical")
        if by_column:
            for c, mesh in meshes.items():
                bottom_ax = [axes[r, c] for r in range(nrows) if axes[r, c].get_visible()][-1]
                # under the x label, in inches so it does not move with the panel height
                cax = bottom_ax.inset_axes([0.0, -0.62 / panel_h * 1.6, 1.0, 0.1 / panel_h])
                bar = _colour_bar(fig, mesh, cax, "horizontal")
                bar.set_label(f"log10 ‖∂L/∂h_t‖ (decades), seq_len={seq_lens[c]}", fontsize=6.5)
        for c in range(ncols):
            col = [axes[r, c] for r in range(nrows) if axes[r, c].get_visible()]
            if col:
                col[-1].set_xlabel("distance T−1−t (steps)", fontsize=7)
        for r in range(nrows):
            row_axes = [axes[r, c] for c in range(ncols) if axes[r, c].get_visible()]
            if row_axes:
                row_axes[0].set_ylabel(time_unit(trials), fontsize=7)
        scale = "one scale per sequence length" if by_column else "each panel on its own scale"
        notes.insert(0, f"colour: log10 ‖∂L/∂h_t‖ in decades, {scale}; "
                        "grey: no finite value (exact zero or overflow)")
        if n_layers > 1:
            notes.append(f"last of {n_layers} layers")
        if int(df.groupby("trial")["t"].max().max()) + 1 > MAX_BINS:
            notes.append(f"profiles longer than {MAX_BINS} steps averaged over bins of steps")
        add_note(fig, "; ".join(notes))
    return fig
