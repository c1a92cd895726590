"""Norms that stay finite where the sum of squares under- or overflows.

``torch.linalg.vector_norm`` squares its entries, so in float32 it returns 0 for vectors whose
entries are below ~1e-19 and inf above ~1e19, long before the entries themselves leave the
representable range. Dividing by the largest magnitude first keeps every square in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LN10 = math.log(10.0)


def direct_norm_range(dtype: torch.dtype) -> tuple[float, float]:
    """Magnitudes ``(low, high)`` inside which ``torch.linalg.vector_norm`` is accurate.

    With the largest entry in ``[low, high] = [tiny**0.4, max**0.4]`` its square is a normal
    number and a sum of up to 10^7 squares cannot overflow; entries whose squares underflow are
    then below eps relative to the norm.
    """
    info = torch.finfo(dtype)
    return info.tiny**0.4, info.max**0.4


def log_norm(x: Tensor, dim: int = -1) -> Tensor:
    """Natural log of the L2 norm of ``x`` along ``dim``, in float64.

    Args:
        x: any floating tensor, e.g. ``[T, B, H]``.
        dim: the dimension that is reduced.

    Returns:
        float64 tensor with ``dim`` removed: ``ln ||x||_2``. ``-inf`` where ``x`` is exactly zero,
        ``+inf`` where it holds an infinite entry, NaN where it holds a NaN.

    Example:
        >>> x = torch.full((3,), 1e-30)
        >>> round(float(log_norm(x)) / LN10, 4)   # log10(sqrt(3) * 1e-30)
        -29.7614
    """
    low, high = direct_norm_range(x.dtype)
    norm = torch.linalg.vector_norm(x, dim=dim)
    # The largest entry m satisfies norm / sqrt(n) <= m <= norm, so this range guarantees
    # low <= m <= high without computing m.
    low_norm = low * math.sqrt(x.shape[dim])
    if bool(((norm >= low_norm) & (norm <= high)).all()):
        return norm.double().log()
    # max |x| without allocating |x| (a [T, B, H] temporary costs ~10x the two reductions)
    magnitude = torch.maximum(x.amax(dim=dim), x.amin(dim=dim).neg())
    direct_ok = (magnitude == 0) | ((magnitude >= low) & (magnitude <= high))
    if bool(direct_ok.all()):
        return norm.double().log()
    # Some vectors are too small or too large for the sum of squares: divide by the largest
    # magnitude first (NaN and inf entries propagate through amax unchanged).
    magnitude = magnitude.unsqueeze(dim)
    finite_nonzero = torch.isfinite(magnitude) & (magnitude > 0)
    safe = torch.where(finite_nonzero, magnitude, torch.ones_like(magnitude))
    unit_norm = torch.linalg.vector_norm(x / safe, dim=dim, keepdim=True)
    log = magnitude.double().log() + unit_norm.double().log()
    log = torch.where(finite_nonzero, log, magnitude.double().log())
    return log.squeeze(dim)


def log10_norm(x: Tensor, dim: int = -1) -> Tensor:
    """``log10 ||x||_2`` along ``dim`` in float64; see :func:`log_norm`."""
    return log_norm(x, dim) / LN10


def scale_by_exp(x: Tensor, log_scale: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``x * exp(log_scale)`` computed in float64, then cast to ``dtype`` (default: ``x.dtype``).

    Args:
        x: ``[..., S]`` values in scaled units.
        log_scale: ``[...]`` natural-log scale per vector (float64).

    The product is formed in float64 so that a scale outside the dtype's range (e.g. e^-200
    in float32) still yields every representable result; values beyond float64 range become 0
    or inf, exactly as the true gradient would when stored in that dtype.
    """
    out = x.double() * log_scale.double().exp().unsqueeze(-1)
    # 0 * inf would be NaN for entries that are exactly zero (padding): keep them zero.
    out = torch.where(x == 0, torch.zeros((), dtype=out.dtype, device=out.device), out)
    return out.to(dtype or x.dtype)


def add_scaled(a: Tensor, log_a: Tensor, b: Tensor, log_b: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of two vectors given in scaled form: ``a * exp(log_a) + b * exp(log_b)``.

    Args:
        a, b: ``[..., S]`` values in scaled units, same dtype.
        log_a, log_b: ``[...]`` float64 natural-log scales.

    Returns:
        ``(c, log_c)`` with ``c * exp(log_c)`` equal to the sum; ``log_c`` is the log norm of the
        larger term, so neither term is multiplied by more than 1 and nothing overflows. (The
        larger *scale* would not do: a zero vector at scale 0 would wipe out a tiny one.)

    Example:
        >>> a, b = torch.zeros(1, 2), torch.ones(1, 2)
        >>> c, log_c = add_scaled(a, torch.zeros(1, dtype=torch.float64), b,
        ...                       torch.full((1,), -800.0, dtype=torch.float64))
        >>> round(float(log_norm(c) + log_c), 3)   # ln(sqrt(2) e^-800)
        -799.653
    """
    size_a, size_b = log_norm(a) + log_a, log_norm(b) + log_b
    ref = torch.maximum(size_a, size_b)
    ref = torch.where(torch.isfinite(ref), ref, torch.zeros_like(ref))
    # A zero vector gets weight 0 (its scale may be far above ref: 0 * inf would be NaN).
    wa = torch.where(torch.isneginf(size_a), 0.0, (log_a - ref).exp()).to(a.dtype).unsqueeze(-1)
    wb = torch.where(torch.isneginf(size_b), 0.0, (log_b - ref).exp()).to(b.dtype).unsqueeze(-1)
    return a * wa + b * wb, ref
