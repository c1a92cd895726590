"""``train.regularizer``: loss terms on the recurrent weights' dynamics (docs/design.md §25).

A list of mappings, each with a ``kind``; every term is added to the task's loss, times its
``weight``, on the training batches its ``schedule`` selects::

    train:
      regularizer:
        - kind: flossing              # gradient flossing (Engelken 2023)
          k: 4                        # leading Lyapunov exponents pushed towards target
          window: null                # counted steps; null: the whole sequence after warmup
          warmup: 0                   # uncounted steps that align the QR basis first
          target: 0.0                 # nats per step
          batch_size: 8               # first N sequences of the batch drive the estimate
          weight: 1.0
          schedule: {before: 100, every: 1, until: null}
        - kind: spectral_norm_penalty # sum (sigma_max(W_hh block) - target)^2
          target: 1.0
          weight: 0.1
        - kind: orthogonality_penalty # sum ||W W^T - I||_F^2
          weight: 0.01

The terms are those of :mod:`rnn_diag.modules.regularizers`; they need cell rnn, gru or lstm.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from .types import NonNegativeInt, PositiveFloat, PositiveInt

__all__ = ["KINDS", "FlossingConfig", "OrthogonalityPenaltyConfig", "Regularizer",
           "RegularizerSchedule", "SpectralNormPenaltyConfig"]

_Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Real = Annotated[float, Field(allow_inf_nan=False)]


class RegularizerSchedule(BaseModel):
    """When a regulariser acts.

    Attributes:
        before: optimizer steps on the weighted term alone before training starts (≥ 0), each
            on the next training batch in the epoch order (Engelken's flossing before
            training); the trial's optimizer and learning rate take them.
        every: add the term to the loss of every N-th training batch (> 0; 1: every batch;
            counted across epochs, from the first batch of training).
        until: the last epoch (1-based) whose batches get the term, or ``None`` for all.

    Example:
        >>> RegularizerSchedule().model_dump()
        {'before': 0, 'every': 1, 'until': None}
    """

    model_config = ConfigDict(extra="forbid")

    before: NonNegativeInt = 0
    every: PositiveInt = 1
    until: PositiveInt | None = None

    def active(self, batch: int, epoch: int) -> bool:
        """Whether the term joins the loss of training batch ``batch`` (0-based, counted over
        the whole training) in epoch ``epoch`` (0-based).

        >>> s = RegularizerSchedule(every=2, until=1)
        >>> [s.active(b, 0) for b in range(3)], s.active(4, 1)
        ([True, False, True], False)
        """
        return batch % self.every == 0 and (self.until is None or epoch < self.until)


class _Term(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: _Weight = 1.0
    schedule: RegularizerSchedule = Field(default_factory=RegularizerSchedule)


class FlossingConfig(_Term):
    """Gradient flossing (Engelken, NeurIPS 2023): ``weight · mean_i (λ_i − target)²`` over the
    ``k`` leading finite-time Lyapunov exponents of every layer (averaged over layers), through
    :func:`rnn_diag.modules.regularizers.flossing_loss`, along the trajectory of the batch's
    first ``batch_size`` sequences.

    Attributes:
        k: exponents per layer (> 0, at most the state size: H; 2H for an LSTM).
        window: counted steps (> 0), or ``None`` for the whole sequence after ``warmup``;
            ``warmup + window`` must fit in the task's sequence (checked when the trial runs).
        warmup: uncounted steps that align the orthonormal basis first (≥ 0).
        target: the exponents' target, nats per step (0: neither vanishing nor exploding).
        batch_size: sequences of the batch that drive the estimate (> 0); the cost is
            O(batch_size · S² · k) per step.
    """

    kind: Literal["flossing"]
    k: PositiveInt = 1
    window: PositiveInt | None = None
    warmup: NonNegativeInt = 0
    target: _Real = 0.0
    batch_size: PositiveInt = 8


class SpectralNormPenaltyConfig(_Term):
    """``weight · Σ (σ_max(B) − target)²`` over every recurrent gate block B
    (:func:`rnn_diag.modules.regularizers.spectral_norm_penalty`).

    Attributes:
        target: the largest singular value each block is pulled to (> 0).
    """

    kind: Literal["spectral_norm_penalty"]
    target: PositiveFloat = 1.0


class OrthogonalityPenaltyConfig(_Term):
    """``weight · Σ ‖B Bᵀ − I‖_F²`` over every recurrent gate block B
    (:func:`rnn_diag.modules.regularizers.orthogonality_penalty`)."""

    kind: Literal["orthogonality_penalty"]


#: Each ``kind`` and the model of its entry.
KINDS: dict[str, type[BaseModel]] = {
    "flossing": FlossingConfig,
    "spectral_norm_penalty": SpectralNormPenaltyConfig,
    "orthogonality_penalty": OrthogonalityPenaltyConfig,
}

Regularizer = Annotated[Union[tuple(KINDS.values())], Field(discriminator="kind")]  # noqa: UP007
"""One entry of ``train.regularizer``, told apart by its ``kind`` (:data:`KINDS`)."""
