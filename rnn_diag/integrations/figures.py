"""The two figures the TensorBoard and W&B loggers send: the gradient profile of one step and
the heatmap of the profiles over the logged steps.

Pure drawing functions, in the look of :mod:`rnn_diag.report.figures` (its style, a
``matplotlib.figure.Figure`` made without pyplot, so nothing is left open in pyplot's global
state): they plot the values they are given and compute no diagnostic. Distances are
T−1−t, the number of steps between step t and the last step, where the loss usually reads the
state (the convention of :func:`rnn_diag.gradient_summary`), for both directions.

Example::

    from rnn_diag.integrations.figures import profile_figure, render
    fig = profile_figure({"layer0": values0, "layer1": values1}, step=100)  # values: [T]
    image = render(fig)  # uint8 [H, W, 3]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..report.figures.style import add_note, figure_style, new_figure

__all__ = ["heatmap_figure", "profile_figure", "render"]

#: Distance columns of the heatmap; longer profiles are averaged in log space over bins.
MAX_BINS = 300
_WIDTH, _HEIGHT = 5.6, 3.0  # inches, at 100 dpi: a 560 x ~350 px image
_YLABEL = "log10 ‖∂L/∂h_t‖ (decades)"
_XLABEL = "distance from the loss T−1−t (steps)"


def profile_figure(values_by_layer: Mapping[str, np.ndarray], step: int, *,
                   title: str | None = None) -> Figure:
    """log10‖∂L/∂h_t‖ against the distance T−1−t, one line per layer.

    Args:
        values_by_layer: ``{label: values}``, values a ``[T]`` array of log10 norms (decades)
            in input order t (index 0 is the earliest step, drawn at distance T−1). A label
            ending in ``_reverse`` is drawn dashed in the colour of its forward layer.
        step: the logged step, shown in the title.
        title: what the figure shows (e.g. the module name); the step is appended.

    Non-finite values are not drawn as line: an exact zero (−inf) is marked ▼ at the bottom
    edge, an overflow (+inf) ▲ at the top edge, NaN is a gap; a finite point between
    non-finite ones is a dot.
    """
    with figure_style():
        fig, axes = new_figure(1, 1, width=_WIDTH, panel_height=_HEIGHT - 0.5)
        ax = axes[0, 0]
        finite = [v[np.isfinite(v)] for v in map(_as_array, values_by_layer.values())]
        finite = np.concatenate(finite) if finite else np.zeros(0)
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
        pad = max(0.06 * (hi - lo), 0.3)
        lo, hi = lo - pad, hi + pad
        palette = {}
        marked = set()
        for label, values in values_by_layer.items():
            y = _as_array(values)
            d = np.arange(y.size)[::-1]  # distance of each t
            base = label.removesuffix("_reverse")
            colour = palette.setdefault(base, f"C{len(palette) % 10}")
            ls = (0, (4, 2)) if label.endswith("_reverse") else "-"
            ok = np.isfinite(y)
            ax.plot(d, np.where(ok, y, np.nan), color=colour, ls=ls, lw=1.6, label=label)
            # finite points with no finite neighbour draw no line: show them as dots
            alone = ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]
            if alone.any():
                ax.plot(d[alone], y[alone], ls="", marker="o", ms=3.5, color=colour)
            for bad, at_y, marker in ((-np.inf, 0.03, "v"), (np.inf, 0.97, "^")):
                at = y == bad
                if at.any():  # at the panel's edge (y in axes coordinates)
                    marked.add(marker)
                    ax.plot(d[at], np.full(int(at.sum()), at_y), ls="", marker=marker, ms=3.5,
                            color=colour, alpha=0.7, transform=ax.get_xaxis_transform())
        ax.set_ylim(lo, hi)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
        ax.set_xlabel(_XLABEL)
        ax.set_ylabel(_YLABEL)
        ax.set_title(f"{title} · step {step}" if title else f"step {step}")
        handles, _ = ax.get_legend_handles_labels()
        for marker, text in (("v", "exact zero (−∞)"), ("^", "overflow (+∞)")):
            if marker in marked:
                handles.append(Line2D([], [], color="#3a3a3a", ls="", marker=marker, ms=4,
                                      label=text))
        if handles:
            ax.legend(handles=handles, loc="best", frameon=False)
    return fig


def heatmap_figure(history: Mapping[int, np.ndarray], *, title: str | None = None) -> Figure:
    """Colour = log10‖∂L/∂h_t‖ (decades) over x = distance T−1−t and y = logged step.

    Args:
        history: ``{step: values}``, values a ``[T]`` array of log10 norms in input order t
            (T may differ between steps: rows are aligned at distance 0). Rows are drawn at
            their steps (increasing upwards), each as tall as the gap to its neighbours.
        title: what the figure shows (e.g. "lstm layer0").

    Cells without a finite value (an exact zero −inf, an overflow +inf, NaN, or beyond a
    row's length) are left blank. Profiles longer than 300 steps are averaged over bins of
    distances (in log space) for drawing.
    """
    if not history:
        raise ValueError("heatmap_figure needs at least one profile")
    steps = np.array(sorted(history), dtype=np.float64)
    rows = [_as_array(history[s]) for s in sorted(history)]
    T = max((r.size for r in rows), default=1)
    grid = np.full((len(rows), T), np.nan)
    for i, r in enumerate(rows):
        grid[i, : r.size] = np.where(np.isfinite(r), r, np.nan)[::-1]  # column = distance
    grid, xedges = _binned(grid)
    with figure_style():
        fig, axes = new_figure(1, 1, width=_WIDTH, panel_height=_HEIGHT - 0.5)
        ax = axes[0, 0]
        finite = grid[np.isfinite(grid)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if vmax - vmin < 1e-9:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        mesh = ax.pcolormesh(xedges, _edges(steps), np.ma.masked_invalid(grid),
                             cmap="viridis", vmin=vmin, vmax=vmax, shading="flat",
                             rasterized=True)
        bar = fig.colorbar(mesh, ax=ax, pad=0.02)
        bar.set_label(_YLABEL)
        bar.outline.set_visible(False)
        ax.grid(False)
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
        if len(steps) <= 8:
            ax.set_yticks(steps, [f"{s:g}" for s in steps])
        else:
            ax.yaxis.set_major_locator(MaxNLocator(6, integer=True))
        ax.set_xlabel(_XLABEL)
        ax.set_ylabel("step")
        ax.set_title(title or "")
        add_note(fig, f"{len(steps)} logged steps; blank: no finite value (exact zero, "
                      "overflow) or beyond the sequence")
    return fig


def render(fig: Figure) -> np.ndarray:
    """The figure as an RGB image, uint8 ``[H, W, 3]`` (Agg, at the figure's dpi)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _as_array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres: midpoints, the outer ones mirrored (±0.5 for one)."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _binned(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``grid`` [rows, T] averaged over at most MAX_BINS bins of columns (mean of the finite
    values, NaN where none), and the column edges in distance."""
    T = grid.shape[1]
    if T <= MAX_BINS:
        return grid, np.arange(T + 1) - 0.5
    starts = np.unique(np.linspace(0, T, MAX_BINS, endpoint=False).astype(int))
    ok = np.isfinite(grid)
    sums = np.add.reduceat(np.where(ok, grid, 0.0), starts, axis=1)
    counts = np.add.reduceat(ok.astype(float), starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return binned, np.append(starts, T) - 0.5
