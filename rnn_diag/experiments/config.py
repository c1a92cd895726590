"""The experiment config: its schema, its loader and its validator (DESIGN.md §2, §6).

A config is a YAML file, read with ``yaml.safe_load`` and validated into an
:class:`ExperimentConfig`::

    name: weather                 # required; letters, digits, "_", "." and "-" (a folder name)
    description: "..."            # optional
    task:
      name: weather               # a task of rnn_diag.tasks: weather | adding | copy
      seq_len: 10                 # required, > 0
      lag: 5                      # further keys are that task's options (rnn_diag.tasks)
    model:
      cell: rnn                   # rnn | gru | lstm
      hidden_size: 10             # > 0
      num_layers: 1               # > 0
      nonlinearity: tanh          # tanh | relu (relu only with cell rnn)
      init: default               # default | orthogonal | identity | normal
      weight_scale: null          # null, or the spectral radius (> 0) W_hh is rescaled to
    train:
      epochs: 100                 # > 0
      optimizer: Adam             # an optimizer class of torch.optim
      optimizer_args: {}          # its further keyword arguments (not lr: use train.lr)
      lr: 0.01                    # > 0
      batch_size: null            # null = full batch, or > 0
      clip_grad_norm: null        # null, or the max gradient norm (> 0)
      device: auto                # cpu | cuda | auto
      seed: 0                     # >= 0
    probes:
      every: 1                    # gradient profile every N epochs (and always the last one)
      jacobians: off              # off | estimate | exact
      jacobian_samples: 64        # Jacobian norms on the first N samples; null = all
      lyapunov: [init, end]       # when: "init" (before training), "end", epoch numbers; []
      gradients: true             # record gradient profiles at all (false: train only)
      lyapunov_steps: null        # trajectory length; null = max(task.seq_len, 500)
      spectra: [init, end]        # when to record the spectra of W_hh; same format
      saturation: false
    sweep:                        # optional: dotted key -> non-empty list of values
      task.seq_len: [10, 100, 1000]
      model.weight_scale: [null, 0.5, 1.0, 1.5]

Every section but ``name`` and ``task`` may be left out; every key has the default shown
(``task.seq_len`` excepted). Unknown keys are refused everywhere.

Numbers: a whole number is accepted where a number is expected; text that reads as a number is
accepted too (PyYAML reads ``1e-3`` as the text "1e-3": it needs ``1.0e-3`` for a float);
``true``/``false`` are not numbers.

Schedules (``probes.lyapunov``, ``probes.spectra``) are stored in a canonical order without
repeats: ``"init"``, then epoch numbers ascending, then ``"end"``. Epoch ``k`` (1 ≤ k ≤
``train.epochs``) means "after epoch k"; ``0`` is the moment before training and is stored as
``"init"``. A single value stands for a one-element list; ``false`` or ``null`` for ``[]``.

Sweeps: every key is a dotted path to one setting (``task.seq_len``, ``task.lag``,
``model.cell``, ``train.optimizer_args.momentum``, ...); ``seed`` is short for ``train.seed``
(stored as ``train.seed``). The trials are the Cartesian product of the lists (see
:func:`rnn_diag.experiments.grid.expand`), and every one is validated with the config, so a bad
value is refused before anything runs. When a sweep changes ``task.name``, base task options at
their default value are dropped for the other task, which then uses its own defaults; base
options set to another value are kept (and refused if that task has no such option).

Errors: :func:`load_config` and :func:`validate_config` raise :class:`ConfigError`, whose text
names the file and lists one problem per line: the key path, what was expected, the value given
and, from a file, its line.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "SWEEP_ALIASES",
    "ConfigError",
    "ConfigProblem",
    "ExperimentConfig",
    "ModelConfig",
    "ProbesConfig",
    "TaskConfig",
    "TrainConfig",
    "canonical_settings",
    "load_config",
    "sweep_keys",
    "validate_config",
    "with_params",
]

SWEEP_ALIASES: dict[str, str] = {"seed": "train.seed"}
"""Short sweep keys and the dotted key each stands for."""

_NOT_SWEPT = ("name", "description", "sweep")
_SECTIONS = ("task", "model", "train", "probes")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_MAX_LISTED = 30  # problems listed in one ConfigError; the rest are counted
_NOTE = "config_note"  # a custom error whose message is complete (no ", got ..." added)


# --------------------------------------------------------------------------------------------
# Field types


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "expected a number")
    return value


PositiveInt = Annotated[int, BeforeValidator(_not_bool), Field(gt=0)]
PositiveFloat = Annotated[float, BeforeValidator(_not_bool), Field(gt=0, allow_inf_nan=False)]


def _when(value: Any) -> str | int:
    if isinstance(value, str) and value in ("init", "end"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return "init" if value == 0 else value
    raise PydanticCustomError(
        "schedule_item", 'expected "init", "end" or an epoch number (a whole number >= 0)'
    )


def _schedule(value: Any) -> Any:
    if value is None or value is False:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise PydanticCustomError(
            "schedule_type", 'expected a list of "init", "end" and epoch numbers, e.g. [init, end]'
        )
    return value


def _schedule_order(value: list) -> list:
    rank = {"init": (0, 0), "end": (2, 0)}
    unique = {rank.get(v, (1, v)): v for v in value}
    return [unique[k] for k in sorted(unique)]


Schedule = Annotated[list[Annotated[Any, PlainValidator(_when)]], BeforeValidator(_schedule)]


def _choices(value: Any, choices) -> PydanticCustomError:
    text = ", ".join(str(c) for c in choices)
    return PydanticCustomError(
        "unknown_choice", f"expected one of {text}", {"hint": _did_you_mean(value, choices)}
    )


def _did_you_mean(value: Any, choices) -> str:
    """'did you mean "x"?' for the choice closest to ``value``, or ""."""
    if not isinstance(value, str):
        return ""
    lowered = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return f'did you mean "{lowered[close[0]]}"?' if close else ""


@functools.lru_cache(maxsize=1)
def _task_options() -> dict[str, type[BaseModel]]:
    from rnn_diag.tasks import TASK_OPTIONS

    return dict(TASK_OPTIONS)


@functools.lru_cache(maxsize=1)
def _optimizers() -> dict[str, type]:
    import torch

    found = {}
    for name in dir(torch.optim):
        obj = getattr(torch.optim, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, torch.optim.Optimizer)
            and obj is not torch.optim.Optimizer
            and name != "SparseAdam"  # needs sparse gradients; the models here have dense ones
        ):
            found[name] = obj
    return found


def _option_defaults(task: str) -> dict[str, Any]:
    fields = _task_options()[task].model_fields
    return {k: f.get_default(call_default_factory=True) for k, f in fields.items()
            if not f.is_required()}


# --------------------------------------------------------------------------------------------
# The schema


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskConfig(_Section):
    """The ``task:`` section: which data to train on.

    Attributes:
        name: a task of :data:`rnn_diag.tasks.TASK_OPTIONS` ("weather", "adding", "copy").
        seq_len: the task's sequence-length parameter (> 0; its meaning is per task).
        options: the task's further options, validated with ``TASK_OPTIONS[name]`` and stored
            with every default filled in.

    In the file (and in :meth:`model_dump`) the options sit flat next to ``name`` and
    ``seq_len``; ``TaskConfig(name=..., seq_len=..., options={...})`` works too.

    Example:
        >>> t = TaskConfig.model_validate({"name": "adding", "seq_len": 20, "n_train": 50})
        >>> t.options
        {'n_train': 50, 'n_val': 200}
        >>> t.model_dump()
        {'name': 'adding', 'seq_len': 20, 'n_train': 50, 'n_val': 200}
    """

    name: str
    seq_len: PositiveInt
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fixed = {k: v for k, v in data.items() if k in ("name", "seq_len")}
        given = data.get("options", {})
        flat = {k: v for k, v in data.items() if k not in ("name", "seq_len", "options")}
        if not isinstance(given, dict):
            return {**fixed, "options": given, **flat}  # refused as "expected a mapping"
        twice = sorted(str(k) for k in set(given) & set(flat))
        if twice:
            raise ValueError(f"task options given twice (flat and under options): {twice}")
        return {**fixed, "options": {**given, **flat}}

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        tasks = _task_options()
        if name not in tasks:
            raise _choices(name, tasks)
        return name

    @field_validator("options")
    @classmethod
    def _task_options_valid(cls, options: dict, info: ValidationInfo) -> dict:
        name = info.data.get("name")
        if name is None:  # the name was refused; its options cannot be checked
            return options
        return _task_options()[name].model_validate(options).model_dump()

    @model_serializer(mode="wrap")
    def _flat(self, handler) -> dict[str, Any]:
        data = handler(self)
        options = data.pop("options", None) or {}
        return {**data, **options}


class ModelConfig(_Section):
    """The ``model:`` section: the recurrent network.

    Attributes:
        cell: "rnn" (Elman), "gru" or "lstm".
        hidden_size: H, units per layer (> 0).
        num_layers: stacked recurrent layers (> 0).
        nonlinearity: "tanh" or "relu"; "relu" only with cell "rnn".
        init: initialisation of W_hh: "default" (PyTorch's), "orthogonal", "identity", "normal".
        weight_scale: ``None`` to keep the init, or the spectral radius (> 0, dimensionless)
            W_hh is rescaled to (each gate block separately for GRU/LSTM).

    Example:
        >>> ModelConfig(cell="gru").nonlinearity
        'tanh'
    """

    cell: Literal["rnn", "gru", "lstm"] = "rnn"
    hidden_size: PositiveInt = 10
    num_layers: PositiveInt = 1
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    init: Literal["default", "orthogonal", "identity", "normal"] = "default"
    weight_scale: PositiveFloat | None = None

    @field_validator("nonlinearity")
    @classmethod
    def _relu_only_rnn(cls, value: str, info: ValidationInfo) -> str:
        cell = info.data.get("cell")
        if value == "relu" and cell not in (None, "rnn"):
            raise PydanticCustomError(
                "relu_cell", f"expected tanh with cell {cell} (relu applies only to cell rnn)"
            )
        return value


class TrainConfig(_Section):
    """The ``train:`` section: the optimisation.

    Attributes:
        epochs: passes over the training data (> 0).
        optimizer: the name of an optimizer class in ``torch.optim`` ("Adam", "SGD", ...).
        optimizer_args: its further keyword arguments (``lr`` is :attr:`lr`).
        lr: learning rate (> 0).
        batch_size: sequences per step, or ``None`` for the full training set (> 0).
        clip_grad_norm: ``None``, or the max L2 norm of all parameter gradients (> 0).
        device: "cpu", "cuda" or "auto" (cuda where available).
        seed: the trial seed (0 ≤ seed < 2**63).

    Example:
        >>> TrainConfig(optimizer="SGD", optimizer_args={"momentum": 0.9}).lr
        0.01
    """

    epochs: PositiveInt = 100
    optimizer: str = "Adam"
    optimizer_args: dict[str, Any] = Field(default_factory=dict)
    lr: PositiveFloat = 0.01
    batch_size: PositiveInt | None = None
    clip_grad_norm: PositiveFloat | None = None
    device: Literal["cpu", "cuda", "auto"] = "auto"
    seed: Annotated[int, BeforeValidator(_not_bool), Field(ge=0, lt=2**63)] = 0

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        optimizers = _optimizers()
        if name not in optimizers:
            raise _choices(name, sorted(optimizers))
        return name

    @field_validator("optimizer_args")
    @classmethod
    def _optimizer_accepts(cls, args: dict, info: ValidationInfo) -> dict:
        name = info.data.get("optimizer")
        if name is None:
            return args
        params = inspect.signature(_optimizers()[name]).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return args
        known = [k for k in params if k not in ("params", "lr")]
        errors = []
        for key, value in args.items():
            if key == "lr":
                text = "the learning rate is set by train.lr; remove it here"
            elif key not in known:
                hint = _did_you_mean(key, known)
                text = f"{name} has no argument {key!r} (its value: {_show(value)})"
                text += f"; {hint}" * bool(hint) + f" {name}'s arguments: {', '.join(known)}"
            else:
                continue
            errors.append(_line_error((key,), text, value))
        if errors:
            raise ValidationError.from_exception_data("optimizer_args", errors)
        return args


    @field_validator("clip_grad_norm")
    @classmethod
    def _no_clipping_for_lbfgs(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("optimizer") == "LBFGS":
            raise ValueError(
                "null with optimizer LBFGS: it builds its curvature estimate from the true "
                "gradient, and clipping it inside the line search makes the steps diverge "
                "(limit LBFGS's steps with optimizer_args max_iter or line_search_fn instead)"
            )
        return value


class ProbesConfig(_Section):
    """The ``probes:`` section: what is recorded, and when.

    Attributes:
        gradients: record per-timestep gradient profiles (False turns the probe off).
        every: record the per-timestep gradient profile every N epochs (> 0); the last epoch
            is always recorded.
        jacobians: Jacobian-product norms: "off", "estimate" or "exact" (``false``, which is
            what YAML makes of ``off``, is read as "off").
        jacobian_samples: compute the Jacobian-product norms on the first N samples of the
            recorded batch (> 0), or ``None`` for all; their cost grows with the batch, and a
            few dozen samples already give its mean, min and max.
        lyapunov: when to compute the Lyapunov spectrum: "init", "end", epoch numbers (see the
            module docstring); ``[]`` = never.
        lyapunov_steps: the trajectory length in steps (> 0), or ``None`` for
            ``max(task.seq_len, 500)``: consecutive training windows, concatenated, so that
            short windows still give a converged estimate.
        spectra: when to record the spectra of W_hh; same format as :attr:`lyapunov`.
        saturation: record the fraction of saturated units.

    Example:
        >>> p = ProbesConfig.model_validate({"jacobians": False, "lyapunov": ["end", 0, 20, 5]})
        >>> p.jacobians, p.lyapunov, p.spectra
        ('off', ['init', 5, 20, 'end'], ['init', 'end'])
    """

    gradients: bool = True
    every: PositiveInt = 1
    jacobians: Literal["off", "estimate", "exact"] = "off"
    jacobian_samples: PositiveInt | None = 64
    lyapunov: Schedule = Field(default_factory=lambda: ["init", "end"])
    lyapunov_steps: PositiveInt | None = None
    spectra: Schedule = Field(default_factory=lambda: ["init", "end"])
    saturation: bool = False

    @field_validator("jacobians", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return "off" if value is False else value

    @field_validator("lyapunov", "spectra")
    @classmethod
    def _ordered(cls, value: list) -> list:
        return _schedule_order(value)


class ExperimentConfig(_Section):
    """A validated experiment: one base configuration and an optional sweep over it.

    Attributes:
        name: the experiment's name, ``[A-Za-z0-9_.-]+`` (a folder name under ``reports/``).
        description: free text, or ``None``.
        task, model, train, probes: the sections (:class:`TaskConfig`, :class:`ModelConfig`,
            :class:`TrainConfig`, :class:`ProbesConfig`).
        sweep: dotted key -> non-empty list of values, in file order (``seed`` is stored as
            ``train.seed``); ``{}`` for a single trial.

    Constructing one validates everything :func:`validate_config` does, every trial of the
    sweep included (but raises pydantic's ``ValidationError``; use :func:`validate_config` for a
    :class:`ConfigError`). ``model_dump()`` gives back a mapping in the file's layout.

    Example:
        >>> cfg = ExperimentConfig.model_validate(
        ...     {"name": "demo", "task": {"name": "adding", "seq_len": 20},
        ...      "sweep": {"model.cell": ["rnn", "lstm"], "seed": [0, 1]}})
        >>> cfg.model.hidden_size, cfg.train.lr, list(cfg.sweep)
        (10, 0.01, ['model.cell', 'train.seed'])
    """

    name: str
    description: str | None = None
    task: TaskConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not _NAME_RE.fullmatch(name) or name in (".", ".."):
            raise PydanticCustomError(
                "bad_name",
                'expected a name made of letters, digits, "_", "." and "-" '
                "(it is used as a folder name)",
            )
        return name

    @field_validator("sweep", mode="wrap")
    @classmethod
    def _sweep_keys(cls, sweep: Any, handler) -> dict[str, list]:
        errors = []
        if isinstance(sweep, dict):
            canonical: dict[str, str] = {}
            for key in sweep:
                if not isinstance(key, str):
                    continue  # refused by the handler
                full = SWEEP_ALIASES.get(key, key)
                problem = _sweep_key_problem(full)
                if full in canonical:
                    problem = f"{full} is swept twice (as {canonical[full]} and as {key})"
                if problem is not None:
                    errors.append(_line_error((key,), problem, None))
                canonical.setdefault(full, key)
        try:
            out = handler(sweep)
        except ValidationError as exc:
            errors += [{"type": e["type"], "loc": e["loc"], "input": e.get("input"),
                        **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in exc.errors()]
            out = None
        if out is not None:
            for key, values in out.items():
                seen = set()
                for i, value in enumerate(values):
                    text = json.dumps(value, sort_keys=True, default=str)
                    if text in seen:
                        errors.append(_line_error(
                            (key, i), f"the value {_show(value)} is listed twice", value))
                    seen.add(text)
        if errors:
            raise ValidationError.from_exception_data("sweep", errors)
        return {SWEEP_ALIASES.get(k, k): v for k, v in out.items()}

    @model_validator(mode="after")
    def _schedules_fit(self) -> ExperimentConfig:
        errors = []
        for field in ("lyapunov", "spectra"):
            for i, when in enumerate(getattr(self.probes, field)):
                if isinstance(when, int) and when > self.train.epochs:
                    errors.append(_line_error(
                        ("probes", field, i),
                        f"expected init, end or an epoch from 1 to train.epochs = "
                        f"{self.train.epochs}", when, note=False))
        if errors:
            raise ValidationError.from_exception_data("ExperimentConfig", errors)
        return self

    @model_validator(mode="after")
    def _trials_valid(self) -> ExperimentConfig:
        if self.sweep:
            errors = _sweep_errors(self)
            if errors:
                raise ValidationError.from_exception_data("ExperimentConfig", errors)
        return self


# --------------------------------------------------------------------------------------------
# Sweeps


def sweep_keys(task_names=None) -> list[str]:
    """Every dotted key a sweep may name (aliases not included).

    ``train.optimizer_args.<argument>`` is accepted too, for any argument of the optimizer.

    Args:
        task_names: the tasks whose options to list; ``None`` for every registered task.

    Example:
        >>> keys = sweep_keys(["adding"])
        >>> keys[:4], "model.weight_scale" in keys
        (['task.name', 'task.seq_len', 'task.n_train', 'task.n_val'], True)
    """
    tasks = _task_options()
    names = list(tasks) if task_names is None else [n for n in task_names if n in tasks]
    keys = ["task.name", "task.seq_len"]
    for name in names:
        keys += [f"task.{k}" for k in tasks[name].model_fields if f"task.{k}" not in keys]
    for section, model in (("model", ModelConfig), ("train", TrainConfig),
                           ("probes", ProbesConfig)):
        keys += [f"{section}.{k}" for k in model.model_fields]
    return keys


def _sweep_key_problem(key: str) -> str | None:
    """Why the dotted ``key`` cannot be swept, or ``None`` when it can."""
    if key in _NOT_SWEPT:
        return f"{key} cannot be swept (sweep settings of task, model, train or probes)"
    valid = sweep_keys()
    if key in valid or key.startswith("train.optimizer_args."):
        return None
    section = key.split(".", 1)[0]
    nearby = [k for k in valid if k.startswith(section + ".")]
    if key in _SECTIONS:
        return f"{key} is a whole section; sweep one of its keys: {', '.join(nearby)}"
    hint = _did_you_mean(key, valid + list(SWEEP_ALIASES))
    text = "not a config key" + (f"; {hint}" if hint else "")
    if nearby:
        return f"{text} (valid keys: {', '.join(nearby)})"
    return f"{text} (a key names a section and a setting, e.g. model.cell; sections: " \
           f"{', '.join(_SECTIONS)}; short forms: {', '.join(SWEEP_ALIASES)})"


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *path, last = SWEEP_ALIASES.get(key, key).split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def _get_dotted(data: dict, key: str) -> Any:
    node = data
    for part in SWEEP_ALIASES.get(key, key).split("."):
        node = node[part]
    return node


def _trial_data(config: ExperimentConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The raw mapping of ``config`` with ``params`` (dotted key -> value) applied, no sweep."""
    data = config.model_dump(exclude={"sweep"})  # task options sit flat: task.<option> works
    for key, value in params.items():
        _set_dotted(data, key, value)
    task = data["task"]
    if task.get("name") != config.task.name:  # another task: base options at default drop out
        set_here = {k.split(".", 1)[1] for k in params if k.startswith("task.")}
        for key, default in _option_defaults(config.task.name).items():
            if key not in set_here and key in task and _same(task[key], default):
                del task[key]
    return data


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def with_params(config: ExperimentConfig, params: dict[str, Any],
                source: str = "<config>") -> ExperimentConfig:
    """``config`` with the settings ``params`` (dotted key -> value, as in a sweep) applied, and
    no sweep; the same rules as a sweep's trials.

    Raises:
        ConfigError: a key or value is invalid (named as in the config, e.g. ``model.cell``).

    Example:
        >>> cfg = validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20}})
        >>> with_params(cfg, {"model.cell": "gru", "seed": 3}).train.seed
        3
    """
    problems = []
    for key, value in params.items():
        text = _sweep_key_problem(SWEEP_ALIASES.get(key, key))
        if text is not None:
            problems.append(ConfigProblem(key, text, value))
    if problems:
        raise ConfigError(source, problems)
    data = _trial_data(config, params)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc, data)) from None


