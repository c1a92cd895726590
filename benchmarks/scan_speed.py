"""Training-step time of the scan layers: the chunked parallel scan against the sequential loop.

One training step = ``zero_grad`` + forward + ``loss = mean(outputs²)`` + ``backward()``, float32,
on CPU, batch-first input ``x ~ N(0, 1)``. Configurations (``--quick`` divides T by 8):

* ``lru``: ``LRU(256, 256)`` (d_model = state = 256), T = 4096, B = 16;
* ``mingru``: ``MinGRU(256, 256)``, T = 4096, B = 16;
* ``ssm``: ``SelectiveSSM(128, d_state=16, expand=--expand)``, T = 2048, B = 16.

For each, three variants of the step, alternating within every repetition (order reversed on
odd repetitions, after ``--warmup`` untimed rounds) so that they share the machine's noise:

* **parallel**: the layer as built (``linear_scan``, the chunked scan);
* **sequential**: the same module after ``set_sequential(True)`` (``linear_scan_sequential``,
  one step at a time) — the baseline;
* **nn.GRU**: ``nn.GRU(d_model, d_model, batch_first=True)`` on the same input, a familiar
  reference of the same width and length.

It prints the median seconds per step of each (and the fastest), ``seq / par`` (how many times
faster the parallel scan is than the loop; ratio of medians) and ``gru / par``.

Usage::

    python benchmarks/scan_speed.py [--threads 1] [--repeats 3] [--quick] [--expand 1]
                                    [--cells lru,mingru,ssm] [--variants parallel,sequential,gru]
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
from rnn_diag.scans import LRU, MinGRU, SelectiveSSM  # noqa: E402

B = 16
VARIANTS = ("parallel", "sequential", "gru")


def _configs(quick: bool, expand: int) -> dict:
    div = 8 if quick else 1
    return {
        "lru": (f"LRU(256, 256), T={4096 // div}, B={B}", lambda: LRU(256, 256), 4096 // div, 256),
        "mingru": (f"MinGRU(256, 256), T={4096 // div}, B={B}", lambda: MinGRU(256, 256),
                   4096 // div, 256),
        "ssm": (f"SelectiveSSM(128, d_state=16, expand={expand}), T={2048 // div}, B={B}",
                lambda: SelectiveSSM(128, 16, expand=expand), 2048 // div, 128),
    }


def _step(module: nn.Module, x: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    y = module(x)
    if isinstance(y, tuple):  # nn.GRU: (output, h_n)
        y = y[0]
    (y ** 2).mean().backward()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _row(name: str, times: dict) -> list[str]:
    """Table row: median (fastest) seconds of each variant, then sequential and GRU over
    parallel (ratios of medians)."""
    med = {v: statistics.median(ts) for v, ts in times.items()}
    cells = [f"{med[v]:.3f} ({min(times[v]):.3f})" if v in med else "-" for v in VARIANTS]
    ratios = [f"{med[v] / med['parallel']:.2f}x" if v in med and "parallel" in med else "-"
              for v in ("sequential", "gru")]
    return [name, *cells, *ratios]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="T / 8: a smoke run")
    ap.add_argument("--expand", type=int, default=1, help="SelectiveSSM expand (Mamba: 2)")
    ap.add_argument("--cells", default="lru,mingru,ssm")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="which of parallel,sequential,gru to time")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    configs = _configs(args.quick, args.expand)
    print(machine_line(torch.device("cpu"), rd.__version__))
    print(f"float32, {args.repeats} repetitions after {args.warmup} warm-up round(s); "
          "one step = forward + backward of mean(y^2)")
    rows = []
    for name in [c for c in args.cells.split(",") if c]:
        label, build, T, width = configs[name]
        torch.manual_seed(0)
        layer = build()
        gru = nn.GRU(width, width, batch_first=True)
        x = torch.randn(B, T, width)

        def run(v, layer=layer, gru=gru, x=x):
            if v == "gru":
                return _timed(lambda: _step(gru, x))
            layer.set_sequential(v == "sequential")
            return _timed(lambda: _step(layer, x))

        times: dict = {v: [] for v in variants}
        for rep in range(args.warmup + args.repeats):
            for v in (variants if rep % 2 == 0 else variants[::-1]):
                t = run(v)
                if rep >= args.warmup:
                    times[v].append(t)
        print(f"{name}: {label}: " + ", ".join(
            f"{v} " + " ".join(f"{t:.2f}" for t in times[v]) for v in variants), flush=True)
        rows.append(_row(name, times))
    print()
    print(table(rows, ["cell", "parallel s (min)", "sequential s (min)", "nn.GRU s (min)",
                       "seq / par", "gru / par"]))


if __name__ == "__main__":
    main()
