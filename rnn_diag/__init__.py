"""rnn_diag: see how gradients flow, and fail to flow, through recurrent networks.

Public API (imported lazily, so ``rnn-diag --help`` does not pay for importing torch):

    attach(model, modules=None, every=1, *, saturation=False, jacobians=None,
           jacobian_samples="auto") -> Probe
    Probe
    ProbeWarning                                  what the probe could not record exactly, and why
    spectrum(W) -> Spectrum                       eigen/singular values of one matrix
    recurrent_spectra(model) -> DataFrame         every recurrent weight block of a model
    lyapunov_spectrum(step, h0, inputs=None, ...) -> Tensor [k], nats per step
    gradient_summary(log10_norms) -> dict | DataFrame
    record(run_dir, model, every=50, ...) -> Recorder   a user's training loop into a run folder
    Recorder
    fixed_points(step, initial_states, inputs=None, ...) -> FixedPoints   fixed and slow points
    register_scan(cls, adapter)                   declare a diagonal-scan layer class from outside
    ScanTrace                                     what an adapter returns (decays, drives, read-out)

Reference scan layers (LRU, MinGRU, SelectiveSSM, ScanStack) live in :mod:`rnn_diag.scans`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "attach": ".probes",
    "Probe": ".probes",
    "ProbeWarning": ".probes",
    "spectrum": ".dynamics.spectrum",
    "Spectrum": ".dynamics.spectrum",
    "gradient_summary": ".dynamics.summary",
    "recurrent_spectra": ".modules.dynamics",
    "lyapunov_spectrum": ".modules.dynamics",
    "record": ".recording",
    "Recorder": ".recording",
    "register_scan": ".modules.scans",
    "fixed_points": ".modules.fixed_points",
    "ScanTrace": ".modules.scans",
}

__all__ = [
    "Probe",
    "ProbeWarning",
    "Recorder",
    "ScanTrace",
    "Spectrum",
    "__version__",
    "attach",
    "fixed_points",
    "gradient_summary",
    "lyapunov_spectrum",
    "record",
    "recurrent_spectra",
    "register_scan",
    "spectrum",
]

if TYPE_CHECKING:
    from .dynamics.spectrum import Spectrum, spectrum
    from .dynamics.summary import gradient_summary
    from .modules.dynamics import lyapunov_spectrum, recurrent_spectra
    from .modules.fixed_points import fixed_points
    from .modules.scans import ScanTrace, register_scan
    from .probes import Probe, ProbeWarning, attach
    from .recording import Recorder, record


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rnn_diag' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
