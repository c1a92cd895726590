"""Lyapunov exponents against theory (linear recurrences) and against torch.func Jacobians."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from rnn_diag.dynamics.lyapunov import lyapunov_exponents, lyapunov_spectrum_callable

F64 = torch.float64


def orthogonal(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64)).Q


@pytest.mark.parametrize("g", [0.5, 1.5])
@pytest.mark.parametrize("qr_every", [1, 7])
def test_scaled_orthogonal_map_has_every_exponent_log_g(g, qr_every):
    W = (g * orthogonal(6, 0)).unsqueeze(0)
    out = lyapunov_exponents(lambda t: W, 300, qr_every=qr_every)
    assert out.shape == (1, 6) and out.dtype == F64
    torch.testing.assert_close(out, torch.full((1, 6), math.log(g), dtype=F64), rtol=0,
                               atol=1e-6)


def test_scaled_orthogonal_callable_form():
    W = 1.5 * orthogonal(5, 1)
    out = lyapunov_spectrum_callable(lambda h, x: W @ h, torch.ones(5, dtype=F64), steps=200)
    torch.testing.assert_close(out, torch.full((5,), math.log(1.5), dtype=F64), rtol=0,
                               atol=1e-6)


def non_normal_matrix():
    """Real, non-normal, with complex pairs: eigenvalues 1.2e^{±0.4i}, 0.9, 0.7e^{±2i}, -0.5,
    0.3, in a random (non-orthogonal) basis."""

    def rot(r, theta):
        return r * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])

    D = scipy.linalg.block_diag(rot(1.2, 0.4), [[0.9]], rot(0.7, 2.0), [[-0.5]], [[0.3]])
    rng = np.random.default_rng(0)
    V = rng.normal(size=(7, 7))
    W = V @ D @ np.linalg.inv(V)
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(W))))[::-1]
    return torch.as_tensor(W), torch.as_tensor(expected.copy())


def test_general_linear_map_gives_log_moduli_of_eigenvalues():
    """Exponents = log|λ_i(W)|. The finite-time error is O(log cond(V) / T) plus an oscillation
    of the same order from the rotating pairs; T = 5000 with 200 warm-up steps gives < 2e-3."""
    W, expected = non_normal_matrix()
    out = lyapunov_exponents(lambda t: W.unsqueeze(0), 5000, warmup=200)[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-3)
    # and k < S gives the leading ones
    top = lyapunov_exponents(lambda t: W.unsqueeze(0), 5000, warmup=200, k=3)[0]
    torch.testing.assert_close(top, expected[:3], rtol=0, atol=2e-3)


def test_warmup_steps_are_not_counted():
    big, small = (10.0 * torch.eye(3, dtype=F64))[None], (0.5 * torch.eye(3, dtype=F64))[None]
    jac = lambda t: big if t < 20 else small
    out = lyapunov_exponents(jac, 100, warmup=20)
    torch.testing.assert_close(out, torch.full((1, 3), math.log(0.5), dtype=F64))
    mixed = lyapunov_exponents(jac, 100)
    torch.testing.assert_close(
        mixed, torch.full((1, 3), (20 * math.log(10) + 80 * math.log(0.5)) / 100, dtype=F64)
    )


def test_batched_trajectories_and_descending_order():
    W = torch.stack([torch.diag(torch.tensor([0.1, 2.0, 0.5], dtype=F64)),
                     torch.diag(torch.tensor([1.0, 3.0, 0.2], dtype=F64))])
    out = lyapunov_exponents(lambda t: W, 300, warmup=50)  # warm-up aligns the basis
    expected = torch.log(torch.tensor([[2.0, 0.5, 0.1], [3.0, 1.0, 0.2]], dtype=F64))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def tanh_rnn_step(H, I, gain, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    W = gain * torch.randn(H, H, generator=g, dtype=dtype) / math.sqrt(H)
    U = torch.randn(H, I, generator=g, dtype=dtype) / math.sqrt(I)
    return (lambda h, x: torch.tanh(W @ h + U @ x)), g


def test_callable_form_matches_explicit_jacobians():
    """The callable form's Jacobians (torch.func) against hand-written diag(1-h²) W."""
    H, I, T = 6, 2, 300
    g = torch.Generator().manual_seed(3)
    W = 1.3 * torch.randn(H, H, generator=g, dtype=F64) / math.sqrt(H)
    U = torch.randn(H, I, generator=g, dtype=F64)
    x = torch.randn(T, I, generator=g, dtype=F64)
    h0 = torch.zeros(H, dtype=F64)
    out = lyapunov_spectrum_callable(lambda h, x_: torch.tanh(W @ h + U @ x_), h0, x, warmup=50)
    hs, h = [], h0
    for t in range(T):
        h = torch.tanh(W @ h + U @ x[t])
        hs.append(h)
    Js = [((1 - hh * hh).unsqueeze(-1) * W).unsqueeze(0) for hh in hs]
    ref = lyapunov_exponents(lambda t: Js[t], T, warmup=50)[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


def test_callable_that_cannot_be_vmapped_still_works():
    W = 0.5 * orthogonal(3, 2)

    def step(h, x):
        if float(h.detach().sum()) > 1e9:  # data-dependent control flow defeats vmap
            return h
        return W @ h

    out = lyapunov_spectrum_callable(step, torch.ones(3, dtype=F64), steps=100)
    torch.testing.assert_close(out, torch.full((3,), math.log(0.5), dtype=F64), atol=1e-6,
                               rtol=0)


def test_float32_agrees_with_float64():
    H, I, T = 16, 3, 1000
    step64, g = tanh_rnn_step(H, I, 1.2, 0)
    x = torch.randn(T, I, generator=g, dtype=F64)
    h0 = torch.zeros(H, dtype=F64)
    e64 = lyapunov_spectrum_callable(step64, h0, x, warmup=100)
    g = torch.Generator().manual_seed(0)
    W = 1.2 * torch.randn(H, H, generator=g, dtype=F64) / math.sqrt(H)
    U = torch.randn(H, I, generator=g, dtype=F64) / math.sqrt(I)
    W32, U32 = W.float(), U.float()
    e32 = lyapunov_spectrum_callable(
        lambda h, x_: torch.tanh(W32 @ h + U32 @ x_), h0.float(), x.float(), warmup=100
    )
    assert e32.dtype == F64
    torch.testing.assert_close(e32, e64, rtol=0, atol=1e-4)


def test_zero_directions_give_minus_inf_without_warning():
    W = torch.tensor([[[0.5, 0.0], [0.0, 0.0]]], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lyapunov_exponents(lambda t: W, 20, warmup=1)[0]
    assert out[0] == pytest.approx(math.log(0.5)) and out[1] == -math.inf


def test_exploding_trajectory_warns_and_gives_nan():
    # h -> 2 h² + 1 overflows to inf after a few steps
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = lyapunov_spectrum_callable(lambda h, x: 2 * h * h + 1, torch.ones(3), steps=50)
    assert out.shape == (3,) and torch.isnan(out).all()


def test_non_finite_jacobians_warn_and_give_nan_for_that_trajectory_only():
    good = torch.eye(2, dtype=F64).unsqueeze(0).repeat(2, 1, 1) * 0.5
    bad = good.clone()
    bad[1, 0, 0] = math.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = lyapunov_exponents(lambda t: bad if t == 3 else good, 10)
    torch.testing.assert_close(out[0], torch.full((2,), math.log(0.5), dtype=F64))
    assert torch.isnan(out[1]).all()


@pytest.mark.parametrize(
    "step, match",
    [
        (lambda h, x: torch.cat([h, h]), r"same shape as h, \(3,\)"),
        (lambda h, x: h.unsqueeze(0), r"same shape as h, \(3,\)"),
        (lambda h, x: (h, h), "same shape as h"),
    ],
)
def test_wrong_output_shape_is_a_clear_error(step, match):
    with pytest.raises(ValueError, match=match):
        lyapunov_spectrum_callable(step, torch.ones(3), steps=5)


def test_bad_arguments():
    f = lambda h, x: h
    with pytest.raises(ValueError, match="steps"):
        lyapunov_spectrum_callable(f, torch.ones(2))
    with pytest.raises(ValueError, match="one state vector"):
        lyapunov_spectrum_callable(f, torch.ones(1, 2), steps=3)
    with pytest.raises(ValueError, match="k must be"):
        lyapunov_spectrum_callable(f, torch.ones(2), steps=3, k=3)
    with pytest.raises(ValueError, match="warmup"):
        lyapunov_spectrum_callable(f, torch.ones(2), steps=3, warmup=3)
    with pytest.raises(ValueError, match="qr_every"):
        lyapunov_spectrum_callable(f, torch.ones(2), steps=3, qr_every=0)
    with pytest.raises(ValueError, match="exceeds"):
        lyapunov_spectrum_callable(f, torch.ones(2), torch.zeros(3, 1), steps=4)
