"""How trials are executed. The driver hands a backend trial specs and gets results back; only
the driver writes the store, so a backend never touches disk.

A backend is any object with ``run(specs, progress) -> Iterator[TrialResult]`` that yields one
result per spec, in completion order. ``progress(trial_id, epochs_done, epochs_total)`` reports
epoch progress where the backend can (in-process only).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Protocol

from .store import TrialResult
from .trial import Progress, run_trial


class Backend(Protocol):
    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]: ...


class InProcess:
    """Run the trials one after the other in this process."""

    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]:
        for spec in specs:
            yield run_trial(spec, progress)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _failed(spec, exc: BaseException) -> TrialResult:
    from .grid import trial_label

    return TrialResult(spec.id, {"label": trial_label(spec), **spec.params, "status": "failed",
                                 "error": f"worker process died: {type(exc).__name__}: {exc}"})


class ProcessPool:
    """Run trials in ``jobs`` worker processes (spawned, so no state leaks in), each with
    ``threads`` torch threads (default: the CPU count divided by ``jobs``, at least 1) so that
    the machine is not oversubscribed."""

    def __init__(self, jobs: int, threads: int | None = None):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)

    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(self.threads,)) as pool:
            pending = {pool.submit(run_trial, spec): spec for spec in specs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    spec = pending.pop(future)
                    try:
                        yield future.result()
                    except Exception as exc:  # noqa: BLE001 - a crashed worker fails its trial
                        yield _failed(spec, exc)


def make_backend(jobs: int | None) -> Backend:
    """In-process for ``jobs`` None (or 1 without asking for processes), else a process pool."""
    return InProcess() if jobs is None else ProcessPool(jobs)
