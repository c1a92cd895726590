"""The LSTM cell, linearised, with or without a projection; its adjoint state is [a | e]."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import scan_kernels
from ..workspace import Workspace
from .base import CellWeights, Steps, saturated_fraction, window_blocks, window_rows


class LSTMFactors(Steps):
    """The LSTM maths both :class:`LSTMSteps` and :class:`ProjectedLSTMSteps` share.

    i, f, o = σ(·), g = tanh(·) from ``W_ih x_t + W_hh h_{t-1}`` (+ biases),
    c_t = f c_{t-1} + i g, m_t = o tanh(c_t), and h_t = m_t (:class:`LSTMSteps`) or
    h_t = W_hr m_t (:class:`ProjectedLSTMSteps`). The adjoint state is [a | e]: a = ∂L/∂h_t
    (size P, the size of h) and e the gradient reaching c_t from outside the step that produced
    it (size H). With a' = the gradient reaching m_t (a, or a W_hr), δc = e + a' ⊙ k and
    k = o(1-tanh²c): pre-activation gradients are [δc⊙g i(1-i), δc⊙c_prev f(1-f), δc⊙i(1-g²),
    a'⊙tanh(c) o(1-o)]; a_{t-1} = W_hhᵀ (those) and e_{t-1} = f_t ⊙ δc_t.

    The four factors are stored gate-major, ``[4, T, B, H]``: each gate's block is contiguous, so
    the vectorised passes and the per-step products run on dense memory.

    Args:
        w: the weights. x: ``[T, B, I]``; h_prev, h: ``[T, B, P]`` states h_{t-1} and h_t;
        c0: ``[B, H]`` initial cell state, or ``[T, B, H]``, the cell state entering every
            step (see :func:`rnn_diag.dynamics.cells.linearise`).
        ws: reuse its buffers (keys prefixed with the class's ``_prefix``).
        saturation: also record the saturated fraction of i, f, g, o and tanh(c).
    """

    _prefix = "lstm"
    #: the projection W_hr ``[P, H]``, detached; None: h = m
    _w_hr: Tensor | None = None

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
        T, B, P = h_prev.shape
        H = c0.shape[-1]
        self.hidden_size = H
        self.state_size = P + H
        like = dict(dtype=h_prev.dtype, device=h_prev.device)

        def buffer(name: str, shape: tuple) -> Tensor:
            return ws.empty(f"{self._prefix}.{name}", shape, **like)

        # The gate buffer is reused for the factors: every [4, T, B, H] pass is memory-bound.
        gates = buffer("gates", (4, T, B, H))
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
        ig = torch.mul(i, g, out=buffer("ig", (T, B, H)))
        c = buffer("c", (T, B, H))
        per_step = c0.dim() == 3  # the cell state entering each step, given
        if per_step:
            torch.addcmul(ig, f, c0, out=c)
        prev = c0
        for t in range(0 if per_step else T):  # a linear recurrence; one fused op per step
            prev = torch.addcmul(ig[t], f[t], prev, out=c[t])
        tanh_c = torch.tanh(c, out=buffer("tanh_c", (T, B, H)))
        if saturation:
            self.saturation["c"] = saturated_fraction(tanh_c, "tanh")
        self.k = self._output_factor(o, h, tanh_c, buffer("k", (T, B, H)))
        self.forget = buffer("forget", (T, B, H)).copy_(f)
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

    def _output_factor(self, o: Tensor, h: Tensor, tanh_c: Tensor, out: Tensor) -> Tensor:
        """k = ∂m_t/∂c_t = o (1 - tanh² c), written into ``out``."""
        return torch.mul(tanh_c, tanh_c, out=out).neg_().add_(1).mul_(o)

    def _to_m(self, a: Tensor) -> Tensor:
        """The gradient reaching m_t from a gradient on h_t (``a W_hr``, or a itself)."""
        return a if self._w_hr is None else torch.matmul(a, self._w_hr)

    def _from_m(self, dm: Tensor) -> Tensor:
        """The tangent of h_t from a tangent of m_t (``dm W_hrᵀ``, or dm itself)."""
        return dm if self._w_hr is None else torch.matmul(dm, self._w_hr.t())

    def _gates_at(self, t: int) -> Tensor:
        """The four factors at step t, batch-major ``[B, 4, H]``."""
        return self.factors[:, t].transpose(0, 1)

    @property
    def _h_size(self) -> int:
        return self.state_size - self.hidden_size

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        P = self._h_size
        a_m, e = self._to_m(V[..., :P]), V[..., P:]
        dc = torch.addcmul(e, a_m, self.k[t].unsqueeze(1))
        F = self._gates_at(t).unsqueeze(1)  # [B, 1, 4, H]
        dpre = torch.cat([F[:, :, :3] * dc.unsqueeze(2), F[:, :, 3:] * a_m.unsqueeze(2)], 2)
        return torch.cat([torch.matmul(dpre.flatten(2), self._w),
                          self.forget[t].unsqueeze(1) * dc], dim=-1, out=out)

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        P, H = self._h_size, self.hidden_size
        if self._wt is None:  # V @ Wᵀ is faster on a contiguous copy for thin V
            self._wt = self._w.t().contiguous()
        a, e = V[..., :P], V[..., P:]
        Y = torch.matmul(a, self._wt).unflatten(2, (4, H))  # [B, p, 4, H]
        F = self._gates_at(t).unsqueeze(1)
        dc = (F[:, :, :3] * Y[:, :, :3]).sum(2).addcmul_(self.forget[t].unsqueeze(1), e)
        dm = torch.addcmul(F[:, :, 3] * Y[:, :, 3], self.k[t].unsqueeze(1), dc)
        return torch.cat([self._from_m(dm), dc], dim=-1)

    def vjp_all(self, v: Tensor) -> Tensor:
        """``J_tᵀ v[t]`` for every t: ``[T, B, P + H]``."""
        a_m = self._to_m(v[..., : self._h_size])
        dc = torch.addcmul(v[..., self._h_size :], a_m, self.k)
        a = torch.matmul(self._pre_activation_grads(a_m, dc), self._w)
        return torch.cat([a, self.forget * dc], dim=-1)

    def jacobian(self, t: int) -> Tensor:
        """The joint ``∂(h_t, c_t)/∂(h_{t-1}, c_{t-1})`` as ``[B, P+H, P+H]`` (h first)."""
        P, H = self._h_size, self.hidden_size
        blocks = self._w.view(4, H, P)
        F = self.factors[:, t]  # [4, B, H]
        k, f = self.k[t], self.forget[t]
        dc_dh = torch.einsum("gbi,gij->bij", F[:3], blocks[:3])  # [B, H, P]
        dm_dh = F[3].unsqueeze(-1) * blocks[3] + k.unsqueeze(-1) * dc_dh  # m = o tanh c
        J = F.new_zeros(F.shape[1], P + H, P + H)
        if self._w_hr is None:
            J[:, :P, :P] = dm_dh
            J[:, :P, P:] = torch.diag_embed(k * f)
        else:
            J[:, :P, :P] = torch.matmul(self._w_hr, dm_dh)
            J[:, :P, P:] = self._w_hr * (k * f).unsqueeze(1)
        J[:, P:, :P] = dc_dh
        J[:, P:, P:] = torch.diag_embed(f)
        return J

    def pair_from_total(self, h_grads: Tensor, c_grads: Tensor) -> Tensor:
        """The adjoint state [a | e] from the total ∂L/∂h_t ``[T, B, P]`` and ∂L/∂c_t
        ``[T, B, H]`` (inverse of :meth:`cell_grads`), ``[T, B, P + H]``."""
        return torch.cat([h_grads, torch.addcmul(c_grads, self._to_m(h_grads), self.k,
                                                 value=-1)], dim=-1)

    def cell_grads(self, scaled: Tensor) -> Tensor:
        """Total ∂L/∂c_t = e + a' ⊙ k (path through h_t included), ``[T, B, H]``, in the
        adjoint's scaled units (``scaled`` is ``[T, B, P + H]``)."""
        P = self._h_size
        return torch.addcmul(scaled[..., P:], self._to_m(scaled[..., :P]), self.k)

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
        a_m = self._to_m(scaled[..., : self._h_size])
        dc = torch.addcmul(scaled[..., self._h_size :], a_m, self.k)
        return torch.matmul(self._pre_activation_grads(a_m, dc), self.w.weight_ih)


class LSTMSteps(LSTMFactors):
    """LSTM: i, f, o = σ(·), g = tanh(·), c_t = f c_{t-1} + i g, h_t = o tanh(c_t); the maths is
    :class:`LSTMFactors` with h = m (P = H, S = 2H), plus the compiled adjoint and window
    loops of :mod:`rnn_diag.dynamics.scan_kernels`."""

    def _output_factor(self, o: Tensor, h: Tensor, tanh_c: Tensor, out: Tensor) -> Tensor:
        # o (1 - tanh² c) = o - h tanh c, as h = o tanh c: one pass instead of three
        return torch.addcmul(o, h, tanh_c, value=-1, out=out)

    def vjp_window(self, lo: int, hi: int, blocks: Tensor) -> None:
        p = blocks.shape[2]
        scan_kernels.lstm_block_compiled(
            window_rows(self.factors, lo, hi, p, dim=2), window_rows(self.k, lo, hi, p),
            window_rows(self.forget, lo, hi, p), self._w, window_blocks(blocks, lo, hi), None,
            0, hi - lo)

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        scan_kernels.lstm_block_compiled(self.factors, self.k, self.forget, self._w, X, g, t0, t1)
