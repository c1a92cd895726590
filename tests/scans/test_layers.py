"""The scan layers against per-step references written from the papers' equations, their
parallel and sequential forms against each other, their initialisations and the scan point."""

import math

import pytest
import torch
from torch.nn import functional as F

from rnn_diag.scans import LRU, SCAN_CELLS, MinGRU, ScanLayer, ScanStack, SelectiveSSM

F64 = torch.float64


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(old)


# --- references, one step at a time, from the papers' equations (no linear_scan) -----------

def lru_reference(m: LRU, x, h0=None):
    """Orvieto et al. 2023, Appendix A ``forward_LRU``: h_t = λ h_{t-1} + (γ·B) x_t,
    y_t = Re(C h_t) + D x_t."""
    lam = torch.exp(-torch.exp(m.nu_log) + 1j * torch.exp(m.theta_log))
    B_norm = (m.B_re + 1j * m.B_im) * torch.exp(m.gamma_log)[:, None]
    C = m.C_re + 1j * m.C_im
    h = torch.zeros(x.shape[0], m.state_size, dtype=lam.dtype) if h0 is None else h0
    ys = []
    for t in range(x.shape[1]):
        u = x[:, t].to(lam.dtype)
        h = lam * h + u @ B_norm.T
        ys.append((h @ C.T).real + m.D * x[:, t])
    return torch.stack(ys, 1)


def g(v):
    return torch.where(v >= 0, v + 0.5, 1 / (1 + torch.exp(-v)))


def mingru_reference(m: MinGRU, x, h0=None):
    """Feng et al. 2024: z = σ(W_z x + b_z), h̃ = g(W_h x + b_h), h = (1 − z) h + z h̃."""
    h = torch.zeros(x.shape[0], m.hidden_size, dtype=x.dtype) if h0 is None else h0
    out = []
    for t in range(x.shape[1]):
        z = 1 / (1 + torch.exp(-(x[:, t] @ m.linear_z.weight.T + m.linear_z.bias)))
        cand = g(x[:, t] @ m.linear_h.weight.T + m.linear_h.bias)
        h = (1 - z) * h + z * cand
        out.append(h)
    return torch.stack(out, 1)


def ssm_reference(m: SelectiveSSM, u, h0=None):
    """Mamba (mamba_simple.py + selective_scan_ref), one step at a time, the causal depthwise
    convolution written as a sum over its taps."""
    Bsz, T, _ = u.shape
    Di, N, K = m.d_inner, m.d_state, m.d_conv
    xz = u @ m.in_proj.weight.T
    x_in, z = xz[..., :Di], xz[..., Di:]
    w = m.conv1d.weight[:, 0, :]  # [Di, K]
    A = -torch.exp(m.A_log)
    h = torch.zeros(Bsz, Di, N, dtype=u.dtype) if h0 is None else h0
    outs = []
    for t in range(T):
        conv = m.conv1d.bias.expand(Bsz, Di)
        for k in range(K):  # tap k sees input t - (K - 1) + k
            s = t - (K - 1) + k
            if s >= 0:
                conv = conv + w[:, k] * x_in[:, s]
        x = conv * torch.sigmoid(conv)
        proj = x @ m.x_proj.weight.T
        dt_raw = proj[:, :m.dt_rank]
        Bt, Ct = proj[:, m.dt_rank:m.dt_rank + N], proj[:, m.dt_rank + N:]
        delta = torch.log1p(torch.exp(dt_raw @ m.dt_proj.weight.T + m.dt_proj.bias))
        dA = torch.exp(delta[:, :, None] * A)  # [B, Di, N]
        h = dA * h + delta[:, :, None] * Bt[:, None, :] * x[:, :, None]
        y = (h * Ct[:, None, :]).sum(-1) + m.D * x
        y = y * (z[:, t] * torch.sigmoid(z[:, t]))
        outs.append(y @ m.out_proj.weight.T)
    return torch.stack(outs, 1)


def make(kind, **kw):
    torch.manual_seed(0)
    if kind == "lru":
        return LRU(4, 6, r_min=0.4, r_max=0.99, **kw)
    if kind == "mingru":
        return MinGRU(4, 5, r_max=0.95, **kw)
    return SelectiveSSM(6, d_state=3, expand=2, d_conv=3, **kw)


REFERENCES = {"lru": lru_reference, "mingru": mingru_reference, "ssm": ssm_reference}
IN_SIZE = {"lru": 4, "mingru": 4, "ssm": 6}


def rel_err(a, b):
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def random_h0(m, B):
    dt = F64
    if isinstance(m, LRU):
        dt = torch.complex128
    return torch.randn(B, *m.state_shape, dtype=dt, generator=torch.Generator().manual_seed(2))


def loss_and_grads(m, x, h0):
    m.zero_grad()
    y = m(x, h0)
    (y ** 2).mean().backward()
    return y.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("kind", ["lru", "mingru", "ssm"])
