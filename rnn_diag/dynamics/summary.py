"""Condense a gradient-norm profile log10‖∂L/∂h_t‖ into a few numbers and a verdict.

Definitions (t = 0..T-1 in input order, y_t = log10‖λ_t‖, λ_t = ∂L/∂h_t):

* **anchor** — where the gradient enters, i.e. the step the distances are measured from. By
  default (``anchor="last"``) the *last step with a non-zero norm* (finite or +inf): the loss
  reads no state after it (later steps are exactly zero, −inf, e.g. padding), and in the usual
  many-to-one setting it is T−1. ``anchor="peak"`` uses the step of the largest finite norm
  instead; an int fixes it. "last" is the default because "peak" lands on t = 0 when gradients
  *explode* backwards in time, which would leave nothing to fit.
* **distance** d_t = anchor − t, for the steps t ≤ anchor (the steps after the anchor receive no
  gradient from it and are ignored).
* **decay_per_step** — least-squares slope of y_t against d_t over the steps t ≤ anchor with a
  finite y_t, in decades per step: negative = vanishing, positive = exploding. NaN with fewer
  than two finite points.
* **horizon** — the largest distance d whose norm is still within ``decades`` (3) of the largest
  finite norm over t ≤ anchor: ``max{d_t : y_t finite, y_t ≥ max y − 3}``; "how far back does the
  signal reach with at least 1/1000 of its peak strength". An int number of steps; 0 when only
  the anchor qualifies; −1 (with NaN elsewhere) when nothing is finite.
* **ratio_log10** — y_0 − y_{T−1} = log10‖λ_0‖ − log10‖λ_{T−1}‖, the raw endpoint comparison in
  decades (IEEE arithmetic: ±inf if an endpoint is an exact zero or an overflow, NaN if one is
  NaN).
* **verdict** — from the fitted change over the fitted span, Δ = decay_per_step · (anchor −
  first fitted step), in decades:
    - "exploding" if Δ ≥ +``explode_decades`` (default 1: the earliest step's gradient is 10×
      the latest's; the parameter gradient is then dominated by the most distant steps and the
      factor compounds with T), or if any y_t = +inf at t ≤ anchor (overflow);
    - "vanishing" if Δ ≤ −``vanish_decades`` (default 3: the earliest steps get less than
      1/1000 of the signal, the same cut as the horizon — too little to learn from next to the
      recent steps);
    - "stable" otherwise;
    - "undetermined" when fewer than two points are finite (and none overflowed): one point
      has no slope, whether the steps before it are exact zeros (a ``detach()``, a one-step
      profile from a module called once per step) or NaN. No verdict is guessed from it.

Non-finite values: NaN is ignored everywhere (except ratio_log10); −inf (an exactly zero
gradient) is excluded from the fit and never within the horizon; +inf (overflow) is excluded
from the fit and the peak and forces "exploding".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["gradient_summary"]

COLUMNS = ["decay_per_step", "horizon", "ratio_log10", "verdict", "anchor"]


def _as_array(log10_norms) -> np.ndarray:
    if hasattr(log10_norms, "detach"):  # torch tensor
        log10_norms = log10_norms.detach().cpu().double().numpy()
    arr = np.asarray(log10_norms, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"gradient_summary needs a profile [T] or [T, B] of log10 norms, got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError("gradient_summary needs at least one step (T >= 1)")
    return arr


def _summarise(y: np.ndarray, anchor, decades, vanish_decades, explode_decades) -> dict:
    T = y.shape[0]
    nonzero = ~np.isnan(y) & (y != -np.inf)
    if isinstance(anchor, str):
        if anchor == "last":
            idx = np.flatnonzero(nonzero)
            a = int(idx[-1]) if idx.size else T - 1
        elif anchor == "peak":
            finite = np.isfinite(y)
            a = int(np.argmax(np.where(finite, y, -np.inf))) if finite.any() else T - 1
        else:
            raise ValueError(f"anchor must be 'last', 'peak' or an int step, got {anchor!r}")
    else:
        a = int(anchor) + (T if int(anchor) < 0 else 0)
        if not 0 <= a < T:
            raise ValueError(f"anchor={anchor} is outside the T={T} steps")
    window = y[: a + 1]
    d = a - np.arange(a + 1)
    finite = np.isfinite(window)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, silently
        ratio = float(y[0] - y[-1])
    out = {"decay_per_step": math.nan, "horizon": -1, "ratio_log10": ratio,
           "verdict": "undetermined", "anchor": a}
    if finite.any():
        peak = window[finite].max()
        within = finite & (window >= peak - decades)
        out["horizon"] = int(d[within].max())
    n = int(finite.sum())
    if n >= 2:
        dd, yy = d[finite].astype(np.float64), window[finite]
        dc = dd - dd.mean()
        out["decay_per_step"] = float((dc * (yy - yy.mean())).sum() / (dc * dc).sum())
    if (window == np.inf).any():
        out["verdict"] = "exploding"
    elif n >= 2:
        change = out["decay_per_step"] * float(d[finite].max())
        if change >= explode_decades:
            out["verdict"] = "exploding"
        elif change <= -vanish_decades:
            out["verdict"] = "vanishing"
        else:
            out["verdict"] = "stable"
    return out


def gradient_summary(
    log10_norms,
    *,
    anchor="last",
    decades: float = 3.0,
    vanish_decades: float = 3.0,
    explode_decades: float = 1.0,
):
    """Decay rate, horizon, endpoint ratio and a verdict for a gradient-norm profile.

    Args:
        log10_norms: ``[T]`` log10‖∂L/∂h_t‖ of one sequence (or a batch mean), or ``[T, B]``
            (one column per sample); a torch tensor, numpy array, list or pandas Series.
        anchor: "last" (default), "peak" or an int step: where distances are measured from
            (see the module docstring).
        decades: the drop from the peak that ends the horizon.
        vanish_decades, explode_decades: verdict thresholds on the fitted change over the
            sequence, in decades.

    Returns:
        For ``[T]``: a dict with ``decay_per_step`` (float, decades per step), ``horizon`` (int,
        steps), ``ratio_log10`` (float, decades), ``verdict`` ("vanishing", "stable",
        "exploding" or "undetermined") and ``anchor`` (int step). For ``[T, B]``: a pandas
        DataFrame with one row per sample, columns ``sample`` and the same keys.

    Example:
        >>> import numpy as np
        >>> profile = -0.05 * (99 - np.arange(100))      # 0.05 decades lost per step back
        >>> s = gradient_summary(profile)
        >>> round(s["decay_per_step"], 6), s["horizon"], round(s["ratio_log10"], 6), s["verdict"]
        (-0.05, 60, -4.95, 'vanishing')
    """
    arr = _as_array(log10_norms)
    kwargs = dict(
        anchor=anchor, decades=decades, vanish_decades=vanish_decades,
        explode_decades=explode_decades,
    )
    if arr.ndim == 1:
        return _summarise(arr, **kwargs)
    rows = [dict(sample=b, **_summarise(arr[:, b], **kwargs)) for b in range(arr.shape[1])]
    return pd.DataFrame(rows, columns=["sample", *COLUMNS])
