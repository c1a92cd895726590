"""One step of PyTorch's standard cells written from their equations, differentiable, with
the step's Jacobian applied to a block of tangent vectors when asked.

Used where the cell must be run as plain tensor code rather than through ``nn.RNN`` & co.:
gradient flossing (:mod:`rnn_diag.modules.regularizers`, exponents differentiable through the
trajectory) and fixed points (:mod:`rnn_diag.modules.fixed_points`, whose step maps must work
under ``torch.func.vmap``, which PyTorch's recurrent modules do not support). Gate orders are
PyTorch's: (r, z, n) for GRU, (i, f, g, o) for LSTM; an LSTM's state is the joint ``[h | c]``
(with ``proj_size = P``, h = W_hr (o ⊙ tanh c) has P entries).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .steps.base import CellWeights

__all__ = ["cell_step", "input_preactivations", "state_sizes"]

_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


def state_sizes(w: CellWeights) -> tuple[int, int]:
    """(size of h, size of c) of one layer; c is 0 except for an LSTM."""
    C = w.weight_hh.shape[0] // _GATES[w.kind]
    P = w.weight_hh.shape[1]
    return P, (C if w.kind == "lstm" else 0)


def cell_step(w: CellWeights, s: Tensor, px: Tensor, Q: Tensor | None):
    """One step of the cell from states ``s [B, S]`` with input pre-activation
    ``px = x W_ihᵀ + b_ih`` (``[B, G*C]``, or ``[G*C]`` for one input shared by all rows), and
    the tangent block ``Q [B, S, k]`` pushed through the step's Jacobian (the directional
    derivatives of the step, from the cell equations).

    Returns ``(s_next [B, S], J·Q [B, S, k] or None)``.

    Example:
        >>> rnn = torch.nn.RNN(2, 3)
        >>> w = CellWeights("rnn_tanh", rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0,
        ...                 rnn.bias_hh_l0)
        >>> x, h = torch.randn(4, 2), torch.randn(4, 3)
        >>> s, _ = cell_step(w, h, input_preactivations(w, x), None)
        >>> torch.allclose(s, rnn(x[None], h[None])[1][0])
        True
    """
    W, kind = w.weight_hh, w.kind
    P, C = W.shape[1], W.shape[0] // _GATES[kind]  # sizes of h and of each gate
    h = s[:, :P]
    hh = h @ W.T if w.bias_hh is None else h @ W.T + w.bias_hh
    pre = px + hh
    dpre = None if Q is None else W @ Q[:, :P]  # [B, G*C, k]
    if kind in ("rnn_tanh", "rnn_relu"):
        if kind == "rnn_tanh":
            h_new = torch.tanh(pre)
            slope = 1 - h_new * h_new
        else:
            h_new = torch.relu(pre)
            slope = (pre > 0).to(pre.dtype)
        return h_new, (None if Q is None else slope.unsqueeze(-1) * dpre)
    if kind == "gru":
        # r and z see x W_ihᵀ + b_ih + h W_hhᵀ + b_hh; n sees x_n + r ⊙ (h W_nᵀ + b_n)
        x_r, x_z, x_n = px.split(C, -1)
        hh_r, hh_z, hh_n = hh.split(C, -1)
        r, z = torch.sigmoid(x_r + hh_r), torch.sigmoid(x_z + hh_z)
        n = torch.tanh(x_n + r * hh_n)
        h_new = (1 - z) * n + z * h
        if Q is None:
            return h_new, None
        d_r, d_z, d_n = dpre.split(C, 1)
        u = lambda a: a.unsqueeze(-1)
        dr, dz = u(r * (1 - r)) * d_r, u(z * (1 - z)) * d_z
        dn = u(1 - n * n) * (dr * u(hh_n) + u(r) * d_n)
        return h_new, dz * u(h - n) + u(1 - z) * dn + u(z) * Q
    if kind == "lstm":
        c = s[:, P:]
        i, f, g, o = pre.split(C, -1)
        si, sf, tg, so = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = sf * c + si * tg
        tc = torch.tanh(c_new)
        m = so * tc
        h_new = m if w.weight_hr is None else m @ w.weight_hr.T
        s_new = torch.cat([h_new, c_new], -1)
        if Q is None:
            return s_new, None
        u = lambda a: a.unsqueeze(-1)
        d_i, d_f, d_g, d_o = dpre.split(C, 1)
        dc = (u(si * (1 - si) * tg) * d_i + u(sf * (1 - sf) * c) * d_f
              + u(sf) * Q[:, P:] + u(si * (1 - tg * tg)) * d_g)
        dm = u(so * (1 - so) * tc) * d_o + u(so * (1 - tc * tc)) * dc
        dh = dm if w.weight_hr is None else w.weight_hr @ dm
        return s_new, torch.cat([dh, dc], 1)
    raise ValueError(f"unknown cell kind {kind!r}")


def input_preactivations(w: CellWeights, x: Tensor) -> Tensor:
    """``x W_ihᵀ + b_ih``: ``[..., I] -> [..., G*C]`` (every step at once, or one input)."""
    px = x @ w.weight_ih.T
    return px if w.bias_ih is None else px + w.bias_ih
