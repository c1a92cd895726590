"""Jacobian-product norms against theory (linear recurrences, the Pascanu bound) and against
plain autograd on explicitly unrolled float64 RNN/GRU/LSTM models."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_diag.dynamics.cells import CellWeights, linearise
from rnn_diag.dynamics.jacobian_products import jacobian_product_log10_norms, step_ops

F64 = torch.float64
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


# ---------------------------------------------------------------- explicit unrolled models


def make_params(kind, I, H, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    G = GATES[kind]
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=F64)
    return {
        "weight_ih": r(G * H, I) / math.sqrt(I),
        "weight_hh": scale * r(G * H, H) / math.sqrt(H),
        "bias_ih": 0.1 * r(G * H),
        "bias_hh": 0.1 * r(G * H),
    }


def cell_step(kind, p, H):
    """``step(s [.., S], x [.., I]) -> s_next``, written out from the cell equations; the LSTM
    state is the joint [h | c]."""
    Wi, Wh, bi, bh = p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]

    def step(s, x):
        if kind in ("rnn_tanh", "rnn_relu"):
            a = x @ Wi.T + bi + s @ Wh.T + bh
            return torch.tanh(a) if kind == "rnn_tanh" else torch.relu(a)
        if kind == "gru":
            gi, gh = x @ Wi.T + bi, s @ Wh.T + bh
            r = torch.sigmoid(gi[..., :H] + gh[..., :H])
            z = torch.sigmoid(gi[..., H : 2 * H] + gh[..., H : 2 * H])
            n = torch.tanh(gi[..., 2 * H :] + r * gh[..., 2 * H :])
            return (1 - z) * n + z * s
        h, c = s[..., :H], s[..., H:]
        a = x @ Wi.T + bi + h @ Wh.T + bh
        i, f = torch.sigmoid(a[..., :H]), torch.sigmoid(a[..., H : 2 * H])
        gg, o = torch.tanh(a[..., 2 * H : 3 * H]), torch.sigmoid(a[..., 3 * H :])
        c = f * c + i * gg
        return torch.cat([o * torch.tanh(c), c], -1)

    return step


def unrolled(kind, T=24, B=2, I=3, H=4, seed=0, scale=1.0):
    """Trajectory of the explicit model and our linearisation of it."""
    p = make_params(kind, I, H, seed, scale)
    step = cell_step(kind, p, H)
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(T, B, I, generator=g, dtype=F64)
    S = 2 * H if kind == "lstm" else H
    s0 = 0.5 * torch.randn(B, S, generator=g, dtype=F64)
    states = [s0]
    with torch.no_grad():
        for t in range(T):
            states.append(step(states[-1], x[t]))
    s = torch.stack(states)  # [T+1, B, S]
    h = s[1:, :, :H]
    h_prev = s[:-1, :, :H]
    w = CellWeights(kind, *(p[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    steps = linearise(w, x, h_prev, h, s0[:, H:] if kind == "lstm" else None)
    return step, x, s, steps


def autograd_log10_norm(step, x, s, target, k, b):
    """log10 ‖∂s_target/∂s_k‖₂ of sample b by autograd through the composed steps."""

    def f(sk):
        out = sk
        for t in range(k + 1, target + 1):
            out = step(out, x[t, b])
        return out

    J = torch.autograd.functional.jacobian(f, s[k + 1, b])  # s[k + 1] is s_k
    norm = float(torch.linalg.matrix_norm(J, ord=2))
    return math.log10(norm) if norm > 0 else -math.inf


# ---------------------------------------------------------------- against autograd


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
@pytest.mark.parametrize("target", [-1, 15])
def test_exact_equals_autograd_on_unrolled_model(kind, target):
    T, B = 24, 2
    step, x, s, steps = unrolled(kind, T=T, B=B, scale=1.5)
    out = jacobian_product_log10_norms(steps.jacobian, T, target=target)
    tgt = target % T
    assert out.shape == (T, B) and out.dtype == F64
    assert torch.isnan(out[tgt + 1 :]).all()
    assert (out[tgt] == 0).all()
    checked = 0
    for k in range(tgt):
        for b in range(B):
            ref = autograd_log10_norm(step, x, s, tgt, k, b)
            if math.isfinite(ref):
                assert float(out[k, b]) == pytest.approx(ref, abs=1e-9), (k, b)
                checked += 1
            else:
                assert float(out[k, b]) == -math.inf
    assert checked > 0


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_estimate_is_a_tight_lower_bound_on_small_models(kind):
    T = 60
    _, _, _, steps = unrolled(kind, T=T, B=3, H=6, scale=1.2)
    exact = jacobian_product_log10_norms(steps.jacobian, T)
    for source in (steps, steps.jacobian):  # factor-based and matrix-based products
        est = jacobian_product_log10_norms(source, T, method="estimate")
        assert (est <= exact + 1e-9).all()  # ‖P_kᵀ U‖₂ ≤ ‖P_k‖₂ for orthonormal U
        assert ((exact - est)[: T - 10] < math.log10(1.1)).float().mean() > 0.9


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
def test_factor_products_equal_jacobian_products(kind):
    _, _, _, steps = unrolled(kind, T=5, B=2)
    ops = step_ops(steps)
    S = steps.state_size
    V = torch.randn(2, 3, S, dtype=F64)
    for t in range(5):
        J = steps.jacobian(t)
        torch.testing.assert_close(ops.jvp_rows(t, V), V @ J.transpose(1, 2))
        torch.testing.assert_close(ops.vjp_rows(t, V), V @ J)
        out = torch.empty_like(V)
        ops.vjp_rows(t, V, out)
        torch.testing.assert_close(out, V @ J)
    # the compiled backward window: blocks[k] = blocks[k + 1] J_{k+1} for k = 3, 2, 1
    blocks = torch.full((5, 2, 3, S), torch.nan, dtype=F64)
    blocks[4] = V
    ops.vjp_window(1, 4, blocks)
    ref = V
    for k in (3, 2, 1):
        ref = ref @ steps.jacobian(k + 1)
        torch.testing.assert_close(blocks[k], ref)
    assert torch.isnan(blocks[0]).all()  # outside the window: untouched


def test_user_vjp_and_jvp_callables_give_the_same_estimate():
    T = 40
    _, _, _, steps = unrolled("gru", T=T, B=2, H=5)
    ref = jacobian_product_log10_norms(steps.jacobian, T, method="estimate")
    jac = steps.jacobian
    out = jacobian_product_log10_norms(
        None,
        T,
        method="estimate",
        vjp=lambda t, v: (jac(t).transpose(1, 2) @ v.unsqueeze(-1)).squeeze(-1),
        jvp=lambda t, v: (jac(t) @ v.unsqueeze(-1)).squeeze(-1),
        state_size=5,
        batch_size=2,
        dtype=F64,
    )
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- against theory


@pytest.mark.parametrize("g", [0.5, 1.5])
@pytest.mark.parametrize("method", ["exact", "estimate"])
def test_scaled_orthogonal_linear_recurrence(g, method):
    """h_t = g Q h_{t-1}: ‖∂h_T/∂h_k‖ = g^(T-k), far beyond float64's range at T = 2000."""
    T, H = 2000, 8
    Q = torch.linalg.qr(torch.randn(H, H, dtype=F64, generator=torch.Generator().manual_seed(0)))
    W = (g * Q.Q).unsqueeze(0)
    out = jacobian_product_log10_norms(lambda t: W, T, method=method)
    expected = (T - 1 - torch.arange(T, dtype=F64)) * math.log10(g)
    torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-9)
    assert abs(float(out[0, 0])) > 300  # beyond 1e±308: the raw product is 0 or inf


