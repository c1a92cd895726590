"""How trials are executed: the one place that decides it. The driver hands a backend trial
specs and gets results back; only the driver writes the store, so a backend never touches disk.

A backend is any object with ``run(specs, progress) -> Iterator[TrialResult]``: a generator
that yields one result per spec, in completion order, and cleans up (cancels what is still
outstanding, stops its workers) when it is closed early, e.g. by Ctrl-C in the driver.
``progress(trial_id, epochs_done, epochs_total)`` is always called in the driver's thread, from
every backend: workers post their epoch counts to the driver, which calls it between results.

Backends (chosen by :func:`make_backend`):

* :class:`InProcess`: one trial after the other in this process;
* :class:`ProcessPool`: ``--jobs N`` spawned worker processes on this machine;
* :class:`~rnn_diag.experiments.dask_backend.DaskBackend`: a Dask cluster (optional extra).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol

from .store import TrialResult
from .trial import Progress, resolved_settings, run_trial

#: What the install hint says when the Dask extra is missing.
DASK_HINT = "pip install 'rnn_diag[dask]'"


class BackendError(Exception):
    """A backend cannot be used as asked (extra not installed, scheduler unreachable, ...)."""


class Backend(Protocol):
    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]: ...


class InProcess:
    """Run the trials one after the other in this process."""

    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]:
        for spec in specs:
            yield run_trial(spec, progress)


def failed_result(spec, reason: str) -> TrialResult:
    """The row of a trial that could not deliver a result (its worker died, ...): the same
    settings columns as a trial's own row, so that a failed row changes no column's type."""
    from .grid import trial_label

    row = {"label": trial_label(spec), **resolved_settings(spec), **spec.params,
           "status": "failed", "error": reason, "epochs_run": 0}
    return TrialResult(spec.id, row)


class Throttled:
    """A progress callback that forwards at most one report per ``interval`` seconds per trial
    (and always the last epoch), so a trial of many short epochs does not flood the channel.

    >>> seen = []
    >>> post = Throttled(lambda *msg: seen.append(msg), interval=3600)
    >>> for done in range(1, 6):
    ...     post("t", done, 5)
    >>> seen
    [('t', 1, 5), ('t', 5, 5)]
    """

    def __init__(self, post: Callable[[str, int, int], None], interval: float = 0.1):
        self.post = post
        self.interval = interval
        self._last: dict[str, float] = {}

    def __call__(self, trial_id: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last.get(trial_id, -float("inf")) >= self.interval:
            self._last[trial_id] = now
            self.post(trial_id, done, total)


def drive(specs: Iterable, submit: Callable, result_of: Callable, events: queue.Queue,
          pending: dict, progress: Progress | None, limit: int | None = None
          ) -> Iterator[TrialResult]:
    """The driver loop shared by the pool backends.

    ``submit(spec)`` starts a trial and returns a future that puts ``("done", future)`` on
    ``events`` when it completes; workers' epoch reports arrive as ``("epoch", (id, done,
    total))``. At most ``limit`` trials are outstanding at once (None: all). ``pending`` (future
    -> spec) is the caller's, so that its cleanup can cancel what is still outstanding.
    ``result_of(future, spec)`` turns a completed future into a result, never raising.
    """
    waiting = iter(specs)

    def top_up() -> None:
        while limit is None or len(pending) < limit:
            spec = next(waiting, None)
            if spec is None:
                return
            pending[submit(spec)] = spec

    top_up()
    while pending:
        try:
            kind, payload = events.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
        except queue.Empty:
            continue
        if kind == "epoch":
            if progress is not None:
                progress(*payload)
            continue
        spec = pending.pop(payload, None)
        if spec is not None:
            yield result_of(payload, spec)
            top_up()


# --- worker processes on this machine -------------------------------------------------------

_posts = None  # in a pool worker: the queue its epoch reports go to (None: nobody listens)


def _init_worker(threads: int, posts) -> None:
    global _posts
    # Ctrl-C in a terminal reaches the whole process group: let the driver alone decide.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

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
    ``threads`` torch threads (default: the CPU count divided by ``jobs``, at least 1) so that
    the machine is not oversubscribed. A worker that dies fails the trials it took down."""

    def __init__(self, jobs: int, threads: int | None = None):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)

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


def make_backend(kind: str = "local", jobs: int | None = None,
                 scheduler: str | None = None) -> Backend:
    """The backend for the ``run`` command's ``--backend``, ``--jobs`` and ``--scheduler``.

    * ``local``: in-process for ``jobs`` None, else ``jobs`` worker processes;
    * ``dask``: on the cluster at ``scheduler``, with ``jobs`` the most trials outstanding at
      once (None: all); without a scheduler on a ``LocalCluster`` of ``jobs`` single-threaded
      workers (None: one per CPU), started and closed by the run.

    Raises:
        BackendError: unknown kind, a scheduler for the local backend, or Dask not installed.
    """
    if kind == "local":
        if scheduler is not None:
            raise BackendError("--scheduler needs --backend dask")
        return InProcess() if jobs is None else ProcessPool(jobs)
    if kind == "dask":
        try:
            from .dask_backend import DaskBackend
        except ImportError as exc:
            raise BackendError(f"--backend dask needs Dask distributed ({exc}); "
                               f"install it with: {DASK_HINT}") from None
        return DaskBackend(scheduler=scheduler, jobs=jobs)
    raise BackendError(f"unknown backend {kind!r}; expected 'local' or 'dask'")
