"""The delayed XOR task (after Engelken, "Gradient flossing", NeurIPS 2023).

Each sequence is a stream of ``T = seq_len`` i.i.d. fair random bits ``b_t ∈ {0, 1}``, fed in one
input channel as ``x_t = 2 b_t − 1 ∈ {−1, +1}`` (zero mean). From step ``delay`` on, the target at
every step ``t`` is the XOR of two past bits::

    y_t = b_{t − delay} XOR b_{t − delay // 2},      t = delay, …, T − 1,

so the network must hold each bit for ``delay`` steps (the farther lag sets the memory needed)
and combine it with a bit ``delay // 2`` steps back (the current bit when ``delay = 1``). The
lags ``delay`` and ``delay // 2`` follow the "t − d and t − d/2" form of the gradient-flossing
paper's delayed XOR as we read it (its exact wording was not at hand when this was written; other
lags would change only ``near`` in :func:`delayed_xor_batch`).

The model reads out its last ``output_steps = T − delay`` hidden states, one per step with a
defined target, each a two-class classification (class 1 = the bits differ).

Why XOR: a predictor that lacks either of the two bits is at chance, because XOR with an
independent fair bit is a fair bit. So accuracy above 0.5 proves the network bridged the full
``delay`` steps; no partial credit comes from the nearer bit alone.

Example: ``delay = 2`` (lags 2 and 1), bits ``1 0 0 1 1`` give targets at steps 2, 3, 4:
``b0^b1 = 1``, ``b1^b2 = 0``, ``b2^b3 = 1``.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from rnn_diag.tasks.base import Task

__all__ = ["DelayedXorOptions", "DelayedXorTask", "delayed_xor_batch"]


class DelayedXorOptions(BaseModel):
    """Options of the ``delayed_xor`` task.

    Attributes:
        delay: the farther lag in steps (> 0); the target XORs the bits ``delay`` and
            ``delay // 2`` steps back. Needs ``seq_len > delay``.
        n_train: training sequences (> 0).
        n_val: validation sequences (≥ 0; 0 means no held-out split).
    """

    model_config = ConfigDict(extra="forbid")

    delay: Annotated[int, Field(strict=True, gt=0)] = 5
    n_train: Annotated[int, Field(strict=True, gt=0)] = 1000
    n_val: Annotated[int, Field(strict=True, ge=0)] = 200


def delayed_xor_batch(
    n: int, seq_len: int, delay: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``n`` delayed-XOR sequences: inputs float32 ``[n, seq_len, 1]`` (±1) and targets int64
    ``[n, seq_len - delay]``, the target of step ``delay + k`` at column ``k``.

    Draws the bits ``torch.randint(0, 2, (n, seq_len), generator=generator)``. Needs
    ``seq_len > delay >= 1``.

    Example:
        >>> x, y = delayed_xor_batch(1, 6, 2, torch.Generator().manual_seed(0))
        >>> bits = ((x[0, :, 0] + 1) / 2).long().tolist()
        >>> bits, y[0].tolist()
        ([0, 1, 1, 0, 1, 1], [1, 0, 1, 1])
        >>> [bits[t - 2] ^ bits[t - 1] for t in range(2, 6)]
        [1, 0, 1, 1]
    """
    near = delay // 2
    bits = torch.randint(0, 2, (n, seq_len), generator=generator)
    x = (2 * bits - 1).to(torch.float32).unsqueeze(-1)
    y = bits[:, : seq_len - delay] ^ bits[:, delay - near : seq_len - near]
    return x, y


class DelayedXorTask(Task):
    """The delayed XOR task as two-class classification at every step from ``delay`` on
    (module docstring).

    ``input_size = 1``, ``output_size = 2``, ``output_steps = seq_len - delay``; cross-entropy
    over all readout steps, accuracy over all readout positions.

    Chance: every target is a fair bit independent of anything an input-free predictor knows
    (XOR of two independent fair bits), so ``chance_loss = ln 2`` and ``chance_metric = 0.5``
    (analytic, not the sample's class balance). Best: 0 and 1 (the target is a function of the
    input).

    Data: ``torch.Generator().manual_seed(seed)``; training sequences first, then validation
    ones (:func:`delayed_xor_batch`), so the training data do not depend on ``n_val``.
    """

    Options = DelayedXorOptions

    @classmethod
    def build(cls, *, seq_len: int, seed: int, options: DelayedXorOptions) -> DelayedXorTask:
        """Generate training and validation sequences of ``seq_len`` steps.

        Raises:
            ValueError: if ``seq_len <= delay`` (no step would have a target).

        Example:
            >>> task = DelayedXorTask.build(
            ...     seq_len=20, seed=0, options=DelayedXorOptions(delay=4, n_val=10))
            >>> tuple(task.x_train.shape), tuple(task.y_val.shape), task.output_steps
            ((1000, 20, 1), (10, 16), 16)
            >>> round(task.chance_loss, 4), task.chance_metric, task.best_metric
            (0.6931, 0.5, 1.0)
        """
        delay = options.delay
        if seq_len <= delay:
            raise ValueError(
                f"task 'delayed_xor': seq_len={seq_len} must exceed option 'delay'={delay} "
                "(the first target is at step delay)"
            )
        generator = torch.Generator().manual_seed(seed)
        x_train, y_train = delayed_xor_batch(options.n_train, seq_len, delay, generator)
        x_val, y_val = delayed_xor_batch(options.n_val, seq_len, delay, generator)
        return cls(
            name="delayed_xor",
            kind="classification",
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
            input_size=1,
            output_size=2,
            output_steps=seq_len - delay,
            seq_len=seq_len,
            seed=seed,
            options=options.model_dump(),
            chance_loss=math.log(2),
            chance_metric=0.5,
            best_loss=0.0,
            best_metric=1.0,
            memory_steps=delay,
            class_names=["same", "differ"],
        )
