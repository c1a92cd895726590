"""Cost of ``rnn_diag.record`` with its default settings on a realistic training loop.

The loop: a sequence classifier as projects write it, ``nn.LSTM(32, 128, num_layers=2,
batch_first=True)`` with a linear head on the last step, T = 100 steps, mini-batches of 64
drawn at random from 2048 sequences, cross-entropy, Adam, ``rec.log(step, loss=...)`` every
step. One *block* is ``--steps`` training steps (default 1000, so the default ``every=50``
records 20 of them). Each repetition times one block without recording and one block inside
``rd.record(folder, model)`` (every default: every=50, the Jacobian-product estimate on 8
samples, spectra and the 16 leading Lyapunov exponents at "init" and "end", the folder written
every 30 s and at the end), in alternating order, on identical copies of the model; the
recorded block includes the recorder's start, its snapshots and its final write.

It prints, per ``--every`` value, the median time of each and the median of the
per-repetition ratios; the target of issue 13 is at most 1.1 with the defaults. The cost is a
fixed part (snapshots, first and last write: about 2 s here) plus a part per recorded step
(about 2 training steps' worth), so short blocks overstate it.

Usage::

    python benchmarks/record_overhead.py [--steps 1000] [--repeats 3] [--every 50 10]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from _bootstrap import import_rnn_diag
from _measure import machine_line, table
from torch import nn

rd = import_rnn_diag()


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(32, 128, num_layers=2, batch_first=True)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def block(model, x, y, steps: int, folder=None, every: int = 50) -> float:
    """Seconds for ``steps`` training steps, recorded into ``folder`` when given."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    rec = rd.record(folder, model, every=every) if folder is not None else None
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.log(step, loss=loss.item())
    if rec is not None:
        rec.close()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, nargs="+", default=[50])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine_line(torch.device("cpu"), rd.__version__))
    x, y = torch.randn(2048, 100, 32), torch.randint(0, 10, (2048,))
    base = Classifier()
    block(copy.deepcopy(base), x, y, 5)  # warm-up
    rows = []
    for every in args.every:
        plain, recorded, ratios = [], [], []
        for rep in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                runs = [(False, None), (True, folder)]
                if rep % 2:
                    runs.reverse()
                times = {}
                for recording, target in runs:
                    times[recording] = block(copy.deepcopy(base), x, y, args.steps, target, every)
            plain.append(times[False])
            recorded.append(times[True])
            ratios.append(times[True] / times[False])
        rows.append([f"every={every}", f"{statistics.median(plain):.2f}",
                     f"{statistics.median(recorded):.2f}", f"{statistics.median(ratios):.3f}",
                     f"{min(ratios):.3f}-{max(ratios):.3f}"])
    print(f"{args.steps} steps per block, {args.repeats} repetitions")
    print(table(rows, ["recording", "plain s", "recorded s", "median ratio", "range"]))


if __name__ == "__main__":
    main()
