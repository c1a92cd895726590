"""One time series from several calls of the same module in one backward.

Models that step their RNN themselves call a fused module once per step (attention decoders,
recurrent RL policies), run it on chunks, or hand a cell's state through their own code between
steps. Each call's steps are analysed from what autograd delivered to that call's outputs —
exact in the model's dtype whatever the user's code did to the state — and the calls are laid
end to end in call order. Where the next call received the returned state itself or a view of
it, the calls are *joined*: the recursion continues across them in log space, so the norms stay
finite far below the dtype's range, as inside a single fused call.

Fused calls come in two kinds of stretches. Runs of one-step calls (a module stepped by the
user's loop) expose every layer's states and are analysed in one stacked pass
(:mod:`rnn_diag.probes.step_calls`). Other calls are analysed one by one with
:func:`rnn_diag.probes.fused.analyse`; a joined call hands the gradient it sends back into its
initial state (a :class:`~rnn_diag.probes.fused.Carry`) to the previous call's final state.
Cell calls are joined into chains while they run (:mod:`rnn_diag.probes.cell_chain`).

Batches that shrink or grow between calls are padded as packed sequences are: row i stays row i,
and rows a call did not have hold 0 (log10 norm -inf) and are not ``valid``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..dynamics.lognorm import log_norm
from ..modules.layers import output_size
from .cell_chain import rounding_level
from .fused import Carry, FusedCall, analyse
from .links import SAME, TRANSFORM, VIEW
from .options import RecordOptions
from .result import LayerResult, ScaledSeries
from .step_calls import analyse_step_calls, eligible


def joins(call: FusedCall) -> bool:
    """Whether ``call`` continues the previous call's recursion (its initial state is the
    returned one, or a view of it). The reverse direction of a bidirectional module runs
    against call order, so its calls are never joined."""
    return call.link in (SAME, VIEW) and not call.module.bidirectional


def analyse_fused_calls(
    calls: list[FusedCall], options: RecordOptions, workspace=None
) -> list[dict[tuple[int, int], LayerResult]]:
    """Results of consecutive stretches of ``calls`` (see the module docstring), in call order;
    laid end to end they cover every step of every call.

    Runs of one-step calls with the same batch (a module stepped by the user's loop) are
    analysed together by :func:`rnn_diag.probes.step_calls.analyse_step_calls`; other calls
    one by one, joined through :class:`Carry` where the next call received the returned state.

    Args:
        calls: the calls of one module in this backward, in call order; each carries ``grads``
            (``(grad_output, grad_h_n, grad_c_n)`` or None when no gradient reached it).
        options, workspace: as for :func:`rnn_diag.probes.fused.analyse`.
    """
    groups = _groups(calls)
    parts: list[dict | None] = [None] * len(groups)
    carry: dict[int, Carry] | None = None
    for g in range(len(groups) - 1, -1, -1):
        group = groups[g]
        after = groups[g + 1][0] if g + 1 < len(groups) else None
        joined_before = g > 0 and joins(group[0])
        if len(group) > 1 or eligible(group[0]):
            results, initial = analyse_step_calls(
                group, options, workspace,
                next_link=None if after is None else after.link, carry=carry,
                next_via_output=after is not None and after.via_output,
                want_initial=joined_before,
            )
        else:
            call = group[0]
            grad_out, grad_h, grad_c = _three(call.grads)
            if carry is not None:
                grad_h, grad_c = _direct_parts(call, grad_h, grad_c, carry)
            results, initial = analyse(call, grad_out, grad_h, grad_c, options, workspace,
                                       carry=carry, want_initial=joined_before)
            if after is not None and carry is None and after.link in (SAME, VIEW, TRANSFORM):
                for result in results.values():  # h_n's gradient went on into later calls
                    mark_last_immediate_undefined(result)
        carry = initial if joined_before else None
        parts[g] = results
    return parts


def _groups(calls: list[FusedCall]) -> list[list[FusedCall]]:
    """Maximal runs of eligible one-step calls with the same batch; other calls alone."""
    groups: list[list[FusedCall]] = []
    for call in calls:
        if eligible(call) and groups and eligible(groups[-1][-1]) and _batch(call) == _batch(
                groups[-1][-1]):
            groups[-1].append(call)
        else:
            groups.append([call])
    return groups


def _batch(call: FusedCall) -> int:
    return call.time_major(call.output)[0].shape[1]


def _direct_parts(call: FusedCall, grad_h, grad_c, carry: dict[int, Carry]):
    """Split autograd's gradients on h_n (and c_n) into the direct part — the uses outside
    the next call's recurrence — by subtracting the carried recurrent part ρ (in float64).
    Vectors at rounding level are set to exactly 0."""
    H = output_size(call.module)
    parts = []
    for which, grad in enumerate((grad_h, grad_c)):
        if grad is None:
            parts.append(None)
            continue
        unbatched = grad.dim() == 2
        G = grad.unsqueeze(1) if unbatched else grad
        direct = torch.empty_like(G)
        for idx in range(G.shape[0]):
            rho = carry[idx]
            piece = rho.values[..., :H] if which == 0 else rho.values[..., H:]
            rho_norm = torch.exp(log_norm(piece) + rho.log_scale)
            g = G[idx].double()
            d = g - piece.double() * rho.log_scale.exp().unsqueeze(-1)
            level = rounding_level(G.dtype, rho.values.shape[-1],
                                   torch.linalg.vector_norm(g, dim=-1), rho_norm)
            keep = torch.linalg.vector_norm(d, dim=-1) > level
            direct[idx] = (d * keep.unsqueeze(-1)).to(G.dtype)
        parts.append(direct.squeeze(1) if unbatched else direct)
    return parts[0], parts[1]


def _three(grads) -> tuple:
    if grads is None:
        return (None, None, None)
    return tuple(grads) + (None,) * (3 - len(grads))


def mark_last_immediate_undefined(result: LayerResult) -> None:
    """NaN for the immediate gradient at each sample's last processed step: the gradient there
    went on through the user's transform of the state into later calls, so the split into a
    direct and a recurrent part is not defined."""
    T, B = next(iter(result.immediate.values())).log_norm.shape
    # In processing order each sample's last step is at its length - 1, in both directions.
    if result.valid is None:
        last = torch.full((B,), T - 1, dtype=torch.long)
    else:
        last = result.valid.long().sum(0).cpu() - 1
    rows = torch.arange(B)
    keep = last >= 0
    rows, last = rows[keep], last[keep]
    for name, series in result.immediate.items():
        scaled = series.scaled.clone()
        ln = series.log_norm.clone()
        scaled[last.to(scaled.device), rows.to(scaled.device)] = float("nan")
        ln[last.to(ln.device), rows.to(ln.device)] = float("nan")
        result.immediate[name] = ScaledSeries(scaled, series.log_scale, ln)


def concat(parts: list[LayerResult]) -> LayerResult:
    """Lay the results of consecutive calls end to end (input time order, rows padded to the
    largest batch). The Jacobian-product norms are kept for the steps of the last part only
    (NaN before it); ``relinearise`` is dropped."""
    if len(parts) == 1:
        return parts[0]
    B = max(p.total[next(iter(p.total))].scaled.shape[1] for p in parts)
    states = list(parts[0].total)
    total = {s: _cat([_series(p, p.total[s]) for p in parts], B) for s in states}
    immediate = {s: _cat([_series(p, p.immediate[s]) for p in parts], B) for s in states}
    valid = torch.cat([_pad_rows(_valid(p), B, False) for p in parts])
    saturation = {}
    for gate in parts[0].saturation:
        if all(gate in p.saturation for p in parts):
            saturation[gate] = torch.cat(
                [_pad_rows(p.in_input_order(p.saturation[gate]), B, 0) for p in parts]
            )
    result = LayerResult(total, immediate, None, valid, parts[0].dtype, saturation,
                         state_view=parts[0].state_view)
    result.faint = _cat_masks(parts, "faint", B)
    result.trusted = _cat_masks(parts, "trusted", B)
    last = parts[-1]
    if last.jacobian is not None:
        steps = sum(_length(p) for p in parts[:-1])
        head = torch.full((steps, last.jacobian.shape[1]), float("nan"), dtype=torch.float64,
                          device=last.jacobian.device)
        result.jacobian = torch.cat([head, last.in_input_order(last.jacobian)])
    return result


def _cat_masks(parts: list[LayerResult], field: str, B: int) -> Tensor | None:
    """A ``[T, B]`` bool field of every part, in input order, end to end (False where absent)."""
    if all(getattr(p, field) is None for p in parts):
        return None
    masks = []
    for p in parts:
        mask = getattr(p, field)
        mask = torch.zeros_like(_valid(p)) if mask is None else p.in_input_order(mask)
        masks.append(_pad_rows(mask, B, False))
    return torch.cat(masks)


def _length(p: LayerResult) -> int:
    return next(iter(p.total.values())).scaled.shape[0]


def _valid(p: LayerResult) -> Tensor:
    series = next(iter(p.total.values()))
    if p.valid is not None:
        return p.valid
    return torch.ones(series.log_norm.shape, dtype=torch.bool, device=series.log_norm.device)


def _series(p: LayerResult, s: ScaledSeries) -> ScaledSeries:
    return ScaledSeries(
        p.in_input_order(s.scaled), p.in_input_order(s.log_scale), p.in_input_order(s.log_norm)
    )


def _cat(series: list[ScaledSeries], B: int) -> ScaledSeries:
    return ScaledSeries(
        torch.cat([_pad_rows(s.scaled, B, 0) for s in series]),
        torch.cat([_pad_rows(s.log_scale, B, 0) for s in series]),
        torch.cat([_pad_rows(s.log_norm, B, -math.inf) for s in series]),
    )


def _pad_rows(x: Tensor, B: int, value) -> Tensor:
    """Pad dimension 1 (the batch) of ``x`` to ``B`` rows with ``value``."""
    if x.shape[1] == B:
        return x
    pad = x.new_full((x.shape[0], B - x.shape[1], *x.shape[2:]), value)
    return torch.cat([x, pad], dim=1)

