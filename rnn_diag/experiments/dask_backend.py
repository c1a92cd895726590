"""Moved to :mod:`rnn_diag.experiments.backends.dask`; this module re-exports it for old
imports and pickled references. Importing it imports ``distributed``. (Patch module globals
such as ``CONNECT_TIMEOUT`` on :mod:`rnn_diag.experiments.backends.dask`, not here.)"""

from .backends.dask import (
    CONNECT_TIMEOUT,
    DaskBackend,
    SweepStopped,
    host_slots,
    torch_threads,
)

__all__ = ["CONNECT_TIMEOUT", "DaskBackend", "SweepStopped", "host_slots", "torch_threads"]
