"""Total gradients for PyTorch's fused recurrent modules (nn.RNN, nn.GRU, nn.LSTM).

The user's forward runs untouched. A forward hook keeps references to the input, the initial
state and the output; a multi-gradient hook on (output, h_n[, c_n]) receives the immediate
gradients. After backward, :func:`analyse` recomputes what the fused kernel does not expose (the
lower layers' outputs, gate activations, LSTM cell states — all without grad, from the same
weights) and runs the log-space adjoint recursion layer by layer, from the top layer down.

Inter-layer dropout in training mode is replayed: the forward pre-hook saves the RNG state, the
lower layers are recomputed with the same dropout masks drawn from that state (inside
``fork_rng``, so the user's stream is untouched), and the recomputed top layer is checked against
the module's actual output before anything is recorded (:class:`ReplayMismatch` otherwise, e.g.
cuDNN, which keeps its own dropout state).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..dynamics.adjoint import adjoint_scan
from ..dynamics.cells import CellWeights, linearise
from ..dynamics.lognorm import add_scaled, log_norm
from ..dynamics.steps.callable import ReplayRNG
from ..dynamics.workspace import Workspace
from ..modules.layers import (
    layer_weights,
    output_size,
    run_layer,
)
from .jacobians import product_log10_norms
from .options import RecordOptions
from .result import LayerResult, ScaledSeries, faint


class ReplayMismatch(RuntimeError):
    """The recomputed top layer differs from the module's output: the lower layers (their
    dropout masks) could not be reproduced, so nothing is recorded for this call."""


def replays_dropout(module: nn.RNNBase) -> bool:
    """Whether a forward of ``module`` now draws inter-layer dropout masks."""
    return module.training and module.dropout > 0 and module.num_layers > 1


def save_rng_state(inp) -> tuple[torch.device, Tensor]:
    """``(device, state)`` of the generator a module computing on ``inp`` (a tensor or a
    PackedSequence) draws its dropout from; no draw is made."""
    data = inp.data if isinstance(inp, PackedSequence) else inp
    device = data.device
    if device.type == "cuda":
        return device, torch.cuda.get_rng_state(device)
    return device, torch.get_rng_state()


@dataclass
class FusedCall:
    """What a forward hook captured from one call of a fused module (references, no copies)."""

    module: nn.RNNBase
    shadows: list[nn.RNNBase]
    input: Tensor | PackedSequence
    hx: Tensor | tuple[Tensor, Tensor] | None
    output: Tensor | PackedSequence
    #: ``(device, state)`` of the generator before the call, when dropout is replayed.
    rng: tuple[torch.device, Tensor] | None = None
    #: Order among all recorded calls, and how its initial state relates to the previous
    #: call's returned one (see :mod:`rnn_diag.probes.links`).
    seq: int = -1
    link: str = "fresh"
    #: Whether its h came as the previous call's ``output`` rather than its h_n.
    via_output: bool = False
    #: ``_version`` of the referenced tensors at the call (an in-place change loses them).
    versions: tuple[int, ...] = ()
    #: ``(grad_output, grad_h_n[, grad_c_n])`` of the current backward, None until reached.
    grads: tuple | None = None
    #: The returned final states ``(h_n[, c_n])``, as returned (references).
    finals: tuple = ()

    @property
    def unbatched(self) -> bool:
        return not isinstance(self.input, PackedSequence) and self.input.dim() == 2

    def time_major(self, x: Tensor | PackedSequence) -> tuple[Tensor, Tensor | None]:
        """``[T, B, F]`` padded view of an input/output in the original batch order, and the
        lengths (None unless packed)."""
        if isinstance(x, PackedSequence):
            padded, lengths = pad_packed_sequence(x)
            return padded, lengths.to(padded.device)
        if self.unbatched:
            return x.unsqueeze(1), None
        return (x.transpose(0, 1) if self.module.batch_first else x), None

    def grad_time_major(self, grad: Tensor) -> Tensor:
        """The gradient of the output tensor (packed data or plain) in ``[T, B, F]`` layout."""
        out = self.output
        if isinstance(out, PackedSequence):
            grad = PackedSequence(grad, out.batch_sizes, out.sorted_indices, out.unsorted_indices)
        return self.time_major(grad)[0]

    def initial_states(self, B: int, dtype, device) -> tuple[Tensor, Tensor | None]:
        """h0 and c0 (None unless LSTM) as ``[L*D, B, H]``; zeros when not given."""
        m = self.module
        rows = m.num_layers * (2 if m.bidirectional else 1)
        hx = self.hx
        h0, c0 = (hx if isinstance(hx, tuple) else (hx, None)) if hx is not None else (None, None)
        if h0 is not None and self.unbatched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
        if h0 is None:
            h0 = torch.zeros(rows, B, output_size(m), dtype=dtype, device=device)
        if isinstance(m, nn.LSTM) and c0 is None:
            c0 = torch.zeros(rows, B, m.hidden_size, dtype=dtype, device=device)
        return h0, c0

    def lower_layers(self) -> tuple[list[Tensor], list[Tensor], list[Tensor | None]]:
        """Recompute layers 0..L-2 with the module's weights (and its dropout masks).

        Returns:
            ``(outputs, inputs, masks)``: the outputs of layers 0..L-2 and the inputs of layers
            0..L-1, all time-major ``[T, B, F]``; ``masks[l]`` is the scaled dropout mask
            (0 or 1/(1-p)) applied between layer l and l+1, ``[T, B, D*H]``, or None.

        Raises:
            ReplayMismatch: with dropout, when the recomputed top layer differs from the output.
        """
        m = self.module
        p = m.dropout if self.rng is not None else 0.0
        outputs, masks, inputs = [], [], [self.time_major(self.input)[0]]
        with ReplayRNG(*self.rng) if p else nullcontext():
            inp = self.input
            for layer in range(m.num_layers - 1 if not p else m.num_layers):
                out, _ = run_layer(m, self.shadows[layer], layer, inp, self.hx)
                if layer == m.num_layers - 1:  # the replay check
                    self._check_replay(out)
                    break
                outputs.append(self.time_major(out)[0])
                inp, mask = self._dropout(out, p)
                masks.append(mask)
                inputs.append(self.time_major(inp)[0])
        return outputs, inputs, masks

    def _dropout(self, out, p: float):
        """``(dropped output in the module's layout, time-major mask or None)``, drawing the
        noise as ATen's CPU dropout does (``empty_like(x).bernoulli_(1 - p).div_(1 - p)`` on the
        time-major layer output, or on the packed data)."""
        if not p:
            return out, None
        if isinstance(out, PackedSequence):
            noise = torch.empty_like(out.data).bernoulli_(1 - p).div_(1 - p)
            dropped = PackedSequence(out.data * noise, out.batch_sizes, out.sorted_indices,
                                     out.unsorted_indices)
            mask = PackedSequence(noise, out.batch_sizes, out.sorted_indices, out.unsorted_indices)
            return dropped, self.time_major(mask)[0]
        tm = self.time_major(out)[0]
        noise = torch.empty_like(tm).bernoulli_(1 - p).div_(1 - p)
        dropped = tm * noise
        if self.unbatched:
            return dropped.squeeze(1), noise
        return (dropped.transpose(0, 1) if self.module.batch_first else dropped), noise

    def _check_replay(self, top) -> None:
        got = top.data if isinstance(top, PackedSequence) else top
        want = self.output.data if isinstance(self.output, PackedSequence) else self.output
        if got.shape == want.shape and torch.equal(got, want):
            return
        scale = float(want.abs().amax()) if want.numel() else 0.0
        tol = 64 * torch.finfo(want.dtype).eps * max(scale, 1.0)
        if got.shape != want.shape or float((got - want).abs().amax()) > tol:
            raise ReplayMismatch(
                "the inter-layer dropout masks could not be reproduced from the saved RNG state "
                f"(on {want.device.type}"
                + (", where cuDNN keeps its own dropout state" if want.is_cuda else "")
                + "), so the lower layers' states are unknown"
            )


def _reverse_order(T: int, B: int, lengths: Tensor | None, device) -> Tensor:
    """``[T, B]`` index mapping processing order of the reverse direction to input order
    (an involution): step j of sample b is input time len_b - 1 - j; padding stays put."""
    j = torch.arange(T, device=device).unsqueeze(1).expand(T, B)
    if lengths is None:
        return (T - 1 - j).contiguous()
    last = (lengths - 1).unsqueeze(0)
    return torch.where(j <= last, last - j, j)


def _gather_time(x: Tensor, order: Tensor | None) -> Tensor:
    if order is None:
        return x
    index = order if x.dim() == 2 else order.unsqueeze(-1).expand_as(x)
    return torch.gather(x, 0, index)


@dataclass
class Carry:
    """A gradient in scaled form, ``values * exp(log_scale)``: ``values [B, S]`` in the model's
    dtype, ``log_scale [B]`` float64 natural log. S is the adjoint state's size (H, or the
    ``[h | c]`` pair for LSTM)."""

    values: Tensor
    log_scale: Tensor


def analyse(
    call: FusedCall,
    grad_output: Tensor | None,
    grad_h_n: Tensor | None,
    grad_c_n: Tensor | None,
    options: RecordOptions | None = None,
    workspace: Workspace | None = None,
    carry: dict[int, Carry] | None = None,
    want_initial: bool = False,
) -> tuple[dict[tuple[int, int], LayerResult], dict[int, Carry]]:
    """Total and immediate gradients of every layer and direction of one fused call.

    Layer by layer from the top: the immediate gradient of the layer (:func:`_immediate`), its
    log-space recursion and result (:func:`_layer_result`), and what it sends to the layer below
    (:func:`_hand_down`).

    Args:
        call: the captured forward.
        grad_output, grad_h_n, grad_c_n: immediate gradients on the module's outputs as
            autograd delivered them (None where the loss did not use that output).
        options: what to record besides the gradients (None: nothing).
        workspace: scratch buffers reused from one call to the next.
        carry: ``{layer * D + direction: Carry}``, gradient reaching each layer's final state
            through the recurrence of *later calls* (see :mod:`rnn_diag.probes.series`): added
            to the adjoint at each sample's last step, but not to the immediate gradient.
        want_initial: also return the gradient each layer sends into its initial state,
            J_0ᵀ λ_0 (the recurrence's part of ∂L/∂h0), in scaled form.

    Returns:
        ``({(layer, direction): LayerResult}, {layer * D + direction: Carry})``; the second
        dict is empty unless ``want_initial``.

    Raises:
        ReplayMismatch: inter-layer dropout that could not be replayed.
    """
    options = options or RecordOptions()
    c = _Trajectory.of(call)
    finals = (_batched_final(grad_h_n, call.unbatched), _batched_final(grad_c_n, call.unbatched))
    # The gradient reaching the current layer's outputs, [T, B, D*H] in input order: plain
    # for the top layer (scale None), scaled for the layers below.
    above = call.grad_time_major(grad_output) if grad_output is not None else None
    above_scale: Tensor | None = None
    faint_in = _faint_deliveries(above, *finals, c.last, c.T, c.B, c.dtype, c.device)
    results: dict[tuple[int, int], LayerResult] = {}
    initial: dict[int, Carry] = {}
    for layer in range(c.L - 1, -1, -1):
        below: tuple[Tensor, Tensor] | None = None
        for d in range(c.D):
            idx = layer * c.D + d
            g, g_scale, immediate = _immediate(c, layer, d, above, above_scale, finals,
                                               (carry or {}).get(idx))
            steps = linearise(c.weights(layer, d), c.x(layer, d), c.h_prev(layer, d),
                              c.h(layer, d), c.c0(layer, d), workspace, options.saturation)
            zero = torch.zeros(c.T, c.B, dtype=torch.float64, device=c.device)
            adj = adjoint_scan(steps, g, g_scale, log_norm(g) + _or(g_scale, zero))
            result = _layer_result(c, layer, d, steps, adj, immediate, options)
            result.faint = _gather_time(faint_in, c.orders[d])
            results[(layer, d)] = result
            if want_initial:
                into = torch.empty_like(adj.scaled[0])
                steps.vjp_into(0, adj.scaled[0], None, into)
                initial[idx] = Carry(into, adj.log_scale[0].clone())
            if layer > 0:
                below = _hand_down(below, steps, adj, c.orders[d])
        if layer > 0:
            above, above_scale = below
            if c.masks[layer - 1] is not None:  # ∂L/∂(output of the layer below), via dropout
                above = above * c.masks[layer - 1]
    return results, initial


@dataclass
class _Trajectory:
    """One fused call's trajectory, time-major, every layer recomputed: what the per-layer
    analysis reads. ``outputs[l]``/``inputs[l]`` ``[T, B, ·]`` in input order; ``orders[d]``
    maps processing to input order for direction d (None: the same); ``last`` ``[B]`` each
    sample's last step; ``valid`` ``[T, B]`` (None without packing)."""

    call: FusedCall
    L: int
    D: int
    H: int
    T: int
    B: int
    dtype: torch.dtype
    device: torch.device
    lstm: bool
    outputs: list[Tensor]
    inputs: list[Tensor]
    masks: list[Tensor | None]
    h0: Tensor
    c0s: Tensor | None
    lengths: Tensor | None
    last: Tensor
    valid: Tensor | None
    orders: list[Tensor | None]

    @staticmethod
    def of(call: FusedCall) -> _Trajectory:
        m = call.module
        L, D = m.num_layers, (2 if m.bidirectional else 1)
        x0, lengths = call.time_major(call.input)
        top, _ = call.time_major(call.output)
        T, B = top.shape[:2]
        dtype, device = top.dtype, top.device
        h0, c0 = call.initial_states(B, dtype, device)
        lower, inputs, masks = call.lower_layers() if L > 1 else ([], [x0], [])
        last = (lengths - 1) if lengths is not None else torch.full((B,), T - 1, device=device)
        valid = None
        if lengths is not None:
            valid = torch.arange(T, device=device).unsqueeze(1) < lengths.unsqueeze(0)
        orders = [None, _reverse_order(T, B, lengths, device)][:D]
        return _Trajectory(call, L, D, output_size(m), T, B, dtype, device,
                           isinstance(m, nn.LSTM), lower + [top], inputs, masks, h0, c0,
                           lengths, last, valid, orders)

    def weights(self, layer: int, d: int) -> CellWeights:
        return layer_weights(self.call.module, layer, d)

    def x(self, layer: int, d: int) -> Tensor:
        """The layer's input in direction d's processing order, ``[T, B, I]``."""
        return _gather_time(self.inputs[layer], self.orders[d])

    def h(self, layer: int, d: int) -> Tensor:
        """The layer's states in processing order, ``[T, B, H]``."""
        return _gather_time(self.outputs[layer][..., d * self.H : (d + 1) * self.H],
                            self.orders[d])

    def h_prev(self, layer: int, d: int) -> Tensor:
        return torch.cat([self.h0[layer * self.D + d].unsqueeze(0), self.h(layer, d)[:-1]])

    def c0(self, layer: int, d: int) -> Tensor | None:
        return self.c0s[layer * self.D + d] if self.lstm else None


def _immediate(c: _Trajectory, layer: int, d: int, above, above_scale, finals, carry):
    """The layer's immediate gradient in processing order: from the output or the layer above,
    plus the final states' gradients at each sample's last step.

    Returns:
        ``(g, g_scale, immediate)``: the recursion's input ``g * exp(g_scale)`` ``[T, B, S]``
        (``carry`` added at the last step; g_scale None: plain), and the reported immediate
        gradients ``{state: ScaledSeries}``.
    """
    idx, order, H = layer * c.D + d, c.orders[d], c.H
    grad_h_n, grad_c_n = finals
    zero = torch.zeros(c.T, c.B, dtype=torch.float64, device=c.device)
    if above is not None:
        g_h = _gather_time(above[..., d * H : (d + 1) * H], order)
        g_scale = None if above_scale is None else _gather_time(above_scale, order)
    else:
        g_h, g_scale = torch.zeros(c.T, c.B, H, dtype=c.dtype, device=c.device), None
    if grad_h_n is not None:
        g_h, g_scale = _add_at_last_step(g_h, g_scale, grad_h_n[idx], c.last)
    g_h_ln = log_norm(g_h) + _or(g_scale, zero)
    immediate = {"h": ScaledSeries(g_h, _or(g_scale, zero), g_h_ln)}
    g = g_h
    if c.lstm:
        g_c = g_h.new_zeros(c.T, c.B, c.call.module.hidden_size)
        if grad_c_n is not None:
            g_c = _add_at_last_step(g_c, None, grad_c_n[idx], c.last)[0]
        immediate["c"] = ScaledSeries(g_c, zero, log_norm(g_c))
        if g_scale is None:
            g = torch.cat([g_h, g_c], -1)
        else:  # the c part is plain: add it at the last step in scaled form
            g = torch.cat([g_h, torch.zeros_like(g_c)], -1)
            if grad_c_n is not None:
                c_only = torch.cat([g_h.new_zeros(c.B, H), grad_c_n[idx]], -1)
                g, g_scale = _add_at_last_step(g, g_scale, c_only, c.last)
    if carry is not None:
        g, g_scale = add_scaled_at_last_step(g, g_scale, carry, c.last)
    return g, g_scale, immediate


def _layer_result(c: _Trajectory, layer: int, d: int, steps, adj, immediate,
                  options: RecordOptions) -> LayerResult:
    """The layer's totals (h, and c for LSTM) from the recursion, and the Jacobian-product
    norms when recorded."""
    if c.lstm:
        h_part, c_part = adj.scaled[..., : c.H], steps.cell_grads(adj.scaled)
        total = {
            "h": ScaledSeries(h_part, adj.log_scale, log_norm(h_part) + adj.log_scale),
            "c": ScaledSeries(c_part, adj.log_scale, log_norm(c_part) + adj.log_scale),
        }
    else:
        total = {"h": ScaledSeries(adj.scaled, adj.log_scale, adj.log_norm)}
    result = LayerResult(total, immediate, c.orders[d], c.valid, c.dtype, steps.saturation)
    if options.jacobians is not None:
        n = options.samples(c.B)
        w, x, h_prev, h = c.weights(layer, d), c.x(layer, d), c.h_prev(layer, d), c.h(layer, d)
        c0 = c.c0(layer, d)
        c0_n = c0[:n] if c0 is not None else None
        sub = steps if n == c.B else linearise(w, x[:, :n], h_prev[:, :n], h[:, :n], c0_n)
        lengths = None if c.lengths is None else c.lengths[:n]
        result.jacobian = product_log10_norms(sub, options.jacobians, c.T, lengths)
        result.relinearise = _relinearise(w, x[:, :n], h_prev[:, :n], h[:, :n], c0_n)
    return result


def _hand_down(below, steps, adj, order) -> tuple[Tensor, Tensor]:
    """Add this direction's ``∂L/∂x_t`` (input order, scaled) to what the layer below
    receives."""
    dx = _gather_time(steps.input_grads(adj.scaled), order)
    scale = _gather_time(adj.log_scale, order)
    if below is None:
        return dx, scale
    return add_scaled(*below, dx, scale)


def _relinearise(w: CellWeights, x: Tensor, h_prev: Tensor, h: Tensor, c0: Tensor | None):
    """A closure that rebuilds this layer's linearisation later, with a snapshot of the weights
    as they were at this forward (the optimizer may change them in place)."""
    snapshot = CellWeights(
        w.kind, *(None if p is None else p.detach().clone() for p in (
            w.weight_ih, w.weight_hh, w.bias_ih, w.bias_hh, w.weight_hr))
    )
    return lambda: linearise(snapshot, x, h_prev, h, c0)


def _faint_deliveries(above, grad_h_n, grad_c_n, last, T, B, dtype, device) -> Tensor:
    """``[T, B]`` bool, input order: where autograd delivered a faint non-zero gradient to the
    module's outputs or final states (see :meth:`LayerResult.settle_underflow`)."""
    out = torch.zeros(T, B, dtype=torch.bool, device=device)
    if above is not None:
        out |= faint(above, dtype)
    for final in (grad_h_n, grad_c_n):
        if final is not None:
            at_last = faint(final, dtype).any(0)  # [B]: any layer/direction
            out[last, torch.arange(B, device=device)] |= at_last
    return out


def add_scaled_at_last_step(
    g: Tensor, g_scale: Tensor | None, extra: Carry, last: Tensor
) -> tuple[Tensor, Tensor]:
    """Add the scaled ``[B, S]`` gradient ``extra`` at step ``last[b]`` of ``g`` (``[T, B, S]``,
    scaled by ``exp(g_scale)``, or plain when g_scale is None). Returns new scaled tensors."""
    T, B, S = g.shape
    if g_scale is None:
        g_scale = torch.zeros(T, B, dtype=torch.float64, device=g.device)
    index = last.view(1, B, 1).expand(1, B, S)
    current = g.gather(0, index)[0]
    current_scale = g_scale.gather(0, last.view(1, B))[0]
    new, new_scale = add_scaled(current, current_scale, extra.values.to(g.dtype), extra.log_scale)
    g = g.scatter(0, index, new.unsqueeze(0))
    return g, g_scale.scatter(0, last.view(1, B), new_scale.unsqueeze(0))


def _or(x: Tensor | None, default: Tensor) -> Tensor:
    return default if x is None else x


def _add_at_last_step(
    g: Tensor, g_scale: Tensor | None, final: Tensor, last: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Add the plain ``[B, S]`` gradient ``final`` at step ``last[b]`` of ``g`` (``[T, B, S]``,
    scaled by ``exp(g_scale)`` unless g_scale is None). Returns new tensors; the inputs, which
    may be autograd's own gradient buffers, are not modified."""
    B, S = final.shape
    index = last.view(1, B, 1).expand(1, B, S)
    if g_scale is None:
        return g.scatter_add(0, index, final.unsqueeze(0)), None
    current = g.gather(0, index)[0]
    current_scale = g_scale.gather(0, last.view(1, B))[0]
    new, new_scale = add_scaled(current, current_scale, final, torch.zeros_like(current_scale))
    g = g.scatter(0, index, new.unsqueeze(0))
    return g, g_scale.scatter(0, last.view(1, B), new_scale.unsqueeze(0))


def _batched_final(grad: Tensor | None, unbatched: bool) -> Tensor | None:
    if grad is None or not unbatched:
        return grad
    return grad.unsqueeze(1)