def _sweep_errors(config: ExperimentConfig) -> list[dict]:
    """Line errors for every invalid value, or combination of values, of ``config.sweep``."""
    errors = []
    keys = list(config.sweep)
    for key in keys:  # each value alone first, so that a bad value is named as such
        seen: dict[str, Any] = {}
        for i, value in enumerate(config.sweep[key]):
            data = _trial_data(config, {key: value})
            try:
                trial = ExperimentConfig.model_validate(data)
            except ValidationError as exc:
                for p in _problems(exc, data):
                    text = p.message
                    if p.path != key and not p.path.startswith(key + "."):
                        text = f"with {key} = {_show(value)}, {p.path or 'the config'}: {text}"
                    errors.append(_line_error(("sweep", key, i), text, value))
                continue
            settings = canonical_settings(trial)
            if settings in seen:
                errors.append(_line_error(("sweep", key, i), f"the values {_show(seen[settings])}"
                                          f" and {_show(value)} give the same settings", value))
            seen.setdefault(settings, value)
    if errors:
        return errors
    found: dict[str, str] = {}
    invalid = same = 0
    for values in itertools.product(*(config.sweep[k] for k in keys)):
        params = dict(zip(keys, values))
        where = ", ".join(f"{k} = {_show(v)}" for k, v in params.items())
        data = _trial_data(config, params)
        try:
            trial = ExperimentConfig.model_validate(data)
        except ValidationError as exc:
            invalid += 1
            if invalid <= _MAX_TRIALS_LISTED:
                p = _problems(exc, data)[0]
                errors.append(_line_error(
                    ("sweep",), f"the trial with {where} is invalid: {p.path}: {p.message}",
                    None))
            continue
        settings = canonical_settings(trial)
        if settings in found:
            same += 1
            if same == 1:
                errors.append(_line_error(
                    ("sweep",), f"the trials with {found[settings]} and with {where} have the "
                    "same settings", None))
        found.setdefault(settings, where)
    if invalid > _MAX_TRIALS_LISTED:
        errors.append(_line_error(
            ("sweep",), f"... and {invalid - _MAX_TRIALS_LISTED} more invalid trials", None))
    if same > 1:
        errors.append(_line_error(("sweep",), f"... and {same - 1} more repeated trials", None))
    return errors


