"""Torch threads per trial: which default is fastest for each local backend, in one run.

Runs one small sweep (by default ``experiments/weather.yaml`` cut to ``task.seq_len`` [10, 100]
and 30 epochs: 8 trials) through ``run_sweep`` (the code behind ``rnn-diag run``), each time
into a fresh temporary directory, with:

* in-process, ``threads=T`` for T in ``--inprocess`` (default 2 and 1; torch's own default is
  the number of CPUs, 2 on the reference machine);
* ``--jobs 2``, ``threads=T`` per worker for T in ``--pool`` (default 1 and 2).

Every variant runs ``--rounds`` times (default 2), interleaved (round 2 in reverse order), so
that all share the machine's noise. It prints each variant's wall times and its ratio to the
first variant of its backend (the baseline) from the same run, as the median over rounds.

Usage::

    python benchmarks/threads.py [CONFIG] [--epochs 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _bootstrap import import_rnn_diag  # noqa: E402

rd = import_rnn_diag()
from rnn_diag.experiments.runner import run_sweep  # noqa: E402


def _timed(path: Path, out: Path, jobs, threads) -> float:
    t0 = time.perf_counter()
    outcome = run_sweep(path, out=out, jobs=jobs, threads=threads, fresh=True, quiet=True)
    seconds = time.perf_counter() - t0
    assert outcome.failed == 0, f"{outcome.failed} trial(s) failed"
    return seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default="experiments/weather.yaml")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seq-lens", default="10,100")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--inprocess", default="2,1", help="threads to try in-process")
    ap.add_argument("--pool", default="1,2", help="threads per worker to try with --jobs 2")
    args = ap.parse_args(argv)
    data = yaml.safe_load(Path(args.config).read_text())
    data["train"]["epochs"] = args.epochs
    data.setdefault("sweep", {})["task.seq_len"] = [int(v) for v in args.seq_lens.split(",")]
    data["probes"]["spectra"] = [w for w in data["probes"].get("spectra", [])
                                 if not isinstance(w, int) or w <= args.epochs]
    variants = [("in-process", None, int(t)) for t in args.inprocess.split(",")]
    variants += [("--jobs 2", 2, int(t)) for t in args.pool.split(",")]
    print(f"rnn_diag {rd.__version__}, torch {torch.__version__}, python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs (torch default "
          f"{torch.get_num_threads()} threads); {args.config}, seq_len {args.seq_lens}, "
          f"{args.epochs} epochs")
    times: dict = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        for r in range(args.rounds):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                seconds = _timed(path, Path(tmp) / "out", v[1], v[2])
                times[v].append(seconds)
                print(f"  round {r + 1}: {v[0]:<10} threads {v[2]}: {seconds:7.1f} s",
                      flush=True)
    base = {}
    for v in variants:
        base.setdefault(v[0], statistics.median(times[v]))
    for v in variants:
        med = statistics.median(times[v])
        print(f"{v[0]:<10} threads {v[2]}: median {med:7.1f} s, {med / base[v[0]]:.2f}x the "
              f"first {v[0]} variant")


if __name__ == "__main__":
    main()
