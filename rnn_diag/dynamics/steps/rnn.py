"""The Elman RNN cell (tanh or relu), linearised."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import scan_kernels
from ..workspace import Workspace
from .base import CellWeights, Steps, saturated_fraction, window_blocks, window_rows


class RNNSteps(Steps):
    """Elman RNN h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh); J_t = diag(φ'_t) W_hh.

    φ'_t needs only the outputs: 1 - h_t² for tanh, 1[h_t > 0] for relu (PyTorch's relu
    backward also gives 0 at exactly 0).
    """

    def __init__(
        self,
        w: CellWeights,
        h: Tensor,
        saturation: bool = False,
        workspace: Workspace | None = None,
    ):
        self.w = w
        self.state_size = h.shape[-1]
        if w.kind == "rnn_tanh":
            # Into a reused buffer: a fresh [T, B, H] tensor costs more in page faults than
            # the arithmetic (25 ms of the 140 ms adjoint at T=1000, B=32, H=256).
            buf = (workspace or Workspace()).empty("rnn.deriv", h.shape, dtype=h.dtype,
                                                   device=h.device)
            self.deriv = torch.mul(h, h, out=buf).neg_().add_(1)
        elif w.kind == "rnn_relu":
            # A NaN state has no derivative: keep it NaN so the gradient is flagged, not cut.
            self.deriv = torch.where(torch.isnan(h), h, (h > 0).to(h.dtype))
        else:
            raise ValueError(f"RNNSteps needs kind rnn_tanh or rnn_relu, got {w.kind!r}")
        self.saturation = {"h": saturated_fraction(self.deriv)} if saturation else {}
        self._w = w.weight_hh.detach()
        self._wt: Tensor | None = None

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.matmul(V * self.deriv[t].unsqueeze(1), self._w, out=out)

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        if self._wt is None:  # V @ Wᵀ is ~25% faster on a contiguous copy for thin V
            self._wt = self._w.t().contiguous()
        return torch.matmul(V, self._wt).mul_(self.deriv[t].unsqueeze(1))

    def vjp_window(self, lo: int, hi: int, blocks: Tensor) -> None:
        p = blocks.shape[2]
        scan_kernels.rnn_block_compiled(window_rows(self.deriv, lo, hi, p), self._w,
                                        window_blocks(blocks, lo, hi), None, 0, hi - lo)

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        scan_kernels.rnn_block_compiled(self.deriv, self._w, X, g, t0, t1)

    def vjp_all(self, v: Tensor) -> Tensor:
        return torch.matmul(self.deriv * v, self.w.weight_hh)

    def jacobian(self, t: int) -> Tensor:
        """``J_t = diag(φ'_t) W_hh`` as ``[B, H, H]``."""
        return self.deriv[t].unsqueeze(-1) * self.w.weight_hh

    def input_grads(self, scaled: Tensor) -> Tensor:
        return torch.matmul(self.deriv * scaled, self.w.weight_ih)
