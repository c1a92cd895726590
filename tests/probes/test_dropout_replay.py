"""Inter-layer dropout of fused modules in training mode, recorded exactly.

The truth is an explicitly unrolled float64 model written here from the cell equations
(``reference.py``'s steps), with the dropout masks drawn by the test itself: ATen's CPU dropout
draws ``bernoulli_(1 - p)`` over each lower layer's time-major output, in layer order, from the
global generator. The test checks that this reconstruction reproduces the module's own output
before using it as the truth, so a change in PyTorch's dropout would fail loudly here instead
of making the truth wrong.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from reference import _params, gru_step, lstm_step, rnn_step
from torch import nn

import rnn_diag as rd
from rnn_diag.probes import fused
from rnn_diag.probes.probe import ProbeWarning

KINDS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _step(module, layer: int):
    sfx = f"_l{layer}"
    p = _params(*(getattr(module, n + sfx) for n in ("weight_ih", "weight_hh", "bias_ih",
                                                      "bias_hh")))
    if isinstance(module, nn.LSTM):
        return lstm_step(p)
    if isinstance(module, nn.GRU):
        return gru_step(p)
    return rnn_step(p, module.nonlinearity)


def _masks(T: int, B: int, H: int, L: int, p: float, seed: int) -> list[torch.Tensor]:
    """The scaled masks ATen's CPU dropout draws after ``torch.manual_seed(seed)``."""
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    masks = [torch.empty(T, B, H).bernoulli_(1 - p).div_(1 - p) for _ in range(L - 1)]
    torch.set_rng_state(gen_state)
    return masks


def _unrolled(module, x: torch.Tensor, masks, head: torch.Tensor):
    """float64 states per layer ``[T][B]`` (retained) and the loss ``sum(head * output)``."""
    T, B, _ = x.shape
    L, H = module.num_layers, module.hidden_size
    lstm = isinstance(module, nn.LSTM)
    steps = [_step(module, layer) for layer in range(L)]
    states = [[None] * T for _ in range(L)]
    loss = torch.zeros((), dtype=torch.float64)
    x = x.double().requires_grad_()  # a leaf, so every state is an autograd node
    for b in range(B):
        carry = [tuple(torch.zeros(H, dtype=torch.float64) for _ in range(2 if lstm else 1))
                 for _ in range(L)]
        for t in range(T):
            inp = x[t, b]
            for layer in range(L):
                state = steps[layer](inp, carry[layer])
                for s in state:
                    s.retain_grad()
                carry[layer] = state
                if states[layer][t] is None:
                    states[layer][t] = [None] * B
                states[layer][t][b] = state
                inp = state[0] * masks[layer][t, b].double() if layer < L - 1 else state[0]
            loss = loss + (head[t, b].double() * inp).sum()
    return states, loss


def _table(states, layer: int, i: int, grad: bool) -> torch.Tensor:
    return torch.stack([
        torch.stack([(s[i].grad if grad else s[i]).detach() for s in row])
        for row in states[layer]
    ])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_train_mode_dropout_is_exact(kind, batch_first):
    """A 3-layer module with dropout 0.3 in train(): every layer's total ∂L/∂h_t (and ∂L/∂c_t)
    equals the float64 unrolled model with the same masks, and the probe changes neither the
    output, the parameter gradients, nor the user's RNG stream."""
    torch.manual_seed(0)
    T, B, I, H, L, p, seed = 7, 3, 4, 5, 3, 0.3, 1234
    module = KINDS[kind](I, H, num_layers=L, dropout=p, batch_first=batch_first).train()
    plain = copy.deepcopy(module)
    x = torch.randn(T, B, I)
    head = torch.randn(T, B, H)
    xin = x.transpose(0, 1).contiguous() if batch_first else x

    def run(m):
        torch.manual_seed(seed)
        out, _ = m(xin)
        out_tm = out.transpose(0, 1) if batch_first else out
        (head * out_tm).sum().backward()
        return out_tm.detach(), torch.rand(4)

    ref_out, ref_next = run(plain)
    with rd.attach(module) as probe:
        out, next_draw = run(module)

    assert torch.equal(out, ref_out)
    assert torch.equal(next_draw, ref_next), "the probe changed the user's RNG stream"
    for (name, a), (_, b) in zip(module.named_parameters(), plain.named_parameters()):
        assert torch.equal(a.grad, b.grad), name

    masks = _masks(T, B, H, L, p, seed)
    states, loss = _unrolled(module, x, masks, head)
    top = torch.stack([torch.stack([s[0] for s in row]) for row in states[L - 1]]).detach()
    assert torch.allclose(top.float(), ref_out, atol=1e-5), "the masks of the truth are wrong"
    loss.backward()
    for layer in range(L):
        for i, state in enumerate(["h", "c"] if kind == "lstm" else ["h"]):
            got = probe.hidden_grads(layer=layer, state=state).double()
            want = _table(states, layer, i, grad=True)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6,
                                       msg=f"layer {layer} state {state}")


def test_dropout_replay_that_cannot_reproduce_the_output_warns_and_records_nothing(
    monkeypatch,
):
    """Where the masks cannot be replayed (cuDNN keeps its own dropout state), the probe must
    not record a wrong answer and must not raise into the user's backward: it warns, naming
    the module and the reason, and records nothing for that call."""
    torch.manual_seed(0)
    model = nn.LSTM(3, 4, num_layers=2, dropout=0.5).train()
    real = fused.FusedCall._dropout

    def other_masks(self, out, p):
        torch.rand(7)  # shift the stream: the replayed masks differ from the forward's
        return real(self, out, p)

    monkeypatch.setattr(fused.FusedCall, "_dropout", other_masks)
    with rd.attach(model) as probe, pytest.warns(ProbeWarning, match="dropout") as caught:
        out, _ = model(torch.randn(6, 2, 3))
        out.sum().backward()
    assert "''" in str(caught[0].message) or "<root>" in str(caught[0].message)
    with pytest.raises(RuntimeError, match="no backward pass has been recorded"):
        probe.hidden_grads()


def test_dropout_switched_on_after_attach_is_replayed():
    """Attached in eval mode, then ``train()``: the next forward draws masks, and the probe
    (which decides per call) replays them — the lower layer's totals change with the masks and
    stay exact against an eval-mode rerun being different."""
    torch.manual_seed(0)
    model = nn.GRU(3, 4, num_layers=2, dropout=0.5).eval()
    x = torch.randn(6, 2, 3)
    with rd.attach(model) as probe:
        model(x)[0].sum().backward()
        eval_grads = probe.hidden_grads(layer=0).clone()
        model.train()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ProbeWarning)
            model(x)[0].sum().backward()
        train_grads = probe.hidden_grads(layer=0)
    assert train_grads.shape == eval_grads.shape
    assert not torch.equal(train_grads, eval_grads)
