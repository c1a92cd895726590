"""The report's figures: pure functions ``DataFrame(s) -> matplotlib Figure``.

Each function takes the stored tables of a run (see README, "Experiments: `rnn-diag run`")
as explicit DataFrame arguments, plots only what they hold (no model diagnostic is computed
here), and returns a new ``matplotlib.figure.Figure`` made without pyplot, so they work in a
notebook and headless alike::

    import pandas as pd
    from rnn_diag.report.figures import loss_history
    run = "reports/weather"
    fig = loss_history(pd.read_parquet(f"{run}/trials.parquet"), pd.read_parquet(f"{run}/curves"))
    fig.savefig("loss.png")

:data:`SECTIONS` lists them in report order, each with its title, caption and the tables it
needs; ``section.build(tables)`` draws it from a ``{name: DataFrame}`` mapping. A figure whose
data were not recorded raises :class:`MissingData`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from ._data import MissingData, table
from .loss import loss_history
from .style import seq_len_palette

__all__ = [
    "SECTIONS",
    "FigureSection",
    "MissingData",
    "loss_history",
    "seq_len_palette",
]


@dataclass(frozen=True)
class FigureSection:
    """One figure of the report.

    Attributes:
        key: anchor id ("loss", "profile", "heatmap", "phase", "spectra", "jacobians",
            "lyapunov", "predictions").
        title: short heading.
        caption: what the figure shows and what to look for (plain words, 1-3 sentences).
        needs: table names that must be present and non-empty.
        build: draws the figure from a ``{table name: DataFrame}`` mapping.
    """

    key: str
    title: str
    caption: str
    needs: tuple[str, ...]
    build: Callable[[Mapping[str, pd.DataFrame]], Figure]


def _build_loss(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return loss_history(table(tables, "trials"), table(tables, "curves"))


SECTIONS: tuple[FigureSection, ...] = (
    FigureSection(
        key="loss",
        title="Loss history",
        caption=(
            "Training loss (solid) and held-out loss (dashed) per epoch, one colour per "
            "sequence length, one panel per setting. The dotted line is the chance level, the "
            "loss of the best prediction that ignores the input: a curve that stays on it has "
            "learned nothing, and a training loss below it with a held-out loss above it is "
            "memorisation, not learning."
        ),
        needs=("trials", "curves"),
        build=_build_loss,
    ),
)
