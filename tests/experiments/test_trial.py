"""One trial on its own: optimizers that need a closure, and the rows every trial carries."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rnn_diag.experiments.config import ConfigError, validate_config
from rnn_diag.experiments.grid import expand
from rnn_diag.experiments.trial import run_trial

BASE = {
    "name": "one",
    "task": {"name": "adding", "seq_len": 10, "n_train": 64, "n_val": 16},
    "model": {"cell": "gru", "hidden_size": 8},
    "train": {"epochs": 6, "lr": 0.5, "optimizer": "LBFGS", "optimizer_args": {"max_iter": 5}},
    "probes": {"every": 3, "lyapunov": [], "spectra": []},
}


def _trial(data):
    return run_trial(expand(validate_config(data, "one.yaml"))[0])


def test_lbfgs_gets_a_closure_and_learns():
    res = _trial(BASE)
    assert res.row["status"] == "ok", res.row["error"]
    curves = res.tables["curves"]
    assert curves.train_loss.iloc[-1] < 0.5 * curves.train_loss.iloc[0]
    assert set(res.tables["gradients"].epoch) == {0, 3, 5}


def test_lbfgs_with_line_search_and_lbfgs_clipping_refused():
    res = _trial({**BASE, "train": {**BASE["train"], "lr": 1.0,
                                    "optimizer_args": {"max_iter": 5,
                                                       "line_search_fn": "strong_wolfe"}}})
    assert res.row["status"] == "ok", res.row["error"]
    assert all(math.isfinite(v) for v in res.tables["curves"].train_loss)
    # clipping inside LBFGS's line search breaks its curvature pairs: refused up front
    with pytest.raises(ConfigError, match="train.clip_grad_norm.*LBFGS"):
        validate_config({**BASE, "train": {**BASE["train"], "clip_grad_norm": 1.0}}, "one.yaml")


def test_sparse_adam_is_refused_before_running():
    with pytest.raises(ConfigError, match="train.optimizer"):
        validate_config({**BASE, "train": {"optimizer": "SparseAdam"}}, "one.yaml")


def test_summaries_are_a_pure_function_of_the_stored_gradients():
    from rnn_diag.experiments.store import Table
    from rnn_diag.experiments.trial import summarise_gradients

    res = _trial(BASE)
    again = pd.DataFrame(summarise_gradients(res.tables[Table.GRADIENTS]))
    assert again.equals(res.tables[Table.SUMMARIES])
