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
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..dynamics.adjoint import adjoint_scan
from ..dynamics.cells import CellWeights, linearise
from ..dynamics.lognorm import add_scaled, log_norm
from ..dynamics.workspace import Workspace
from .jacobians import product_log10_norms
from .result import LayerResult, ScaledSeries, faint

FUSED_TYPES = (nn.RNN, nn.GRU, nn.LSTM)


def module_kind(module: nn.RNNBase) -> str:
    """"rnn_tanh", "rnn_relu", "gru" or "lstm"."""
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    return "rnn_relu" if module.nonlinearity == "relu" else "rnn_tanh"


class ReplayMismatch(RuntimeError):
    """The recomputed top layer differs from the module's output: the lower layers (their
    dropout masks) could not be reproduced, so nothing is recorded for this call."""


def output_size(module: nn.RNNBase) -> int:
    """Size of h (and of each direction's output): ``proj_size`` when set, else hidden_size."""
    return getattr(module, "proj_size", 0) or module.hidden_size


def replays_dropout(module: nn.RNNBase) -> bool:
    """Whether a forward of ``module`` now draws inter-layer dropout masks."""
    return module.training and module.dropout > 0 and module.num_layers > 1


def save_rng_state(module: nn.RNNBase, inp) -> tuple[torch.device, Tensor]:
    """The state of the generator the module's dropout will draw from (no draw is made)."""
    data = inp.data if isinstance(inp, PackedSequence) else inp
    device = data.device
    if device.type == "cuda":
        return device, torch.cuda.get_rng_state(device)
    return device, torch.get_rng_state()


def layer_weights(module: nn.RNNBase, layer: int, direction: int) -> CellWeights:
    """The weights of one layer and direction, named as PyTorch names them."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    bias = module.bias
    weights = CellWeights(
        kind=module_kind(module),
        weight_ih=getattr(module, "weight_ih" + suffix),
        weight_hh=getattr(module, "weight_hh" + suffix),
        bias_ih=getattr(module, "bias_ih" + suffix) if bias else None,
        bias_hh=getattr(module, "bias_hh" + suffix) if bias else None,
    )
    if getattr(module, "proj_size", 0):
        weights.weight_hr = getattr(module, "weight_hr" + suffix)
    return weights


def single_layer_shadow(module: nn.RNNBase, input_size: int, batch_first: bool) -> nn.RNNBase:
    """A one-layer copy of ``module``'s kind and settings on the meta device (no memory, no
    RNG draws), to be run with real weights through ``functional_call``."""
    kwargs = dict(
        num_layers=1,
        bias=module.bias,
        batch_first=batch_first,
        bidirectional=module.bidirectional,
        device="meta",
    )
    if isinstance(module, nn.RNN):
        kwargs["nonlinearity"] = module.nonlinearity
    if getattr(module, "proj_size", 0):
        kwargs["proj_size"] = module.proj_size
    with torch.random.fork_rng(devices=[]):
        return type(module)(input_size, module.hidden_size, **kwargs)


def single_layer_params(module: nn.RNNBase, layer: int) -> dict[str, Tensor]:
    """The weights of layer ``layer`` (every direction) under a one-layer module's names."""
    params = {}
    for direction in range(2 if module.bidirectional else 1):
        w = layer_weights(module, layer, direction)
        sfx = "_l0" + ("_reverse" if direction else "")
        params["weight_ih" + sfx], params["weight_hh" + sfx] = w.weight_ih, w.weight_hh
        if module.bias:
            params["bias_ih" + sfx], params["bias_hh" + sfx] = w.bias_ih, w.bias_hh
        if w.weight_hr is not None:
            params["weight_hr" + sfx] = w.weight_hr
    return params


