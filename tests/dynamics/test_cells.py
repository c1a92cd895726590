"""Cell linearisations against autograd Jacobians of PyTorch's own cells (float64)."""

import pytest
import torch

from rnn_diag.dynamics.cells import CellWeights, linearise

KINDS = {"rnn_tanh": (torch.nn.RNNCell, 1), "rnn_relu": (torch.nn.RNNCell, 1),
         "gru": (torch.nn.GRUCell, 3), "lstm": (torch.nn.LSTMCell, 4)}


def _trajectory(kind, T=7, B=3, I=2, H=4, seed=0):
    torch.manual_seed(seed)
    cls, _ = KINDS[kind]
    kwargs = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
    cell = cls(I, H, **kwargs).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    c0 = torch.randn(B, H, dtype=torch.float64)
    state = (h0, c0) if kind == "lstm" else h0
    hs, cs = [], []
    with torch.no_grad():
        for t in range(T):
            state = cell(x[t], state)
            hs.append(state[0] if kind == "lstm" else state)
            if kind == "lstm":
                cs.append(state[1])
    h = torch.stack(hs)
    params = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    w = CellWeights(kind, *(p.detach() for p in params))
    steps = linearise(w, x, torch.cat([h0[None], h[:-1]]), h, c0 if kind == "lstm" else None)
    c = torch.stack(cs) if cs else None
    return cell, x, h0, c0, h, c, steps


def _reference_jacobian(kind, cell, x, h0, c0, h, c, t):
    """∂s_t/∂s_{t-1} of the nn cell by autograd, per sample: [B, S, S]."""
    H = h.shape[-1]
    if kind == "lstm":
        prev = torch.cat([h[t - 1], c[t - 1]], -1) if t > 0 else torch.cat([h0, c0], -1)

        def f(s):
            return torch.cat(cell(x[t], (s[:, :H], s[:, H:])), -1)
    else:
        prev = h[t - 1] if t > 0 else h0

        def f(s):
            return cell(x[t], s)
    J = torch.autograd.functional.jacobian(f, prev)
    return torch.stack([J[b, :, b, :] for b in range(prev.shape[0])])


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("t", [1, 4, 6])
def test_jacobian_and_vjp_match_autograd(kind, t):
    cell, x, h0, c0, h, c, steps = _trajectory(kind)
    J_ref = _reference_jacobian(kind, cell, x, h0, c0, h, c, t)
    torch.testing.assert_close(steps.jacobian(t), J_ref, rtol=1e-12, atol=1e-12)
    v = torch.randn(J_ref.shape[0], J_ref.shape[-1], dtype=torch.float64)
    out = torch.empty_like(v)
    steps.vjp_into(t, v, None, out)
    torch.testing.assert_close(out, torch.einsum("bij,bi->bj", J_ref, v), rtol=1e-12, atol=1e-12)
    add = torch.randn_like(v)
    steps.vjp_into(t, v, add, out)
    torch.testing.assert_close(out, add + torch.einsum("bij,bi->bj", J_ref, v))


@pytest.mark.parametrize("kind", list(KINDS))
def test_vjp_all_matches_per_step(kind):
    *_, steps = _trajectory(kind)
    T, B, S = 7, 3, steps.state_size
    v = torch.randn(T, B, S, dtype=torch.float64)
    every = steps.vjp_all(v)
    for t in range(1, T):
        out = torch.empty(B, S, dtype=torch.float64)
        steps.vjp_into(t, v[t], None, out)
        torch.testing.assert_close(every[t], out)