def test_float32_jacobians_stay_finite_far_below_float32_range():
    T, H = 2000, 8
    Q = torch.linalg.qr(torch.randn(H, H, generator=torch.Generator().manual_seed(1))).Q
    W = (0.5 * Q).unsqueeze(0)  # float32
    out = jacobian_product_log10_norms(lambda t: W, T)
    expected = (T - 1 - torch.arange(T, dtype=F64)) * math.log10(0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-3)


@settings(max_examples=15, deadline=None)
@given(
    H=st.integers(2, 8),
    sigma=st.floats(0.05, 0.99),
    seed=st.integers(0, 10_000),
)
def test_pascanu_bound_for_tanh_rnns_with_small_spectral_norm(H, sigma, seed):
    """σ_max(W_hh) < 1 forces ‖∂h_T/∂h_k‖ ≤ σ_max^(T-k) for tanh (Pascanu et al., 2013)."""
    T = 30
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(H, H, generator=g, dtype=F64)
    W *= sigma / torch.linalg.matrix_norm(W, ord=2)
    w = CellWeights("rnn_tanh", torch.randn(H, 2, generator=g, dtype=F64), W, None, None)
    x = torch.randn(T, 1, 2, generator=g, dtype=F64)
    hs, h = [], torch.zeros(1, H, dtype=F64)
    for t in range(T):
        h = torch.tanh(x[t] @ w.weight_ih.T + h @ W.T)
        hs.append(h)
    hh = torch.stack(hs)
    steps = linearise(w, x, torch.cat([torch.zeros(1, 1, H, dtype=F64), hh[:-1]]), hh)
    out = jacobian_product_log10_norms(steps.jacobian, T)[:, 0]
    bound = (T - 1 - torch.arange(T, dtype=F64)) * math.log10(sigma)
    assert (out <= bound + 1e-9).all()