def make_shadows(module: nn.RNNBase) -> list[nn.RNNBase]:
    """Single-layer copies (see :func:`single_layer_shadow`), one per layer, used to recompute
    the lower layers' outputs with the real weights (and the top layer, to check a dropout
    replay)."""
    if module.num_layers == 1:
        return []
    directions = 2 if module.bidirectional else 1
    upper = directions * output_size(module)
    sizes = [module.input_size] + [upper] * (module.num_layers - 1)
    return [single_layer_shadow(module, size, module.batch_first) for size in sizes]


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
        D = 2 if m.bidirectional else 1
        outputs, masks, inputs = [], [], [self.time_major(self.input)[0]]
        if p:
            device, state = self.rng
            forked = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        else:
            forked = nullcontext()
        with forked:
            if p:
                (torch.cuda.set_rng_state(state, device) if device.type == "cuda"
                 else torch.set_rng_state(state))
            inp = self.input
            for layer in range(m.num_layers - 1 if not p else m.num_layers):
                params = single_layer_params(m, layer)
                hx = self.hx
                if hx is not None:
                    rows = slice(layer * D, (layer + 1) * D)
                    hx = tuple(s[rows] for s in hx) if isinstance(hx, tuple) else hx[rows]
                out, _ = functional_call(self.shadows[layer], params, (inp, hx))
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
    workspace: Workspace | None = None,
    saturation: bool = False,
    jacobians: str | None = None,
    jacobian_samples: int | None = None,
    carry: dict[int, Carry] | None = None,
    want_initial: bool = False,
) -> tuple[dict[tuple[int, int], LayerResult], dict[int, Carry]]:
    """Total and immediate gradients of every layer and direction of one fused call.

    Args:
        call: the captured forward.
        grad_output, grad_h_n, grad_c_n: immediate gradients on the module's outputs as
            autograd delivered them (None where the loss did not use that output).
        workspace: scratch buffers reused from one call to the next.
        saturation: also record the fraction of saturated units per gate.
        jacobians: None, or "exact"/"estimate": also record log10 ‖∂s_last/∂s_k‖₂ of each
            layer's own recurrence (see :mod:`rnn_diag.probes.jacobians`).
        jacobian_samples: compute those norms for the first N samples only (None: all).
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
    m = call.module
    L, D, H = m.num_layers, (2 if m.bidirectional else 1), output_size(m)
    Hc = m.hidden_size
    x0, lengths = call.time_major(call.input)
    top, _ = call.time_major(call.output)
    T, B = top.shape[:2]
    dtype, device = top.dtype, top.device
    lstm = isinstance(m, nn.LSTM)

    h0, c0 = call.initial_states(B, dtype, device)
    if L > 1:
        lower, inputs, masks = call.lower_layers()
    else:
        lower, inputs, masks = [], [x0], []
    outputs = lower + [top]
    last = (lengths - 1) if lengths is not None else torch.full((B,), T - 1, device=device)
    valid = None
    if lengths is not None:
        valid = torch.arange(T, device=device).unsqueeze(1) < lengths.unsqueeze(0)
    orders = [None, _reverse_order(T, B, lengths, device)][:D]
    grad_h_n = _batched_final(grad_h_n, call.unbatched)
    grad_c_n = _batched_final(grad_c_n, call.unbatched)
    carry = carry or {}

    # Immediate gradient of the current layer's output, [T, B, D*H], input order. Scale None
    # means plain values (the top layer); lower layers receive scaled values.
    above = call.grad_time_major(grad_output) if grad_output is not None else None
    faint_in = _faint_deliveries(above, grad_h_n, grad_c_n, last, T, B, dtype, device)
    above_scale: Tensor | None = None
    zero_scale = torch.zeros(T, B, dtype=torch.float64, device=device)

    results: dict[tuple[int, int], LayerResult] = {}
    initial: dict[int, Carry] = {}
    for layer in range(L - 1, -1, -1):
        below, below_scale = None, None
        for d in range(D):
            order = orders[d]
            idx = layer * D + d
            # Immediate gradient in processing order: from the output or the layer above, plus
            # the final state's gradient at each sample's last step.
            if above is not None:
                g_h = _gather_time(above[..., d * H : (d + 1) * H], order)
                g_scale = None if above_scale is None else _gather_time(above_scale, order)
            else:
                g_h, g_scale = top.new_zeros(T, B, H), None
            if grad_h_n is not None:
                g_h, g_scale = _add_at_last_step(g_h, g_scale, grad_h_n[idx], last)
            g_h_ln = log_norm(g_h) if g_scale is None else log_norm(g_h) + g_scale
            immediate = {"h": ScaledSeries(g_h, _or(g_scale, zero_scale), g_h_ln)}
            g_state, g_state_ln = g_h, g_h_ln
            if lstm:
                g_c = g_h.new_zeros(T, B, Hc)
                if grad_c_n is not None:
                    g_c = _add_at_last_step(g_c, None, grad_c_n[idx], last)[0]
                g_c_ln = log_norm(g_c)
                immediate["c"] = ScaledSeries(g_c, zero_scale, g_c_ln)
                g_state_ln = 0.5 * torch.logaddexp(2 * g_h_ln, 2 * g_c_ln)
                if g_scale is None:
                    g_state = torch.cat([g_h, g_c], -1)
                else:
                    g_state = torch.cat([g_h, torch.zeros_like(g_c)], -1)
                    if grad_c_n is not None:
                        c_only = torch.cat([torch.zeros_like(grad_h_n[idx]) if grad_h_n is not None
                                            else g_h.new_zeros(B, H), grad_c_n[idx]], -1)
                        g_state, g_scale = _add_at_last_step(g_state, g_scale, c_only, last)
            if idx in carry:
                g_state, g_scale = add_scaled_at_last_step(g_state, g_scale, carry[idx], last)
                g_state_ln = log_norm(g_state) + _or(g_scale, zero_scale)

            x = _gather_time(inputs[layer], order)
            h = _gather_time(outputs[layer][..., d * H : (d + 1) * H], order)
            h_prev = torch.cat([h0[idx].unsqueeze(0), h[:-1]])
            w = layer_weights(m, layer, d)
            steps = linearise(w, x, h_prev, h, c0[idx] if lstm else None, workspace, saturation)
            adj = adjoint_scan(steps, g_state, g_scale, g_state_ln)
            if lstm:
                h_part = adj.scaled[..., :H]
                c_part = steps.cell_grads(adj.scaled)
                total = {
                    "h": ScaledSeries(h_part, adj.log_scale, log_norm(h_part) + adj.log_scale),
                    "c": ScaledSeries(c_part, adj.log_scale, log_norm(c_part) + adj.log_scale),
                }
            else:
                total = {"h": ScaledSeries(adj.scaled, adj.log_scale, adj.log_norm)}
            if want_initial:
                into = torch.empty_like(adj.scaled[0])
                steps.vjp_into(0, adj.scaled[0], None, into)
                initial[idx] = Carry(into, adj.log_scale[0].clone())
            result = LayerResult(total, immediate, order, valid, dtype, steps.saturation)
            result.faint = _gather_time(faint_in, order)
            if jacobians is not None:
                n = B if jacobian_samples is None else min(B, jacobian_samples)
                c0_n = c0[idx][:n] if lstm else None
                sub = steps if n == B else linearise(w, x[:, :n], h_prev[:, :n], h[:, :n], c0_n)
                sub_lengths = None if lengths is None else lengths[:n]
                result.jacobian = product_log10_norms(sub, jacobians, T, sub_lengths)
                result.relinearise = _relinearise(w, x[:, :n], h_prev[:, :n], h[:, :n], c0_n)
            results[(layer, d)] = result
            if layer > 0:
                dx = _gather_time(steps.input_grads(adj.scaled), order)
                scale = _gather_time(adj.log_scale, order)
                if below is None:
                    below, below_scale = dx, scale
                else:
                    below, below_scale = add_scaled(below, below_scale, dx, scale)
        if layer > 0 and masks[layer - 1] is not None:
            below = below * masks[layer - 1]  # ∂L/∂(output of the layer below) through dropout
        above, above_scale = below, below_scale
    return results, initial


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

