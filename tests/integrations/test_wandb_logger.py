"""rnn_diag.integrations.wandb with the real package, in offline mode: log, finish the run, read
its ``.wandb`` file and media back, compare with summarise_frame."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import wandb
from integration_helpers import wandb_history, wandb_metrics

from rnn_diag.integrations.wandb import TABLE_COLUMNS, WandbLogger, log_probe


def _init(path):
    return wandb.init(project="rnn-diag-tests", dir=str(path), mode="offline")


def _run_dir(run) -> str:
    return os.path.dirname(run.dir)  # run.dir is <run dir>/files


def test_scalars_table_and_heatmap_read_back(wandb_offline, lstm_run):
    steps, log = lstm_run
    run = _init(wandb_offline)
    run_dir, files = _run_dir(run), run.dir
    logger = WandbLogger(figures_every=2)  # the active run
    expected = log(logger)
    run.finish()

    rows = [r for r in wandb_history(run_dir) if "rnn_diag/step" in r]
    assert [r["rnn_diag/step"] for r in rows] == list(steps)
    for row, step in zip(rows, steps):
        ours = {k: v for k, v in row.items()
                if k.startswith("rnn_diag/") and isinstance(v, (int, float))}
        ours.pop("rnn_diag/step")
        assert ours == pytest.approx(expected[step], rel=1e-12)
    # rnn_diag/step is the x axis of every rnn_diag/* key
    metrics = wandb_metrics(run_dir)
    assert any(m.glob_name == "rnn_diag/*" and m.step_metric == "rnn_diag/step"
               for m in metrics)

    # figures at the 1st and 3rd call: the profile chart's table and the heatmaps
    with_figures = [r for r in rows if "rnn_diag/model/profile_table" in r]
    assert [r["rnn_diag/step"] for r in with_figures] == [0, 10]
    for row in with_figures:
        for layer in ("layer0", "layer1"):
            assert row[f"rnn_diag/model/{layer}/heatmap"]["_type"] == "image-file"
        table_ref = row["rnn_diag/model/profile_table"]
        assert table_ref["_type"] == "table-file"
        with open(os.path.join(files, table_ref["path"])) as f:
            table = json.load(f)
        assert table["columns"] == TABLE_COLUMNS
        data = table["data"]
        assert {r[0] for r in data} == {row["rnn_diag/step"]}
        assert {r[1] for r in data} == {"model"}
        for layer in ("layer0", "layer1"):
            part = sorted((r for r in data if r[2] == layer), key=lambda r: r[4])
            T = len(part)
            assert [r[4] for r in part] == list(range(T))
            assert [r[3] for r in part] == [T - 1 - t for t in range(T)]
            prefix = f"rnn_diag/model/{layer}"
            step_expected = expected[row["rnn_diag/step"]]
            assert step_expected[f"{prefix}/steps"] == T
            assert part[0][5] == pytest.approx(step_expected[f"{prefix}/log10_grad_first"])
            assert all(np.isfinite(r[5]) for r in part)


def test_step_metric_none_uses_the_run_step(wandb_offline, lstm_run):
    steps, log = lstm_run
    run = _init(wandb_offline)
    run_dir = _run_dir(run)
    expected = log(WandbLogger(run, step_metric=None), figures=False)
    run.finish()
    rows = [r for r in wandb_history(run_dir) if any(k.startswith("rnn_diag/") for k in r)]
    assert [r["_step"] for r in rows] == list(steps)
    assert all("rnn_diag/step" not in r for r in rows)
    for row, step in zip(rows, steps):
        ours = {k: v for k, v in row.items() if k.startswith("rnn_diag/")}
        assert ours == pytest.approx(expected[step], rel=1e-12)


def test_log_probe_function_and_no_active_run(wandb_offline, lstm_run):
    assert wandb.run is None
    with pytest.raises(RuntimeError, match="no active W&B run"):
        WandbLogger()
    steps, log = lstm_run

    class Adapter:  # log_probe through the lstm_run fixture's logger interface
        def log(self, probe, step, **kwargs):
            return log_probe(probe, step, **kwargs)

    run = _init(wandb_offline)
    run_dir = _run_dir(run)
    log(Adapter(), figures=False)
    run.finish()
    rows = [r for r in wandb_history(run_dir) if "rnn_diag/step" in r]
    assert [r["rnn_diag/step"] for r in rows] == list(steps)
    with pytest.raises(RuntimeError, match="no active W&B run"):
        log_probe(None, 0)
