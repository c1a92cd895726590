"""``nn.LSTM(proj_size > 0)`` through the probe, against the unrolled float64 reference.

With a projection, h_t = W_hr (o_t ⊙ tanh c_t) has P entries and c_t keeps H; the probe's state
"h" is the projected state. The truth is ``reference.unroll_fused`` (its own equations, each
state retained), run on the same input with the same loss.
"""

from __future__ import annotations

import pytest
import torch
from reference import unroll_fused
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnn_diag as rd


def _loss(out, h_n, c_n, a, b, c):
    return (torch.tanh(out) * a).sum() + (h_n**2 * b).sum() + (torch.sin(c_n) * c).sum()


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_projected_lstm_totals_and_immediates_equal_autograd(bidirectional, packed):
    torch.manual_seed(7)
    T, B, I, H, P, L = 6, 3, 3, 5, 2, 2
    D = 2 if bidirectional else 1
    lstm = nn.LSTM(I, H, num_layers=L, proj_size=P, bidirectional=bidirectional).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 2])
    a = torch.randn(T, B, D * P, dtype=torch.float64)
    b = torch.randn(L * D, B, P, dtype=torch.float64)
    c = torch.randn(L * D, B, H, dtype=torch.float64)
    x_in = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
    valid = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)

    with rd.attach(lstm) as probe:
        out, (h_n, c_n) = lstm(x_in)
        if packed:
            out = pad_packed_sequence(out)[0]
        _loss(out * valid if packed else out, h_n, c_n, a, b, c).backward()

    ref = unroll_fused(lstm, x_in)
    _loss(ref.output, ref.h_n, ref.c_n, a, b, c).backward()
    for (layer, d), trace in ref.traces.items():
        for state in ("h", "c"):
            want = trace.hidden_grads(state)
            got = probe.hidden_grads(layer=layer, direction=d, state=state)
            assert got.shape == want.shape == (T, B, P if state == "h" else H)
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12,
                                       msg=f"total {state} layer {layer} direction {d}")
            torch.testing.assert_close(
                probe.immediate_grads(layer=layer, direction=d, state=state),
                trace.immediate_grads(state), rtol=1e-9, atol=1e-12,
                msg=f"immediate {state} layer {layer} direction {d}")


def test_projected_lstm_jacobian_norms_equal_products_of_autograd_jacobians():
    """log10 ‖∂(h_T, c_T)/∂(h_k, c_k)‖₂ over the joint P + H state, against products of the
    per-step Jacobians that autograd gives for an explicitly written projected LSTM step."""
    torch.manual_seed(3)
    T, I, H, P = 8, 2, 4, 3
    lstm = nn.LSTM(I, H, proj_size=P).double()
    x = torch.randn(T, 1, I, dtype=torch.float64)
    with rd.attach(lstm, jacobians="exact") as probe:
        out, _ = lstm(x)
        out[-1].sum().backward()
    got = probe.jacobian_log10_norms()[:, 0]

    w_ih, w_hh, b = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
    w_hr = lstm.weight_hr_l0

    def step(x_t, s):
        h, cc = s[:P], s[P:]
        i, f, g, o = (w_ih @ x_t + w_hh @ h + b).chunk(4)
        cc = torch.sigmoid(f) * cc + torch.sigmoid(i) * torch.tanh(g)
        return torch.cat([w_hr @ (torch.sigmoid(o) * torch.tanh(cc)), cc])

    with torch.no_grad():
        s = torch.zeros(P + H, dtype=torch.float64)
        states = [s]
        for t in range(T):
            s = step(x[t, 0], s)
            states.append(s)
    J = [torch.autograd.functional.jacobian(lambda s, t=t: step(x[t, 0], s), states[t])
         for t in range(T)]
    prod = torch.eye(P + H, dtype=torch.float64)
    want = torch.empty(T, dtype=torch.float64)
    for k in range(T - 1, -1, -1):
        want[k] = torch.linalg.matrix_norm(prod, ord=2).log10()
        prod = prod @ J[k]
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
