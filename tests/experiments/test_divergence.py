"""Trial statuses as users mean them (GitHub issue 17): a finite loss that blew up past
``train.divergence`` and stayed there is "diverged" with its reason; a spike it recovers from
is not; non-finite losses and gradients are diverged with their own reason."""

from __future__ import annotations

import math
import re

import pytest
import torch

import rnn_diag.experiments.trial as trial_mod
from rnn_diag.experiments.config import ConfigError, validate_config
from rnn_diag.experiments.grid import expand
from rnn_diag.experiments.trial import run_trial

CHANCE = math.log(3)  # weather: three i.i.d. classes

#: The issue's case, small: weather, weight_scale 5, Adam lr 1e6, full batch.
EXPLODING = {
    "name": "boom",
    "task": {"name": "weather", "seq_len": 10, "n_days": 200},
    "model": {"cell": "rnn", "hidden_size": 10, "weight_scale": 5.0},
    "train": {"epochs": 8, "lr": 1e6},
    "probes": {"every": 1, "lyapunov": ["end"], "lyapunov_steps": 50},
}

#: A quick trial whose training is replaced by a scripted loss sequence below.
SCRIPTED = {
    "name": "scripted",
    "task": {"name": "weather", "seq_len": 5, "n_days": 60},
    "model": {"cell": "rnn", "hidden_size": 4},
    "train": {"epochs": 10},
    "probes": {"gradients": False, "lyapunov": [], "spectra": []},
}


def _run(data):
    return run_trial(expand(validate_config(data, "t.yaml"))[0])


def _scripted(monkeypatch, losses, **train):
    """Run :data:`SCRIPTED` with epoch e's training loss ``losses[e]`` (no real training)."""

    def fake_epoch(self, s, epoch, record):
        self.curves.append({"epoch": epoch + 1, "train_loss": losses[epoch],
                            "train_metric": 0.3, "val_loss": losses[epoch], "val_metric": 0.3,
                            "grad_norm": 1.0, "seconds": 0.0})
        return True

    monkeypatch.setattr(trial_mod._Recorder, "_train_epoch", fake_epoch)
    data = {**SCRIPTED, "train": {**SCRIPTED["train"], "epochs": len(losses), **train}}
    return _run(data)


def _number(text: str, before: str) -> float:
    """The number written just before ``before`` in ``text`` (e.g. "2.8e+06× chance")."""
    return float(re.search(r"([-+0-9.e]+)" + re.escape(before), text).group(1))


def test_the_issue_case_lr_1e6_is_diverged_with_loss_and_multiple_of_chance():
    res = _run(EXPLODING)
    row, curves = res.row, res.tables["curves"]
    assert row["status"] == "diverged", row["error"]
    assert all(math.isfinite(v) for v in curves.train_loss)  # finite, yet exploded
    # independent facts from the stored curve: the last 3 epochs are > 100x chance (ln 3), the
    # first is not (it is measured before any update), and training stopped after those 3
    over = (curves.train_loss > 100 * CHANCE).tolist()
    assert over[-3:] == [True] * 3 and not all(over)
    assert row["epochs_run"] == len(curves) < EXPLODING["train"]["epochs"]
    last = curves.iloc[-1]
    error = row["error"]
    assert f"train loss {last.train_loss:.2g} at epoch {int(last.epoch)}" in error
    assert _number(error, "× chance") == pytest.approx(last.train_loss / CHANCE, rel=0.05)
    assert "training stopped" in error
    # a finite blow-up keeps its tables, "end" snapshots included, for the report
    assert {"gradients", "summaries", "spectra", "lyapunov", "predictions"} <= set(res.tables)
    assert set(res.tables["gradients"].epoch) == set(range(len(curves)))
    assert "end" in set(res.tables["spectra"]["when"])


def test_the_issue_case_is_ok_with_divergence_off():
    data = {**EXPLODING, "train": {**EXPLODING["train"], "epochs": 3, "divergence": None}}
    res = _run(data)
    assert res.row["status"] == "ok" and res.row["error"] is None
    assert res.tables["curves"].train_loss.iloc[-1] > 100 * CHANCE


