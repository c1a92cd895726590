"""The LSTM cell, linearised; its adjoint state is the pair [a | e] (see the class)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import scan_kernels
from ..workspace import Workspace
from .base import CellWeights, Steps, saturated_fraction, window_blocks, window_rows


class LSTMSteps(Steps):
    """LSTM: i, f, o = σ(·), g = tanh(·), c_t = f c_{t-1} + i g, h_t = o tanh(c_t).

    The adjoint state is [a | e] (see the module docstring). With δc = e + a ⊙ k, k = o(1-tanh²c):
    pre-activation gradients are [δc⊙g i(1-i), δc⊙c_prev f(1-f), δc⊙i(1-g²), a⊙tanh(c) o(1-o)];
    a_{t-1} = W_hhᵀ (those) and e_{t-1} = f_t ⊙ δc_t.

    The four factors are stored gate-major, ``[4, T, B, H]``: each gate's block is contiguous, so
    the vectorised passes and the per-step products run on dense memory.
    """

    def __init__(
        self,
        w: CellWeights,
        x: Tensor,
        h_prev: Tensor,
        h: Tensor,
        c0: Tensor,
        ws: Workspace | None = None,
        saturation: bool = False,
    ):
        self.w = w
        ws = ws or Workspace()
        T, B, H = h_prev.shape
        self.hidden_size = H
        self.state_size = 2 * H
        like = dict(dtype=h_prev.dtype, device=h_prev.device)
        # The gate buffer is reused for the factors: every [4, T, B, H] pass is memory-bound.
        gates = ws.empty("lstm.gates", (4, T, B, H), **like)
        x_flat, h_flat = x.reshape(T * B, -1), h_prev.reshape(T * B, H)
        w_ih, w_hh = w.weight_ih.view(4, H, -1), w.weight_hh.view(4, H, H)
        bias = None if w.bias_ih is None else (w.bias_ih + w.bias_hh).view(4, H)
        for gate in range(4):
            flat = gates[gate].view(T * B, H)
            if bias is None:
                torch.mm(x_flat, w_ih[gate].t(), out=flat)
            else:
                torch.addmm(bias[gate], x_flat, w_ih[gate].t(), out=flat)
            flat.addmm_(h_flat, w_hh[gate].t())
        i, f, g, o = gates.unbind(0)
        gates[:2].sigmoid_()
        o.sigmoid_()
        g.tanh_()
        self.saturation = {}
        if saturation:
            self.saturation = {
                name: saturated_fraction(gate, "tanh" if name == "g" else "sigmoid")
                for name, gate in zip("ifgo", (i, f, g, o), strict=True)
            }
        ig = torch.mul(i, g, out=ws.empty("lstm.ig", (T, B, H), **like))
        c = ws.empty("lstm.c", (T, B, H), **like)
        per_step = c0.dim() == 3  # the cell state entering each step, given
        if per_step:
            torch.addcmul(ig, f, c0, out=c)
        prev = c0
        for t in range(0 if per_step else T):  # a linear recurrence; one fused op per step
            prev = torch.addcmul(ig[t], f[t], prev, out=c[t])
        tanh_c = torch.tanh(c, out=ws.empty("lstm.tanh_c", (T, B, H), **like))
        if saturation:
            self.saturation["c"] = saturated_fraction(tanh_c, "tanh")
        # o (1 - tanh² c) = o - h tanh c, as h = o tanh c
        self.k = torch.addcmul(o, h, tanh_c, value=-1, out=ws.empty("lstm.k", (T, B, H), **like))
        self.forget = ws.empty("lstm.forget", (T, B, H), **like).copy_(f)
        ig.mul_(g).neg_().add_(i)  # i (1 - g²) = i - (i g) g
        i.addcmul_(i, i, value=-1).mul_(g)  # g i (1 - i)
        g.copy_(ig)
        f.addcmul_(f, f, value=-1)  # c_prev f (1 - f)
        if per_step:
            f.mul_(c0)
        else:
            f[0].mul_(c0)
            f[1:].mul_(c[:-1])
        o.addcmul_(o, o, value=-1).mul_(tanh_c)  # tanh(c) o (1 - o)
        self.factors = gates
        self._w, self._wt = w.weight_hh.detach(), None

    def _gates_at(self, t: int) -> Tensor:
        """The four factors at step t, batch-major ``[B, 4, H]``."""
        return self.factors[:, t].transpose(0, 1)

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        H = self.hidden_size
        a, e = V[..., :H], V[..., H:]
        dc = torch.addcmul(e, a, self.k[t].unsqueeze(1))
        F = self._gates_at(t).unsqueeze(1)  # [B, 1, 4, H]
        dpre = torch.cat([F[:, :, :3] * dc.unsqueeze(2), F[:, :, 3:] * a.unsqueeze(2)], 2)
        return torch.cat([torch.matmul(dpre.flatten(2), self._w),
                          self.forget[t].unsqueeze(1) * dc], dim=-1, out=out)

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        H = self.hidden_size
        if self._wt is None:
            self._wt = self._w.t().contiguous()
        a, e = V[..., :H], V[..., H:]
        Y = torch.matmul(a, self._wt).unflatten(2, (4, H))  # [B, p, 4, H]
        F = self._gates_at(t).unsqueeze(1)
        dc = (F[:, :, :3] * Y[:, :, :3]).sum(2).addcmul_(self.forget[t].unsqueeze(1), e)
        dh = torch.addcmul(F[:, :, 3] * Y[:, :, 3], self.k[t].unsqueeze(1), dc)
        return torch.cat([dh, dc], dim=-1)

    def vjp_window(self, lo: int, hi: int, blocks: Tensor) -> None:
        p = blocks.shape[2]
        scan_kernels.lstm_block_compiled(
            window_rows(self.factors, lo, hi, p, dim=2), window_rows(self.k, lo, hi, p),
            window_rows(self.forget, lo, hi, p), self._w, window_blocks(blocks, lo, hi), None,
            0, hi - lo)

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        scan_kernels.lstm_block_compiled(self.factors, self.k, self.forget, self._w, X, g, t0, t1)

    def vjp_all(self, v: Tensor) -> Tensor:
        dc = self.cell_grads(v)
        a = torch.matmul(self._pre_activation_grads(v, dc), self.w.weight_hh)
        return torch.cat([a, self.forget * dc], dim=-1)

    def jacobian(self, t: int) -> Tensor:
        """The joint ``∂(h_t, c_t)/∂(h_{t-1}, c_{t-1})`` as ``[B, 2H, 2H]`` (h first)."""
        H = self.hidden_size
        blocks = self.w.weight_hh.view(4, H, H)
        F = self.factors[:, t]  # [4, B, H]
        dc_dh = torch.einsum("gbi,gij->bij", F[:3], blocks[:3])
        B = F.shape[1]
        J = F.new_zeros(B, 2 * H, 2 * H)
        k = self.k[t].unsqueeze(-1)
        J[:, :H, :H] = F[3].unsqueeze(-1) * blocks[3] + k * dc_dh
        J[:, H:, :H] = dc_dh
        J[:, :H, H:] = torch.diag_embed(self.k[t] * self.forget[t])
        J[:, H:, H:] = torch.diag_embed(self.forget[t])
        return J

    def pair_from_total(self, h_grads: Tensor, c_grads: Tensor) -> Tensor:
        """The adjoint state [a | e] from the total ∂L/∂h_t and ∂L/∂c_t (inverse of
        :meth:`cell_grads`), ``[T, B, 2H]``."""
        return torch.cat([h_grads, c_grads - h_grads * self.k], dim=-1)

    def cell_grads(self, scaled: Tensor) -> Tensor:
        """Total ∂L/∂c_t (path through h_t included), [T, B, H], in the adjoint's scaled units."""
        H = self.hidden_size
        return torch.addcmul(scaled[..., H:], scaled[..., :H], self.k)

    def _pre_activation_grads(self, scaled: Tensor, dc: Tensor) -> Tensor:
        """``[T, B, 4H]`` gradients w.r.t. the gate pre-activations, batch-major."""
        H = self.hidden_size
        T, B = dc.shape[:2]
        dpre = torch.empty(T, B, 4, H, dtype=dc.dtype, device=dc.device)
        gate_major = dpre.permute(2, 0, 1, 3)
        torch.mul(self.factors[:3], dc, out=gate_major[:3])
        torch.mul(self.factors[3], scaled[..., :H], out=gate_major[3])
        return dpre.view(T, B, 4 * H)

    def input_grads(self, scaled: Tensor) -> Tensor:
        dpre = self._pre_activation_grads(scaled, self.cell_grads(scaled))
        return torch.matmul(dpre, self.w.weight_ih)
