"""The N-bit flip-flop (Sussillo & Barak, 2013; Golub & Sussillo, 2018).

Each sequence has ``T = seq_len`` steps of ``bits`` input channels. A channel is 0 except at its
*pulses*, where it is +1 or −1 (sign uniform). The target of every channel at every step is the
sign of that channel's most recent pulse (the current step included): the network must hold
``bits`` independent binary memories, flipping one when a pulse of the other sign arrives and
ignoring pulses of the same sign.

Pulses: at step 0 every channel pulses (as FixedPointFinder's ``FlipFlopData`` does), so every
target is defined, ±1, from the first step; at each later step each channel pulses independently
with probability ``p_pulse``. The model reads out every step (``output_steps = T``).

The trained network is the textbook case for fixed points: at zero input it has 2^bits stable
fixed points, one near each corner of the output cube, joined by saddles.

Example: ``bits=1``, pulses ``+ 0 0 − 0 − 0 +`` give targets ``+ + + − − − − +``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from rnn_diag.tasks.base import Task

__all__ = ["FlipFlopOptions", "FlipFlopTask", "flipflop_batch"]


class FlipFlopOptions(BaseModel):
    """Options of the ``flipflop`` task.

    Attributes:
        bits: independent memories, one input and one output channel each (> 0).
        p_pulse: probability of a pulse per step and channel after step 0, in [0, 1].
        n_train: training sequences (> 0).
        n_val: validation sequences (≥ 0; 0 means no held-out split).
    """

    model_config = ConfigDict(extra="forbid")

    bits: Annotated[int, Field(strict=True, gt=0)] = 3
    p_pulse: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    n_train: Annotated[int, Field(strict=True, gt=0)] = 1000
    n_val: Annotated[int, Field(strict=True, ge=0)] = 200


def flipflop_batch(
    n: int, seq_len: int, bits: int, p_pulse: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``n`` flip-flop sequences: inputs and targets, both float32 ``[n, seq_len, bits]``.

    Draws, in this order from ``generator``: the pulse mask ``torch.rand(n, seq_len, bits) <
    p_pulse`` (step 0 then set to all pulses) and the signs ``torch.randint(0, 2, (n, seq_len,
    bits))`` (0 → −1, 1 → +1). Targets: the sign of each channel's last pulse up to and including
    the step (a running "hold"), computed as the input at the index of the last pulse so far.

    Example:
        >>> x, y = flipflop_batch(1, 8, 1, 0.3, torch.Generator().manual_seed(21))
        >>> x[0, :, 0].tolist()
        [-1.0, 0.0, 1.0, 1.0, 0.0, -1.0, 0.0, 0.0]
        >>> y[0, :, 0].tolist()
        [-1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
    """
    pulse = torch.rand(n, seq_len, bits, generator=generator) < p_pulse
    pulse[:, 0] = True
    sign = torch.randint(0, 2, (n, seq_len, bits), generator=generator).to(torch.float32) * 2 - 1
    x = torch.where(pulse, sign, torch.zeros(()))
    steps = torch.arange(seq_len).reshape(1, seq_len, 1)
    last = torch.where(pulse, steps, torch.zeros((), dtype=torch.int64)).cummax(dim=1).values
    y = torch.gather(x, 1, last)
    return x, y


class FlipFlopTask(Task):
    """The N-bit flip-flop (see the module docstring), trained as regression, scored by sign.

    ``input_size = output_size = bits``, ``output_steps = T = seq_len`` (every step is read
    out). Loss: mean squared error of the ``[N, T, bits]`` readout against the ±1 targets (as in
    Sussillo & Barak, 2013). Metric: **accuracy**, the fraction of ``N · T · bits`` entries whose
    sign of the output equals the target (an output of exactly 0 counts as wrong; entries with a
    target of 0, which this generator never makes, are left out). So ``kind`` is "regression"
    (float targets, MSE) while ``metric_name`` is "accuracy" and higher is better.

    Chance: each target is the sign of one pulse, ±1 with probability 1/2 independently of
    everything an input-free predictor knows, so any such predictor scores accuracy 1/2
    (``chance_metric = 0.5``; e.g. always +1); its best MSE is that of predicting the mean 0,
    ``chance_loss = 1``. Best: loss 0 and accuracy 1 (the target is a function of the input).

    Data: ``torch.Generator().manual_seed(seed)``; training sequences first, then validation
    ones (:func:`flipflop_batch`), so the training data do not depend on ``n_val``.
    """

    Options = FlipFlopOptions

    def __post_init__(self) -> None:
        super().__post_init__()  # validates the data as a regression task (float targets)
        self.metric_name, self.higher_is_better = "accuracy", True

    @classmethod
    def build(cls, *, seq_len: int, seed: int, options: FlipFlopOptions) -> FlipFlopTask:
        """Generate training and validation sequences of ``seq_len`` steps.

        Example:
            >>> task = FlipFlopTask.build(seq_len=50, seed=0, options=FlipFlopOptions(n_val=10))
            >>> tuple(task.x_train.shape), tuple(task.y_val.shape), task.output_steps
            ((1000, 50, 3), (10, 50, 3), 50)
            >>> task.metric_name, task.chance_metric, task.best_metric
            ('accuracy', 0.5, 1.0)
        """
        generator = torch.Generator().manual_seed(seed)
        layout = (seq_len, options.bits, options.p_pulse)
        x_train, y_train = flipflop_batch(options.n_train, *layout, generator)
        x_val, y_val = flipflop_batch(options.n_val, *layout, generator)
        return cls(
            name="flipflop",
            kind="regression",
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
            input_size=options.bits,
            output_size=options.bits,
            output_steps=seq_len,
            seq_len=seq_len,
            seed=seed,
            options=options.model_dump(),
            chance_loss=1.0,
            chance_metric=0.5,
            best_loss=0.0,
            best_metric=1.0,
        )

    def metric(self, output: Tensor, y: Tensor) -> float:
        """Accuracy of ``sign(output)`` against the ±1 targets ``y`` over every entry with a
        non-zero target (NaN when there is none).

        Args:
            output: the model's readout, float ``[N, T, bits]``.
            y: the targets, float ``[N, T, bits]``.

        Example:
            >>> from rnn_diag.tasks import make_task
            >>> task = make_task("flipflop", seq_len=20, seed=0, n_train=4, n_val=4)
            >>> task.metric(0.5 * task.y_val, task.y_val), task.metric(-task.y_val, task.y_val)
            (1.0, 0.0)
        """
        self._check_output(output, y)
        with torch.no_grad():
            defined = y != 0
            if not bool(defined.any()):
                return float("nan")
            hits = torch.sign(output) == torch.sign(y).to(output.dtype)
            return float(hits[defined].float().mean().item())
