"""Fixed points of a GRU: the batched search and its batched Jacobians, against baselines timed
in the same run.

Setting: ``nn.GRU(3, 64)`` with PyTorch's default initialisation and its recurrent weights
multiplied by ``--gain`` (4 by default, seed 1, so that the autonomous map has several fixed
points and saddles, not a single attractor), run for T = 200 steps on 16 random input
sequences; 1,024 initial states are drawn from those states with :func:`sample_states`
(``noise=0.05``). The map whose fixed points are sought is the GRU's step with input x = 0,
written below as a plain batched float64 function of the weights (``step(h) -> h'``,
PyTorch's GRU equations).

(a) **search**: ``find_fixed_points(step, x0)`` (Levenberg–Marquardt, ``tol_q=1e-12``) against
    the baseline ``method="adam"`` (gradient descent on q, what FixedPointFinder does) with
    the same tolerance and ``--adam-iters`` iterations. Printed: wall time, candidates
    converged, unique converged points, classes, and the largest q among converged ones.
(b) **Jacobians** at the 1,024 initial states, three ways, with the largest difference to the
    first:

    * ``vmap(jacrev)``: ``rnn_diag.dynamics.fixed_points.batched_jacobians`` (one call; on
      the CPU jacrev feeds the S cotangents in chunks of 4 at K = 1,024, see its code);
    * ``rows over the batch``: one ``autograd.grad`` per output coordinate i (S = 64 backward
      passes, each over all 1,024 states at once, ``grad_outputs`` = e_i in every row), which
      gives row i of every state's Jacobian — the fastest loop a user would write;
    * ``per state``: a loop over states, each with S backward passes through a batch of one,
      the way ``torch.autograd.functional.jacobian`` (non-vectorised, which FixedPointFinder's
      PyTorch port imports) works on one state. 1,024 × 64 = 65,536 backward passes: timed on
      the first ``--per-state`` states and scaled to 1,024 (the output says so).

    Ratios are baseline time / ``vmap(jacrev)`` time (fastest of ``--repeats``; the variants
    alternate within every repetition).

Usage::

    python benchmarks/fixed_points.py [--threads 2] [--repeats 5] [--gain 4] [--seed 1]
                                      [--adam-iters 3000] [--per-state 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _bootstrap import import_rnn_diag  # noqa: E402
from _measure import machine_line, table  # noqa: E402
from torch import nn

rd = import_rnn_diag()
from rnn_diag.dynamics.fixed_points import (  # noqa: E402
    batched_jacobians,
    find_fixed_points,
    sample_states,
)

I, H, T, B, K = 3, 64, 200, 16, 1024


def _gru(gain: float, seed: int = 0) -> nn.GRU:
    torch.manual_seed(seed)
    gru = nn.GRU(I, H)
    with torch.no_grad():
        gru.weight_hh_l0.mul_(gain)
    return gru


def gru_step(gru: nn.GRU):
    """The GRU's step at input x = 0 as a batched float64 map ``[K, H] -> [K, H]``."""
    W_hh = gru.weight_hh_l0.detach().double()
    b_ih = gru.bias_ih_l0.detach().double()
    b_hh = gru.bias_hh_l0.detach().double()
    W_hr, W_hz, W_hn = W_hh.chunk(3, 0)
    (bi_r, bi_z, bi_n), (bh_r, bh_z, bh_n) = b_ih.chunk(3), b_hh.chunk(3)

    def step(h: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(bi_r + h @ W_hr.T + bh_r)
        z = torch.sigmoid(bi_z + h @ W_hz.T + bh_z)
        n = torch.tanh(bi_n + r * (h @ W_hn.T + bh_n))
        return (1 - z) * n + z * h

    return step


def _initial_states(gru: nn.GRU) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        states, _ = gru(torch.randn(T, B, I, generator=g))
    return sample_states(states.double(), K, noise=0.05, generator=g)


def jac_rows_over_batch(step, h: torch.Tensor) -> torch.Tensor:
    """Row i of every state's Jacobian from one backward pass over the batch, i = 0 … S-1."""
    x = h.detach().requires_grad_(True)
    with torch.enable_grad():
        y = step(x)
        rows = []
        for i in range(h.shape[1]):
            e = torch.zeros_like(y)
            e[:, i] = 1
            rows.append(torch.autograd.grad(y, x, e, retain_graph=True)[0])
    return torch.stack(rows, 1)


def jac_per_state(step, h: torch.Tensor) -> torch.Tensor:
    """S backward passes per state, one state at a time."""
    out = []
    eye = torch.eye(h.shape[1], dtype=h.dtype)
    for k in range(h.shape[0]):
        x = h[k:k + 1].detach().requires_grad_(True)
        with torch.enable_grad():
            y = step(x)
            out.append(torch.stack([torch.autograd.grad(y, x, e[None], retain_graph=True)[0][0]
                                    for e in eye]))
    return torch.stack(out)


def _timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return time.perf_counter() - t0, res


def _search_row(name: str, seconds: float, fps) -> list[str]:
    c = fps.counts()
    conv = fps.converged
    n_conv_cand = int(fps.count[conv].sum())
    qmax = float(fps.q[conv].max()) if bool(conv.any()) else float("nan")
    return [name, f"{seconds:.2f}", f"{n_conv_cand}/{int(fps.count.sum())}", str(int(conv.sum())),
            f"{c['stable']}/{c['saddle']}/{c['unstable']}/{c['marginal']}",
            str(c["unconverged"]), f"{qmax:.1e}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gain", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--adam-iters", type=int, default=3000)
    ap.add_argument("--per-state", type=int, default=64,
                    help="states timed by the per-state loop (scaled to 1,024)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gru = _gru(args.gain, args.seed)
    step = gru_step(gru)
    x0 = _initial_states(gru)
    print(machine_line(torch.device("cpu"), rd.__version__))
    print(f"nn.GRU({I}, {H}), weight_hh x {args.gain}, x = 0; {K} initial states from T={T}, "
          f"B={B} random-input trajectories (+5% noise)")

    # (a) the search
    find_fixed_points(step, x0[:8])  # warm-up (vmap / jacrev tracing)
    t_newton, fps = _timed(lambda: find_fixed_points(step, x0))
    t_adam, fps_adam = _timed(lambda: find_fixed_points(step, x0, method="adam",
                                                        max_iters=args.adam_iters))
    print("\n(a) search, tol_q = 1e-12, tol_unique = 1e-6 (max-abs)")
    print(table([_search_row("newton (LM)", t_newton, fps),
                 _search_row(f"adam, {args.adam_iters} iters", t_adam, fps_adam)],
                ["method", "wall s", "candidates converged", "unique converged",
                 "stable/saddle/unstable/marginal", "not converged (unique)",
                 "max q converged"]))
    print(f"adam / newton wall time: {t_adam / t_newton:.1f}x;  {fps!r}")

    # (b) Jacobians
    n_ps = min(args.per_state, K)
    times: dict[str, list[float]] = {"vmap": [], "rows": [], "per_state": []}
    ref = rows = per = None
    for rep in range(args.repeats + 1):
        order = ["vmap", "rows", "per_state"]
        for v in (order if rep % 2 == 0 else order[::-1]):
            if v == "vmap":
                t, ref = _timed(lambda: batched_jacobians(step, x0))
            elif v == "rows":
                t, rows = _timed(lambda: jac_rows_over_batch(step, x0))
            else:
                t, per = _timed(lambda: jac_per_state(step, x0[:n_ps]))
                t *= K / n_ps
            if rep:  # the first round is a warm-up
                times[v].append(t)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    d_rows = float((rows - ref).abs().max())
    d_per = float((per - ref[:n_ps]).abs().max())
    print(f"\n(b) Jacobians [{K}, {H}, {H}] float64, fastest of {args.repeats} (median)")
    print(table([
        ["vmap(jacrev)", "1 call", f"{best['vmap'] * 1e3:.1f} ({med['vmap'] * 1e3:.1f})",
         "1.0x", "-"],
        ["rows over the batch", f"{H} backward", f"{best['rows'] * 1e3:.1f} "
         f"({med['rows'] * 1e3:.1f})", f"{best['rows'] / best['vmap']:.1f}x", f"{d_rows:.1e}"],
        [f"per state (x{K // n_ps} from {n_ps})", f"{K * H} backward",
         f"{best['per_state'] * 1e3:.0f} ({med['per_state'] * 1e3:.0f})",
         f"{best['per_state'] / best['vmap']:.0f}x", f"{d_per:.1e}"],
    ], ["method", "passes", "ms", "time / vmap", "max |diff|"]))


if __name__ == "__main__":
    main()
