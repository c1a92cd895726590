"""linear_scan against the plain loop, against closed forms, and its gradients (float64)."""

import pytest
import torch

from rnn_diag.dynamics.linear_scan import linear_scan, linear_scan_sequential

F64, C128 = torch.float64, torch.complex128


def coefficients(B, T, S, *, complex_, seed=0, signed=True):
    """a, b, h0 with |a| in [0.5, 1] (real: either sign when ``signed``), b and h0 ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    r = 0.5 + 0.5 * torch.rand(B, T, *S, generator=g, dtype=F64)
    if complex_:
        phase = 2 * torch.pi * torch.rand(B, T, *S, generator=g, dtype=F64)
        a = torch.polar(r, phase)
        b = torch.randn(B, T, *S, generator=g, dtype=C128)
        h0 = torch.randn(B, *S, generator=g, dtype=C128)
    else:
        sign = torch.where(torch.rand(B, T, *S, generator=g, dtype=F64) < 0.3, -1.0, 1.0)
        a = r * sign if signed else r
        b = torch.randn(B, T, *S, generator=g, dtype=F64)
        h0 = torch.randn(B, *S, generator=g, dtype=F64)
    return a, b, h0


def closed_form(a, b, h0=None):
    """h_t = Σ_{s≤t} (Π_{s<r≤t} a_r) b_s + (Π_{r≤t} a_r) h0, the products as exp of differences
    of cumulative complex logarithms: no recursion, O(T²)."""
    logs = torch.cumsum(torch.log(a.to(C128)), 1)  # [B, T, *S]: ln Π_{r≤t} a_r
    T = a.shape[1]
    t = torch.arange(T)
    lower = (t[:, None] >= t[None, :]).reshape(1, T, T, *([1] * (a.dim() - 2)))
    diff = logs[:, :, None] - logs[:, None, :]  # [B, t, s, *S]: ln Π_{s<r≤t} a_r
    weights = torch.where(lower, torch.exp(torch.where(lower, diff, 0)), 0)
    h = (weights * b.to(C128)[:, None]).sum(2)
    if h0 is not None:
        h = h + torch.exp(logs) * h0.to(C128)[:, None]
    return h if a.is_complex() else h.real


def assert_close(actual, expected, rel):
    scale = expected.abs().max().clamp_min(1e-300)
    err = (actual - expected).abs().max() / scale
    assert err <= rel, f"relative error {err:.3e} > {rel:.0e}"


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", [1, 2, 7, 100, 1000])
def test_parallel_equals_sequential_and_closed_form(T, with_h0, complex_):
    S = (3,) if T == 1000 else (2, 3)
    a, b, h0 = coefficients(2, T, S, complex_=complex_, seed=T)
    h0 = h0 if with_h0 else None
    seq = linear_scan_sequential(a, b, h0)
    assert seq.shape == (2, T, *S) and seq.dtype == a.dtype
    ref = closed_form(a, b, h0)
    assert_close(seq, ref, 1e-11)
    for chunk in [None, 1, 3, 32, T, T + 5]:
        par = linear_scan(a, b, h0, chunk=chunk)
        assert par.shape == seq.shape and par.dtype == seq.dtype
        assert_close(par, seq, 1e-12)


@pytest.mark.parametrize("complex_", [False, True])
def test_constant_decay_matches_powers(complex_):
    """a constant over time (an expanded view, as LRU passes it): h_t = Σ_s a^{t-s} b_s +
    a^{t+1} h0, with the powers taken directly."""
    T, B, N = 300, 2, 4
    if complex_:
        lam = torch.polar(torch.tensor([0.3, 0.9, 0.99, 1.0], dtype=F64),
                          torch.tensor([0.1, 2.0, -1.0, 3.0], dtype=F64))
    else:
        lam = torch.tensor([-0.95, 0.3, 0.99, 1.0], dtype=F64)
    _, b, h0 = coefficients(B, T, (N,), complex_=complex_, seed=1)
    a = lam.expand(B, T, N)
    t = torch.arange(T, dtype=F64)
    k = (t[:, None] - t[None, :]).clamp_min(0)  # [t, s]
    powers = torch.where(t[:, None] >= t[None, :], 1.0, 0.0)[..., None] * lam ** k[..., None]
    ref = torch.einsum("tsn,bsn->btn", powers, b) + lam ** (t[:, None] + 1) * h0[:, None]
    for h in (linear_scan(a, b, h0), linear_scan(a, b, h0, chunk=7),
              linear_scan_sequential(a, b, h0)):
        assert_close(h, ref, 1e-12)


def _grads(fn, a, b, h0, w):
    leaves = [x.clone().requires_grad_() for x in (a, b, h0)]
    h = fn(*leaves)
    (h * w.conj()).real.sum().backward()
    return [x.grad for x in leaves]


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("T", [1, 2, 7, 100, 1000])
def test_gradients_of_both_forms_agree(T, complex_):
    a, b, h0 = coefficients(2, T, (3,), complex_=complex_, seed=10 + T)
    w = torch.randn(2, T, 3, dtype=a.dtype, generator=torch.Generator().manual_seed(3))
    ref = _grads(linear_scan_sequential, a, b, h0, w)
    for chunk in [None, 1, 5]:
        got = _grads(lambda *x, c=chunk: linear_scan(*x, chunk=c), a, b, h0, w)
        for g, r in zip(got, ref):
            assert torch.linalg.vector_norm(g - r) <= 1e-12 * torch.linalg.vector_norm(r)


@pytest.mark.parametrize("complex_", [False, True])
def test_gradcheck_against_finite_differences(complex_):
    a, b, h0 = coefficients(2, 6, (2,), complex_=complex_, seed=5)
    leaves = [x.clone().requires_grad_() for x in (a, b, h0)]
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, chunk=4), leaves)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, chunk=2), leaves[:2])


def test_complex_gradient_is_the_gradient_of_the_real_and_imaginary_parts():
    """PyTorch's convention for a real loss: z.grad = ∂L/∂Re z + i·∂L/∂Im z, the direction of
    steepest ascent in the real coordinates; the scan must follow it for a, b and h0."""
    a, b, h0 = coefficients(2, 40, (3,), complex_=True, seed=7)
    w = torch.randn(2, 40, 3, dtype=C128, generator=torch.Generator().manual_seed(8))
    got = _grads(lambda *x: linear_scan(*x, chunk=6), a, b, h0, w)
    parts = [p.clone().requires_grad_() for x in (a, b, h0) for p in (x.real, x.imag)]
    h = linear_scan(*(torch.complex(parts[i], parts[i + 1]) for i in (0, 2, 4)), chunk=6)
    (h * w.conj()).real.sum().backward()
    for i, g in enumerate(got):
        expected = torch.complex(parts[2 * i].grad, parts[2 * i + 1].grad)
        assert_close(g, expected, 1e-13)
    # and to first order a step along the gradient changes the loss by ‖grad‖²·ε
    eps = 1e-7
    loss = lambda a, b, h0: (linear_scan(a, b, h0, chunk=6) * w.conj()).real.sum()
    moved = loss(a + eps * got[0], b + eps * got[1], h0 + eps * got[2]) - loss(a, b, h0)
    sq = sum(torch.linalg.vector_norm(g) ** 2 for g in got)
    assert moved.item() == pytest.approx(eps * sq.item(), rel=1e-5)


def test_gradient_through_an_expanded_decay_sums_over_batch_and_time():
    N = 3
    lam = torch.tensor([0.5, -0.9, 0.99], dtype=F64, requires_grad=True)
    _, b, h0 = coefficients(2, 50, (N,), complex_=False, seed=9)
    linear_scan(lam.expand(2, 50, N), b, h0, chunk=8).sum().backward()
    full = lam.detach().expand(2, 50, N).clone().requires_grad_()
    linear_scan_sequential(full, b, h0).sum().backward()
    assert_close(lam.grad, full.grad.sum((0, 1)), 1e-12)


def test_float32_error_is_that_of_the_plain_loop():
    """float32 at T = 4096 with decays near 1: the parallel scan's error against float64 is
    of the order of the sequential loop's."""
    a, b, h0 = coefficients(4, 4096, (16,), complex_=True, seed=11)
    a = torch.polar(1 - 1e-3 * a.abs(), a.angle())  # |a| in [0.999, 0.9995]
    exact = linear_scan_sequential(a, b, h0)
    f32 = [x.to(torch.complex64) for x in (a, b, h0)]
    err = lambda h: ((h.to(C128) - exact).abs().max() / exact.abs().max()).item()
    e_seq, e_par = err(linear_scan_sequential(*f32)), err(linear_scan(*f32))
    assert e_par < max(4 * e_seq, 1e-5), (e_par, e_seq)


def test_shape_errors():
    a = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match="a and b"):
        linear_scan(a, torch.rand(2, 5, 4))
    with pytest.raises(ValueError, match="h0"):
        linear_scan(a, a, torch.rand(2, 4))


def test_diagonal_scan_modes_agree():
    from rnn_diag.dynamics.linear_scan import diagonal_scan

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 37, 5, dtype=torch.float64, generator=g)
    b = torch.randn(2, 37, 5, dtype=torch.float64, generator=g)
    ref = linear_scan_sequential(a, b)
    for mode in ("parallel", "sequential"):
        assert torch.allclose(diagonal_scan(a, b, mode=mode), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="mode must be"):
        diagonal_scan(a, b, mode="fast")
