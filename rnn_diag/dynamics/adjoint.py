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

import numpy as np
import torch
from torch import Tensor

from .lognorm import direct_norm_range, log_norm


class StepVJP(Protocol):
    """Transposed per-step Jacobian of a recurrence, applied to a batch of vectors.

    Optionally also ``fill_block(X, g_block, t0, t1)``: the whole inner loop at once, filling
    ``X[t] = g_block[t - t0] + J_{t+1}ᵀ X[t + 1]`` for t = t1 - 1 down to t0.
    """

    def vjp_into(self, t: int, v: Tensor, add: Tensor | None, out: Tensor) -> None:
        """Write ``add + J_tᵀ v`` (or ``J_tᵀ v`` when add is None) into ``out``, all
        ``[B, S]``, for ``1 <= t < T``."""


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


def adjoint_scan(
    steps: StepVJP,
    g: Tensor,
    g_log_scale: Tensor | None,
    g_log_norm: Tensor,
    *,
    block: int = 32,
    starts: list[int] | None = None,
) -> AdjointResult:
    """Run λ_{t-1} = g_{t-1} + J_tᵀ λ_t from t = T-1 down to 0, in log space.

    Args:
        steps: supplies ``J_tᵀ v`` (see :class:`StepVJP`).
        g: ``[T, B, S]`` immediate gradients, stored as ``g * exp(g_log_scale)``.
        g_log_scale: ``[T, B]`` float64 natural-log scale of ``g``; None means 0.
        g_log_norm: ``[T, B]`` float64 ``ln ‖g_t‖`` of the true vectors (``-inf`` where zero).
        block: steps between renormalisations of the carried vector.
        starts: steps t >= 1 where the recursion restarts: λ_{t-1} = g_{t-1}, without J_tᵀ λ_t
            (step t does not read state t-1 through this recurrence, e.g. the user's code
            handed a transformed state to the call that ran step t).

    Returns:
        :class:`AdjointResult` with λ_t for every t.

    Example (a scalar recurrence λ_{t-1} = 0.5 λ_t with λ_{T-1} = 1):
        >>> class Half:
        ...     def vjp_into(self, t, v, add, out):
        ...         torch.mul(v, 0.5, out=out)
        ...         if add is not None:
        ...             out.add_(add)
        >>> g = torch.zeros(2000, 1, 1); g[-1] = 1.0
        >>> res = adjoint_scan(Half(), g, None, log_norm(g))
        >>> round(float(res.log_norm[0, 0] / math.log(10)), 3)   # log10(0.5**1999)
        -601.759
    """
    T, B, S = g.shape
    dtype = g.dtype
    # A block keeps one scale while its norms stay inside [low, high] (natural log, relative to
    # the scale): there a plain vector_norm is accurate (the largest entry is at least
    # norm / sqrt(S)) and no value comes near the subnormal numbers, whose arithmetic is very
    # slow on CPUs. Blocks start with norms <= 1 and their length follows the observed rate of
    # change; a block that drifts out anyway is redone with renormalisation at every step.
    low, high = (math.log(v) for v in direct_norm_range(dtype))
    low += 0.5 * math.log(S)
    budget = 0.8 * min(high, -low)
    max_coef = torch.finfo(dtype).max
    g_present = (~torch.isneginf(g_log_norm)).any(1).tolist()
    scaled = torch.empty_like(g)
    rows = scaled.unbind(0)  # list indexing is much cheaper than tensor indexing per step
    log_scale = torch.empty(T, B, dtype=torch.float64, device=g.device)
    out_log_norm = torch.empty_like(log_scale)

    def run(t0: int, t1: int, carry: _Carry | None) -> tuple[bool, float, Tensor]:
        """Fill steps t1 down to t0 with one fixed scale. Returns whether the block stayed
        safe, the largest change of ln‖λ‖ per step in it, and the norms of the last row."""
        has_g = any(g_present[t0 : t1 + 1])
        if carry is None or has_g:
            ref = g_log_norm[t0 : t1 + 1].amax(0)
            if carry is not None:
                ref = torch.maximum(ref, carry.log_norm)
            ref = torch.where(torch.isneginf(ref), torch.zeros_like(ref), ref)
        else:
            ref = carry.ref
        g_rows, g_block = [None] * (t1 - t0 + 1), None
        if has_g:
            shift = -ref if g_log_scale is None else g_log_scale[t0 : t1 + 1] - ref
            g_block = g[t0 : t1 + 1] * shift.exp().clamp(max=max_coef).to(dtype).unsqueeze(-1)
            g_rows = g_block.unbind(0)
        if carry is not None:
            incoming = carry.unit
            if has_g:
                incoming = incoming * (carry.log_norm - ref).exp().to(dtype).unsqueeze(-1)
            steps.vjp_into(t1 + 1, incoming, g_rows[-1], rows[t1])
        elif has_g:
            rows[t1].copy_(g_rows[-1])
        else:
            rows[t1].zero_()
        if hasattr(steps, "fill_block"):
            steps.fill_block(scaled, g_block, t0, t1)
        else:
            vjp_into = steps.vjp_into
            for t in range(t1 - 1, t0 - 1, -1):
                vjp_into(t + 1, rows[t + 1], g_rows[t - t0], rows[t])
        norms = torch.linalg.vector_norm(scaled[t0 : t1 + 1], dim=-1)
        ln = norms.double().log()
        later = None if carry is None else (carry.log_norm - ref)
        safe, rate = _check_block(ln, later, low, high)
        if not safe and t0 == t1:  # a single step: measure it robustly and accept it
            ln = log_norm(scaled[t0 : t1 + 1])
            norms = ln.exp().to(dtype)
        log_scale[t0 : t1 + 1] = ref
        torch.add(ln, ref, out=out_log_norm[t0 : t1 + 1])
        return safe, rate, norms[0]

    def carry_at(t: int, norm: Tensor) -> _Carry:
        unit = rows[t] / norm.clamp_min(torch.finfo(dtype).tiny).unsqueeze(-1)
        log = out_log_norm[t]
        return _Carry(unit, log, torch.where(torch.isneginf(log), torch.zeros_like(log), log))

    restarts = sorted({int(t) for t in starts or () if 0 < int(t) < T}, reverse=True)
    # One-step stretches (a restart at t and at t + 1) hold λ_t = g_t: filled in one pass, as a
    # loop stepped by user code that transforms the state every step has nothing but those.
    firsts = {0, *restarts}
    alone = [t for t in sorted(firsts) if t + 1 in firsts or t == T - 1]
    if alone:
        idx = torch.tensor(alone, device=g.device)
        ref = g_log_norm[idx]
        ref = torch.where(torch.isneginf(ref), torch.zeros_like(ref), ref)
        shift = -ref if g_log_scale is None else g_log_scale[idx] - ref
        scaled[idx] = g[idx] * shift.exp().clamp(max=max_coef).to(dtype).unsqueeze(-1)
        log_scale[idx] = ref
        out_log_norm[idx] = g_log_norm[idx]
    alone = set(alone)
    size, carry, hi = block, None, T - 1
    while hi >= 0:
        while restarts and restarts[0] > hi:
            restarts.pop(0)
        if hi in alone:
            carry, hi = None, hi - 1
            continue
        floor = restarts[0] if restarts else 0
        lo = max(floor, hi - size + 1)
        safe, rate, norm = run(lo, hi, carry)
        if safe or lo == hi:
            carry = carry_at(lo, norm)
        else:
            for t in range(hi, lo - 1, -1):
                step_rate, norm = run(t, t, carry)[1:]
                rate = max(rate, step_rate)
                carry = carry_at(t, norm)
        if lo == floor and restarts:
            carry = None  # the recurrence does not cross into step lo - 1
        size = block if not rate > 0 else int(min(block, max(1.0, budget / rate)))
        hi = lo - 1
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
    """λ at the step just after the current block: a unit vector, its float64 log norm, and
    that log norm with -inf (a zero vector) replaced by 0, usable as a scale."""

    unit: Tensor
    log_norm: Tensor
    ref: Tensor


