"""One row of numbers per recorded profile: :func:`rnn_diag.gradient_summary` applied to the
batch-mean total gradient of each (recorded backward, module, layer, direction) of a
:meth:`rnn_diag.Probe.frame`.

Shared by everything that condenses a probe's record: the sweep runner's ``summaries`` table,
:func:`rnn_diag.record`, and the TensorBoard, W&B and Lightning integrations, so that a horizon
means the same number everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..dynamics.summary import COLUMNS, gradient_summary

__all__ = ["PROFILE_METRIC", "VERDICT_CODES", "profiles", "summarise_frame"]

#: The metric the summaries read: the batch mean of log10‖∂L/∂h_t‖ (state "h").
PROFILE_METRIC = "total_mean"

#: Verdicts as numbers, for loggers that take only scalars (TensorBoard, W&B, Lightning):
#: −1 vanishing, 0 stable, +1 exploding; "undetermined" has no code (NaN).
VERDICT_CODES = {"vanishing": -1.0, "stable": 0.0, "exploding": 1.0}


def profiles(frame: pd.DataFrame, by: Sequence[str] = ("iteration", "module", "layer",
                                                        "direction")):
    """The batch-mean profiles of a probe frame: ``(key, values)`` per group of ``by``, where
    ``values`` is log10‖∂L/∂h_t‖ in the order of ``t`` (a float64 numpy array ``[T]``).

    Only rows of state "h" and metric :data:`PROFILE_METRIC` count; columns of ``by`` that the
    frame lacks are left out of the grouping (a frame without ``module`` groups by the rest).
    """
    part = frame[(frame["metric"] == PROFILE_METRIC) & (frame["state"] == "h")]
    keys = [k for k in by if k in part.columns]
    if part.empty:
        return
    for key, group in part.groupby(keys, sort=True):
        yield key, group.sort_values("t")["value"].to_numpy(dtype="float64")


def summarise_frame(frame: pd.DataFrame, by: Sequence[str] = ("iteration", "module", "layer",
                                                               "direction")) -> pd.DataFrame:
    """:func:`rnn_diag.gradient_summary` of every batch-mean profile in ``frame``.

    Args:
        frame: rows of :meth:`rnn_diag.Probe.frame` (or a stored ``gradients`` table, which has
            ``epoch`` or ``step`` in place of ``iteration``: pass it in ``by``).
        by: the columns that identify one profile; those the frame lacks are skipped.

    Returns:
        One row per profile: the ``by`` columns present, then ``decay_per_step`` (decades per
        step), ``horizon`` (steps), ``ratio_log10``, ``verdict``, ``anchor`` and ``steps``
        (the profile's length T). Empty, with those columns, when the frame has no profile.

    Example:
        >>> import torch, rnn_diag as rd
        >>> rnn = torch.nn.RNN(2, 4)
        >>> with rd.attach(rnn) as probe:
        ...     out, _ = rnn(torch.randn(30, 3, 2))
        ...     out[-1].sum().backward()
        >>> s = summarise_frame(probe.frame())
        >>> s[["iteration", "module", "layer", "direction", "steps"]].values.tolist()
        [[0, '', 0, 0, 30]]
    """
    keys = [k for k in by if k in frame.columns]
    rows = []
    for key, values in profiles(frame, keys):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **gradient_summary(values), "steps": len(values)})
    return pd.DataFrame(rows, columns=[*keys, *COLUMNS, "steps"])
