"""nn.LSTM(proj_size > 0): the projected LSTM linearisation, its adjoint and the module-facing
dynamics, each against an independent float64 truth.

The truth is an explicitly written projected LSTM step (h_t = W_hr (o_t ⊙ tanh c_t), from the
PyTorch documentation of nn.LSTM), itself checked against nn.LSTM's own forward, differentiated
by torch.autograd; spectra are checked against numpy.
"""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rnn_diag.dynamics.adjoint import adjoint_scan
from rnn_diag.dynamics.cells import CellWeights, LSTMSteps, ProjectedLSTMSteps, linearise
from rnn_diag.dynamics.jacobian_products import jacobian_product_log10_norms
from rnn_diag.dynamics.lognorm import log_norm
from rnn_diag.modules.dynamics import (
    lyapunov_spectrum,
    module_linearisation,
    recurrent_spectra,
)

F64 = torch.float64
TOL = dict(rtol=1e-11, atol=1e-12)
GATES = ["i", "f", "g", "o"]


def _weights(lstm: nn.LSTM, layer: int = 0, direction: int = 0):
    """float64 (w_ih, w_hh, b_ih, b_hh, w_hr) of one layer/direction, read from the module."""
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    return tuple(
        getattr(lstm, n + sfx).detach().double() if hasattr(lstm, n + sfx) else None
        for n in names
    )


def ref_step(p, x, h, c):
    """One projected LSTM step written out: returns (h_t [B, P], c_t [B, H])."""
    w_ih, w_hh, b_ih, b_hh, w_hr = p
    gates = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        gates = gates + b_ih + b_hh
    i, f, g, o = gates.chunk(4, -1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return (o * torch.tanh(c)) @ w_hr.T, c


def _case(T=7, B=3, I=2, H=5, P=3, bias=True, seed=0, gain=1.0):
    """A random float64 projected LSTM, inputs, initial state and its trajectory."""
    torch.manual_seed(seed)
    lstm = nn.LSTM(I, H, proj_size=P, bias=bias).double()
    with torch.no_grad():
        for w in lstm.parameters():
            w.mul_(gain)
    p = _weights(lstm)
    x = torch.randn(T, B, I, dtype=F64)
    h0 = 0.5 * torch.randn(B, P, dtype=F64)
    c0 = torch.randn(B, H, dtype=F64)
    hs, cs = [], []
    h, c = h0, c0
    with torch.no_grad():
        for t in range(T):
            h, c = ref_step(p, x[t], h, c)
            hs.append(h)
            cs.append(c)
    h, c = torch.stack(hs), torch.stack(cs)
    w = CellWeights("lstm", *(q for q in p[:4]), weight_hr=p[4])
    with torch.no_grad():
        steps = linearise(w, x, torch.cat([h0[None], h[:-1]]), h, c0)
    return lstm, p, x, h0, c0, h, c, steps


def _prev(h0, c0, h, c, t):
    return (h0, c0) if t == 0 else (h[t - 1], c[t - 1])


def test_reference_step_is_nn_lstm():
    lstm, p, x, h0, c0, h, c, _ = _case()
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x, (h0[None], c0[None]))
    torch.testing.assert_close(h, out, **TOL)
    torch.testing.assert_close(c[-1], c_n[0], **TOL)


def test_dispatch_and_interface():
    _, p, x, h0, c0, h, c, steps = _case()
    assert type(steps) is ProjectedLSTMSteps and not isinstance(steps, LSTMSteps)
    assert steps.state_size == 3 + 5 and steps.hidden_size == 5 and steps.proj_size == 3
    # the adjoint must take the vjp_into loop, the Jacobian norms the generic path
    assert not hasattr(steps, "fill_block")
    with pytest.raises(ValueError, match="weight_hr"):
        ProjectedLSTMSteps(CellWeights("lstm", *p[:4]), x, h, h, c0)
    w = CellWeights("lstm", *p[:4], weight_hr=p[4].T.contiguous())
    with pytest.raises(ValueError, match="weight_hr"):
        ProjectedLSTMSteps(w, x, h, h, c0)


