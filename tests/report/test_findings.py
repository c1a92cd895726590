"""Findings: the sentences carry the stored numbers, with hand-computed expectations."""

import math

import numpy as np
import pandas as pd
import pytest

from rnn_diag import gradient_summary
from rnn_diag.report.findings import compute_findings, setting_labels
from rnn_diag.report.run_data import load_run

SWEPT = ("task.seq_len", "model.weight_scale", "train.seed")


def _trials(rows):
    base = {"status": "ok", "error": None, "model.cell": "rnn", "chance_loss": math.log(3),
            "train_loss": 1.09, "val_loss": 1.10, "verdict_first": "vanishing",
            "verdict_last": "vanishing", "spectral_norm_init": np.nan,
            "spectral_radius_init": np.nan, "decay_per_step_first": np.nan,
            "decay_per_step_last": np.nan, "ratio_log10_last": np.nan,
            "lyapunov_top_end": np.nan, "train.seed": 0}
    df = pd.DataFrame([{**base, **r} for r in rows])
    df["label"] = [f"seq_len={r['task.seq_len']}" for r in rows]
    return df


def _summaries(rows):
    """rows: (trial, horizon, anchor) at the last epoch, plus an earlier epoch to be ignored."""
    out = []
    for trial, horizon, anchor in rows:
        out.append({"trial": trial, "epoch": 0, "layer": 0, "direction": 0, "horizon": 0,
                    "anchor": anchor})
        out.append({"trial": trial, "epoch": 9, "layer": 0, "direction": 0,
                    "horizon": horizon, "anchor": anchor})
    return pd.DataFrame(out)


def texts(findings, key=None):
    return [f.text for f in findings if key is None or f.key == key]


def test_reach_in_words_with_the_fraction_of_the_window():
    trials = _trials([
        {"id": "a", "task.seq_len": 1000, "model.weight_scale": None},
        {"id": "b", "task.seq_len": 10, "model.weight_scale": None, "verdict_last": "stable"},
    ])
    summaries = _summaries([("a", 14, 999), ("b", 9, 9)])
    found = texts(compute_findings({"trials": trials, "summaries": summaries}, SWEPT),
                  "profile")
    # 15 of 1000 steps lie within the horizon of 14 steps back (distances 0..14)
    assert ("At seq_len 1000, default init, ∂L/∂h_k fell more than 3 decades below its largest "
            "value beyond 14 steps back: only the last 15 of 1000 steps (1.5% of the window) "
            "receive learning signal.") in found
    assert any("whole window in 1 of 2 settings: seq_len 10, default init" in t for t in found)
    assert any("vanishes in 1, explodes in 0, is stable in 1 of the 2 trials" in t
               for t in found)


def test_seeds_of_one_setting_give_the_median():
    trials = _trials([{"id": s, "task.seq_len": 100, "model.weight_scale": 0.5, "train.seed": i}
                      for i, s in enumerate("xyz")])
    summaries = _summaries([("x", 10, 99), ("y", 30, 99), ("z", 14, 99)])
    (reach,) = [t for t in texts(compute_findings(
        {"trials": trials, "summaries": summaries}, SWEPT), "profile") if "beyond" in t]
    assert "beyond 14 steps back (median over 3 seeds)" in reach
    assert "the last 15 of 100 steps (15% of the window)" in reach


def test_reach_is_told_per_panel_setting_at_its_longest_sequence():
    rows, sums = [], []
    for i, (seq_len, scale, horizon) in enumerate([(10, None, 9), (100, None, 20), (1000, None, 14),
                                                   (10, 0.5, 5), (100, 0.5, 7), (1000, 0.5, 7)]):
        rows.append({"id": f"t{i}", "task.seq_len": seq_len, "model.weight_scale": scale})
        sums.append((f"t{i}", horizon, seq_len - 1))
    shuffled = _trials(rows).iloc[[4, 1, 5, 0, 3, 2]]  # in the order the trials finished
    found = texts(compute_findings({"trials": shuffled, "summaries": _summaries(sums)},
                                   SWEPT), "profile")
    reach = [t for t in found if "beyond" in t]
    assert [t.split(",")[0:2] for t in reach] == [["At seq_len 1000", " default init"],
                                                   ["At seq_len 1000", " weight_scale 0.5"]]
    assert "the last 15 of 1000 steps (1.5% of the window)" in reach[0]
    assert "the last 8 of 1000 steps (0.8% of the window)" in reach[1]
    # with one panel setting only, every sequence length is told
    only = [r for r in rows if r["model.weight_scale"] is None]
    found = texts(compute_findings({"trials": _trials(only), "summaries": _summaries(sums)},
                                   ("task.seq_len",)), "profile")
    assert [t.split(" ∂L")[0] for t in found if "beyond" in t] == [
        "At seq_len 100,", "At seq_len 1000,"]
    assert any("whole window in 1 of 3 settings: seq_len 10." in t for t in found)


