"""Backends on this machine: :class:`InProcess` (one trial after the other in this process)
and :class:`ProcessPool` (``--jobs N`` spawned worker processes).

Torch threads per trial (``--threads``): :data:`DEFAULT_THREADS` (1) for both unless given.
The models of a sweep are small (H ~ 10-100): their matmuls are too small for torch's intra-op
threads to pay for their synchronisation, and a second thread only competes with the other
workers and with other jobs on the machine. Measured with ``benchmarks/threads.py``
(docs/design.md §21).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import torch

from ..store import TrialResult
from ..trial import Progress, run_trial
from .base import Throttled, drive, failed_result

#: Torch threads per trial of the local backends when ``threads`` is not given.
DEFAULT_THREADS = 1


class InProcess:
    """Run the trials one after the other in this process, with ``threads`` torch threads
    (default :data:`DEFAULT_THREADS`); torch's own thread count is restored afterwards."""

    def __init__(self, threads: int | None = None):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads or DEFAULT_THREADS

    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]:
        before = torch.get_num_threads()
        try:
            for spec in specs:
                torch.set_num_threads(self.threads)  # the caller may change it between trials
                yield run_trial(spec, progress)
        finally:
            torch.set_num_threads(before)


_posts = None  # in a pool worker: the queue its epoch reports go to (None: nobody listens)


def _init_worker(threads: int, posts) -> None:
    global _posts
    # Ctrl-C in a terminal reaches the whole process group: let the driver alone decide.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    _posts = posts


def _run_in_worker(spec) -> TrialResult:
    post = None if _posts is None else Throttled(lambda *msg: _posts.put(msg))
    return run_trial(spec, post)


def _forward(posts, events: queue.Queue) -> None:
    """Move worker epoch reports from the process queue to the driver's event queue."""
    for msg in iter(posts.get, None):
        events.put(("epoch", msg))


class ProcessPool:
    """Run trials in ``jobs`` worker processes (spawned, so no state leaks in), each with
    ``threads`` torch threads (default :data:`DEFAULT_THREADS`). A worker that dies fails the
    trials it took down."""

    def __init__(self, jobs: int, threads: int | None = None):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.jobs = jobs
        self.threads = threads or DEFAULT_THREADS

    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]:
        ctx = multiprocessing.get_context("spawn")
        events: queue.Queue = queue.Queue()
        posts = ctx.Queue() if progress is not None else None
        forwarder = None
        if posts is not None:
            forwarder = threading.Thread(target=_forward, args=(posts, events), daemon=True)
            forwarder.start()
        pool = ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_worker,
                                   initargs=(self.threads, posts))
        pending: dict = {}

        def submit(spec):
            future = pool.submit(_run_in_worker, spec)
            future.add_done_callback(lambda f: events.put(("done", f)))
            return future

        try:
            yield from drive(specs, submit, _outcome, events, pending, progress)
        finally:
            if pending:  # stopped early: drop the queued trials, stop the running ones
                for future in pending:
                    future.cancel()
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            if posts is not None:
                posts.put(None)
                forwarder.join(timeout=5)
                posts.close()


def _outcome(future, spec) -> TrialResult:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - a crashed worker fails its trial
        return failed_result(spec, f"worker process died: {type(exc).__name__}: {exc}")
