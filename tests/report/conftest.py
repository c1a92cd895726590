"""Shared runs for the report tests: one small real sweep (made once per session) with ok,
failed and diverged trials, and a copy of it whose strings are hostile HTML; and, for every
report test, the check that figure functions leave no pyplot figure open."""

import json
import shutil
import warnings

import matplotlib

matplotlib.use("Agg")  # files only: no window, whichever test module is collected first

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd
import pytest
import yaml

import rnn_diag.experiments.model
import rnn_diag.experiments.trial
from rnn_diag.experiments.runner import run_sweep

# relu + identity init: weight_scale 10 explodes at seq_len 12 and overflows (NaN loss, status
# "diverged") at seq_len 40; weight_scale 1.0 is made to fail (status "failed") below.
SMALL = {
    "name": "small",
    "description": "A small sweep for the report tests.",
    "task": {"name": "weather", "seq_len": 12, "n_days": 120},
    "model": {"cell": "rnn", "hidden_size": 6, "nonlinearity": "relu", "init": "identity"},
    # divergence: null keeps the exploding trial "ok", to show its gradients; the NaN trial
    # is still diverged
    "train": {"epochs": 3, "lr": 0.05, "divergence": None},
    "probes": {"every": 2, "jacobians": "estimate", "saturation": True, "lyapunov": ["end"],
               "lyapunov_steps": 50},
    "sweep": {"task.seq_len": [12, 40], "model.weight_scale": [0.5, 1.0, 10.0]},
}
FAIL_MESSAGE = "disk on fire"

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(autouse=True)
def _no_pyplot_leak():
    """Figure functions build their figures without pyplot: none is left open."""
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a figure function used pyplot's global state"


@pytest.fixture(scope="session")
def hostile():
    """The hostile string planted in :func:`hostile_run`."""
    return HOSTILE


@pytest.fixture(scope="session")
def fail_message():
    """The error message of the failed trials of :func:`small_run`."""
    return FAIL_MESSAGE


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A run folder: 6 trials, 3 ok, 2 failed (weight_scale 1.0), 1 diverged (40, 10.0)."""
    root = tmp_path_factory.mktemp("small")
    cfg = root / "small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL, sort_keys=False))
    real = rnn_diag.experiments.model.init_recurrent

    def flaky(module, init, weight_scale, generator):
        if weight_scale == 1.0:
            raise RuntimeError(FAIL_MESSAGE)
        return real(module, init, weight_scale, generator)

    # the exploding trial's Lyapunov trajectory overflows: a RuntimeWarning, expected here
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mp.setattr(rnn_diag.experiments.trial, "init_recurrent", flaky)  # where it is looked up
        run_sweep(cfg, out=root / "run", quiet=True)
    return root / "run"


@pytest.fixture(scope="session")
def hostile_run(small_run, tmp_path_factory):
    """The small run with HTML in its name, description, labels, errors and manifest."""
    root = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(small_run, root)
    config = {**SMALL, "name": HOSTILE, "description": f"desc {HOSTILE}",
              "model": {**SMALL["model"], "init": f"identity{HOSTILE}"}}
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    trials = pd.read_parquet(root / "trials.parquet")
    trials["label"] = trials["label"] + HOSTILE
    trials.loc[trials.status != "ok", "error"] = f"boom {HOSTILE}"
    trials.to_parquet(root / "trials.parquet", index=False)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["command"] = ["rnn-diag", "run", HOSTILE]
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
