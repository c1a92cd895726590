"""The Dask backend on a real cluster: a ``dask scheduler`` and two ``dask worker`` processes
(one thread each) on 127.0.0.1, started once for this file, and a LocalCluster started by the
run itself. Checked against the process backend (``--jobs 2``, the same torch thread count):
identical tables; a worker killed mid-trial: the trial is retried or failed with the reason,
nothing finished is lost, a re-run resumes; Ctrl-C: cancelled on the cluster, exit 130."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import yaml
from click.testing import CliRunner

distributed = pytest.importorskip("distributed")

from dask.system import CPU_COUNT  # noqa: E402

from rnn_diag.cli import main  # noqa: E402
from rnn_diag.experiments.backends.dask import DaskBackend  # noqa: E402
from rnn_diag.experiments.config import load_config  # noqa: E402
from rnn_diag.experiments.grid import expand  # noqa: E402
from rnn_diag.experiments.runner import run_sweep  # noqa: E402
from rnn_diag.experiments.store import Store, TrialResult  # noqa: E402
from rnn_diag.experiments.trial import run_trial  # noqa: E402

TINY = {
    "name": "tiny",
    "task": {"name": "weather", "seq_len": 12, "n_days": 120},
    "model": {"cell": "rnn", "hidden_size": 6},
    "train": {"epochs": 3, "lr": 0.01},
    "probes": {"every": 2, "jacobians": "estimate", "saturation": True, "lyapunov_steps": 50},
    "sweep": {"model.cell": ["rnn", "gru"], "task.seq_len": [12, 20]},
}
TABLES = ("curves", "gradients", "summaries", "spectra", "lyapunov", "predictions")
DASK = str(Path(sys.executable).with_name("dask"))


def _start(args, log: Path, env) -> subprocess.Popen:
    return subprocess.Popen([DASK, *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # the worker's nanny and its worker process too
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """Address of a scheduler with two single-threaded workers (with nannies, which restart a
    worker that dies). A task may take down one worker and be retried; the second death gives
    up on it (allowed-failures 1, instead of 3, to keep the test short)."""
    tmp = tmp_path_factory.mktemp("cluster")
    file = tmp / "scheduler.json"
    # the trial functions of this file must be importable where tasks are unpickled
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    # worker-saturation 1: a worker holds only the task it runs, so a death counts against
    # that task alone (by default a queued task on the dying worker would count too)
    env = {**os.environ, "PYTHONPATH": path,
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
           "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
    procs = []
    try:
        procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(file)],
                            tmp / "scheduler.log", env))
        for i in range(2):
            procs.append(_start(["worker", "--scheduler-file", str(file), "--nthreads", "1",
                                 "--host", "127.0.0.1", "--no-dashboard"],
                                tmp / f"worker{i}.log", env))
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def write(tmp_path, data, name="tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every table of a store, timing columns dropped, in a canonical row order."""
    found = {"trials": pd.read_parquet(out / "trials.parquet").drop(columns="seconds")}
    for name in TABLES:
        if (out / name).is_dir():
            found[name] = pd.read_parquet(out / name).drop(columns="seconds", errors="ignore")
    for name, df in found.items():
        key = ["id" if name == "trials" else "trial"] + [
            c for c in df.columns if c not in ("id", "trial") and df[c].dtype != object]
        found[name] = df.sort_values(key, kind="stable").reset_index(drop=True)
    return found


