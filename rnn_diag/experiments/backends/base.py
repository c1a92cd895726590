"""What every backend shares: the :class:`Backend` protocol, :class:`BackendError`, the
throttled progress callback and the driver loop of the pool backends.

A backend is any object with ``run(specs, progress) -> Iterator[TrialResult]``: a generator
that yields one result per spec, in completion order, and cleans up (cancels what is still
outstanding, stops its workers) when it is closed early, e.g. by Ctrl-C in the driver.
``progress(trial_id, epochs_done, epochs_total)`` is always called in the driver's thread, from
every backend: workers post their epoch counts to the driver, which calls it between results.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ..grid import trial_label
from ..store import TrialResult
from ..trial import Progress, resolved_settings

#: What the install hint says when the Dask extra is missing.
DASK_HINT = "pip install 'rnn_diag[dask]'"


class BackendError(Exception):
    """A backend cannot be used as asked (extra not installed, scheduler unreachable, ...)."""


class Backend(Protocol):
    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]: ...


def failed_result(spec, reason: str) -> TrialResult:
    """The row of a trial that could not deliver a result (its worker died, ...): the same
    settings columns as a trial's own row, so that a failed row changes no column's type."""
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
