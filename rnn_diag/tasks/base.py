"""The :class:`Task` record: a task's data, its loss and metric, and its reference values.

A task is what a trainer needs and nothing more: batch-first inputs, targets, the readout
convention (the model reads out its LAST ``output_steps`` hidden states through a linear head
producing ``[N, output_steps, output_size]``), a differentiable loss, a metric, and the values an
input-free predictor reaches (``chance_*``) and the best any predictor can reach (``best_*``), so a
report can tell learning from memorisation (docs/design.md §18).

Shapes (``N`` sequences, ``T`` time steps, ``I`` input channels, ``S = output_steps``,
``C = output_size``):

- inputs ``x_train`` / ``x_val``: float32 ``[N, T, I]``;
- classification targets: int64 ``[N, S]`` class indices in ``[0, C)``;
- regression targets: float32 ``[N, S, C]``;
- model output passed to :meth:`Task.loss` / :meth:`Task.metric`: float ``[N, S, C]``.

All tensors are on the CPU; the trainer moves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor

__all__ = ["KINDS", "Task"]

KINDS: dict[str, tuple[str, bool]] = {
    "classification": ("accuracy", True),
    "regression": ("mse", False),
}
"""``kind -> (metric_name, higher_is_better)``."""


@dataclass(kw_only=True)
class Task:
    """One task's data and the conventions a trainer needs to fit and score a model on it.

    Subclasses (one per task) set :attr:`Options` and implement :meth:`build`; use
    :func:`rnn_diag.tasks.make_task` rather than calling them directly.

    Attributes:
        name: the task's registry name, e.g. ``"weather"``.
        kind: ``"classification"`` or ``"regression"``.
        x_train, y_train: training inputs float32 ``[N_train, T, I]`` and targets (int64
            ``[N_train, S]`` or float32 ``[N_train, S, C]``, see the module docstring).
        x_val, y_val: the held-out split, same layout; 0 rows only when an option asks for it.
        input_size: ``I``, channels per time step.
        output_size: ``C``, logits per readout step (classification) or regression dims.
        output_steps: ``S``, how many of the model's LAST hidden states are read out.
        seq_len: the ``seq_len`` the task was built with (its meaning is per task: the window
            length for weather and adding, the delay for copy); ``T`` is :attr:`n_steps`.
        seed: the trial seed it was built with (tasks whose data are fixed by an option, like
            weather's ``data_seed``, ignore it).
        options: the validated options, as plain Python values.
        chance_loss, chance_metric: the loss and metric of the best predictor that ignores the
            input (each task documents its value and why).
        best_loss, best_metric: the best loss and metric any predictor can reach in expectation
            (``None`` where unknown).
        class_names: names of classes ``0..C-1``, or ``None``.
        metric_name: ``"accuracy"`` (classification) or ``"mse"`` (regression); derived from
            ``kind`` when not given.
        higher_is_better: ``True`` for accuracy, ``False`` for mse; derived when not given.
        memory_steps: the longest span, in steps, from an input the targets depend on to the
            step where it is read out: how far back the gradient must carry for the task to be
            learned (``None`` where no fixed span exists, e.g. the flip-flop's).
    """

    Options: ClassVar[type[BaseModel]] = BaseModel

    name: str
    kind: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    input_size: int
    output_size: int
    output_steps: int
    seq_len: int
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    chance_loss: float
    chance_metric: float
    best_loss: float | None = None
    best_metric: float | None = None
    class_names: list[str] | None = None
    metric_name: str | None = None
    higher_is_better: bool | None = None
    memory_steps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Task.kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        metric_name, higher = KINDS[self.kind]
        if self.metric_name is None:
            self.metric_name = metric_name
        if self.higher_is_better is None:
            self.higher_is_better = higher
        if (self.metric_name, self.higher_is_better) != (metric_name, higher):
            raise ValueError(
                f"a {self.kind} task scores with metric_name={metric_name!r}, "
                f"higher_is_better={higher}; got {self.metric_name!r}, {self.higher_is_better}"
            )
        if self.class_names is not None and len(self.class_names) != self.output_size:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for output_size={self.output_size}"
            )
        self._check_split("train", self.x_train, self.y_train)
        self._check_split("val", self.x_val, self.y_val)
        if self.x_val.shape[1] != self.x_train.shape[1]:
            raise ValueError(
                f"x_val has {self.x_val.shape[1]} time steps, x_train {self.x_train.shape[1]}"
            )

    def _check_split(self, split: str, x: Tensor, y: Tensor) -> None:
        if x.dtype != torch.float32 or x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(
                f"x_{split} must be float32 [N, T, {self.input_size}], "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        if self.kind == "classification":
            expected, dtype = (x.shape[0], self.output_steps), torch.int64
        else:
            expected, dtype = (x.shape[0], self.output_steps, self.output_size), torch.float32
        if y.dtype != dtype or tuple(y.shape) != expected:
            raise ValueError(
                f"y_{split} of a {self.kind} task must be {dtype} {list(expected)}, "
                f"got {y.dtype} {list(y.shape)}"
            )

    @classmethod
    def build(cls, *, seq_len: int, seed: int, options: BaseModel) -> Task:
        """Generate the task's data from validated options; implemented by each task class."""
        raise NotImplementedError(f"{cls.__name__} does not implement build()")

    @property
    def n_train(self) -> int:
        """Number of training sequences ``N_train``."""
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        """Number of held-out sequences ``N_val``."""
        return int(self.x_val.shape[0])

    @property
    def n_steps(self) -> int:
        """Time steps per input sequence, ``T``."""
        return int(self.x_train.shape[1])

    def _check_output(self, output: Tensor, y: Tensor) -> None:
        expected = (y.shape[0], self.output_steps, self.output_size)
        if tuple(output.shape) != expected:
            raise ValueError(
                f"{self.name}: output must be [N, output_steps, output_size] = {list(expected)} "
                f"for targets of shape {list(y.shape)}, got {list(output.shape)}"
            )

    @property
    def loss_name(self) -> str:
        """What :meth:`loss` computes: ``"cross-entropy"`` (classification, nats) or ``"mse"``
        (regression), whatever the metric (the flip-flop scores accuracy on an MSE loss)."""
        return "cross-entropy" if self.kind == "classification" else "mse"

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        """The training loss: a differentiable scalar tensor.

        Classification: mean cross-entropy over all ``N * S`` readout positions (nats).
        Regression: mean squared error over all ``N * S * C`` entries (target units squared).
        An empty batch gives NaN.

        Args:
            output: the model's readout, float ``[N, S, C]`` (logits for classification).
            y: targets for the same ``N`` sequences (int64 ``[N, S]`` or float ``[N, S, C]``).

        Example:
            >>> from rnn_diag.tasks import make_task
            >>> task = make_task("weather", seq_len=10, seed=0)
            >>> logits = torch.zeros(task.n_val, task.output_steps, task.output_size)
            >>> round(task.loss(logits, task.y_val).item(), 4)  # uniform output: ln 3
            1.0986
        """
        self._check_output(output, y)
        if self.kind == "classification":
            return F.cross_entropy(output.reshape(-1, self.output_size), y.reshape(-1))
        return F.mse_loss(output, y.to(output.dtype))

    def metric(self, output: Tensor, y: Tensor) -> float:
        """The task's score as a Python float (NaN for an empty batch).

        Classification: accuracy, the fraction of the ``N * S`` readout positions whose argmax
        logit is the target class. Regression: mean squared error, as :meth:`loss`.

        Args:
            output: the model's readout, float ``[N, S, C]``.
            y: targets for the same ``N`` sequences.

        Example:
            >>> from rnn_diag.tasks import make_task
            >>> task = make_task("copy", seq_len=4, seed=0, n_train=8, n_val=4)
            >>> perfect = 10.0 * F.one_hot(task.y_val, task.output_size).float()
            >>> task.metric(perfect, task.y_val)
            1.0
        """
        self._check_output(output, y)
        with torch.no_grad():
            if self.kind == "classification":
                if y.numel() == 0:
                    return math.nan
                return float((output.argmax(dim=-1) == y).float().mean().item())
            return float(F.mse_loss(output, y.to(output.dtype)).item())

    def info(self) -> dict[str, Any]:
        """Plain JSON-able facts about the task for the experiment's records.

        Keys: ``task``, ``kind``, ``seq_len``, ``n_steps``, ``seed``, ``n_train``, ``n_val``,
        ``input_size``, ``output_size``, ``output_steps``, ``metric_name``,
        ``higher_is_better``, ``chance_loss``, ``chance_metric``, ``best_loss``,
        ``best_metric``, ``class_names`` and ``options`` (a dict of the validated options).

        Example:
            >>> import json
            >>> from rnn_diag.tasks import make_task
            >>> info = make_task("weather", seq_len=1000, seed=0).info()
            >>> info["n_train"], info["n_val"], info["chance_metric"] == 1 / 3
            (400, 100, True)
            >>> json.loads(json.dumps(info)) == info
            True
        """
        return {
            "task": self.name,
            "kind": self.kind,
            "seq_len": int(self.seq_len),
            "n_steps": self.n_steps,
            "seed": int(self.seed),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "input_size": int(self.input_size),
            "output_size": int(self.output_size),
            "output_steps": int(self.output_steps),
            "metric_name": self.metric_name,
            "higher_is_better": bool(self.higher_is_better),
            "chance_loss": float(self.chance_loss),
            "chance_metric": float(self.chance_metric),
            "best_loss": None if self.best_loss is None else float(self.best_loss),
            "best_metric": None if self.best_metric is None else float(self.best_metric),
            "class_names": None if self.class_names is None else list(self.class_names),
            "options": dict(self.options),
        }