def _reference_jacobian(p, x, h0, c0, h, c, t):
    """∂(h_t, c_t)/∂(h_{t-1}, c_{t-1}) per sample by autograd, [B, P+H, P+H]."""
    P = h.shape[-1]
    prev = torch.cat(_prev(h0, c0, h, c, t), -1)

    def f(s):
        return torch.cat(ref_step(p, x[t], s[:, :P], s[:, P:]), -1)

    J = torch.autograd.functional.jacobian(f, prev)
    return torch.stack([J[b, :, b, :] for b in range(prev.shape[0])])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("t", [0, 3, 6])
def test_jacobian_matches_autograd(t, bias):
    _, p, x, h0, c0, h, c, steps = _case(bias=bias)
    torch.testing.assert_close(steps.jacobian(t), _reference_jacobian(p, x, h0, c0, h, c, t),
                               **TOL)


def _reference_vjp(p, x, h0, c0, h, c, t, v):
    """J_tᵀ v by autograd (v [B, P+H]), and ∂/∂x_t of ⟨s_t, v⟩."""
    P = h.shape[-1]
    hp, cp = (s.clone().requires_grad_() for s in _prev(h0, c0, h, c, t))
    xt = x[t].clone().requires_grad_()
    out = torch.cat(ref_step(p, xt, hp, cp), -1)
    gh, gc, gx = torch.autograd.grad(out, (hp, cp, xt), v)
    assert gh.shape[-1] == P
    return torch.cat([gh, gc], -1), gx


def test_vjp_into_vjp_all_and_input_grads_match_autograd():
    _, p, x, h0, c0, h, c, steps = _case()
    T, B = x.shape[:2]
    S = steps.state_size
    gen = torch.Generator().manual_seed(1)
    V = torch.randn(T, B, S, generator=gen, dtype=F64)
    refs = [_reference_vjp(p, x, h0, c0, h, c, t, V[t]) for t in range(T)]
    for t in range(T):
        out = torch.empty(B, S, dtype=F64)
        steps.vjp_into(t, V[t], None, out)
        torch.testing.assert_close(out, refs[t][0], **TOL)
        add = torch.randn(B, S, generator=gen, dtype=F64)
        steps.vjp_into(t, V[t], add, out)
        torch.testing.assert_close(out, add + refs[t][0], **TOL)
    torch.testing.assert_close(steps.vjp_all(V), torch.stack([r[0] for r in refs]), **TOL)
    torch.testing.assert_close(steps.input_grads(V), torch.stack([r[1] for r in refs]), **TOL)


