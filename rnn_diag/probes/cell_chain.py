"""Total gradients for cells driven one step per call (nn.RNNCell/GRUCell/LSTMCell, custom cells).

A *chain* is a run of calls in which each call receives the state the previous call returned,
or a view of it (see :mod:`rnn_diag.probes.links`); a transformed state (a mask, a slice) starts a
new chain, and :mod:`rnn_diag.probes.series` lays the chains of one backward end to end. Each
call's state tensors are real autograd nodes, so gradients can be observed on them:

* PyTorch's cells (*observed* mode): a hook on each returned state tensor receives the total
  ∂L/∂h_t exactly as autograd summed it; nothing in the graph changes, so parameter gradients are
  bitwise those of the unprobed model. For an LSTM cell, the hook on c_t sees the path through
  h_t = o_t tanh(c_t) only where h_t is computed from c_t in the graph (on CPU), not where both
  come out of one node (the fused CUDA kernel); the chain checks which, and adds that path
  itself where the graph does not. The immediate part is recovered as
  g_t = λ_t − J_{t+1}ᵀ λ_{t+1} from the known cell equations (in float64); a g_t below the
  rounding level of autograd's own sum (:data:`ROUNDING_TOLERANCE` · eps relative) is reported
  as exactly 0.
* Custom cells (*aliased* mode): the internals are unknown, so the cell hands the user an alias
  (``view_as``) of its output and receives the raw output when the user passes the alias back.
  Gradients reaching the alias are then exactly the direct part g_t. Values are unchanged, but
  autograd may add the same terms in another order where the state has three or more consumers,
  so parameter gradients can differ in the last bit.

Either way the recursion is then run in log space from the recorded states, as for the fused
modules, so norms far below the dtype's range stay finite.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..dynamics.adjoint import adjoint_scan, immediate_from_total
from ..dynamics.cells import CallableSteps, CellWeights, linearise
from ..dynamics.lognorm import log_norm
from ..modules.layers import cell_kind
from .jacobians import product_log10_norms
from .links import Handed, reads
from .options import RecordOptions
from .result import LayerResult, ScaledSeries, faint

#: An immediate gradient recovered by subtraction is 0 when its norm is below this many
#: machine epsilons of the model's dtype, relative to ‖λ_t‖ + ‖J_{t+1}ᵀ λ_{t+1}‖ (the rounding
#: error measured for RNNCell/GRUCell, H = 4..256, stayed below 1.1 eps).
ROUNDING_TOLERANCE = 16

#: A custom cell re-run on its recorded inputs must give its recorded states to within this
#: many machine epsilons (relative to the largest entry).
REPLAY_TOLERANCE = 64


def rounding_level(dtype: torch.dtype, size: int, *norms: Tensor) -> Tensor:
    """The norm below which a gradient recovered as a difference of autograd's values is
    rounding noise: :data:`ROUNDING_TOLERANCE` eps relative to the terms' ``norms``, plus an
    absolute floor at the dtype's smallest normal number: below it autograd's own values are
    subnormal or flushed to zero (oneDNN and cuDNN kernels flush), so a difference there says
    nothing. Measured on an RNNCell at T=2000, spectral radius 0.3: without the floor, the
    steps where float32 λ_t crosses 1e-38 gave spurious g_t = -J_{t+1}ᵀλ_{t+1} and the log-space
    norms beyond them came out 14 decades off."""
    return ROUNDING_TOLERANCE * torch.finfo(dtype).eps * sum(norms) + rounding_floor(dtype, size)


def rounding_floor(dtype: torch.dtype, size: int) -> float:
    """The absolute part of :func:`rounding_level`: 16·√size times the smallest normal number."""
    return ROUNDING_TOLERANCE * math.sqrt(size) * torch.finfo(dtype).tiny


def state_names(n: int) -> list[str]:
    """Names of the state components: h, c, then s2, s3, ..."""
    return (["h", "c"] + [f"s{i}" for i in range(2, n)])[:n]


def components(state) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def _batched(x: Tensor) -> Tensor:
    return x if x.dim() >= 2 else x.unsqueeze(0)


class StaleRecord(RuntimeError):
    """A recorded state or input was changed in place after the call: its values are gone."""


class CellChain:
    """The calls of one cell that form one sequence, recorded as references.

    Attributes:
        module: the cell. kind: its :func:`cell_kind` (None: custom, aliased mode).
        initial: the state passed to the first call (None when the cell made its own zeros).
        inputs: ``x_t`` of every call; outputs: the raw state components returned by each call.
        handed: what the latest call returned to the user (to recognise continuation).
        grads: ``{step: [gradient per component]}`` of the current backward: totals in observed
            mode, immediate gradients in aliased mode.
        seq: order of creation among all recorded calls.
        link: how the first call's state relates to the previous chain's (links.SAME, ...).
        grads_seen: whether a gradient reached any of its states in the current backward.
        c_seen_through_h: per call, whether the hook on c_t also sees the path through h_t
            (LSTM cells; see the module docstring).
    """

    def __init__(self, module: nn.Module, initial, seq: int, link: str):
        self.module = module
        self.kind = cell_kind(module)
        self.initial = None if initial is None else tuple(t.detach() for t in components(initial))
        self.inputs: list[Tensor] = []
        self.outputs: list[tuple[Tensor, ...]] = []
        self.handed: Handed | None = None
        self.tuple_state = False
        self.grads: dict[int, list[Tensor | None]] = {}
        self.seq = seq
        self.link = link
        self.grads_seen = False
        self.c_seen_through_h: list[bool] = []
        self.raw: tuple[Tensor, ...] = ()
        #: custom cells: ``(device, generator state)`` before each call, to replay its draws
        self.rng: list = []
        self._versions: list[tuple[int, ...]] = []

    @property
    def aliased(self) -> bool:
        return self.kind is None

    def record(self, x: Tensor, parts: tuple[Tensor, ...]) -> None:
        """Remember one call's input and raw outputs (and their versions, to detect in-place
        changes before the analysis).

        Only detached views are kept (values and version counters, no graph): the hooks that
        hold this chain live in the user's graph, and a chain holding graph tensors would make
        a reference cycle through autograd's C++ nodes that Python's collector cannot free.
        In aliased mode the latest raw outputs are kept in ``raw`` for the next call."""
        self.inputs.append(x.detach())
        self.outputs.append(tuple(p.detach() for p in parts))
        self._versions.append(tuple(t._version for t in (x, *parts)))
        if self.kind == "lstm":
            self.c_seen_through_h.append(reads(parts[0], parts[1]))
        if self.aliased:
            self.raw = parts

    def check_unchanged(self) -> None:
        """Raise :class:`StaleRecord` if a recorded input or state was modified in place."""
        for step, (x, parts) in enumerate(zip(self.inputs, self.outputs, strict=True)):
            now = tuple(t._version for t in (x, *parts))
            if now != self._versions[step]:
                raise StaleRecord(
                    f"the input or state of step {step} was modified in place after the call "
                    "(e.g. h[done] = 0 on the returned state), so its recorded values are lost; "
                    "use an out-of-place operation such as h = h * mask"
                )

    def analyse(self, options: RecordOptions | None = None) -> LayerResult:
        """Total and immediate gradients over the chain, for the gradients of this backward,
        and what ``options`` asks for besides."""
        options = options or RecordOptions()
        self.check_unchanged()
        dtype = self.outputs[0][0].dtype
        if self.aliased:
            work = dtype
        else:
            work = torch.float64  # the subtraction that recovers g_t needs the headroom
        T, n = len(self.outputs), len(self.outputs[0])
        states = [
            torch.stack([_batched(o[i]) for o in self.outputs]).to(work) for i in range(n)
        ]
        x = torch.stack([_batched(v) for v in self.inputs]).to(work)
        initial = (
            [_batched(s).to(work) for s in self.initial]
            if self.initial is not None
            else [torch.zeros_like(s[0]) for s in states]
        )
        prev = [torch.cat([i.unsqueeze(0), s[:-1]]) for i, s in zip(initial, states, strict=True)]
        grads = [
            torch.stack([self._grad(t, i, states[i][t]) for t in range(T)]).to(work)
            for i in range(n)
        ]
        sizes = [s.shape[-1] for s in states]
        if self.aliased:
            steps = CallableSteps(self.module.forward, x, prev, self.tuple_state,
                                  self.rng or None, states)
            g_state = torch.cat(grads, dim=-1)
            immediate_parts = grads
        else:
            m = self.module
            w = CellWeights(  # a snapshot: the optimizer may change the weights in place
                self.kind,
                *(p.detach().to(work, copy=True) if p is not None else None
                  for p in (m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)),
            )
            c0 = prev[1][0] if self.kind == "lstm" else None
            steps = linearise(w, x, prev[0], states[0], c0, saturation=options.saturation)
            if self.kind == "lstm":
                # Where h_t and c_t come out of one node, the hook on c_t saw only the gradient
                # from outside the step (e_t): add the path through h_t.
                fused = ~torch.tensor(self.c_seen_through_h, device=x.device).view(T, 1, 1)
                grads[1] = torch.where(fused, grads[1] + steps.k * grads[0], grads[1])
                total = steps.pair_from_total(*grads)
                # e = ∂L/∂c - a k is itself a difference: its rounding scales with both terms
                h_grads, c_grads = grads
                magnitude = torch.cat([h_grads, c_grads.abs() + (h_grads * steps.k).abs()], -1)
            else:
                total = magnitude = grads[0]
            g_state, recurrent = immediate_from_total(steps, total)
            immediate_parts = _zero_rounding_level(g_state, magnitude, recurrent, sizes, dtype)
            # The recursion runs on the cleaned g_t: where autograd's λ_t underflowed, the raw
            # difference is -J_{t+1}ᵀλ_{t+1} and would cancel the carried gradient.
            g_state = torch.cat(immediate_parts, dim=-1)

        adj = adjoint_scan(steps, g_state, None, log_norm(g_state))
        if self.aliased and steps.replay_error > REPLAY_TOLERANCE * torch.finfo(dtype).eps:
            raise StaleRecord(
                "re-running the custom cell on its recorded inputs did not give the states it "
                f"returned (largest relative difference {steps.replay_error:.2g}): it is not a "
                "pure function of (input, state) and the random numbers it drew (it keeps "
                "state of its own, or draws from a generator other than the default one)"
            )

        parts = list(torch.split(adj.scaled, sizes, dim=-1))
        if self.kind == "lstm":
            parts[1] = steps.cell_grads(adj.scaled)
        zero = torch.zeros_like(adj.log_scale)
        names = state_names(n)
        total_series = {
            name: ScaledSeries(p, adj.log_scale, log_norm(p) + adj.log_scale)
            for name, p in zip(names, parts, strict=True)
        }
        immediate = {
            name: ScaledSeries(g, zero, log_norm(g))
            for name, g in zip(names, immediate_parts, strict=True)
        }
        saturation = getattr(steps, "saturation", {})
        result = LayerResult(total_series, immediate, None, None, dtype, saturation)
        result.faint = faint(torch.cat(immediate_parts, -1), dtype)
        if not self.aliased:  # the hooks gave autograd's totals
            known = torch.stack([log_norm(gr) for gr in grads]).amin(0)
            result.trusted = known >= math.log(rounding_floor(dtype, sum(sizes)))
        if options.jacobians is not None:
            B = x.shape[1]
            n = options.samples(B)
            if n < B and self.aliased and not self.rng:
                steps = CallableSteps(self.module.forward, x[:, :n], [p[:, :n] for p in prev],
                                      self.tuple_state)
            elif n < B and not self.aliased:
                c0 = c0[:n] if c0 is not None else None
                steps = linearise(w, x[:, :n], prev[0][:, :n], states[0][:, :n], c0)
            # a custom cell replaying its random draws runs on the whole batch (the draws
            # depend on its shape); its norms are then cut to the first n samples
            result.jacobian = product_log10_norms(steps, options.jacobians, T, None)[:, :n]
            result.relinearise = lambda: steps
        return result

    def _grad(self, t: int, i: int, like: Tensor) -> Tensor:
        got = self.grads.get(t)
        grad = got[i] if got is not None else None
        return torch.zeros_like(like) if grad is None else _batched(grad)


def _zero_rounding_level(
    g: Tensor, magnitude: Tensor, recurrent: Tensor, sizes: list[int], dtype: torch.dtype
) -> list[Tensor]:
    """Split ``g`` into state components and zero each vector that is at rounding level, i.e.
    no larger than the tolerance times the terms it was computed from (``magnitude``, the
    total gradient or the parts it was formed from, and the recurrent part)."""
    out = []
    size = sum(sizes)
    for gi, li, ri in zip(
        *(torch.split(a, sizes, dim=-1) for a in (g, magnitude, recurrent)), strict=True
    ):
        level = rounding_level(dtype, size, torch.linalg.vector_norm(li, dim=-1),
                               torch.linalg.vector_norm(ri, dim=-1))
        keep = torch.linalg.vector_norm(gi, dim=-1) > level
        out.append(gi * keep.unsqueeze(-1))
    return out