_MAX_TRIALS_LISTED = 5


def canonical_settings(config: ExperimentConfig) -> str:
    """The settings that define a run, as canonical JSON text: the ``task``, ``model``,
    ``train`` and ``probes`` sections (not ``name``, ``description`` or ``sweep``), every
    default filled in, keys sorted, no whitespace. Equal settings give equal text, however the
    config was written (key order, ``1e-3`` or ``0.001``, ``seed`` or ``train.seed``, ...).

    Example:
        >>> cfg = validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20}})
        >>> canonical_settings(cfg)[:40]
        '{"model":{"cell":"rnn","hidden_size":10,'
    """
    data = config.model_dump(mode="json", include=set(_SECTIONS))
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ConfigProblem:
    """One problem of a config.

    Attributes:
        path: the dotted key path, e.g. ``"train.lr"`` or ``"sweep.model.cell"``; ``""`` for
            the file as a whole.
        message: what was expected and the value given, in words.
        value: the value given (``None`` when missing or not one value).
        line: the 1-based line in the file, or ``None``.
        loc: where in the parsed mapping (keys and list indices), to find the line.
    """

    path: str
    message: str
    value: Any = None
    line: int | None = None
    loc: tuple = ()

    def render(self) -> str:
        """``path (line N): message``, the form used in :class:`ConfigError`.

        Example:
            >>> ConfigProblem("train.lr", "expected a number greater than 0, got -1", -1,
            ...               line=7).render()
            'train.lr (line 7): expected a number greater than 0, got -1'
        """
        line = f"line {self.line}" if self.line is not None else ""
        if self.path and line:
            return f"{self.path} ({line}): {self.message}"
        where = self.path or line
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """An invalid experiment config. ``str(error)`` is a ready-to-print message: a first line
    naming the file, then one line per problem: the key path, (the line in the file,) what was
    expected and the value given.

    Attributes:
        source: the file (or the ``source`` given to :func:`validate_config`).
        problems: the :class:`ConfigProblem` list.

    Example:
        >>> try:
        ...     validate_config({"name": "x", "task": {"name": "adding", "seq_len": 0},
        ...                      "model": {"cell": "lsmt"}}, source="x.yaml")
        ... except ConfigError as e:
        ...     print(e)
        Invalid experiment config x.yaml:
          task.seq_len: expected a number greater than 0, got 0
          model.cell: expected one of rnn, gru, lstm, got "lsmt"; did you mean "lstm"?
    """

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = str(source)
        self.problems = list(problems)
        super().__init__(self.source, self.problems)

    def __str__(self) -> str:
        lines: list[str] = []
        for p in self.problems:
            text = f"  {p.render()}"
            if text not in lines:
                lines.append(text)
        extra = len(lines) - _MAX_LISTED
        if extra > 0:
            lines = [*lines[:_MAX_LISTED], f"  ... and {extra} more"]
        return "\n".join([f"Invalid experiment config {self.source}:", *lines])

    def __reduce__(self):
        return (type(self), (self.source, self.problems))


