"""The probe on diagonal scans (LRU, MinGRU, SelectiveSSM, ScanStack, registered layers) against
plain autograd on the sequential float64 form, and against closed forms (docs/design.md §23).

The reference replaces a layer's scan by :class:`Unrolled`: a Python loop in which every state
h_t is its own autograd node (``retain_grad``), so ``h_t.grad`` is autograd's total ∂L/∂h_t,
and whose output holds clones of the states, so each clone's ``.grad`` is the immediate
gradient. It shares nothing with rnn_diag's recursion.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import rnn_diag as rd
from rnn_diag.modules.scans import ScanTrace, register_scan, unregister_scan
from rnn_diag.scans import LRU, MinGRU, ScanStack, SelectiveSSM

DT = torch.float64


class Unrolled(nn.Module):
    """h_t = a_t ⊙ h_{t-1} + b_t, one node per step; returns clones of the states."""

    def forward(self, a, b, h0=None):
        h = torch.zeros_like(b[:, 0]) if h0 is None else h0
        self.states, self.exits = [], []
        for t in range(a.shape[1]):
            h = a[:, t] * h + b[:, t]
            h.retain_grad()
            self.states.append(h)
            exit_ = h.clone()
            exit_.retain_grad()
            self.exits.append(exit_)
        return torch.stack(self.exits, 1)


def reference(model, layers, x, loss_fn):
    """Autograd's total and immediate gradients per scan layer, time-major ``[T, B, *S]``,
    with each layer's scan replaced by :class:`Unrolled`."""
    originals = [layer.scan for layer in layers]
    refs = [Unrolled() for _ in layers]
    for layer, ref in zip(layers, refs):
        layer.scan = ref
    try:
        model.zero_grad()
        loss_fn(model(x)).backward()
    finally:
        for layer, orig in zip(layers, originals):
            layer.scan = orig
    return [(torch.stack([h.grad for h in r.states]), torch.stack([e.grad for e in r.exits]))
            for r in refs]


def last_step(y):
    return (y[:, -1] ** 2).sum()


def every_step(y):
    return (torch.sin(y) * torch.linspace(0.5, 1.5, y.shape[1], dtype=y.dtype)[:, None]).sum()


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _layers():
    torch.manual_seed(0)
    return {
        "lru": (LRU(3, 6, r_min=0.5, r_max=0.99).to(DT), 3),
        "mingru": (MinGRU(3, 5, r_max=0.95).to(DT), 3),
        "ssm": (SelectiveSSM(4, 3, expand=2).to(DT), 4),
    }


