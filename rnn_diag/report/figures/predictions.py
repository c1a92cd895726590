"""Figure 7: the next-step prediction of every trial — softmax probability per class, the
actual class boxed, the predicted one in bold."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._data import Trials, require
from .style import add_note, figure_style, new_figure, seq_len_palette

__all__ = ["next_step_predictions"]


def next_step_predictions(trials: pd.DataFrame, predictions: pd.DataFrame) -> Figure:
    """A table-like heatmap: one row per trial (grouped by setting, then seq_len, then seed),
    one column per class name, the colour and the number are the softmax probability the
    trained model gives the next step (last held-out window).

    Args:
        trials: the trials table.
        predictions: long table ``trial, class, name, probability, predicted, actual``
            (classification tasks only).
    """
    info = Trials.from_table(trials)
    require(predictions, "predictions", ["trial", "class", "probability"])
    df = info.attach(predictions)
    require(df, "predictions", hint=" for the trials of this run")
    if "name" not in df:
        df["name"] = df["class"].astype(str)
    classes = (df[["class", "name"]].drop_duplicates("class").sort_values("class"))
    order = (info.info.loc[info.info.index.isin(df["trial"].unique())]
             .sort_values(["setting_rank", "seq_len", "seed"]))
    several_seeds = order.groupby(["setting_rank", "seq_len"]).size().max() > 1
    prob = df.pivot_table(index="trial", columns="class", values="probability",
                          aggfunc="first").reindex(index=order.index, columns=classes["class"])
    flags = {col: df.pivot_table(index="trial", columns="class", values=col, aggfunc="first")
             .reindex(index=order.index, columns=classes["class"]).fillna(False).astype(bool)
             if col in df else None for col in ("predicted", "actual")}
    palette = seq_len_palette(info.seq_lens)
    n, k = prob.shape
    cmap = mpl.colormaps["Blues"].with_extremes(bad="#d9d9d9")
    with figure_style():
        fig, axes = new_figure(1, 1, width=min(11.0, 4.2 + 1.1 * k),
                               panel_height=0.5 + 0.27 * n)
        ax = axes[0, 0]
        z = prob.to_numpy(dtype=float)
        mesh = ax.pcolormesh(np.ma.masked_invalid(z), cmap=cmap, vmin=0.0, vmax=1.0,
                             edgecolors="white", linewidth=1.0)
        for i in range(n):
            for j in range(k):
                p = z[i, j]
                predicted = flags["predicted"] is not None and flags["predicted"].iat[i, j]
                ax.text(j + 0.5, i + 0.5, "" if np.isnan(p) else f"{p:.3f}", ha="center",
                        va="center", fontsize=7.5, color="white" if p > 0.6 else "black",
                        fontweight="bold" if predicted else "normal")
                if flags["actual"] is not None and flags["actual"].iat[i, j]:
                    ax.add_patch(Rectangle((j + 0.04, i + 0.08), 0.92, 0.84, fill=False,
                                           ec="black", lw=1.4))
        ax.set_xticks(np.arange(k) + 0.5, list(classes["name"].astype(str)))
        ax.xaxis.tick_top()
        ax.set_xlabel("class of the next step")
        ax.xaxis.set_label_position("top")
        labels = []
        for _, row in order.iterrows():
            text = f"{info.setting_title(row['setting']) if row['setting'] else ''}"
            text = f"{text} · seq_len={row['seq_len']}" if text else f"seq_len={row['seq_len']}"
            labels.append(f"{text} · seed {row['seed']}" if several_seeds else text)
        ax.set_yticks(np.arange(n) + 0.5, labels)
        for label, seq_len in zip(ax.get_yticklabels(), order["seq_len"]):
            label.set_color(palette.get(seq_len, "black"))
        ax.invert_yaxis()
        ax.grid(False)
        bar = fig.colorbar(mesh, ax=ax, shrink=min(1.0, 3.0 / max(n * 0.27, 1.0)) if n > 12
                           else 1.0, pad=0.02)
        bar.set_label("softmax probability")
        add_note(fig, "box: the actual next step; bold: the predicted class (highest "
                      "probability)")
    return fig