def _line_error(loc: tuple, text: str, value: Any, note: bool = True) -> dict:
    """An error for ``ValidationError.from_exception_data``. ``note``: ``text`` is the whole
    message; otherwise ``", got <value>"`` is added to it."""
    kind = _NOTE if note else "config_value"
    return {"type": PydanticCustomError(kind, text), "loc": loc, "input": value}


def _show(value: Any) -> str:
    """A value as a YAML/JSON user writes it: "text", 1.5, null, true, ["a", 2]."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_MAPPING = "expected a mapping (indented key: value lines, or {key: value})"
_EXPECTED = {
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list, e.g. [a, b]",
    "dict_type": _MAPPING,
    "model_type": _MAPPING,
    "model_attributes_type": _MAPPING,
    "none_required": "expected null",
}
_BOUNDS = {"greater_than": ("gt", "greater than"), "greater_than_equal": ("ge", "at least"),
           "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}


def _valid_here(loc: tuple, data: Any) -> list[str]:
    """The keys the mapping at ``loc`` (the parent of an unknown key) accepts."""
    if not loc:
        return list(ExperimentConfig.model_fields)
    if loc == ("task",):
        tasks = _task_options()
        task = data.get("task") if isinstance(data, dict) else None
        name = task.get("name") if isinstance(task, dict) else None
        keys = ["name", "seq_len"]
        for n in [name] if name in tasks else list(tasks):
            keys += [k for k in tasks[n].model_fields if k not in keys]
        return keys
    sections = {"model": ModelConfig, "train": TrainConfig, "probes": ProbesConfig}
    if len(loc) == 1 and loc[0] in sections:
        return list(sections[loc[0]].model_fields)
    return []


def _problems(exc: ValidationError, data: Any) -> list[ConfigProblem]:
    """pydantic's errors in words, one :class:`ConfigProblem` each (``data``: the raw mapping,
    for the lists of valid keys)."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if loc[:2] == ("task", "options"):
            loc = ("task", *loc[2:])  # the options sit flat in the file
        bad_key = "[key]" in loc
        loc = tuple(x for x in loc if x != "[key]")
        kind, value = err["type"], err.get("input")
        key_error = kind == "extra_forbidden" or bad_key
        path = ".".join(str(x) for i, x in enumerate(loc)  # list indices are left out
                        if not isinstance(x, int) or (key_error and i == len(loc) - 1))
        ctx = err.get("ctx") or {}
        hint = ctx.get("hint", "")
        got = kind not in (_NOTE, "missing")
        if kind == _NOTE:
            text = err["msg"]
        elif bad_key:
            text, value = "expected a key made of text", loc[-1]
        elif kind == "missing":
            text, value = "required, but missing", None
        elif kind == "extra_forbidden":
            valid = _valid_here(loc[:-1], data)
            text, got = f"unknown key (its value: {_show(value)})", False
            hint = _did_you_mean(str(loc[-1]), valid)
            if valid:
                hint += (" " if hint else "") + f"valid keys here: {', '.join(valid)}"
        elif kind in _BOUNDS:
            bound_key, words = _BOUNDS[kind]
            text = f"expected a number {words} {ctx.get(bound_key)}"
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            text = f"expected one of {', '.join(choices)}"
            hint = _did_you_mean(value, choices)
        elif kind == "too_short" and isinstance(value, (list, tuple)):
            text = "expected a non-empty list of values"
        elif kind in _EXPECTED:
            text = _EXPECTED[kind]
        elif kind in ("value_error", "assertion_error"):
            text = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
            got = not isinstance(value, dict)  # a whole section: its message says what is wrong
        else:
            text = err["msg"][:1].lower() + err["msg"][1:]
        if got:
            text += f", got {_show(value)}"
        if hint:
            text += f"; {hint}"
        out.append(ConfigProblem(path, text, value, None, loc))
    return out


