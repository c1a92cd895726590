"""The schema of an experiment config: the pydantic models (:class:`ExperimentConfig` and its
sections), the keys a sweep may name, a config with settings applied (:func:`with_params`), its
canonical settings, and :func:`validate_config`, which turns pydantic's errors into a
:class:`~rnn_diag.experiments.config.errors.ConfigError`.

The file format is described in :mod:`rnn_diag.experiments.config`. Validating a config with a
sweep validates every trial of it, through :func:`rnn_diag.experiments.grid.validate_trials`.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
from typing import Annotated, Any, Literal

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

from .errors import (
    ConfigError,
    ConfigProblem,
    did_you_mean,
    line_error,
    pydantic_problems,
    show_value,
)
from .regularizers import KINDS as REGULARIZER_KINDS
from .regularizers import Regularizer, RegularizerSchedule
from .types import PositiveFloat, PositiveInt
from .types import not_bool as _not_bool

__all__ = [
    "SWEEP_ALIASES",
    "CLASSIC_CELLS",
    "SCAN_CELLS",
    "SCAN_KEYS",
    "ExperimentConfig",
    "ModelConfig",
    "ProbesConfig",
    "TaskConfig",
    "TrainConfig",
    "DivergenceConfig",
    "canonical_settings",
    "get_dotted",
    "set_dotted",
    "sweep_keys",
    "valid_keys",
    "validate_config",
    "with_params",
]

SWEEP_ALIASES: dict[str, str] = {"seed": "train.seed"}
"""Short sweep keys and the dotted key each stands for."""

_NOT_SWEPT = ("name", "description", "sweep", "axes")
_SECTIONS = ("task", "model", "train", "probes")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_AXIS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --------------------------------------------------------------------------------------------
# Field types




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
        "unknown_choice", f"expected one of {text}", {"hint": did_you_mean(value, choices)}
    )


@functools.lru_cache(maxsize=1)
def _task_options() -> dict[str, type[BaseModel]]:
    from rnn_diag.tasks import TASK_OPTIONS  # deferred: the tasks import torch (seconds)

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


CLASSIC_CELLS = ("rnn", "gru", "lstm")
"""The cells of ``torch.nn`` (a dense W_hh per gate)."""

SCAN_CELLS = ("lru", "mingru", "ssm")
"""The diagonal scan cells of :mod:`rnn_diag.scans` (h_t = a_t ⊙ h_{t-1} + b_t)."""

SCAN_KEYS: dict[str, tuple[str, ...]] = {
    "state_size": ("lru",),
    "r_min": ("lru", "mingru"),
    "max_phase": ("lru",),
    "d_state": ("ssm",),
    "expand": ("ssm",),
    "d_conv": ("ssm",),
    "dt_rank": ("ssm",),
    "dt_min": ("ssm",),
    "dt_max": ("ssm",),
}
"""The ``model`` keys of the scan cells' own hyperparameters -> the cells they apply to. Each is
``None`` by default (the layer's default), and set only with a cell it applies to."""

_UnitInterval = Annotated[float, BeforeValidator(_not_bool),
                          Field(ge=0, lt=1, allow_inf_nan=False)]


class ModelConfig(_Section):
    """The ``model:`` section: the recurrent network.

    Attributes:
        cell: "rnn" (Elman), "gru", "lstm" (``torch.nn``), or a diagonal scan of
            :mod:`rnn_diag.scans`: "lru" (Orvieto et al. 2023), "mingru" (Feng et al. 2024),
            "ssm" (a Mamba-style selective SSM, S6).
        hidden_size: H, units per layer (> 0); d_model, the width of each layer's input and
            output, for the scan cells.
        num_layers: stacked recurrent layers (> 0).
        nonlinearity: "tanh" or "relu"; "relu" only with cell "rnn" (the scan cells ignore it).
        init: initialisation of W_hh: "default" (PyTorch's), "orthogonal", "identity", "normal";
            only "default" with a scan cell (its decays are set by ``weight_scale`` and
            ``r_min``).
        weight_scale: ``None`` to keep the init, or the spectral radius at initialisation
            (> 0, dimensionless). rnn, gru, lstm: W_hh is rescaled to it (each gate block
            separately for GRU/LSTM). Scan cells: it is passed as the layer's ``r_max``, the
            largest decay |a| at zero input at initialisation, which is the spectral radius of
            their diagonal recurrence:

            * lru: the outer radius of the ring the eigenvalues λ are drawn from,
              r_min ≤ |λ| ≤ weight_scale (> 1 allowed: an unstable start); ``None``: 1, the
              paper's ring.
            * mingru: the decays at zero input, 1 − σ(b_z), are spaced evenly across the
              channels from weight_scale down to r_min (default weight_scale / 2); < 1.
              ``None``: PyTorch's ``nn.Linear`` init (decays near ½).
            * ssm: the step sizes Δ at zero input are spaced evenly in log from
              dt_min = −ln(weight_scale) to min(100·dt_min, 1), so the slowest state (A = −1)
              of the slowest channel decays by exactly weight_scale per step; < 1, and not
              with dt_min/dt_max. ``None``: Mamba's init, Δ log-uniform in [dt_min, dt_max]
              (default [0.001, 0.1], largest decay ≈ 0.999).

    The scan cells' own hyperparameters, ``None`` (the default) for the layer's own default.
    Each applies to some cells only (:data:`SCAN_KEYS`, :meth:`foreign_keys`); an
    :class:`ExperimentConfig` refuses one set for another cell, except in the base of a sweep
    of ``model.cell``, whose trials each keep those of their own cell:

    Attributes:
        state_size: lru: N, the complex states per layer (> 0; ``None``: hidden_size).
        r_min: lru, mingru: the smallest decay |a| at initialisation, in [0, 1), at most
            ``weight_scale`` (lru default 0; mingru: needs ``weight_scale``, > 0).
        max_phase: lru: the largest phase of λ at initialisation (radians, in (0, 2π];
            ``None``: 2π).
        d_state: ssm: N, the states per inner channel (> 0; ``None``: 16).
        expand: ssm: the inner width is ``expand × hidden_size`` (> 0; ``None``: 2).
        d_conv: ssm: the width of the causal convolution before the scan (> 0; ``None``: 4).
        dt_rank: ssm: the rank of the input-dependent step size Δ (> 0; ``None``:
            ⌈hidden_size / 16⌉).
        dt_min, dt_max: ssm: the range of Δ at zero input at initialisation (> 0,
            dt_min ≤ dt_max), instead of ``weight_scale``.

    Example:
        >>> ModelConfig(cell="gru").nonlinearity
        'tanh'
        >>> ModelConfig(cell="lru", state_size=64, weight_scale=0.99).layer_kwargs()
        {'r_max': 0.99, 'state_size': 64}
    """

    cell: Literal["rnn", "gru", "lstm", "lru", "mingru", "ssm"] = "rnn"
    hidden_size: PositiveInt = 10
    num_layers: PositiveInt = 1
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    init: Literal["default", "orthogonal", "identity", "normal"] = "default"
    weight_scale: PositiveFloat | None = None
    state_size: PositiveInt | None = None
    r_min: _UnitInterval | None = None
    max_phase: Annotated[float, BeforeValidator(_not_bool),
                         Field(gt=0, le=2 * math.pi, allow_inf_nan=False)] | None = None
    d_state: PositiveInt | None = None
    expand: PositiveInt | None = None
    d_conv: PositiveInt | None = None
    dt_rank: PositiveInt | None = None
    dt_min: PositiveFloat | None = None
    dt_max: PositiveFloat | None = None

    @field_validator("nonlinearity")
    @classmethod
    def _relu_only_rnn(cls, value: str, info: ValidationInfo) -> str:
        cell = info.data.get("cell")
        if value == "relu" and cell not in (None, "rnn"):
            raise PydanticCustomError(
                "relu_cell", f"expected tanh with cell {cell} (relu applies only to cell rnn)"
            )
        return value

    @field_validator("init")
    @classmethod
    def _init_only_classic(cls, value: str, info: ValidationInfo) -> str:
        cell = info.data.get("cell")
        if value != "default" and cell in SCAN_CELLS:
            raise PydanticCustomError(
                "init_cell",
                f"expected default with cell {cell} (init sets W_hh of rnn, gru and lstm; a "
                f"scan cell has its own initialisation, set with weight_scale as its r_max)")
        return value

    @model_validator(mode="after")
    def _scan_ranges(self) -> ModelConfig:
        errors = [line_error((key,), text, getattr(self, key), note=False)
                  for key, text in self._range_problems()]
        if errors:
            raise ValidationError.from_exception_data("ModelConfig", errors)
        return self

    def _range_problems(self):
        """``(key, text)`` for each scan setting out of the range its layer accepts."""
        cell, scale = self.cell, self.weight_scale
        if cell not in SCAN_CELLS:
            return
        if scale is not None and scale >= 1 and cell in ("mingru", "ssm"):
            yield "weight_scale", (f"expected a number less than 1 with cell {cell} (it is the "
                                   "largest decay of the scan at initialisation, its r_max)")
        if cell == "lru" and self.r_min is not None:
            r_max = scale if scale is not None else _scan_defaults("lru")["r_max"]
            if self.r_min > r_max:
                yield "r_min", (f"expected at most r_max = {r_max:g} (weight_scale"
                                f"{', null: the default' if scale is None else ''})")
        if cell == "mingru" and self.r_min is not None:
            if scale is None:
                yield "r_min", ("expected null with weight_scale null (cell mingru: the decays "
                                "at initialisation run from r_max = weight_scale down to r_min; "
                                "without weight_scale the gate keeps PyTorch's init)")
            elif self.r_min == 0 or self.r_min > scale:
                yield "r_min", (f"expected a number greater than 0 and at most weight_scale = "
                                f"{scale:g} with cell mingru")
        if cell == "ssm":
            given = [k for k in ("dt_min", "dt_max") if getattr(self, k) is not None]
            if scale is not None:
                for key in given:
                    yield key, ("expected null with weight_scale set (cell ssm: weight_scale "
                                "sets the step sizes at initialisation, dt_min = "
                                "-ln(weight_scale); give one or the other)")
            elif given:
                defaults = _scan_defaults("ssm")
                lo = self.dt_min if self.dt_min is not None else defaults["dt_min"]
                hi = self.dt_max if self.dt_max is not None else defaults["dt_max"]
                if lo > hi and self.dt_min is not None:
                    yield "dt_min", (f"expected at most dt_max = {hi:g}"
                                     f"{' (null: the default)' * (self.dt_max is None)}")
                elif lo > hi:
                    yield "dt_max", f"expected at least dt_min = {lo:g} (null: the default)"

    def foreign_keys(self) -> list[str]:
        """The scan keys (:data:`SCAN_KEYS`) set here that do not apply to :attr:`cell`.

        Example:
            >>> ModelConfig(cell="rnn", state_size=8).foreign_keys()
            ['state_size']
        """
        return [k for k, cells in SCAN_KEYS.items()
                if getattr(self, k) is not None and self.cell not in cells]

    def layer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the scan layers (:class:`rnn_diag.scans.ScanStack`) this
        config sets: ``r_max`` (from ``weight_scale``) and the scan keys of :attr:`cell` that
        are not ``None``; ``{}`` for rnn, gru and lstm.

        Example:
            >>> ModelConfig(cell="mingru", weight_scale=0.99, r_min=0.5).layer_kwargs()
            {'r_max': 0.99, 'r_min': 0.5}
        """
        if self.cell not in SCAN_CELLS:
            return {}
        out: dict[str, Any] = {}
        if self.weight_scale is not None:
            out["r_max"] = self.weight_scale
        for key, cells in SCAN_KEYS.items():
            value = getattr(self, key)
            if value is not None and self.cell in cells:
                out[key] = value
        return out


@functools.cache
def _scan_defaults(cell: str) -> dict[str, Any]:
    """The keyword defaults of the scan layer ``cell`` (``r_max``, ``r_min``, ...)."""
    from rnn_diag.scans import SCAN_CELLS as layers  # deferred: imports torch (seconds)

    params = inspect.signature(layers[cell]).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


class DivergenceConfig(_Section):
    """``train.divergence``: when a trial whose loss stays finite counts as diverged.

    A trial is always ``diverged`` when its loss or its gradient norm (before clipping)
    becomes NaN/inf. Beyond that, an epoch is *blown up* when its training loss (the ``curves``
    column ``train_loss``, the epoch's mean) exceeds ``chance_factor`` × the task's chance
    loss, or ``first_factor`` × the trial's own first-epoch training loss (either suffices).
    The trial is ``diverged`` when ``patience`` consecutive epochs are blown up (training
    stops there) or when its last epoch is blown up; a blow-up it recovers from leaves it
    ``ok`` (the spike stays visible in ``curves``). ``train.divergence: null`` keeps only the
    non-finite rule.

    Attributes:
        chance_factor: the multiple (> 1) of ``task.chance_loss``, or ``None`` to not compare
            with chance.
        first_factor: the multiple (> 1) of the first epoch's training loss, or ``None``.
        patience: consecutive blown-up epochs (> 0) after which training stops.

    Example:
        >>> DivergenceConfig().model_dump()
        {'chance_factor': 100.0, 'first_factor': 100.0, 'patience': 3}
    """

    chance_factor: Annotated[float, BeforeValidator(_not_bool),
                             Field(gt=1, allow_inf_nan=False)] | None = 100.0
    first_factor: Annotated[float, BeforeValidator(_not_bool),
                            Field(gt=1, allow_inf_nan=False)] | None = 100.0
    patience: PositiveInt = 3


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
        divergence: when a finite but exploded loss makes the trial ``diverged``
            (:class:`DivergenceConfig`), or ``None`` for non-finite losses and gradients only.
        regularizer: loss terms on the recurrent dynamics, each with a ``kind``: gradient
            flossing, a spectral-norm or an orthogonality penalty
            (:mod:`rnn_diag.experiments.config.regularizers`); ``[]`` for none. Cells rnn,
            gru, lstm.
        tbptt: ``None`` for full backpropagation through time, or N > 0 for truncated BPTT:
            the sequence runs in chunks of N steps and the state handed from one chunk to the
            next is detached, so a loss at step t sends gradient back only to the start of
            its chunk (1 to N steps); the forward values are unchanged and the batch still
            takes one optimizer step. Cells rnn, gru, lstm.

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
    divergence: DivergenceConfig | None = Field(default_factory=DivergenceConfig)
    regularizer: list[Regularizer] = Field(default_factory=list)
    tbptt: PositiveInt | None = None

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
                hint = did_you_mean(key, known)
                text = f"{name} has no argument {key!r} (its value: {show_value(value)})"
                text += f"; {hint}" * bool(hint) + f" {name}'s arguments: {', '.join(known)}"
            else:
                continue
            errors.append(line_error((key,), text, value))
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
        fixed_points: when to find the fixed points of every layer at zero input (cells rnn,
            gru, lstm; docs/design.md §2, :mod:`rnn_diag.experiments.fixed_point_tables`); same
            format as :attr:`lyapunov`; ``[]`` (the default) = never.
        fixed_point_states: initial states of the search (> 0), drawn from the layer's states
            on validation sequences.
        fixed_point_noise: Gaussian noise added to those states (≥ 0), relative to the states'
            standard deviation (:func:`rnn_diag.dynamics.fixed_points.sample_states`).
        fixed_point_tol_q: a candidate converged when q(h) = ½‖F(h) − h‖² ≤ this (> 0).
        fixed_point_trajectories: validation sequences whose states are stored in the
            ``state_trajectories`` table (> 0).

    Example:
        >>> p = ProbesConfig.model_validate({"jacobians": False, "lyapunov": ["end", 0, 20, 5]})
        >>> p.jacobians, p.lyapunov, p.spectra, p.fixed_points
        ('off', ['init', 5, 20, 'end'], ['init', 'end'], [])
    """

    gradients: bool = True
    every: PositiveInt = 1
    jacobians: Literal["off", "estimate", "exact"] = "off"
    jacobian_samples: PositiveInt | None = 64
    lyapunov: Schedule = Field(default_factory=lambda: ["init", "end"])
    lyapunov_steps: PositiveInt | None = None
    spectra: Schedule = Field(default_factory=lambda: ["init", "end"])
    saturation: bool = False
    fixed_points: Schedule = Field(default_factory=list)
    fixed_point_states: PositiveInt = 256
    fixed_point_noise: Annotated[float, BeforeValidator(_not_bool),
                                 Field(ge=0, allow_inf_nan=False)] = 0.5
    fixed_point_tol_q: PositiveFloat = 1e-12
    fixed_point_trajectories: PositiveInt = 8

    @field_validator("jacobians", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return "off" if value is False else value

    @field_validator("lyapunov", "spectra", "fixed_points")
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
    axes: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _named_axes(cls, data: Any) -> Any:
        """Move each named axis of the sweep (a key without a dot whose value is a mapping of
        names to settings) to ``axes``; the sweep keeps its names, in file order."""
        if not isinstance(data, dict) or not isinstance(data.get("sweep"), dict):
            return data
        sweep = data["sweep"]
        named = {k: v for k, v in sweep.items() if isinstance(k, str) and "." not in k
                 and k not in SWEEP_ALIASES and isinstance(v, dict)}
        if not named:
            return data
        axes = dict(data.get("axes") or {})
        axes.update({k: {name: ({} if settings is None else settings)
                         for name, settings in v.items()} for k, v in named.items()})
        return {**data, "axes": axes,
                "sweep": {k: (list(v) if k in named else v) for k, v in sweep.items()}}

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

    @field_validator("axes")
    @classmethod
    def _axes_settings(cls, axes: dict) -> dict:
        """Each named axis: a name that is no config key, names for its values and, for each,
        settings of dotted sweep keys (aliases resolved), none set by two axes."""
        errors, owner = [], {}
        for axis, variants in axes.items():
            if not _AXIS_RE.fullmatch(axis) or axis in _NOT_SWEPT or axis in _SECTIONS:
                errors.append(line_error(
                    (axis,), "a named axis needs a name of letters, digits and _ that is not a "
                    f"section or top-level key (e.g. remedy), got {show_value(axis)}", None))
            for name, settings in variants.items():
                resolved = {}
                for key, value in settings.items():
                    full = SWEEP_ALIASES.get(key, key)
                    problem = _sweep_key_problem(full)
                    if problem is None and full in owner and owner[full] != axis:
                        problem = f"{full} is set by the named axes {owner[full]} and {axis}"
                    if problem is not None:
                        errors.append(line_error((axis, name, key), problem, value))
                    owner.setdefault(full, axis)
                    resolved[full] = value
                variants[name] = resolved
        if errors:
            raise ValidationError.from_exception_data("axes", errors)
        return axes

    @field_validator("sweep", mode="wrap")
    @classmethod
    def _sweep_keys(cls, sweep: Any, handler, info: ValidationInfo) -> dict[str, list]:
        errors = []
        axes_failed = "axes" not in info.data  # their errors come first; skip their keys here
        axes = info.data.get("axes") or {}
        set_by_axes = {k: axis for axis, variants in axes.items()
                       for settings in variants.values() for k in settings}
        if isinstance(sweep, dict):
            canonical: dict[str, str] = {}
            for key in sweep:
                if not isinstance(key, str):
                    continue  # refused by the handler
                full = SWEEP_ALIASES.get(key, key)
                if full in axes or (axes_failed and "." not in full):
                    continue
                problem = _sweep_key_problem(full)
                if (problem is not None and "." not in full and full not in _NOT_SWEPT
                        and full not in _SECTIONS and _names_only(sweep[key])):
                    problem += (f"; or, as a named axis (a key without a dot), map each name to "
                                f"its settings, e.g. {key}: {{none: {{}}, clip: "
                                f"{{train.clip_grad_norm: 1.0}}}}")
                if problem is None and full in set_by_axes:
                    problem = (f"{full} is swept and also set by the named axis "
                               f"{set_by_axes[full]}; set it in one place")
                if full in canonical:
                    problem = f"{full} is swept twice (as {canonical[full]} and as {key})"
                if problem is not None:
                    errors.append(line_error((key,), problem, None))
                canonical.setdefault(full, key)
        try:
            out = handler(sweep)
        except ValidationError as exc:
            named = {e["loc"][0] for e in errors if e["loc"]}
            for e in exc.errors():
                if e["loc"][:1] and e["loc"][0] in named:
                    continue  # that key's problem is already said
                if e["type"] == "too_short" and e["loc"][:1] and e["loc"][0] in axes:
                    errors.append(line_error(e["loc"], "a named axis needs at least one name, "
                                             "e.g. {none: {}}", {}, note=False))
                    continue
                errors.append({"type": e["type"], "loc": e["loc"], "input": e.get("input"),
                               **({"ctx": e["ctx"]} if "ctx" in e else {})})
            out = None
        if out is not None:
            for key, values in out.items():
                seen = set()
                for i, value in enumerate(values):
                    text = json.dumps(value, sort_keys=True, default=str)
                    if text in seen:
                        errors.append(line_error(
                            (key, i), f"the value {show_value(value)} is listed twice", value))
                    seen.add(text)
        if out is not None and not axes_failed:
            for axis in axes:
                if axis not in out:
                    errors.append(line_error((axis,), f"the named axis {axis} is not in the "
                                             "sweep", None))
        if errors:
            raise ValidationError.from_exception_data("sweep", errors)
        return {SWEEP_ALIASES.get(k, k): v for k, v in out.items()}

    @model_validator(mode="after")
    def _schedules_fit(self) -> ExperimentConfig:
        errors = []
        for field in ("lyapunov", "spectra", "fixed_points"):
            for i, when in enumerate(getattr(self.probes, field)):
                if isinstance(when, int) and when > self.train.epochs:
                    errors.append(line_error(
                        ("probes", field, i),
                        f"expected init, end or an epoch from 1 to train.epochs = "
                        f"{self.train.epochs}", when, note=False))
        if errors:
            raise ValidationError.from_exception_data("ExperimentConfig", errors)
        return self

    @model_validator(mode="after")
    def _scan_keys_fit_cell(self) -> ExperimentConfig:
        """A scan key (:data:`SCAN_KEYS`) set for a cell it does not apply to is refused. When
        the sweep names ``model.cell``, the base's keys need only apply to one swept cell: each
        trial keeps those of its own cell (:func:`with_params`)."""
        swept = self.sweep.get("model.cell")
        if swept is None:
            errors = [line_error(("model", key), _foreign_text(key, self.model.cell),
                                 getattr(self.model, key), note=False)
                      for key in self.model.foreign_keys()]
        else:
            errors = []
            for key, cells in SCAN_KEYS.items():
                value = getattr(self.model, key)
                if value is not None and not any(c in cells for c in swept):
                    errors.append(line_error(
                        ("model", key), f"{key} applies only to cell {_or(cells)}, which the "
                        f"sweep of model.cell does not include (remove it), got "
                        f"{show_value(value)}", value))
        if errors:
            raise ValidationError.from_exception_data("ExperimentConfig", errors)
        return self

    @model_validator(mode="after")
    def _remedies_fit_cell(self) -> ExperimentConfig:
        """``train.regularizer`` and ``train.tbptt`` need cell rnn, gru or lstm, and flossing's
        ``k`` at most the state size (H; 2H for an LSTM)."""
        cell, errors = self.model.cell, []
        if cell in SCAN_CELLS:
            for key in ("regularizer", "tbptt"):
                value = getattr(self.train, key)
                if value:
                    errors.append(line_error(
                        ("train", key), f"{key} applies to cells rnn, gru and lstm, not to the "
                        f"scan cell {cell} (remove it), got {show_value(_plain(value))}",
                        _plain(value)))
        elif self.train.regularizer and self.train.optimizer == "LBFGS":
            errors.append(line_error(
                ("train", "regularizer"), "regularizers need a first-order optimizer (Adam, "
                "SGD, ...): LBFGS re-evaluates the task's loss alone in its line search",
                _plain(self.train.regularizer)))
        else:
            size = self.model.hidden_size * (2 if cell == "lstm" else 1)
            for i, term in enumerate(self.train.regularizer):
                if term.kind == "flossing" and term.k > size:
                    errors.append(line_error(
                        ("train", "regularizer", i, "k"),
                        f"expected at most the state size {size} of a {cell} layer with "
                        f"hidden_size {self.model.hidden_size}", term.k, note=False))
        if errors:
            raise ValidationError.from_exception_data("ExperimentConfig", errors)
        return self

    @model_validator(mode="after")
    def _trials_valid(self) -> ExperimentConfig:
        if self.sweep:
            for check in _TRIAL_CHECKS:
                errors = check(self)
                if errors:
                    raise ValidationError.from_exception_data("ExperimentConfig", errors)
        return self


def _names_only(value: Any) -> bool:
    """Whether a sweep value looks like a named axis written without its settings: null, or a
    list of texts (``remedy: [none, clip]``)."""
    return value is None or (isinstance(value, list) and bool(value)
                             and all(isinstance(v, str) for v in value))


def _plain(value: Any) -> Any:
    """A setting as plain values (pydantic models dumped), for error messages."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.model_dump() if isinstance(value, BaseModel) else value


def _or(cells) -> str:
    return " or ".join(cells)


def _foreign_text(key: str, cell: str) -> str:
    return (f"expected null with cell {cell} ({key} applies only to cell "
            f"{_or(SCAN_KEYS[key])})")


#: Checks of every trial of a sweep, run last when a config validates. The sweep module
#: (:mod:`rnn_diag.experiments.grid`) builds its trials from this schema, so the schema cannot
#: import it: grid registers :func:`~rnn_diag.experiments.grid.validate_trials` here when it is
#: imported, which the config package does.
_TRIAL_CHECKS: list = []


def register_trial_check(check) -> None:
    """Run ``check(config) -> errors`` (pydantic line errors, ``[]`` when valid) on every
    config with a sweep, after all its other checks."""
    if check not in _TRIAL_CHECKS:
        _TRIAL_CHECKS.append(check)


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
    hint = did_you_mean(key, valid + list(SWEEP_ALIASES))
    text = "not a config key" + (f"; {hint}" if hint else "")
    if nearby:
        return f"{text} (valid keys: {', '.join(nearby)})"
    return f"{text} (a key names a section and a setting, e.g. model.cell; sections: " \
           f"{', '.join(_SECTIONS)}; short forms: {', '.join(SWEEP_ALIASES)})"


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set the setting at the dotted sweep ``key`` (an alias is resolved) of the config mapping
    ``data``, creating the mappings on the way.

    Example:
        >>> data = {"train": {"lr": 0.1}}
        >>> set_dotted(data, "seed", 3); set_dotted(data, "model.cell", "gru"); data
        {'train': {'lr': 0.1, 'seed': 3}, 'model': {'cell': 'gru'}}
    """
    *path, last = SWEEP_ALIASES.get(key, key).split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def get_dotted(data: dict, key: str) -> Any:
    """The setting at the dotted sweep ``key`` (an alias is resolved) of the config mapping
    ``data``; ``KeyError`` if it is not there.

    Example:
        >>> get_dotted({"train": {"seed": 3}}, "seed")
        3
    """
    node = data
    for part in SWEEP_ALIASES.get(key, key).split("."):
        node = node[part]
    return node


def _trial_data(config: ExperimentConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The raw mapping of ``config`` with ``params`` (dotted key -> value) applied, no sweep."""
    data = config.model_dump(exclude={"sweep", "axes"})  # task options sit flat: task.<option>
    for key, value in params.items():
        set_dotted(data, key, value)
    if "model.cell" in params or "model.cell" in config.sweep or any(
            "model.cell" in v for variants in config.axes.values() for v in variants.values()):
        # the cell may differ from the base's: the base's scan keys of other cells drop out
        model = data["model"]
        for key, cells in SCAN_KEYS.items():
            if f"model.{key}" not in params and model.get("cell") not in cells:
                model[key] = None
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
    no sweep; the same rules as a sweep's trials. A named axis of ``config`` (``axes``) takes
    one of its names as its value and applies that name's settings.

    Raises:
        ConfigError: a key or value is invalid (named as in the config, e.g. ``model.cell``).

    Example:
        >>> cfg = validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20}})
        >>> with_params(cfg, {"model.cell": "gru", "seed": 3}).train.seed
        3
    """
    problems, settings = [], {}
    for key, value in params.items():
        if key in config.axes:
            if value not in config.axes[key]:
                problems.append(ConfigProblem(key, f"expected one of the axis's names "
                                              f"{', '.join(config.axes[key])}", value))
            else:
                settings.update(config.axes[key][value])
            continue
        text = _sweep_key_problem(SWEEP_ALIASES.get(key, key))
        if text is not None:
            problems.append(ConfigProblem(key, text, value))
        settings[key] = value
    if problems:
        raise ConfigError(source, problems)
    data = _trial_data(config, settings)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, pydantic_problems(exc, data, valid_keys)) from None


_LATER_KEYS: dict[str, dict[str, Any]] = {
    "model": dict.fromkeys(SCAN_KEYS),
    "probes": {"fixed_points": [], "fixed_point_states": 256, "fixed_point_noise": 0.5,
               "fixed_point_tol_q": 1e-12, "fixed_point_trajectories": 8},
    "train": {"regularizer": [], "tbptt": None},
}
"""Keys added to the schema after trial ids were first issued, with their defaults: left out of
the canonical settings while at that default, so that the ids of configs that do not set them
stay what they were."""


def canonical_settings(config: ExperimentConfig) -> str:
    """The settings that define a run, as canonical JSON text: the ``task``, ``model``,
    ``train`` and ``probes`` sections (not ``name``, ``description`` or ``sweep``), every
    default filled in, keys sorted, no whitespace. Equal settings give equal text, however the
    config was written (key order, ``1e-3`` or ``0.001``, ``seed`` or ``train.seed``, ...).
    Keys added later (the scan cells' keys, :data:`SCAN_KEYS`, the ``probes.fixed_point*``
    keys, ``train.regularizer`` and ``train.tbptt``) are left out while at their default, so
    that they did not change the ids of earlier configs. Named axes (``axes``) are not
    settings: a trial's id depends on the settings its names applied, not on the names.

    Example:
        >>> cfg = validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20}})
        >>> canonical_settings(cfg)[:40]
        '{"model":{"cell":"rnn","hidden_size":10,'
    """
    data = config.model_dump(mode="json", include=set(_SECTIONS))
    for section, keys in _LATER_KEYS.items():
        for key, default in keys.items():
            if key in data[section] and data[section][key] == default:
                del data[section][key]
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def valid_keys(loc: tuple, data: Any) -> list[str]:
    """The keys the mapping at ``loc`` (the parent of an unknown key) accepts: the ``valid_keys``
    of :func:`~rnn_diag.experiments.config.errors.pydantic_problems` for a config mapping
    ``data``; ``[]`` where they are not listed.

    Example:
        >>> valid_keys(("task",), {"task": {"name": "adding"}})
        ['name', 'seq_len', 'n_train', 'n_val']
    """
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
    if loc == ("train", "divergence"):
        return list(DivergenceConfig.model_fields)
    if len(loc) == 3 and loc[:2] == ("train", "regularizer"):
        try:
            item = data["train"]["regularizer"][loc[2]]
        except (KeyError, IndexError, TypeError):
            return []
        model = REGULARIZER_KINDS.get(item.get("kind")) if isinstance(item, dict) else None
        return list(model.model_fields) if model else []
    if len(loc) == 4 and loc[:2] == ("train", "regularizer") and loc[3] == "schedule":
        return list(RegularizerSchedule.model_fields)
    return []


# --------------------------------------------------------------------------------------------
# Validation


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
        raise ConfigError(source, pydantic_problems(exc, data, valid_keys)) from None


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    return "text" if isinstance(value, str) else "single value"

