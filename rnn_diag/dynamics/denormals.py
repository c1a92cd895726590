"""Flushing subnormal numbers to zero while rnn_diag computes, and only then.

Arithmetic on subnormal floats (below ~1.2e-38 in float32) is 10-100x slower on x86 CPUs. A
saturated gate or a vanishing gradient produces them easily, and one slow matmul per timestep
turns a millisecond recursion into seconds. Values that small are below every tolerance
rnn_diag reports (its norms are carried in log space), so they are flushed to zero for the
duration of the analysis. PyTorch offers no getter for the mode, so the current state is read
off one division, and restored exactly as it was.
"""

from __future__ import annotations

import contextlib

import torch


def flushing_denormals() -> bool:
    """Whether the calling thread currently flushes subnormal float32 results to zero."""
    smallest_normal = torch.tensor(torch.finfo(torch.float32).tiny)
    return float(smallest_normal / 4) == 0.0


@contextlib.contextmanager
def flush_denormals():
    """Context manager: flush subnormals to zero on CPU inside, restore the previous mode after.

    Example:
        >>> before = flushing_denormals()
        >>> with flush_denormals():
        ...     pass
        >>> flushing_denormals() == before
        True
    """
    if flushing_denormals() or not torch.set_flush_denormal(True):
        yield  # already on, or not supported on this CPU
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
