"""Data generators for training sweeps: weather (the seed experiment), adding, copy, flipflop,
delayed_xor.

Build a task with :func:`make_task`; each returns a :class:`Task` holding batch-first CPU tensors,
the loss, the metric, and the chance and best values a report draws as reference lines.
"""

from rnn_diag.tasks.adding import AddingOptions, AddingTask
from rnn_diag.tasks.base import Task
from rnn_diag.tasks.copy import CopyOptions, CopyTask
from rnn_diag.tasks.delayed_xor import DelayedXorOptions, DelayedXorTask
from rnn_diag.tasks.flipflop import FlipFlopOptions, FlipFlopTask
from rnn_diag.tasks.registry import TASK_OPTIONS, TASKS, make_task
from rnn_diag.tasks.weather import WeatherOptions, WeatherTask

__all__ = [
    "TASKS",
    "TASK_OPTIONS",
    "AddingOptions",
    "AddingTask",
    "CopyOptions",
    "CopyTask",
    "DelayedXorOptions",
    "DelayedXorTask",
    "FlipFlopOptions",
    "FlipFlopTask",
    "Task",
    "WeatherOptions",
    "WeatherTask",
    "make_task",
]
