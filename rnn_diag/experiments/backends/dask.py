"""Run trials on a Dask cluster (the optional extra ``pip install 'rnn_diag[dask]'``).

Importing this module imports ``distributed``; :func:`~rnn_diag.experiments.backends.make_backend`
does it only for ``--backend dask``.

* Where: on the cluster whose scheduler listens at ``scheduler`` (``tcp://HOST:PORT``), or,
  without one, on a ``LocalCluster`` of ``jobs`` single-threaded worker processes (default one
  per CPU) on 127.0.0.1, started for the run and closed after it.
* No shared filesystem: a trial's :class:`~rnn_diag.experiments.store.TrialResult` (its row and
  tables, typically kilobytes) travels back to the driver, which alone writes the store.
* Worker death: the scheduler reruns a trial whose worker died on another worker; after
  ``distributed.scheduler.allowed-failures`` deaths (default 3) it gives up and the trial is
  stored as ``failed`` with the reason (``KilledWorker: ...``). Finished trials are stored as
  they arrive, so nothing finished is lost.
* Torch threads per trial (unless ``threads`` is given): the CPUs of the worker's machine
  divided by the Dask threads of all workers on that machine, at least 1, i.e. one trial per
  Dask thread without oversubscribing. A LocalCluster of 2 workers x 1 thread on 2 CPUs gives 1
  torch thread per trial, the same as ``--jobs 2`` locally. (Small models gain nothing from
  more threads: on a busy 2-CPU machine 2 threads per trial were 4-6x slower than 1, see
  ``benchmarks/dask_throughput.py``; give workers as many Dask threads as trials should run.)
* Epoch progress: workers send ``(trial_id, done, total)`` as Dask events on a topic of the
  sweep's own (``Worker.log_event``, batched with the worker's other messages to the
  scheduler); the driver subscribes to it.
* Stopping (Ctrl-C in the driver): outstanding tasks are cancelled; as Dask cannot interrupt a
  running task, the driver also tells every worker that the sweep stopped, and its running
  trials end at their next epoch. A LocalCluster is closed in any case.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import uuid
from collections.abc import Callable, Iterator

import distributed
import torch
from dask.system import CPU_COUNT

from ..store import TrialResult
from ..trial import Progress, run_trial
from .base import BackendError, Throttled, drive, failed_result

#: How long to wait for the scheduler at ``scheduler`` before giving up (seconds).
CONNECT_TIMEOUT = 30


def _host(address: str) -> str:
    """``tcp://10.0.0.5:8786`` -> ``10.0.0.5``."""
    return address.split("://", 1)[-1].rsplit(":", 1)[0]


def host_slots(workers: dict) -> dict[str, int]:
    """Dask threads per machine, from ``Client.scheduler_info()["workers"]``.

    >>> host_slots({"tcp://10.0.0.5:1": {"nthreads": 1}, "tcp://10.0.0.5:2": {"nthreads": 1},
    ...             "tcp://10.0.0.6:1": {"nthreads": 4}})
    {'10.0.0.5': 2, '10.0.0.6': 4}
    """
    slots: dict[str, int] = {}
    for address, info in workers.items():
        slots[_host(address)] = slots.get(_host(address), 0) + int(info["nthreads"])
    return slots


