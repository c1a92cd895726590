"""The figure sections of a report, as both the page (:mod:`rnn_diag.report.page`) and the
worker pool (:mod:`rnn_diag.report.parallel`) need them: the registry lookups, the
:class:`SectionResult` of one section and :func:`build_section`, which draws it.

The registry is :data:`rnn_diag.report.figures.SECTIONS`, read at each call (not at import), so
that a replaced registry is what counts.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd

from . import figures
from .embed import figure_to_data_uri

__all__ = ["SectionResult", "build_section", "registered", "registered_section", "unrecorded"]


@dataclass
class SectionResult:
    """One figure section as rendered: an image, a "not recorded" note, or an error."""

    key: str
    title: str
    caption: str
    state: str  # "figure" | "missing" | "error"
    image: str = ""  # data: URI when state == "figure"
    missing: tuple[str, ...] = ()
    note: str = ""  # why a figure is missing, when its function said so
    error: str = ""
    details: str = ""  # the traceback of an error
    seconds: float = 0.0


def registered() -> Sequence[figures.FigureSection]:
    """The registered sections (:data:`rnn_diag.report.figures.SECTIONS`), in report order."""
    return figures.SECTIONS


def registered_section(key: str) -> figures.FigureSection:
    """The registered section whose key is ``key``.

    >>> registered_section("loss").title == registered()[0].title
    True
    """
    return next(s for s in figures.SECTIONS if s.key == key)


def unrecorded(section, tables: Mapping[str, pd.DataFrame]) -> tuple[str, ...]:
    """The tables a section needs that this run did not record (absent or empty)."""
    return tuple(n for n in section.needs if tables.get(n) is None or tables[n].empty)


def build_section(section, tables: Mapping[str, pd.DataFrame], fmt: str) -> SectionResult:
    """Draw and encode one figure section; never raises (an error becomes an error box)."""
    base = dict(key=section.key, title=section.title, caption=figures.caption_for(section, tables))
    missing = unrecorded(section, tables)
    if missing:
        return SectionResult(state="missing", missing=missing, **base)
    before = set(plt.get_fignums())
    t0 = time.perf_counter()
    try:
        fig = section.build(tables)
        image = figure_to_data_uri(fig, fmt)
    except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the report
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
        if isinstance(exc, figures.MissingData):  # e.g. a column that this run did not record
            return SectionResult(state="missing", note=str(exc), **base)
        return SectionResult(state="error", error=f"{type(exc).__name__}: {exc}",
                             details=traceback.format_exc(),
                             seconds=time.perf_counter() - t0, **base)
    return SectionResult(state="figure", image=image, seconds=time.perf_counter() - t0, **base)