@pytest.mark.parametrize("kind", ["lru", "mingru", "ssm"])
@pytest.mark.parametrize("loss_fn", [last_step, every_step], ids=["last", "every"])
def test_layer_gradients_equal_autograd_on_the_unrolled_model(kind, loss_fn):
    layer, inputs = _layers()[kind]
    x = torch.randn(3, 40, inputs, dtype=DT)
    with rd.attach(layer) as probe:
        loss_fn(layer(x)).backward()
    ((total, immediate),) = reference(layer, [layer], x, loss_fn)
    assert probe.hidden_grads().shape == total.shape
    assert probe.hidden_grads().dtype == total.dtype  # complex128 for the LRU
    assert relative(probe.hidden_grads(), total) < 1e-9
    assert relative(probe.immediate_grads(), immediate) < 1e-9
    ref_norms = torch.linalg.vector_norm(total.flatten(2), dim=-1).log10()
    assert torch.allclose(probe.hidden_grad_log10_norms(), ref_norms, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cell", ["lru", "mingru", "ssm"])
def test_stack_is_probed_per_layer(cell):
    torch.manual_seed(1)
    kwargs = {"d_state": 3, "expand": 1} if cell == "ssm" else {}
    stack = ScanStack(cell, 3, 6, num_layers=3, **kwargs).to(DT)
    x = torch.randn(2, 25, 3, dtype=DT)
    with rd.attach(stack) as probe:
        every_step(stack(x)).backward()
    refs = reference(stack, stack.scan_layers, x, every_step)
    for layer, (total, immediate) in enumerate(refs):
        assert relative(probe.hidden_grads(layer=layer), total) < 1e-9
        assert relative(probe.immediate_grads(layer=layer), immediate) < 1e-9
    frame = probe.frame()
    assert sorted(frame.layer.unique()) == [0, 1, 2]
    with pytest.raises(ValueError, match="no layer=3"):
        probe.hidden_grads(layer=3)


def test_attach_finds_scan_layers_and_stacks_inside_models():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = ScanStack("mingru", 2, 4, num_layers=2)
            self.mixer = LRU(4, 3)
            self.gru = nn.GRU(4, 4)

    probe = rd.attach(Model())
    assert probe.modules == ["encoder", "mixer", "gru"]  # not the stack's inner layers
    probe.detach()


def test_parameter_gradients_bitwise_identical_with_and_without_probe():
    torch.manual_seed(2)
    for cell in ("lru", "mingru", "ssm"):
        stack = ScanStack(cell, 3, 8, num_layers=2)
        x = torch.randn(4, 50, 3)
        every_step(stack(x)).backward()
        plain = [p.grad.clone() for p in stack.parameters()]
        stack.zero_grad()
        with rd.attach(stack, jacobians="estimate") as probe:
            every_step(stack(x)).backward()
        assert probe.hidden_grads(layer=1).shape[0] == 50
        for p, g in zip(stack.parameters(), plain):
            assert torch.equal(p.grad, g), cell


# ------------------------------------------------------------------ closed forms


def fixed_lru(N, modulus, T_phases=None, input_size=2):
    """An LRU whose λ all have modulus ``modulus`` (phases spread), in float64."""
    lru = LRU(input_size, N).to(DT)
    with torch.no_grad():
        lru.nu_log.copy_(torch.full((N,), math.log(-math.log(modulus)), dtype=DT))
        lru.theta_log.copy_(torch.log(torch.linspace(0.1, 3.0, N, dtype=DT)))
    return lru


def test_lru_jacobian_norms_and_exponents_follow_lambda():
    torch.manual_seed(3)
    lru = LRU(2, 5, r_min=0.3, r_max=0.95).to(DT)
    lam = lru.eigenvalues()
    T = 60
    x = torch.randn(2, T, 2, dtype=DT)
    with rd.attach(lru, jacobians="exact") as probe:
        last_step(lru(x)).backward()
    jac = probe.jacobian_log10_norms()
    expected = (T - 1 - torch.arange(T, dtype=DT)) * math.log10(float(lam.abs().max()))
    assert torch.allclose(jac[:, 0], expected, atol=1e-12)
    assert torch.allclose(probe.jacobian_log10_norms(target=30)[:31, 1], expected[-31:],
                          atol=1e-12)
    exps = rd.lyapunov_spectrum(lru, inputs=torch.randn(300, 2, dtype=DT))
    assert torch.allclose(exps, lam.abs().log().sort(descending=True).values, atol=1e-13)


def test_mingru_exponents_are_the_time_mean_of_log_one_minus_z():
    torch.manual_seed(4)
    cell = MinGRU(3, 6).to(DT)
    x = torch.randn(500, 3, dtype=DT)
    z = torch.sigmoid(x @ cell.linear_z.weight.T + cell.linear_z.bias)  # [T, H]
    expected = torch.log1p(-z[50:]).mean(0).sort(descending=True).values
    exps = rd.lyapunov_spectrum(cell, inputs=x, warmup=50)
    assert torch.allclose(exps, expected, atol=1e-12)


def test_selective_ssm_exponents_are_the_time_mean_of_delta_times_a():
    torch.manual_seed(5)
    ssm = SelectiveSSM(4, 3, expand=1).to(DT)
    x = torch.randn(1, 200, 4, dtype=DT)
    deltas = []
    handle = ssm.dt_proj.register_forward_hook(
        lambda m, i, o: deltas.append(nn.functional.softplus(o)))
    with torch.no_grad():
        ssm(x)
    handle.remove()
    A = -torch.exp(ssm.A_log)  # [D, N]
    expected = (deltas[0][0, :, :, None] * A).mean(0).flatten().sort(descending=True).values
    exps = rd.lyapunov_spectrum(ssm, inputs=x[0])
    assert torch.allclose(exps, expected, atol=1e-12)


def test_dynamic_range_lru_ten_thousand_steps():
    """|λ| = 0.9 over T = 10,000: the gradient spans ~457 decades, far below float64's range;
    the probe's log10 norms match the closed form (T-1-t)·log10 0.9 + log10‖g‖ within 1e-3."""
    torch.manual_seed(6)
    T = 10_000
    lru = fixed_lru(4, 0.9)
    x = torch.randn(1, T, 2, dtype=DT)
    with rd.attach(lru) as probe:
        y = lru(x)
        (y[:, -1] * torch.tensor([1.0, -2.0], dtype=DT)).sum().backward()
    g = probe.immediate_grads()[-1]
    norms = probe.hidden_grad_log10_norms()[:, 0]
    d = T - 1 - torch.arange(T, dtype=DT)
    expected = d * math.log10(0.9) + float(torch.linalg.vector_norm(g).log10())
    assert float(expected[0] - expected[-1]) < -450
    assert torch.isfinite(norms).all()
    assert float((norms - expected).abs().max()) < 1e-3


# ------------------------------------------------------------------ registered layers


class LogSpaceMinGRU(nn.Module):
    """minGRU written the common way (Feng et al. 2024, log-space, ``logcumsumexp``), not on
    rnn_diag's base class."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear_z = nn.Linear(input_size, hidden_size)
        self.linear_h = nn.Linear(input_size, hidden_size)

    @staticmethod
    def log_g(x):
        return torch.where(x >= 0, (nn.functional.relu(x) + 0.5).log(),
                           -nn.functional.softplus(-x))

    def forward(self, x):
        k = self.linear_z(x)
        log_coeffs = -nn.functional.softplus(k)  # log(1 - z)
        log_values = -nn.functional.softplus(-k) + self.log_g(self.linear_h(x))  # log(z h~)
        a_star = log_coeffs.cumsum(1)
        return torch.exp(a_star + torch.logcumsumexp(log_values - a_star, 1))


def log_space_mingru_adapter(module, args, kwargs):
    x = args[0]
    z = torch.sigmoid(module.linear_z(x))
    h_tilde = torch.exp(LogSpaceMinGRU.log_g(module.linear_h(x)))
    return ScanTrace(decay=1 - z, drive=z * h_tilde, h0=None, readout=lambda h: h)


@pytest.fixture
def registered():
    register_scan(LogSpaceMinGRU, log_space_mingru_adapter)
    yield
    unregister_scan(LogSpaceMinGRU)


@pytest.mark.parametrize("loss_fn", [last_step, every_step], ids=["last", "every"])
def test_registered_log_space_mingru_gives_the_builtin_results(registered, loss_fn):
    torch.manual_seed(7)
    builtin = MinGRU(3, 5).to(DT)
    user = LogSpaceMinGRU(3, 5).to(DT)
    user.load_state_dict(builtin.state_dict())
    x = torch.randn(2, 60, 3, dtype=DT)
    with rd.attach(builtin, jacobians="exact") as p1:
        loss_fn(builtin(x)).backward()
    with rd.attach(nn.Sequential(user), jacobians="exact") as p2:  # found by the registry
        loss_fn(user(x)).backward()
    assert p2.modules == ["0"]
    assert relative(p2.hidden_grads(), p1.hidden_grads()) < 1e-9
    assert relative(p2.immediate_grads(), p1.immediate_grads()) < 1e-9
    assert torch.allclose(p2.jacobian_log10_norms(), p1.jacobian_log10_norms(), atol=1e-9)
    assert torch.allclose(rd.lyapunov_spectrum(user, inputs=x[0]),
                          rd.lyapunov_spectrum(builtin, inputs=x[0]), atol=1e-12)
    ((total, _),) = reference(builtin, [builtin], x, loss_fn)
    assert relative(p2.hidden_grads(), total) < 1e-9


def test_a_wrong_adapter_is_refused_with_a_warning_not_recorded(registered):
    def wrong(module, args, kwargs):  # forgets z in the drive
        trace = log_space_mingru_adapter(module, args, kwargs)
        return ScanTrace(trace.decay, trace.drive / torch.sigmoid(module.linear_z(args[0])),
                         None, trace.readout)

    register_scan(LogSpaceMinGRU, wrong)
    user = LogSpaceMinGRU(3, 4)
    with rd.attach(user) as probe, pytest.warns(rd.ProbeWarning, match="does not describe"):
        user(torch.randn(2, 20, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="no backward pass has been recorded"):
        probe.hidden_grads()


def test_a_registered_layer_with_dropout_is_replayed_exactly(registered):
    class Dropped(LogSpaceMinGRU):
        def forward(self, x):
            return super().forward(nn.functional.dropout(x, 0.3, self.training))

    def adapter(module, args, kwargs):
        x = nn.functional.dropout(args[0], 0.3, module.training)
        return log_space_mingru_adapter(module, (x,), kwargs)

    register_scan(Dropped, adapter)
    torch.manual_seed(8)
    user = Dropped(3, 4).to(DT)
    x = torch.randn(2, 30, 3, dtype=DT)
    state = torch.get_rng_state()
    with rd.attach(user) as probe, warnings.catch_warnings():
        warnings.simplefilter("error", rd.ProbeWarning)
        every_step(user(x)).backward()
    after_probe = torch.rand(3)
    torch.set_rng_state(state)
    every_step(user(x)).backward()
    assert torch.equal(torch.rand(3), after_probe)  # the user's random stream is untouched
    assert probe.hidden_grads().shape == (30, 2, 4)
    unregister_scan(Dropped)


def test_spectra_rows_of_scan_layers():
    stack = ScanStack("lru", 2, 4, num_layers=2, r_min=0.4, r_max=0.9)
    df = rd.recurrent_spectra(stack)
    assert set(df.gate) == {"lambda"} and sorted(df.layer.unique()) == [0, 1]
    for layer, part in df.groupby("layer"):
        lam = stack.scan_layers[layer].eigenvalues()
        assert torch.allclose(torch.tensor(part.modulus.to_numpy()),
                              lam.abs().double().sort(descending=True).values)
        assert (part.modulus.to_numpy() == part.singular_value.to_numpy()).all()
    ssm = rd.recurrent_spectra(SelectiveSSM(4, 3, expand=1, r_max=0.97))
    assert set(ssm.gate) == {"a(x=0)"} and len(ssm) == 12
    assert ssm.modulus.max() == pytest.approx(0.97, abs=1e-6)


def test_several_calls_are_laid_end_to_end_with_a_warning():
    lru = LRU(2, 3).to(DT)
    x = torch.randn(2, 10, 2, dtype=DT)
    with rd.attach(lru) as probe, pytest.warns(rd.ProbeWarning, match="several times"):
        (lru(x).sum() + lru(x[:, :4]).sum()).backward()
    assert probe.hidden_grads().shape == (14, 2, 3)


def test_spectra_of_a_registered_scan_without_eigenvalues_say_why_it_is_missing(registered):
    model = nn.ModuleDict({"a": LogSpaceMinGRU(2, 3), "b": LRU(2, 3)})
    with pytest.warns(RuntimeWarning, match="'a'.*without eigenvalues="):
        df = rd.recurrent_spectra(model)
    assert set(df.module) == {"b"}
