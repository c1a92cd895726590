"""The LSTM cell with a projection (``nn.LSTM(proj_size=P)``), linearised."""

from __future__ import annotations

import torch
from torch import Tensor

from ..workspace import Workspace
from .base import CellWeights, Steps, saturated_fraction


class ProjectedLSTMSteps(Steps):
    """LSTM with a projection (``nn.LSTM(proj_size=P)``): i, f, o = σ(·), g = tanh(·) from
    ``W_ih x_t + W_hh h_{t-1}`` (+ biases), c_t = f c_{t-1} + i g, m_t = o tanh(c_t) and
    h_t = W_hr m_t, with weight_hh ``[4H, P]``, weight_hr ``[P, H]``; h is ``[B, P]``, c ``[B, H]``.

    The adjoint state is [a | e] (see the module docstring), a of size P and e of size H, so
    S = P + H. With a' = a W_hr (``[B, H]``, the gradient reaching m_t), δc = e + a' ⊙ k and
    k = o(1-tanh²c): pre-activation gradients are [δc⊙g i(1-i), δc⊙c_prev f(1-f), δc⊙i(1-g²),
    a'⊙tanh(c) o(1-o)]; a_{t-1} = W_hhᵀ (those) (size P) and e_{t-1} = f_t ⊙ δc_t.

    Interface as :class:`LSTMSteps` (``hidden_size`` is H, ``proj_size`` P), without the
    compiled loops (``fill_block``, ``vjp_window``): the adjoint and the Jacobian-product
    sweeps run ``vjp_rows`` step by step.

    Args:
        w: the weights, ``w.weight_hr`` set.
        x: ``[T, B, I]``; h_prev, h: ``[T, B, P]`` states h_{t-1} and h_t; c0: ``[B, H]``.
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
        if w.weight_hr is None:
            raise ValueError("ProjectedLSTMSteps needs CellWeights.weight_hr")
        self.w = w
        ws = ws or Workspace()
        T, B, P = h_prev.shape
        H = c0.shape[-1]
        if tuple(w.weight_hr.shape) != (P, H) or tuple(w.weight_hh.shape) != (4 * H, P):
            raise ValueError(
                f"projected LSTM with h of size {P} and c of size {H} needs weight_hr [{P}, {H}] "
                f"and weight_hh [{4 * H}, {P}], got {tuple(w.weight_hr.shape)} and "
                f"{tuple(w.weight_hh.shape)}"
            )
        if h.shape != h_prev.shape:
            raise ValueError(f"h {tuple(h.shape)} and h_prev {tuple(h_prev.shape)} differ")
        self.hidden_size = H
        self.proj_size = P
        self.state_size = P + H
        like = dict(dtype=h_prev.dtype, device=h_prev.device)
        gates = ws.empty("lstmp.gates", (4, T, B, H), **like)
        x_flat, h_flat = x.reshape(T * B, -1), h_prev.reshape(T * B, P)
        w_ih, w_hh = w.weight_ih.view(4, H, -1), w.weight_hh.view(4, H, P)
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
        ig = torch.mul(i, g, out=ws.empty("lstmp.ig", (T, B, H), **like))
        c = ws.empty("lstmp.c", (T, B, H), **like)
        per_step = c0.dim() == 3  # the cell state entering each step, given
        if per_step:
            torch.addcmul(ig, f, c0, out=c)
        prev = c0
        for t in range(0 if per_step else T):
            prev = torch.addcmul(ig[t], f[t], prev, out=c[t])
        tanh_c = torch.tanh(c, out=ws.empty("lstmp.tanh_c", (T, B, H), **like))
        if saturation:
            self.saturation["c"] = saturated_fraction(tanh_c, "tanh")
        # Not o - h tanh c as in LSTMSteps: h is the projection, not o tanh c.
        k = ws.empty("lstmp.k", (T, B, H), **like)
        self.k = torch.mul(tanh_c, tanh_c, out=k).neg_().add_(1).mul_(o)
        self.forget = ws.empty("lstmp.forget", (T, B, H), **like).copy_(f)
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
        self.factors = gates  # [4, T, B, H], gate-major as in LSTMSteps
        # Detached: a' = a W_hr feeds out= products, which refuse tensors that require grad.
        self._w_hr, self._w_hh = w.weight_hr.detach(), w.weight_hh.detach()

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        P = self.proj_size
        a, e = V[..., :P], V[..., P:]
        a_m = torch.matmul(a, self._w_hr)  # [B, p, H]: the gradient reaching m_t
        dc = torch.addcmul(e, a_m, self.k[t].unsqueeze(1))
        F = self.factors[:, t].transpose(0, 1).unsqueeze(1)  # [B, 1, 4, H]
        dpre = torch.cat([F[:, :, :3] * dc.unsqueeze(2), F[:, :, 3:] * a_m.unsqueeze(2)], 2)
        return torch.cat([torch.matmul(dpre.flatten(2), self._w_hh),
                          self.forget[t].unsqueeze(1) * dc], dim=-1, out=out)

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        P, H = self.proj_size, self.hidden_size
        a, e = V[..., :P], V[..., P:]
        Y = torch.matmul(a, self._w_hh.t()).unflatten(2, (4, H))  # [B, p, 4, H]
        F = self.factors[:, t].transpose(0, 1).unsqueeze(1)
        dc = (F[:, :, :3] * Y[:, :, :3]).sum(2).addcmul_(self.forget[t].unsqueeze(1), e)
        dm = torch.addcmul(F[:, :, 3] * Y[:, :, 3], self.k[t].unsqueeze(1), dc)
        return torch.cat([torch.matmul(dm, self._w_hr.t()), dc], dim=-1)

    def vjp_all(self, v: Tensor) -> Tensor:
        """``J_tᵀ v[t]`` for every t: ``[T, B, P + H]``."""
        a_m = self._projected_back(v)
        dc = torch.addcmul(v[..., self.proj_size :], a_m, self.k)
        a = torch.matmul(self._pre_activation_grads(a_m, dc), self._w_hh)
        return torch.cat([a, self.forget * dc], dim=-1)

    def jacobian(self, t: int) -> Tensor:
        """The joint ``∂(h_t, c_t)/∂(h_{t-1}, c_{t-1})`` as ``[B, P+H, P+H]`` (h first)."""
        P, H = self.proj_size, self.hidden_size
        blocks = self._w_hh.view(4, H, P)
        w_hr = self._w_hr
        F = self.factors[:, t]  # [4, B, H]
        k, f = self.k[t], self.forget[t]
        dc_dh = torch.einsum("gbi,gij->bij", F[:3], blocks[:3])  # [B, H, P]
        dm_dh = F[3].unsqueeze(-1) * blocks[3] + k.unsqueeze(-1) * dc_dh  # m = o tanh c
        B = F.shape[1]
        J = F.new_zeros(B, P + H, P + H)
        J[:, :P, :P] = torch.matmul(w_hr, dm_dh)
        J[:, P:, :P] = dc_dh
        J[:, :P, P:] = w_hr * (k * f).unsqueeze(1)
        J[:, P:, P:] = torch.diag_embed(f)
        return J

    def pair_from_total(self, h_grads: Tensor, c_grads: Tensor) -> Tensor:
        """The adjoint state [a | e] from the total ∂L/∂h_t ``[T, B, P]`` and ∂L/∂c_t
        ``[T, B, H]`` (inverse of :meth:`cell_grads`), ``[T, B, P + H]``."""
        back = torch.matmul(h_grads, self._w_hr)
        return torch.cat([h_grads, torch.addcmul(c_grads, back, self.k, value=-1)], dim=-1)

    def cell_grads(self, scaled: Tensor) -> Tensor:
        """Total ∂L/∂c_t = e + (a W_hr) ⊙ k (path through h_t included), ``[T, B, H]``, in the
        adjoint's scaled units (``scaled`` is ``[T, B, P + H]``)."""
        return torch.addcmul(scaled[..., self.proj_size :], self._projected_back(scaled), self.k)

    def _projected_back(self, scaled: Tensor) -> Tensor:
        """``a W_hr``: the gradient reaching m_t = o tanh c_t, ``[T, B, H]``."""
        return torch.matmul(scaled[..., : self.proj_size], self._w_hr)

    def _pre_activation_grads(self, a_m: Tensor, dc: Tensor) -> Tensor:
        """``[T, B, 4H]`` gradients w.r.t. the gate pre-activations, batch-major."""
        H = self.hidden_size
        T, B = dc.shape[:2]
        dpre = torch.empty(T, B, 4, H, dtype=dc.dtype, device=dc.device)
        gate_major = dpre.permute(2, 0, 1, 3)
        torch.mul(self.factors[:3], dc, out=gate_major[:3])
        torch.mul(self.factors[3], a_m, out=gate_major[3])
        return dpre.view(T, B, 4 * H)

    def input_grads(self, scaled: Tensor) -> Tensor:
        """``∂L/∂x_t`` for every t, ``[T, B, I]``, from the adjoint ``[T, B, P + H]``."""
        a_m = self._projected_back(scaled)
        dc = torch.addcmul(scaled[..., self.proj_size :], a_m, self.k)
        return torch.matmul(self._pre_activation_grads(a_m, dc), self.w.weight_ih)
