"""The seed experiment's "weather" task (docs/design.md §18), with an optional planted dependency.

A sequence of ``n_days`` days, each one of three classes (0 Sunny, 1 Rainy, 2 Cloudy). Every window
of ``seq_len`` consecutive days, one-hot encoded, predicts the day after it (many-to-one).

With the default options the days are exactly the article's ``np.random.seed(42);
np.random.randint(0, 3, 1500)``: i.i.d. uniform, so there is nothing to learn, the chance loss is
ln 3 ≈ 1.0986 nats and any training loss below it is memorisation. A planted dependency (``lag``,
``p``: day ``d`` repeats day ``d - lag`` with probability ``p``) gives a model something to learn
exactly ``lag`` steps back, so vanishing gradients show up in accuracy, not only in norms.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rnn_diag.tasks.base import Task

__all__ = ["CLASS_NAMES", "WeatherOptions", "WeatherTask", "best_weather_values", "weather_days"]

CLASS_NAMES = ["Sunny", "Rainy", "Cloudy"]
"""Names of classes 0, 1, 2."""

N_CLASSES = len(CLASS_NAMES)


class WeatherOptions(BaseModel):
    """Options of the ``weather`` task.

    Attributes:
        n_days: length of the day sequence (> 0).
        data_seed: seed of the ``numpy.random.RandomState`` that draws the days (0 ≤ seed < 2**32).
            The trial seed does not affect the data.
        lag: distance in days of the planted dependency (≥ 1, < ``n_days``), or ``None`` for none.
        p: probability that a day repeats the day ``lag`` days earlier, in [0, 1]; ``p > 0``
            needs a ``lag``.
        val_fraction: fraction of the windows, the LAST ones in time order, held out for
            validation, in [0, 1).
    """

    model_config = ConfigDict(extra="forbid")

    n_days: Annotated[int, Field(strict=True, gt=0)] = 1500
    data_seed: Annotated[int, Field(strict=True, ge=0, lt=2**32)] = 42
    lag: Annotated[int, Field(strict=True, ge=1)] | None = None
    p: Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0
    val_fraction: Annotated[float, Field(strict=True, ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.2

    @model_validator(mode="after")
    def _lag_fits(self) -> WeatherOptions:
        if self.p > 0 and self.lag is None:
            raise ValueError(f"option 'p' = {self.p} > 0 needs option 'lag' (got lag=None)")
        if self.lag is not None and self.lag >= self.n_days:
            raise ValueError(f"option 'lag' = {self.lag} must be < option 'n_days' = {self.n_days}")
        return self


def weather_days(
    n_days: int = 1500, data_seed: int = 42, lag: int | None = None, p: float = 0.0
) -> np.ndarray:
    """The day sequence: int64 ``[n_days]`` of classes in {0, 1, 2}.

    Procedure, with ``rs = np.random.RandomState(data_seed)``:

    1. ``base = rs.randint(0, 3, size=n_days)``. This is the article's ``np.random.seed(42);
       np.random.randint(0, 3, n_days)`` (the legacy global API is a ``RandomState``), so with
       ``lag=None`` or ``p=0`` the days are exactly the seed experiment's.
    2. Only if ``lag`` is given: ``coins = rs.random_sample(n_days)`` (uniform [0, 1)), drawn
       after ``base`` so ``base`` is unchanged; then for ``d = lag, ..., n_days - 1`` in order,
       ``day[d] = day[d - lag]`` (the possibly already repeated day) if ``coins[d] < p``, else
       ``base[d]``. Days ``d < lag`` are ``base[d]``.

    Every day's marginal stays uniform over the 3 classes, and the events "day d repeats day
    d - lag" are i.i.d. Bernoulli(p + (1 - p)/3) over d ≥ lag.

    Example:
        >>> weather_days()[:10]
        array([2, 0, 2, 2, 0, 0, 2, 1, 2, 2])
        >>> days = weather_days(n_days=20, lag=4, p=1.0)
        >>> bool((days[4:] == days[:-4]).all())
        True
    """
    rs = np.random.RandomState(data_seed)
    days = rs.randint(0, N_CLASSES, size=n_days).astype(np.int64)
    if lag is not None:
        repeat = rs.random_sample(n_days) < p
        for d in range(lag, n_days):
            if repeat[d]:
                days[d] = days[d - lag]
    return days


def best_weather_values(seq_len: int, lag: int | None, p: float) -> tuple[float, float]:
    """Best expected (cross-entropy in nats, accuracy) any predictor reaches on weather windows.

    If the window holds day ``d - lag`` (``lag <= seq_len``), the next day equals it with
    probability ``q = p + (1 - p)/3`` and is each other class with ``r = (1 - p)/3``, whatever
    else the window shows; so the best accuracy is ``q`` (predict day ``d - lag``) and the best
    loss the entropy ``-(q ln q + 2 r ln r)``. Otherwise (no lag, or ``lag > seq_len``) the window
    and the next day are independent (the repeats chain only days ``lag`` apart, and none of
    those is in the window), so the best is chance: ln 3 and 1/3.

    Example:
        >>> loss, acc = best_weather_values(seq_len=10, lag=3, p=0.5)
        >>> round(acc, 4), round(loss, 4)
        (0.6667, 0.8676)
        >>> best_weather_values(seq_len=10, lag=11, p=0.5) == (math.log(3), 1 / 3)
        True
    """
    if lag is None or lag > seq_len or p == 0:
        return math.log(N_CLASSES), 1 / N_CLASSES
    q = p + (1 - p) / N_CLASSES
    r = (1 - p) / N_CLASSES
    loss = -(q * math.log(q) + (2 * r * math.log(r) if r > 0 else 0.0))
    return loss, q


class WeatherTask(Task):
    """Next-day prediction from windows of ``seq_len`` days (see the module docstring).

    Data: ``n_windows = n_days - seq_len`` windows; window ``i`` is days ``i .. i+seq_len-1``,
    one-hot, float32 ``[seq_len, 3]``, and its target is day ``i + seq_len`` (int64 ``[1]``).
    The last ``max(1, ⌊val_fraction · n_windows⌋)`` windows in time order (none when
    ``val_fraction == 0``) form the validation split, the rest the training split; nothing is
    shuffled. No validation *target* appears in a training window or target (the last training
    target is the day before the first validation target), but validation inputs do overlap
    the days the model trained on; this is accepted and not corrected.

    Classification: ``input_size = 3``, ``output_steps = 1``, ``output_size = 3``, cross-entropy,
    accuracy.

    Chance (the best predictor that ignores the window): every day's marginal is uniform, with or
    without a planted dependency, so ``chance_loss = ln 3 ≈ 1.0986`` nats and
    ``chance_metric = 1/3``. Best: :func:`best_weather_values` (``p + (1 - p)/3`` accuracy when
    ``lag <= seq_len``; chance otherwise).

    The trial ``seed`` is recorded but not used: the data are fixed by ``data_seed``.
    """

    Options = WeatherOptions

    @classmethod
    def build(cls, *, seq_len: int, seed: int, options: WeatherOptions) -> WeatherTask:
        """Generate the windows for validated ``options``.

        Raises:
            ValueError: if fewer than 2 windows exist (``seq_len > n_days - 2``).

        Example:
            >>> task = WeatherTask.build(seq_len=100, seed=0, options=WeatherOptions())
            >>> task.n_train, task.n_val, tuple(task.x_train.shape[1:])
            (1120, 280, (100, 3))
        """
        n_windows = options.n_days - seq_len
        if n_windows < 2:
            raise ValueError(
                f"task 'weather': seq_len={seq_len} leaves {max(n_windows, 0)} window(s) of "
                f"n_days={options.n_days} days; need at least 2 (seq_len <= n_days - 2)"
            )
        days = torch.from_numpy(
            weather_days(options.n_days, options.data_seed, options.lag, options.p)
        )
        x = F.one_hot(days.unfold(0, seq_len, 1)[:n_windows], N_CLASSES).to(torch.float32)
        y = days[seq_len:].reshape(n_windows, 1).clone()
        n_val = 0
        if options.val_fraction > 0:
            n_val = max(1, math.floor(options.val_fraction * n_windows + 1e-9))
        n_train = n_windows - n_val
        best_loss, best_metric = best_weather_values(seq_len, options.lag, options.p)
        return cls(
            name="weather",
            kind="classification",
            x_train=x[:n_train].contiguous(),
            y_train=y[:n_train],
            x_val=x[n_train:].contiguous(),
            y_val=y[n_train:],
            input_size=N_CLASSES,
            output_size=N_CLASSES,
            output_steps=1,
            seq_len=seq_len,
            seed=seed,
            options=options.model_dump(),
            chance_loss=math.log(N_CLASSES),
            chance_metric=1 / N_CLASSES,
            best_loss=best_loss,
            best_metric=best_metric,
            class_names=list(CLASS_NAMES),
            memory_steps=options.lag,
        )
