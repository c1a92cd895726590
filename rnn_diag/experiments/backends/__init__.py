"""How trials are executed: the one place that decides it. The driver hands a backend trial
specs and gets results back; only the driver writes the store, so a backend never touches disk.

A backend is any object with ``run(specs, progress) -> Iterator[TrialResult]`` (see
:mod:`~rnn_diag.experiments.backends.base` for the contract). Backends (chosen by
:func:`make_backend`):

* :class:`InProcess`: one trial after the other in this process;
* :class:`ProcessPool`: ``--jobs N`` spawned worker processes on this machine;
* :class:`~rnn_diag.experiments.backends.dask.DaskBackend`: a Dask cluster (optional extra).

Layout: :mod:`.base` (what every backend shares), :mod:`.local` (this machine) and
:mod:`.dask` (importing it imports ``distributed``, so this package does not).
"""

from __future__ import annotations

from .base import DASK_HINT, Backend, BackendError, Throttled, drive, failed_result
from .local import DEFAULT_THREADS, InProcess, ProcessPool

__all__ = [
    "DASK_HINT",
    "DEFAULT_THREADS",
    "Backend",
    "BackendError",
    "InProcess",
    "ProcessPool",
    "Throttled",
    "drive",
    "failed_result",
    "make_backend",
]


def make_backend(kind: str = "local", jobs: int | None = None,
                 scheduler: str | None = None, threads: int | None = None) -> Backend:
    """The backend for the ``run`` command's ``--backend``, ``--jobs``, ``--scheduler`` and
    ``--threads``.

    * ``local``: in-process for ``jobs`` None, else ``jobs`` worker processes; ``threads``
      torch threads per trial (None: :data:`~.local.DEFAULT_THREADS`, 1);
    * ``dask``: on the cluster at ``scheduler``, with ``jobs`` the most trials outstanding at
      once (None: all); without a scheduler on a ``LocalCluster`` of ``jobs`` single-threaded
      workers (None: one per CPU), started and closed by the run; ``threads`` torch threads
      per trial (None: a machine's CPUs divided by its Dask threads, see :mod:`.dask`).

    Raises:
        BackendError: unknown kind, a scheduler for the local backend, or Dask not installed.
    """
    if kind == "local":
        if scheduler is not None:
            raise BackendError("--scheduler needs --backend dask")
        return InProcess(threads) if jobs is None else ProcessPool(jobs, threads)
    if kind == "dask":
        try:
            # deferred: .dask imports the optional, heavy `distributed` (only for --backend dask)
            from .dask import DaskBackend
        except ImportError as exc:
            raise BackendError(f"--backend dask needs Dask distributed ({exc}); "
                               f"install it with: {DASK_HINT}") from None
        return DaskBackend(scheduler=scheduler, jobs=jobs, threads=threads)
    raise BackendError(f"unknown backend {kind!r}; expected 'local' or 'dask'")
