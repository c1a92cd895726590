"""Fixed points and slow points of a recurrent map h ↦ F(h) (Sussillo & Barak, 2013).

A fixed point h* satisfies F(h*) = h*; a *slow point* is a local minimum of the speed

    q(h) = ½ ‖F(h) − h‖²

with q > 0. Starting from many candidate states (usually drawn from recorded trajectories with
:func:`sample_states`), :func:`find_fixed_points` minimises q for all candidates at once, in
float64, then merges candidates that reached the same point and classifies each point from the
eigenvalues of the Jacobian J_F(h*) = ∂F/∂h: for a discrete-time map a direction is stable when
|λ| < 1 and unstable when |λ| > 1.

``step`` is any function mapping a batch of states ``[K, S]`` to ``[K, S]`` row by row (row i of
the output depends only on row i of the input), written with plain tensor operations so that
``torch.func.vmap(torch.func.jacrev(...))`` applies to it; a fixed input x is closed over by the
caller (``rnn_diag.modules.fixed_points.step_function`` builds such a step from PyTorch's
recurrent modules). The Jacobians of all candidates come from one ``vmap(jacrev)`` call, never
one column at a time.

Two optimisers:

* ``method="newton"`` (default): Levenberg–Marquardt on the residual r(h) = F(h) − h, whose
  Jacobian is A = J_F − I. Each iteration solves (AᵀA + μI) δ = −Aᵀr for every active
  candidate (batched Cholesky), accepts the step only where q decreases and adapts μ per
  candidate with Nielsen's schedule (μ shrinks by up to 3× after a good step, grows 2×, 4×, 8×…
  after rejected ones; rejected candidates retry with the larger μ within the same iteration,
  reusing the Jacobian). Near a fixed point μ → 0 and the step is Newton's, so convergence is
  quadratic. Candidates that reach q ≤ ``tol_q`` are then polished with up to
  ``_POLISH_STEPS`` undamped Newton steps (accepted only where q decreases), so converged points
  are accurate to rounding, not merely to √(2·tol_q). Memory: K·S² float64 per iteration.
* ``method="adam"``: gradient descent on q with Adam (for very large S, where K Jacobians of
  S × S do not fit): the gradient Aᵀr comes from one backward pass over the batch; each
  candidate has its own learning rate, halved (the step undone and the candidate's Adam
  moments reset) when q would increase and grown by 5% after each accepted step; each
  candidate's gradient norm is clipped at 3× a running mean of its own gradient norms (the
  adaptive learning rate and clipping of FixedPointFinder, Golub & Sussillo 2018).
  No polishing: points are accurate to about √(2·tol_q) / σ_min(A), so copies of one point
  may stay farther apart than ``tol_unique``; ask for a smaller ``tol_q`` (e.g. 1e-24) or a
  larger ``tol_unique`` with it.

A candidate stops when q ≤ ``tol_q`` (converged), when it cannot decrease q any more (a local
minimum of q: gradient Aᵀr numerically zero, or no damped step decreases q), or after
``max_iters``. Candidates that stop with q > ``tol_q`` are slow points or unfinished runs; they
are reported with ``converged=False`` and their q, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["FixedPoints", "STABILITY_CLASSES", "find_fixed_points", "sample_states"]

Step = Callable[[Tensor], Tensor]

#: The stability classes, in the order used by counts and summaries.
STABILITY_CLASSES = ("stable", "saddle", "unstable", "marginal")

_POLISH_STEPS = 3
_LM_TAU = 1e-3  # initial μ = τ · max diag(AᵀA) (Nielsen / Madsen et al.)
_LM_RETRIES = 10  # damped solves per Jacobian for a rejected candidate
_LM_MU_MAX = 1e16  # relative to 1 + max diag(AᵀA): beyond it no step can decrease q
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-16
_JAC_CHUNK_ELEMENTS = 1 << 18


@dataclass
class FixedPoints:
    """Fixed points (and slow points) found by :func:`find_fixed_points`; P points of a state of
    size S. All tensors are on the device of the initial states.

    Attributes:
        points: ``[P, S]`` float64, the states.
        q: ``[P]`` float64, the speed ½‖F(h) − h‖² at each point (state units squared).
        converged: ``[P]`` bool, q ≤ ``tol_q``. False: a slow point (local minimum of q) or a
            candidate that ran out of iterations.
        outlier: ``[P]`` bool, farther from the centroid of the initial states than
            ``outlier_factor`` × the median distance of the initial states from it (kept).
        count: ``[P]`` int64, candidates merged into the point (sums to K).
        jacobians: ``[P, S, S]`` float64, J_F = ∂F/∂h at each point.
        eigenvalues: ``[P, S]`` complex128, of each Jacobian, sorted by modulus, descending
            (ties, e.g. a conjugate pair, by real then imaginary part, descending).
        eigenvectors: ``[P, S, S]`` complex128, unit-norm columns in the eigenvalues' order.
        n_unstable: ``[P]`` int64, eigenvalues with |λ| > 1 + ``marginal_tol``.
        stability: P strings: "stable" (every |λ| < 1 − tol), "saddle" (some > 1 + tol and some
            < 1 − tol), "unstable" (some > 1 + tol and none < 1 − tol: every |λ| > 1 + tol, or
            unstable and marginal directions only), "marginal" (none > 1 + tol, some within tol
            of 1); "unknown" where the Jacobian holds NaN or inf (F not finite there).
        marginal_tol: the tolerance used for the classes.
    """

    points: Tensor
    q: Tensor
    converged: Tensor
    outlier: Tensor
    count: Tensor
    jacobians: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    n_unstable: Tensor
    stability: list[str] = field(default_factory=list)
    marginal_tol: float = 1e-3

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def max_modulus(self) -> Tensor:
        """``[P]`` float64: the largest |λ| at each point (0 for S = 0)."""
        if self.eigenvalues.shape[-1] == 0:
            return torch.zeros(len(self), dtype=torch.float64, device=self.points.device)
        return self.eigenvalues[:, 0].abs()

    def _is(self, kind: str) -> Tensor:
        m = torch.tensor([s == kind for s in self.stability], dtype=torch.bool)
        return m.to(self.points.device) & self.converged & ~self.outlier

    @property
    def stable(self) -> Tensor:
        """``[P]`` bool: converged, non-outlier stable points."""
        return self._is("stable")

    @property
    def saddle(self) -> Tensor:
        """``[P]`` bool: converged, non-outlier saddles."""
        return self._is("saddle")

    @property
    def unstable(self) -> Tensor:
        """``[P]`` bool: converged, non-outlier unstable points."""
        return self._is("unstable")

    @property
    def marginal(self) -> Tensor:
        """``[P]`` bool: converged, non-outlier marginal points."""
        return self._is("marginal")

    def counts(self) -> dict[str, int]:
        """Points per class among converged non-outlier points, plus ``"unconverged"`` (points
        with converged False, outliers or not) and ``"outlier"`` (converged outliers)."""
        out = {k: int(self._is(k).sum()) for k in STABILITY_CLASSES}
        out["unconverged"] = int((~self.converged).sum())
        out["outlier"] = int((self.converged & self.outlier).sum())
        return out

    def subset(self, index) -> FixedPoints:
        """The points selected by ``index`` (a boolean mask ``[P]``, indices or a slice)."""
        if isinstance(index, Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten().cpu()
        idx = torch.arange(len(self))[index].tolist()
        if isinstance(idx, int):
            idx = [idx]
        t = torch.tensor(idx, dtype=torch.long, device=self.points.device)
        return FixedPoints(
            points=self.points[t], q=self.q[t], converged=self.converged[t],
            outlier=self.outlier[t], count=self.count[t], jacobians=self.jacobians[t],
            eigenvalues=self.eigenvalues[t], eigenvectors=self.eigenvectors[t],
            n_unstable=self.n_unstable[t], stability=[self.stability[i] for i in idx],
            marginal_tol=self.marginal_tol,
        )

    def frame(self):
        """A tidy ``pandas.DataFrame``, one row per point: ``point`` (index into ``points``),
        ``q``, ``converged``, ``outlier``, ``count``, ``stability``, ``n_unstable``,
        ``max_modulus``."""
        import pandas as pd

        return pd.DataFrame({
            "point": range(len(self)),
            "q": self.q.detach().cpu().numpy(),
            "converged": self.converged.cpu().numpy(),
            "outlier": self.outlier.cpu().numpy(),
            "count": self.count.cpu().numpy(),
            "stability": list(self.stability),
            "n_unstable": self.n_unstable.cpu().numpy(),
            "max_modulus": self.max_modulus.cpu().numpy(),
        })

    def __repr__(self) -> str:
        c = self.counts()
        s = self.points.shape[-1] if self.points.dim() == 2 else 0
        plural = {"stable": "stable", "saddle": "saddles", "unstable": "unstable",
                  "marginal": "marginal"}
        classes = ", ".join(f"{c[k]} {plural[k]}" for k in STABILITY_CLASSES)
        return (f"FixedPoints({len(self)} points of S={s}: {classes}; "
                f"{c['unconverged']} not converged, {c['outlier']} converged outliers)")


# ----------------------------------------------------------------------------------------------
# building blocks


def _residual(step: Step, h: Tensor) -> Tensor:
    r = step(h) - h
    if r.shape != h.shape:
        raise ValueError(f"step must map [K, S] to [K, S]; got {tuple(h.shape)} -> "
                         f"{tuple(r.shape)}")
    return r


def _q(r: Tensor) -> Tensor:
    return 0.5 * (r * r).sum(-1)


def batched_jacobians(step: Step, h: Tensor) -> Tensor:
    """∂F/∂h at every row of ``h [K, S]``: ``[K, S, S]`` (row i, column j = ∂F_i/∂h_j), from one
    ``torch.func.vmap(torch.func.jacrev(f))`` call with ``f(x) = step(x[None])[0]``.

    >>> W = torch.tensor([[0.5, 1.0], [0.0, 0.25]], dtype=torch.float64)
    >>> J = batched_jacobians(lambda h: h @ W.T, torch.zeros(3, 2, dtype=torch.float64))
    >>> J.shape, bool((J == W).all())
    (torch.Size([3, 2, 2]), True)
    """
    K, S = h.shape
    if K == 0:
        return h.new_zeros(0, S, S)

    def one(x: Tensor) -> Tensor:
        return step(x[None])[0]

    # On the CPU the S cotangents go through in chunks whose [chunk, K, ...] intermediates stay
    # small (~2 MB of float64 per tensor): all S at once is 2-3x slower there (memory-bound);
    # a GPU gets them all in one go.
    chunk = None if h.device.type != "cpu" else max(1, min(S, _JAC_CHUNK_ELEMENTS // (K * S)))
    with torch.enable_grad():
        return torch.func.vmap(torch.func.jacrev(one, chunk_size=chunk))(h.detach())


def _eye(S: int, like: Tensor) -> Tensor:
    return torch.eye(S, dtype=like.dtype, device=like.device)


def _sort_eig(vals: Tensor, vecs: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row of ``vals [P, S]`` by modulus, then real, then imaginary part, all
    descending (stable sorts from the last key to the first); columns of ``vecs`` follow."""
    order = torch.arange(vals.shape[-1], device=vals.device).expand(vals.shape).clone()
    for key in (vals.imag, vals.real, vals.abs()):
        k = torch.gather(key, -1, order)
        o = torch.sort(-k, dim=-1, stable=True).indices
        order = torch.gather(order, -1, o)
    vals = torch.gather(vals, -1, order)
    vecs = torch.gather(vecs, -1, order[:, None, :].expand(vecs.shape))
    return vals, vecs


