"""The trial grid of a sweep: one :class:`TrialSpec` per point of the Cartesian product.

Trial ids: ``id`` is the first 12 hex digits of the SHA-256 of
:func:`~rnn_diag.experiments.config.canonical_settings` of the trial's resolved config, the
canonical JSON (keys sorted, every default filled in) of its ``task``, ``model``, ``train`` and
``probes`` sections. So an id names the settings, not the file: the same resolved settings give
the same id in any file, under any experiment name or description, with keys in any order and
values written in any accepted form (``1e-3`` or ``0.001``, ``seed`` or ``train.seed``), and
whether they came from a sweep or from the base config; any difference in a setting gives
another id (a store resumes a sweep by skipping ids it already holds). Ids change if a later
version of the schema adds a setting, since the defaults are part of the settings, unless the
setting is left out while at its default, as the scan cells' keys are (``state_size``,
``d_state``, ...; see :func:`~rnn_diag.experiments.config.canonical_settings`).

Validation: each trial is validated once. Validating a config with a sweep (the schema calls
:func:`validate_trials`) builds every trial and keeps the list (for the last few configs, by
content); :func:`expand` hands it out, once, instead of validating the trials again.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rnn_diag.experiments.config.errors import (
    ConfigError,
    ConfigProblem,
    line_error,
    show_value,
)
from rnn_diag.experiments.config.schema import (
    ExperimentConfig,
    canonical_settings,
    get_dotted,
    register_trial_check,
    with_params,
)
from rnn_diag.experiments.labels import format_value, short_names

__all__ = ["TrialSpec", "expand", "trial_id", "trial_label", "validate_trials"]

ID_LENGTH = 12
"""Hex digits of SHA-256 kept in a trial id (48 bits: collisions are negligible below ~10^6
trials)."""

_MAX_TRIALS_LISTED = 5  # invalid trials listed in the errors of one sweep; the rest are counted
_KEPT = 8  # configs whose validated trials wait for expand(), the oldest dropped first
_validated: OrderedDict[str, list[TrialSpec]] = OrderedDict()  # _key(config) -> its trials
_validated_lock = threading.Lock()


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a sweep.

    Attributes:
        id: :func:`trial_id` of :attr:`config`, 12 hex digits, stable across files and runs.
        params: the swept dotted keys -> this trial's values, in sweep order, as validated
            (e.g. ``{"task.seq_len": 100, "model.weight_scale": 0.5}``); ``{}`` without a sweep.
        config: the fully resolved config: the sweep's values applied, ``sweep == {}``.
        settings: every dotted setting any value of a named axis sets, as this trial
            resolves it (e.g. ``remedy = irnn``: ``{"model.nonlinearity": "relu",
            "model.init": "identity", "model.cell": "rnn", ...}``, and the same keys with
            this trial's values for ``remedy = gru``); ``{}`` without named axes. ``params``
            holds the axes' names.
    """

    id: str
    params: dict
    config: ExperimentConfig
    settings: dict = field(default_factory=dict)


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
    return _id(canonical_settings(config))


def _id(settings: str) -> str:
    return hashlib.sha256(settings.encode("utf-8")).hexdigest()[:ID_LENGTH]


def expand(config: ExperimentConfig, source: str = "<config>") -> list[TrialSpec]:
    """Every trial of ``config``'s sweep: the Cartesian product of its value lists.

    Order: the first sweep key varies slowest, the last fastest, values in their listed order
    (as nested loops in file order), so the same config always gives the same list. Without a
    sweep, one trial of the base config with ``params == {}``.

    The trials of a config validated in this process are not validated again: they were built
    then (:func:`validate_trials`). Otherwise (a config validated in another process, or changed
    since) each is validated here, once; without a sweep the one trial is a copy of ``config``.

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
    if not config.sweep:  # the one trial is the base config, validated as such
        return [TrialSpec(trial_id(config), {}, config.model_copy(deep=True))]
    with _validated_lock:
        specs = _validated.pop(_key(config), None)
    if specs is None:
        specs = _expand_afresh(config, source)
    return specs


def _expand_afresh(config: ExperimentConfig, source: str) -> list[TrialSpec]:
    """:func:`expand` for a config whose trials were not kept: each validated here, once."""
    keys = list(config.sweep)
    specs: list[TrialSpec] = []
    seen: dict[str, dict] = {}
    for values in itertools.product(*(config.sweep[k] for k in keys)):
        params = dict(zip(keys, values))
        trial = with_params(config, params, source)
        spec = _spec(config, trial, canonical_settings(trial), params)
        if spec.id in seen:
            raise ConfigError(source, [_same_settings(seen[spec.id], spec.params)])
        seen[spec.id] = spec.params
        specs.append(spec)
    return specs


def _spec(config: ExperimentConfig, trial: ExperimentConfig, settings: str,
          params: dict) -> TrialSpec:
    """The :class:`TrialSpec` of the validated ``trial`` of ``config`` with
    :func:`canonical_settings` ``settings``, made with the sweep values ``params``: the swept
    keys read back from the trial, the named axes' names as given."""
    dumped = trial.model_dump()
    values = {k: v if k in config.axes else get_dotted(dumped, k) for k, v in params.items()}
    applied = {key: _setting(dumped, key) for variants in config.axes.values()
               for settings in variants.values() for key in settings}
    return TrialSpec(_id(settings), values, trial, applied)


def _setting(dumped: dict, key: str) -> Any:
    """The dotted ``key`` of a dumped trial config; None where the trial has no such setting
    (another task's option)."""
    try:
        return get_dotted(dumped, key)
    except KeyError:
        return None


