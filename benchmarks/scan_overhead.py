"""Cost of an attached rnn_diag probe on a training step of a diagonal scan layer (LRU, MinGRU,
SelectiveSSM), measured against the same step unprobed, in the same run.

Each step: forward of the layer on ``x [B, T, D]``, a linear read-out of the last step,
cross-entropy, backward, and (probed) ``probe.hidden_grad_log10_norms()``. Probed and plain
steps alternate (their order swaps every repetition) so both see the same machine noise; the
ratio is median(probed) / median(plain), with the range of the per-pair ratios. Parameter
gradients with and without the probe must be bitwise equal.

Usage::

    python benchmarks/scan_overhead.py [--threads 1] [--repeats 5] [--configs lru,mingru,ssm]
        [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from dataclasses import dataclass

import torch
from _bootstrap import import_rnn_diag  # noqa: E402
from _measure import (  # noqa: E402
    alternating_times,
    ce_step,
    machine_line,
    max_grad_difference,
    table,
)
from torch import nn

rd = import_rnn_diag()
from rnn_diag.scans import LRU, MinGRU, SelectiveSSM  # noqa: E402

N_CLASSES = 5


@dataclass(frozen=True)
class Config:
    name: str
    T: int
    D: int
    B: int
    N: int | None = None  # SSM state size per channel


CONFIGS = [
    Config("lru", 4096, 256, 16),
    Config("mingru", 4096, 256, 16),
    Config("ssm", 2048, 128, 16, 16),
]


class Net(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.name == "lru":
            self.layer = LRU(cfg.D, cfg.D)
        elif cfg.name == "mingru":
            self.layer = MinGRU(cfg.D, cfg.D)
        else:
            self.layer = SelectiveSSM(cfg.D, cfg.N, expand=1)
        self.head = nn.Linear(cfg.D, N_CLASSES)

    def forward(self, x):
        return self.head(self.layer(x)[:, -1])


def measure(cfg: Config, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    plain = Net(cfg)
    probed = copy.deepcopy(plain)
    x = torch.randn(cfg.B, cfg.T, cfg.D)
    y = torch.randint(0, N_CLASSES, (cfg.B,))
    cpu = torch.device("cpu")
    probe = rd.attach(probed, modules=["layer"])
    try:
        for _ in range(warmup):
            ce_step(plain, x, y)
            ce_step(probed, x, y, probe)
        diff = max_grad_difference(plain, probed)
        t_plain, t_probed = alternating_times(lambda: ce_step(plain, x, y),
                                              lambda: ce_step(probed, x, y, probe), repeats, cpu)
    finally:
        probe.detach()
    pairs = [p / q for p, q in zip(t_probed, t_plain)]
    return {"plain": statistics.median(t_plain), "probed": statistics.median(t_probed),
            "ratio": statistics.median(t_probed) / statistics.median(t_plain),
            "low": min(pairs), "high": max(pairs), "diff": diff}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    ap.add_argument("--configs", default="lru,mingru,ssm", help="comma-separated subset")
    ap.add_argument("--quick", action="store_true", help="T / 8 (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.configs.split(",")
    unknown = sorted(set(names) - {c.name for c in CONFIGS})
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}")
    print(machine_line(torch.device("cpu"), rd.__version__))
    print(f"threads {args.threads}; {args.warmup} warm-up + {args.repeats} timed steps per "
          "variant, alternating; step = forward + CE(Linear(last step)) + backward "
          "(+ probe.hidden_grad_log10_norms())", flush=True)
    rows = []
    for cfg in CONFIGS:
        if cfg.name not in names:
            continue
        if args.quick:
            cfg = Config(cfg.name, cfg.T // 8, cfg.D, cfg.B, cfg.N)
        m = measure(cfg, args.repeats, args.warmup)
        size = f"D={cfg.D}" + (f" N={cfg.N}" if cfg.N else "")
        rows.append([cfg.name, str(cfg.T), str(cfg.B), size, f"{1e3 * m['plain']:.0f}",
                     f"{1e3 * m['probed']:.0f}", f"{m['ratio']:.2f}x",
                     f"{m['low']:.2f}-{m['high']:.2f}",
                     "yes" if m["diff"] == 0 else f"no ({m['diff']:.1e})"])
        print(f"  done {cfg.name}", file=sys.stderr, flush=True)
    print()
    print(table(rows, ["layer", "T", "B", "size", "plain ms", "probed ms", "ratio",
                       "pair range", "grads equal"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
