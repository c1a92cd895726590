"""Lyapunov exponents of a trajectory by QR re-orthonormalisation (Benettin et al., 1980).

Notation: ``J_t = ∂s_t/∂s_{t-1}`` along the trajectory (t = 0..T-1). A block ``Q`` of k orthonormal
tangent vectors is pushed through the Jacobians; every ``qr_every`` steps the pushed block is
factorised ``M = Q R`` and ``log |R_ii|`` is accumulated in float64. After the first ``warmup``
steps (used only to align Q with the leading Oseledets subspace, not counted), the i-th exponent
is the accumulated sum divided by the number of counted steps. Units: nats per step (divide by
ln 10 for decades per step); a positive top exponent means nearby trajectories (and the
Jacobian products, hence the gradients of a loss far ahead) grow exponentially.

The top exponent is also that of the transposed products, so it is the long-run rate of change
of ``log ‖∂L/∂s_k‖`` with the distance from the loss (docs/design.md §8).

Re-orthonormalising less often (``qr_every > 1``) multiplies several Jacobians between two QRs:
cheaper, and the top exponents are unaffected, but the lowest ones are ruined as soon as the
product's condition number exceeds 1/eps of the dtype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["lyapunov_exponents", "lyapunov_spectrum_callable"]


def _segments(start: int, stop: int, every: int) -> list[tuple[int, int]]:
    """``[a, b)`` blocks of at most ``every`` steps covering ``[start, stop)``."""
    return [(a, min(a + every, stop)) for a in range(start, stop, every)]


def _check_args(T: int, S: int, k: int | None, warmup: int, qr_every: int) -> int:
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    k = S if k is None else int(k)
    if not 1 <= k <= S:
        raise ValueError(f"k must be between 1 and the state size {S}, got {k}")
    if not 0 <= warmup < T:
        raise ValueError(f"warmup must be in [0, T) = [0, {T}), got {warmup}")
    if qr_every < 1:
        raise ValueError(f"qr_every must be >= 1, got {qr_every}")
    return k


def lyapunov_exponents(
    jacobian: Callable[[int], Tensor],
    T: int,
    *,
    k: int | None = None,
    warmup: int = 0,
    qr_every: int = 1,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The k leading Lyapunov exponents of each trajectory of a batch, from its Jacobians.

    Args:
        jacobian: ``jacobian(t) -> J_t = ∂s_t/∂s_{t-1}`` as ``[B, S, S]``, for t in 0..T-1 (a
            :func:`rnn_diag.dynamics.cells.linearise` object is accepted too).
        T: number of steps.
        k: number of exponents (default: all S).
        warmup: initial steps used to align the tangent block but not counted.
        qr_every: steps between two QR factorisations.
        dtype: compute dtype of the tangent block (default: the Jacobians'); the sums of
            ``log |R_ii|`` are always float64.
        generator: random source of the initial orthonormal block (default: fixed seed).

    Returns:
        float64 ``[B, k]``, nats per step, each row descending. ``-inf`` where a direction is
        annihilated exactly (e.g. dead relu units). A trajectory whose Jacobians hold inf or
        NaN gets a row of NaN, with a RuntimeWarning.

    Example:
        >>> W = torch.tensor([[2.0, 1.0], [0.0, 0.5]], dtype=torch.float64)  # eigenvalues 2, 0.5
        >>> lyapunov_exponents(lambda t: W[None], T=200, warmup=20)
        tensor([[ 0.6931, -0.6931]], dtype=torch.float64)
    """
    if not callable(jacobian):
        jacobian = getattr(jacobian, "jacobian", None)
        if jacobian is None:
            raise TypeError("jacobian must be a callable t -> J_t [B, S, S]")
    J0 = jacobian(0)
    if J0.dim() != 3 or J0.shape[1] != J0.shape[2]:
        raise ValueError(f"jacobian(t) must return [B, S, S], got shape {tuple(J0.shape)}")
    B, S = J0.shape[0], J0.shape[1]
    k = _check_args(T, S, k, warmup, qr_every)
    dtype = dtype or J0.dtype
    device = J0.device
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    start = torch.randn(B, S, k, generator=generator, dtype=torch.float64).to(dtype).to(device)
    # geqrf keeps Q implicit (Householder reflectors); J·Q is then one ormqr call, which beats
    # forming Q and multiplying when k is close to S. Thin blocks use explicit Q and matmul.
    implicit = 2 * k > S
    factor = torch.geqrf(start) if implicit else torch.linalg.qr(start).Q
    sums = torch.zeros(B, k, dtype=torch.float64, device=device)
    bad = torch.zeros(B, dtype=torch.bool, device=device)
    first_bad = None
    segments = [(a, b, False) for a, b in _segments(0, warmup, qr_every)]
    segments += [(a, b, True) for a, b in _segments(warmup, T, qr_every)]
    for a, b, counted in segments:
        J = (J0 if a == 0 else jacobian(a)).to(dtype)
        if implicit:
            M = torch.ormqr(*factor, J, left=False)[..., :k]  # J_a · Q
        else:
            M = torch.matmul(J, factor)
        for t in range(a + 1, b):
            M = torch.matmul(jacobian(t).to(dtype), M)
        finite = torch.isfinite(M).flatten(1).all(1)
        if not bool(finite.all()):
            if first_bad is None:
                first_bad = a
            bad |= ~finite
            # Keep LAPACK away from inf/NaN: restart those rows from the initial block.
            M = torch.where(finite.view(-1, 1, 1), M, start)
        if implicit:
            factor = torch.geqrf(M)
            diag = factor[0].diagonal(dim1=-2, dim2=-1)
        else:
            Q, R = torch.linalg.qr(M)
            factor, diag = Q, R.diagonal(dim1=-2, dim2=-1)
        if counted:
            sums += diag.abs().double().log()
    exponents = sums / (T - warmup)
    exponents = torch.sort(exponents, dim=1, descending=True).values
    if first_bad is not None:
        exponents[bad] = torch.nan
        warnings.warn(
            f"non-finite Jacobians (inf or NaN) from step {first_bad} on in "
            f"{int(bad.sum())} of {B} trajectories: their Lyapunov exponents are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    return exponents.cpu()


def _nan_result(k: int, reason: str, stacklevel: int = 3) -> Tensor:
    warnings.warn(reason, RuntimeWarning, stacklevel=stacklevel)
    return torch.full((k,), torch.nan, dtype=torch.float64)


class _ChunkedJacobians:
    """``jacobian(t) -> [1, S, S]`` of ``step`` w.r.t. h at ``(h_prev[t], x[t])``, computed a
    chunk of steps at a time with ``vmap(jacrev)`` (one ``jacrev`` call per step where the
    step function cannot be vmapped)."""

    def __init__(self, step, h_prev: Tensor, xs, chunk: int = 64):
        self.step, self.h_prev, self.xs, self.chunk = step, h_prev, xs, chunk
        self.start, self.block = -1, None
        self.vectorised = True

    def _x(self, t):
        return None if self.xs is None else self.xs[t]

    def _compute(self, a: int, b: int) -> Tensor:
        step = self.step
        if self.xs is None:
            fn = lambda h: step(h, None)
            jac = torch.func.jacrev(fn)
            if self.vectorised:
                try:
                    return torch.func.vmap(jac)(self.h_prev[a:b])
                except Exception:  # data-dependent control flow, .item(), in-place ops, ...
                    self.vectorised = False
            return torch.stack([jac(self.h_prev[t]) for t in range(a, b)])
        jac = torch.func.jacrev(step, argnums=0)
        if self.vectorised:
            try:
                return torch.func.vmap(jac)(self.h_prev[a:b], self.xs[a:b])
            except Exception:
                self.vectorised = False
        return torch.stack([jac(self.h_prev[t], self.xs[t]) for t in range(a, b)])

    def __call__(self, t: int) -> Tensor:
        if not self.start <= t < self.start + self.chunk or self.block is None:
            self.start = t - t % self.chunk
            stop = min(self.start + self.chunk, self.h_prev.shape[0])
            with torch.enable_grad():
                self.block = self._compute(self.start, stop).detach()
        return self.block[t - self.start].unsqueeze(0)


def _check_state(out, h: Tensor) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != h.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"step(h, x) must return the next state with the same shape as h, {tuple(h.shape)}; "
            f"got {got}. The callable form works on one state vector: pass h0 as a 1-D tensor "
            "[S] and return a 1-D tensor [S] (concatenate multi-part states such as (h, c))."
        )
    return out


