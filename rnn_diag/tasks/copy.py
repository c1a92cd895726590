"""The copy (memory) task (Hochreiter & Schmidhuber, 1997; Arjovsky et al., 2016).

Memorise ``length`` symbols drawn from ``n_symbols``, wait ``seq_len`` steps, then reproduce them.
Each input step is one-hot over ``n_symbols + 2`` channels: the symbols ``0 .. n_symbols-1``, then
``BLANK`` (channel ``n_symbols``) and ``GO`` (channel ``n_symbols + 1``). Layout of one sequence,
``T = 2 * length + seq_len`` steps:

- steps ``0 .. length-1``: the symbols ``s_0 .. s_{length-1}``;
- steps ``length .. length+seq_len-2``: BLANK (the delay, ``seq_len - 1`` steps);
- step ``length + seq_len - 1``: GO, the last step of the delay, "start answering now";
- steps ``length+seq_len .. T-1``: BLANK, while the model reads out ``s_0 .. s_{length-1}``.

For example, ``length=2``, ``seq_len=3``, symbols ``(5, 1)``: inputs ``5 1 _ _ G _ _`` (``_``
BLANK, ``G`` GO), ``T = 7``; the model's last 2 hidden states are read out with targets ``5 1``.
Symbol ``s_k`` is input at step ``k`` and read out at step ``length + seq_len + k``:
``length + seq_len`` steps later.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from rnn_diag.tasks.base import Task

__all__ = ["CopyOptions", "CopyTask", "copy_batch"]


class CopyOptions(BaseModel):
    """Options of the ``copy`` task.

    Attributes:
        length: symbols to memorise and reproduce (> 0).
        n_symbols: alphabet size (≥ 2).
        n_train: training sequences (> 0).
        n_val: validation sequences (≥ 0; 0 means no held-out split).
    """

    model_config = ConfigDict(extra="forbid")

    length: Annotated[int, Field(strict=True, gt=0)] = 5
    n_symbols: Annotated[int, Field(strict=True, ge=2)] = 8
    n_train: Annotated[int, Field(strict=True, gt=0)] = 1000
    n_val: Annotated[int, Field(strict=True, ge=0)] = 200


def copy_batch(
    n: int, seq_len: int, length: int, n_symbols: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``n`` copy-task sequences: inputs float32 ``[n, 2*length + seq_len, n_symbols + 2]``
    (layout in the module docstring) and targets int64 ``[n, length]``, the symbols drawn by
    ``torch.randint(0, n_symbols, (n, length), generator=generator)``. Needs ``seq_len >= 1``.

    Example:
        >>> x, y = copy_batch(1, 3, 2, 8, torch.Generator().manual_seed(0))
        >>> tuple(x.shape), y.tolist()
        ((1, 7, 10), [[4, 7]])
        >>> x[0].argmax(dim=-1).tolist()  # 8 is BLANK, 9 is GO
        [4, 7, 8, 8, 9, 8, 8]
    """
    blank, go = n_symbols, n_symbols + 1
    symbols = torch.randint(0, n_symbols, (n, length), generator=generator)
    steps = torch.full((n, 2 * length + seq_len), blank, dtype=torch.int64)
    steps[:, :length] = symbols
    steps[:, length + seq_len - 1] = go
    return F.one_hot(steps, n_symbols + 2).to(torch.float32), symbols


class CopyTask(Task):
    """The copy task as classification at each of the last ``length`` steps (module docstring).

    Classification: ``input_size = n_symbols + 2``, ``output_steps = length``,
    ``output_size = n_symbols`` (BLANK and GO are never targets), cross-entropy over all readout
    steps, accuracy over all readout positions.

    Chance: the symbols are i.i.d. uniform, so the best input-free prediction is uniform:
    ``chance_loss = ln(n_symbols)`` and ``chance_metric = 1/n_symbols``. Best: 0 and 1.

    Data: ``torch.Generator().manual_seed(seed)``; training sequences first, then validation ones
    (:func:`copy_batch`), so the training data do not depend on ``n_val``. Validation sequences
    are independent draws and may by chance repeat a training sequence.
    """

    Options = CopyOptions

    @classmethod
    def build(cls, *, seq_len: int, seed: int, options: CopyOptions) -> CopyTask:
        """Generate training and validation sequences with a delay of ``seq_len`` steps.

        Example:
            >>> task = CopyTask.build(seq_len=10, seed=0, options=CopyOptions())
            >>> task.n_steps, task.input_size, task.output_steps, task.output_size
            (20, 10, 5, 8)
        """
        if seq_len < 1:
            raise ValueError(f"task 'copy': seq_len={seq_len} must be >= 1 (the GO step)")
        generator = torch.Generator().manual_seed(seed)
        layout = (seq_len, options.length, options.n_symbols)
        x_train, y_train = copy_batch(options.n_train, *layout, generator)
        x_val, y_val = copy_batch(options.n_val, *layout, generator)
        return cls(
            name="copy",
            kind="classification",
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
            input_size=options.n_symbols + 2,
            output_size=options.n_symbols,
            output_steps=options.length,
            seq_len=seq_len,
            seed=seed,
            options=options.model_dump(),
            chance_loss=math.log(options.n_symbols),
            chance_metric=1 / options.n_symbols,
            best_loss=0.0,
            best_metric=1.0,
            memory_steps=options.length + seq_len,
        )
