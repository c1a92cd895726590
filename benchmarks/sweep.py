"""Wall time of a whole sweep, and what recording and parallel workers change, in one run.

Runs the same experiment three times into fresh temporary directories, through the same code
path as ``rnn-diag run``:

1. everything recorded (the config as written), ``--jobs 2``;
2. the same with probes off (no gradient profiles, Jacobian norms, saturation, spectra or
   Lyapunov exponents), ``--jobs 2``: the recording overhead is time(1) / time(2);
3. everything recorded, ``--jobs 1``: the parallel speed-up is time(3) / time(1).

Usage::

    python benchmarks/sweep.py [experiments/weather.yaml] [--order 1,2,3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml
from _bootstrap import import_rnn_diag  # noqa: E402

rd = import_rnn_diag()
from rnn_diag.experiments.runner import run_sweep  # noqa: E402

PROBES_OFF = {"gradients": False, "jacobians": "off", "lyapunov": [], "spectra": [],
              "saturation": False}


def _timed_sweep(config: dict, jobs: int, workdir: Path, tag: str) -> tuple[float, int, int]:
    path = workdir / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    outcome = run_sweep(path, out=workdir / tag, jobs=jobs, fresh=True, quiet=True)
    return time.perf_counter() - t0, outcome.ran, outcome.failed


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default="experiments/weather.yaml")
    ap.add_argument("--order", default="1,2,3", help="which runs, in which order")
    args = ap.parse_args(argv)
    base = yaml.safe_load(Path(args.config).read_text())
    off = {**base, "probes": {**base.get("probes", {}), **PROBES_OFF}}
    runs = {"1": ("all recording, --jobs 2", base, 2), "2": ("probes off, --jobs 2", off, 2),
            "3": ("all recording, --jobs 1", base, 1)}
    print(f"rnn_diag {rd.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; config {args.config}")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.order.split(","):
            what, config, jobs = runs[key]
            seconds, ran, failed = _timed_sweep(config, jobs, Path(tmp), f"run{key}")
            times[key] = seconds
            print(f"  {key}. {what:<26} {seconds:8.1f} s  ({ran} trials, {failed} failed)",
                  flush=True)
    if "1" in times and "2" in times:
        print(f"recording overhead  time(1)/time(2) = {times['1'] / times['2']:.2f}x "
              "(target <= 1.5x)")
    if "1" in times and "3" in times:
        print(f"parallel speed-up   time(3)/time(1) = {times['3'] / times['1']:.2f}x "
              "(target >= 1.6x)")
    if "1" in times:
        print(f"full sweep with --jobs 2: {times['1']:.1f} s (target <= 150 s)")


if __name__ == "__main__":
    main()
