"""The trial grid of a sweep: one :class:`TrialSpec` per point of the Cartesian product.

Trial ids: ``id`` is the first 12 hex digits of the SHA-256 of
:func:`~rnn_diag.experiments.config.canonical_settings` of the trial's resolved config, the
canonical JSON (keys sorted, every default filled in) of its ``task``, ``model``, ``train`` and
``probes`` sections. So an id names the settings, not the file: the same resolved settings give
the same id in any file, under any experiment name or description, with keys in any order and
values written in any accepted form (``1e-3`` or ``0.001``, ``seed`` or ``train.seed``), and
whether they came from a sweep or from the base config; any difference in a setting gives
another id (a store resumes a sweep by skipping ids it already holds). Ids change if a later
version of the schema adds a setting, since the defaults are part of the settings.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from rnn_diag.experiments.config import (
    ConfigError,
    ConfigProblem,
    ExperimentConfig,
    _get_dotted,
    _show,
    canonical_settings,
    with_params,
)

__all__ = ["TrialSpec", "expand", "trial_id", "trial_label"]

ID_LENGTH = 12
"""Hex digits of SHA-256 kept in a trial id (48 bits: collisions are negligible below ~10^6
trials)."""


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a sweep.

    Attributes:
        id: :func:`trial_id` of :attr:`config`, 12 hex digits, stable across files and runs.
        params: the swept dotted keys -> this trial's values, in sweep order, as validated
            (e.g. ``{"task.seq_len": 100, "model.weight_scale": 0.5}``); ``{}`` without a sweep.
        config: the fully resolved config: the sweep's values applied, ``sweep == {}``.
    """

    id: str
    params: dict
    config: ExperimentConfig


def trial_id(config: ExperimentConfig) -> str:
    """The stable id of a resolved config's settings (see the module docstring).

    Example:
        >>> from rnn_diag.experiments.config import validate_config
        >>> a = validate_config({"name": "a", "task": {"name": "adding", "seq_len": 20},
        ...                      "train": {"lr": "1e-3", "seed": 1}})
        >>> b = validate_config({"train": {"seed": 1, "lr": 0.001}, "name": "b",
        ...                      "task": {"seq_len": 20, "name": "adding"}})
        >>> trial_id(a) == trial_id(b), len(trial_id(a))
        (True, 12)
    """
    digest = hashlib.sha256(canonical_settings(config).encode("utf-8")).hexdigest()
    return digest[:ID_LENGTH]


def expand(config: ExperimentConfig, source: str = "<config>") -> list[TrialSpec]:
    """Every trial of ``config``'s sweep: the Cartesian product of its value lists.

    Order: the first sweep key varies slowest, the last fastest, values in their listed order
    (as nested loops in file order), so the same config always gives the same list. Without a
    sweep, one trial of the base config with ``params == {}``.

    Args:
        config: a validated config (:func:`~rnn_diag.experiments.config.load_config`).
        source: how a :class:`~rnn_diag.experiments.config.ConfigError` names the config.

    Returns:
        ``len = prod(len(values) for values in config.sweep.values())`` trials with distinct
        ids.

    Raises:
        ConfigError: a trial is invalid or two trials have the same settings (not for a config
            that validated: its trials were checked then).

    Example:
        >>> from rnn_diag.experiments.config import validate_config
        >>> cfg = validate_config({"name": "demo", "task": {"name": "adding", "seq_len": 20},
        ...                        "sweep": {"task.seq_len": [20, 50],
        ...                                  "model.cell": ["rnn", "gru"]}})
        >>> [(s.params["task.seq_len"], s.params["model.cell"]) for s in expand(cfg)]
        [(20, 'rnn'), (20, 'gru'), (50, 'rnn'), (50, 'gru')]
        >>> expand(cfg)[3].config.model.cell, expand(cfg)[3].config.sweep
        ('gru', {})
    """
    keys = list(config.sweep)
    specs: list[TrialSpec] = []
    seen: dict[str, dict] = {}
    for values in itertools.product(*(config.sweep[k] for k in keys)):
        raw = dict(zip(keys, values))
        trial = with_params(config, raw, source)
        dumped = trial.model_dump()
        params = {k: _get_dotted(dumped, k) for k in keys}
        spec = TrialSpec(trial_id(trial), params, trial)
        if spec.id in seen:
            raise ConfigError(source, [_same_settings(seen[spec.id], params)])
        seen[spec.id] = params
        specs.append(spec)
    return specs


def _same_settings(first: dict, second: dict) -> ConfigProblem:
    def where(params):
        return ", ".join(f"{k} = {_show(v)}" for k, v in params.items())

    return ConfigProblem("sweep", f"the trials with {where(first)} and with {where(second)} "
                         "have the same settings", None, None, ("sweep",))


def trial_label(spec: TrialSpec) -> str:
    """A short text of a trial's swept values: ``"seq_len=100 weight_scale=0.5"``.

    Each key is shortened to its last component (the full dotted key where two would read
    the same); values are written as in YAML (``null``, ``true``, ``0.5``, ``[init, end]``).
    ``"default"`` for a trial without swept values.

    Example:
        >>> from rnn_diag.experiments.config import validate_config
        >>> cfg = validate_config({"name": "demo", "task": {"name": "weather", "seq_len": 10},
        ...                        "sweep": {"task.seq_len": [10, 100],
        ...                                  "model.weight_scale": [None, 0.5]}})
        >>> [trial_label(s) for s in expand(cfg)][:3]
        ['seq_len=10 weight_scale=null', 'seq_len=10 weight_scale=0.5', 'seq_len=100 weight_scale=null']
    """  # noqa: E501
    if not spec.params:
        return "default"
    short = [k.rsplit(".", 1)[-1] for k in spec.params]
    names = [s if short.count(s) == 1 else k for s, k in zip(short, spec.params)]
    return " ".join(f"{n}={_text(v)}" for n, v in zip(names, spec.params.values()))


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value)