def _unrolled_grads(p, x, h0, c0, G_h, G_c):
    """Plain autograd on the unrolled projected LSTM with loss Σ_t ⟨G_h[t], h_t⟩ + ⟨G_c[t], c_t⟩.

    c_t is used through two copies: one feeds h_t, the other c_{t+1} and the loss; the latter's
    .grad is by construction the gradient reaching c_t from outside its own step (e_t).
    Returns (∂L/∂h_t, total ∂L/∂c_t, e_t, ∂L/∂x_t), each [T, B, ·]."""
    x = x.clone().requires_grad_()
    h, c = h0, c0
    hs, cs, rests = [], [], []
    loss = 0
    for t in range(x.shape[0]):
        w_ih, w_hh, b_ih, b_hh, w_hr = p
        gates = x[t] @ w_ih.T + h @ w_hh.T
        if b_ih is not None:
            gates = gates + b_ih + b_hh
        i, f, g, o = gates.chunk(4, -1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        c_new.retain_grad()
        c_for_h, c = c_new.clone(), c_new.clone()
        c.retain_grad()
        h = (o * torch.tanh(c_for_h)) @ w_hr.T
        h.retain_grad()
        hs.append(h)
        cs.append(c_new)
        rests.append(c)
        loss = loss + (G_h[t] * h).sum() + (G_c[t] * c).sum()
    loss.backward()

    def stack(xs):
        return torch.stack([q.grad for q in xs])

    return stack(hs), stack(cs), stack(rests), x.grad


def test_cell_grads_and_pair_from_total_against_unrolled_autograd():
    _, p, x, h0, c0, h, c, steps = _case()
    gen = torch.Generator().manual_seed(2)
    G_h = torch.randn(h.shape, generator=gen, dtype=F64)
    G_c = torch.randn(c.shape, generator=gen, dtype=F64)
    dh, dc_total, e, _ = _unrolled_grads(p, x, h0, c0, G_h, G_c)
    pair = steps.pair_from_total(dh, dc_total)
    torch.testing.assert_close(pair, torch.cat([dh, e], -1), **TOL)
    torch.testing.assert_close(steps.cell_grads(torch.cat([dh, e], -1)), dc_total, **TOL)
    # the round trip on arbitrary values
    Y = torch.randn(h.shape[:2] + (steps.state_size,), generator=gen, dtype=F64)
    torch.testing.assert_close(steps.pair_from_total(Y[..., :3], steps.cell_grads(Y)), Y, **TOL)


@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_adjoint_scan_equals_unrolled_autograd(gain):
    _, p, x, h0, c0, h, c, steps = _case(T=60, B=2, H=6, P=4, seed=3, gain=gain)
    gen = torch.Generator().manual_seed(4)
    G_h = torch.randn(h.shape, generator=gen, dtype=F64)
    G_c = torch.randn(c.shape, generator=gen, dtype=F64)
    G_h[:-5] = 0  # the loss reads only the last steps: the gradients travel back
    G_c[:-5] = 0
    dh, dc_total, e, dx = _unrolled_grads(p, x, h0, c0, G_h, G_c)
    g = torch.cat([G_h, G_c], -1)
    adj = adjoint_scan(steps, g, None, log_norm(g))
    scale = adj.log_scale.exp().unsqueeze(-1)
    torch.testing.assert_close(adj.scaled * scale, torch.cat([dh, e], -1), **TOL)
    torch.testing.assert_close(steps.cell_grads(adj.scaled) * scale, dc_total, **TOL)
    torch.testing.assert_close(steps.input_grads(adj.scaled) * scale, dx, **TOL)
    ref_ln = torch.cat([dh, e], -1).norm(dim=-1).log()
    torch.testing.assert_close(adj.log_norm, ref_ln, rtol=1e-10, atol=1e-10)


def test_jacobian_product_norms_take_the_generic_path_and_match_autograd_products():
    _, p, x, h0, c0, h, c, steps = _case(T=12, B=2, seed=5)
    T, B = x.shape[:2]
    Js = [_reference_jacobian(p, x, h0, c0, h, c, t) for t in range(T)]
    ref = torch.full((T, B), torch.nan, dtype=F64)
    prod = torch.eye(steps.state_size, dtype=F64).expand(B, -1, -1)
    for k in range(T - 1, -1, -1):
        ref[k] = torch.linalg.matrix_norm(prod, ord=2).log10()
        prod = prod @ Js[k]
    exact = jacobian_product_log10_norms(steps, T, method="exact")
    torch.testing.assert_close(exact, ref, rtol=1e-10, atol=1e-10)
    est = jacobian_product_log10_norms(steps, T, method="estimate")
    assert bool((est <= ref + 1e-10).all())  # a lower bound ...
    assert float((ref - est).amax()) < 0.05  # ... tight on this short, small case


def test_float32_linearisation_matches_float64():
    _, p, x, h0, c0, h, c, steps = _case()
    w32 = CellWeights("lstm", *(q.float() for q in p[:4]), weight_hr=p[4].float())
    with torch.no_grad():
        s32 = linearise(w32, x.float(), torch.cat([h0[None], h[:-1]]).float(), h.float(),
                        c0.float(), saturation=True)
    torch.testing.assert_close(s32.jacobian(4).double(), steps.jacobian(4), rtol=1e-5,
                               atol=1e-5)
    assert set(s32.saturation) == {"i", "f", "g", "o", "c"}
    assert s32.saturation["c"].shape == x.shape[:2]


# ---------------------------------------------------------------- module-facing dynamics


def test_recurrent_spectra_of_projected_lstm_match_numpy():
    torch.manual_seed(6)
    H, P = 5, 2
    lstm = nn.LSTM(3, H, proj_size=P, num_layers=2, bidirectional=True)
    df = recurrent_spectra(nn.ModuleDict({"enc": lstm, "cell": nn.GRUCell(2, 3)}))
    enc = df[df["module"] == "enc"]
    assert len(enc) == 2 * 2 * 4 * P
    assert len(df[df["module"] == "cell"]) == 3 * 3
    for (layer, direction, gate), block_df in enc.groupby(["layer", "direction", "gate"]):
        _, w_hh, _, _, w_hr = (q.numpy() if q is not None else None
                               for q in _weights(lstm, layer, direction))
        g = GATES.index(gate)
        block = w_hr @ w_hh[g * H : (g + 1) * H]
        assert block.shape == (P, P) and block_df["index"].tolist() == list(range(P))
        ours = block_df["real"].to_numpy() + 1j * block_df["imag"].to_numpy()
        ref = np.linalg.eigvals(block)
        for z in ref:
            assert np.min(np.abs(ours - z)) < 1e-10
        # the same as the non-zero eigenvalues of the [H, H] map W_hh[g] W_hr
        big = np.linalg.eigvals(w_hh[g * H : (g + 1) * H] @ w_hr)
        big = big[np.argsort(-np.abs(big))]
        np.testing.assert_allclose(np.abs(big[:P]), block_df["modulus"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.abs(big[P:]), 0, atol=1e-10)
        np.testing.assert_allclose(
            block_df["singular_value"], np.linalg.svd(block, compute_uv=False), rtol=1e-10
        )


def test_module_linearisation_of_projected_lstm_matches_the_reference_step():
    torch.manual_seed(7)
    H, P = 5, 3
    m = nn.LSTM(2, H, proj_size=P).double()
    p = _weights(m)
    T = 9
    x = torch.randn(T, 2, dtype=F64)
    h0, c0 = 0.3 * torch.randn(P, dtype=F64), torch.randn(H, dtype=F64)
    steps, h = module_linearisation(m, x, (h0, c0))
    assert type(steps) is ProjectedLSTMSteps and steps.state_size == P + H
    with torch.no_grad():
        out, _ = m(x.unsqueeze(1), (h0.view(1, 1, P), c0.view(1, 1, H)))
    torch.testing.assert_close(h, out, **TOL)
    cs, c = [], c0[None]
    with torch.no_grad():
        hh = h0[None]
        for t in range(T):
            hh, c = ref_step(p, x[t : t + 1], hh, c)
            cs.append(c)
    c_traj = torch.stack(cs)
    for t in (0, 4, T - 1):
        ref = _reference_jacobian(p, x.unsqueeze(1), h0[None], c0[None], h, c_traj, t)
        torch.testing.assert_close(steps.jacobian(t), ref, **TOL)
    # the joint h0 vector [P + H] (h first) is the same start
    steps2, h2 = module_linearisation(m, x, torch.cat([h0, c0]))
    torch.testing.assert_close(h2, h, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[8\]"):
        module_linearisation(m, x, torch.zeros(2 * H, dtype=F64))


def test_lyapunov_spectrum_of_projected_lstm_equals_the_callable_form():
    torch.manual_seed(8)
    H, P = 4, 2
    m = nn.LSTM(3, H, proj_size=P).double()
    p = _weights(m)
    x = torch.randn(150, 3, dtype=F64)
    s0 = 0.3 * torch.randn(P + H, dtype=F64)

    def step(s, x_t):
        h, c = ref_step(p, x_t[None], s[None, :P], s[None, P:])
        return torch.cat([h[0], c[0]])

    ours = lyapunov_spectrum(m, s0, x, warmup=20)
    ref = lyapunov_spectrum(step, s0, x, warmup=20)
    assert ours.shape == (P + H,)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


def test_deep_bidirectional_projected_lstm_layers_and_directions():
    torch.manual_seed(9)
    H, P = 4, 3
    m = nn.LSTM(2, H, proj_size=P, num_layers=2, bidirectional=True).double()
    T = 10
    x = torch.randn(T, 1, 2, dtype=F64)
    h0 = 0.3 * torch.randn(4, 1, P, dtype=F64)
    c0 = torch.randn(4, 1, H, dtype=F64)
    with torch.no_grad():
        top, _ = m(x, (h0, c0))
        lower = nn.LSTM(2, H, proj_size=P, bidirectional=True).double()
        for name, q in lower.named_parameters():
            q.copy_(getattr(m, name))
        below, _ = lower(x, (h0[:2], c0[:2]))
    for direction in (0, 1):
        steps, h = module_linearisation(m, x, (h0, c0), layer=1, direction=direction)
        own = top[..., direction * P : (direction + 1) * P]
        torch.testing.assert_close(h, own.flip(0) if direction else own, **TOL)
        # Jacobian at one step against the reference step on the layer's own inputs
        p = _weights(m, 1, direction)
        inp = below.flip(0) if direction else below
        t = 5
        hs = [h0[2 + direction]] + [h[s] for s in range(T)]
        c = c0[2 + direction]
        with torch.no_grad():
            for s in range(t):
                c = ref_step(p, inp[s], hs[s], c)[1]
        prev = torch.cat([hs[t], c], -1)

        def f(s, t=t, p=p, inp=inp):
            return torch.cat(ref_step(p, inp[t], s[:, :P], s[:, P:]), -1)

        J = torch.autograd.functional.jacobian(f, prev)[:, :, 0, :]
        torch.testing.assert_close(steps.jacobian(t)[0], J[0], **TOL)


# ---------------------------------------------------------------- the probes' reference


def _probe_reference():
    """tests/probes/reference.py, the independent unrolled reference of the probe tests."""
    if "reference" not in sys.modules:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probes"))
    return importlib.import_module("reference")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_probe_reference_unrolls_projected_lstm_like_the_module(bidirectional):
    reference = _probe_reference()
    torch.manual_seed(10)
    H, P, L = 5, 3, 2
    D = 2 if bidirectional else 1
    m = nn.LSTM(2, H, proj_size=P, num_layers=L, bidirectional=bidirectional).double()
    x = torch.randn(6, 2, 2, dtype=F64)
    h0 = torch.randn(L * D, 2, P, dtype=F64)
    c0 = torch.randn(L * D, 2, H, dtype=F64)
    ref = reference.unroll_fused(m, x, (h0, c0))
    xr = x.clone().requires_grad_()
    out, (h_n, c_n) = m(xr, (h0, c0))
    torch.testing.assert_close(ref.output, out, **TOL)
    torch.testing.assert_close(ref.h_n, h_n, **TOL)
    torch.testing.assert_close(ref.c_n, c_n, **TOL)
    loss = (out ** 2).sum() + (h_n * 0.5).sum() + (c_n ** 3).sum()
    loss.backward()
    ref_loss = (ref.output ** 2).sum() + (ref.h_n * 0.5).sum() + (ref.c_n ** 3).sum()
    ref_loss.backward()
    torch.testing.assert_close(ref.x.grad, xr.grad, **TOL)
    trace = ref.traces[(L - 1, D - 1)]
    assert trace.states("h").shape == (6, 2, P) and trace.states("c").shape == (6, 2, H)
    assert trace.hidden_grads("c").shape == (6, 2, H)
    assert trace.immediate_grads("c").shape == (6, 2, H)