def test_slow_blow_up_is_diverged_once_patience_epochs_are_above_chance(monkeypatch):
    losses = [1.1 * 3**k for k in range(12)]  # x3 per epoch: crosses 100x chance at epoch 6
    res = _scripted(monkeypatch, losses)
    first_over = next(e for e, v in enumerate(losses, 1) if v > 100 * CHANCE)
    assert first_over == 6
    stop = first_over + 3 - 1  # default patience 3
    assert res.row["status"] == "diverged"
    assert res.row["epochs_run"] == stop == len(res.tables["curves"])
    assert res.row["error"].startswith(f"train loss {losses[stop - 1]:.2g} at epoch {stop}, ")
    assert _number(res.row["error"], "× chance") == pytest.approx(losses[stop - 1] / CHANCE,
                                                                 rel=0.05)


def test_blow_up_relative_to_the_first_epoch(monkeypatch):
    losses = [0.01, 0.05, 0.5, 1.5, 2.0, 2.0, 2.0]  # never 100x chance, but 200x the first
    res = _scripted(monkeypatch, losses, divergence={"patience": 2})
    assert res.row["status"] == "diverged"
    # limit 100 x 0.01 = 1: epoch 3 (0.5) is under it, epochs 4 and 5 over: patience 2 met
    assert res.row["epochs_run"] == 5
    assert "its first-epoch loss (limit 100×)" in res.row["error"]
    off = _scripted(monkeypatch, losses, divergence={"first_factor": None})
    assert off.row["status"] == "ok"


def test_a_single_spike_that_recovers_stays_ok_and_shows_in_the_curve(monkeypatch):
    losses = [1.1, 1.0, 5000.0, 0.95, 0.9, 0.9]
    res = _scripted(monkeypatch, losses)
    assert res.row["status"] == "ok" and res.row["error"] is None
    curves = res.tables["curves"]
    assert curves.train_loss.max() == 5000.0 and int(curves.train_loss.idxmax()) == 2
    assert res.row["epochs_run"] == len(losses)
    # two spiked epochs in a row are still fewer than the patience of 3
    twice = _scripted(monkeypatch, [1.1, 5000.0, 6000.0, 1.0, 1.0])
    assert twice.row["status"] == "ok"


def test_a_blow_up_at_the_last_epoch_is_diverged(monkeypatch):
    res = _scripted(monkeypatch, [1.1, 1.0, 0.9, 900.0])
    assert res.row["status"] == "diverged"
    assert res.row["epochs_run"] == 4
    assert res.row["error"].startswith("train loss 9e+02 at epoch 4, 8.2e+02× chance")
    assert res.row["error"].endswith("; 1 epoch in a row above it at the end of training")
    two = _scripted(monkeypatch, [1.1, 1.0, 900.0, 900.0])
    assert two.row["error"].endswith("; 2 epochs in a row above it at the end of training")


def test_non_finite_gradient_is_diverged_with_its_own_reason(monkeypatch):
    monkeypatch.setattr(trial_mod, "_clip", lambda model, max_norm: torch.tensor(math.inf))
    res = _run({**SCRIPTED, "train": {"epochs": 3}})
    assert res.row["status"] == "diverged"
    assert res.row["error"].startswith("gradient norm became inf at epoch 1 (before clipping")
    assert res.row["epochs_run"] == 0


def test_divergence_keys_are_validated():
    base = {"name": "x", "task": {"name": "weather", "seq_len": 5}}
    cfg = validate_config(base)
    d = cfg.train.divergence
    assert (d.chance_factor, d.first_factor, d.patience) == (100.0, 100.0, 3)
    for bad, where in (({"patience": 0}, "train.divergence.patience"),
                       ({"chance_factor": 1.0}, "train.divergence.chance_factor"),
                       ({"chanse_factor": 5}, "did you mean \"chance_factor\"")):
        with pytest.raises(ConfigError, match=re.escape(where)):
            validate_config({**base, "train": {"divergence": bad}}, "x.yaml")
