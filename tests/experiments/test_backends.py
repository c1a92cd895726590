"""Backends on this machine: the choice of backend, epoch progress from worker processes
(reported in the driver's thread), stopping a pool early, and the per-trial epoch bars."""

import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml
from click.testing import CliRunner

from rnn_diag.cli import main
from rnn_diag.experiments.backends import (
    BackendError,
    InProcess,
    ProcessPool,
    make_backend,
)
from rnn_diag.experiments.config import load_config
from rnn_diag.experiments.grid import expand
from rnn_diag.experiments.runner import EpochBars

TINY = {
    "name": "tiny",
    "task": {"name": "weather", "seq_len": 12, "n_days": 120},
    "model": {"cell": "rnn", "hidden_size": 6},
    "train": {"epochs": 3, "lr": 0.01},
    "probes": {"lyapunov": [], "spectra": []},
    "sweep": {"task.seq_len": [12, 20]},
}


def specs_of(tmp_path, data=TINY) -> list:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return expand(load_config(path))


def test_make_backend_picks_what_the_options_say():
    assert isinstance(make_backend("local"), InProcess)
    pool = make_backend("local", jobs=3)
    assert isinstance(pool, ProcessPool) and pool.jobs == 3 and pool.threads >= 1
    with pytest.raises(BackendError, match="--scheduler needs --backend dask"):
        make_backend("local", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(BackendError, match="unknown backend"):
        make_backend("slurm")


def test_cli_refuses_a_scheduler_for_the_local_backend(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(main, ["run", str(path), "--backend", "local", "--scheduler",
                                       "tcp://127.0.0.1:8786", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--scheduler needs --backend dask" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_plain_run_does_not_import_dask():
    code = ("import sys, rnn_diag.cli; "
            "from rnn_diag.experiments.backends import make_backend; "
            "from rnn_diag.experiments.runner import run_sweep; make_backend('local', 2); "
            "sys.exit(int(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _record():
    seen = []
    driver = threading.get_ident()

    def progress(*msg):
        assert threading.get_ident() == driver  # tqdm is only touched by the driver
        seen.append(msg)

    return seen, progress


def test_in_process_reports_every_epoch(tmp_path):
    specs = specs_of(tmp_path)[:1]
    seen, progress = _record()
    [result] = list(InProcess().run(specs, progress))
    assert result.row["status"] == "ok"
    assert seen == [(specs[0].id, 1, 3), (specs[0].id, 2, 3), (specs[0].id, 3, 3)]


def test_worker_processes_report_epochs_to_the_driver_thread(tmp_path):
    specs = specs_of(tmp_path, {**TINY, "train": {"epochs": 6, "lr": 0.01}})
    seen, progress = _record()
    results = list(ProcessPool(2, threads=1).run(specs, progress))
    assert sorted(r.trial_id for r in results) == sorted(s.id for s in specs)
    assert {r.row["status"] for r in results} == {"ok"}
    for spec in specs:
        epochs = [done for tid, done, total in seen if tid == spec.id and total == 6]
        # throttled to ~10 per second per trial; the last one may come after the result
        assert epochs and epochs == sorted(set(epochs)) and set(epochs) <= set(range(1, 7))


def _children() -> set[int]:
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if not any("resource_tracker" in part for part in proc.cmdline()):
                found.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def test_ctrl_c_stops_the_worker_processes_at_once(tmp_path):
    long = {**TINY, "train": {"epochs": 5000, "lr": 0.01}}  # minutes per trial
    specs = specs_of(tmp_path, long)
    before = _children()

    def progress(trial_id, done, total):
        raise KeyboardInterrupt  # Ctrl-C arrives while the driver handles the first report

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(ProcessPool(2, threads=1).run(specs, progress))
    assert time.monotonic() - t0 < 60
    assert not _children() - before  # no worker left running


def test_epoch_bars_one_per_running_trial_and_late_reports_are_ignored():
    bars = EpochBars({"a": "cell=rnn", "b": "cell=gru", "c": "cell=lstm"}, max_bars=2)
    bars("a", 1, 4)
    bars("b", 2, 4)
    bars("c", 1, 4)  # no free slot: not shown
    assert sorted(bars.bars) == ["a", "b"]
    slot_a, bar_a = bars.bars["a"]
    assert bar_a.desc == "cell=rnn" and (bar_a.n, bar_a.total) == (1, 4)
    bars.finish("a")
    bars("a", 4, 4)  # arrived after the result: ignored
    assert "a" not in bars.bars
    bars("c", 2, 4)  # takes the freed slot
    assert bars.bars["c"][0] == slot_a and bars.bars["c"][1].n == 2
    bars.close()
    assert not bars.bars
    quiet = EpochBars({"a": "x"}, disable=True)
    quiet("a", 1, 2)
    assert not quiet.bars
