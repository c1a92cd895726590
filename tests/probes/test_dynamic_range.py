"""Dynamic range: log10 gradient norms must stay exact far below (and above) what float32 and
float64 can hold, because the probe renormalises the adjoint and works in log space.

Reference: a float64 numpy adjoint written here, independent of rnn_diag. It takes the
trajectory h_t from the model's own output (cast to float64) and the model's weights (cast to
float64), and runs lambda_{t-1} = J_t^T lambda_t with J_t = diag(phi'_t) W_hh, carrying a unit
vector and a cumulative log norm (renormalised at every step), so it never under- or overflows.

Why the model's own trajectory: for the float32 model, re-running the recurrence in float64
gives states that differ by float32 rounding; the probe (by design) linearises around the states
the model actually visited, so the reference does the same. The remaining difference is float32
arithmetic inside the probe's adjoint, ~1e-7 relative per step, far below 1e-3 decades at
T=3000. Plain autograd on an unrolled cell shows what a non-log-space tool would report.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import unrolled_rnn_cell_grads
from torch import nn

import rnn_diag as rd

T_LONG = 3000
H = 16
B = 2
F = 4


def reference_log10_norms(w_hh: np.ndarray, deriv: np.ndarray, last_grad: np.ndarray):
    """log10 ||dL/dh_t|| for a loss on the last step only, by a renormalised float64 adjoint.

    Args:
        w_hh: [H, H] recurrent weights (float64).
        deriv: [T, B, H] phi'(a_t) along the trajectory (1 - h_t^2 for tanh, 1[h_t > 0] relu).
        last_grad: [B, H] dL/dh_{T-1}.

    Returns:
        [T, B] float64.
    """
    T = deriv.shape[0]
    out = np.empty((T, last_grad.shape[0]))
    norm = np.linalg.norm(last_grad, axis=1)
    v = last_grad / norm[:, None]
    log_norm = np.log(norm)
    out[T - 1] = log_norm
    for t in range(T - 1, 0, -1):
        w = (deriv[t] * v) @ w_hh  # row form of W_hh^T diag(phi'_t) v
        n = np.linalg.norm(w, axis=1)
        v = w / n[:, None]
        log_norm = log_norm + np.log(n)
        out[t - 1] = log_norm
    return out / math.log(10.0)


def _contractive_rnn(nonlinearity: str, dtype: torch.dtype, radius: float = 0.5, seed: int = 0):
    """nn.RNN(F, H) whose W_hh has spectral radius (largest |eigenvalue|) ``radius``."""
    g = torch.Generator().manual_seed(seed)
    rnn = nn.RNN(F, H, nonlinearity=nonlinearity)
    with torch.no_grad():
        w = torch.randn(H, H, generator=g, dtype=torch.float64)
        w *= radius / np.abs(np.linalg.eigvals(w.numpy())).max()
        rnn.weight_hh_l0.copy_(w)
        if nonlinearity == "relu":  # keep some units active so the gradient never dies
            rnn.bias_ih_l0.copy_(0.1 + 0.1 * torch.rand(H, generator=g))
            rnn.bias_hh_l0.zero_()
    return rnn.to(dtype), g


def _unrolled_autograd(rnn: nn.RNN, x: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """Plain autograd dL/dh_t, L = <h_{T-1}, coeff>, on an unrolled nn.RNNCell with the same
    weights and dtype as ``rnn``: [T, B, H]."""
    return unrolled_rnn_cell_grads(rnn, x, lambda hs: (hs[-1] * coeff).sum())


def _safe_log10_norm(x: np.ndarray) -> np.ndarray:
    """log10 of the L2 norm over the last axis, scaling by the largest entry first so that the
    squares cannot underflow (numpy's norm squares directly); -inf for a zero vector."""
    m = np.abs(x).max(axis=-1)
    safe = np.where(m > 0, m, 1.0)
    with np.errstate(divide="ignore"):
        return np.log10(m) + np.log10(np.linalg.norm(x / safe[..., None], axis=-1))


def _run_probe(rnn, x, coeff):
    with rd.attach(rnn) as probe:
        out, _ = rnn(x)
        (out[-1] * coeff).sum().backward()
    return probe, out.detach()


@pytest.mark.parametrize(
    "nonlinearity,dtype",
    [
        ("tanh", torch.float32),
        ("tanh", torch.float64),
        ("relu", torch.float64),
    ],
    ids=["tanh-float32", "tanh-float64", "relu-float64"],
)
def test_log10_norms_exact_far_below_float_range(nonlinearity, dtype):
    """T=3000, spectral radius 0.5, loss on the last output: the true gradient decays by
    ~0.3 decades per step, to about -900 decades. The probe's log10 norms must

    * agree with the float64 log-space reference to 1e-3 decades at EVERY distance,
    * be finite everywhere (the true gradient is never zero), and reach below -300 decades,
    * while plain autograd in the model's dtype returns exact zeros far back (it underflows),
      and the probe's dense ``hidden_grads`` (model dtype) is 0 there too, as documented.
    """
    rnn, g = _contractive_rnn(nonlinearity, dtype)
    x = (0.01 * torch.randn(T_LONG, B, F, generator=g, dtype=torch.float64)).to(dtype)
    if nonlinearity == "relu":
        x = x.abs()
    coeff = torch.randn(B, H, generator=g, dtype=torch.float64).to(dtype)

    probe, out = _run_probe(rnn, x, coeff)
    logs = probe.hidden_grad_log10_norms().numpy()
    assert logs.shape == (T_LONG, B)
    assert probe.hidden_grad_log10_norms().dtype == torch.float64

    h = out.double().numpy()
    deriv = 1.0 - h**2 if nonlinearity == "tanh" else (h > 0).astype(np.float64)
    assert (deriv.sum(-1) > 0).all(), "test premise: the gradient path never dies"
    ref = reference_log10_norms(
        rnn.weight_hh_l0.detach().double().numpy(), deriv, coeff.double().numpy()
    )
    assert np.isfinite(ref).all() and ref.min() < -300, ref.min()

    assert np.isfinite(logs).all(), (
        f"non-finite log10 norms at t={np.flatnonzero(~np.isfinite(logs).all(1))[:10]}"
    )
    err = np.abs(logs - ref)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() < 1e-3, (
        f"max error {err.max():.3g} decades at t={worst[0]} (distance {T_LONG - 1 - worst[0]}): "
        f"probe {logs[worst]:.6f}, reference {ref[worst]:.6f}"
    )
    assert logs.min() < -300

    # What a tool without log space reports: exact zeros far back.
    plain = _unrolled_autograd(rnn, x, coeff)
    plain_zero = (plain == 0).all(-1)  # [T, B]
    assert plain_zero[0].all(), "plain autograd should have underflowed to exactly 0 at t=0"
    assert plain_zero.sum() > 100
    # Where plain autograd is comfortably inside the dtype's range it agrees with the probe.
    plain_log = _safe_log10_norm(plain.double().numpy())
    inside = plain_log > math.log10(torch.finfo(dtype).tiny) + 10
    assert inside.sum() >= 20
    np.testing.assert_allclose(logs[inside], plain_log[inside], atol=1e-3)

    dense = probe.hidden_grads()
    assert dense.dtype == dtype and dense.shape == (T_LONG, B, H)
    assert (dense[0] == 0).all(), "values below the dtype's range are documented as 0"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_log10_norms_exact_far_above_float_range(dtype):
    """The other end of the range: relu RNN with W_hh = 50 I, W_ih = -49, h_0 = 1 and input 1
    sits exactly on the fixed point h_t = 1 (all integer arithmetic, exact in any dtype), every
    unit active, so dL/dh_k = 50^(T-1-k) dL/dh_{T-1} exactly: at T=300 that is ~507 decades,
    beyond float64. The probe's log10 norms must equal log10||c|| + (T-1-k) log10(50) and be
    finite, while plain autograd overflows to inf.
    """
    T, Hs, Bs = 300, 4, 2
    rnn = nn.RNN(1, Hs, nonlinearity="relu").to(dtype)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(50 * torch.eye(Hs))
        rnn.weight_ih_l0.fill_(-49.0)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    x = torch.ones(T, Bs, 1, dtype=dtype)
    h0 = torch.ones(1, Bs, Hs, dtype=dtype)
    coeff = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.25, 0.0, -1.0, 1.0]], dtype=dtype)

    with rd.attach(rnn) as probe:
        out, _ = rnn(x, h0)
        (out[-1] * coeff).sum().backward()
    assert (out == 1).all(), "test premise: the trajectory is the exact fixed point h_t = 1"

    logs = probe.hidden_grad_log10_norms().numpy()
    k = np.arange(T)[:, None]
    expected = np.log10(np.linalg.norm(coeff.double().numpy(), axis=1))[None, :] + (
        T - 1 - k
    ) * math.log10(50.0)
    assert expected.max() > 500
    assert np.isfinite(logs).all()
    tol = 1e-4 if dtype == torch.float32 else 1e-8
    np.testing.assert_allclose(logs, expected, atol=tol, rtol=0)

    # Plain autograd (unrolled cell, same dtype) overflows: inf / NaN far back.
    cell = nn.RNNCell(1, Hs, nonlinearity="relu").to(dtype)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(rnn, n + "_l0"))
    h, hs = h0[0], []
    for t in range(T):
        h = cell(x[t], h)
        h.retain_grad()
        hs.append(h)
    (hs[-1] * coeff).sum().backward()
    assert not torch.isfinite(hs[0].grad).all()


