"""Total gradients for diagonal scans: LRU, S4D/S5, selective SSMs, minGRU (docs/design.md §23).

For h_t = a_t ⊙ h_{t-1} + b_t the step Jacobian is diag(a_t), so the total gradient obeys the
diagonal adjoint recursion λ_{t-1} = g_{t-1} + ā_t ⊙ λ_t, run in log space by the machinery the
other cells share (:class:`rnn_diag.dynamics.steps.DiagonalSteps`,
:func:`rnn_diag.dynamics.adjoint.adjoint_scan`). What a call must give is a_t and the
immediate gradient g_t, what reaches h_t from the layer's read-out:

* :class:`ScanPointCall` — a :class:`rnn_diag.scans.ScanLayer` runs its recurrence in
  ``self.scan``; hooks on that call keep a_t as computed and receive g_t as the gradient
  autograd delivers to the returned states (the states' only use inside the layer is its
  read-out). Nothing is re-run.
* :class:`AdapterCall` — a layer registered with :func:`rnn_diag.register_scan`: after the
  backward its adapter recomputes a_t, b_t, h0 and the read-out from the call's recorded
  inputs (no grad, the forward's random state restored); the states follow from the scan, the
  read-out of those states must reproduce the recorded output, and g_t is the read-out's
  vector-Jacobian product with the gradients that reached the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from ..dynamics.adjoint import adjoint_scan
from ..dynamics.linear_scan import linear_scan
from ..dynamics.lognorm import log_norm
from ..dynamics.steps import DiagonalSteps
from ..dynamics.steps.callable import ReplayRNG
from .cell_chain import StaleRecord
from .options import RecordOptions
from .result import LayerResult, ScaledSeries, faint


@dataclass
class ScanPointCall:
    """One call of a scan layer's ``self.scan(a, b, h0)``: detached views, the states'
    version counters, and the gradient that reached the states."""

    layer: int
    seq: int
    decay: Tensor
    states: Tensor
    versions: tuple[int, ...]
    grad: Tensor | None = None


@dataclass
class AdapterCall:
    """One forward of a registered scan layer: its (detached) arguments, output tensors and
    their gradients, and the random state its forward started from."""

    layer: int
    seq: int
    module: nn.Module
    adapter: object
    args: tuple
    kwargs: dict
    outputs: tuple[Tensor, ...]
    versions: tuple[int, ...]
    rng: tuple[torch.device, Tensor] | None
    grads: list = field(default_factory=list)


def detached(tree):
    """Every tensor of a nested structure detached (other leaves kept)."""
    return tree_map(lambda x: x.detach() if isinstance(x, Tensor) else x, tree)


def output_tensors(output) -> tuple[Tensor, ...]:
    """The tensors a layer returned, in order (a tensor, or those of a tuple/list)."""
    if isinstance(output, Tensor):
        return (output,)
    if isinstance(output, (tuple, list)):
        return tuple(x for x in output if isinstance(x, Tensor))
    return ()


def check_tolerance(dtype: torch.dtype) -> float:
    """Relative difference allowed between an adapter's read-out and the recorded output:
    eps^(2/3) of the dtype (2.4e-5 in float32, 3.7e-11 in float64). A log-space scan
    (``logcumsumexp``) and the chunked scan agree to ~|ln Π a|·eps, far inside it; a wrong
    adapter misses by orders of magnitude more."""
    return max(64 * torch.finfo(dtype).eps, torch.finfo(dtype).eps ** (2 / 3))


def analyse_scan_point(call: ScanPointCall, options: RecordOptions) -> LayerResult:
    """The layer's gradients from its scan call; :class:`StaleRecord` if the states or decays
    were changed in place after it."""
    if (call.decay._version, call.states._version) != call.versions:
        raise StaleRecord("the scan's decays or states were modified in place after the call, "
                          "so their recorded values are lost; use out-of-place operations")
    grad = call.grad if call.grad is not None else torch.zeros_like(call.states)
    return _result(call.decay, grad, options)


def analyse_adapter_call(call: AdapterCall, options: RecordOptions, name: str) -> LayerResult:
    """The layer's gradients from its adapter (see the module docstring); raises
    :class:`StaleRecord` when the adapter's read-out does not reproduce the recorded output."""
    if tensor_versions(call.args, call.kwargs, call.outputs) != call.versions:
        raise StaleRecord("an input or output of the layer was modified in place after the "
                          "call, so its recorded values are lost; use out-of-place operations")
    # the forward's random state replayed (dropout inside the adapter is exact), or, without
    # a tensor argument to tell the device, at least the caller's CPU stream kept
    replay = ReplayRNG(*call.rng) if call.rng is not None else torch.random.fork_rng(devices=[])
    with replay:
        trace = call.adapter(call.module, call.args, call.kwargs)
    decay, drive = trace.decay.detach(), trace.drive.detach()
    h0 = None if trace.h0 is None else trace.h0.detach()
    states = linear_scan(decay, drive, h0)

    def readout(h: Tensor) -> tuple[Tensor, ...]:
        return output_tensors(trace.readout(h))

    with torch.enable_grad():
        outputs, vjp = torch.func.vjp(readout, states)
    recorded = call.outputs
    if len(outputs) != len(recorded) or any(a.shape != b.shape
                                            for a, b in zip(outputs, recorded)):
        raise StaleRecord(f"the adapter's read-out returned {_shapes(outputs)} but the layer "
                          f"returned {_shapes(recorded)}: the adapter does not describe this "
                          "layer")
    worst = max(_relative_difference(a.detach(), b) for a, b in zip(outputs, recorded))
    tol = check_tolerance(recorded[0].dtype if recorded[0].is_floating_point()
                          else torch.float32)
    if not worst <= tol:
        raise StaleRecord(f"the output recomputed from the adapter's description differs from "
                          f"the recorded output by {worst:.2g} (relative; allowed {tol:.1g}): "
                          "the adapter does not describe this layer (or the layer keeps state "
                          "of its own, or draws from a non-default generator)")
    cotangents = tuple(g if g is not None else torch.zeros_like(o)
                       for g, o in zip(_padded(call.grads, len(recorded)), outputs))
    (grad,) = vjp(cotangents)
    return _result(decay, grad.detach(), options)