def lyapunov_spectrum_callable(
    step: Callable[[Tensor, Tensor | None], Tensor],
    h0: Tensor,
    inputs: Tensor | None = None,
    *,
    steps: int | None = None,
    k: int | None = None,
    warmup: int = 0,
    qr_every: int = 1,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Lyapunov exponents of the map ``h_t = step(h_{t-1}, x_t)`` along the trajectory from h0.

    The trajectory is run without grad; the Jacobians ``∂step/∂h`` are taken with
    ``torch.func.jacrev`` (vectorised over chunks of steps with ``vmap`` when the function
    allows it), then fed to :func:`lyapunov_exponents`.

    Args:
        step: ``(h [S], x) -> h_next [S]`` on one state vector; ``x`` is ``inputs[t]``, or None
            when ``inputs`` is None.
        h0: ``[S]`` initial state (its dtype is the compute dtype).
        inputs: ``[T, ...]`` inputs, one per step, or None (then ``steps`` is required).
        steps: number of steps T (default ``len(inputs)``; with inputs, the first ``steps``).
        k, warmup, qr_every, dtype: see :func:`lyapunov_exponents` (dtype defaults to h0's).

    Returns:
        float64 ``[k]``, nats per step, descending. NaN (with a RuntimeWarning) when the
        trajectory or its Jacobians become non-finite.

    Raises:
        ValueError: ``step`` returns something other than a tensor of h0's shape; bad sizes.

    Example:
        >>> W = 0.5 * torch.eye(2, dtype=torch.float64)
        >>> lyapunov_spectrum_callable(lambda h, x: W @ h, torch.ones(2, dtype=torch.float64),
        ...                            steps=50)                   # log 0.5 twice
        tensor([-0.6931, -0.6931], dtype=torch.float64)
    """
    h0 = torch.as_tensor(h0)
    if h0.dim() != 1:
        raise ValueError(f"h0 must be one state vector [S], got shape {tuple(h0.shape)}")
    if not h0.is_floating_point():
        h0 = h0.to(torch.get_default_dtype())
    if inputs is None:
        if steps is None:
            raise ValueError("without inputs, pass steps= (the number of steps to run)")
        T = int(steps)
    else:
        T = len(inputs) if steps is None else int(steps)
        if len(inputs) < T:
            raise ValueError(f"steps={T} exceeds the {len(inputs)} inputs given")
        inputs = inputs[:T]
    k = _check_args(T, h0.shape[0], k, warmup, qr_every)

    states = torch.empty(T + 1, *h0.shape, dtype=h0.dtype, device=h0.device)
    states[0] = h0.detach()
    with torch.no_grad():
        for t in range(T):
            out = _check_state(step(states[t], None if inputs is None else inputs[t]), h0)
            states[t + 1] = out
            if not math.isfinite(float(out.abs().max())):
                return _nan_result(
                    k,
                    f"the trajectory became non-finite (inf or NaN) at step {t}: the state "
                    "explodes, so its Lyapunov exponents are undefined; returning NaN",
                )
    jac = _ChunkedJacobians(step, states[:-1], inputs)
    return lyapunov_exponents(jac, T, k=k, warmup=warmup, qr_every=qr_every, dtype=dtype)[0]