def test_estimate_within_10_percent_of_exact_on_long_tanh_rnn():
    """docs/design.md §7: ≥ 95% of distances within 10% at T = 1000, H = 64, spectral radius ~1."""
    T, H, I = 1000, 64, 8
    g = torch.Generator().manual_seed(0)
    W = torch.randn(H, H, generator=g, dtype=F64) / math.sqrt(H)
    W /= torch.linalg.eigvals(W).abs().max()
    w = CellWeights("rnn_tanh", torch.randn(H, I, generator=g, dtype=F64) / math.sqrt(I), W,
                    None, None)
    x = torch.randn(T, 1, I, generator=g, dtype=F64)
    with torch.no_grad():
        rnn = torch.nn.RNN(I, H, bias=False).double()
        rnn.weight_ih_l0.copy_(w.weight_ih)
        rnn.weight_hh_l0.copy_(W)
        h, _ = rnn(x)
    steps = linearise(w, x, torch.cat([torch.zeros(1, 1, H, dtype=F64), h[:-1]]), h)
    exact = jacobian_product_log10_norms(steps.jacobian, T)[:-1, 0]
    est = jacobian_product_log10_norms(steps, T, method="estimate")[:-1, 0]
    ratio = 10 ** (est - exact)
    within = ((ratio > 0.9) & (ratio < 1.1)).double().mean()
    assert within >= 0.95, float(within)
    assert float(exact[0]) < -20  # a long range of decades is covered


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("method", ["exact", "estimate"])
def test_exactly_zero_products_give_minus_inf_without_warning(method):
    J = torch.zeros(1, 3, 3)
    J[0, 0, 1] = 2.0  # nilpotent: J² = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = jacobian_product_log10_norms(lambda t: J, 5, method=method)[:, 0]
    assert out[4] == 0.0
    assert out[3] == pytest.approx(math.log10(2.0))
    assert (out[:3] == -math.inf).all()


@pytest.mark.parametrize("method", ["exact", "estimate"])
def test_non_finite_jacobians_warn_and_give_nan(method):
    good = torch.eye(3).unsqueeze(0).repeat(2, 1, 1)
    bad = good.clone()
    bad[1, 0, 0] = math.inf

    def jac(t):
        return bad if t == 5 else good

    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = jacobian_product_log10_norms(jac, 10, method=method)
    assert out[:, 0].abs().max() < 1e-6  # sample 0 is unaffected (float32 rounding)
    assert torch.isnan(out[:5, 1]).all() and out[5:, 1].abs().max() < 1e-6


def test_bad_arguments():
    J = lambda t: torch.eye(2).unsqueeze(0)
    with pytest.raises(ValueError, match="method"):
        jacobian_product_log10_norms(J, 3, method="svd")
    with pytest.raises(ValueError, match="target"):
        jacobian_product_log10_norms(J, 3, target=3)
    with pytest.raises(ValueError, match=r"\[B, S, S\]"):
        jacobian_product_log10_norms(lambda t: torch.eye(2), 3)
    with pytest.raises(ValueError, match="state_size"):
        jacobian_product_log10_norms(None, 3, method="estimate", vjp=lambda t, v: v,
                                     jvp=lambda t, v: v)
