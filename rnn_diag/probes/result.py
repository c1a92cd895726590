"""What one recorded backward leaves behind for one layer and direction of one module."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..dynamics.lognorm import LN10, log_norm, scale_by_exp

#: Metrics stored per (iteration, module, layer, direction, state, t) in ``Probe.frame()``.
METRICS = (
    "total_mean",
    "total_min",
    "total_max",
    "immediate_mean",
    "immediate_min",
    "immediate_max",
    "nonfinite_fraction",
    "underflow_fraction",
)


@dataclass
class ScaledSeries:
    """A gradient series stored as ``scaled * exp(log_scale)`` in *processing* order.

    Attributes:
        scaled: ``[T, B, H]`` in the model's dtype.
        log_scale: ``[T, B]`` float64 natural-log scale.
        log_norm: ``[T, B]`` float64 ``ln ‖·‖₂`` of the true vectors.
    """

    scaled: Tensor
    log_scale: Tensor
    log_norm: Tensor

    @staticmethod
    def from_values(values: Tensor) -> ScaledSeries:
        """Wrap plain (unscaled) vectors ``[T, B, H]``."""
        zeros = torch.zeros(values.shape[:2], dtype=torch.float64, device=values.device)
        return ScaledSeries(values, zeros, log_norm(values))


@dataclass
class LayerResult:
    """Total and immediate gradients of one layer/direction, for one backward.

    ``order`` maps processing order back to input time order: ``None`` when they coincide,
    otherwise a ``[T, B]`` index (the reverse direction, per sample when lengths differ).
    ``valid`` is a ``[T, B]`` bool mask of the steps inside each sample's length.
    ``saturation`` maps each nonlinearity of the cell (h for an Elman RNN; r, z, n for GRU;
    i, f, g, o, c for LSTM) to the ``[T, B]`` fraction of saturated units, processing order.
    ``jacobian``: ``[T, N]`` float64 log10 ‖∂s_last/∂s_k‖₂ (processing order) of the first
    N ≤ B samples, when recorded; ``relinearise()`` rebuilds the linearisation of those samples
    for other targets.
    ``faint``: ``[T, B]`` bool (processing order), where autograd delivered a non-zero gradient
    from outside the recurrence below :func:`faint_level` (see :meth:`settle_underflow`);
    ``underflow``: ``[T, B]`` bool, the totals that rule set to -inf.
    ``trusted``: ``[T, B]`` bool where autograd's own total at t is known (hooks on the states)
    and above the rounding floor, so the total stands as autograd holds it; None: unknown.
    ``state_view``: maps the stored real rows ``[T, B, S]`` to the state's own form for
    :meth:`values` (a diagonal scan's complex ``[T, B, N]`` or ``[T, B, D, N]`` state); None:
    the rows are the state.
    """

    total: dict[str, ScaledSeries]
    immediate: dict[str, ScaledSeries]
    order: Tensor | None
    valid: Tensor | None
    dtype: torch.dtype
    saturation: dict[str, Tensor] = field(default_factory=dict)
    jacobian: Tensor | None = None
    relinearise: Callable[[], object] | None = None
    faint: Tensor | None = None
    underflow: Tensor | None = None
    trusted: Tensor | None = None
    state_view: Callable[[Tensor], Tensor] | None = None

    def settle_underflow(self) -> None:
        """Never a false finite total: where autograd delivered a gradient from outside the
        recurrence that was non-zero but faint (below :func:`faint_level`), later-processed
        steps' contributions of that kind may already have underflowed to 0 in the model's
        dtype, and a total at that step or before it that is itself below the level could be
        missing them. Those totals are set to -inf (as autograd's own value would be) and
        marked in ``underflow``. A total above the level is kept: a missing part is below the
        level where it enters and shrinks or grows with the recursion like the rest; so is a
        total that is autograd's own, ``trusted`` value."""
        if self.faint is None or not bool(self.faint.any()):
            return
        # steps at or before (in processing order) a faint delivery
        reach = self.faint.flip(0).cummax(0).values.flip(0)
        level = math.log(faint_level(self.dtype))
        under = torch.zeros_like(reach)
        for name, series in self.total.items():
            low = reach & (series.log_norm < level)
            if self.trusted is not None:
                low &= ~self.trusted
            under |= low
            if bool(low.any()):
                scaled = torch.where(low.unsqueeze(-1), torch.zeros_like(series.scaled),
                                     series.scaled)
                log_norm_ = torch.where(low, torch.full_like(series.log_norm, -math.inf),
                                        series.log_norm)
                self.total[name] = ScaledSeries(scaled, series.log_scale, log_norm_)
        self.underflow = under

    def _to_input_order(self, x: Tensor) -> Tensor:
        """Processing → input time order; ``x`` may cover only the first columns (samples)."""
        if self.order is None:
            return x
        order = self.order[:, : x.shape[1]]
        index = order if x.dim() == 2 else order.unsqueeze(-1).expand_as(x)
        return torch.gather(x, 0, index)

    def values(self, which: str, state: str) -> Tensor:
        """``[T, B, H]`` gradient in input time order, in the model's dtype."""
        series = self._series(which, state)
        out = self._to_input_order(scale_by_exp(series.scaled, series.log_scale, self.dtype))
        return out if self.state_view is None else self.state_view(out)

    def in_input_order(self, x: Tensor) -> Tensor:
        """A processing-order ``[T, B]`` or ``[T, B, H]`` tensor in input time order."""
        return self._to_input_order(x)

    def log10_norms(self, which: str, state: str) -> Tensor:
        """``[T, B]`` float64 log10 of the per-sample L2 norms, input time order."""
        return self._to_input_order(self._series(which, state).log_norm / LN10)

    def _series(self, which: str, state: str) -> ScaledSeries:
        table = self.total if which == "total" else self.immediate
        if state not in table:
            raise ValueError(f"state={state!r} is not recorded here; choose from {sorted(table)}")
        return table[state]

    def summary(self) -> dict[str, dict[str, np.ndarray]]:
        """Per state, each metric of :data:`METRICS` as a float64 array over t (input order);
        state "h" also carries ``saturation_<gate>`` (batch mean of the saturated fraction).

        Aggregates run over the samples valid at t; a t with no valid sample gives NaN.
        """
        out = {}
        for state in self.total:
            rows = []
            for which in ("total", "immediate"):
                logs = self.log10_norms(which, state)
                rows.extend(_batch_stats(logs, self.valid))
            total = self.log10_norms("total", state)
            nonfinite = torch.isnan(total) | torch.isposinf(total)
            rows.append(_masked_mean(nonfinite.double(), self.valid))
            under = (torch.zeros_like(total, dtype=torch.bool) if self.underflow is None
                     else self._to_input_order(self.underflow))
            rows.append(_masked_mean(under.double(), self.valid))
            names = list(METRICS)
            if state == "h" and self.jacobian is not None:
                names += ["jacobian_mean", "jacobian_min", "jacobian_max"]
                n = self.jacobian.shape[1]  # the first n samples (attach(jacobian_samples=))
                valid = None if self.valid is None else self.valid[:, :n]
                rows.extend(_batch_stats(self._to_input_order(self.jacobian), valid))
            if state == "h":
                for gate, fraction in self.saturation.items():
                    names.append(f"saturation_{gate}")
                    rows.append(_masked_mean(self._to_input_order(fraction.double()), self.valid))
            stacked = torch.stack(rows).cpu().numpy()
            out[state] = dict(zip(names, stacked, strict=True))
        return out


def faint_level(dtype: torch.dtype) -> float:
    """The gradient norm below which a value delivered by autograd in ``dtype`` is near its
    underflow: ``tiny / eps`` (about 1e-31 in float32, 1e-292 in float64), where the next
    factors of a decaying gradient leave the normal range within one mantissa's length."""
    info = torch.finfo(dtype)
    return info.tiny / info.eps


def faint(vectors: Tensor, dtype: torch.dtype) -> Tensor:
    """``[...]`` bool: which vectors ``[..., S]`` are non-zero with a norm below
    :func:`faint_level`."""
    norm = log_norm(vectors)
    return (norm > -math.inf) & (norm < math.log(faint_level(dtype)))


def _batch_stats(logs: Tensor, valid: Tensor | None) -> list[Tensor]:
    """Mean, min and max over the batch of ``[T, B]`` log norms, valid samples only."""
    if valid is None:
        return [logs.mean(1), logs.amin(1), logs.amax(1)]
    nan = torch.tensor(float("nan"), dtype=logs.dtype, device=logs.device)
    low = torch.where(valid, logs, torch.full_like(logs, float("inf"))).amin(1)
    high = torch.where(valid, logs, torch.full_like(logs, float("-inf"))).amax(1)
    any_valid = valid.any(1)
    return [
        _masked_mean(logs, valid),
        torch.where(any_valid, low, nan),
        torch.where(any_valid, high, nan),
    ]


def _masked_mean(x: Tensor, valid: Tensor | None) -> Tensor:
    if valid is None:
        return x.mean(1)
    count = valid.sum(1)
    # -inf entries outside the mask must not poison the sum: replace them before summing.
    total = torch.where(valid, x, torch.zeros_like(x)).sum(1)
    return total / count.clamp(min=1).to(x.dtype) + torch.where(
        count > 0, torch.zeros_like(total), torch.full_like(total, float("nan"))
    )