def assert_same(a: dict, b: dict, ids=None, check_dtype=True) -> None:
    assert a.keys() == b.keys()
    for name in a:
        col = "id" if name == "trials" else "trial"
        x, y = a[name], b[name]
        if ids is not None:
            x = x[x[col].isin(ids)].reset_index(drop=True)
            y = y[y[col].isin(ids)].reset_index(drop=True)
        assert len(x), name
        pd.testing.assert_frame_equal(x, y, check_exact=True, check_dtype=check_dtype, obj=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep run in this process with as many torch threads as each trial gets on two
    single-threaded Dask workers on this machine (CPUs // 2): torch CPU results may depend
    on the thread count."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = write(tmp, TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, CPU_COUNT // 2))
    try:
        run_sweep(cfg, out=tmp / "o", quiet=True)
    finally:
        torch.set_num_threads(threads)
    return tables(tmp / "o")


def test_a_dask_cluster_gives_the_same_tables_as_a_local_run(tmp_path, scheduler,
                                                                      reference):
    cfg = write(tmp_path, TINY)
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o"),
                                       "--scheduler", scheduler, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "4 trial(s) run" in result.output
    got = tables(tmp_path / "o")
    assert set(got["trials"].status) == {"ok"}
    assert_same(got, reference)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert (manifest["backend"], manifest["scheduler"]) == ("dask", scheduler)


def _report_threads(spec, progress):
    import torch

    return TrialResult(spec.id, {"status": "ok", "threads": torch.get_num_threads()})


def _three_slow_epochs(spec, progress):
    for epoch in (1, 2, 3):
        time.sleep(0.3)
        progress(spec.id, epoch, 3)
    return TrialResult(spec.id, {"status": "ok"})


def test_each_trial_gets_the_cpus_divided_by_the_dask_threads_of_its_machine(tmp_path,
                                                                             scheduler):
    specs = expand(load_config(write(tmp_path, TINY)))
    results = list(DaskBackend(scheduler, trial=_report_threads).run(specs))
    assert sorted(r.trial_id for r in results) == sorted(s.id for s in specs)
    # two workers x one thread on 127.0.0.1
    assert {r.row["threads"] for r in results} == {max(1, CPU_COUNT // 2)}


def test_epoch_progress_reaches_the_driver_thread(tmp_path, scheduler):
    specs = expand(load_config(write(tmp_path, TINY)))[:2]
    seen = []
    driver = threading.get_ident()

    def progress(*msg):
        seen.append((threading.get_ident(), *msg))

    results = list(DaskBackend(scheduler, trial=_three_slow_epochs).run(specs, progress))
    assert len(results) == 2
    assert {s[0] for s in seen} == {driver}
    for spec in specs:
        epochs = [done for _, tid, done, total in seen if tid == spec.id and total == 3]
        # the last report may arrive after the result, and is then not waited for
        assert epochs and epochs == sorted(set(epochs)) and set(epochs) <= {1, 2, 3}


def _timed_nap(spec, progress):
    start = time.time()
    time.sleep(0.3)
    return TrialResult(spec.id, {"status": "ok", "start": start, "end": time.time()})


def test_jobs_with_a_scheduler_bounds_the_trials_in_flight(tmp_path, scheduler):
    specs = expand(load_config(write(tmp_path, TINY)))[:3]
    spans = sorted((r.row["start"], r.row["end"])
                   for r in DaskBackend(scheduler, jobs=1, trial=_timed_nap).run(specs))
    assert len(spans) == 3
    # one at a time although two workers are free
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


def _dies(spec, progress, markers: str, once: str, always: str):
    """Kill the worker running this trial: once for ``once``, every time for ``always``."""
    marker = Path(markers) / spec.id
    if spec.id == always or (spec.id == once and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return run_trial(spec, progress)


def test_a_worker_killed_mid_trial_loses_nothing_and_a_rerun_resumes(tmp_path, scheduler,
                                                                      reference):
    cfg = write(tmp_path, TINY)
    ids = [s.id for s in expand(load_config(cfg))]
    once, always = ids[1], ids[2]
    markers = tmp_path / "markers"
    markers.mkdir()
    trial = partial(_dies, markers=str(markers), once=once, always=always)
    out = tmp_path / "o"
    outcome = run_sweep(cfg, out=out, quiet=True, backend=DaskBackend(scheduler, trial=trial))
    assert (outcome.ran, outcome.failed) == (4, 1)
    trials = pd.read_parquet(out / "trials.parquet").set_index("id")
    assert trials.loc[always, "status"] == "failed"
    assert "worker died: KilledWorker" in trials.loc[always, "error"]
    ok = [i for i in ids if i != always]
    assert (trials.loc[ok, "status"] == "ok").all()  # including the retried one
    assert_same({k: v for k, v in tables(out).items() if k != "trials"},
                {k: v for k, v in reference.items() if k != "trials"}, ids=ok)

    again = run_sweep(cfg, out=out, quiet=True, backend="dask", scheduler=scheduler)
    assert (again.ran, again.skipped, again.failed) == (1, 3, 0)
    # the store reloads trials.parquet through dicts, so after a failed row some columns come
    # back as float/NaN instead of int/None: compare the values
    assert_same(tables(out), reference, check_dtype=False)


def _scheduler_tasks(address: str) -> int:
    with distributed.Client(address, timeout=30) as client:
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def test_ctrl_c_cancels_the_cluster_work_keeps_what_is_stored_and_exits_130(
        tmp_path, scheduler, monkeypatch):
    cfg = write(tmp_path, {**TINY, "train": {"epochs": 40, "lr": 0.01}})
    real_save = Store.save
    saves = []

    def save_once(self, result):
        if saves:
            raise KeyboardInterrupt  # Ctrl-C when the second result arrives
        real_save(self, result)
        saves.append(result.trial_id)

    monkeypatch.setattr(Store, "save", save_once)
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o"),
                                       "--scheduler", scheduler, "--quiet"])
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "1 trial(s) of this run stored" in result.output and "resume" in result.output
    stored = pd.read_parquet(tmp_path / "o" / "trials.parquet")
    assert stored.id.tolist() == saves and stored.status.tolist() == ["ok"]
    deadline = time.monotonic() + 20
    while _scheduler_tasks(scheduler) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _scheduler_tasks(scheduler) == 0  # nothing queued or running is left behind
    assert time.monotonic() - t0 < 60


def test_a_local_cluster_is_started_and_ctrl_c_in_a_terminal_closes_it(tmp_path):
    """The real thing: ``rnn-diag run --backend dask`` without a scheduler, and SIGINT to its
    whole process group (as a terminal sends it) once the short trial is stored."""
    data = {**TINY, "probes": {"lyapunov": [], "spectra": []},
            "sweep": {"train.epochs": [2, 100_000]}}  # the second one runs for minutes
    cfg, out = write(tmp_path, data), tmp_path / "o"
    rnn_diag = str(Path(sys.executable).with_name("rnn-diag"))
    proc = subprocess.Popen([rnn_diag, "run", str(cfg), "--out", str(out), "--backend", "dask",
                             "--jobs", "2", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "trials.parquet").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2  # the LocalCluster's worker processes
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        f"rnn-diag run: interrupted; 1 trial(s) of this run stored in {out}; "
        "run the same command again to resume."]  # one line, no worker tracebacks
    stored = pd.read_parquet(out / "trials.parquet")
    assert stored.status.tolist() == ["ok"] and stored.epochs_run.tolist() == [2]
    time.sleep(0.5)
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


def test_dask_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    monkeypatch.delitem(sys.modules, "rnn_diag.experiments.backends.dask", raising=False)
    monkeypatch.delitem(sys.modules, "rnn_diag.experiments.dask_backend", raising=False)
    cfg = write(tmp_path, TINY)
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o"),
                                       "--backend", "dask"])
    assert result.exit_code == 2
    assert "pip install 'rnn_diag[dask]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    import rnn_diag.experiments.backends.dask as dask_backend

    monkeypatch.setattr(dask_backend, "CONNECT_TIMEOUT", 1)
    cfg = write(tmp_path, TINY)
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o"),
                                       "--scheduler", "tcp://127.0.0.1:9", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output



def test_the_old_module_path_still_imports():
    import rnn_diag.experiments.dask_backend as old

    assert old.DaskBackend is DaskBackend
