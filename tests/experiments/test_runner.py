"""The sweep driver end to end, on tiny configs: store contents, resume, divergence, failure
isolation, exit codes, reproducibility and the process-pool backend."""

import json
import math

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

import rnn_diag.experiments.trial
import rnn_diag.tasks
from rnn_diag.cli import main
from rnn_diag.experiments.runner import run_sweep

TINY = {
    "name": "tiny",
    "task": {"name": "weather", "seq_len": 12, "n_days": 120},
    "model": {"cell": "rnn", "hidden_size": 6},
    "train": {"epochs": 3, "lr": 0.01},
    "probes": {"every": 2, "jacobians": "estimate", "saturation": True,
               "lyapunov_steps": 50},
    "sweep": {"model.cell": ["rnn", "gru"], "task.seq_len": [12, 20]},
}


def write(tmp_path, data, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_sweep_writes_the_store_and_resumes(tmp_path):
    cfg = write(tmp_path, TINY)
    out = tmp_path / "out"
    outcome = run_sweep(cfg, out=out, quiet=True)
    assert (outcome.ran, outcome.skipped, outcome.failed) == (4, 0, 0)
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 4 and set(trials.status) == {"ok"}
    assert set(trials["model.cell"]) == {"rnn", "gru"} and set(trials["task.seq_len"]) == {12, 20}
    # settings that were not swept are stored too, so readers need not parse the config
    assert set(trials["task.name"]) == {"weather"} and set(trials["model.hidden_size"]) == {
        TINY["model"]["hidden_size"]}
    assert set(trials["train.seed"]) == {0} and trials["model.weight_scale"].isna().all()
    assert trials.chance_loss.tolist() == pytest.approx([math.log(3)] * 4)
    assert trials.verdict_last.notna().all() and trials.lyapunov_top_end.notna().all()
    curves = pd.read_parquet(out / "curves")
    assert sorted(curves.groupby("trial").epoch.max()) == [3, 3, 3, 3]
    grads = pd.read_parquet(out / "gradients")
    assert set(grads.epoch) == {0, 2}  # every 2 epochs, and the last (index 2)
    assert {"total_mean", "jacobian_mean", "saturation_h"} <= set(grads.metric)
    one = grads[(grads.trial == trials.id[0]) & (grads.epoch == 0) & (grads.metric == "total_mean")]
    assert sorted(one.t) == list(range(12))
    preds = pd.read_parquet(out / "predictions")
    sums = preds.groupby("trial").probability.sum()
    assert sums.tolist() == pytest.approx([1.0] * 4)  # softmax probabilities, not logits
    assert set(preds.name) == {"Sunny", "Rainy", "Cloudy"}
    spectra = pd.read_parquet(out / "spectra")
    assert set(spectra.when) == {"init", "end"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rnn_diag"] and manifest["torch"] and manifest["ended"]
    assert (out / "config.yaml").read_text() == cfg.read_text()

    again = run_sweep(cfg, out=out, quiet=True)
    assert (again.ran, again.skipped) == (0, 4)
    fresh = run_sweep(cfg, out=out, quiet=True, fresh=True)
    assert fresh.ran == 4


def test_same_config_same_numbers(tmp_path):
    data = {**TINY, "sweep": {}}
    cfg = write(tmp_path, data)
    run_sweep(cfg, out=tmp_path / "a", quiet=True)
    run_sweep(cfg, out=tmp_path / "b", quiet=True)
    a, b = pd.read_parquet(tmp_path / "a" / "curves"), pd.read_parquet(tmp_path / "b" / "curves")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


def test_diverging_trial_is_stored_as_diverged(tmp_path):
    data = {
        "name": "boom",
        "task": {"name": "adding", "seq_len": 60, "n_train": 20, "n_val": 5},
        "model": {"cell": "rnn", "nonlinearity": "relu", "init": "identity",
                  "weight_scale": 20.0, "hidden_size": 4},
        "train": {"epochs": 3},
        "probes": {"lyapunov": []},
    }
    outcome = run_sweep(write(tmp_path, data), out=tmp_path / "o", quiet=True)
    row = pd.read_parquet(tmp_path / "o" / "trials.parquet").iloc[0]
    assert outcome.failed == 0 and row.status == "diverged"
    assert row.error.startswith("training loss became ")
    assert row.error.endswith(f"at epoch {row.epochs_run + 1}")


def test_failing_trial_does_not_stop_the_sweep(tmp_path, monkeypatch):
    real = rnn_diag.tasks.make_task

    def flaky(name, *, seq_len, **kw):
        if seq_len == 20:
            raise RuntimeError("disk on fire")
        return real(name, seq_len=seq_len, **kw)

    monkeypatch.setattr(rnn_diag.experiments.trial, "make_task", flaky)
    cfg = write(tmp_path, TINY)
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 1, result.output
    trials = pd.read_parquet(tmp_path / "o" / "trials.parquet")
    failed = trials[trials.status == "failed"]
    assert len(failed) == 2 and (failed["task.seq_len"] == 20).all()
    assert failed.error.str.contains("disk on fire").all()
    assert (trials.status == "ok").sum() == 2


def test_cli_refuses_a_bad_config_with_exit_2_and_no_traceback(tmp_path):
    bad = write(tmp_path, {**TINY, "model": {"cell": "lsmt"}}, "bad.yaml")
    for cmd in (["validate", str(bad)], ["run", str(bad), "--out", str(tmp_path / "o")]):
        result = CliRunner().invoke(main, cmd)
        assert result.exit_code == 2
        assert "bad.yaml" in result.output and "model.cell" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written
    good = CliRunner().invoke(main, ["validate", str(write(tmp_path, TINY))])
    assert good.exit_code == 0 and "4 trial(s)" in good.output


def test_process_pool_gives_the_same_results(tmp_path):
    data = {**TINY, "sweep": {"task.seq_len": [12, 20]}}
    cfg = write(tmp_path, data)
    run_sweep(cfg, out=tmp_path / "seq", quiet=True)
    run_sweep(cfg, out=tmp_path / "par", jobs=2, quiet=True)
    key = ["trial", "epoch"]
    a = pd.read_parquet(tmp_path / "seq" / "curves").sort_values(key).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "par" / "curves").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"),
                                  rtol=1e-5)