def test_layer_equals_reference_and_sequential(kind, with_h0, float64_default):
    m = make(kind)
    x = torch.randn(3, 50, IN_SIZE[kind], generator=torch.Generator().manual_seed(1))
    h0 = random_h0(m, 3) if with_h0 else None
    y_par, g_par = loss_and_grads(m, x, h0)
    m.set_sequential(True)
    y_seq, g_seq = loss_and_grads(m, x, h0)
    assert rel_err(y_par, y_seq) <= 1e-10
    for name in g_par:
        assert rel_err(g_par[name], g_seq[name]) <= 1e-10, name
    m.zero_grad()
    y_ref = REFERENCES[kind](m, x, h0)
    (y_ref ** 2).mean().backward()
    assert rel_err(y_par, y_ref.detach()) <= 1e-12
    for name, p in m.named_parameters():
        assert rel_err(g_par[name], p.grad) <= 1e-10, name


@pytest.mark.parametrize("kind", ["lru", "mingru", "ssm"])
def test_scan_called_once_with_full_shapes(kind, float64_default):
    m = make(kind)
    calls = []
    m.scan.register_forward_hook(lambda mod, args, out: calls.append((args, out)))
    x = torch.randn(2, 9, IN_SIZE[kind])
    y = m(x)
    assert len(calls) == 1
    (a, b, *_), h = calls[0]
    assert a.shape == b.shape == h.shape == (2, 9, *m.state_shape)
    assert a.dtype == b.dtype == h.dtype
    assert y.dtype == F64 and y.shape[:2] == (2, 9)
    m.set_sequential(True)
    m(x)
    assert len(calls) == 2
    assert isinstance(m, ScanLayer) and m.input_dependent == (kind != "lru")


def test_lru_dtypes_follow_parameters():
    torch.manual_seed(0)
    m = LRU(3, 5, 2)
    assert m.eigenvalues().dtype == torch.complex64 and m(torch.randn(1, 4, 3)).shape == (1, 4, 2)
    m = m.double()
    states = []
    m.scan.register_forward_hook(lambda mod, args, out: states.append(out))
    y = m(torch.randn(1, 4, 3, dtype=F64))
    assert states[0].dtype == torch.complex128 and y.dtype == F64
    assert m.eigenvalues().dtype == torch.complex128
    assert m.D is None and m.skip.weight.shape == (2, 3)  # O ≠ I: a linear skip
    assert LRU(3, 5).D.shape == (3,)


def test_lru_ring_init(float64_default):
    torch.manual_seed(0)
    N, I = 4000, 64
    m = LRU(I, N, r_min=0.4, r_max=0.9, max_phase=math.pi / 2)
    lam = m.eigenvalues()
    r = lam.abs()
    assert r.min() >= 0.4 - 1e-12 and r.max() <= 0.9 + 1e-12
    # |λ|² uniform on [r_min², r_max²] (uniform on the ring's area): mean and quartiles
    r2 = (r ** 2).sort().values
    lo, hi = 0.16, 0.81
    for q in (0.25, 0.5, 0.75):
        assert r2[int(q * N)].item() == pytest.approx(lo + q * (hi - lo), abs=0.02)
    phase = torch.exp(m.theta_log)
    assert phase.min() >= 0 and phase.max() <= math.pi / 2
    assert torch.allclose(torch.angle(lam) % (2 * math.pi), phase, atol=1e-12)
    assert torch.allclose(torch.exp(m.gamma_log), torch.sqrt(1 - r ** 2), rtol=1e-12)
    # Appendix A: each part of B ~ N(0, 1/(2I)), of C ~ N(0, 1/N)
    assert m.B_re.var().item() == pytest.approx(1 / (2 * I), rel=0.03)
    assert m.B_im.var().item() == pytest.approx(1 / (2 * I), rel=0.03)
    assert m.C_im.var().item() == pytest.approx(1 / N, rel=0.03)


def test_lru_unstable_init(float64_default):
    torch.manual_seed(0)
    m = LRU(2, 200, r_min=0.9, r_max=1.1)
    assert m.nu_log is None and m.nu is not None
    r = m.eigenvalues().abs()
    assert r.min() >= 0.9 - 1e-12 and r.max() <= 1.1 + 1e-12 and (r > 1).any()
    gamma = torch.exp(m.gamma_log)
    assert torch.equal(gamma[r >= 1], torch.ones_like(gamma[r >= 1]))
    assert torch.allclose(gamma[r < 1], torch.sqrt(1 - r[r < 1] ** 2), rtol=1e-12)
    x = torch.randn(1, 30, 2)
    calls = []
    m.scan.register_forward_hook(lambda mod, args, out: calls.append(args[0]))
    m(x)
    assert torch.allclose(calls[0][0, 0], m.eigenvalues())


def test_lru_gamma_accurate_near_the_unit_circle(float64_default):
    torch.manual_seed(0)
    m = LRU(2, 50, r_min=0.999999, r_max=1.0)
    r = m.eigenvalues().abs()
    assert torch.isfinite(m.gamma_log).all()
    assert torch.allclose(torch.exp(m.gamma_log), torch.sqrt(1 - r ** 2), rtol=1e-6)


