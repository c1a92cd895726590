"""Throughput of one sweep on a Dask LocalCluster with 1 and 2 workers, against the local
backends, and Dask's scheduling overhead per trial.

Every run goes through :func:`rnn_diag.experiments.runner.run_sweep` into a fresh temporary
store, so the times include storing. The clusters are started before the clock starts (their
start-up and close are timed separately); each worker has one Dask thread and, by the Dask
backend's rule, CPUs // (Dask threads on the machine) torch threads.

1. in-process (all CPUs' torch threads), 2. ``--jobs 2`` (2 processes x CPUs // 2 threads),
3. Dask, 1 worker (the default rule: all CPUs' torch threads), 4. the same with 1 torch
thread, 5. Dask, 2 workers (CPUs // 2 torch threads each);
then the tables of 2 and 5 are compared (the same torch thread count per trial), and
6. the overhead: ``--trivial`` trials that do nothing but return a row, through the same
   driver loop, so the time per trial is scheduling, serialisation and storing alone.

Usage::

    python benchmarks/dask_throughput.py [CONFIG] [--trivial 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from _bootstrap import import_rnn_diag  # noqa: E402

rd = import_rnn_diag()
import distributed  # noqa: E402

from rnn_diag.experiments.backends import InProcess, ProcessPool  # noqa: E402
from rnn_diag.experiments.backends.dask import DaskBackend  # noqa: E402
from rnn_diag.experiments.runner import run_sweep  # noqa: E402
from rnn_diag.experiments.store import TrialResult  # noqa: E402

#: 8 trials of a few seconds each on a 2-CPU machine.
SWEEP = {
    "name": "dask-throughput",
    "task": {"name": "weather", "seq_len": 50, "n_days": 400},
    "model": {"cell": "lstm", "hidden_size": 32},
    "train": {"epochs": 15, "lr": 0.01},
    "probes": {"every": 5, "jacobians": "estimate", "lyapunov_steps": 200},
    "sweep": {"model.cell": ["rnn", "gru"], "train.seed": [0, 1, 2, 3]},
}


def _trivial(spec, progress) -> TrialResult:
    return TrialResult(spec.id, {"status": "ok"})


def _timed(config: Path, out: Path, backend) -> tuple[float, pd.DataFrame]:
    t0 = time.perf_counter()
    run_sweep(config, out=out, quiet=True, backend=backend, fresh=True)
    return time.perf_counter() - t0, pd.read_parquet(out / "trials.parquet")


def _cluster(n: int) -> tuple[distributed.LocalCluster, float]:
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=logging.ERROR,
                                       scheduler_kwargs={"dashboard_address": ":0"})
    return cluster, time.perf_counter() - t0


def _same_tables(a: Path, b: Path) -> bool:
    for name in ("curves", "gradients", "summaries", "spectra", "lyapunov", "predictions"):
        if not (a / name).is_dir():
            continue
        x, y = (pd.read_parquet(d / name).drop(columns="seconds", errors="ignore")
                for d in (a, b))
        key = [c for c in x.columns if x[c].dtype != object or c == "trial"]
        x = x.sort_values(key).reset_index(drop=True)
        y = y.sort_values(key).reset_index(drop=True)
        if not x.equals(y):
            return False
    return True


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", help="a sweep config [default: a built-in one]")
    ap.add_argument("--trivial", type=int, default=200, help="trials of the overhead run")
    args = ap.parse_args(argv)
    print(f"rnn_diag {rd.__version__}, dask {distributed.__version__}, python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = Path(args.config) if args.config else tmp / "sweep.yaml"
        if not args.config:
            config.write_text(yaml.safe_dump(SWEEP))
        print(f"config {args.config or '(built-in, 8 trials)'}")
        rows = []
        secs, trials = _timed(config, tmp / "inproc", InProcess())
        rows.append(("in-process", secs, trials))
        secs, trials = _timed(config, tmp / "jobs2", ProcessPool(2))
        rows.append(("--jobs 2 (processes)", secs, trials))
        for n, threads in ((1, None), (1, 1), (2, None)):
            cluster, started = _cluster(n)
            try:
                secs, trials = _timed(config, tmp / f"dask{n}",
                                      DaskBackend(cluster.scheduler_address, threads=threads))
            finally:
                t0 = time.perf_counter()
                cluster.close()
                closed = time.perf_counter() - t0
            torch_threads = threads or max(1, (os.cpu_count() or 1) // n)
            rows.append((f"dask, {n} worker(s) x {torch_threads} torch thr.", secs, trials))
            print(f"  LocalCluster of {n}: start {started:.1f} s, close {closed:.1f} s")
        print(f"  {'backend':<34} {'wall s':>7} {'trials/min':>10} {'sum of trial s':>15}")
        for what, secs, trials in rows:
            print(f"  {what:<34} {secs:7.1f} {60 * len(trials) / secs:10.1f} "
                  f"{trials.seconds.sum():15.1f}")
        print(f"  dask speed-up, 2 workers vs 1 (1 torch thread each): "
              f"{rows[3][1] / rows[4][1]:.2f}x; vs 1 worker with the default rule: "
              f"{rows[2][1] / rows[4][1]:.2f}x")
        print(f"  dask (2 workers) tables identical to --jobs 2 (seconds aside): "
              f"{_same_tables(tmp / 'jobs2', tmp / 'dask2')}")

        spec_cfg = {**SWEEP, "sweep": {"train.seed": list(range(args.trivial))}}
        config.write_text(yaml.safe_dump(spec_cfg))
        cluster, _ = _cluster(2)
        try:
            secs, trials = _timed(config, tmp / "trivial",
                                  DaskBackend(cluster.scheduler_address, trial=_trivial))
        finally:
            cluster.close()
        print(f"  overhead: {len(trials)} trivial trials in {secs:.2f} s on 2 workers = "
              f"{1000 * secs / len(trials):.1f} ms per trial (submit, run, gather, store)")
        t0 = time.perf_counter()
        run_sweep(config, out=tmp / "trivial-local", quiet=True, fresh=True,
                  backend=_LocalTrivial())
        local = time.perf_counter() - t0
        print(f"  of which storing (the same rows in-process): "
              f"{1000 * local / len(trials):.1f} ms per trial")


class _LocalTrivial:
    def run(self, specs, progress=None):
        for spec in specs:
            yield _trivial(spec, progress)


if __name__ == "__main__":
    main()
