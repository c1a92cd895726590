"""The adjoint (backpropagation-through-time) recursion, renormalised so it never under/overflows.

For a recurrence s_t = F_t(s_{t-1}) with per-step Jacobians J_t = ∂s_t/∂s_{t-1} and a loss that
reads the states directly with immediate gradients g_t, the total gradient obeys

    λ_{T-1} = g_{T-1},        λ_{t-1} = g_{t-1} + J_tᵀ λ_t.

Over hundreds of steps ‖λ_t‖ easily leaves the float32 (and float64) range. We therefore store
λ_t = x_t · exp(ℓ_t) with x_t in the working dtype and ℓ_t a float64 log-scale. Within a block of
``block`` steps the scale is held fixed (one cheap fused step per timestep); between blocks the
carry is renormalised to unit norm. A block whose values drift towards the edges of the dtype's
range, or underflow to exact zero, is recomputed with renormalisation at every step, so the
result does not depend on the block length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .lognorm import log_norm


class StepVJP(Protocol):
    """Transposed per-step Jacobian of a recurrence, applied to a batch of vectors."""

    def vjp_into(self, t: int, v: Tensor, add: Tensor, out: Tensor) -> None:
        """Write ``add + J_tᵀ v`` into ``out`` (all ``[B, S]``), for ``1 <= t < T``."""


@dataclass
class AdjointResult:
    """λ_t = ``scaled[t] * exp(log_scale[t])`` for every step.

    Attributes:
        scaled: ``[T, B, S]`` in the working dtype.
        log_scale: ``[T, B]`` float64, natural log.
        log_norm: ``[T, B]`` float64, ``ln ‖λ_t‖₂`` (``-inf`` where λ_t is exactly zero).
    """

    scaled: Tensor
    log_scale: Tensor
    log_norm: Tensor


def _safe_range(dtype: torch.dtype) -> tuple[float, float]:
    """Natural-log bounds inside which a block may keep its values without renormalising."""
    info = torch.finfo(dtype)
    low, high = math.log(info.tiny), math.log(info.max)
    margin = 0.2 * (high - low)
    return low + margin, high - margin


def adjoint_scan(
    steps: StepVJP,
    g_unit: Tensor,
    g_log_norm: Tensor,
    *,
    block: int = 16,
) -> AdjointResult:
    """Run λ_{t-1} = g_{t-1} + J_tᵀ λ_t from t = T-1 down to 0, in log space.

    Args:
        steps: supplies ``J_tᵀ v`` (see :class:`StepVJP`).
        g_unit: ``[T, B, S]`` immediate gradients divided by their norm (zero where g_t = 0).
        g_log_norm: ``[T, B]`` float64 ``ln ‖g_t‖`` (``-inf`` where g_t = 0).
        block: steps between renormalisations of the carried vector.

    Returns:
        :class:`AdjointResult` with λ_t for every t.

    Example (a scalar recurrence λ_{t-1} = 0.5 λ_t with λ_{T-1} = 1):
        >>> class Half:
        ...     def vjp_into(self, t, v, add, out):
        ...         torch.add(add, v, alpha=0.5, out=out)
        >>> g = torch.zeros(2000, 1, 1); g[-1] = 1.0
        >>> res = adjoint_scan(Half(), g, log_norm(g))
        >>> round(float(res.log_norm[0, 0] / math.log(10)), 3)   # 0.5**1999 = 10**-601.77
        -601.767
    """
    T, B, S = g_unit.shape
    low, high = _safe_range(g_unit.dtype)
    scaled = torch.empty_like(g_unit)
    log_scale = torch.empty(T, B, dtype=torch.float64, device=g_unit.device)
    out_log_norm = torch.empty_like(log_scale)

    def run(t0: int, t1: int, carry: _Carry | None) -> bool:
        """Fill steps t1 down to t0 with one fixed scale; False if the block is unsafe."""
        ref = g_log_norm[t0 : t1 + 1].amax(0)
        if carry is not None:
            ref = torch.maximum(ref, carry.log_norm)
        ref = torch.where(torch.isneginf(ref), torch.zeros_like(ref), ref)
        coef = (g_log_norm[t0 : t1 + 1] - ref).exp().to(g_unit.dtype).unsqueeze(-1)
        g_block = g_unit[t0 : t1 + 1] * coef
        if carry is None:
            scaled[t1] = g_block[-1]
        else:
            incoming = carry.unit * (carry.log_norm - ref).exp().to(g_unit.dtype).unsqueeze(-1)
            steps.vjp_into(t1 + 1, incoming, g_block[-1], scaled[t1])
        for t in range(t1 - 1, t0 - 1, -1):
            steps.vjp_into(t + 1, scaled[t + 1], g_block[t - t0], scaled[t])
        ln = log_norm(scaled[t0 : t1 + 1])
        log_scale[t0 : t1 + 1] = ref
        out_log_norm[t0 : t1 + 1] = ref + ln
        return _block_is_safe(ln, None if carry is None else carry.log_norm, low, high)

    def carry_at(t: int) -> _Carry:
        norm = (out_log_norm[t] - log_scale[t]).exp().to(scaled.dtype).unsqueeze(-1)
        unit = torch.where(norm > 0, scaled[t] / norm, torch.zeros_like(scaled[t]))
        return _Carry(unit, out_log_norm[t])

    carry: _Carry | None = None
    t1 = T - 1
    while t1 >= 0:
        t0 = max(0, t1 - block + 1)
        if not run(t0, t1, carry) and t1 > t0:
            # Too much growth or decay for one fixed scale: renormalise at every step instead.
            for t in range(t1, t0 - 1, -1):
                run(t, t, carry)
                carry = carry_at(t)
        carry = carry_at(t0)
        t1 = t0 - 1
    return AdjointResult(scaled, log_scale, out_log_norm)


def immediate_from_total(steps, total: Tensor) -> tuple[Tensor, Tensor]:
    """Recover the immediate gradients from total ones: g_t = λ_t - J_{t+1}ᵀ λ_{t+1}.

    Used where autograd already summed both parts (a cell driven in a Python loop). The
    difference carries the rounding error of that sum, about ``eps * (‖λ_t‖ + ‖r_t‖)``.

    Args:
        steps: the step linearisation; needs ``vjp_all(v)`` returning ``J_tᵀ v[t]`` for all t.
        total: ``[T, B, S]`` total gradients λ_t.

    Returns:
        ``(g, recurrent)``, both ``[T, B, S]``: the immediate gradients and the recurrent part
        r_t = J_{t+1}ᵀ λ_{t+1} (zero at the last step).
    """
    recurrent = torch.zeros_like(total)
    recurrent[:-1] = steps.vjp_all(total)[1:]
    return total - recurrent, recurrent


@dataclass
class _Carry:
    """λ at the step just after the current block: a unit vector and its float64 log norm."""

    unit: Tensor
    log_norm: Tensor


def _block_is_safe(ln: Tensor, incoming: Tensor | None, low: float, high: float) -> bool:
    """A block is safe when every non-zero norm (``ln``, relative to the block's scale) stays
    well inside the dtype's range and no vector became exactly zero right after a non-zero one
    (a possible underflow). ``incoming`` is the log norm of λ just after the block."""
    nonzero = ~torch.isneginf(ln)
    if bool((nonzero & ((ln < low) | ~(ln < high))).any()):
        return False
    later = torch.cat([ln[1:], incoming.unsqueeze(0)]) if incoming is not None else ln[1:]
    earlier = ln if incoming is not None else ln[:-1]
    underflow = torch.isneginf(earlier) & ~torch.isneginf(later)
    return not bool(underflow.any())
