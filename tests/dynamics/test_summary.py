"""gradient_summary against profiles with known answers, and against the top Lyapunov exponent."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rnn_diag.dynamics.lyapunov import lyapunov_exponents
from rnn_diag.dynamics.summary import gradient_summary

F64 = torch.float64


def linear_profile(T, slope):
    """y_t = slope · (T-1-t): the loss at T-1, ``slope`` decades per step of distance."""
    return slope * (T - 1 - np.arange(T, dtype=np.float64))


def test_vanishing_profile():
    s = gradient_summary(linear_profile(200, -0.05))
    assert s["decay_per_step"] == pytest.approx(-0.05, abs=1e-12)
    assert s["horizon"] == 60  # 0.05 · 60 = 3 decades
    assert s["ratio_log10"] == pytest.approx(-0.05 * 199)
    assert s["verdict"] == "vanishing"
    assert s["anchor"] == 199


def test_exploding_profile_is_anchored_at_the_loss_not_the_peak():
    s = gradient_summary(linear_profile(100, 0.02))
    assert s["decay_per_step"] == pytest.approx(0.02, abs=1e-12)
    assert s["verdict"] == "exploding"  # +1.98 decades over the sequence
    assert s["horizon"] == 99  # the far end is the peak
    peak = gradient_summary(linear_profile(100, 0.02), anchor="peak")
    assert peak["anchor"] == 0 and math.isnan(peak["decay_per_step"])


def test_stable_profile_with_noise():
    rng = np.random.default_rng(0)
    y = linear_profile(500, -0.001) + 0.1 * rng.normal(size=500)
    s = gradient_summary(y)
    assert s["decay_per_step"] == pytest.approx(-0.001, abs=2e-4)
    assert s["verdict"] == "stable"  # ≈ -0.5 decades over 500 steps
    assert s["horizon"] == 499


def test_verdict_thresholds_are_on_the_fitted_change():
    assert gradient_summary(linear_profile(101, -0.0299))["verdict"] == "stable"  # -2.99
    assert gradient_summary(linear_profile(101, -0.0301))["verdict"] == "vanishing"
    assert gradient_summary(linear_profile(101, 0.0099))["verdict"] == "stable"  # +0.99
    assert gradient_summary(linear_profile(101, 0.0101))["verdict"] == "exploding"
    assert gradient_summary(linear_profile(101, -0.02), vanish_decades=1)["verdict"] == (
        "vanishing"
    )


def test_non_finite_values():
    y = linear_profile(50, -0.1)
    y[10] = np.nan  # ignored
    y[45:] = -np.inf  # exactly zero after step 44 (e.g. padding): the anchor moves to 44
    s = gradient_summary(y)
    assert s["anchor"] == 44
    assert s["decay_per_step"] == pytest.approx(-0.1, abs=1e-12)
    assert s["horizon"] == 30
    assert s["ratio_log10"] == math.inf  # raw endpoints: finite - (-inf)
    # exact zeros before the loss step with nothing else finite: one point has no slope
    z = np.array([-np.inf, -np.inf, -np.inf, 0.3])
    s = gradient_summary(z)
    assert s["verdict"] == "undetermined" and s["horizon"] == 0
    assert math.isnan(s["decay_per_step"])
    # overflow: exploding whatever the fit says
    o = linear_profile(20, -0.01)
    o[0] = np.inf
    assert gradient_summary(o)["verdict"] == "exploding"
    # nothing finite at all
    s = gradient_summary(np.full(5, np.nan))
    assert s["verdict"] == "undetermined" and s["horizon"] == -1
    # a single step, or a one-step profile padded with NaN: no verdict can be read from it
    assert gradient_summary([1.5])["verdict"] == "undetermined"
    assert gradient_summary([np.nan, np.nan, 0.2])["verdict"] == "undetermined"


def test_batch_gives_one_row_per_sample_and_accepts_torch():
    y = torch.stack([torch.as_tensor(linear_profile(80, -0.1)),
                     torch.as_tensor(linear_profile(80, 0.05))], dim=1)
    df = gradient_summary(y)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["sample", "decay_per_step", "horizon", "ratio_log10", "verdict",
                                "anchor"]
    assert df["verdict"].tolist() == ["vanishing", "exploding"]
    np.testing.assert_allclose(df["decay_per_step"], [-0.1, 0.05], atol=1e-12)
    one = gradient_summary(y[:, 1])
    assert one["decay_per_step"] == pytest.approx(0.05)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[T\] or \[T, B\]"):
        gradient_summary(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="at least one"):
        gradient_summary([])
    with pytest.raises(ValueError, match="anchor"):
        gradient_summary([0.0, 1.0], anchor="middle")


@pytest.mark.parametrize("gain, verdict", [(1.0, "vanishing"), (2.5, "exploding")])
def test_decay_rate_matches_top_lyapunov_exponent(gain, verdict):
    """docs/design.md §8, §10: the long-run slope of log‖λ_k‖ against the distance equals the top
    Lyapunov exponent (the products Jᵀ and J share it). Measured agreement on such models:
    within 1e-3 decades/step; tolerance 5% + 2e-3 decades/step."""
    H, I, T = 32, 4, 3000
    g = torch.Generator().manual_seed(0)
    W = gain * torch.randn(H, H, generator=g, dtype=F64) / math.sqrt(H)
    U = torch.randn(H, I, generator=g, dtype=F64) / math.sqrt(I)
    x = torch.randn(T, I, generator=g, dtype=F64)
    h, derivs = torch.zeros(H, dtype=F64), []
    for t in range(T):
        h = torch.tanh(W @ h + U @ x[t])
        derivs.append(1 - h * h)
    # ∂L/∂h_t for a loss on h_{T-1} only: λ_{t-1} = J_tᵀ λ_t, renormalised (float64 log space).
    lam = torch.randn(H, generator=g, dtype=F64)
    logs, acc = np.zeros(T), math.log10(float(lam.norm()))
    logs[-1] = acc
    for t in range(T - 1, 0, -1):
        lam = W.T @ (derivs[t] * lam)
        n = float(lam.norm())
        acc += math.log10(n)
        lam = lam / n
        logs[t - 1] = acc
    s = gradient_summary(logs)
    top = float(lyapunov_exponents(lambda t: (derivs[t].unsqueeze(-1) * W)[None], T, k=1)[0, 0])
    expected = top / math.log(10)
    assert s["decay_per_step"] == pytest.approx(expected, abs=0.05 * abs(expected) + 2e-3)
    assert s["verdict"] == verdict
