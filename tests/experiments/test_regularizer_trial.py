"""``train.regularizer`` in a runner trial: the terms' values and schedules, their effect on
the trained dynamics (measured by rnn_diag's own Lyapunov and spectra snapshots, independent
of the regularisers' differentiable versions), and honest failure."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import rnn_diag.experiments.regularization as regularization
from rnn_diag.experiments.config import validate_config
from rnn_diag.experiments.config.regularizers import (
    FlossingConfig,
    OrthogonalityPenaltyConfig,
    RegularizerSchedule,
    SpectralNormPenaltyConfig,
)
from rnn_diag.experiments.grid import expand
from rnn_diag.experiments.regularization import Regularization
from rnn_diag.experiments.trial import run_trial
from rnn_diag.modules.regularizers import orthogonality_penalty, spectral_norm_penalty


def _trial(regularizer, **train):
    cfg = validate_config({
        "name": "r", "task": {"name": "delayed_xor", "seq_len": 40, "delay": 4, "n_train": 20,
                              "n_val": 10},
        "model": {"hidden_size": 8, "init": "normal", "weight_scale": 0.5},
        "train": {"epochs": 1, "device": "cpu", "regularizer": regularizer, **train},
        "probes": {"lyapunov": ["init", "end"], "lyapunov_steps": 400, "spectra": ["init", "end"],
                   "every": 1}})
    return run_trial(expand(cfg)[0])


def test_weighted_terms_and_schedule():
    torch.manual_seed(0)
    rnn = nn.RNN(1, 4, batch_first=True)
    spectral = SpectralNormPenaltyConfig(kind="spectral_norm_penalty", target=0.5, weight=2.0,
                                         schedule=RegularizerSchedule(every=3, until=2))
    ortho = OrthogonalityPenaltyConfig(kind="orthogonality_penalty", weight=0.25,
                                       schedule=RegularizerSchedule(before=5))
    reg = Regularization([spectral, ortho], rnn)
    x = torch.zeros(2, 6, 1)
    both = 2.0 * spectral_norm_penalty(rnn, 0.5) + 0.25 * orthogonality_penalty(rnn)
    assert reg.loss(x, batch=0, epoch=0).item() == pytest.approx(both.item(), rel=1e-6)
    assert reg.loss(x, batch=1, epoch=0).item() == pytest.approx(
        0.25 * orthogonality_penalty(rnn).item(), rel=1e-6)
    assert reg.loss(x, batch=3, epoch=2).item() == pytest.approx(  # spectral's until passed
        0.25 * orthogonality_penalty(rnn).item(), rel=1e-6)
    assert reg.before == 5
    assert reg.before_loss(x, 4).item() == pytest.approx(0.25 * orthogonality_penalty(rnn).item())
    assert reg.before_loss(x, 5) is None
    assert not Regularization([], rnn)


def test_reported_training_loss_is_the_tasks_alone():
    """The first batch's loss is taken before any step: with and without a penalty it is the
    same number, and the penalty is reported in its own column."""
    plain = _trial([])
    penalised = _trial([{"kind": "spectral_norm_penalty", "target": 2.0, "weight": 3.0}])
    a, b = plain.tables["curves"], penalised.tables["curves"]
    assert a["train_loss"].iloc[0] == b["train_loss"].iloc[0]
    assert "regularizer_loss" not in a and b["regularizer_loss"].iloc[0] > 0


def test_spectral_penalty_before_training_sets_sigma_max():
    """200 steps on the penalty alone pull every σ_max of W_hh from its start to the target;
    the stored spectra (torch.linalg.svdvals of the weights) show it."""
    r = _trial([{"kind": "spectral_norm_penalty", "target": 1.2, "weight": 1.0,
                 "schedule": {"before": 200, "until": 1}}], lr=0.01)
    assert r.row["status"] == "ok", r.row["error"]
    assert r.row["spectral_norm_init"] < 1.0
    assert r.row["spectral_norm_end"] == pytest.approx(1.2, abs=0.05)


def test_flossing_before_training_brings_the_top_exponent_to_zero():
    """A contracting start (radius 0.5: top exponent well below 0) flossed for 300 steps ends
    with its top exponent at 0 ± 0.05, as measured by rnn_diag.lyapunov_spectrum on the task's
    inputs (a separate, non-differentiable estimator over 400 steps)."""
    torch.set_num_threads(1)
    r = _trial([{"kind": "flossing", "k": 2, "weight": 1.0, "schedule": {"before": 300,
                                                                         "until": 1}}],
               lr=0.01)
    assert r.row["status"] == "ok", r.row["error"]
    assert r.row["lyapunov_top_init"] < -0.3
    assert abs(r.row["lyapunov_top_end"]) < 0.05


def test_a_non_finite_term_makes_the_trial_diverged(monkeypatch):
    monkeypatch.setattr(regularization, "flossing_loss",
                        lambda *a, **k: torch.tensor(math.inf, requires_grad=True))
    r = _trial([{"kind": "flossing", "schedule": {"before": 3}}])
    assert r.row["status"] == "diverged"
    assert r.row["error"].startswith("the flossing term became inf at step 1 before training")
    assert "dead relu" in r.row["error"]


def test_a_window_longer_than_the_sequence_fails_the_trial_with_the_reason():
    r = _trial([{"kind": "flossing", "window": 50}])
    assert r.row["status"] == "failed"
    assert "flossing needs warmup + window = 0 + 50 steps, but the task's sequences have 40" \
        in r.row["error"]


def test_flossing_term_config_defaults():
    f = FlossingConfig(kind="flossing")
    assert (f.k, f.window, f.warmup, f.target, f.batch_size, f.weight) == (1, None, 0, 0.0, 8,
                                                                         1.0)
