"""Torch threads per trial (``--threads``): the default of the local backends is 1 (the fastest
measured for small models, benchmarks/threads.py), it is overridable, recorded in the
manifest, and an in-process sweep gives torch its thread count back."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import rnn_diag.experiments.backends.local as local
from rnn_diag.experiments.backends import DEFAULT_THREADS, make_backend
from rnn_diag.experiments.runner import run_sweep

TINY = {
    "name": "threads",
    "task": {"name": "weather", "seq_len": 6, "n_days": 60},
    "model": {"cell": "rnn", "hidden_size": 4},
    "train": {"epochs": 1},
    "probes": {"gradients": False, "lyapunov": [], "spectra": []},
    "sweep": {"seed": [0, 1]},
}


@pytest.fixture
def seen(monkeypatch):
    """Torch's thread count inside every in-process trial."""
    counts = []
    real = local.run_trial

    def spy(spec, progress=None):
        counts.append(torch.get_num_threads())
        return real(spec, progress)

    monkeypatch.setattr(local, "run_trial", spy)
    return counts


@pytest.mark.parametrize("threads, expected", [(None, 1), (2, 2)])
def test_in_process_threads_are_set_recorded_and_restored(tmp_path, seen, threads, expected):
    assert DEFAULT_THREADS == 1
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    before = torch.get_num_threads()
    outside = 3 if before != 3 else 4
    torch.set_num_threads(outside)
    try:
        run_sweep(cfg, out=tmp_path / "o", quiet=True, threads=threads)
        assert torch.get_num_threads() == outside  # given back after the sweep
    finally:
        torch.set_num_threads(before)
    assert seen == [expected, expected]
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["threads"] == expected


def test_pool_threads_default_and_override():
    assert make_backend("local", jobs=2).threads == 1
    assert make_backend("local", jobs=2, threads=3).threads == 3
    assert make_backend("local").threads == 1
    with pytest.raises(ValueError, match="threads"):
        local.ProcessPool(2, threads=0)