def torch_threads(cpus: int, slots: int) -> int:
    """Torch threads of one trial on a machine with ``cpus`` CPUs and ``slots`` Dask threads.

    >>> torch_threads(2, 2), torch_threads(16, 4), torch_threads(2, 8)
    (1, 4, 1)
    """
    return max(1, cpus // max(1, slots))


#: On a worker: the sweeps whose driver stopped (Ctrl-C); their trials end at the next epoch.
_STOPPED: set[str] = set()


class SweepStopped(Exception):
    """Raised inside a trial whose sweep was stopped; the trial's result is discarded."""


def _stop(token: str) -> None:
    _STOPPED.add(token)


def _run_on_worker(trial: Callable, spec, token: str, report: bool, threads: int | None,
                   slots: dict[str, int]) -> TrialResult:
    """The task each trial is on the cluster: set torch threads, run, report epochs, and end
    early once the driver stopped the sweep (Dask cannot interrupt a running task)."""
    worker = distributed.get_worker()
    if threads is None:
        here = slots.get(_host(worker.address), worker.state.nthreads)
        threads = torch_threads(CPU_COUNT, here)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    post = Throttled(lambda *msg: worker.log_event(token, msg)) if report else None

    def progress(trial_id: str, done: int, total: int) -> None:
        if token in _STOPPED:
            raise SweepStopped(f"the sweep was stopped after epoch {done}")
        if post is not None:
            post(trial_id, done, total)

    return trial(spec, progress)


class DaskBackend:
    """Trials as Dask tasks; see the module docstring.

    Args:
        scheduler: address of a running scheduler (``tcp://HOST:PORT``); None starts a
            ``LocalCluster`` for the run.
        jobs: with a scheduler, the most trials outstanding at once (None: all of them, the
            scheduler balances); without, the number of LocalCluster workers (None: one per
            CPU).
        threads: torch threads per trial (None: see the module docstring).
        trial: the function a worker runs, ``trial(spec, progress) -> TrialResult``; it must be
            importable (or picklable by value) on the workers.
    """

    def __init__(self, scheduler: str | None = None, jobs: int | None = None,
                 threads: int | None = None, trial: Callable = run_trial):
        if jobs is not None and jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.scheduler = scheduler
        self.jobs = jobs
        self.threads = threads
        self.trial = trial

    def _connect(self, opened: dict) -> None:
        """Start a LocalCluster or connect to the scheduler; what is opened goes into
        ``opened`` at once, so that it is closed even if Ctrl-C comes in between."""
        if self.scheduler is None:
            opened["cluster"] = distributed.LocalCluster(
                n_workers=self.jobs or CPU_COUNT, threads_per_worker=1, processes=True,
                # CRITICAL: at shutdown a worker may log an ERROR (a heartbeat to the scheduler
                # that just closed) into the user's terminal; a trial's own errors come back
                # in its result, and a worker's death as KilledWorker ("worker died: ...")
                host="127.0.0.1", silence_logs=logging.CRITICAL, dashboard_address=None,
                # its HTTP server (health, metrics) would take port 8787 otherwise
                scheduler_kwargs={"dashboard_address": ":0"})
            opened["client"] = distributed.Client(opened["cluster"], set_as_default=False)
            opened["client"].register_plugin(_IgnoreCtrlC())
            return
        try:
            opened["client"] = distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT,
                                                  set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise BackendError(
                f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None

    def run(self, specs: list, progress: Progress | None = None) -> Iterator[TrialResult]:
        if not specs:
            return
        opened: dict = {}
        events: queue.Queue = queue.Queue()
        pending: dict = {}
        token = f"rnn_diag-sweep-{uuid.uuid4().hex}"  # progress topic and stop flag
        report = progress is not None
        try:
            self._connect(opened)
            client = opened["client"]
            if report:
                client.subscribe_topic(token, lambda event: events.put(("epoch", event[1])))
            slots = host_slots(client.scheduler_info(n_workers=-1)["workers"])

            def submit(spec):
                key = f"trial-{spec.id}-{uuid.uuid4().hex[:8]}"
                future = client.submit(_run_on_worker, self.trial, spec, token, report,
                                       self.threads, slots, key=key, pure=False)
                future.add_done_callback(lambda f: events.put(("done", f)))
                return future

            limit = self.jobs if self.scheduler is not None else None
            yield from drive(specs, submit, _outcome, events, pending, progress, limit)
        finally:
            _close(opened, pending, token, report)


def _close(opened: dict, pending: dict, token: str, report: bool) -> None:
    client, cluster = opened.get("client"), opened.get("cluster")
    if client is not None:
        if pending:  # stopped early (Ctrl-C): drop what is queued, end what runs
            client.cancel(list(pending), force=True)
            with contextlib.suppress(Exception):  # best effort: they are cancelled anyway
                client.run(_stop, token, on_error="ignore")
        if report:
            client.unsubscribe_topic(token)
        client.close()
    if cluster is not None:
        cluster.close()


class _IgnoreCtrlC(distributed.WorkerPlugin):
    """On the workers of our own LocalCluster (restarted ones too): ignore SIGINT. A
    terminal's Ctrl-C goes to the whole process group; the driver alone should handle it (and
    close the cluster) instead of every worker printing a traceback."""

    name = "rnn_diag-ignore-ctrl-c"

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _outcome(future, spec) -> TrialResult:
    try:
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - a worker death (KilledWorker) fails the trial
        return failed_result(spec, f"worker died: {type(exc).__name__}: {exc}")
    finally:
        future.release()  # the result is on the driver now; free it on the cluster
    return result