def test_mingru_r_max_mapping_and_eigenvalues(float64_default):
    m = MinGRU(3, 6, r_min=0.6, r_max=0.99)
    ev = m.eigenvalues()
    assert torch.allclose(ev, torch.linspace(0.99, 0.6, 6), atol=1e-12)
    assert torch.allclose(ev, 1 - torch.sigmoid(m.linear_z.bias), atol=1e-12)
    assert ev.max().item() == pytest.approx(0.99, abs=1e-12)
    # the decays the forward passes to the scan at zero input are these
    calls = []
    m.scan.register_forward_hook(lambda mod, args, out: calls.append(args[0]))
    m(torch.zeros(2, 5, 3))
    assert torch.allclose(calls[0], ev.expand(2, 5, 6), atol=1e-15)
    half = MinGRU(3, 5, r_max=0.9).eigenvalues()
    assert half.max().item() == pytest.approx(0.9) and half.min().item() == pytest.approx(0.45)
    assert MinGRU(3, 1, r_max=0.9).eigenvalues().item() == pytest.approx(0.9)
    with pytest.raises(ValueError):
        MinGRU(3, 4, r_max=1.0)
    with pytest.raises(ValueError):
        MinGRU(3, 4, r_min=0.5)


def test_ssm_init_eigenvalues_and_r_max(float64_default):
    torch.manual_seed(0)
    m = SelectiveSSM(8, d_state=5, expand=2)
    assert m.state_shape == (16, 5) and m.dt_rank == 1
    A = -torch.exp(m.A_log)
    assert torch.allclose(A, -torch.arange(1.0, 6.0).expand(16, 5))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 - 1e-12 and dt.max() <= 0.1 + 1e-12
    assert torch.allclose(m.eigenvalues(), torch.exp(dt[:, None] * A))
    # with zero conv bias and zero input, Δ_raw = 0: the scan's decays are eigenvalues()
    with torch.no_grad():
        m.conv1d.bias.zero_()
    calls = []
    m.scan.register_forward_hook(lambda mod, args, out: calls.append(args[0]))
    m(torch.zeros(2, 4, 8))
    assert torch.allclose(calls[0], m.eigenvalues().expand(2, 4, 16, 5), atol=1e-15)

    r = SelectiveSSM(8, d_state=5, r_max=0.99)
    ev = r.eigenvalues()
    assert ev.max().item() == pytest.approx(0.99, abs=1e-12)
    assert ev[0, 0].item() == pytest.approx(0.99, abs=1e-12)  # smallest Δ, n = 0
    dt = F.softplus(r.dt_proj.bias)
    dt_min = -math.log(0.99)
    dt_max = min(100 * dt_min, 1.0)  # Mamba's two decades, capped at Δ = 1
    assert torch.allclose(dt, torch.logspace(math.log10(dt_min), math.log10(dt_max), 16))
    assert F.softplus(SelectiveSSM(4, r_max=0.999).dt_proj.bias).max().item() == pytest.approx(
        100 * -math.log(0.999))  # about Mamba's default range 0.001 ... 0.1
    assert F.softplus(SelectiveSSM(4, r_max=0.2).dt_proj.bias).max().item() == pytest.approx(
        -math.log(0.2))  # dt_min > 1: dt_max = dt_min
    with pytest.raises(ValueError, match="not both"):
        SelectiveSSM(8, r_max=0.9, dt_min=0.01)
    with pytest.raises(ValueError):
        SelectiveSSM(8, r_max=1.0)


@pytest.mark.parametrize("cell", sorted(SCAN_CELLS))
def test_scan_stack(cell, float64_default):
    torch.manual_seed(0)
    kw = {"lru": {"state_size": 5}, "mingru": {}, "ssm": {"d_state": 2, "expand": 1}}[cell]
    net = ScanStack(cell, 3, 8, num_layers=2, **kw)
    assert net.cell == cell and net.num_layers == 2 and len(net.scan_layers) == 2
    assert all(isinstance(layer, SCAN_CELLS[cell]) for layer in net.scan_layers)
    if cell == "lru":
        assert net.scan_layers[0].state_shape == (5,)
    counts = [0, 0]
    for i, layer in enumerate(net.scan_layers):
        layer.scan.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    x = torch.randn(2, 30, 3)
    y = net(x)
    assert y.shape == (2, 30, 8) and counts == [1, 1]
    assert net.set_sequential(True) is net
    assert all(layer.scan.sequential for layer in net.scan_layers)
    assert rel_err(net(x), y) <= 1e-12
    net.set_sequential(False)
    assert not any(layer.scan.sequential for layer in net.scan_layers)
    assert net.parameter_count() == sum(p.numel() for p in net.parameters())


def test_scan_stack_errors():
    with pytest.raises(ValueError, match="cell"):
        ScanStack("lstm", 3, 8)
    with pytest.raises(ValueError, match="num_layers"):
        ScanStack("lru", 3, 8, num_layers=0)
