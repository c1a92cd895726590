"""Spectral norms of the Jacobian products ∂s_target/∂s_k for every k, in log space.

Notation: ``J_t = ∂s_t/∂s_{t-1}`` (``[B, S, S]``, t = 0..T-1; for an LSTM s = (h, c), S = 2H), so

    ∂s_target/∂s_k = P_k = J_target · J_{target-1} ⋯ J_{k+1}     (P_target = I).

The raw product under- or overflows long before the distance ``target − k`` reaches 1000 (in
float64 too), so both methods carry unit-scale matrices/vectors and a float64 log-scale, and
return ``log10 ‖P_k‖₂`` (finite wherever the true norm is non-zero).

Methods (docs/design.md §7):

* ``"exact"``: accumulate ``P_{k} = P_{k+1} J_{k+1}`` right to left, dividing by the largest
  magnitude after every product (the divisor's log goes into the scale). ‖P_k‖₂ is then taken
  as ``sqrt(λ_max(P_kᵀ P_k))`` with ``torch.linalg.eigvalsh`` on chunks of Gram matrices — 2.5×
  faster than ``svdvals`` on CPU at S = 256. Forming the Gram matrix squares the condition
  number, which destroys the *small* singular values, but not the largest: the eigenvalue
  λ_max of a symmetric matrix is computed with an absolute error of ~S·eps·‖PᵀP‖ = S·eps·λ_max,
  i.e. a relative error of ~S·eps on σ_max² (about 1e-14 in float64, 1e-5 in float32 at S=256),
  and the Gram matrix of a unit-scale P cannot overflow. Cost: T products and T symmetric
  eigenvalue problems of size S, O(T·S³).
* ``"estimate"``: the forward–backward probe. A random block of p orthonormal vectors
  (``probes``, default 4) is pushed *forward* through the ``align_steps`` (default 256)
  Jacobians that end at J_target (re-orthonormalised by QR every few steps); the forward
  product aligns it with the leading left singular subspace of long products
  J_target ⋯ J_{k+1} (Oseledets). Alignment converges geometrically, so a longer forward sweep
  buys nothing: on random tanh RNNs (H = 64 and 256, spectral radius 0.9–1.2), 100 steps
  gave the same accuracy as the whole trajectory, 50 did not. That block ``U [S, p]`` seeds
  the *backward* sweep ``V_k = J_{k+1}ᵀ V_{k+1}``, ``V_target = U`` (renormalised, log-scale
  carried), and the
  estimate of ‖P_k‖₂ is the largest singular value of ``V_k = P_kᵀ U``. This is a lower bound,
  tight once U holds P_k's top left singular vector: from a few steps of distance on.
  Measured on random tanh RNNs (H = 64, T = 1000, spectral radius 0.9–1.2, 18 models): with
  p = 4, 97.5–99.8% of distances within 10% of exact (the misses are distances ≲ 10); with a
  single vector (p = 1) only 41–99%, because the top Lyapunov exponents of such models often
  come as a near-degenerate (rotating) pair, whose top singular direction never settles.
  A *random* seed instead of the forward-aligned one underestimates by a constant factor
  (median ratio 0.08–0.6): never use that. Cost: target + min(target+1, align_steps) block
  Jacobian–vector products, O(T·S²·p); for the standard cells J_t is never formed and the
  backward sweep runs in their compiled loops (``vjp_window``, see
  :mod:`rnn_diag.dynamics.steps.base`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from .lognorm import LN10
from .steps import Steps

__all__ = ["StepOps", "jacobian_product_log10_norms", "step_ops"]

# Probe blocks are stored as rows: V [B, p, S]; the user-facing vjp/jvp act on v [B, S].


class StepOps:
    """Jacobian access along one trajectory, for blocks of row vectors.

    Any of ``jacobian(t) -> J_t [B, S, S]``, ``vjp(t, v[B, S]) -> J_tᵀ v`` and
    ``jvp(t, v[B, S]) -> J_t v``; block forms on ``V [B, p, S]`` (row j is a vector) may be
    given too. What is missing is derived from what is there (products with ``jacobian(t)``, or
    one call per row).
    """

    def __init__(
        self, jacobian=None, vjp=None, jvp=None, vjp_rows=None, jvp_rows=None, vjp_window=None
    ):
        self._jacobian = jacobian
        self._vjp, self._jvp = vjp, jvp
        self._vjp_rows, self._jvp_rows = vjp_rows, jvp_rows
        self._vjp_window = vjp_window

    @property
    def has_jacobian(self) -> bool:
        return self._jacobian is not None

    def jacobian(self, t: int) -> Tensor:
        if self._jacobian is None:
            raise ValueError("this operation needs jacobian(t) -> [B, S, S]; none was given")
        return self._jacobian(t)

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        """``(J_tᵀ v)`` for every row v of ``V [B, p, S]``, i.e. ``V J_t`` (into ``out``)."""
        if self._vjp_rows is not None:
            return self._vjp_rows(t, V, out)
        if self._vjp is not None:
            res = _rowwise(self._vjp, t, V)
        else:
            res = torch.matmul(V, self.jacobian(t).to(V.dtype))
        return res if out is None else out.copy_(res)

    def vjp_window(self, lo: int, hi: int, blocks: Tensor) -> None:
        """``blocks[k] = blocks[k + 1] J_{k+1}`` (rows) for k = hi-1 down to lo, in place;
        ``blocks`` is ``[K, B, p, S]`` with ``blocks[hi]`` given."""
        if self._vjp_window is not None:
            self._vjp_window(lo, hi, blocks)
            return
        for k in range(hi - 1, lo - 1, -1):
            self.vjp_rows(k + 1, blocks[k + 1], blocks[k])

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        """``(J_t v)`` for every row v of ``V [B, p, S]``, i.e. ``V J_tᵀ``."""
        if self._jvp_rows is not None:
            return self._jvp_rows(t, V)
        if self._jvp is not None:
            return _rowwise(self._jvp, t, V)
        return torch.matmul(V, self.jacobian(t).to(V.dtype).transpose(1, 2))


def _rowwise(fn, t: int, V: Tensor) -> Tensor:
    if V.shape[1] == 1:
        return fn(t, V[:, 0]).unsqueeze(1)
    return torch.stack([fn(t, V[:, j]) for j in range(V.shape[1])], dim=1)


def step_ops(source, vjp=None, jvp=None) -> StepOps:
    """A :class:`StepOps` from a ``jacobian(t)`` callable or a linearisation.

    A linearisation implementing the row protocol of :mod:`rnn_diag.dynamics.steps.base`
    (``vjp_rows``/``jvp_rows``, and ``vjp_window`` where it has a compiled loop) is used
    through it, without forming J_t; one that only has ``vjp_into`` and ``jacobian(t)`` (e.g.
    :class:`~rnn_diag.dynamics.steps.CallableSteps`) through those."""
    if isinstance(source, StepOps):
        return source
    if source is not None and not callable(source) and hasattr(source, "state_size"):
        jac = getattr(source, "jacobian", None)
        if isinstance(source, Steps):
            return StepOps(
                jac, vjp, jvp,
                source.vjp_rows if vjp is None else None,
                source.jvp_rows if jvp is None else None,
                getattr(source, "vjp_window", None) if vjp is None else None,
            )
        if vjp is None and hasattr(source, "vjp_into"):
            steps = source

            def vjp(t, v):
                out = torch.empty_like(v)
                steps.vjp_into(t, v, None, out)
                return out

        return StepOps(jac, vjp, jvp)
    if source is not None and not callable(source):
        raise TypeError(
            "jacobian must be a callable t -> J_t [B, S, S] or a cells.linearise(...) object, "
            f"got {type(source).__name__}"
        )
    return StepOps(source, vjp, jvp)


def _resolve_target(target: int, T: int) -> int:
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    t = target + T if target < 0 else target
    if not 0 <= t < T:
        raise ValueError(f"target={target} is outside the T={T} steps")
    return t


def jacobian_product_log10_norms(
    jacobian,
    T: int,
    target: int = -1,
    method: str = "exact",
    *,
    vjp: Callable[[int, Tensor], Tensor] | None = None,
    jvp: Callable[[int, Tensor], Tensor] | None = None,
    state_size: int | None = None,
    batch_size: int | None = None,
    probes: int = 4,
    align_steps: int = 256,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 32,
) -> Tensor:
    """``log10 ‖∂s_target/∂s_k‖₂`` (spectral norm) for every step k, in float64.

    Args:
        jacobian: ``jacobian(t) -> J_t = ∂s_t/∂s_{t-1}`` as ``[B, S, S]`` for t in 0..T-1, or a
            linearisation from :func:`rnn_diag.dynamics.cells.linearise` (then "estimate"
            applies J_t and J_tᵀ from its factors without forming J_t). May be None for
            "estimate" when ``vjp`` and ``jvp`` are given (then pass ``state_size`` and
            ``batch_size``).
        T: number of steps.
        target: the step whose state is differentiated (negative counts from the end).
        method: "exact" (renormalised product + Gram eigenvalues) or "estimate"
            (forward–backward probe); see the module docstring for both and their accuracy.
        vjp, jvp: optional ``(t, v[B, S]) -> J_tᵀ v`` and ``J_t v`` ("estimate" only; both are
            needed unless ``jacobian`` supplies the missing one).
        probes: block size p of the "estimate" probe.
        align_steps: "estimate" only: length of the forward sweep that aligns the probe block,
            ending at ``target`` (all steps up to ``target`` when fewer).
        dtype: compute dtype (default: that of the Jacobians); log-scales are always float64.
        generator: random source of the "estimate" seed (default: a fixed seed, so the result
            is deterministic).
        chunk: "exact" only: number of products whose Gram eigenvalues are computed in one
            batched call (memory: chunk·B·S² numbers).

    Returns:
        float64 ``[T, B]``: row k is ``log10 ‖P_k‖₂`` for k ≤ target (0 at k = target, where the
        product is the identity; ``-inf`` where the product is exactly zero; NaN, with a
        RuntimeWarning, where a Jacobian held inf or NaN), and NaN for k > target.
        Units: decades.

    Example:
        >>> W = 0.5 * torch.eye(3, dtype=torch.float64)          # h_t = 0.5 h_{t-1}
        >>> out = jacobian_product_log10_norms(lambda t: W[None], T=4)
        >>> out[:, 0]                                             # log10 0.5^(3-k)
        tensor([-0.9031, -0.6021, -0.3010,  0.0000], dtype=torch.float64)
    """
    target = _resolve_target(target, T)
    ops = step_ops(jacobian, vjp, jvp)
    device = None
    if ops.has_jacobian:
        J = ops.jacobian(target)
        if J.dim() != 3 or J.shape[1] != J.shape[2]:
            raise ValueError(f"jacobian(t) must return [B, S, S], got shape {tuple(J.shape)}")
        B, S, jdtype, device = J.shape[0], J.shape[1], J.dtype, J.device
    elif state_size is None or batch_size is None:
        raise ValueError("without jacobian(t), pass state_size= and batch_size=")
    else:
        B, S, jdtype = batch_size, state_size, torch.get_default_dtype()
    dtype = dtype or jdtype
    if method == "exact":
        if not ops.has_jacobian:
            raise ValueError('method="exact" needs jacobian(t) -> [B, S, S]')
        out = _exact(ops, T, target, B, S, dtype, device, chunk)
    elif method == "estimate":
        if probes < 1:
            raise ValueError(f"probes must be >= 1, got {probes}")
        if align_steps < 1:
            raise ValueError(f"align_steps must be >= 1, got {align_steps}")
        out = _estimate(ops, T, target, B, S, dtype, device, probes, generator, align_steps)
    else:
        raise ValueError(f"method must be 'exact' or 'estimate', got {method!r}")
    if bool(torch.isnan(out[: target + 1]).any()):
        warnings.warn(
            "non-finite Jacobians (inf or NaN): some Jacobian-product norms are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    return out


def _renormalise(P: Tensor, log_scale: Tensor) -> Tensor:
    """Divide each ``P[b]`` by its largest magnitude (in place), adding the log to ``log_scale``.

    An exactly zero P stays zero with log-scale -inf; a non-finite one becomes NaN."""
    m = P.abs().flatten(1).amax(dim=1)
    ok = torch.isfinite(m) & (m > 0)
    bad = torch.where(m == 0, -torch.inf, torch.nan).to(torch.float64)
    log_scale.add_(torch.where(ok, m.double().log(), bad))
    P.div_(torch.where(ok, m, torch.ones_like(m)).view(-1, *([1] * (P.dim() - 1))))
    P.masked_fill_(~(torch.isfinite(m) | (m == 0)).view(-1, *([1] * (P.dim() - 1))), torch.nan)
    return P


def _top_log10_sv(P: Tensor) -> Tensor:
    """``log10 σ_max`` of a batch ``[..., S, S]`` of unit-scale matrices via ``eigvalsh`` of the
    Gram matrix, float64 ``[...]``."""
    finite = torch.isfinite(P).flatten(-2).all(-1)
    P = torch.where(finite[..., None, None], P, torch.zeros((), dtype=P.dtype, device=P.device))
    G = P.transpose(-1, -2) @ P
    lam = torch.linalg.eigvalsh(G)[..., -1].double().clamp_min(0)
    return torch.where(finite, 0.5 * lam.log10(), torch.nan)


def _exact(ops: StepOps, T, target, B, S, dtype, device, chunk) -> Tensor:
    out = torch.full((T, B), torch.nan, dtype=torch.float64)
    out[target] = 0.0
    P = torch.eye(S, dtype=dtype, device=device).expand(B, S, S).contiguous()
    log_scale = torch.zeros(B, dtype=torch.float64, device=device)
    chunk = max(1, int(chunk))
    buf = torch.empty(min(chunk, max(target, 1)), B, S, S, dtype=dtype, device=device)
    scales = torch.empty(buf.shape[0], B, dtype=torch.float64, device=device)
    rows: list[int] = []

    def flush():
        n = len(rows)
        if n:  # rows are descending k; buf[i] holds P_{rows[i]}
            logs = _top_log10_sv(buf[:n]) + scales[:n] / LN10
            out[rows[-1] : rows[0] + 1] = logs.flip(0).cpu()
            rows.clear()

    for k in range(target - 1, -1, -1):
        P = _renormalise(torch.bmm(P, ops.jacobian(k + 1).to(dtype)), log_scale)
        buf[len(rows)] = P
        scales[len(rows)] = log_scale
        rows.append(k)
        if len(rows) == buf.shape[0]:
            flush()
    flush()
    return out


#: Between two renormalisations a probe may grow or shrink by at most about e^±_WINDOW_NATS
#: (judged from the previous window's rate), and at most _MAX_WINDOW steps pass. Its Gram
#: matrix (e^±40) then stays far inside the float32 range (e^±87).
_WINDOW_NATS = 20.0
_MAX_WINDOW = 16


def _next_window(log_growth: list[float], steps: int) -> int:
    """Steps until the next renormalisation, from the last window's growth per step."""
    rate = max(abs(g) for g in log_growth) / steps
    return int(max(1, min(_MAX_WINDOW, _WINDOW_NATS // max(rate, 1e-3))))


def _sweep(apply, V: Tensor, times: list[int], normalise, restart=None):
    """``V <- apply(times[i], V)`` for every i, renormalised by ``normalise(V) -> (V_unit,
    log_norm [B])`` every few steps (:data:`_WINDOW_NATS`). A window that ends in an exactly zero
    or non-finite block is replayed renormalising after every step, so that only a true zero or
    a non-finite Jacobian survives.

    With ``restart() -> V``, a block that is still non-finite after a single step is replaced
    by ``restart()`` (rows of the affected samples only) instead of carrying NaN on.
    Returns the final unit V and the windows ``[(first i, last i + 1, log_scale [B])]``: the
    float64 log-scale in which the raw values of those steps are expressed."""
    B = V.shape[0]
    log_scale = torch.zeros(B, dtype=torch.float64, device=V.device)
    windows = []
    window, i, n_times = 1, 0, len(times)
    while i < n_times:
        start_V, start_i = V, i
        stop = min(n_times, i + window)
        for j in range(i, stop):
            V = apply(times[j], V)
        i = stop
        unit, log_n = normalise(V)
        growth = log_n.tolist()
        finite = all(math.isfinite(g) for g in growth)
        if not finite and stop - start_i > 1:
            V, i, window = start_V, start_i, 1  # replay step by step
            continue
        if not finite and restart is not None:
            ok = torch.isfinite(log_n) & torch.isfinite(unit).flatten(1).all(1)
            unit = torch.where(ok.view(-1, 1, 1), unit, restart())
            log_n = torch.where(ok, log_n, torch.zeros_like(log_n))
        windows.append((start_i, stop, log_scale))
        log_scale = log_scale + log_n
        window = _next_window(growth, stop - start_i) if finite else 1
        V = unit
    return V, windows


def _estimate(
    ops: StepOps, T, target, B, S, dtype, device, probes, generator, align_steps
) -> Tensor:
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    p = min(probes, S)  # more probes than dimensions add nothing
    tiny = torch.finfo(dtype).tiny

    def noise():
        u = torch.randn(B, p, S, generator=generator, dtype=torch.float64).to(dtype)
        return u if device is None else u.to(device)

    def frobenius(V):
        n = torch.linalg.vector_norm(V, dim=(1, 2))
        return V / n.clamp_min(tiny).view(-1, 1, 1), n.double().log()

    def orthonormal(V):  # rows re-orthonormalised (QR); the norm only guides the windows
        if p == 1:
            return frobenius(V)
        n = torch.linalg.vector_norm(V, dim=(1, 2))
        return torch.linalg.qr(V.transpose(1, 2)).Q.transpose(1, 2), n.double().log()

    # Forward: align the block with the leading left singular subspace at `target`, over the
    # last `align_steps` steps up to it.
    # A probe that meets a non-finite Jacobian restarts after it from fresh noise (the products
    # that contain that Jacobian are reported as NaN by the backward sweep).
    u, _ = _sweep(
        ops.jvp_rows,
        orthonormal(noise())[0],
        list(range(max(0, target + 1 - align_steps), target + 1)),
        orthonormal,
        restart=lambda: orthonormal(noise())[0],
    )
    # A probe annihilated on the way (e.g. every relu unit off) restarts from fresh noise.
    zero = u.abs().flatten(1).amax(dim=1) == 0
    if bool(zero.any()):
        u = torch.where(zero.view(-1, 1, 1), orthonormal(noise())[0], u)

    # Backward: V_k = V_{k+1} J_{k+1} (rows: J_{k+1}ᵀ v), written into blocks[k].
    # Every V_k is kept in the scale of the last renormalisation; the top singular values are
    # taken at the end in one batched call.
    blocks = torch.empty(target + 1, B, p, S, dtype=dtype, device=u.device)
    scales = torch.zeros(target + 1, B, dtype=torch.float64, device=u.device)
    blocks[target] = u
    _backward_sweep(ops, blocks, scales, target, frobenius)
    # Gram matrices in the compute dtype: unit-scale blocks grow by at most e^±_WINDOW_NATS
    # between renormalisations, so their squares stay in range.
    G = blocks @ blocks.transpose(-1, -2)  # [target+1, B, p, p]
    finite = torch.isfinite(G).flatten(2).all(-1)
    G = torch.where(finite[..., None, None], G, torch.zeros((), dtype=G.dtype, device=G.device))
    if p == 1:
        top = G[..., 0, 0].double()
    else:
        top = torch.linalg.eigvalsh(G.double())[..., -1].clamp_min(0)
    logs = torch.where(finite, 0.5 * top.log() + scales, torch.nan)
    out = torch.full((T, B), torch.nan, dtype=torch.float64)
    out[: target + 1] = logs.cpu() / LN10
    return out


def _backward_sweep(ops: StepOps, blocks: Tensor, scales: Tensor, target: int, normalise) -> None:
    """Fill ``blocks[k] = blocks[k+1] J_{k+1}`` for k = target-1 .. 0 by windows of steps,
    renormalising the last block of every window (in place; ``scales[k]`` is the float64
    log-scale of ``blocks[k]``). A window that ends non-finite or exactly zero is replayed one
    step at a time, so that only a true zero or a non-finite Jacobian survives; a NaN then
    propagates to every farther block, an exact zero gives -inf."""
    log_scale = scales[target].clone()
    hi, window = target, 1
    while hi > 0:
        lo = max(0, hi - window)
        ops.vjp_window(lo, hi, blocks)
        unit, log_n = normalise(blocks[lo])
        growth = log_n.tolist()
        finite = all(math.isfinite(g) for g in growth)
        if not finite and hi - lo > 1:
            window = 1
            continue
        scales[lo:hi] = log_scale
        blocks[lo] = unit
        log_scale = log_scale + log_n
        scales[lo] = log_scale
        window = _next_window(growth, hi - lo) if finite else 1
        hi = lo
