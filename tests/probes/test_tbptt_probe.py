"""Truncated BPTT as the runner trains it (``train.tbptt``, SequenceModel's chunked forward):
the probe must report exactly what the truncation delivers, checked against an explicitly
unrolled float64 model whose state is detached at the same chunk boundaries."""

from __future__ import annotations

import math

import pytest
import torch
from reference import _params, gru_step, lstm_step, rnn_step

import rnn_diag as rd
from rnn_diag.experiments.model import SequenceModel

STEPS = {"rnn": lambda p: rnn_step(p, "tanh"), "gru": gru_step, "lstm": lstm_step}


def _reference_grads(model: SequenceModel, x: torch.Tensor, n: int | None, loss_of) -> torch.Tensor:
    """``[T, B]`` norms of the total ∂L/∂h_t of an unrolled float64 copy of ``model``, the state
    detached every ``n`` steps (``None``: never)."""
    rnn = model.rnn
    p = _params(rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    step = STEPS[model.cell](p)
    B, T, _ = x.shape
    H = rnn.hidden_size
    # the weights are float64 copies without grad: the states are leaves that carry it
    state = tuple(torch.zeros(B, H, dtype=torch.float64, requires_grad=True)
                  for _ in range(2 if model.cell == "lstm" else 1))
    hs = []
    for t in range(T):
        if n is not None and t > 0 and t % n == 0:
            state = tuple(s.detach().requires_grad_() for s in state)
        state = step(x[:, t].double(), state)
        state[0].retain_grad()
        hs.append(state[0])
    w, b = model.head.weight.detach().double(), model.head.bias.detach().double()
    out = torch.stack(hs[-model.output_steps:], dim=1) @ w.T + b
    loss_of(out).backward()
    return torch.stack([h.grad if h.grad is not None else torch.zeros_like(h) for h in hs]).norm(
        dim=-1)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("output_steps", [1, 14])
def test_probe_profile_is_the_truncated_gradient(cell, output_steps):
    torch.manual_seed(0)
    T, n = 14, 4
    model = SequenceModel(cell, 2, 5, 1, output_steps=output_steps, tbptt=n).double()
    x = torch.randn(3, T, 2, dtype=torch.float64)

    def loss_of(out):
        return (out ** 2).sum()

    with rd.attach(model.rnn) as probe:
        loss_of(model(x)).backward()
    got = probe.hidden_grad_log10_norms()  # [T, B]
    want = _reference_grads(model, x, n, loss_of)
    full = _reference_grads(model, x, None, loss_of)
    assert torch.allclose(got, want.log10(), rtol=0, atol=1e-9)
    last_start = (T - 1) // n * n  # 12: the last chunk is steps 12, 13
    if output_steps == 1:  # one loss at the last step: nothing reaches before its chunk
        assert torch.isneginf(got[:last_start]).all()
        assert torch.isfinite(got[last_start:]).all()
        assert (full[:last_start] > 0).all()  # full BPTT would have sent gradient there
    else:  # a loss at every step: each step hears only the losses of its own chunk
        assert torch.isfinite(got).all()
        assert not torch.allclose(want, full)


def test_truncation_leaves_the_outputs_unchanged():
    torch.manual_seed(1)
    x = torch.randn(2, 11, 3)
    model = SequenceModel("lstm", 3, 4, 2, output_steps=11, tbptt=3)
    truncated = model(x)
    model.tbptt = None
    assert torch.allclose(model(x), truncated, atol=1e-6, rtol=0)


def test_trial_records_zero_gradient_beyond_the_truncation():
    """A runner trial with train.tbptt: its stored profile is -inf (an exactly zero gradient)
    before the last chunk for the adding task, whose loss is at the last step only."""
    from rnn_diag.experiments.config import validate_config
    from rnn_diag.experiments.grid import expand
    from rnn_diag.experiments.trial import run_trial

    cfg = validate_config({
        "name": "t", "task": {"name": "adding", "seq_len": 20, "n_train": 40, "n_val": 10},
        "model": {"hidden_size": 6}, "train": {"epochs": 1, "tbptt": 8, "device": "cpu"},
        "probes": {"lyapunov": [], "spectra": []}})
    result = run_trial(expand(cfg)[0])
    assert result.row["status"] == "ok", result.row["error"]
    g = result.tables["gradients"]
    total = g[(g.metric == "total_mean") & (g.state == "h")].sort_values("t")
    values = total["value"].to_numpy()
    assert len(values) == 20
    assert all(math.isinf(v) and v < 0 for v in values[:16])  # chunks 0-7, 8-15 cut off
    assert all(math.isfinite(v) for v in values[16:])
    assert result.row["horizon_last"] <= 4
