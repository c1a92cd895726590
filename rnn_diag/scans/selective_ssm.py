"""A Mamba-style selective SSM block (S6; Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling
with Selective State Spaces", arXiv:2312.00752) in plain PyTorch.

The structure of ``mamba_ssm/modules/mamba_simple.py`` (``Mamba``) with the recurrence of
``selective_scan_ref``, per step t and inner channel d (state [D_inner, N]):

    (x, z) = in_proj(u_t);  x = SiLU(causal depthwise conv1d(x))
    (Δ_raw, B_t, C_t) = x_proj(x);  Δ_t = softplus(dt_proj(Δ_raw))        [D_inner]
    h_t[d, n] = exp(Δ_t[d]·A[d, n])·h_{t-1}[d, n] + Δ_t[d]·B_t[n]·x_t[d]
    y_t[d] = Σ_n h_t[d, n]·C_t[n] + D[d]·x_t[d];  out_t = out_proj(y_t ⊙ SiLU(z_t))

with A = −exp(A_log) (S4D-real init A[d, n] = −(n + 1)). B_t enters by Mamba's simplified
(Euler) discretisation Δ·B, as in its reference scan.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import ScanLayer

__all__ = ["SelectiveSSM"]


class SelectiveSSM(ScanLayer):
    """Mamba (S6) block in pure PyTorch, batch-first: ``u [B, T, d_model] -> [B, T, d_model]``.

    Args:
        d_model: input and output width.
        d_state: N, state size per inner channel (default 16).
        expand: ``d_inner = expand·d_model`` (default 2).
        d_conv: kernel width of the causal depthwise convolution (default 4).
        dt_rank: rank of the Δ projection, ``"auto"`` = ⌈d_model / 16⌉.
        dt_min, dt_max: Δ at zero input, softplus(dt_proj.bias), is drawn log-uniform in
            [dt_min, dt_max] per inner channel (floored at 1e-4), as Mamba does.
        r_max: instead of dt_min/dt_max (giving both is an error): the largest decay at zero
            input. Then dt_min = −ln(r_max), so channel n = 0 (A = −1) of the inner channel
            with the smallest Δ decays by exactly r_max per step; dt_max = min(100·dt_min, 1)
            (Mamba's default range is two decades, 0.001–0.1, i.e. r_max ≈ 0.999; capped at
            Δ = 1, and never below dt_min), and Δ is spaced evenly in log from dt_min
            (inner channel 0) to dt_max instead of drawn, so that the largest decay is r_max
            exactly. Must lie in (0, 1).

    Initialisation as ``mamba_simple.Mamba``: ``in_proj``/``out_proj`` without bias,
    ``conv1d`` with bias, ``x_proj`` without bias, ``dt_proj.weight ~ U(±dt_rank^-½)``,
    ``dt_proj.bias`` = softplus⁻¹(Δ), ``A_log = log(n + 1)``, ``D = 1``.

    ``state_shape = (d_inner, d_state)``, ``input_dependent = True``; :meth:`eigenvalues` are
    the decays at zero input of the Δ branch, ``exp(softplus(dt_proj.bias)[:, None]·A)``
    [d_inner, d_state]. ``forward(u, h0=None)``: ``h0 [B, d_inner, d_state]`` or None; it is
    the SSM state only, the convolution always starts from zeros (no cached inputs).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> ssm = SelectiveSSM(8, d_state=4, r_max=0.99)
        >>> ssm(torch.randn(2, 10, 8)).shape
        torch.Size([2, 10, 8])
        >>> ssm.state_shape, round(ssm.eigenvalues().max().item(), 6)
        ((16, 4), 0.99)
    """

    input_dependent = True

    def __init__(self, d_model: int, d_state: int = 16, *, expand: int = 2, d_conv: int = 4,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 r_max: float | None = None):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = Di = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.state_shape = (Di, d_state)
        if r_max is not None:
            if (dt_min, dt_max) != (0.001, 0.1):
                raise ValueError("give r_max or dt_min/dt_max, not both")
            if not 0.0 < r_max < 1.0:
                raise ValueError(f"r_max must lie in (0, 1), got {r_max}")
            dt_min = -math.log(r_max)
            dt_max = max(dt_min, min(100 * dt_min, 1.0))
        elif not 0.0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.dt_min, self.dt_max, self.r_max = dt_min, dt_max, r_max

        self.in_proj = nn.Linear(d_model, 2 * Di, bias=False)
        self.conv1d = nn.Conv1d(Di, Di, d_conv, groups=Di, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(Di, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, Di, bias=True)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        lo, hi = math.log(dt_min), math.log(dt_max)
        if r_max is None:
            dt = torch.exp(torch.rand(Di, dtype=torch.float64) * (hi - lo) + lo).clamp(min=1e-4)
        else:
            dt = torch.exp(torch.linspace(lo, hi, Di, dtype=torch.float64))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(Δ)
        n = torch.arange(1, d_state + 1, dtype=torch.float64)
        self.A_log = nn.Parameter(torch.log(n).repeat(Di, 1).to(torch.get_default_dtype()))
        self.D = nn.Parameter(torch.ones(Di))
        self.out_proj = nn.Linear(Di, d_model, bias=False)

    def eigenvalues(self) -> Tensor:
        """``exp(softplus(dt_proj.bias)[:, None]·A)`` [d_inner, d_state], detached: the decays
        at Δ_raw = 0."""
        with torch.no_grad():
            return torch.exp(F.softplus(self.dt_proj.bias)[:, None] * -torch.exp(self.A_log))

    def forward(self, u: Tensor, h0: Tensor | None = None) -> Tensor:
        """``u [B, T, d_model]``, ``h0 [B, d_inner, d_state]`` or None -> ``[B, T, d_model]``."""
        if u.dim() != 3:
            raise ValueError(f"u must be [B, T, d_model], got {tuple(u.shape)}")
        T = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # [B, T, Di] each
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2))
        dt, Bt, Ct = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # [B, T, Di]
        A = -torch.exp(self.A_log)  # [Di, N]
        a = torch.exp(delta[..., None] * A)  # [B, T, Di, N]
        b = (delta * x)[..., None] * Bt[:, :, None, :]  # Δ_t[d]·x_t[d]·B_t[n]
        h = self.scan(a, b, h0)  # [B, T, Di, N]
        y = torch.einsum("btdn,btn->btd", h, Ct) + self.D * x
        return self.out_proj(y * F.silu(z))
