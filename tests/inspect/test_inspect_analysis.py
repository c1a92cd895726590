"""The numbers of `rnn-diag inspect` against independent references: numpy's eigenvalues and
singular values of the weight blocks, rnn_diag.lyapunov_spectrum of the *original* module on
an independently drawn input, and the theory of (near-)linear recurrences."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import rnn_diag
from rnn_diag.inspect.analysis import InspectResult, InspectSettings, analyse_module
from rnn_diag.inspect.weights import find_groups, rebuild

SETTINGS = InspectSettings(steps=120, warmup=30, input_scale=0.7, seed=3, lyapunov_k=2)


def _rebuilt(module, nonlinearity="tanh"):
    (g,), _ = find_groups({f"net.rnn.{k}": v for k, v in module.state_dict().items()})
    return rebuild(g, nonlinearity)


def _gaussian(T, I, scale, seed):
    # independent of driving_input: the documented recipe, written out
    g = torch.Generator()
    g.manual_seed(seed)
    return (scale * torch.randn(T, I, generator=g, dtype=torch.float64)).float()


def _np_blocks(module, layer, direction, gates):
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    W = getattr(module, "weight_hh" + sfx).detach().double().numpy()
    H = W.shape[0] // gates
    blocks = [W[i * H:(i + 1) * H] for i in range(gates)]
    hr = getattr(module, "weight_hr" + sfx, None)
    if hr is not None:
        blocks = [hr.detach().double().numpy() @ b for b in blocks]
    return blocks


@pytest.mark.parametrize("make, gates", [
    (lambda: nn.LSTM(3, 6, num_layers=2, bidirectional=True), 4),
    (lambda: nn.LSTM(3, 6, proj_size=4), 4),
    (lambda: nn.GRU(2, 5, bias=False), 3),
    (lambda: nn.RNN(2, 7, num_layers=2), 1),
])
def test_spectra_equal_numpy_of_the_gate_blocks(make, gates):
    torch.manual_seed(0)
    original = make()
    result = analyse_module("net.rnn", _rebuilt(original), SETTINGS)
    D = 2 if original.bidirectional else 1
    assert [(r.layer, r.direction) for r in result.layers] == \
        [(l, d) for l in range(original.num_layers) for d in range(D)]
    for r in result.layers:
        blocks = _np_blocks(original, r.layer, r.direction, gates)
        assert len(r.gates) == gates
        for g, block in zip(r.gates, blocks):
            assert g.spectral_radius == pytest.approx(np.abs(np.linalg.eigvals(block)).max(),
                                                      rel=1e-10)
            assert g.sigma_max == pytest.approx(np.linalg.svd(block, compute_uv=False)[0],
                                                rel=1e-10)


@pytest.mark.parametrize("make, where", [
    (lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True), [(0, 0), (1, 1)]),
    (lambda: nn.GRU(3, 4), [(0, 0)]),
    (lambda: nn.GRUCell(3, 4), [None]),
])
def test_lyapunov_exponents_equal_those_of_the_original_module(make, where):
    torch.manual_seed(1)
    original = make()
    result = analyse_module("net.rnn", _rebuilt(original), SETTINGS)
    x = _gaussian(SETTINGS.total_steps, 3, SETTINGS.input_scale, SETTINGS.seed)
    by_layer = {(r.layer, r.direction): r for r in result.layers}
    for w in where:
        kwargs = {} if w is None else dict(layer=w[0], direction=w[1])
        ref = rnn_diag.lyapunov_spectrum(original, inputs=x, k=SETTINGS.lyapunov_k,
                                         warmup=SETTINGS.warmup, **kwargs)
        got = by_layer[w or (0, 0)].lyapunov
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-12)


def _linear_rnn(H, gain, input_gain=1e-4, nonlinearity="tanh"):
    rnn = nn.RNN(2, H, bias=False, nonlinearity=nonlinearity)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(gain * torch.eye(H))
        rnn.weight_ih_l0.mul_(input_gain)
    return rnn


def test_a_contracting_linear_recurrence_decays_at_log10_of_its_gain():
    # h_t = tanh(0.5 h_{t-1} + tiny input) ≈ 0.5 h_{t-1}: J_t ≈ 0.5 I
    result = analyse_module("rnn", _rebuilt(_linear_rnn(8, 0.5)), SETTINGS)
    (r,) = result.layers
    assert r.decay_per_step == pytest.approx(math.log10(0.5), abs=1e-4)
    assert r.log10_at_steps == pytest.approx(SETTINGS.steps * math.log10(0.5), abs=1e-2)
    assert r.horizon == 9  # 9·0.301 = 2.71 decades lost, 10·0.301 = 3.01 > 3
    np.testing.assert_allclose(r.lyapunov, [math.log(0.5)] * 2, atol=1e-4)
    assert r.verdict == "vanishing" and not r.edge_of_chaos
    assert "memory horizon ≈ 9 steps" in r.sentence
    assert r.profile[0] == 0.0 and len(r.profile) == SETTINGS.steps + 1
    assert r.method == "exact"


def test_an_identity_recurrence_is_at_the_edge_of_chaos():
    result = analyse_module("rnn", _rebuilt(_linear_rnn(4, 1.0)), SETTINGS)
    (r,) = result.layers
    assert abs(r.lyapunov[0]) < 1e-3 and abs(r.decay_per_step) < 1e-3
    assert r.verdict == "stable" and r.edge_of_chaos
    assert r.horizon == SETTINGS.steps
    assert "edge of chaos" in r.sentence and f"≥ {SETTINGS.steps}" in r.sentence


def test_a_chaotic_tanh_rnn_explodes_at_its_top_lyapunov_exponent():
    torch.manual_seed(2)
    rnn = nn.RNN(2, 32, bias=False)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.randn(32, 32) * 3.0 / math.sqrt(32))
    result = analyse_module("rnn", _rebuilt(rnn), SETTINGS)
    (r,) = result.layers
    assert r.lyapunov[0] > 0.05
    assert r.verdict == "exploding"
    # the growth of the Jacobian products is the top exponent, in decades
    assert r.decay_per_step == pytest.approx(r.lyapunov[0] / math.log(10), rel=0.25)


def test_a_diverging_relu_rnn_is_reported_not_crashed():
    # relu with W_hh = 2 I doubles the state each step: inf within ~130 steps in float32
    result = analyse_module("rnn", _rebuilt(_linear_rnn(3, 2.0, 1.0, "relu"), "relu"),
                            SETTINGS)
    (r,) = result.layers
    assert r.verdict == "diverged" and "inf or NaN" in r.sentence
    assert all(math.isnan(v) for v in r.lyapunov)
    as_json = InspectResult("m.pt", "", False, SETTINGS, [result]).to_dict()
    assert as_json["modules"][0]["layers"][0]["lyapunov"] == [None, None]


def test_a_large_state_uses_the_estimate_and_agrees_with_theory():
    result = analyse_module("rnn", _rebuilt(_linear_rnn(80, 0.8)), SETTINGS)
    (r,) = result.layers
    assert r.method == "estimate"
    assert r.decay_per_step == pytest.approx(math.log10(0.8), abs=1e-3)
