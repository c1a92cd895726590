"""The columns of a ``trials.parquet`` row that are read off the trial's own long tables, the
same for a sweep's trial (:mod:`.trial`) and a recording (:mod:`rnn_diag.recording`)."""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["SUMMARY_KEYS", "derived_columns"]

#: The gradient-summary keys stored for the first and the last recorded profile.
SUMMARY_KEYS = ("decay_per_step", "horizon", "ratio_log10", "verdict")


def derived_columns(summaries: pd.DataFrame, spectra: pd.DataFrame,
                    lyapunov: pd.DataFrame) -> dict:
    """The row's summary columns.

    Args:
        summaries: ``summaries`` rows (``layer``, ``direction`` and the keys of
            :func:`rnn_diag.gradient_summary`), in recording order.
        spectra: ``spectra`` rows (``when``, ``modulus``, ``singular_value``).
        lyapunov: ``lyapunov`` rows (``when``, ``exponent``, nats per step).

    Returns:
        ``{key}_first`` and ``{key}_last`` for each of :data:`SUMMARY_KEYS`, from the first and
        the last profile of the top layer, forward direction (None without a profile);
        ``spectral_radius_{init,end}`` and ``spectral_norm_{init,end}`` (the largest modulus
        and singular value over the gate blocks) and ``lyapunov_top_{init,end}`` (the largest
        exponent), NaN without that snapshot.

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
    return row
