"""Draw the figure sections of a report in worker processes.

Drawing and encoding the figures is most of a report's time and each figure is independent,
so the sections of the default registry (:data:`rnn_diag.report.figures.SECTIONS`) are drawn
in a small pool of spawned processes. Each worker receives the tables once (pickled at start)
and then only section keys; results come back as
:class:`~rnn_diag.report.sections.SectionResult` objects (the image as a ``data:`` URI string).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed

import matplotlib
import pandas as pd

from .sections import SectionResult, build_section, registered_section

_tables: Mapping[str, pd.DataFrame] | None = None  # in a worker: the run's tables


def default_jobs(n_sections: int) -> int:
    """Worker processes for ``n_sections`` figures: one per CPU, at most 4 and at most one per
    figure; 1 (no pool) on a single CPU or for fewer than 3 figures, where starting the
    workers (about a second each) costs more than it saves."""
    cpus = os.cpu_count() or 1
    if cpus < 2 or n_sections < 3:
        return 1
    return min(cpus, 4, n_sections)


def _init(tables: Mapping[str, pd.DataFrame]) -> None:
    global _tables
    matplotlib.use("Agg")
    _tables = tables


def _draw(key: str, fmt: str) -> SectionResult:
    return build_section(registered_section(key), _tables, fmt)


def draw_in_pool(keys: list[str], tables: Mapping[str, pd.DataFrame], fmt: str, jobs: int,
                 done: Callable[[], None] | None = None) -> Iterator[SectionResult]:
    """The :class:`SectionResult` of every registered section in ``keys``, in that order,
    drawn by ``jobs`` worker processes; ``done()`` is called as each one finishes."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init,
                             initargs=(dict(tables),)) as pool:
        futures = {pool.submit(_draw, key, fmt): i for i, key in enumerate(keys)}
        results = [None] * len(keys)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if done is not None:
                done()
    return iter(results)
