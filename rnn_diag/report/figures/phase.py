"""Figure 4: the phase diagram — setting (weight scale) × sequence length → the fitted decay
per step of the gradient profile, each cell labelled vanishing / stable / exploding."""

from __future__ import annotations

import math
from collections import Counter

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ._data import Trials, require
from .style import add_note, figure_style, new_figure, seq_len_palette

__all__ = ["phase_diagram"]

_DIVERGING = "RdBu_r"  # ColorBrewer RdBu: colour-blind-safe; blue = vanishing, red = exploding


def _verdict_text(verdicts: list) -> str:
    """The common verdict of the seeds, or "2 vanishing / 1 stable" when they disagree."""
    names = [str(v) for v in verdicts if isinstance(v, str) and v]
    if not names:
        return "n/a"
    counts = Counter(names)
    if len(counts) == 1:
        return names[0]
    return " / ".join(f"{n} {v}" for v, n in counts.most_common())


def _cells(info: Trials, trials: pd.DataFrame, tag: str) -> tuple[np.ndarray, list[list[str]]]:
    """``[settings, seq_lens]`` mean decay per step and the cell texts for ``tag`` "first" or
    "last"."""
    df = info.info[["setting_rank", "seq_len"]].copy()
    df["decay"] = pd.to_numeric(trials.set_index(trials["id"].astype(str))[f"decay_per_step_{tag}"]
                                .reindex(df.index), errors="coerce")
    df["verdict"] = trials.set_index(trials["id"].astype(str))[f"verdict_{tag}"].reindex(df.index)
    z = np.full((len(info.settings), len(info.seq_lens)), np.nan)
    text = [["no data"] * len(info.seq_lens) for _ in info.settings]
    for (rank, seq_len), group in df.groupby(["setting_rank", "seq_len"]):
        if seq_len not in info.seq_lens:
            continue
        j = info.seq_lens.index(seq_len)
        finite = group["decay"][np.isfinite(group["decay"])]
        if len(finite):
            z[rank, j] = finite.mean()
        verdict = _verdict_text(list(group["verdict"]))
        if verdict == "n/a":  # no summary: say why when the trials say it
            verdict = " / ".join(sorted(set(info.info.loc[group.index, "status"].astype(str))
                                        - {"ok"})) or "n/a"
        value = f"{z[rank, j]:+.3f}" if math.isfinite(z[rank, j]) else ""
        text[rank][j] = f"{verdict}\n{value}".strip()
    return z, text


def phase_diagram(trials: pd.DataFrame) -> Figure:
    """Heatmaps of the fitted gradient decay per step (decades per step, the slope of log10
    ‖∂L/∂h_t‖ against distance, column ``decay_per_step_first``/``_last`` of ``trials``) over
    setting (rows) × sequence length (columns), at the first and the last recorded epoch.

    Args:
        trials: the trials table with ``decay_per_step_first/last`` and ``verdict_first/last``
            (the gradient summary of the last layer, see :func:`rnn_diag.gradient_summary`).

    The colour map diverges at 0: blue = vanishing, red = exploding, white = flat. Each cell
    names the verdict (the seeds' verdicts when they disagree) and the mean decay over seeds;
    cells without a summary (failed trials) are grey.
    """
    info = Trials.from_table(trials)
    unit = info.unit
    require(trials, "trials", ["decay_per_step_first", "verdict_first"],
            hint=" (the gradient summary: record gradients with probes.gradients: true)")
    tags = ["first"] + (["last"] if "decay_per_step_last" in trials else [])
    cells = {tag: _cells(info, trials, tag) for tag in tags}
    values = np.concatenate([z.ravel() for z, _ in cells.values()])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("no trial has a gradient summary (decay_per_step is NaN everywhere)")
    m = max(float(np.abs(finite).max()), 1e-3)
    norm = Normalize(-m, m)
    cmap = mpl.colormaps[_DIVERGING].with_extremes(bad="#d9d9d9")
    palette = seq_len_palette(info.seq_lens)
    nv, ns = len(info.settings), len(info.seq_lens)
    panel_w = 1.0 + 1.25 * ns
    only_ws = info.setting_keys == ("model.weight_scale",)
    with figure_style():
        fig, axes = new_figure(1, len(tags), width=min(11.0, 1.6 + len(tags) * panel_w),
                               panel_height=0.9 + 0.55 * nv)
        for ax, tag in zip(axes[0], tags):
            z, text = cells[tag]
            mesh = ax.pcolormesh(np.ma.masked_invalid(z), cmap=cmap, norm=norm,
                                 edgecolors="white", linewidth=1.5)
            for i in range(nv):
                for j in range(ns):
                    v = z[i, j]
                    dark = math.isfinite(v) and abs(v) > 0.55 * m
                    ax.text(j + 0.5, i + 0.5, text[i][j], ha="center", va="center",
                            fontsize=7 if len(text[i][j]) < 24 else 6,
                            color="white" if dark else "black")
            ax.set_xticks(np.arange(ns) + 0.5, [str(s) for s in info.seq_lens])
            for label, s in zip(ax.get_xticklabels(), info.seq_lens):
                label.set_color(palette[s])
                label.set_fontweight("bold")
            ax.set_yticks(np.arange(nv) + 0.5,
                          [v.split("=", 1)[1] if only_ws else info.setting_title(v)
                           for v in info.settings])
            ax.set_xlabel("sequence length T (steps)")
            ax.grid(False)
            ax.set_title(f"first recorded {unit} (init)" if tag == "first"
                         else f"last recorded {unit}")
        axes[0, 0].set_ylabel("weight_scale (×W_hh at init)" if only_ws else "setting")
        bar = fig.colorbar(mesh, ax=axes[0, -1], shrink=0.9, pad=0.02)
        bar.set_label("decay per step (decades/step)\n← vanishing · exploding →")
        add_note(fig, "decay per step: least-squares slope of log10 ‖∂L/∂h_t‖ against the "
                      "distance from the loss (last layer); mean over seeds")
    return fig
