"""The columns of a ``trials.parquet`` row that are read off the trial's own long tables, the
same for a sweep's trial (:mod:`.trial`) and a recording (:mod:`rnn_diag.recording`)."""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["FIXED_POINT_CLASSES", "SUMMARY_KEYS", "derived_columns", "fixed_point_columns"]

#: The gradient-summary keys stored for the first and the last recorded profile.
SUMMARY_KEYS = ("decay_per_step", "horizon", "ratio_log10", "verdict")
#: The stability classes counted in ``fixed_points_{class}_end`` (those of
#: :class:`rnn_diag.dynamics.fixed_points.FixedPoints`).
FIXED_POINT_CLASSES = ("stable", "saddle", "unstable", "marginal")


def derived_columns(summaries: pd.DataFrame, spectra: pd.DataFrame,
                    lyapunov: pd.DataFrame, fixed_points: pd.DataFrame | None = None) -> dict:
    """The row's summary columns.

    Args:
        summaries: ``summaries`` rows (``layer``, ``direction`` and the keys of
            :func:`rnn_diag.gradient_summary`), in recording order.
        spectra: ``spectra`` rows (``when``, ``modulus``, ``singular_value``).
        lyapunov: ``lyapunov`` rows (``when``, ``exponent``, nats per step).
        fixed_points: ``fixed_points`` rows (``when``, ``layer``, ``converged``, ``outlier``,
            ``stability``, ``max_modulus``), possibly empty; None (a recording, which finds no
            fixed points) leaves their columns out.

    Returns:
        ``{key}_first`` and ``{key}_last`` for each of :data:`SUMMARY_KEYS`, from the first and
        the last profile of the top layer, forward direction (None without a profile);
        ``spectral_radius_{init,end}`` and ``spectral_norm_{init,end}`` (the largest modulus
        and singular value over the gate blocks) and ``lyapunov_top_{init,end}`` (the largest
        exponent), NaN without that snapshot; with ``fixed_points``, the counts of the top
        layer's points at "end" and ``slowest_stable_modulus_end``
        (:func:`fixed_point_columns`).

    Example:
        >>> s = pd.DataFrame({"layer": [0, 0], "direction": [0, 0], "decay_per_step": [-.1, -.2],
        ...                   "horizon": [9, 7], "ratio_log10": [-1., -2.],
        ...                   "verdict": ["stable", "vanishing"]})
        >>> row = derived_columns(s, pd.DataFrame(), pd.DataFrame())
        >>> row["horizon_first"], row["verdict_last"], row["lyapunov_top_end"]
        (9, 'vanishing', nan)
    """
    row = {}
    top = summaries
    if len(top):
        top = top[top["layer"] == top["layer"].max()]
        if "direction" in top:
            top = top[top["direction"] == top["direction"].min()]
    for tag, pick in (("first", 0), ("last", -1)):
        rec = top.iloc[pick].to_dict() if len(top) else {}
        for key in SUMMARY_KEYS:
            row[f"{key}_{tag}"] = rec.get(key)
    for when in ("init", "end"):
        part = spectra[spectra["when"] == when] if len(spectra) else spectra
        row[f"spectral_radius_{when}"] = float(part["modulus"].max()) if len(part) else math.nan
        row[f"spectral_norm_{when}"] = (float(part["singular_value"].max()) if len(part)
                                        else math.nan)
        lp = lyapunov[lyapunov["when"] == when] if len(lyapunov) else lyapunov
        row[f"lyapunov_top_{when}"] = float(lp["exponent"].max()) if len(lp) else math.nan
    if fixed_points is not None:
        row.update(fixed_point_columns(fixed_points))
    return row


def fixed_point_columns(table: pd.DataFrame) -> dict:
    """The ``trials.parquet`` columns read off a ``fixed_points`` table: from the top layer at
    "end", ``fixed_points_{stable,saddle,unstable,marginal}_end`` (converged, non-outlier
    points of each class), ``fixed_points_unconverged_end`` (points with ``converged`` False)
    and ``slowest_stable_modulus_end`` (the largest |λ₁| of the counted stable points: how slowly
    the slowest memory decays; NaN without one). Without that snapshot: None and NaN.

    Example:
        >>> t = pd.DataFrame({"when": "end", "layer": 0, "converged": [True, True, False],
        ...                   "outlier": False, "stability": ["stable", "saddle", "stable"],
        ...                   "max_modulus": [0.9, 1.2, 0.99]})
        >>> row = fixed_point_columns(t)
        >>> row["fixed_points_stable_end"], row["fixed_points_unconverged_end"]
        (1, 1)
        >>> row["slowest_stable_modulus_end"]
        0.9
    """
    keys = [f"fixed_points_{k}_end" for k in (*FIXED_POINT_CLASSES, "unconverged")]
    part = table[table["when"] == "end"] if len(table) else table
    if not len(part):
        return {**dict.fromkeys(keys), "slowest_stable_modulus_end": math.nan}
    part = part[part["layer"] == part["layer"].max()]
    counted = part[part["converged"].astype(bool) & ~part["outlier"].astype(bool)]
    row = {f"fixed_points_{k}_end": int((counted["stability"] == k).sum())
           for k in FIXED_POINT_CLASSES}
    row["fixed_points_unconverged_end"] = int((~part["converged"].astype(bool)).sum())
    stable = counted[counted["stability"] == "stable"]
    row["slowest_stable_modulus_end"] = (float(stable["max_modulus"].max()) if len(stable)
                                         else math.nan)
    return row
