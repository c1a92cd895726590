"""minGRU of Feng et al. 2024, "Were RNNs All We Needed?" (arXiv:2410.01201), the
log-space-ready variant (§3.1 and Appendix B of the paper).

Per step, with a real diagonal state h_t ∈ ℝ^H:

    z_t = σ(Linear_z(x_t)),    h̃_t = g(Linear_h(x_t)),    h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

with g(v) = v + ½ for v ≥ 0 and σ(v) for v < 0, the paper's positive, continuous activation
for candidate states in its log-space scan. Here the recurrence runs as a linear scan with
``a_t = 1 − z_t`` and ``b_t = z_t ⊙ h̃_t``; the output is the state, y_t = h_t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ScanLayer

__all__ = ["MinGRU", "positive_activation"]


def positive_activation(v: Tensor) -> Tensor:
    """g(v) = v + ½ for v ≥ 0, σ(v) for v < 0 (Feng et al. 2024, Appendix B): positive,
    continuous, and differentiable except at 0 (g'(0⁻) = ¼, g'(0⁺) = 1).

    Example:
        >>> positive_activation(torch.tensor([-2.0, 0.0, 1.0])).tolist()
        [0.11920291930437088, 0.5, 1.5]
    """
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


class MinGRU(ScanLayer):
    """minGRU layer (Feng et al. 2024), batch-first: ``x [B, T, I] -> h [B, T, H]``.

    Args:
        input_size: I.
        hidden_size: H, state channels (also the output width).
        r_min, r_max: when ``r_max`` is given, ``linear_z.bias`` is set so that the decays at
            zero input, 1 − σ(bias_z), are evenly spaced (``linspace``) from r_max (channel
            0) down to r_min: ``bias_z = logit(1 − r)``. Both must lie in (0, 1) (a decay of
            exactly 0 or 1 needs an infinite bias); r_min defaults to r_max / 2. With
            ``r_max=None`` (default) every weight keeps PyTorch's ``nn.Linear`` init, which
            puts the decays at zero input near ½ (bias_z ~ U(−1/√I, 1/√I)).

    ``linear_z`` and ``linear_h`` are ``nn.Linear(I, H)`` (with bias) as in the paper's code.
    ``state_shape = (H,)``, ``input_dependent = True``; :meth:`eigenvalues` gives the decays
    at zero input. ``forward(x, h0=None)``: ``h0 [B, H]`` or None (zeros).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> cell = MinGRU(3, 4, r_max=0.99)
        >>> cell(torch.randn(2, 10, 3)).shape
        torch.Size([2, 10, 4])
        >>> [round(v, 4) for v in cell.eigenvalues().tolist()]
        [0.99, 0.825, 0.66, 0.495]
    """

    input_dependent = True

    def __init__(self, input_size: int, hidden_size: int, *, r_min: float | None = None,
                 r_max: float | None = None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_shape = (hidden_size,)
        self.linear_z = nn.Linear(input_size, hidden_size)
        self.linear_h = nn.Linear(input_size, hidden_size)
        if r_max is None:
            if r_min is not None:
                raise ValueError("r_min needs r_max")
            return
        r_min = r_max / 2 if r_min is None else r_min
        if not 0.0 < r_min <= r_max < 1.0:
            raise ValueError(f"need 0 < r_min <= r_max < 1, got r_min={r_min}, r_max={r_max}")
        r = torch.linspace(r_max, r_min, hidden_size, dtype=torch.float64)
        with torch.no_grad():
            self.linear_z.bias.copy_(torch.logit(1 - r))

    def eigenvalues(self) -> Tensor:
        """``1 − σ(bias_z)`` [H]: the decays a_t at x_t = 0, detached."""
        with torch.no_grad():
            return torch.sigmoid(-self.linear_z.bias)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> Tensor:
        """``x [B, T, I]``, ``h0 [B, H]`` or None -> ``h [B, T, H]``."""
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, I], got {tuple(x.shape)}")
        k = self.linear_z(x)
        z = torch.sigmoid(k)
        a = torch.sigmoid(-k)  # 1 − z, without the cancellation when z is near 1
        b = z * positive_activation(self.linear_h(x))
        return self.scan(a, b, h0)
