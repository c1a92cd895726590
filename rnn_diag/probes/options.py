"""What a probe records beyond the gradients themselves: one value passed through the analysis."""

from __future__ import annotations

from dataclasses import dataclass

from .jacobians import check_method


@dataclass(frozen=True)
class RecordOptions:
    """The recording options of :func:`rnn_diag.attach`.

    Attributes:
        saturation: also record, per gate and step, the fraction of saturated units.
        jacobians: None, "exact" or "estimate": also record log10 ‖∂s_last/∂s_k‖₂ of each
            layer's own recurrence.
        jacobian_samples: compute those norms for the first N samples only (None: all).
    """

    saturation: bool = False
    jacobians: str | None = None
    jacobian_samples: int | None = None

    def __post_init__(self):
        check_method(self.jacobians)
        n = self.jacobian_samples
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"jacobian_samples must be None or a positive int, got {n!r}")

    def samples(self, batch: int) -> int:
        """How many of ``batch`` samples get Jacobian-product norms."""
        return batch if self.jacobian_samples is None else min(batch, self.jacobian_samples)
