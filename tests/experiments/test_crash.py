"""`kill -9` in the middle of a sweep: every file left is complete, and re-running resumes.

The sweep runs as a real `rnn-diag run` subprocess in its own process group, which is killed
with SIGKILL (workers included) once some trials are stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from rnn_diag.experiments.runner import run_sweep

CONFIG = {
    "name": "crash",
    "task": {"name": "weather", "seq_len": 12, "n_days": 200},
    "model": {"cell": "rnn", "hidden_size": 6},
    "train": {"epochs": 20, "lr": 0.01},
    "probes": {"every": 5, "jacobians": "estimate", "lyapunov_steps": 50},
    "sweep": {"task.seq_len": [12, 16, 20, 24], "model.cell": ["rnn", "gru"]},
}
N_TRIALS = 8


def _stored_rows(out) -> int:
    try:
        return len(pd.read_parquet(out / "trials.parquet"))
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("jobs", [None, 2], ids=["in-process", "jobs2"])
def test_kill_9_mid_sweep_leaves_complete_files_and_resumes(tmp_path, jobs):
    cfg = tmp_path / "crash.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rnn_diag.cli", "run", str(cfg), "--out", str(out), "--quiet"]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _stored_rows(out) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # every visible file is complete: Parquet files parse, JSON parses, the config is intact
    for path in out.rglob("*.parquet"):
        pd.read_parquet(path)
    json.loads((out / "manifest.json").read_text())
    assert yaml.safe_load((out / "config.yaml").read_text()) == CONFIG
    before = pd.read_parquet(out / "trials.parquet").set_index("id")
    assert 2 <= len(before) < N_TRIALS, "the kill came too late to test anything"
    assert set(before.status) == {"ok"}

    outcome = run_sweep(cfg, out=out, jobs=None, quiet=True)
    assert (outcome.skipped, outcome.ran, outcome.failed) == (len(before), N_TRIALS - len(before),
                                                             0)
    after = pd.read_parquet(out / "trials.parquet").set_index("id")
    assert len(after) == N_TRIALS and set(after.status) == {"ok"}
    # the trials finished before the kill were kept as they were, not run again
    pd.testing.assert_frame_equal(after.loc[before.index, before.columns], before)
    curves = pd.read_parquet(out / "curves")
    assert sorted(curves.groupby("trial").epoch.max()) == [20] * N_TRIALS
