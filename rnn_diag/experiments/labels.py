"""How swept keys and their values are written for a reader: the one home of the short key
names and the value texts used by the trial labels (:func:`~rnn_diag.experiments.grid.trial_label`),
the report's findings and the figures' panel titles.

Vocabulary (the same words in the code, the report and the README): a *setting* is one
combination of the swept values other than the seed (``seq_len 300, weight_scale 0.5``);
a *panel setting* is one combination of the swept values other than the sequence length and
the seed (``weight_scale=0.5``), the unit the figures give a panel of its own (colour tells the
sequence lengths apart, seeds are aggregated). In the figures' code every "setting" is a panel
setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["format_value", "short_names"]


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key -> its last component, or the full key where two keys' last components
    read the same.

    Example:
        >>> short_names(["task.seq_len", "model.weight_scale"])
        {'task.seq_len': 'seq_len', 'model.weight_scale': 'weight_scale'}
        >>> short_names(["a.x", "b.x", "y"])
        {'a.x': 'a.x', 'b.x': 'b.x', 'y': 'y'}
    """
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def format_value(value: Any, *, nan: str = "null") -> str:
    """A setting's value as written in YAML: ``null`` for None, ``true``/``false``, numbers as
    given (``str``), lists as ``[a, b]`` and mappings as ``{k: v}`` (recursively). NumPy
    scalars and arrays (as read back from a stored table) are written as their Python values.

    A float NaN is written ``nan`` (default ``"null"``): in a stored table NaN is how a missing
    value reads back, so the report writes it as an unset one; the trial labels pass
    ``nan="nan"``, as they always have, for a NaN that is a swept value.

    Example:
        >>> format_value(None), format_value(float("nan")), format_value(0.5), format_value(300)
        ('null', 'null', '0.5', '300')
        >>> format_value(True), format_value(["init", "end"]), format_value({"eps": 1e-08})
        ('true', '[init, end]', '{eps: 1e-08}')
        >>> format_value({"eps": float("nan")}, nan="nan")
        '{eps: nan}'
    """
    if value is None:
        return "null"
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # NumPy scalar or array -> Python value or list
    if isinstance(value, float) and math.isnan(value):
        return nan
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v, nan=nan) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v, nan=nan)}" for k, v in value.items()) + "}"
    return str(value)
