"""Linearising the standard recurrent cells: :func:`linearise` picks the class for a kind.

The classes live in :mod:`rnn_diag.dynamics.steps`, one per cell kind, and implement the
protocol of :mod:`rnn_diag.dynamics.steps.base`. Notation (PyTorch's): gate rows of
``weight_hh`` are (r, z, n) for GRU and (i, f, g, o) for LSTM; ``x`` is the layer input,
``h_prev[t] = h_{t-1}``.

The LSTM adjoint state is ``[a_t | e_t]`` (size 2H): a_t = ∂L/∂h_t and e_t the gradient reaching
c_t from outside the step that produced it (from c_{t+1} and from direct uses of c_t). The total
∂L/∂c_t, which also counts the path through h_t = o_t ⊙ tanh(c_t), is ``cell_grads``. With a
projection (``nn.LSTM(proj_size=P)``, h_t = W_hr (o_t ⊙ tanh c_t)) the state is the same pair
with a_t of size P, so S = P + H (:class:`ProjectedLSTMSteps`).
"""

from __future__ import annotations

from torch import Tensor

from .steps import (
    SATURATION_THRESHOLD,
    CallableSteps,
    CellWeights,
    GRUSteps,
    LSTMSteps,
    ProjectedLSTMSteps,
    RNNSteps,
    Steps,
    saturated_fraction,
)
from .workspace import Workspace

__all__ = [
    "SATURATION_THRESHOLD",
    "CallableSteps",
    "CellWeights",
    "GRUSteps",
    "LSTMSteps",
    "ProjectedLSTMSteps",
    "RNNSteps",
    "Steps",
    "linearise",
    "saturated_fraction",
]


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