def _check_block(
    ln: Tensor, later: Tensor | None, low: float, high: float
) -> tuple[bool, float]:
    """Whether a block is safe, and the largest per-step change of ``ln`` in it.

    Args:
        ln: ``[K, B]`` log norms relative to the block's scale, in time order.
        later: ``[B]`` relative log norm of λ just after the block (None at the end).

    Safe means every non-zero norm stays inside ``[low, high]`` and no vector became exactly
    zero right after a non-zero one (a possible underflow). The check runs in NumPy on the
    host: it is a few small reductions, far cheaper there than as device kernels.
    """
    a = ln.cpu().numpy()
    zero = np.isneginf(a)
    with np.errstate(invalid="ignore"):
        out_of_range = ~zero & ~((a >= low) & (a <= high))  # NaN fails both comparisons
    if later is not None:
        after = np.isneginf(later.cpu().numpy())
        nonzero_after = np.concatenate([~zero[1:], ~after[None]])
    else:
        nonzero_after = ~zero[1:]
    underflow = zero[: len(nonzero_after)] & nonzero_after
    finite = np.where(np.isfinite(a), a, 0.0)
    rate = float((finite.max(0) - finite.min(0)).max()) / max(1, a.shape[0] - 1)
    return not (out_of_range.any() or underflow.any()), rate
