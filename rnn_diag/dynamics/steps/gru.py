"""The GRU cell, linearised."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import scan_kernels
from ..workspace import Workspace
from .base import CellWeights, Steps, affine_into, saturated_fraction, window_blocks, window_rows


class GRUSteps(Steps):
    """GRU: r, z = σ(·), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h = (1-z) n + z h_prev.

    J_tᵀ a = W_hhᵀ [a⊙P_r, a⊙P_z, a⊙P_n⊙r] + a ⊙ z with P_n = (1-z)(1-n²),
    P_z = (h_prev - n) z(1-z), P_r = P_n ⊙ (W_hn h_prev + b_hn) ⊙ r(1-r).
    """

    def __init__(
        self,
        w: CellWeights,
        x: Tensor,
        h_prev: Tensor,
        ws: Workspace | None = None,
        saturation: bool = False,
    ):
        self.w = w
        ws = ws or Workspace()
        T, B, H = h_prev.shape
        self.state_size = H
        like = dict(dtype=h_prev.dtype, device=h_prev.device)
        gi = affine_into(ws.empty("gru.gi", (T, B, 3 * H), **like), x, w.weight_ih, w.bias_ih)
        gh = affine_into(
            ws.empty("gru.gh", (T, B, 3 * H), **like), h_prev, w.weight_hh, w.bias_hh
        )
        rz = gi[..., : 2 * H].add_(gh[..., : 2 * H]).sigmoid_()
        r, z = rz[..., :H], rz[..., H:]
        hn = gh[..., 2 * H :]
        n = gi[..., 2 * H :].addcmul_(r, hn).tanh_()
        p_n = ws.empty("gru.p_n", (T, B, H), **like)
        torch.mul(n, n, out=p_n).neg_().add_(1)
        p_n.addcmul_(p_n, z, value=-1)  # (1 - n²)(1 - z)
        hidden = ws.empty("gru.hidden", (T, B, 3, H), **like)
        h_r, h_z, h_n = hidden.unbind(2)
        torch.addcmul(r, r, r, value=-1, out=h_r).mul_(p_n).mul_(hn)  # P_n hn r(1-r)
        torch.sub(h_prev, n, out=h_n)
        torch.addcmul(z, z, z, value=-1, out=h_z).mul_(h_n)  # (h_prev - n) z(1-z)
        torch.mul(p_n, r, out=h_n)  # P_n r
        self.p_n, self.hidden, self.z = p_n, hidden, z
        self._w, self._wt = w.weight_hh.detach(), None
        self.saturation = {}
        if saturation:
            self.saturation = {
                "r": saturated_fraction(r, "sigmoid"),
                "z": saturated_fraction(z, "sigmoid"),
                "n": saturated_fraction(n, "tanh"),
            }

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        dpre = (self.hidden[t].unsqueeze(1) * V.unsqueeze(2)).flatten(2)  # [B, p, 3H]
        return torch.matmul(dpre, self._w, out=out).addcmul_(self.z[t].unsqueeze(1), V)

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        if self._wt is None:
            self._wt = self._w.t().contiguous()
        Y = torch.matmul(V, self._wt).unflatten(2, (3, self.state_size))  # [B, p, 3, H]
        return (self.hidden[t].unsqueeze(1) * Y).sum(2).addcmul_(self.z[t].unsqueeze(1), V)

    def vjp_window(self, lo: int, hi: int, blocks: Tensor) -> None:
        p = blocks.shape[2]
        scan_kernels.gru_block_compiled(
            window_rows(self.hidden, lo, hi, p), window_rows(self.z, lo, hi, p), self._w,
            window_blocks(blocks, lo, hi), None, 0, hi - lo)

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        scan_kernels.gru_block_compiled(self.hidden, self.z, self._w, X, g, t0, t1)

    def vjp_all(self, v: Tensor) -> Tensor:
        dpre = (self.hidden * v.unsqueeze(2)).flatten(2)
        return torch.matmul(dpre, self.w.weight_hh).addcmul_(v, self.z)

    def jacobian(self, t: int) -> Tensor:
        """``J_t = diag(z) + Σ_gates diag(P_gate) W_h,gate`` as ``[B, H, H]``."""
        B, _, H = self.hidden[t].shape
        blocks = self.w.weight_hh.view(3, H, H)
        J = torch.einsum("bgi,gij->bij", self.hidden[t], blocks)
        J.diagonal(dim1=1, dim2=2).add_(self.z[t])
        return J

    def input_grads(self, scaled: Tensor) -> Tensor:
        dpre = self.hidden * scaled.unsqueeze(2)
        dpre[:, :, 2] = self.p_n * scaled  # the input projection of n is not gated by r
        return torch.matmul(dpre.flatten(2), self.w.weight_ih)
