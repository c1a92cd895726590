"""Any cell ``fn(x_t, state) -> state``, linearised by re-running it with ``torch.func``."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor


class CallableSteps:
    """Any cell ``fn(x_t, state) -> state`` linearised with ``torch.func.vjp`` at each step.

    Args:
        fn: the cell; ``state`` is one tensor, or a tuple of tensors when ``tuple_state``.
        x: ``[T, B, I]`` inputs.
        prev_states: one ``[T, B, S_i]`` tensor per state component, the state entering step t.
        tuple_state: whether ``fn`` takes and returns a tuple.
        rng: optional ``(device, generator state)`` per step, taken before the cell first ran
            it: each re-run draws the same random numbers (dropout masks) inside
            ``torch.random.fork_rng``, leaving the caller's stream untouched.
        expected: optional ``[T, B, S_i]`` per component, the states the cell returned; each
            re-run's output is compared with them and the largest relative difference kept in
            ``replay_error`` (a cell that is not a pure function of its inputs shows there).

    The adjoint state is the concatenation of the components (e.g. [h | c]).
    """

    def __init__(self, fn, x: Tensor, prev_states: list[Tensor], tuple_state: bool,
                 rng: list | None = None, expected: list[Tensor] | None = None):
        self.fn = fn
        self.x = x
        self.prev_states = prev_states
        self.tuple_state = tuple_state
        self.sizes = [p.shape[-1] for p in prev_states]
        self.state_size = sum(self.sizes)
        self.rng = rng
        self.expected = expected
        self.replay_error = 0.0

    def _replaying(self, t: int):
        if self.rng is None:
            return nullcontext()
        return ReplayRNG(*self.rng[t])

    def _check(self, t: int, new) -> None:
        if self.expected is None:
            return
        for got, want in zip(new if self.tuple_state else (new,), self.expected, strict=True):
            want_t = want[t].to(got.dtype)
            scale = float(want_t.abs().amax()) or 1.0
            self.replay_error = max(self.replay_error,
                                    float((got.detach() - want_t).abs().amax()) / scale)

    def _flat_step(self, t: int):
        """The step as a function of the concatenated state ``[B, S] -> [B, S]``."""
        x_t = self.x[t]

        def step(flat: Tensor) -> Tensor:
            parts = torch.split(flat, self.sizes, dim=-1)
            new = self.fn(x_t, tuple(parts) if self.tuple_state else parts[0])
            return torch.cat(tuple(new), dim=-1) if self.tuple_state else new

        return step

    def jacobian(self, t: int) -> Tensor:
        """``J_t`` as ``[B, S, S]``, from ``torch.func.jacrev`` of the whole batch (the
        cross-sample blocks, zero for a cell that treats samples independently, are dropped)."""
        flat = torch.cat([p[t] for p in self.prev_states], dim=-1)
        with torch.enable_grad(), self._replaying(t):
            full = torch.func.jacrev(self._flat_step(t))(flat)  # [B, S, B, S]
        return torch.diagonal(full, dim1=0, dim2=2).permute(2, 0, 1)

    def vjp_into(self, t: int, v: Tensor, add: Tensor, out: Tensor) -> None:
        x_t = self.x[t]

        def step(*state):
            new = self.fn(x_t, state if self.tuple_state else state[0])
            return tuple(new) if self.tuple_state else new

        with torch.enable_grad(), self._replaying(t):
            new, pullback = torch.func.vjp(step, *(p[t] for p in self.prev_states))
            parts = torch.split(v, self.sizes, dim=-1)
            grads = pullback(tuple(parts) if self.tuple_state else parts[0])
        self._check(t, new)
        if add is None:
            torch.cat(grads, dim=-1, out=out)
        else:
            torch.add(add, torch.cat(grads, dim=-1), out=out)


class ReplayRNG:
    """Run a block with the generator of ``device`` set to ``state``; the caller's generator
    state is restored after it (``torch.random.fork_rng``), so its stream is untouched."""

    def __init__(self, device: torch.device, state: Tensor):
        self.device, self.state = device, state
        self._fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def __enter__(self):
        self._fork.__enter__()
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(self.state, self.device)
        else:
            torch.set_rng_state(self.state)
        return self

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)
