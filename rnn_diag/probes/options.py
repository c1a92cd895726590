"""What a probe records beyond the gradients themselves: one value passed through the analysis."""

from __future__ import annotations

from dataclasses import dataclass

from .jacobians import check_method

#: ``attach(jacobian_samples="auto")`` (the default): the Jacobian-product norms are computed on
#: the first this many samples of a larger batch, with a ProbeWarning. Chosen so that
#: ``jacobians="estimate"`` costs under 0.2x a training step at B = 400, T = 1000 (measured by
#: ``benchmarks/jacobian_estimate.py``; docs/design.md §22).
AUTO_JACOBIAN_SAMPLES = 8


@dataclass(frozen=True)
class RecordOptions:
    """The recording options of :func:`rnn_diag.attach`.

    Attributes:
        saturation: also record, per gate and step, the fraction of saturated units.
        jacobians: None, "exact" or "estimate": also record log10 ‖∂s_last/∂s_k‖₂ of each
            layer's own recurrence.
        jacobian_samples: compute those norms for the first N samples only (None: all;
            "auto": :data:`AUTO_JACOBIAN_SAMPLES`, and the probe warns when that leaves samples
            out).
    """

    saturation: bool = False
    jacobians: str | None = None
    jacobian_samples: int | str | None = "auto"

    def __post_init__(self):
        check_method(self.jacobians)
        n = self.jacobian_samples
        if n == "auto":
            return
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(
                f"jacobian_samples must be 'auto', None or a positive int, got {n!r}")

    @property
    def auto_samples(self) -> bool:
        """Whether the sample count is the default ("auto"), not the user's choice."""
        return self.jacobian_samples == "auto"

    def samples(self, batch: int) -> int:
        """How many of ``batch`` samples get Jacobian-product norms."""
        n = AUTO_JACOBIAN_SAMPLES if self.auto_samples else self.jacobian_samples
        return batch if n is None else min(batch, n)