def _classify(moduli: Tensor, tol: float) -> tuple[Tensor, list[str]]:
    n_unstable = (moduli > 1 + tol).sum(-1)
    n_stable = (moduli < 1 - tol).sum(-1)
    S = moduli.shape[-1]
    classes = []
    bad = torch.isnan(moduli).any(-1).tolist()
    for nu, ns, nan in zip(n_unstable.tolist(), n_stable.tolist(), bad):
        if nan:
            classes.append("unknown")
        elif nu == 0:
            classes.append("stable" if ns == S else "marginal")
        else:
            classes.append("saddle" if ns > 0 else "unstable")
    return n_unstable, classes


def _leader_clusters(x: Tensor, q: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Greedy leader clustering of ``x [K, S]``: repeatedly take the unassigned row of lowest q
    as a leader and give it every unassigned row within max-abs distance ``tol``. Returns
    ``(leaders [P] row indices, label [K] cluster of each row)``, leaders in ascending q."""
    K = x.shape[0]
    label = torch.full((K,), -1, dtype=torch.long, device=x.device)
    qq = torch.where(torch.isnan(q), torch.full_like(q, math.inf), q)
    order = torch.argsort(qq, stable=True)
    leaders = []
    pos = 0
    order_l = order.tolist()
    unassigned = torch.ones(K, dtype=torch.bool, device=x.device)
    while pos < K:
        i = order_l[pos]
        pos += 1
        if not bool(unassigned[i]):
            continue
        d = (x - x[i]).abs().amax(-1) if x.shape[-1] else torch.zeros(K, device=x.device)
        d = torch.nan_to_num(d, nan=math.inf)
        members = unassigned & (d <= tol)
        members[i] = True
        label[members] = len(leaders)
        unassigned &= ~members
        leaders.append(i)
    return torch.tensor(leaders, dtype=torch.long, device=x.device), label


# ----------------------------------------------------------------------------------------------
# optimisers


def _levenberg_marquardt(step: Step, h: Tensor, tol_q: float, max_iters: int,
                         progress: bool) -> tuple[Tensor, Tensor]:
    K, S = h.shape
    eye = _eye(S, h)
    r = _residual(step, h)
    q = _q(r)
    mu = torch.full((K,), math.nan, dtype=h.dtype, device=h.device)
    nu = torch.full((K,), 2.0, dtype=h.dtype, device=h.device)
    active = torch.isfinite(q) & (q > tol_q)
    bar = _bar(progress, max_iters, "newton")
    for _ in range(max_iters):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        ha, ra, qa = h[idx], r[idx], q[idx]
        A = batched_jacobians(step, ha) - eye
        At = A.transpose(-1, -2)
        g = (At @ ra[..., None])[..., 0]
        H = At @ A
        dmax = H.diagonal(dim1=-2, dim2=-1).amax(-1)
        mua, nua = mu[idx], nu[idx]
        fresh = torch.isnan(mua)
        mua = torch.where(fresh, _LM_TAU * dmax.clamp_min(torch.finfo(h.dtype).tiny), mua)
        # stationary: r numerically orthogonal to the range of A (local minimum of q)
        gscale = torch.linalg.matrix_norm(A) * ra.norm(dim=-1)
        stuck = g.norm(dim=-1) <= 1e-14 * gscale + torch.finfo(h.dtype).tiny
        todo = ~stuck
        for _retry in range(_LM_RETRIES):
            t = todo.nonzero().flatten()
            if t.numel() == 0:
                break
            L, info = torch.linalg.cholesky_ex(H[t] + mua[t, None, None] * eye)
            delta = -torch.cholesky_solve(g[t, :, None], L)[..., 0]
            hn = ha[t] + delta
            rn = _residual(step, hn)
            qn = _q(rn)
            pred = 0.5 * (delta * (mua[t, None] * delta - g[t])).sum(-1)
            ok = (info == 0) & torch.isfinite(qn) & (qn < qa[t])
            rho = (qa[t] - qn) / pred.clamp_min(torch.finfo(h.dtype).tiny)
            factor = torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3)
            mua[t] = torch.where(ok, mua[t] * factor, mua[t] * nua[t])
            nua[t] = torch.where(ok, torch.full_like(qn, 2.0), nua[t] * 2)
            acc = t[ok]
            ha[acc], ra[acc], qa[acc] = hn[ok], rn[ok], qn[ok]
            todo[acc] = False
        stuck |= mua > _LM_MU_MAX * (1 + dmax)
        h[idx], r[idx], q[idx], mu[idx], nu[idx] = ha, ra, qa, mua, nua
        active[idx] = ~stuck & (qa > tol_q) & torch.isfinite(qa)
        bar.update(1)
    bar.close()
    if max_iters > 0:
        _polish(step, h, r, q, tol_q)
    return h, q


def _polish(step: Step, h: Tensor, r: Tensor, q: Tensor, tol_q: float) -> None:
    """Undamped Newton steps on converged candidates, kept only where q decreases (in place)."""
    eye = _eye(h.shape[-1], h)
    active = (q <= tol_q) & (q > 0)
    for _ in range(_POLISH_STEPS):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            return
        A = batched_jacobians(step, h[idx]) - eye
        delta, info = torch.linalg.solve_ex(A, -r[idx])
        hn = h[idx] + delta
        rn = _residual(step, hn)
        qn = _q(rn)
        ok = (info == 0) & torch.isfinite(qn) & (qn < q[idx])
        acc = idx[ok]
        h[acc], r[acc], q[acc] = hn[ok], rn[ok], qn[ok]
        active[:] = False
        active[acc] = q[acc] > 0


def _adam(step: Step, h: Tensor, tol_q: float, max_iters: int, lr: float | None,
          progress: bool) -> tuple[Tensor, Tensor]:
    K, S = h.shape
    b1, b2 = _ADAM_BETAS

    def q_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            qx = _q(_residual(step, x))
            (gx,) = torch.autograd.grad(qx.sum(), x)
        return qx.detach(), gx

    if lr is None:
        scale = float(h.std()) if h.numel() > 1 else 1.0
        lr = 1e-2 * (scale if math.isfinite(scale) and scale > 0 else 1.0)
    lr_min = lr * 1e-12
    q, g = q_and_grad(h)
    lrs = torch.full((K,), lr, dtype=h.dtype, device=h.device)
    m = torch.zeros_like(h)
    v = torch.zeros_like(h)
    t = torch.zeros(K, dtype=h.dtype, device=h.device)
    gavg = g.norm(dim=-1)
    active = torch.isfinite(q) & (q > tol_q)
    bar = _bar(progress, max_iters, "adam")
    for _ in range(max_iters):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        ga = g[idx]
        gn = ga.norm(dim=-1)
        clip = 3 * gavg[idx]
        ga = ga * torch.where(gn > clip, clip / gn.clamp_min(1e-300), torch.ones_like(gn))[:, None]
        gavg[idx] = 0.9 * gavg[idx] + 0.1 * gn
        t[idx] += 1
        m[idx] = b1 * m[idx] + (1 - b1) * ga
        v[idx] = b2 * v[idx] + (1 - b2) * ga * ga
        mhat = m[idx] / (1 - b1 ** t[idx])[:, None]
        vhat = v[idx] / (1 - b2 ** t[idx])[:, None]
        hn = h[idx] - lrs[idx, None] * mhat / (vhat.sqrt() + _ADAM_EPS)
        qn, gn_new = q_and_grad(hn)
        ok = torch.isfinite(qn) & (qn <= q[idx])
        acc = idx[ok]
        h[acc], q[acc], g[acc] = hn[ok], qn[ok], gn_new[ok]
        lrs[idx] = torch.where(ok, lrs[idx] * 1.05, lrs[idx] * 0.5)
        rej = idx[~ok]  # momentum that points uphill would take many steps to turn: restart it
        m[rej], v[rej], t[rej] = 0.0, 0.0, 0.0
        active[idx] = (q[idx] > tol_q) & (lrs[idx] > lr_min) & (g[idx].abs().amax(-1) > 0)
        bar.update(1)
    bar.close()
    return h, q


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"fixed points ({desc})", leave=False)


# ----------------------------------------------------------------------------------------------
# public API


def find_fixed_points(
    step: Step,
    initial_states: Tensor,
    *,
    tol_q: float = 1e-12,
    tol_unique: float = 1e-6,
    max_iters: int = 500,
    method: str = "newton",
    marginal_tol: float = 1e-3,
    outlier_factor: float = 10.0,
    dtype: torch.dtype = torch.float64,
    lr: float | None = None,
    progress: bool = False,
) -> FixedPoints:
    """Fixed points and slow points of ``step`` reached from ``initial_states``.

    Args:
        step: F, mapping states ``[K, S]`` to ``[K, S]`` row by row, in plain tensor ops
            (``vmap(jacrev)`` must apply to it), accepting ``dtype`` on the states' device.
        initial_states: ``[K, S]`` candidates (any float dtype; the device used throughout).
        tol_q: a candidate has converged when q = ½‖F(h) − h‖² ≤ ``tol_q``.
        tol_unique: converged candidates within this **max-abs** (L∞) distance of a point
            are merged into it: greedy, the lowest-q candidate first, keeping its state and q
            and summing ``count``. Non-converged candidates are merged among themselves the
            same way (and kept), never with converged ones.
        max_iters: iterations per candidate (Jacobian evaluations for "newton", gradient
            steps for "adam"); 0 evaluates q at the initial states and moves nothing.
        method: "newton" (Levenberg–Marquardt, default) or "adam" (see the module docstring).
        marginal_tol: |λ| within this of 1 counts as marginal (not stable, not unstable).
        outlier_factor: a point farther (L2) from the centroid of the initial states than
            this × the median L2 distance of the initial states from that centroid is flagged
            ``outlier`` (kept). Nothing is flagged when that median is 0.
        dtype: working dtype (float64 by default).
        lr: initial learning rate for "adam" (default 0.01 × the std of the initial states);
            ignored by "newton".
        progress: show a tqdm bar over iterations.

    Returns:
        :class:`FixedPoints`, converged points first (ascending q), then non-converged ones.

    Example: the linear map h ↦ W h + b has the single fixed point (I − W)⁻¹ b.

    >>> W = torch.tensor([[0.5, 0.2], [0.0, 1.5]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    >>> fps = find_fixed_points(lambda h: h @ W.T + b, torch.randn(16, 2, dtype=torch.float64))
    >>> fps
    FixedPoints(1 points of S=2: 0 stable, 1 saddles, 0 unstable, 0 marginal; 0 not converged, 0 converged outliers)
    >>> torch.allclose(fps.points[0], torch.linalg.solve(torch.eye(2) - W, b))
    True
    >>> fps.eigenvalues[0].real.tolist(), fps.n_unstable.tolist(), int(fps.count[0])
    ([1.5, 0.5], [1], 16)
    """  # noqa: E501
    if initial_states.dim() != 2:
        raise ValueError(f"initial_states must be [K, S], got {tuple(initial_states.shape)}")
    if method not in ("newton", "adam"):
        raise ValueError(f"method must be 'newton' or 'adam', got {method!r}")
    h0 = initial_states.detach().to(dtype=dtype).clone()
    K, S = h0.shape
    with torch.no_grad():
        h = h0.clone()
        if method == "newton":
            h, q = _levenberg_marquardt(step, h, tol_q, max_iters, progress)
        else:
            h, q = _adam(step, h, tol_q, max_iters, lr, progress)
        converged = q <= tol_q
        # merge: converged among themselves, the rest among themselves
        keep, counts, conv = [], [], []
        for flag in (True, False):
            sel = (converged == flag).nonzero().flatten()
            if sel.numel() == 0:
                continue
            leaders, label = _leader_clusters(h[sel], q[sel], tol_unique)
            keep.append(sel[leaders])
            counts.append(torch.bincount(label, minlength=leaders.numel()))
            conv.append(torch.full((leaders.numel(),), flag, device=h.device))
        if keep:
            keep_t, count, conv_t = torch.cat(keep), torch.cat(counts), torch.cat(conv)
        else:
            keep_t = torch.zeros(0, dtype=torch.long, device=h.device)
            count = torch.zeros(0, dtype=torch.long, device=h.device)
            conv_t = torch.zeros(0, dtype=torch.bool, device=h.device)
        points, qp = h[keep_t], q[keep_t]
        centre = h0.mean(0)
        spread = (h0 - centre).norm(dim=-1).median() if K else h0.new_tensor(0.0)
        dist = (points - centre).norm(dim=-1)
        outlier = (dist > outlier_factor * spread) if float(spread) > 0 else (
            torch.zeros_like(conv_t))
    jac = batched_jacobians(step, points).detach()
    vals = torch.full((len(points), S), complex(math.nan, math.nan), dtype=torch.complex128,
                      device=h.device)
    vecs = torch.full((len(points), S, S), complex(math.nan, math.nan),
                      dtype=torch.complex128, device=h.device)
    finite = torch.isfinite(jac).flatten(1).all(-1)  # NaN/inf Jacobians: NaN eigenvalues
    if bool(finite.any()):
        ev, evec = torch.linalg.eig(jac[finite])
        vals[finite], vecs[finite] = _sort_eig(ev.to(torch.complex128),
                                               evec.to(torch.complex128))
    n_unstable, classes = _classify(vals.abs(), marginal_tol)
    return FixedPoints(points=points, q=qp, converged=conv_t, outlier=outlier, count=count,
                       jacobians=jac, eigenvalues=vals, eigenvectors=vecs,
                       n_unstable=n_unstable, stability=classes, marginal_tol=marginal_tol)


def sample_states(trajectories: Tensor, n: int, noise: float = 0.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """``n`` initial states drawn from recorded states, optionally jittered.

    Rows are drawn uniformly from ``trajectories`` flattened to ``[M, S]`` — without
    replacement when ``n ≤ M``, with replacement otherwise — and Gaussian noise of standard
    deviation ``noise × σ`` is added, σ being the standard deviation of all recorded entries
    pooled (one number, so saturated units get the same jitter as the others).

    Args:
        trajectories: ``[..., S]`` recorded states (e.g. ``[T, B, S]``).
        n: number of states to return.
        noise: noise scale relative to σ (0: exact recorded states).
        generator: a ``torch.Generator`` for reproducible draws; random numbers are drawn on
            its device (the CPU by default) and moved to the states' device.

    Returns:
        ``[n, S]``, in the dtype and on the device of ``trajectories``.

    >>> traj = torch.randn(50, 4, 8)
    >>> sample_states(traj, 32, noise=0.1, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([32, 8])
    """
    states = trajectories.detach().reshape(-1, trajectories.shape[-1])
    M = states.shape[0]
    if M == 0:
        raise ValueError("sample_states needs at least one recorded state")
    gdev = generator.device if generator is not None else torch.device("cpu")
    if n <= M:
        idx = torch.randperm(M, generator=generator, device=gdev)[:n]
    else:
        idx = torch.randint(0, M, (n,), generator=generator, device=gdev)
    out = states[idx.to(states.device)].clone()
    if noise:
        sigma = states.std() if states.numel() > 1 else states.new_tensor(0.0)
        eps = torch.randn(out.shape, generator=generator, device=gdev, dtype=out.dtype)
        out = out + noise * sigma * eps.to(states.device)
    return out
