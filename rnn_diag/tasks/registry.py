"""The task registry and :func:`make_task`, the one way to build a task from a name and options."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from pydantic import BaseModel, ValidationError

from rnn_diag.tasks.adding import AddingTask
from rnn_diag.tasks.base import Task
from rnn_diag.tasks.copy import CopyTask
from rnn_diag.tasks.delayed_xor import DelayedXorTask
from rnn_diag.tasks.flipflop import FlipFlopTask
from rnn_diag.tasks.weather import WeatherTask

__all__ = ["TASKS", "TASK_OPTIONS", "make_task"]

TASKS: dict[str, type[Task]] = {
    "weather": WeatherTask,
    "adding": AddingTask,
    "copy": CopyTask,
    "flipflop": FlipFlopTask,
    "delayed_xor": DelayedXorTask,
}
"""Task name -> task class (a :class:`~rnn_diag.tasks.base.Task` subclass)."""

TASK_OPTIONS: dict[str, type[BaseModel]] = {name: cls.Options for name, cls in TASKS.items()}
"""Task name -> its options model (pydantic, ``extra="forbid"``), for validating ``task:``
sections of a config."""


def _describe(name: str, model: type[BaseModel], error: ValidationError) -> str:
    known = ", ".join(model.model_fields)
    problems = []
    for e in error.errors():
        option = str(e["loc"][0]) if e["loc"] else None
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown option {option!r} (known options: {known})")
        elif option is None:
            cause = e.get("ctx", {}).get("error")
            problems.append(str(cause) if cause is not None else e["msg"])
        else:
            problems.append(f"option {option!r}: {e['msg']} (got {e['input']!r})")
    return f"task {name!r}: " + "; ".join(problems)


def _integer(name: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"task {name!r}: {what} must be an integer, got {value!r}")
    return int(value)


def make_task(name: str, *, seq_len: int, seed: int, **options: Any) -> Task:
    """Validate ``options`` with the task's options model and build the task's data.

    Args:
        name: a key of :data:`TASKS`: ``"weather"``, ``"adding"``, ``"copy"``,
            ``"flipflop"`` or ``"delayed_xor"``.
        seq_len: the task's sequence-length parameter (> 0): the window length for weather,
            adding, flipflop and delayed_xor, the delay for copy.
        seed: the trial seed for the data (all tasks but weather); weather ignores it
            (``data_seed``).
        **options: the task's options, see :data:`TASK_OPTIONS`; missing ones take defaults.

    Returns:
        The :class:`~rnn_diag.tasks.base.Task`, an instance of ``TASKS[name]``; same arguments,
        identical tensors.

    Raises:
        ValueError: for an unknown task name (listing the known tasks), a bad ``seq_len`` or
            ``seed``, or an unknown or invalid option (naming the task and the option).

    Example:
        >>> task = make_task("weather", seq_len=10, seed=0, lag=3, p=0.5)
        >>> task.n_train, task.n_val, round(task.best_metric, 4)
        (1192, 298, 0.6667)
        >>> make_task("weather", seq_len=10, seed=0, lags=3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: task 'weather': unknown option 'lags' (known options: n_days, data_seed, ...)
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    seq_len = _integer(name, "seq_len", seq_len)
    if seq_len <= 0:
        raise ValueError(f"task {name!r}: seq_len must be a positive integer, got {seq_len}")
    seed = _integer(name, "seed", seed)
    model = TASK_OPTIONS[name]
    try:
        validated = model.model_validate(options)
    except ValidationError as error:
        raise ValueError(_describe(name, model, error)) from None
    return TASKS[name].build(seq_len=seq_len, seed=seed, options=validated)