@pytest.mark.parametrize("scale", [1e-25, 1e25], ids=["loss-scale-1e-25", "loss-scale-1e+25"])
def test_float32_gradients_whose_squares_leave_the_range(scale):
    """float32 GRU, loss = scale * <outputs, coeff> with scale 1e-25 or 1e25: every gradient
    entry is representable in float32, but its square (1e-50 / 1e50) is not, so a plain
    ``vector_norm`` returns 0 or inf. The probe's log10 norms (total and immediate) must equal
    log10(scale) + those of plain float64 autograd on the same weights with scale 1 (the
    gradient is linear in the loss), and the frame must be finite; the dense tensors must
    equal scale times the float64 reference.
    """
    torch.manual_seed(6)
    T, Bs, Hs = 20, 3, 8
    gru = nn.GRU(F, Hs)
    x = torch.randn(T, Bs, F)
    coeff = torch.randn(T, Bs, Hs)
    with rd.attach(gru) as probe:
        out, _ = gru(x)
        ((out * coeff).sum() * scale).backward()

    # float64 reference at scale 1: unrolled nn.GRUCell with the same weights.
    cell = nn.GRUCell(F, Hs).double()
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(gru, n + "_l0"))
    h, hs = torch.zeros(Bs, Hs, dtype=torch.float64), []
    for t in range(T):
        h = cell(x[t].double(), h)
        h.retain_grad()
        hs.append(h)
    (torch.stack(hs) * coeff.double()).sum().backward()
    ref = torch.stack([q.grad for q in hs]).numpy()

    shift = math.log10(scale)
    logs = probe.hidden_grad_log10_norms().numpy()
    np.testing.assert_allclose(logs, shift + _safe_log10_norm(ref), atol=1e-4, rtol=0)
    imm = probe.immediate_grads()
    assert imm.dtype == torch.float32
    imm_logs = _safe_log10_norm(imm.double().numpy())
    np.testing.assert_allclose(
        imm_logs, shift + _safe_log10_norm(coeff.double().numpy()), atol=1e-5
    )
    frame = probe.frame()
    assert np.isfinite(frame["value"]).all()
    for which, expected in (("total", logs), ("immediate", imm_logs)):
        got = frame[frame.metric == f"{which}_mean"].sort_values("t")["value"].to_numpy()
        np.testing.assert_allclose(got, expected.mean(axis=1), atol=1e-4)
    dense = probe.hidden_grads().double().numpy()
    np.testing.assert_allclose(dense / scale, ref, rtol=1e-3, atol=1e-4)
