"""Cost of ``attach(jacobians="estimate")`` against a training step, by number of samples.

The setting of GitHub issue 17: ``nn.RNN(3, 10)`` and a ``Linear(10, 3)`` read-out of the last
step, T = 1000, B = 400, cross-entropy, Adam. For each ``jacobian_samples`` value it prints,
from one run:

* **estimate / step**: the estimate's own cost on the recorded trajectory, divided by a plain
  training step (zero_grad, forward, loss, backward, Adam step) measured in the same run. The
  estimate is timed as ``probe.jacobian_log10_norms(target=T - 2)``, which rebuilds the
  linearisation of the first ``n`` samples and runs the forward-backward estimate on it: the
  same work as the norms recorded after ``backward()`` (those end at T - 1), isolated from the
  rest of the probed step, whose own cost and noise would otherwise swamp it. The fastest of
  the repetitions of each is used: on a shared machine other jobs only ever add time (the
  ratio of the medians is printed too).
* **eigvalsh / step**: the part of it spent in the batched top-eigenvalue call of the
  estimate (``torch.linalg.eigvalsh`` on the ``[T, n, 4, 4]`` Gram matrices), timed alone on
  random matrices of that shape.

All variants alternate within every repetition, so they share the machine's noise; the default
is one torch thread (``--threads``), steadier on a shared machine. ``default`` is
``attach(jacobians="estimate")`` without ``jacobian_samples``.

Usage::

    python benchmarks/jacobian_estimate.py [--repeats 7] [--threads 1] [--samples all,64,32,16,8]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from _bootstrap import import_rnn_diag  # noqa: E402
from _measure import machine_line, table  # noqa: E402
from torch import nn

rd = import_rnn_diag()

T, B, I, H, C = 1000, 400, 3, 10, 3
DEFAULT = "default"


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    rnn, head = nn.RNN(I, H), nn.Linear(H, C)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    x = torch.randn(T, B, I)
    y = torch.randint(0, C, (B,))
    return rnn, head, opt, x, y


def _loss(rnn, head, x, y):
    out, _ = rnn(x)
    return nn.functional.cross_entropy(head(out[-1]), y)


def _plain(rnn, head, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    _loss(rnn, head, x, y).backward()
    opt.step()


def _recorded(rnn, head, x, y, samples):
    """A probe that recorded one backward with ``jacobians="estimate"`` and ``samples``."""
    kw = {"jacobians": "estimate"}
    if samples != DEFAULT:
        kw["jacobian_samples"] = None if samples == "all" else int(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rd.ProbeWarning)
        with rd.attach(rnn, **kw) as probe:
            _loss(rnn, head, x, y).backward()
    rnn.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    return probe


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _eigvalsh_seconds(n: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    V = torch.randn(T, n, 4, 2 * H, generator=g, dtype=torch.float64)
    G = V @ V.transpose(-1, -2)
    return min(_timed(lambda: torch.linalg.eigvalsh(G)) for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", default=f"all,64,32,16,8,{DEFAULT}",
                    help="comma-separated jacobian_samples values ('all' = None, 'default')")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = [s.strip() for s in args.samples.split(",") if s.strip()]
    rnn, head, opt, x, y = _setup()
    probes = {v: _recorded(rnn, head, x, y, v) for v in variants}
    times: dict = {"step": [], **{v: [] for v in variants}}
    order = ["step", *variants]
    for rep in range(args.warmup + args.repeats):
        seq = order if rep % 2 == 0 else order[::-1]
        for v in seq:
            fn = ((lambda: _plain(rnn, head, opt, x, y)) if v == "step"
                  else (lambda v=v: probes[v].jacobian_log10_norms(target=T - 2)))
            t = _timed(fn)
            if rep >= args.warmup:
                times[v].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    step = best["step"]
    print(machine_line(torch.device("cpu"), rd.__version__))
    print(f"nn.RNN({I}, {H}), T={T}, B={B}; training step {step * 1e3:.0f} ms (fastest of "
          f"{args.repeats}; median {med['step'] * 1e3:.0f} ms)")
    rows = []
    for v in variants:
        n = probes[v].jacobian_log10_norms().shape[1]
        eig = _eigvalsh_seconds(n, 3) / step
        rows.append([str(v), str(n), f"{best[v] * 1e3:.1f}", f"{best[v] / step:.3f}",
                     f"{med[v] / med['step']:.3f}", f"{eig:.3f}"])
    print(table(rows, ["jacobian_samples", "samples", "estimate ms", "estimate / step",
                       "(medians)", "eigvalsh / step"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with rd.attach(rnn, jacobians="estimate"):
            _loss(rnn, head, x, y).backward()
    named = [str(w.message) for w in caught if issubclass(w.category, rd.ProbeWarning)]
    print("default warning:", named[0] if named else "(none)")


if __name__ == "__main__":
    main()