def test_failed_and_diverged_trials_are_named_with_their_error():
    trials = _trials([
        {"id": "a", "task.seq_len": 10, "model.weight_scale": None},
        {"id": "b", "task.seq_len": 20, "model.weight_scale": None, "status": "failed",
         "error": "RuntimeError: disk on fire", "verdict_last": None},
        {"id": "c", "task.seq_len": 30, "model.weight_scale": None, "status": "diverged",
         "error": "loss became nan in epoch 2", "verdict_last": None},
    ])
    (status,) = compute_findings({"trials": trials}, SWEPT)[:1]
    assert status.key == "trials"
    assert status.text.startswith("2 of 3 trials did not finish normally")
    assert "seq_len 20, default init, seed 0 failed (RuntimeError: disk on fire)" in status.text
    assert "seq_len 30, default init, seed 0 diverged (loss became nan in epoch 2)" in status.text


def test_chance_and_memorisation():
    chance = math.log(3)
    trials = _trials([
        {"id": "a", "task.seq_len": 10, "model.weight_scale": None, "val_loss": 1.1},
        {"id": "b", "task.seq_len": 1000, "model.weight_scale": None, "train_loss": 1.026,
         "val_loss": 1.12},
    ])
    found = texts(compute_findings({"trials": trials}, SWEPT), "loss")
    assert found[0] == ("No trial predicts held-out data better than chance: the best validation "
                        f"loss is 1.1000 (seq_len 10, default init) against a chance loss of "
                        f"{chance:.4f}.")
    assert "memorisation" in found[1] and "seq_len 1000, default init (train 1.0260" in found[1]
    trials.loc[0, "val_loss"] = 1.05
    found = texts(compute_findings({"trials": trials}, SWEPT), "loss")
    assert found[0].startswith("1 of 2 finished trials ends with a validation loss below chance")
    assert "too little" not in found[0]
    trials.loc[0, "val_loss"] = chance - 0.001  # 0.09% below chance: noise, said so
    found = texts(compute_findings({"trials": trials}, SWEPT), "loss")
    assert found[0].endswith("less than 1% below chance, too little to call it learning.")


def test_pascanu_bound_only_for_tanh_rnn():
    trials = _trials([
        {"id": "a", "task.seq_len": 10, "model.weight_scale": 0.5, "spectral_norm_init": 0.9,
         "spectral_radius_init": 0.5, "decay_per_step_first": -0.3},
        {"id": "b", "task.seq_len": 10, "model.weight_scale": 0.9, "spectral_norm_init": 1.8,
         "spectral_radius_init": 0.9, "decay_per_step_first": -0.01},
    ])
    found = texts(compute_findings({"trials": trials}, SWEPT), "spectra")
    assert len(found) == 2
    assert "In 1 trial the spectral norm σ_max of W_hh at initialisation is below 1 (0.900)" \
           in found[0] and "weight_scale 0.5" in found[0]
    assert "fall by 0.30 decades per step back" in found[0]
    assert "ρ of W_hh at initialisation is below 1 but σ_max is not (0.900 vs 1.800)" in found[1]
    two = _trials([
        {"id": "a", "task.seq_len": 10, "model.weight_scale": 0.5, "spectral_norm_init": 0.9,
         "spectral_radius_init": 0.5, "decay_per_step_first": -0.3},
        {"id": "c", "task.seq_len": 100, "model.weight_scale": 0.5, "spectral_norm_init": 0.7,
         "spectral_radius_init": 0.4, "decay_per_step_first": -0.2},
    ])
    (both,) = texts(compute_findings({"trials": two}, SWEPT), "spectra")
    assert "below 1 (0.700 to 0.900)" in both and "fall by 0.20 to 0.30 decades" in both
    # weight_scale 1.0 sets ρ to 1 up to float32 rounding: not "below 1"
    one = trials.assign(spectral_radius_init=[0.99999994, 0.99999994],
                        spectral_norm_init=[1.45, 1.45])
    assert texts(compute_findings({"trials": one}, SWEPT), "spectra") == []
    lstm = trials.assign(**{"model.cell": "lstm"})
    assert texts(compute_findings({"trials": lstm}, SWEPT), "spectra") == []
    relu = {"model": {"nonlinearity": "relu"}}
    assert texts(compute_findings({"trials": trials}, SWEPT, relu), "spectra") == []


