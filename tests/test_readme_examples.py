"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(section: str) -> list[str]:
    start = README.index(section)
    end = README.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", README[start:end], re.S)


def test_attention_decoder_example_records_one_step_per_call():
    code = _blocks("## Models that step their RNN themselves")[0]
    scope = {"torch": torch, "nn": torch.nn, "rd": __import__("rnn_diag")}
    exec(code, scope)  # noqa: S102 - the README's own example
    assert scope["probe"].hidden_grads().shape == (20, 8, 64)
    assert torch.isfinite(scope["probe"].hidden_grad_log10_norms()).all()


def test_quick_example_runs():
    scope: dict = {}
    exec(_blocks("## Example")[0], scope)  # noqa: S102
    assert scope["norms"].shape == (300, 8)


def test_own_training_loop_example_records_a_run_folder(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    exec(_blocks("## Use it in your own training")[0], {})  # noqa: S102
    trials = pd.read_parquet(tmp_path / "runs" / "my_lstm" / "trials.parquet")
    assert trials["status"].tolist() == ["ok"] and trials["steps_run"].tolist() == [100]
    grads = pd.read_parquet(tmp_path / "runs" / "my_lstm" / "gradients")
    assert sorted(grads["step"].unique()) == [0, 25, 50, 75]


def test_tensorboard_and_wandb_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    blocks = _blocks("## Use it in your own training")
    tensorboard, wandb_block, function = blocks[2], blocks[3], blocks[4]
    scopes = [{}, {}, {}]
    for code, scope in zip((tensorboard, wandb_block, function), scopes):
        exec(code, scope)  # noqa: S102
    assert list((tmp_path / "runs" / "lstm").glob("events.out.tfevents.*"))
    assert list((tmp_path / "runs" / "fn").glob("events.out.tfevents.*"))
    run = scopes[1]["run"]  # finished, offline: its files are on disk
    assert run.settings.mode == "offline" and list(Path(run.dir).parent.glob("*.wandb"))


def test_scan_examples_run():
    from rnn_diag.modules.scans import _REGISTRY

    blocks = _blocks("## Diagonal and selective scans")
    scope: dict = {}
    exec(blocks[0].replace("2000", "300"), scope)  # noqa: S102 - shorter, same code
    assert scope["grads"].shape == (300, 8, 32) and scope["grads"].is_complex()
    assert torch.isfinite(scope["norms"]).all() and scope["exps"].shape == (32,)
    scope = {}
    try:
        exec(blocks[1], scope)  # noqa: S102
        assert scope["probe"].hidden_grads().shape == (500, 2, 16)
    finally:
        _REGISTRY.pop(scope.get("MinGRU"), None)


def test_fixed_point_example_runs():
    scope: dict = {}
    exec(_blocks("## Fixed points and slow points")[0], scope)  # noqa: S102
    fps = scope["fps"]
    assert bool(fps.converged.any()) and len(fps.frame()) == len(fps.points)
    assert (scope["slowest"] < 1).all()


def test_regulariser_example_runs():
    scope: dict = {}
    exec(_blocks("## Regularisers: gradient flossing")[0].replace("range(50)", "range(5)"),  # noqa: S102
         scope)
    assert torch.isfinite(scope["loss"])


def test_remedy_config_example_validates():
    """The README's remedy keys, under a minimal config, validate into three trials."""
    import yaml

    from rnn_diag.experiments.config import validate_config
    from rnn_diag.experiments.grid import expand

    start = README.index("## Remedies: which fix works")
    block = re.findall(r"```yaml\n(.*?)```", README[start:README.find("\n## ", start + 1)],
                       re.S)[0]
    data = {"name": "mine", "task": {"name": "adding", "seq_len": 100}, **yaml.safe_load(block)}
    specs = {s.params["remedy"]: s.config for s in expand(validate_config(data))
             if s.params["train.seed"] == 0}
    assert list(specs) == ["none", "clip", "tbptt", "irnn", "flossing", "penalties"]
    none = specs["none"]  # the baseline has no remedy at all
    assert (none.train.regularizer, none.train.tbptt, none.train.clip_grad_norm,
            none.model.init, none.model.nonlinearity) == ([], None, None, "default", "tanh")
    assert specs["tbptt"].train.tbptt == 50 and specs["irnn"].train.regularizer == []
    assert specs["flossing"].train.regularizer[0].schedule.before == 100
    assert [t.kind for t in specs["penalties"].train.regularizer] == [
        "spectral_norm_penalty", "orthogonality_penalty"]
