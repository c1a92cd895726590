"""Figure 4: the phase diagram — setting (weight scale) × sequence length → the fitted decay
per step of the gradient profile, each cell labelled vanishing / stable / exploding (with one
sequence length and two swept keys, e.g. cell × lag: one key per axis)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ...experiments.labels import short_names
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


@dataclass(frozen=True)
class _Grid:
    """Where each trial goes in the heatmaps: ``row``/``col`` per trial id, the tick texts,
    the axis labels and the colour of each column tick (seq_len colours, or black)."""

    row: dict
    col: dict
    rows: list[str]
    cols: list[str]
    xlabel: str
    ylabel: str
    col_colours: list[str]


def _grid(info: Trials) -> _Grid:
    """Rows = settings and columns = sequence lengths; with a single sequence length and two
    setting keys that form a full grid (``lag × cell``), rows and columns are those keys' values
    instead (columns: the first numeric ``task.*`` key, else the first key), so a sweep that
    keeps T fixed fills a table rather than one long column."""
    ids = list(info.info.index)
    keys = info.setting_keys
    parts = dict(zip(info.settings, info.setting_parts))
    if len(info.seq_lens) == 1 and len(keys) == 2:
        values = [list(dict.fromkeys(parts[v][k] for v in info.settings)) for k in range(2)]
        if len(values[0]) * len(values[1]) == len(info.settings):
            numeric = [k for k in range(2) if keys[k].startswith("task.")
                       and all(_is_number(v) for v in values[k])]
            c = numeric[0] if numeric else 0
            r = 1 - c
            short = short_names(keys)
            setting = info.info["setting"]
            return _Grid(
                row={t: values[r].index(parts[setting[t]][r]) for t in ids},
                col={t: values[c].index(parts[setting[t]][c]) for t in ids},
                rows=values[r], cols=values[c],
                xlabel=f"{short[keys[c]]} (sequence length T = {info.seq_lens[0]})",
                ylabel=short[keys[r]], col_colours=["black"] * len(values[c]))
    only_ws = keys == ("model.weight_scale",)
    palette = seq_len_palette(info.seq_lens)
    return _Grid(
        row={t: int(info.info.at[t, "setting_rank"]) for t in ids},
        col={t: info.seq_lens.index(info.info.at[t, "seq_len"])
             if info.info.at[t, "seq_len"] in info.seq_lens else -1 for t in ids},
        rows=[v.split("=", 1)[1] if only_ws else info.setting_title(v) for v in info.settings],
        cols=[str(s) for s in info.seq_lens], xlabel="sequence length T (steps)",
        ylabel="weight_scale (×W_hh at init)" if only_ws else "setting",
        col_colours=[palette[s] for s in info.seq_lens])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cells(info: Trials, trials: pd.DataFrame, tag: str, grid: _Grid,
           ) -> tuple[np.ndarray, list[list[str]]]:
    """``[rows, columns]`` mean decay per step and the cell texts for ``tag`` "first" or
    "last"."""
    df = pd.DataFrame(index=info.info.index)
    df["row"] = [grid.row[t] for t in df.index]
    df["col"] = [grid.col[t] for t in df.index]
    df["decay"] = pd.to_numeric(trials.set_index(trials["id"].astype(str))[f"decay_per_step_{tag}"]
                                .reindex(df.index), errors="coerce")
    df["verdict"] = trials.set_index(trials["id"].astype(str))[f"verdict_{tag}"].reindex(df.index)
    z = np.full((len(grid.rows), len(grid.cols)), np.nan)
    text = [["no data"] * len(grid.cols) for _ in grid.rows]
    for (i, j), group in df.groupby(["row", "col"]):
        if j < 0:
            continue
        finite = group["decay"][np.isfinite(group["decay"])]
        if len(finite):
            z[i, j] = finite.mean()
        verdict = _verdict_text(list(group["verdict"]))
        if verdict == "n/a":  # no summary: say why when the trials say it
            verdict = " / ".join(sorted(set(info.info.loc[group.index, "status"].astype(str))
                                        - {"ok"})) or "n/a"
        value = f"{z[i, j]:+.3f}" if math.isfinite(z[i, j]) else ""
        text[i][j] = f"{verdict}\n{value}".strip()
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
    cells without a summary (failed trials) are grey. A run with a single sequence length whose
    settings are every combination of two swept keys (e.g. ``task.lag × model.cell``) gets one
    key's values as rows and the other's as columns (a numeric ``task.*`` key as columns).
    """
    info = Trials.from_table(trials)
    unit = info.unit
    require(trials, "trials", ["decay_per_step_first", "verdict_first"],
            hint=" (the gradient summary: record gradients with probes.gradients: true)")
    tags = ["first"] + (["last"] if "decay_per_step_last" in trials else [])
    grid = _grid(info)
    cells = {tag: _cells(info, trials, tag, grid) for tag in tags}
    values = np.concatenate([z.ravel() for z, _ in cells.values()])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("no trial has a gradient summary (decay_per_step is NaN everywhere)")
    m = max(float(np.abs(finite).max()), 1e-3)
    norm = Normalize(-m, m)
    cmap = mpl.colormaps[_DIVERGING].with_extremes(bad="#d9d9d9")
    nv, ns = len(grid.rows), len(grid.cols)
    panel_w = 1.0 + 1.25 * ns
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
            ax.set_xticks(np.arange(ns) + 0.5, grid.cols)
            for label, colour in zip(ax.get_xticklabels(), grid.col_colours):
                label.set_color(colour)
                label.set_fontweight("bold")
            ax.set_yticks(np.arange(nv) + 0.5, grid.rows)
            ax.set_xlabel(grid.xlabel)
            ax.grid(False)
            ax.set_title(f"first recorded {unit} (init)" if tag == "first"
                         else f"last recorded {unit}")
        axes[0, 0].set_ylabel(grid.ylabel)
        bar = fig.colorbar(mesh, ax=axes[0, -1], shrink=0.9, pad=0.02)
        bar.set_label("decay per step (decades/step)\n← vanishing · exploding →")
        add_note(fig, "decay per step: least-squares slope of log10 ‖∂L/∂h_t‖ against the "
                      "distance from the loss (last layer); mean over seeds")
    return fig
