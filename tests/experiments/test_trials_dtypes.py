"""``trials.parquet`` column types never depend on which trials failed (GitHub issue 17):
whole-number columns are nullable Int64, before and after a failed trial is retried."""

from __future__ import annotations

import pandas as pd
import yaml

import rnn_diag.experiments.trial
import rnn_diag.tasks
from rnn_diag.experiments.backends import failed_result
from rnn_diag.experiments.config import validate_config
from rnn_diag.experiments.grid import expand
from rnn_diag.experiments.runner import run_sweep
from rnn_diag.experiments.store import Store
from rnn_diag.experiments.trial import run_trial

SWEEP = {
    "name": "dtypes",
    "task": {"name": "weather", "seq_len": 12, "n_days": 100},
    "model": {"cell": "rnn", "hidden_size": 5},
    "train": {"epochs": 2},
    "probes": {"every": 1, "lyapunov": [], "spectra": ["end"]},
    "sweep": {"task.seq_len": [12, 20], "model.weight_scale": [None, 0.5]},
}
INTS = ["task.seq_len", "model.hidden_size", "model.num_layers", "train.seed", "epochs_run",
        "horizon_first", "horizon_last"]
FLOATS = ["model.weight_scale", "train.clip_grad_norm", "train_loss", "val_loss", "seconds",
          "decay_per_step_last", "spectral_radius_end", "chance_loss"]


def _dtypes(path) -> dict:
    return pd.read_parquet(path / "trials.parquet").dtypes.astype(str).to_dict()


def test_a_failed_row_then_its_retry_keep_every_dtype(tmp_path, monkeypatch):
    cfg = tmp_path / "dtypes.yaml"
    cfg.write_text(yaml.safe_dump(SWEEP))
    real = rnn_diag.tasks.make_task

    def flaky(name, *, seq_len, **kw):
        if seq_len == 20:
            raise RuntimeError("disk on fire")
        return real(name, seq_len=seq_len, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(rnn_diag.experiments.trial, "make_task", flaky)
        first = run_sweep(cfg, out=tmp_path / "o", quiet=True)
    assert first.failed == 2
    with_failures = _dtypes(tmp_path / "o")
    trials = pd.read_parquet(tmp_path / "o" / "trials.parquet")
    failed = trials[trials.status == "failed"]
    assert failed.horizon_last.isna().all() and trials.horizon_last.notna().sum() == 2

    again = run_sweep(cfg, out=tmp_path / "o", quiet=True)  # resume: the failed ones re-run
    assert again.ran == 2 and again.failed == 0
    after_retry = _dtypes(tmp_path / "o")
    assert after_retry == with_failures
    for col in INTS:
        assert after_retry[col] == "Int64", col
    for col in FLOATS:
        assert after_retry[col] == "float64", col
    assert after_retry["status"] == after_retry["error"] == "str"
    # and a run where nothing ever failed has the very same types
    clean = run_sweep(cfg, out=tmp_path / "clean", quiet=True)
    assert clean.failed == 0 and _dtypes(tmp_path / "clean") == with_failures


def test_a_worker_death_row_changes_no_dtype(tmp_path):
    cfg = validate_config({**SWEEP, "sweep": {"task.seq_len": [12, 20]}})
    specs = expand(cfg)
    ok = Store(tmp_path / "ok")
    ok.save(run_trial(specs[0]))
    mixed = Store(tmp_path / "mixed")
    mixed.save(run_trial(specs[0]))
    mixed.save(failed_result(specs[1], "worker process died: BrokenProcessPool"))
    only_failed = Store(tmp_path / "failed")
    only_failed.save(failed_result(specs[1], "worker process died: BrokenProcessPool"))
    types = _dtypes(tmp_path / "ok")
    mixed_types = _dtypes(tmp_path / "mixed")
    assert mixed_types == types
    failed_types = _dtypes(tmp_path / "failed")
    assert {c: failed_types[c] for c in failed_types} == {c: types[c] for c in failed_types}
    assert failed_types["epochs_run"] == "Int64"
    reread = Store(tmp_path / "mixed").trials()  # a resuming store reads the same types back
    assert reread.dtypes.astype(str).to_dict() == mixed_types
