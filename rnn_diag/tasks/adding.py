"""The adding problem (Hochreiter & Schmidhuber, 1997; Pascanu et al., 2013).

Each sequence has ``T = seq_len`` steps of two channels: channel 0 holds values uniform in [0, 1),
channel 1 is a marker that is 1 at exactly two steps and 0 elsewhere. The target is the sum of the
two marked values. The first marker is uniform over the first half, steps ``[0, ⌊T/2⌋)``, the
second uniform over the second half, ``[⌊T/2⌋, T)``, the placement used since Pascanu et al.
(2013) (Hochreiter & Schmidhuber put the first marker among the first ten steps). The model reads
out at the last step, so it must hold the first marked value for at least ``T - ⌊T/2⌋`` steps.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from rnn_diag.tasks.base import Task

__all__ = ["AddingOptions", "AddingTask", "adding_batch"]

TARGET_VARIANCE = 1 / 6
"""Var(U1 + U2) = 2 · 1/12 for independent U1, U2 ~ U(0, 1)."""


class AddingOptions(BaseModel):
    """Options of the ``adding`` task.

    Attributes:
        n_train: training sequences (> 0).
        n_val: validation sequences (≥ 0; 0 means no held-out split).
    """

    model_config = ConfigDict(extra="forbid")

    n_train: Annotated[int, Field(strict=True, gt=0)] = 1000
    n_val: Annotated[int, Field(strict=True, ge=0)] = 200


def adding_batch(n: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` adding-problem sequences: inputs float32 ``[n, seq_len, 2]``, targets float32
    ``[n, 1, 1]``.

    Draws, in this order from ``generator``: the values ``torch.rand(n, seq_len)``, the first
    marker's step ``torch.randint(0, seq_len // 2, (n,))`` and the second's
    ``torch.randint(seq_len // 2, seq_len, (n,))``. Needs ``seq_len >= 2``.

    Example:
        >>> x, y = adding_batch(3, 6, torch.Generator().manual_seed(0))
        >>> x.shape, y.shape
        (torch.Size([3, 6, 2]), torch.Size([3, 1, 1]))
        >>> x[..., 1].sum(dim=1).tolist()
        [2.0, 2.0, 2.0]
    """
    half = seq_len // 2
    values = torch.rand(n, seq_len, generator=generator)
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, seq_len, (n,), generator=generator)
    rows = torch.arange(n)
    markers = torch.zeros(n, seq_len)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)
    y = (values[rows, first] + values[rows, second]).reshape(n, 1, 1)
    return x, y


class AddingTask(Task):
    """The adding problem as a regression task (see the module docstring).

    Regression: ``input_size = 2``, ``output_steps = 1`` (the last hidden state),
    ``output_size = 1``, mean squared error.

    Chance: the best input-free prediction is the target's mean, 1, and its expected squared
    error is the target's variance, ``chance_loss = chance_metric = 1/6`` (the marked values are
    two independent U(0, 1)). Best: 0 (the target is a function of the input).

    Data: ``torch.Generator().manual_seed(seed)``; the ``n_train`` training sequences are drawn
    first, then the ``n_val`` validation ones (:func:`adding_batch`), so the training data do not
    depend on ``n_val``. Validation sequences are independent draws.
    """

    Options = AddingOptions

    @classmethod
    def build(cls, *, seq_len: int, seed: int, options: AddingOptions) -> AddingTask:
        """Generate training and validation sequences of ``seq_len`` steps.

        Raises:
            ValueError: if ``seq_len < 2`` (each half needs a marker).

        Example:
            >>> task = AddingTask.build(seq_len=50, seed=0, options=AddingOptions(n_val=10))
            >>> tuple(task.x_train.shape), tuple(task.y_val.shape), task.chance_loss == 1 / 6
            ((1000, 50, 2), (10, 1, 1), True)
        """
        if seq_len < 2:
            raise ValueError(
                f"task 'adding': seq_len={seq_len} is too short; need seq_len >= 2 "
                "(one marker in each half)"
            )
        generator = torch.Generator().manual_seed(seed)
        x_train, y_train = adding_batch(options.n_train, seq_len, generator)
        x_val, y_val = adding_batch(options.n_val, seq_len, generator)
        return cls(
            name="adding",
            kind="regression",
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
            input_size=2,
            output_size=1,
            output_steps=1,
            seq_len=seq_len,
            seed=seed,
            options=options.model_dump(),
            chance_loss=TARGET_VARIANCE,
            chance_metric=TARGET_VARIANCE,
            best_loss=0.0,
            best_metric=0.0,
            memory_steps=seq_len - 1,
        )
