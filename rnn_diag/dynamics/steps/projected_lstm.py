"""The LSTM cell with a projection (``nn.LSTM(proj_size=P)``), linearised."""

from __future__ import annotations

from torch import Tensor

from ..workspace import Workspace
from .base import CellWeights
from .lstm import LSTMFactors


class ProjectedLSTMSteps(LSTMFactors):
    """LSTM with a projection (``nn.LSTM(proj_size=P)``): the maths of :class:`LSTMFactors`
    with h_t = W_hr m_t, weight_hh ``[4H, P]``, weight_hr ``[P, H]``; h is ``[B, P]``, c
    ``[B, H]``, S = P + H, and a' = a W_hr is the gradient reaching m_t.

    Interface as :class:`~rnn_diag.dynamics.steps.LSTMSteps` (``hidden_size`` is H,
    ``proj_size`` P), without the compiled loops (``fill_block``, ``vjp_window``): the adjoint
    and the Jacobian-product sweeps run ``vjp_rows`` step by step.

    Args:
        w: the weights, ``w.weight_hr`` set.
        x: ``[T, B, I]``; h_prev, h: ``[T, B, P]`` states h_{t-1} and h_t; c0: ``[B, H]``
            (or ``[T, B, H]``, see :class:`LSTMFactors`).
    """

    _prefix = "lstmp"

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
        P, H = h_prev.shape[-1], c0.shape[-1]
        if tuple(w.weight_hr.shape) != (P, H) or tuple(w.weight_hh.shape) != (4 * H, P):
            raise ValueError(
                f"projected LSTM with h of size {P} and c of size {H} needs weight_hr [{P}, {H}] "
                f"and weight_hh [{4 * H}, {P}], got {tuple(w.weight_hr.shape)} and "
                f"{tuple(w.weight_hh.shape)}"
            )
        if h.shape != h_prev.shape:
            raise ValueError(f"h {tuple(h.shape)} and h_prev {tuple(h_prev.shape)} differ")
        self.proj_size = P
        # Detached: a' = a W_hr feeds out= products, which refuse tensors that require grad.
        self._w_hr = w.weight_hr.detach()
        super().__init__(w, x, h_prev, h, c0, ws, saturation)