def _result(decay: Tensor, grad: Tensor, options: RecordOptions) -> LayerResult:
    """From batch-first ``decay`` and immediate gradient ``[B, T, *S]``."""
    B, T = decay.shape[:2]
    state_shape = tuple(decay.shape[2:])
    a = decay.expand(grad.shape).transpose(0, 1)  # [T, B, *S]
    steps = DiagonalSteps(a)
    g = grad.transpose(0, 1).reshape(T, B, -1)
    if steps.complex:
        g = torch.view_as_real(g.resolve_conj()).reshape(T, B, steps.state_size)
    g = g.contiguous()
    dtype = g.dtype
    g_ln = log_norm(g)
    adj = adjoint_scan(steps, g, None, g_ln)
    zero = torch.zeros(T, B, dtype=torch.float64, device=g.device)
    result = LayerResult(
        {"h": ScaledSeries(adj.scaled, adj.log_scale, adj.log_norm)},
        {"h": ScaledSeries(g, zero, g_ln)},
        None, None, dtype, state_view=_state_view(steps.complex, steps.channels, state_shape),
    )
    result.faint = faint(g, dtype)
    if options.jacobians is not None:
        n = options.samples(B)
        result.jacobian = steps.product_log10_norms(T, -1, samples=n)
        sub = a[:, :n]
        result.relinearise = lambda: DiagonalSteps(sub)
    return result


def _state_view(is_complex: bool, channels: int, state_shape: tuple[int, ...]):
    """Maps the real ``[..., S]`` gradient rows back to the state's own form ``[..., *S]``
    (complex for a complex state)."""

    def view(x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        if is_complex:
            x = torch.view_as_complex(x.reshape(*lead, channels, 2).contiguous())
        return x.reshape(*lead, *state_shape)

    return view


def _relative_difference(a: Tensor, b: Tensor) -> float:
    a, b = a.to(torch.complex128 if a.is_complex() else torch.float64), b.to(
        torch.complex128 if b.is_complex() else torch.float64)
    scale = float(b.abs().max()) if b.numel() else 0.0
    diff = float((a - b).abs().max()) if b.numel() else 0.0
    if not math.isfinite(diff):
        return math.inf
    return diff / scale if scale > 0 else diff


def _tensors(*trees) -> list[Tensor]:
    out = []
    for tree in trees:
        tree_map(lambda x: out.append(x) if isinstance(x, Tensor) else None, tree)
    return out


def tensor_versions(*trees) -> tuple[int, ...]:
    """Version counters of every tensor in the given structures, in order."""
    return tuple(x._version for x in _tensors(*trees))


def _padded(grads: list, n: int) -> list:
    return list(grads) + [None] * (n - len(grads))


def _shapes(tensors) -> str:
    return "(" + ", ".join(str(list(t.shape)) for t in tensors) + ")"
