"""The protocol every linearised recurrence implements, and what the cell kinds share.

A *linearisation* (a ``Steps`` object) is built once from a layer's weights and a recorded
trajectory (time-major tensors), and gives the step Jacobians J_t = ∂s_t/∂s_{t-1} (t = 0..T-1,
s the adjoint state of size S) in the forms the rest of rnn_diag needs:

==========================  ==============================================================
``state_size``              S
``vjp_rows(t, V, out)``     ``V J_t``: ``J_tᵀ v`` for every row v of ``V [B, p, S]``
``jvp_rows(t, V)``          ``J_t v`` for every row v of ``V [B, p, S]``
``vjp_into(t, v, add, out)``  ``out = add + J_tᵀ v`` for ``v [B, S]`` (provided here)
``vjp_all(v)``              ``J_tᵀ v[t]`` for every t at once, ``[T, B, S]``
``jacobian(t)``             ``J_t`` as ``[B, S, S]``
``input_grads(scaled)``     ``∂L/∂x_t`` for every t, ``[T, B, I]``, from the adjoint in scaled
                            units ``[T, B, S]`` (same per-step scale as the input)
``saturation``              ``{gate: [T, B]}`` fraction of saturated units (may be empty)
==========================  ==============================================================

and, where a compiled loop exists (:mod:`rnn_diag.dynamics.scan_kernels`):

==========================  ==============================================================
``fill_block(X, g, t0, t1)``  the adjoint's inner loop, ``X[t] = g[t - t0] + J_{t+1}ᵀ X[t+1]``
                            for t = t1-1 down to t0 (:func:`rnn_diag.dynamics.adjoint.adjoint_scan`)
``vjp_window(lo, hi, B)``   ``B[k] = B[k+1] J_{k+1}`` for probe blocks ``[K, B, p, S]``, k = hi-1
                            down to lo (:mod:`rnn_diag.dynamics.jacobian_products`)
==========================  ==============================================================

Consumers dispatch on these methods, never on class names. A new cell kind is one subclass of
:class:`Steps` in a module of its own, plus one line in :func:`rnn_diag.dynamics.cells.linearise`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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


def affine_into(
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


class Steps:
    """Base of every linearisation: the protocol of the module docstring. Subclasses set
    ``state_size`` and ``saturation`` and implement ``vjp_rows``, ``jvp_rows``, ``vjp_all``,
    ``jacobian`` and ``input_grads``; ``fill_block`` and ``vjp_window`` where they have a
    compiled loop."""

    state_size: int
    saturation: dict

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        raise NotImplementedError

    def vjp_into(self, t: int, v: Tensor, add: Tensor | None, out: Tensor) -> None:
        """``out = add + J_tᵀ v`` (``J_tᵀ v`` when add is None), all ``[B, S]``."""
        res = self.vjp_rows(t, v.unsqueeze(1)).squeeze(1)
        if add is None:
            out.copy_(res)
        else:
            torch.add(add, res, out=out)


def window_rows(a: Tensor, lo: int, hi: int, p: int, dim: int = 1) -> Tensor:
    """Steps lo..hi of a per-step factor (time at ``dim - 1``), each sample's row repeated
    ``p`` times along ``dim`` (one per probe vector), for the compiled window loops."""
    part = a.narrow(dim - 1, lo, hi + 1 - lo)
    return part if p == 1 else part.repeat_interleave(p, dim=dim)


def window_blocks(blocks: Tensor, lo: int, hi: int) -> Tensor:
    """Probe blocks ``[K, B, p, S]`` at steps lo..hi as ``[hi - lo + 1, B * p, S]`` rows."""
    n, B, p, S = hi + 1 - lo, *blocks.shape[1:]
    return blocks[lo : hi + 1].view(n, B * p, S)
