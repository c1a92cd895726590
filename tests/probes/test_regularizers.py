"""Differentiable regularisers (rnn_diag.modules.regularizers) against independent references:
central finite differences for every gradient, rnn_diag's non-differentiable Lyapunov spectrum
for the exponents, theory (W = g·Q at the origin gives log g), and that each regulariser,
optimised alone, does what it is for."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import rnn_diag as rd
from rnn_diag.dynamics.lyapunov import lyapunov_exponents
from rnn_diag.modules.dynamics import module_linearisation
from rnn_diag.modules.regularizers import (
    flossing_loss,
    lyapunov_exponents_differentiable,
    orthogonality_penalty,
    spectral_norm_penalty,
)

DT = torch.float64


@pytest.fixture
def one_thread():
    """Small sequential ops are several times faster on one thread (and the CI box is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(kind: str, H: int = 5, I: int = 3, seed: int = 0, **kw) -> nn.RNNBase:
    torch.manual_seed(seed)
    if kind == "rnn_relu":  # a positive bias keeps every unit alive (no -inf exponents)
        m = nn.RNN(I, H, nonlinearity="relu", **kw).to(DT)
        with torch.no_grad():
            m.bias_ih_l0.add_(2.0)
        return m
    cls = {"rnn_tanh": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]
    return cls(I, H, **kw).to(DT)


def fd_check(module: nn.Module, loss_fn, directions: int = 3, eps: float = 1e-4) -> float:
    """Largest relative error between autograd's directional derivative ∇L·v and central
    differences (L(p + εv) − L(p − εv)) / 2ε, Richardson-extrapolated from ε and ε/2 (error
    O(ε⁴)), over random directions v in parameter space."""
    params = list(module.parameters())
    module.zero_grad()
    loss_fn().backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    gen = torch.Generator().manual_seed(1)

    def central(vs, e):
        vals = []
        with torch.no_grad():
            for sign in (1.0, -1.0):
                for p, v in zip(params, vs):
                    p.add_(sign * e * v)
                vals.append(loss_fn().item())
                for p, v in zip(params, vs):
                    p.sub_(sign * e * v)
        return (vals[0] - vals[1]) / (2 * e)

    worst = 0.0
    for _ in range(directions):
        vs = [torch.randn(p.shape, generator=gen, dtype=DT) for p in params]
        ad = sum((g * v).sum() for g, v in zip(grads, vs)).item()
        fd = (4 * central(vs, eps / 2) - central(vs, eps)) / 3
        assert math.isfinite(fd) and math.isfinite(ad) and ad != 0
        worst = max(worst, abs(fd - ad) / abs(ad))
    return worst


# --------------------------------------------------------------------------------------------
# Exponents


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
def test_flossing_gradient_matches_finite_differences(kind, one_thread):
    m = make(kind, H=5, seed=3)
    x = torch.randn(22, 2, 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    loss = lambda: flossing_loss(m, x, k=3, window=18, warmup=4, target=-0.1)
    assert fd_check(m, loss) <= 1e-6


def test_exponents_gradient_multilayer_projected_lstm(one_thread):
    m = make("lstm", H=5, num_layers=2, proj_size=3, seed=1)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    loss = lambda: lyapunov_exponents_differentiable(m, x, k=4, window=16, warmup=4,
                                                     layer=1).sum()
    assert fd_check(m, loss) <= 1e-6


@pytest.mark.parametrize(
    "kind, kw, layer",
    [("rnn_tanh", {}, None), ("rnn_relu", {}, None), ("gru", {}, None), ("lstm", {}, None),
     ("lstm", {"proj_size": 3}, None), ("gru", {"num_layers": 2}, 1),
     ("lstm", {"num_layers": 3}, 2)],
)
def test_exponents_equal_rnn_diag_lyapunov_spectrum(kind, kw, layer, one_thread):
    m = make(kind, H=6, seed=4, **kw)
    x = torch.randn(150, 3, generator=torch.Generator().manual_seed(5), dtype=DT)
    # a non-zero h0 for the analysed layer (the reference's h0 of a multi-layer module is the
    # whole module's state, so multi-layer cases start at zero)
    S = {"lstm": 9 if kw.get("proj_size") else 12}.get(kind, 6)
    h0 = 0.1 * torch.randn(S, generator=torch.Generator().manual_seed(6), dtype=DT)
    h0 = h0 if layer is None else None
    ours = lyapunov_exponents_differentiable(m, x, h0, k=4, window=120, warmup=30, layer=layer)
    ref = rd.lyapunov_spectrum(m, h0, x, k=4, warmup=30, layer=layer)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours.detach(), ref, rtol=0, atol=1e-10)


def test_batch_is_the_mean_of_each_sequences_exponents(one_thread):
    """B sequences: rnn_diag's batched QR iteration (same random start, one row per sequence)
    on each sequence's Jacobians, then the mean over the batch."""
    m = make("gru", H=5)
    x = torch.randn(40, 3, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    ours = lyapunov_exponents_differentiable(m, x, k=2, window=30, warmup=10)
    lins = [module_linearisation(m, x[:, b])[0] for b in range(3)]
    jac = lambda t: torch.cat([lin.jacobian(t) for lin in lins])
    ref = lyapunov_exponents(jac, 40, k=2, warmup=10).mean(0)
    torch.testing.assert_close(ours.detach(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("g", [0.5, 1.0, 1.7])
def test_scaled_orthogonal_gives_log_g(g, one_thread):
    """tanh RNN, W = g·Q, no bias, zero input, h0 = 0: the state stays at 0, J_t = g·Q, and
    every exponent is log g."""
    H = 6
    m = nn.RNN(2, H, bias=False).to(DT)
    Q = torch.linalg.qr(torch.randn(H, H, generator=torch.Generator().manual_seed(0),
                                    dtype=DT)).Q
    with torch.no_grad():
        m.weight_hh_l0.copy_(g * Q)
    lam = lyapunov_exponents_differentiable(m, torch.zeros(50, 2, dtype=DT), k=H, window=40,
                                            warmup=10)
    torch.testing.assert_close(lam.detach(), torch.full((H,), math.log(g), dtype=DT),
                               rtol=0, atol=1e-12)
    if g > 1:
        return  # an expanding map leaves the origin and saturates
    # small inputs: the state stays near 0 and tanh' ≈ 1
    x = 1e-4 * torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    lam = lyapunov_exponents_differentiable(m, x, k=3, window=250, warmup=50)
    assert (lam.detach() - math.log(g)).abs().max() < 1e-3


def test_flossing_alone_drives_top_exponents_to_zero(one_thread):
    """A random tanh RNN (H = 32, weight scale 0.5: λ₁..₄ ≈ −0.6..−0.8) trained on the
    flossing loss alone ends with its top 4 exponents, measured on fresh inputs by
    rnn_diag.lyapunov_spectrum, within 0.05 of 0 (measured: |λ| < 0.006)."""
    torch.manual_seed(0)
    H, k = 32, 4
    rnn = nn.RNN(2, H)
    with torch.no_grad():
        rnn.weight_hh_l0.normal_(0, 0.5 / H**0.5)
    before = rd.lyapunov_spectrum(rnn, None, torch.randn(2000, 2), k=k, warmup=200)
    assert (before < -0.5).all()
    opt = torch.optim.Adam(rnn.parameters(), lr=0.02)
    for _ in range(300):
        loss = flossing_loss(rnn, torch.randn(60, 4, 2), k=k, window=40, warmup=20)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = rd.lyapunov_spectrum(rnn, None, torch.randn(3000, 2), k=k, warmup=300)
    assert after.abs().max() < 0.05, after


def test_flossing_loss_value_and_layers():
    m = make("gru", H=4, num_layers=2)
    x = torch.randn(30, 3, dtype=DT)
    lam = [lyapunov_exponents_differentiable(m, x, k=2, window=25, warmup=5, layer=l)
           for l in range(2)]
    expected = sum(((v - 0.2) ** 2).mean() for v in lam) / 2
    got = flossing_loss(m, x, k=2, window=25, warmup=5, target=0.2)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(flossing_loss(m, x, k=2, window=25, warmup=5, layer=1),
                               (lam[1] ** 2).mean())


def test_refusals():
    with pytest.raises(ValueError, match="bidirectional"):
        flossing_loss(nn.GRU(2, 3, bidirectional=True), torch.randn(10, 2), window=5)
    with pytest.raises(ValueError, match="layer="):
        lyapunov_exponents_differentiable(nn.RNN(2, 3, num_layers=2), torch.randn(10, 2), k=1,
                                          window=5)
    with pytest.raises(ValueError, match="warmup \\+ window"):
        lyapunov_exponents_differentiable(nn.RNN(2, 3), torch.randn(10, 2), k=1, window=8,
                                          warmup=5)
    with pytest.raises(ValueError, match="k must"):
        lyapunov_exponents_differentiable(nn.LSTM(2, 3), torch.randn(10, 2), k=7, window=8)
    with pytest.raises(TypeError):
        spectral_norm_penalty(nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------
# Weight penalties


@pytest.mark.parametrize("kind, kw", [("rnn_tanh", {}), ("gru", {"num_layers": 2}),
                                      ("lstm", {}), ("lstm", {"proj_size": 3})])
def test_penalties_gradients_match_finite_differences(kind, kw):
    m = make(kind, H=5, **kw)
    assert fd_check(m, lambda: spectral_norm_penalty(m, target=0.9)) <= 1e-6
    assert fd_check(m, lambda: orthogonality_penalty(m)) <= 1e-6


def test_spectral_norm_penalty_value_matches_recurrent_spectra():
    m = make("lstm", H=5, num_layers=2)
    df = rd.recurrent_spectra(m)
    sigma = df[df["index"] == 0]["singular_value"].to_numpy()
    assert len(sigma) == 8
    expected = float(((sigma - 1.3) ** 2).sum())
    assert abs(spectral_norm_penalty(m, target=1.3).item() - expected) < 1e-12


def test_spectral_norm_penalty_pushes_sigma_max_to_target():
    m = make("gru", H=6)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    for _ in range(400):
        loss = spectral_norm_penalty(m, target=0.8)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sigma = [torch.linalg.matrix_norm(b, ord=2).item() for b in m.weight_hh_l0.detach().chunk(3)]
    assert max(abs(s - 0.8) for s in sigma) < 1e-3, sigma


def test_orthogonality_penalty_zero_for_orthogonal_blocks_and_drives_to_it():
    m = make("lstm", H=5, num_layers=2)
    with torch.no_grad():
        for name in ("weight_hh_l0", "weight_hh_l1"):
            for block in getattr(m, name).chunk(4):
                nn.init.orthogonal_(block)
    assert orthogonality_penalty(m).item() < 1e-24
    m = make("rnn_tanh", H=5)
    before = orthogonality_penalty(m).item()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    for _ in range(500):
        loss = orthogonality_penalty(m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.1 and orthogonality_penalty(m).item() < 1e-6


def test_detached_trajectory_same_value_partial_gradient(one_thread):
    m = make("lstm", H=4)
    x = torch.randn(30, 2, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    full = lyapunov_exponents_differentiable(m, x, k=3, window=25, warmup=5)
    cut = lyapunov_exponents_differentiable(m, x, k=3, window=25, warmup=5,
                                            detach_trajectory=True)
    torch.testing.assert_close(full, cut, rtol=0, atol=0)
    g_full, = torch.autograd.grad(full.sum(), m.weight_ih_l0)
    g_cut, = torch.autograd.grad(cut.sum(), m.weight_ih_l0)
    assert torch.isfinite(g_cut).all() and not torch.allclose(g_full, g_cut)