def test_exploding_lyapunov_and_changed_verdicts():
    trials = _trials([
        {"id": "a", "task.seq_len": 100, "model.weight_scale": 1.5, "verdict_last": "exploding",
         "verdict_first": "stable", "decay_per_step_last": 0.021, "ratio_log10_last": 2.08,
         "lyapunov_top_end": 0.046},
        {"id": "b", "task.seq_len": 100, "model.weight_scale": 0.5,
         "lyapunov_top_end": -0.69},
    ])
    found = compute_findings({"trials": trials}, SWEPT)
    (exploding,) = [f.text for f in found if "explodes (" in f.text]
    assert "seq_len 100, weight_scale 1.5: +0.021 decades per step back" in exploding
    assert "‖∂L/∂h_0‖ is +2.1 decades from" in exploding
    (lyap,) = texts(found, "lyapunov")
    assert "from -0.690 (seq_len 100, weight_scale 0.5) to +0.046 nats per step" in lyap
    # exponent / ln 10: -0.690 / 2.3026 = -0.2997, 0.046 / 2.3026 = 0.0200
    assert "i.e. -0.300 to +0.020" in lyap
    assert "1 trial ends with an exponent above +0.01 nats per step: chaotic" in lyap
    assert "(seq_len 100, weight_scale 1.5)." in lyap and "near-neutral" not in lyap
    # within ±0.01 of 0 the sign is not resolved: near-neutral, not chaotic
    near = trials.assign(lyapunov_top_end=[0.004, -0.69])
    (lyap_near,) = texts(compute_findings({"trials": near}, SWEPT), "lyapunov")
    assert "chaotic" not in lyap_near
    assert "1 trial ends within ±0.01 nats per step of 0 (seq_len 100, weight_scale 1.5)" \
        in lyap_near
    trials.loc[1, "lyapunov_top_end"] = -np.inf  # a state that collapsed to exactly zero
    (lyap,) = texts(compute_findings({"trials": trials}, SWEPT), "lyapunov")
    assert "at the end of training is +0.046 nats per step (seq_len 100, weight_scale 1.5)" \
           in lyap and "i.e. +0.020." in lyap
    assert "1 trial ends with an exponent of −∞" in lyap
    assert "(seq_len 100, weight_scale 0.5)" in lyap
    (changed,) = texts(found, "heatmap")
    assert "seq_len 100, weight_scale 1.5, seed 0: stable → exploding" in changed


def test_setting_labels_leave_out_the_seed():
    t = pd.DataFrame({"task.seq_len": [10, 10], "model.cell": ["rnn", "gru"],
                      "train.seed": [0, 1]})
    assert setting_labels(t, ["task.seq_len", "model.cell", "train.seed"]).tolist() == [
        "seq_len 10, cell rnn", "seq_len 10, cell gru"]
    assert setting_labels(t, ["train.seed"]).tolist() == ["all trials", "all trials"]


def test_reach_of_a_real_run_matches_its_recorded_profiles(small_run):
    """The horizon quoted for each ok trial is the farthest step back within 3 decades of the
    largest total_mean value of its last recorded profile (checked here from the raw rows)."""
    run = load_run(small_run)
    grads = run.tables["gradients"]
    grads = grads[(grads.metric == "total_mean") & (grads.state == "h")]
    found = texts(compute_findings(run.for_figures(), run.swept, run.config), "profile")
    labels = setting_labels(run.trials, run.swept)
    checked = 0
    for i, row in run.trials.iterrows():
        prof = grads[grads.trial == row.id]
        if prof.empty:
            continue
        prof = prof[prof.epoch == prof.epoch.max()].sort_values("t")
        y = prof.value.to_numpy()
        finite = np.isfinite(y)
        if not finite.any():
            continue
        d = len(y) - 1 - np.arange(len(y))
        horizon = int(d[finite & (y >= y[finite].max() - 3)].max())
        assert horizon == gradient_summary(y)["horizon"]
        sentence = [t for t in found if t.startswith(f"At {labels[i]},")]
        if horizon + 1 < len(y) and sentence:
            assert f"beyond {horizon} step" in sentence[0]
            assert f"the last {horizon + 1} of {len(y)} steps" in sentence[0]
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("tables", [{}, {"trials": pd.DataFrame()}])
def test_no_trials_no_findings(tables):
    assert compute_findings(tables, SWEPT) == []


def test_a_single_trial_reads_naturally():
    trials = _trials([{"id": "a", "task.seq_len": 10, "model.weight_scale": None,
                       "verdict_last": "stable", "val_loss": 1.2}])
    found = texts(compute_findings({"trials": trials, "summaries": _summaries([("a", 9, 9)])},
                                   ()))
    assert found[0].startswith("At the last recorded epoch the gradient is stable (")
    assert found[1] == "The gradient stays within 3 decades of its largest value over the whole " \
                       "window."
    assert found[2] == ("No trial predicts held-out data better than chance: the best "
                        f"validation loss is 1.2000 against a chance loss of {math.log(3):.4f}.")
