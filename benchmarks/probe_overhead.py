"""Cost of an attached rnn_diag probe on a training step, measured against the same step unprobed.

For each configuration it prints, from one run:

* time: median over ``--repeats`` timed steps (after ``--warmup`` untimed ones) of
  forward + loss + backward + ``probe.hidden_grad_log10_norms()`` on a model with a probe
  attached for the whole run, divided by the median of the same step on an identical model
  without a probe. Probed and unprobed steps alternate (and swap order every repetition) so both
  see the same machine noise.
* memory: the peak extra memory of three such steps, each (configuration, probed?) pair measured
  in a fresh subprocess. CPU: peak resident set size (``VmHWM``, reset through
  ``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable) minus the resident size
  after the model, the data and the probe exist. CUDA: ``torch.cuda.max_memory_allocated`` minus
  the allocated memory at the same point.
* whether the parameter gradients with and without the probe are bitwise equal (a probe must not
  change what the model computes).

Usage::

    python benchmarks/probe_overhead.py [--device auto|cpu|cuda] [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from _bootstrap import import_rnn_diag  # noqa: E402
from _measure import (  # noqa: E402
    alternating_times,
    ce_step,
    machine_line,
    max_grad_difference,
    memory_baseline,
    memory_peak,
    table,
)
from torch import nn

rd = import_rnn_diag()

INPUT_SIZE = 10
N_CLASSES = 5


@dataclass(frozen=True)
class Config:
    name: str
    kind: str  # "RNN" | "GRU" | "LSTM"
    T: int
    H: int
    B: int


CONFIGS = [
    Config("rnn-h64", "RNN", 1000, 64, 64),
    Config("rnn-h256", "RNN", 1000, 256, 32),
    Config("gru-h64", "GRU", 1000, 64, 64),
    Config("lstm-h64", "LSTM", 1000, 64, 64),
]
QUICK_T = 100


class Net(nn.Module):
    """A recurrent module and a linear read-out on the last output (many-to-one)."""

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.rnn = getattr(nn, kind)(INPUT_SIZE, hidden)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[-1])


def _configs(args: argparse.Namespace) -> list[Config]:
    chosen = CONFIGS
    if args.configs:
        names = args.configs.split(",")
        unknown = sorted(set(names) - {c.name for c in CONFIGS})
        if unknown:
            raise SystemExit(
                f"--configs: unknown {unknown}; choose from {[c.name for c in CONFIGS]}"
            )
        chosen = [c for c in CONFIGS if c.name in names]
    if args.quick:
        chosen = [Config(c.name, c.kind, QUICK_T, c.H, c.B) for c in chosen]
    return chosen


def _setup(cfg: Config, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = Net(cfg.kind, cfg.H).to(device)
    x = torch.randn(cfg.T, cfg.B, INPUT_SIZE, device=device)
    y = torch.randint(0, N_CLASSES, (cfg.B,), device=device)
    return model, x, y


def measure_time(cfg: Config, device: torch.device, warmup: int, repeats: int) -> dict:
    plain, x, y = _setup(cfg, device)
    probed = copy.deepcopy(plain)
    probe = rd.attach(probed)
    try:
        for _ in range(warmup):
            ce_step(plain, x, y)
            ce_step(probed, x, y, probe)
        grad_diff = max_grad_difference(plain, probed)
        t_plain, t_probed = alternating_times(lambda: ce_step(plain, x, y),
                                              lambda: ce_step(probed, x, y, probe), repeats,
                                              device)
    finally:
        probe.detach()
    pair_ratios = [p / q for p, q in zip(t_probed, t_plain)]
    return {
        "plain_ms": 1e3 * statistics.median(t_plain),
        "probed_ms": 1e3 * statistics.median(t_probed),
        "ratio": statistics.median(t_probed) / statistics.median(t_plain),
        "ratio_min": min(pair_ratios),
        "ratio_max": max(pair_ratios),
        "grad_diff": grad_diff,
    }


# --- peak memory, one fresh subprocess per (config, probed?) ---------------------------------


def _mem_child(cfg: Config, device: torch.device, with_probe: bool, steps: int = 3) -> dict:
    model, x, y = _setup(cfg, device)
    probe = rd.attach(model) if with_probe else None
    gc.collect()
    base, method = memory_baseline(device)
    for _ in range(steps):
        ce_step(model, x, y, probe)
    peak = memory_peak(device, method)
    if probe is not None:
        probe.detach()
    return {"peak_extra_mib": (peak - base) / 2**20, "method": method}


def measure_memory(cfg: Config, device: torch.device, quick: bool, with_probe: bool) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--device",
        device.type,
        "--configs",
        cfg.name,
        "--mem-child",
        "probed" if with_probe else "plain",
    ]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed for {cfg.name}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- output ------------------------------------------------------------------------------------


def _header(device: torch.device, args: argparse.Namespace) -> str:
    return (
        machine_line(device, rd.__version__)
        + f"\nsteps: {args.warmup} warm-up + {args.repeats} timed per variant, alternating; "
        f"ratio = median(probed) / median(plain)"
        f"\nprobed step = forward + cross-entropy on Linear(last output) + backward "
        f"+ probe.hidden_grad_log10_norms()"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--quick", action="store_true", help=f"T={QUICK_T} instead of 1000 (smoke run)")
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per variant (>= 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    names = ", ".join(c.name for c in CONFIGS)
    ap.add_argument("--configs", help=f"comma-separated subset of: {names} (default: all)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--mem-child", choices=["plain", "probed"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
    configs = _configs(args)

    if args.mem_child:
        (cfg,) = configs
        print(json.dumps(_mem_child(cfg, device, args.mem_child == "probed")))
        return 0

    if args.repeats < 5:
        raise SystemExit("--repeats must be at least 5")
    print(_header(device, args), flush=True)
    rows = []
    methods = set()
    for cfg in configs:
        t = measure_time(cfg, device, args.warmup, args.repeats)
        row = [
            cfg.name,
            str(cfg.T),
            str(cfg.B),
            str(cfg.H),
            f"{t['plain_ms']:.1f}",
            f"{t['probed_ms']:.1f}",
            f"{t['ratio']:.2f}x",
            f"{t['ratio_min']:.2f}-{t['ratio_max']:.2f}",
        ]
        if not args.no_memory:
            m_plain = measure_memory(cfg, device, args.quick, with_probe=False)
            m_probed = measure_memory(cfg, device, args.quick, with_probe=True)
            methods |= {m_plain["method"], m_probed["method"]}
            row += [
                f"{m_plain['peak_extra_mib']:.1f}",
                f"{m_probed['peak_extra_mib']:.1f}",
                f"{m_probed['peak_extra_mib'] / max(m_plain['peak_extra_mib'], 1e-9):.2f}x",
            ]
        row.append("yes" if t["grad_diff"] == 0 else f"no ({t['grad_diff']:.1e})")
        rows.append(row)
        print(f"  done {cfg.name}", file=sys.stderr, flush=True)

    header = ["config", "T", "B", "H", "plain ms", "probed ms", "time ratio", "pair range"]
    if not args.no_memory:
        header += ["plain MiB", "probed MiB", "mem ratio"]
    header.append("grads equal")
    print()
    print(table(rows, header))
    if methods:
        how = ", ".join(sorted(methods))
        print(f"\nmemory: peak extra over 3 steps, a fresh subprocess each; method {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
