"""Per-step linearisations of the standard recurrent cells along a recorded trajectory.

Each class is built once from the weights and the whole trajectory (time-major tensors) and
precomputes, vectorised over time, every factor of the step Jacobian that does not depend on the
adjoint, so that applying ``J_tᵀ`` inside the sequential adjoint loop costs a handful of fused
tensor operations. Notation (PyTorch's): gate rows of ``weight_hh`` are (r, z, n) for GRU and
(i, f, g, o) for LSTM; ``x`` is the layer input, ``h_prev[t] = h_{t-1}``.

All classes expose:
    state_size              size S of the adjoint state
    vjp_into(t, v, add, out)  ``out = add + J_tᵀ v`` for a batch ``v`` of shape [B, S]
                            (``out = J_tᵀ v`` when add is None)
    vjp_all(v)              ``J_tᵀ v[t]`` for every t at once, [T, B, S]
    input_grads(scaled)     ``∂L/∂x_t`` for every t, [T, B, I], given the adjoint in scaled
                            units [T, B, S] (same per-step scale as the input)

The LSTM adjoint state is ``[a_t | e_t]`` (size 2H): a_t = ∂L/∂h_t and e_t the gradient reaching
c_t from outside the step that produced it (from c_{t+1} and from direct uses of c_t). The total
∂L/∂c_t, which also counts the path through h_t = o_t ⊙ tanh(c_t), is ``cell_grads``. With a
projection (``nn.LSTM(proj_size=P)``, h_t = W_hr (o_t ⊙ tanh c_t)) the state is the same pair
with a_t of size P, so S = P + H (:class:`ProjectedLSTMSteps`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from . import scan_kernels
from .workspace import Workspace


@dataclass
class CellWeights:
    """Weights of one layer and direction of a recurrent module (PyTorch's layout).

    Attributes:
        kind: "rnn_tanh", "rnn_relu", "gru" or "lstm".
        weight_ih: ``[G*H, I]``; weight_hh: ``[G*H, H]``; biases ``[G*H]`` or None
            (G = 1, 3, 4 for RNN, GRU, LSTM).
        weight_hr: LSTM with ``proj_size=P`` only: the projection ``[P, H]``
            (h_t = W_hr (o_t ⊙ tanh c_t)); weight_hh is then ``[4H, P]``. None otherwise.
    """

    kind: str
    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None
    bias_hh: Tensor | None
    weight_hr: Tensor | None = None


#: A unit counts as saturated where the derivative of its nonlinearity is below this.
SATURATION_THRESHOLD = 0.01


def saturated_fraction(values: Tensor, of: str | None = None) -> Tensor:
    """Fraction of units, per ``[T, B]``, whose nonlinearity has derivative below
    :data:`SATURATION_THRESHOLD`.

    Args:
        values: ``[T, B, H]``: activations (``of="tanh"`` or ``"sigmoid"``: tanh' = 1 - y²,
            σ' = y (1 - y)) or the derivatives themselves (``of=None``).

    Example:
        >>> y = torch.tensor([[[0.0, 0.999, -0.9999, 0.5]]])
        >>> saturated_fraction(y, "tanh")
        tensor([[0.5000]])
    """
    if of == "tanh":
        derivative = 1 - values * values
    elif of == "sigmoid":
        derivative = values * (1 - values)
    elif of is None:
        derivative = values
    else:
        raise ValueError(f"of must be 'tanh', 'sigmoid' or None, got {of!r}")
    saturated = torch.count_nonzero(derivative.abs() < SATURATION_THRESHOLD, dim=-1)
    return saturated.to(values.dtype) / values.shape[-1]


def _affine_into(
    out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, bias2: Tensor | None = None
) -> Tensor:
    """``out = x Wᵀ + bias (+ bias2)`` for ``[T, B, F]`` inputs, written into ``out``."""
    T, B, F = x.shape
    flat = out.view(T * B, -1)
    if bias is None:
        torch.mm(x.reshape(T * B, F), weight.t(), out=flat)
    else:
        torch.addmm(bias if bias2 is None else bias + bias2, x.reshape(T * B, F), weight.t(),
                    out=flat)
    return out


def _matmul_into(add: Tensor | None, a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out = add + a @ b`` (or ``a @ b`` when add is None)."""
    if add is None:
        torch.mm(a, b, out=out)
    else:
        torch.addmm(add, a, b, out=out)


class RNNSteps:
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

    def vjp_into(self, t: int, v: Tensor, add: Tensor | None, out: Tensor) -> None:
        if add is None:
            torch.mm(self.deriv[t] * v, self._w, out=out)
        else:
            torch.addmm(add, self.deriv[t] * v, self._w, out=out)

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        scan_kernels.rnn_block_compiled(self.deriv, self._w, X, g, t0, t1)

    def vjp_all(self, v: Tensor) -> Tensor:
        return torch.matmul(self.deriv * v, self.w.weight_hh)

    def jacobian(self, t: int) -> Tensor:
        """``J_t = diag(φ'_t) W_hh`` as ``[B, H, H]``."""
        return self.deriv[t].unsqueeze(-1) * self.w.weight_hh

    def input_grads(self, scaled: Tensor) -> Tensor:
        return torch.matmul(self.deriv * scaled, self.w.weight_ih)


class GRUSteps:
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
        gi = _affine_into(ws.empty("gru.gi", (T, B, 3 * H), **like), x, w.weight_ih, w.bias_ih)
        gh = _affine_into(
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
        self.saturation = {}
        if saturation:
            self.saturation = {
                "r": saturated_fraction(r, "sigmoid"),
                "z": saturated_fraction(z, "sigmoid"),
                "n": saturated_fraction(n, "tanh"),
            }

    def vjp_into(self, t: int, v: Tensor, add: Tensor | None, out: Tensor) -> None:
        dpre = (self.hidden[t] * v.unsqueeze(1)).flatten(1)
        _matmul_into(add, dpre, self.w.weight_hh, out)
        out.addcmul_(v, self.z[t])

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        scan_kernels.gru_block_compiled(self.hidden, self.z, self.w.weight_hh, X, g, t0, t1)

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


class LSTMSteps:
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
        self._dpre = torch.empty(B, 4, H, **like)  # per-step scratch, batch-major for the mm
        self._dpre_gates = self._dpre.transpose(0, 1)  # the same memory, gate-major view

    def vjp_into(self, t: int, v: Tensor, add: Tensor | None, out: Tensor) -> None:
        H = self.hidden_size
        a, e = v[:, :H], v[:, H:]
        dc = torch.addcmul(e, a, self.k[t])
        F = self.factors[:, t]
        torch.mul(F[:3], dc, out=self._dpre_gates[:3])
        torch.mul(F[3], a, out=self._dpre_gates[3])
        dpre = self._dpre.view(-1, 4 * H)
        # Matmul into a strided slice of ``out`` is very slow on CPU: form it, then copy.
        if add is None:
            out[:, :H] = torch.mm(dpre, self.w.weight_hh)
            torch.mul(self.forget[t], dc, out=out[:, H:])
        else:
            out[:, :H] = torch.addmm(add[:, :H], dpre, self.w.weight_hh)
            torch.addcmul(add[:, H:], self.forget[t], dc, out=out[:, H:])

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        scan_kernels.lstm_block_compiled(
            self.factors, self.k, self.forget, self.w.weight_hh, X, g, t0, t1
        )

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


class ProjectedLSTMSteps:
    """LSTM with a projection (``nn.LSTM(proj_size=P)``): i, f, o = σ(·), g = tanh(·) from
    ``W_ih x_t + W_hh h_{t-1}`` (+ biases), c_t = f c_{t-1} + i g, m_t = o tanh(c_t) and
    h_t = W_hr m_t, with weight_hh ``[4H, P]``, weight_hr ``[P, H]``; h is ``[B, P]``, c ``[B, H]``.

    The adjoint state is [a | e] (see the module docstring), a of size P and e of size H, so
    S = P + H. With a' = a W_hr (``[B, H]``, the gradient reaching m_t), δc = e + a' ⊙ k and
    k = o(1-tanh²c): pre-activation gradients are [δc⊙g i(1-i), δc⊙c_prev f(1-f), δc⊙i(1-g²),
    a'⊙tanh(c) o(1-o)]; a_{t-1} = W_hhᵀ (those) (size P) and e_{t-1} = f_t ⊙ δc_t.

    Interface as :class:`LSTMSteps` (``hidden_size`` is H, ``proj_size`` P), without
    ``fill_block``: the adjoint runs the ``vjp_into`` loop, and the Jacobian-product norms take
    the generic path (``vjp_into`` and ``jacobian(t)``).

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
        self._dpre = torch.empty(B, 4, H, **like)
        self._dpre_gates = self._dpre.transpose(0, 1)
        # Detached: a' = a W_hr feeds out= products, which refuse tensors that require grad.
        self._w_hr, self._w_hh = w.weight_hr.detach(), w.weight_hh.detach()

    def vjp_into(self, t: int, v: Tensor, add: Tensor | None, out: Tensor) -> None:
        P, H = self.proj_size, self.hidden_size
        a, e = v[:, :P], v[:, P:]
        a_m = torch.mm(a, self._w_hr)  # [B, H]
        dc = torch.addcmul(e, a_m, self.k[t])
        F = self.factors[:, t]
        torch.mul(F[:3], dc, out=self._dpre_gates[:3])
        torch.mul(F[3], a_m, out=self._dpre_gates[3])
        dpre = self._dpre.view(-1, 4 * H)
        if add is None:
            out[:, :P] = torch.mm(dpre, self._w_hh)
            torch.mul(self.forget[t], dc, out=out[:, P:])
        else:
            out[:, :P] = torch.addmm(add[:, :P], dpre, self._w_hh)
            torch.addcmul(add[:, P:], self.forget[t], dc, out=out[:, P:])

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


def linearise(
    w: CellWeights,
    x: Tensor,
    h_prev: Tensor,
    h: Tensor,
    c0: Tensor | None = None,
    workspace: Workspace | None = None,
    saturation: bool = False,
):
    """Build the step linearisation of a standard cell along a recorded trajectory.

    Call it under ``torch.no_grad()`` (the factors are written in place).

    Args:
        w: the cell's weights (an LSTM with ``w.weight_hr`` set gives
            :class:`ProjectedLSTMSteps`).
        x: ``[T, B, I]`` inputs; h_prev: ``[T, B, H]`` states h_{t-1}; h: ``[T, B, H]`` states h_t
            (``[T, B, P]`` for a projected LSTM).
        c0: ``[B, H]`` initial cell state (LSTM only), or ``[T, B, H]``: the cell state
            entering every step, for steps that are separate calls whose state the user's
            code may change in between (c_t is then ``f_t c0[t] + i_t g_t``, no recurrence).
        workspace: reuse its buffers for the large factors (the returned object is then valid
            until the next call with the same workspace).
        saturation: also measure the fraction of saturated units per gate (``.saturation``,
            ``{gate: [T, B]}``; empty when False).
    """
    if w.kind in ("rnn_tanh", "rnn_relu"):
        return RNNSteps(w, h, saturation, workspace)
    if w.kind == "gru":
        return GRUSteps(w, x, h_prev, workspace, saturation)
    if w.kind == "lstm":
        if c0 is None:
            raise ValueError("an LSTM linearisation needs the initial cell state c0")
        if w.weight_hr is not None:
            return ProjectedLSTMSteps(w, x, h_prev, h, c0, workspace, saturation)
        return LSTMSteps(w, x, h_prev, h, c0, workspace, saturation)
    raise ValueError(f"unknown cell kind {w.kind!r}")


class CallableSteps:
    """Any cell ``fn(x_t, state) -> state`` linearised with ``torch.func.vjp`` at each step.

    Args:
        fn: the cell; ``state`` is one tensor, or a tuple of tensors when ``tuple_state``.
        x: ``[T, B, I]`` inputs.
        prev_states: one ``[T, B, S_i]`` tensor per state component, the state entering step t.
        tuple_state: whether ``fn`` takes and returns a tuple.
        rng: optional ``(device, generator state)`` per step, taken before the cell first ran
            it: each re-run draws the same random numbers (dropout masks) inside
            ``torch.random.fork_rng``, leaving the caller's stream untouched.
        expected: optional ``[T, B, S_i]`` per component, the states the cell returned; each
            re-run's output is compared with them and the largest relative difference kept in
            ``replay_error`` (a cell that is not a pure function of its inputs shows there).

    The adjoint state is the concatenation of the components (e.g. [h | c]).
    """

    def __init__(self, fn, x: Tensor, prev_states: list[Tensor], tuple_state: bool,
                 rng: list | None = None, expected: list[Tensor] | None = None):
        self.fn = fn
        self.x = x
        self.prev_states = prev_states
        self.tuple_state = tuple_state
        self.sizes = [p.shape[-1] for p in prev_states]
        self.state_size = sum(self.sizes)
        self.rng = rng
        self.expected = expected
        self.replay_error = 0.0

    def _replaying(self, t: int):
        if self.rng is None:
            return nullcontext()
        return _ReplayRNG(*self.rng[t])

    def _check(self, t: int, new) -> None:
        if self.expected is None:
            return
        for got, want in zip(new if self.tuple_state else (new,), self.expected, strict=True):
            want_t = want[t].to(got.dtype)
            scale = float(want_t.abs().amax()) or 1.0
            self.replay_error = max(self.replay_error,
                                    float((got.detach() - want_t).abs().amax()) / scale)

    def _flat_step(self, t: int):
        """The step as a function of the concatenated state ``[B, S] -> [B, S]``."""
        x_t = self.x[t]

        def step(flat: Tensor) -> Tensor:
            parts = torch.split(flat, self.sizes, dim=-1)
            new = self.fn(x_t, tuple(parts) if self.tuple_state else parts[0])
            return torch.cat(tuple(new), dim=-1) if self.tuple_state else new

        return step

    def jacobian(self, t: int) -> Tensor:
        """``J_t`` as ``[B, S, S]``, from ``torch.func.jacrev`` of the whole batch (the
        cross-sample blocks, zero for a cell that treats samples independently, are dropped)."""
        flat = torch.cat([p[t] for p in self.prev_states], dim=-1)
        with torch.enable_grad(), self._replaying(t):
            full = torch.func.jacrev(self._flat_step(t))(flat)  # [B, S, B, S]
        return torch.diagonal(full, dim1=0, dim2=2).permute(2, 0, 1)

    def vjp_into(self, t: int, v: Tensor, add: Tensor, out: Tensor) -> None:
        x_t = self.x[t]

        def step(*state):
            new = self.fn(x_t, state if self.tuple_state else state[0])
            return tuple(new) if self.tuple_state else new

        with torch.enable_grad(), self._replaying(t):
            new, pullback = torch.func.vjp(step, *(p[t] for p in self.prev_states))
            parts = torch.split(v, self.sizes, dim=-1)
            grads = pullback(tuple(parts) if self.tuple_state else parts[0])
        self._check(t, new)
        if add is None:
            torch.cat(grads, dim=-1, out=out)
        else:
            torch.add(add, torch.cat(grads, dim=-1), out=out)


class _ReplayRNG:
    """Run a block with the generator of ``device`` set to ``state``; restore it after."""

    def __init__(self, device: torch.device, state: Tensor):
        self.device, self.state = device, state
        self._fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def __enter__(self):
        self._fork.__enter__()
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(self.state, self.device)
        else:
            torch.set_rng_state(self.state)
        return self

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)
