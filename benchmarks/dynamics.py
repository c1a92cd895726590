"""Cost and accuracy of the dynamics maths, measured against a plain training step in one run.

Baseline ("training step"): ``zero_grad`` + forward + cross-entropy on the last output +
``backward()`` of ``nn.RNN(10, H)`` (tanh) + ``nn.Linear(H, 5)``, with the same T and H and a
batch of B = 32.

Measured on one sequence of the same RNN, whose ``weight_hh`` is rescaled to spectral radius 1:

* exact log10 ‖∂h_T/∂h_k‖₂ for every k (renormalised product + Gram eigenvalues), from the
  recorded trajectory (``linearise`` + :func:`jacobian_product_log10_norms`);
* the naive route, ``torch.autograd.functional.jacobian`` of h_T w.r.t. h_k through the unrolled
  cell plus ``matrix_norm(ord=2)``, per k. It is far too slow to run for every k: it is timed at
  a few distances, fitted as a + b·distance (its cost is linear in the distance), and the fit is
  summed over all T-1 distances — the output says so;
* the forward–backward "estimate" for every k, and the fraction of distances within 10% of exact;
* the full Lyapunov spectrum (float32, QR every step) via ``lyapunov_spectrum(module, ...)``,
  trajectory included, and its deviation from the float64 spectrum: largest over single
  exponents, for the top one, and for the means of the top i exponents; next to it, how much
  single exponents move in float64 when every Jacobian is perturbed by a relative 1e-7 (the
  size of float32 rounding), which is the conditioning of the problem, not of the code;
* ``spectrum()`` of a 1024 × 1024 matrix (float64 eigenvalues and singular values).

Timed items and training steps alternate within every repetition (after one untimed warm-up
round), so both see the same machine noise; the table shows medians over ``--repeats``
(at least 3) and the ratio of medians.

Usage::

    python benchmarks/dynamics.py [--quick] [--repeats N] [--T 1000] [--H 256]
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import time

import torch
from _bootstrap import import_rnn_diag  # noqa: E402
from torch import nn

rd = import_rnn_diag()
from rnn_diag.dynamics.cells import CellWeights, linearise  # noqa: E402
from rnn_diag.dynamics.jacobian_products import jacobian_product_log10_norms  # noqa: E402
from rnn_diag.dynamics.lyapunov import lyapunov_exponents  # noqa: E402
from rnn_diag.dynamics.spectrum import spectrum  # noqa: E402
from rnn_diag.modules.dynamics import lyapunov_spectrum, module_linearisation  # noqa: E402
from rnn_diag.modules.layers import layer_weights  # noqa: E402

INPUT_SIZE = 10
N_CLASSES = 5
BATCH = 32


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _setup(T: int, H: int, seed: int = 0):
    torch.manual_seed(seed)
    rnn = nn.RNN(INPUT_SIZE, H)
    with torch.no_grad():
        W = torch.randn(H, H) / math.sqrt(H)
        rnn.weight_hh_l0.copy_(W / torch.linalg.eigvals(W).abs().max())
    head = nn.Linear(H, N_CLASSES)
    x_batch = torch.randn(T, BATCH, INPUT_SIZE)
    y = torch.randint(0, N_CLASSES, (BATCH,))
    x_one = torch.randn(T, 1, INPUT_SIZE)
    return rnn, head, x_batch, y, x_one


def _train_step(rnn, head, x, y):
    rnn.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    out, _ = rnn(x)
    nn.functional.cross_entropy(head(out[-1]), y).backward()


def _naive_seconds(rnn, x_one, h, distance: int) -> float:
    """Time of the naive route for one k at the given distance from the last step."""
    T = x_one.shape[0]
    k = T - 1 - distance
    w_ih, w_hh = rnn.weight_ih_l0.detach(), rnn.weight_hh_l0.detach()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach()
    x_part = x_one[:, 0] @ w_ih.T + b

    def unrolled(hk):
        out = hk
        for t in range(k + 1, T):
            out = torch.tanh(x_part[t] + w_hh @ out)
        return out

    def naive():
        J = torch.autograd.functional.jacobian(unrolled, h[k, 0])
        torch.linalg.matrix_norm(J, ord=2)

    return _timed(naive)


def _fit_and_sum(distances: list[int], seconds: list[float], T: int) -> float:
    """Least-squares a + b·d through the samples, summed over d = 1..T-1."""
    n = len(distances)
    md, ms = sum(distances) / n, sum(seconds) / n
    var = sum((d - md) ** 2 for d in distances)
    b = sum((d - md) * (s - ms) for d, s in zip(distances, seconds)) / var if var else ms / md
    a = ms - b * md
    return sum(a + b * d for d in range(1, T))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="T=200, H=64: a smoke run")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions (>= 3)")
    ap.add_argument("--T", type=int, default=None)
    ap.add_argument("--H", type=int, default=None)
    args = ap.parse_args(argv)
    T = args.T or (200 if args.quick else 1000)
    H = args.H or (64 if args.quick else 256)
    N = 256 if args.quick else 1024
    repeats = max(3, args.repeats)

    hw = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(
        f"rnn_diag {rd.__version__}, torch {torch.__version__}, python "
        f"{platform.python_version()}; cpu ({hw})"
    )
    print(f"T={T}, H={H}, training batch B={BATCH}, {repeats} repetitions after 1 warm-up")
    print()

    rnn, head, x_batch, y, x_one = _setup(T, H)
    with torch.no_grad():
        h, _ = rnn(x_one)

    def recorded_linearisation():
        # From the recorded trajectory h (as a probe has it): gate factors only.
        w = layer_weights(rnn, 0, 0)
        w = CellWeights(w.kind, *(p.detach() for p in (w.weight_ih, w.weight_hh, w.bias_ih,
                                                         w.bias_hh)))
        with torch.no_grad():
            return linearise(w, x_one, torch.cat([torch.zeros(1, 1, H), h[:-1]]), h)

    results = {}

    def exact():
        results["exact"] = jacobian_product_log10_norms(recorded_linearisation().jacobian, T)

    def estimate():
        results["estimate"] = jacobian_product_log10_norms(
            recorded_linearisation(), T, method="estimate"
        )

    def lyap32():
        results["lyap32"] = lyapunov_spectrum(rnn, None, x_one)

    def forward_one():
        with torch.no_grad():
            rnn(x_one)

    def train():
        _train_step(rnn, head, x_batch, y)

    items = {"train": train, "forward": forward_one, "exact": exact, "estimate": estimate,
             "lyapunov": lyap32}
    times = {name: [] for name in items}
    pair = {name: [] for name in items if name != "train"}
    for fn in items.values():  # warm-up round
        fn()
    for r in range(repeats):
        order = list(items)[1:] if r % 2 == 0 else list(items)[:0:-1]
        for name in order:
            t_train = _timed(train)
            t_item = _timed(items[name])
            times["train"].append(t_train)
            times[name].append(t_item)
            pair[name].append(t_item / t_train)
    med = {name: statistics.median(v) for name, v in times.items()}
    train_s = med["train"]

    # naive autograd per k, sampled
    distances = [max(1, T // 4), max(2, T // 2), max(3, 3 * T // 4)]
    naive_s = [_naive_seconds(rnn, x_one, h, d) for d in distances]
    naive_total = _fit_and_sum(distances, naive_s, T)

    # float64 Lyapunov reference
    rnn64 = copy.deepcopy(rnn).double()
    t0 = time.perf_counter()
    lyap64 = lyapunov_spectrum(rnn64, None, x_one.double())
    lyap64_s = time.perf_counter() - t0
    lyap_diff = results["lyap32"] - lyap64
    lyap_err = float(lyap_diff.abs().max())
    top_err = float(lyap_diff[0].abs())
    ranks = torch.arange(1, H + 1, dtype=torch.float64)
    mean_err = float((lyap_diff.cumsum(0) / ranks).abs().max())
    # Conditioning of the problem itself: float64 throughout, every Jacobian perturbed by a
    # relative 1e-7 (float32 rounding), same trajectory.
    steps64, _ = module_linearisation(rnn64, x_one.double())
    g = torch.Generator().manual_seed(1)
    noise = [1 + 1e-7 * torch.randn(1, H, H, generator=g, dtype=torch.float64) for _ in range(T)]
    perturbed = lyapunov_exponents(lambda t: steps64.jacobian(t) * noise[t], T)[0]
    cond_err = float((perturbed - lyap64).abs().max())
    t0 = time.perf_counter()
    lyap_mixed = lyapunov_spectrum(rnn, None, x_one, dtype=torch.float64)
    mixed_s = time.perf_counter() - t0
    mixed_err = float((lyap_mixed - lyap64).abs().max())

    ex, es = results["exact"][:-1, 0], results["estimate"][:-1, 0]
    ratio = 10 ** (es - ex)
    within = float(((ratio > 0.9) & (ratio < 1.1)).double().mean())

    # spectrum of an N x N matrix
    W = torch.randn(N, N) / math.sqrt(N)
    spectrum(W)
    spec_times = [_timed(lambda: spectrum(W)) for _ in range(repeats)]
    spec_s = statistics.median(spec_times)

    rows = []

    def row(what, seconds, vs_train, target, ok, note=""):
        rows.append((what, seconds, vs_train, target, ok, note))

    def rng(name):
        return f"pairs {min(pair[name]):.3g}-{max(pair[name]):.3g}x"

    row(f"training step (nn.RNN fwd+bwd, B={BATCH})", train_s, 1.0, "", None)
    row("forward of the one sequence (no grad)", med["forward"], med["forward"] / train_s, "",
        None, rng("forward"))
    row("exact log10 norms, all k", med["exact"], med["exact"] / train_s, "<= 25x train",
        med["exact"] / train_s <= 25, rng("exact"))
    row(
        f"naive autograd jacobian, all k (extrapolated from d={distances})",
        naive_total,
        naive_total / train_s,
        ">= 300x exact",
        naive_total / med["exact"] >= 300,
        f"exact is {naive_total / med['exact']:.0f}x faster; samples "
        + ", ".join(f"{s:.2f}s" for s in naive_s),
    )
    row("estimate log10 norms, all k", med["estimate"], med["estimate"] / train_s,
        "<= 0.2x train", med["estimate"] / train_s <= 0.2, rng("estimate"))
    row("estimate within 10% of exact", None, None, ">= 95% of k", within >= 0.95,
        f"{100 * within:.1f}% of {T - 1} distances")
    row("Lyapunov full spectrum, float32", med["lyapunov"], med["lyapunov"] / train_s,
        "<= 8x train", med["lyapunov"] / train_s <= 8,
        rng("lyapunov") + f"; float64 run {lyap64_s:.2f}s")
    row("Lyapunov float32 vs float64, max |diff| of one exponent", None, None,
        "<= 1e-4 nats/step", lyap_err <= 1e-4,
        f"{lyap_err:.2e} at index {int(lyap_diff.abs().argmax())} (exponents "
        f"{float(lyap64[0]):+.4f} .. {float(lyap64[-1]):+.4f})")
    row("  same, top exponent", None, None, "", None, f"{top_err:.2e}")
    row("  same, mean of the top i exponents, worst i", None, None, "", None, f"{mean_err:.2e}")
    row("  float64, Jacobians perturbed by 1e-7 relative", None, None, "", None,
        f"max |diff| {cond_err:.2e}: the conditioning of single exponents at this T")
    row("Lyapunov float32 model, float64 QR (dtype=)", mixed_s, mixed_s / train_s, "", None,
        f"max |diff| vs float64 {mixed_err:.2e}; timed once")
    row(f"spectrum() of a {N}x{N} matrix (float64)", spec_s, spec_s / train_s, "", None)

    widths = (max(len(r[0]) for r in rows), 9, 9, 18, 4)
    head_ = (f"{'quantity':<{widths[0]}}  {'median s':>9}  {'vs train':>9}  "
             f"{'target':<{widths[3]}}  {'ok':<4}  note")
    print(head_)
    print("-" * len(head_))
    for what, seconds, vs, target, ok, note in rows:
        s = "" if seconds is None else f"{seconds:9.4f}"
        v = "" if vs is None else f"{vs:8.3g}x"
        o = "" if ok is None else ("yes" if ok else "NO")
        print(f"{what:<{widths[0]}}  {s:>9}  {v:>9}  {target:<{widths[3]}}  {o:<4}  {note}")
    print()
    print(
        "naive: timed once per sampled distance d (k = T-1-d), fitted as a + b*d and summed over "
        f"d = 1..{T - 1}; exact/estimate/Lyapunov include linearising the recorded trajectory "
        "(Lyapunov also runs the trajectory)."
    )


if __name__ == "__main__":
    main()
