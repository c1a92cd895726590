"""Fixtures of the integration tests: a probed two-layer LSTM logged at 3 steps, and W&B in
offline mode under a temporary folder."""

from __future__ import annotations

import pytest
import torch
from integration_helpers import backward, expected_scalars
from torch import nn

import rnn_diag as rd


@pytest.fixture
def lstm_run():
    """A two-layer LSTM probed at its root, recorded at 3 steps: ``(steps, expected, probe,
    model, log)``, where ``log(logger)`` replays the 3 backward passes, logging each with
    ``logger.log(probe, step)``, and ``expected[step]`` are its expected scalars."""
    torch.manual_seed(0)
    model = nn.LSTM(3, 8, num_layers=2)
    steps = (0, 5, 10)

    def log(logger, **kwargs) -> dict[int, dict[str, float]]:
        expected = {}
        with rd.attach(model) as probe:
            for i, step in enumerate(steps):
                backward(model, T=12 + 3 * i, seed=i)
                expected[step] = expected_scalars(probe.frame())
                assert logger.log(probe, step, **kwargs) == pytest.approx(expected[step])
        return expected

    return steps, log


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode, everything under ``tmp_path``, no network, no output."""
    for name, value in {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_DATA_DIR": str(tmp_path / "data"), "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


