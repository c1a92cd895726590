"""The ``train.regularizer`` terms of one trial, evaluated on its batches (docs/design.md §25).

:class:`Regularization` turns the validated entries
(:mod:`rnn_diag.experiments.config.regularizers`) into loss terms of the trial's recurrent
module, through :mod:`rnn_diag.modules.regularizers`, and says which act on which batch. The
trial adds :meth:`Regularization.loss` to the task's loss and reports both apart.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..modules.regularizers import flossing_loss, orthogonality_penalty, spectral_norm_penalty

__all__ = ["Regularization", "RegularizerError"]


class RegularizerError(ArithmeticError):
    """A regulariser's value is not finite (the trial then counts as diverged)."""


class Regularization:
    """The weighted regularisers of a trial.

    Args:
        terms: ``train.regularizer`` entries (``kind``, ``weight``, ``schedule``, ...).
        rnn: the trial's ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (``batch_first``).

    Example:
        >>> from rnn_diag.experiments.config.regularizers import SpectralNormPenaltyConfig
        >>> rnn = nn.RNN(1, 3, batch_first=True)
        >>> with torch.no_grad():
        ...     _ = rnn.weight_hh_l0.copy_(2 * torch.eye(3))
        >>> reg = Regularization([SpectralNormPenaltyConfig(kind="spectral_norm_penalty",
        ...                                                  weight=0.5)], rnn)
        >>> reg.loss(torch.zeros(4, 10, 1), batch=0, epoch=0).item()
        0.5
    """

    def __init__(self, terms, rnn: nn.Module):
        self.terms = list(terms)
        self.rnn = rnn

    def __bool__(self) -> bool:
        return bool(self.terms)

    @property
    def before(self) -> int:
        """Optimizer steps on the regularisers alone before training (the largest
        ``schedule.before``; each term takes part in its own first ``before`` steps)."""
        return max((t.schedule.before for t in self.terms), default=0)

    def _term(self, term, x: Tensor) -> Tensor:
        """One unweighted term on the batch ``x [B, T, I]``."""
        if term.kind == "spectral_norm_penalty":
            return spectral_norm_penalty(self.rnn, term.target)
        if term.kind == "orthogonality_penalty":
            return orthogonality_penalty(self.rnn)
        T = x.shape[1]
        window = T - term.warmup if term.window is None else term.window
        if window < 1 or term.warmup + window > T:
            raise ValueError(
                f"flossing needs warmup + window = {term.warmup} + {window} steps, but the "
                f"task's sequences have {T}: lower train.regularizer's window or warmup")
        inputs = x[: term.batch_size].transpose(0, 1)
        return flossing_loss(self.rnn, inputs, k=term.k, window=window, warmup=term.warmup,
                             target=term.target)

    def _weighted(self, terms, x: Tensor, when: str) -> Tensor | None:
        total = None
        for term in terms:
            value = term.weight * self._term(term, x)
            if not bool(torch.isfinite(value.detach())):
                why = (" (a Lyapunov exponent is -inf: a direction the layer annihilates "
                       "exactly, e.g. dead relu units, or +inf/NaN from an exploding "
                       "trajectory)") if term.kind == "flossing" else ""
                raise RegularizerError(f"the {term.kind} term became "
                                       f"{float(value.detach())} {when}{why}")
            total = value if total is None else total + value
        return total

    def loss(self, x: Tensor, batch: int, epoch: int) -> Tensor | None:
        """The weighted sum of the terms whose schedule includes training batch ``batch``
        (0-based over the whole training) of epoch ``epoch`` (0-based), on the batch's inputs
        ``x [B, T, I]``; None when none does.

        Raises:
            RegularizerError: a term is not finite.
            ValueError: flossing's ``warmup + window`` exceeds the sequence.
        """
        active = [t for t in self.terms if t.schedule.active(batch, epoch)]
        return self._weighted(active, x, f"at epoch {epoch + 1}")

    def before_loss(self, x: Tensor, step: int) -> Tensor | None:
        """The weighted sum of the terms still in their ``schedule.before`` steps at
        pre-training step ``step`` (0-based) on ``x [B, T, I]``; None when none is."""
        active = [t for t in self.terms if step < t.schedule.before]
        return self._weighted(active, x, f"at step {step + 1} before training")

