"""What every scan layer of :mod:`rnn_diag.scans` shares: the scan point the probe watches.

A *scan layer* computes per-step coefficients from its input, runs the diagonal linear
recurrence ``h_t = a_t ⊙ h_{t-1} + b_t`` (:func:`rnn_diag.dynamics.linear_scan.linear_scan`) and
reads its output from the states. Built on :class:`ScanLayer`, the recurrence runs inside a
:class:`DiagonalScan` submodule (``self.scan``), called exactly once per forward as
``self.scan(a, b, h0)``. That call is the layer's *scan point*: a probe attached to the model
hooks it and receives ``a``, ``b``, ``h0`` and the states ``h`` as the forward computed them,
and the gradient reaching ``h`` from the read-out, so it never re-runs the layer
(docs/design.md §23). Layers that are not built this way are described to the probe from
outside by :func:`rnn_diag.register_scan`.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..dynamics.linear_scan import diagonal_scan

__all__ = ["DiagonalScan", "ScanLayer"]


class DiagonalScan(nn.Module):
    """``h = scan(a, b, h0)``: the recurrence h_t = a_t ⊙ h_{t-1} + b_t, batch-first.

    Args:
        sequential: always run the plain loop (for checks); otherwise ``mode`` decides.
        mode: "parallel" (default, the chunked scan; see
            :func:`rnn_diag.dynamics.linear_scan.diagonal_scan` for why also on a CPU) or
            "sequential". Both give the same values up to rounding.

    Shapes: ``a, b: [B, T, *S]`` (real or complex), ``h0: [B, *S]`` or None (zeros); returns
    ``h: [B, T, *S]``.
    """

    def __init__(self, sequential: bool = False, mode: str = "parallel"):
        super().__init__()
        self.sequential = sequential
        self.mode = mode

    def forward(self, a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
        return diagonal_scan(a, b, h0, "sequential" if self.sequential else self.mode)


class ScanLayer(nn.Module):
    """Base of the scan layers: a layer whose recurrence is ``self.scan`` (a
    :class:`DiagonalScan`) called once per forward.

    Subclasses implement ``forward(x [B, T, I], h0=None) -> y [B, T, O]`` through
    ``self.scan(a, b, h0)``, and:

    * ``state_shape``: the shape S of one sample's state (``(N,)``, ``(D, N)``);
    * ``eigenvalues() -> Tensor [*S]``: the decays a at zero input (constant for LRU/S4D, the
      value at x = 0 for input-dependent ones; see each class);
    * ``input_dependent``: whether a_t depends on the input.

    ``set_sequential(True)`` switches the scan to the plain loop (for tests and checks).
    """

    state_shape: tuple[int, ...]
    input_dependent: bool = False

    def __init__(self):
        super().__init__()
        self.scan = DiagonalScan()

    def set_sequential(self, sequential: bool = True) -> ScanLayer:
        self.scan.sequential = sequential
        return self

    def eigenvalues(self) -> Tensor:
        raise NotImplementedError