# --------------------------------------------------------------------------------------------
# Loading


def validate_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate an already-parsed mapping (e.g. from ``yaml.safe_load``), every trial of its
    sweep included.

    Args:
        data: the config as a mapping of plain values.
        source: how error messages name it (a file name).

    Raises:
        ConfigError: with one line per problem.

    Example:
        >>> cfg = validate_config({"name": "demo", "task": {"name": "weather", "seq_len": 10}})
        >>> cfg.task.options["n_days"], cfg.probes.lyapunov
        (1500, ['init', 'end'])
    """
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {_yaml_kind(data)}"
        raise ConfigError(source, [ConfigProblem(
            "", f"expected a mapping of settings (name:, task:, model:, ...), but it is {what}",
            data)])
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc, data)) from None


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    return "text" if isinstance(value, str) else "single value"


def load_config(path) -> ExperimentConfig:
    """Read a YAML config file (``yaml.safe_load``) and validate it (:func:`validate_config`).

    Args:
        path: the file (str or Path).

    Raises:
        ConfigError: the file is missing or unreadable, is not valid YAML (with line and
            column), repeats a key, is not a mapping, or any setting or sweep value is invalid
            (with the key path and its line).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.yaml"
        >>> _ = path.write_text("name: tiny\\ntask: {name: adding, seq_len: 20}\\n"
        ...                     "sweep: {model.cell: [rnn, gru]}\\n")
        >>> cfg = load_config(path)
        >>> cfg.name, cfg.task.seq_len, cfg.sweep
        ('tiny', 20, {'model.cell': ['rnn', 'gru']})
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [ConfigProblem("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(source, [ConfigProblem("", "is a folder, not a file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot be read: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    duplicates = _duplicate_keys(tree)
    if duplicates:
        raise ConfigError(source, duplicates)
    try:
        return validate_config(data, source)
    except ConfigError as exc:
        located = [_locate(p, tree) for p in exc.problems]
        located.sort(key=lambda p: (p.line is None, p.line or 0))  # in file order
        raise ConfigError(source, located) from None


def _yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    text = "not valid YAML" + (f" at column {mark.column + 1}" if mark else "") + f": {what}"
    if context:
        text += f", {context}" + (f" started on line {start.line + 1}" if start else "")
    if mark is None:
        return ConfigProblem("", text)
    return ConfigProblem("", text, line=mark.line + 1)


def _duplicate_keys(node, path: tuple = ()) -> list[ConfigProblem]:
    """A problem for every key given twice in one mapping (``safe_load`` keeps the last)."""
    out = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in first and name != "<<":
                out.append(ConfigProblem(
                    ".".join((*path, name)),
                    f"given twice (first on line {first[name]}); keep one", line=line))
            first.setdefault(name, line)
            out += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            out += _duplicate_keys(item, path)
    return out


def _locate(problem: ConfigProblem, tree) -> ConfigProblem:
    """``problem`` with the line of the deepest YAML node its ``loc`` reaches."""
    attempts = [problem.loc]
    if problem.loc[:1] == ("sweep",) and len(problem.loc) > 1:  # written as a short form?
        attempts += [("sweep", short, *problem.loc[2:])
                     for short, full in SWEEP_ALIASES.items() if full == problem.loc[1]]
    best = None
    for loc in attempts:
        node, depth, line = tree, 0, None
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            (line, node), depth = child, depth + 1
        if line is not None and (best is None or depth > best[0]):
            best = (depth, line)
    if best is None:
        return problem
    return ConfigProblem(problem.path, problem.message, problem.value, best[1], problem.loc)


def _child(node, part):
    """``(1-based line of the key or item, child node)`` of ``node`` at ``part``, or ``None``."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if str(key.value) == str(part):
                return key.start_mark.line + 1, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and \
            0 <= part < len(node.value):
        item = node.value[part]
        return item.start_mark.line + 1, item
    return None
