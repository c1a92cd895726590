"""Diagonal and selective scan layers: recurrences h_t = a_t ⊙ h_{t-1} + b_t with a diagonal,
real or complex, possibly input-dependent a_t, run by one ``self.scan(a, b, h0)`` call per
forward (:class:`ScanLayer`, docs/design.md §23). Shapes are batch-first, ``x [B, T, I]``.

* :class:`LRU` (Orvieto et al. 2023): complex h_t ∈ ℂ^N,
  ``h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t)``, ``y_t = Re(C h_t) + D ⊙ x_t``,
  λ = exp(−exp(ν_log) + i·exp(θ_log)), γ = exp(γ_log) (initially √(1 − |λ|²)).
* :class:`MinGRU` (Feng et al. 2024): ``z_t = σ(W_z x_t + b_z)``,
  ``h̃_t = g(W_h x_t + b_h)``, ``h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t``, y_t = h_t.
* :class:`SelectiveSSM` (Mamba's S6, Gu & Dao 2023): state [D_inner, N],
  ``h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t``, ``y_t = C_t h_t + D x_t``, gated by SiLU(z)
  and projected back to d_model; Δ_t, B_t, C_t depend on the input.
* :class:`ScanStack`: input projection, pre-norm residual blocks of one kind
  (:data:`SCAN_CELLS`: ``"lru"``, ``"mingru"``, ``"ssm"``), final LayerNorm.
"""

from .base import DiagonalScan, ScanLayer
from .lru import LRU
from .mingru import MinGRU
from .selective_ssm import SelectiveSSM
from .stack import SCAN_CELLS, ScanStack

__all__ = ["DiagonalScan", "ScanLayer", "LRU", "MinGRU", "SelectiveSSM", "ScanStack",
           "SCAN_CELLS"]