def _same_settings(first: dict, second: dict) -> ConfigProblem:
    def where(params):
        return ", ".join(f"{k} = {show_value(v)}" for k, v in params.items())

    return ConfigProblem("sweep", f"the trials with {where(first)} and with {where(second)} "
                         "have the same settings", None, None, ("sweep",))


def validate_trials(config: ExperimentConfig) -> list[dict]:
    """Validate every trial of ``config``'s sweep, each once (the check of
    :class:`~rnn_diag.experiments.config.ExperimentConfig`, run once its base settings are
    valid).

    Each value is first tried alone with the base config, so that a bad value is named as
    such; only if all are valid is every combination tried, and the trials must have distinct
    settings. When all is well the trials are kept for :func:`expand`.

    Returns:
        errors for ``pydantic.ValidationError.from_exception_data`` (made with
        :func:`~rnn_diag.experiments.config.errors.line_error`, located at the sweep's key and
        value, or at ``sweep``); ``[]`` when every trial is valid.
    """
    specs, errors = _trials(config)
    if not errors:
        with _validated_lock:
            _validated[_key(config)] = specs
            while len(_validated) > _KEPT:
                _validated.popitem(last=False)
    return errors


def _key(config: ExperimentConfig) -> str:
    """What a config's trials depend on: all of it (``repr`` keeps 1, 1.0 and True apart)."""
    return repr(config.model_dump())


def _trials(config: ExperimentConfig) -> tuple[list[TrialSpec], list[dict]]:
    """The :class:`TrialSpec` list of ``config``'s sweep and the errors of its invalid values
    and combinations (see :func:`validate_trials`); ``[]`` trials when there are errors."""
    keys = list(config.sweep)
    tried: dict[tuple, tuple] = {}
    tried_params: dict[tuple, dict] = {}

    def attempt(points: tuple) -> tuple:
        """``(trial, settings, problems)`` with the values at ``points``, ``((key, index),
        ...)``; a trial alone and the same trial as a combination are validated once."""
        if points not in tried:
            params = {k: config.sweep[k][i] for k, i in points}
            tried_params[points] = params
            try:
                trial = with_params(config, params)
            except ConfigError as exc:
                tried[points] = (None, None, exc.problems)
            else:
                tried[points] = (trial, canonical_settings(trial), [])
        return tried[points]

    errors = []
    for key in keys:  # each value alone first, so that a bad value is named as such
        seen: dict[str, Any] = {}
        for i, value in enumerate(config.sweep[key]):
            _, settings, problems = attempt(((key, i),))
            for p in problems:
                text = p.message
                if p.path != key and not p.path.startswith(key + "."):
                    text = f"with {key} = {show_value(value)}, {p.path or 'the config'}: {text}"
                errors.append(line_error(_where(config, key, i), text, value))
            if problems:
                continue
            if settings in seen:
                errors.append(line_error(
                    _where(config, key, i), f"the values {show_value(seen[settings])} and "
                    f"{show_value(value)} give the same settings", value))
            seen.setdefault(settings, value)
    if errors:
        return [], errors
    specs: list[TrialSpec] = []
    found: dict[str, str] = {}  # trial id -> the first trial with it, in words
    invalid = same = 0
    for points in itertools.product(*([(k, i) for i in range(len(config.sweep[k]))]
                                      for k in keys)):
        where = ", ".join(f"{k} = {show_value(config.sweep[k][i])}" for k, i in points)
        trial, settings, problems = attempt(points)
        if problems:
            invalid += 1
            if invalid <= _MAX_TRIALS_LISTED:
                p = problems[0]
                errors.append(line_error(
                    ("sweep",), f"the trial with {where} is invalid: {p.path}: {p.message}",
                    None))
            continue
        spec_id = _id(settings)
        if spec_id in found:
            same += 1
            if same == 1:
                errors.append(line_error(
                    ("sweep",), f"the trials with {found[spec_id]} and with {where} have the "
                    "same settings", None))
        found.setdefault(spec_id, where)
        if not errors:
            specs.append(_spec(config, trial, settings, tried_params[points]))
    if invalid > _MAX_TRIALS_LISTED:
        errors.append(line_error(
            ("sweep",), f"... and {invalid - _MAX_TRIALS_LISTED} more invalid trials", None))
    if same > 1:
        errors.append(line_error(("sweep",), f"... and {same - 1} more repeated trials", None))
    return ([] if errors else specs), errors


def _where(config: ExperimentConfig, key: str, i: int) -> tuple:
    """The location of a sweep's ``i``-th value of ``key``: a list index, or the name of a
    named axis's value (its key in the file)."""
    return ("sweep", key, config.sweep[key][i] if key in config.axes else i)


def trial_label(spec: TrialSpec) -> str:
    """A short text of a trial's swept values: ``"seq_len=100 weight_scale=0.5"``.

    Each key is shortened by :func:`~rnn_diag.experiments.labels.short_names` (its last
    component, the full dotted key where two would read the same); values are written by
    :func:`~rnn_diag.experiments.labels.format_value`, as in YAML (``null``, ``true``, ``0.5``,
    ``[init, end]``; a NaN value ``nan``, as stored labels always have). ``"default"`` for a
    trial without swept values.

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
    names = short_names(list(spec.params))
    return " ".join(f"{names[k]}={format_value(v, nan='nan')}" for k, v in spec.params.items())


register_trial_check(validate_trials)
