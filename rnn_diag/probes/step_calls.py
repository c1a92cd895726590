"""A fused module called once per step (attention decoders, recurrent RL policies), analysed in one
pass over all its calls.

Each call runs one step of every layer, so its trajectory is fully visible without recomputation:
layer l's state before the step is ``hx[l]``, after it ``h_n[l]`` (and ``c_n[l]``), and its input
is the layer below's ``h_n[l-1]``. The calls are stacked into ``[T, B, ·]`` trajectories and each
layer is linearised once, with the state each call *received* as h_{t-1} (and c_{t-1}), whatever
the user's code did to it in between.

Gradients. Autograd delivers to call t's outputs the immediate gradient ``grad_output`` and, on
``h_n``/``c_n``, ``G_t``: everything that reached the final state, including what later calls'
recurrence sent back through the user's hand-over. So λ_t = (gradient from the layer above, or
``grad_output``) + G_t exactly, in the dtype. Where call t+1 received the returned state itself or
a view of it (a *joined* link), the direct part is recovered as d_t = G_t − J_{t+1}ᵀ λ_{t+1} and
the recursion runs in log space across the link, beyond the dtype's range. Elsewhere the
recursion restarts at the link with λ_t as autograd gave it; the immediate gradient there is NaN
after a transformed state (a mask, a slice: the split is undefined) and G_t after a detached or
fresh one (no path through later calls).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..dynamics.adjoint import adjoint_scan
from ..dynamics.cells import linearise
from ..dynamics.lognorm import add_scaled, log_norm
from ..modules.layers import layer_weights, output_size
from .cell_chain import rounding_floor, rounding_level
from .fused import Carry, FusedCall, add_scaled_at_last_step
from .jacobians import product_log10_norms
from .links import SAME, TRANSFORM, VIEW
from .options import RecordOptions
from .result import LayerResult, ScaledSeries, faint


def eligible(call: FusedCall) -> bool:
    """Whether a call can be analysed in a stacked run: one step, unidirectional, not packed,
    no dropout to replay."""
    if call.rng is not None or call.module.bidirectional:
        return False
    if not isinstance(call.input, Tensor):
        return False
    return call.time_major(call.output)[0].shape[0] == 1


def analyse_step_calls(
    calls: list[FusedCall],
    options: RecordOptions,
    workspace=None,
    next_link: str | None = None,
    next_via_output: bool = False,
    carry: dict[int, Carry] | None = None,
    want_initial: bool = False,
) -> tuple[dict[tuple[int, int], LayerResult], dict[int, Carry]]:
    """``{(layer, 0): LayerResult}`` over T = len(calls) steps, one per call, in call order.

    Args:
        calls: one-step calls of one module with the same batch (see :func:`eligible`), in
            call order, each with ``grads`` (None when no gradient reached it) and ``link`` (how
            its initial state relates to the previous call's final state).
        options, workspace: as for :func:`rnn_diag.probes.fused.analyse`; the
            Jacobian-product norms cover the calls after the last non-joined hand-over (NaN
            before it: products do not cross the user's code).
        next_link, next_via_output: the link of the call after the last one, when that call
            is analysed separately (None: there is none), and whether its h was this call's
            output.
        carry, want_initial: as for :func:`rnn_diag.probes.fused.analyse`: the gradient the
            next call sends into the last call's final state, in log space (then the last
            step's direct part is recovered too), and whether to return the gradient the first
            call sends into its initial state.

    Returns:
        ``({(layer, 0): LayerResult}, {layer: Carry})``, the second empty unless want_initial.
    """
    m = calls[0].module
    L, H, Hc = m.num_layers, output_size(m), m.hidden_size
    lstm = isinstance(m, nn.LSTM)
    T = len(calls)
    first_out = calls[0].time_major(calls[0].output)[0]
    B, dtype, device = first_out.shape[1], first_out.dtype, first_out.device
    joined = [False] + [c.link in (SAME, VIEW) for c in calls[1:]]  # step t reads step t-1
    starts = [t for t in range(1, T) if not joined[t]]

    x0 = torch.cat([c.time_major(c.input)[0] for c in calls])
    received = [c.initial_states(B, dtype, device) for c in calls]
    h_prev = torch.stack([r[0] for r in received])  # [T, L, B, H]
    c_prev = torch.stack([r[1] for r in received]) if lstm else None
    h_out = torch.stack([_batched(c.finals[0], c) for c in calls])
    g_out = torch.cat([_grad_output(c, B, H, dtype, device) for c in calls])  # [T, B, H]
    G_h = torch.stack([_grad_final(c, 1, L, B, H, dtype, device) for c in calls])
    G_c = torch.stack([_grad_final(c, 2, L, B, Hc, dtype, device) for c in calls]) if lstm else None
    after = [calls[t + 1].link if t + 1 < T else None for t in range(T)]
    undefined = [link == TRANSFORM for link in after]
    undefined[-1] = next_link == TRANSFORM or (next_link in (SAME, VIEW) and carry is None)
    undefined = torch.tensor(undefined, device=device)
    # Steps whose direct part is recovered: the next step reads them, or a carry comes in.
    recovered = torch.tensor(joined[1:] + [carry is not None], device=device)
    last = torch.full((B,), T - 1, device=device)
    initial: dict[int, Carry] = {}

    # Where the next call received this call's output as h (a one-layer module), the recursion's
    # gradient reached the output, not h_n: count it with G, so that it is split off there.
    via = torch.tensor([c.via_output for c in calls[1:]] + [next_via_output], device=device)
    if bool(via.any()):
        G_h = G_h + torch.where(via.view(-1, 1, 1, 1), g_out.unsqueeze(1), 0.0)
        g_out = torch.where(via.view(-1, 1, 1), 0.0, g_out)

    results = {}
    faint_in = faint(g_out, dtype)  # [T, B]: faint deliveries, from every layer (below)
    above, above_scale = g_out, None  # the gradient reaching the layer's outputs
    for layer in range(L - 1, -1, -1):
        x = x0 if layer == 0 else h_out[:, layer - 1]
        w = layer_weights(m, layer, 0)
        hp, h = h_prev[:, layer], h_out[:, layer]
        cp = c_prev[:, layer] if lstm else None
        steps = linearise(w, x, hp, h, cp, workspace, options.saturation)
        G = G_h[:, layer] if not lstm else torch.cat([G_h[:, layer], G_c[:, layer]], -1)
        above_plain = above.double() if above_scale is None else (
            above.double() * above_scale.exp().unsqueeze(-1))
        pad = [torch.zeros(T, B, Hc, dtype=torch.float64, device=device)] if lstm else []
        lam = torch.cat([above_plain, *pad], -1) + G.double()  # λ as autograd holds it
        recurrent = torch.zeros_like(lam)
        recurrent[:-1] = steps.vjp_all(lam.to(dtype))[1:].double()
        if carry is not None:
            rho = carry[layer]
            recurrent[-1] = rho.values.double() * rho.log_scale.exp().unsqueeze(-1)
        recurrent *= recovered.view(-1, 1, 1)
        direct = G.double() - recurrent
        level = rounding_level(dtype, G.shape[-1], torch.linalg.vector_norm(G.double(), dim=-1),
                               torch.linalg.vector_norm(recurrent, dim=-1))
        direct = direct * (torch.linalg.vector_norm(direct, dim=-1) > level).unsqueeze(-1)
        direct = direct.to(dtype)
        faint_in |= faint(direct, dtype)

        # The scan's input: what reaches the layer from above (scaled) plus the direct part.
        g_h, g_scale = _add_plain(above, above_scale, direct[..., :H])
        g_state = g_h if not lstm else torch.cat([g_h, _scaled_like(direct[..., H:], g_scale)],
                                                 -1)
        if carry is not None:
            g_state, g_scale = add_scaled_at_last_step(g_state, g_scale, carry[layer], last)
        zero_scale = torch.zeros(T, B, dtype=torch.float64, device=device)
        scale = zero_scale if g_scale is None else g_scale
        adj = adjoint_scan(steps, g_state, g_scale, log_norm(g_state) + scale, starts=starts)
        if want_initial:
            into = torch.empty_like(adj.scaled[0])
            steps.vjp_into(0, adj.scaled[0], None, into)
            initial[layer] = Carry(into, adj.log_scale[0].clone())

        # Reported immediate: the direct part after a joined link, G after a detached or fresh
        # one (all of it is direct), NaN after a transformed one.
        shown = torch.where(recovered.view(-1, 1, 1), direct, G.to(dtype))
        imm_h, imm_scale = _add_plain(above, above_scale, shown[..., :H])
        immediate = {"h": _series(imm_h, imm_scale, zero_scale, undefined)}
        if lstm:
            immediate["c"] = _series(shown[..., H:], None, zero_scale, undefined)
        if lstm:
            h_part, c_part = adj.scaled[..., :H], steps.cell_grads(adj.scaled)
            total = {
                "h": ScaledSeries(h_part, adj.log_scale, log_norm(h_part) + adj.log_scale),
                "c": ScaledSeries(c_part, adj.log_scale, log_norm(c_part) + adj.log_scale),
            }
        else:
            total = {"h": ScaledSeries(adj.scaled, adj.log_scale, adj.log_norm)}
        result = LayerResult(total, immediate, None, None, dtype, dict(steps.saturation))
        if layer == L - 1:  # λ = grad_output + G is autograd's own total at every step
            result.trusted = log_norm(lam) >= math.log(rounding_floor(dtype, lam.shape[-1]))
        if options.jacobians is not None:
            result.jacobian = _jacobian(w, x, hp, h, cp, starts, options)
        results[(layer, 0)] = result
        if layer > 0:
            above, above_scale = steps.input_grads(adj.scaled), adj.log_scale
    for result in results.values():
        result.faint = faint_in
    return results, initial


def _jacobian(w, x, h_prev, h, c_prev, starts, options: RecordOptions) -> Tensor:
    """log10 ‖∂s_T/∂s_k‖₂ over the calls after the last restart, NaN before it."""
    T, B = h.shape[:2]
    n = options.samples(B)
    first = starts[-1] if starts else 0
    cut = slice(first, T)
    sub = linearise(w, x[cut, :n], h_prev[cut, :n], h[cut, :n],
                     None if c_prev is None else c_prev[cut, :n], None, False)
    norms = product_log10_norms(sub, options.jacobians, T - first, None)
    head = torch.full((first, n), math.nan, dtype=torch.float64, device=norms.device)
    return torch.cat([head, norms])


def _batched(t: Tensor, call: FusedCall) -> Tensor:
    return t.unsqueeze(1) if call.unbatched else t


def _grad_output(call: FusedCall, B, H, dtype, device) -> Tensor:
    grad = None if call.grads is None else call.grads[0]
    if grad is None:
        return torch.zeros(1, B, H, dtype=dtype, device=device)
    return call.grad_time_major(grad)


def _grad_final(call: FusedCall, i: int, L, B, size, dtype, device) -> Tensor:
    grads = call.grads or ()
    grad = grads[i] if i < len(grads) else None
    if grad is None:
        return torch.zeros(L, B, size, dtype=dtype, device=device)
    return _batched(grad, call)


def _add_plain(values: Tensor, scale: Tensor | None, plain: Tensor):
    """``values * exp(scale) + plain`` in scaled form (scale None: plain values)."""
    if scale is None:
        return values + plain, None
    return add_scaled(values, scale, plain, torch.zeros_like(scale))


def _scaled_like(plain: Tensor, scale: Tensor | None) -> Tensor:
    """``plain`` expressed in the units of ``scale`` (plain when scale is None)."""
    if scale is None:
        return plain
    return plain * (-scale).exp().to(plain.dtype).unsqueeze(-1)


def _series(values: Tensor, scale: Tensor | None, zero_scale: Tensor, undefined: Tensor):
    scale = zero_scale if scale is None else scale
    ln = log_norm(values) + scale
    nan = torch.tensor(math.nan, dtype=values.dtype, device=values.device)
    values = torch.where(undefined.view(-1, 1, 1), nan, values)
    ln = torch.where(undefined.view(-1, 1), torch.tensor(math.nan, dtype=ln.dtype,
                                                          device=ln.device), ln)
    return ScaledSeries(values, scale, ln)
