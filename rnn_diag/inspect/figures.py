"""The two figures of the inspect page, per module, in the report's look
(:mod:`rnn_diag.report.figures.style`): the eigenvalues of every gate block with the unit
circle, one panel per layer and direction, and the Jacobian-product norm against the distance,
one line per layer and direction.

Like the report's figure functions, they only plot numbers already computed
(:class:`~rnn_diag.inspect.analysis.ModuleResult`).
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ..report.figures.spectra import GATE_MARKERS
from ..report.figures.style import add_note, figure_style, new_figure

__all__ = ["eigenvalue_figure", "profile_figure"]

#: At most this many layer/direction panels of eigenvalues are drawn per module.
MAX_PANELS = 8


def _colours(n: int) -> list:
    return list(sns.color_palette("colorblind", max(n, 1)))


def eigenvalue_figure(module) -> Figure:
    """Eigenvalues of each gate block (marker per gate, colour per gate) in the complex plane,
    with the unit circle; one panel per layer and direction (at most :data:`MAX_PANELS`)."""
    df = module.spectra
    layers = module.layers[:MAX_PANELS]
    ncols = min(4, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    gates = list(dict.fromkeys(df["gate"].astype(str)))
    colour = dict(zip(gates, _colours(len(gates))))
    with figure_style():
        fig, axes = new_figure(nrows, ncols, panel_height=2.9, width=min(11.0, 1.0 + 2.8 * ncols))
        for ax in axes.flat[len(layers):]:
            ax.set_visible(False)
        for ax, layer in zip(axes.flat, layers):
            sel = df[(df["layer"] == layer.layer) & (df["direction"] == layer.direction)]
            for gate, g in sel.groupby(sel["gate"].astype(str), sort=False):
                ax.scatter(g["real"], g["imag"], s=14, marker=GATE_MARKERS.get(gate, "o"),
                           color=colour[gate], alpha=0.8, lw=0, label=gate)
            ax.add_patch(Circle((0, 0), 1.0, fill=False, color="black", lw=0.9))
            r = max(1.05, float(sel["modulus"].max()) * 1.08 if len(sel) else 1.05)
            ax.set_xlim(-r, r)
            ax.set_ylim(-r, r)
            ax.set_aspect("equal")
            ax.set_xlabel("Re")
            ax.set_ylabel("Im")
            ax.set_title(layer.label)
        if gates != ["hh"]:
            handles, labels = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, labels, title="gate", loc="outside right upper")
        if len(module.layers) > MAX_PANELS:
            add_note(fig, f"the first {MAX_PANELS} of {len(module.layers)} layers/directions")
    return fig


def profile_figure(module, steps: int) -> Figure:
    """log10 ‖∂s_T/∂s_(T−d)‖₂ against the distance d, one line per layer and direction; a
    dotted line 3 decades below each line's peak marks where its horizon ends."""
    colours = _colours(len(module.layers))
    with figure_style():
        fig, axes = new_figure(1, 1, panel_height=3.0, width=7.5)
        ax = axes[0, 0]
        d = np.arange(steps + 1)
        for colour, layer in zip(colours, module.layers):
            y = np.asarray(layer.profile, dtype=np.float64)
            if y.size == 0 or not np.isfinite(y).any():
                continue
            ls = "--" if layer.direction else "-"
            ax.plot(d[: y.size], y, color=colour, ls=ls, lw=1.3,
                    label=f"{layer.label} (horizon {layer.horizon})")
            peak = float(np.nanmax(np.where(np.isfinite(y), y, np.nan)))
            ax.axhline(peak - 3, color=colour, ls=":", lw=0.8)
        ax.set_xlabel("distance d (steps back from the last step)")
        ax.set_ylabel("log10 ‖∂s_T/∂s_(T−d)‖  (decades)")
        ax.set_title(module.name or "(top level)")
        if ax.lines:
            ax.legend(loc="best")
    return fig
