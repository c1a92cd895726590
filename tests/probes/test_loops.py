"""Modules run several times in one forward: how calls are linked, joined and laid end to end.

Truths: ``retain_grad()`` on every state a call returns (what autograd delivers there, through
every path), float64 log-space recursions written here for ranges beyond float, and products
of autograd Jacobians for the Jacobian-product norms.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from published_models import ExplicitLSTM
from torch import nn

import rnn_diag as rd
from rnn_diag.dynamics.adjoint import adjoint_scan
from rnn_diag.dynamics.lognorm import LN10, log_norm
from rnn_diag.probes import links
from rnn_diag.probes.probe import ProbeWarning

# --------------------------------------------------------------------------- links


def _handed(*tensors):
    return links.Handed.of(tuple(tensors))


def test_link_kinds_of_the_ways_code_hands_a_state_on():
    h = torch.randn(3, 4, requires_grad=True) * 2
    c = torch.randn(3, 4, requires_grad=True) * 2
    handed = _handed(h)
    assert links.classify((h,), handed) == links.SAME
    assert links.classify((h.unsqueeze(0),), handed) == links.VIEW
    assert links.classify((h.unsqueeze(0).squeeze(0),), handed) == links.VIEW
    assert links.classify((h.view(3, 4),), handed) == links.VIEW
    assert links.classify((h.reshape(1, 3, 4),), handed) == links.VIEW
    assert links.classify((h[:2],), handed) == links.TRANSFORM  # fewer rows: not the same values
    assert links.classify((h * 0.5,), handed) == links.TRANSFORM
    assert links.classify((h.t(),), handed) == links.TRANSFORM  # same memory, other order
    assert links.classify((h.detach(),), handed) == links.DETACHED
    assert links.classify((torch.zeros(3, 4),), handed) == links.FRESH
    assert links.classify(None, handed) == links.FRESH
    assert links.classify((h,), None) == links.FRESH
    # pairs: every component must qualify
    pair = _handed(h, c)
    assert links.classify((h, c), pair) == links.SAME
    assert links.classify((h.unsqueeze(0), c), pair) == links.VIEW
    assert links.classify((h, c * 0), pair) == links.TRANSFORM
    assert links.classify((h.detach(), c.detach()), pair) == links.DETACHED


def test_a_state_changed_in_place_after_the_call_is_not_the_same():
    h = torch.randn(3, 4, requires_grad=True) * 2
    handed = _handed(h)
    h[0] = 0.0  # e.g. h[done] = 0
    assert links.classify((h,), handed) == links.TRANSFORM


def test_reads_tells_whether_h_was_computed_from_c():
    cell = nn.LSTMCell(2, 3)
    h, c = cell(torch.randn(4, 2))
    assert links.reads(h, c)  # CPU LSTMCell: h = o * tanh(c) in the graph
    both = torch.stack([h, c]) * 1.0
    h1, c1 = both.unbind(0)
    assert not links.reads(h1, c1)  # both out of one node, as on CUDA


# --------------------------------------------------------------------------- adjoint restarts


def test_adjoint_scan_restarts_where_told():
    """λ_{t-1} = g_{t-1} + 0.5 λ_t, except that step 5 does not read step 4: λ_4 = g_4."""

    class Half:
        def vjp_into(self, t, v, add, out):
            torch.mul(v, 0.5, out=out)
            if add is not None:
                out.add_(add)

    g = torch.zeros(10, 1, 1, dtype=torch.float64)
    g[9], g[4] = 1.0, 3.0
    res = adjoint_scan(Half(), g, None, log_norm(g), starts=[5])
    got = (res.scaled[..., 0] * res.log_scale.exp())[:, 0]
    want = torch.tensor([3 * 0.5**k for k in (4, 3, 2, 1, 0)] + [0.5**k for k in (4, 3, 2, 1, 0)],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want)
    # a restart at every step: nothing is carried, λ = g (also for tiny g, in log space)
    g[2] = 1e-300
    res = adjoint_scan(Half(), g, None, log_norm(g), starts=range(1, 10))
    torch.testing.assert_close(res.scaled * res.log_scale.exp().unsqueeze(-1), g)
    torch.testing.assert_close(res.log_norm, log_norm(g))


# --------------------------------------------------------------------------- fused, per step


def _g(x):
    return torch.zeros_like(x) if x.grad is None else x.grad


def _probed_against_explicit(lstm: nn.LSTM, run, shape) -> rd.Probe:
    """Run ``run(module)`` on ``ExplicitLSTM(lstm)`` (float64, every h_t and c_t retained) and
    on ``lstm`` with a probe attached; assert every layer's total ∂L/∂h_t and ∂L/∂c_t (shape
    ``shape``) equals the explicit model's, and return the probe."""
    explicit = ExplicitLSTM(lstm)
    run(explicit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        with rd.attach(lstm) as probe:
            run(lstm)
    for layer in range(lstm.num_layers):
        for i, state in enumerate("hc"):
            want = torch.stack([_g(s[i]) for s in explicit.states[(layer, 0)]])
            got = probe.hidden_grads(layer=layer, state=state)
            assert got.shape == shape
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12,
                                       msg=f"layer {layer} {state}")
    return probe


@pytest.mark.parametrize("hand_over", ["same", "view", "mask", "detach"])
def test_multilayer_lstm_called_per_step_equals_the_unrolled_truth(hand_over):
    """A 2-layer nn.LSTM run one step per call, the state handed over four ways; the loss
    reads the outputs and layer 0's hidden state directly (as attention queries do). The truth
    is ``ExplicitLSTM`` (float64, the documented equations, every h_t and c_t retained) run in
    the same loop: total ∂L/∂h_t and ∂L/∂c_t of both layers."""
    torch.manual_seed(0)
    T, B = 9, 3
    lstm = nn.LSTM(2, 4, num_layers=2).double()
    xs = torch.randn(T, B, 2, dtype=torch.float64)
    mask = (torch.rand(T, B) > 0.3).double()

    def hand(t, new):
        h, c = new
        if hand_over == "view":
            return (h.view(2, B, 4), c.reshape(2, B, 4))
        if hand_over == "mask":
            m = mask[t].view(1, -1, 1)
            return (m * h, m * c)
        if hand_over == "detach":
            return (h.detach(), c.detach()) if t == 4 else (h, c)
        return (h, c)

    def run(module):
        state, loss = None, 0
        for t in range(T):
            out, new = module(xs[t : t + 1]) if state is None else module(xs[t : t + 1], state)
            loss = loss + (out.tanh() * (t + 1)).sum() + (new[0][0] ** 2).sum() * 0.1
            state = hand(t, new)
        loss.backward()

    probe = _probed_against_explicit(lstm, run, shape=(T, B, 4))
    imm = probe.immediate_grads(layer=1)
    torch.testing.assert_close(imm[-1], probe.hidden_grads(layer=1)[-1])
    if hand_over == "mask":
        assert torch.isnan(imm[:-1]).all()
    else:
        assert not torch.isnan(imm).any()
    if hand_over == "detach":  # nothing flows back across the detach: step 4 gets only g_4
        assert not torch.isnan(imm[4]).any()
        torch.testing.assert_close(imm[4], probe.hidden_grads(layer=1)[4])


def _log_space_truth(W: torch.Tensor, h: torch.Tensor, g_last: torch.Tensor) -> torch.Tensor:
    """float64 log10 ‖λ_t‖ of an Elman tanh RNN with the loss on the last state only."""
    T = h.shape[0]
    lam = g_last.double()
    out = torch.empty(T, lam.shape[0], dtype=torch.float64)
    logs = torch.zeros(lam.shape[0], dtype=torch.float64)
    n = lam.norm(dim=1)
    lam, logs = lam / n[:, None], n.log10()
    out[T - 1] = logs
    for t in range(T - 1, 0, -1):
        lam = (lam * (1 - h[t].double() ** 2)) @ W.double()
        n = lam.norm(dim=1)
        lam, logs = lam / n[:, None], logs + n.log10()
        out[t - 1] = logs
    return out


@pytest.mark.parametrize("kind", ["fused", "cell", "chunks"])
def test_joined_calls_stay_in_log_space_far_below_float(kind):
    """T = 1500 steps at spectral radius 0.3: the gradient falls ~700 decades. Calls that
    hand the returned state on (through unsqueeze/squeeze views) are joined in log space:
    one step per call, or ("chunks") a 500-step call, 500 one-step calls, a 500-step call."""
    torch.manual_seed(1)
    T, B, H = 1500, 2, 6
    rnn = nn.RNNCell(2, H) if kind == "cell" else nn.RNN(2, H)
    W = rnn.weight_hh if kind == "cell" else rnn.weight_hh_l0
    with torch.no_grad():
        W.mul_(0.3 / torch.linalg.eigvals(W).abs().max())
    xs = torch.randn(T, B, 2)
    hs = []
    with rd.attach(rnn) as probe:
        h, t = torch.zeros(1, B, H), 0
        while t < T:
            if kind == "cell":
                h = rnn(xs[t], h.squeeze(0)).unsqueeze(0)
                hs.append(h.detach()[0])
                t += 1
                continue
            n = 500 if kind == "chunks" and (t < 500 or t >= 1000) else 1
            out, h = rnn(xs[t : t + n], h.view(1, B, H))
            hs.extend(out.detach().unbind(0))
            t += n
        h.sum().backward()
    got = probe.hidden_grad_log10_norms()
    want = _log_space_truth(W.detach(), torch.stack(hs), torch.ones(B, H))
    assert torch.isfinite(got).all() and got[0].max() < -500  # far below float64 range
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * 700)


def test_jacobian_norms_over_per_step_calls_equal_autograd_products():
    """``jacobians="exact"`` on a GRU stepped by the user's loop: norms of ∂h_T/∂h_k over
    the joined calls, equal to products of per-step autograd Jacobians; NaN before a masked
    link (the user's transform is not a Jacobian the probe knows)."""
    torch.manual_seed(2)
    T, H = 8, 3
    gru = nn.GRU(2, H).double()
    xs = torch.randn(T, 1, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        with rd.attach(gru, jacobians="exact") as probe:
            h, hs = torch.zeros(1, 1, H, dtype=torch.float64), []
            for t in range(T):
                h = h * 0.5 if t == 3 else h  # a transform before step 3: products stop there
                hs.append(h)
                _, h = gru(xs[t : t + 1], h)
            h.sum().backward()
    got = probe.jacobian_log10_norms()[:, 0]
    assert torch.isnan(got[:3]).all()

    def step(t, s):
        return gru(xs[t : t + 1], s.view(1, 1, H))[1].view(H)

    prod = torch.eye(H, dtype=torch.float64)
    for k in range(T - 1, 2, -1):
        torch.testing.assert_close(got[k], torch.linalg.matrix_norm(prod, 2).log10(),
                                   rtol=1e-9, atol=1e-9)
        prev = hs[k].detach().view(H)
        prod = prod @ torch.autograd.functional.jacobian(lambda s, k=k: step(k, s), prev)


# --------------------------------------------------------------------------- which calls


def test_calls_no_gradient_reached_are_zero_and_other_forwards_are_left_out():
    """The loss reads only the first 3 of 6 steps: the later calls get no gradient at all, yet
    belong to the series (zeros, log10 -inf); a separate forward whose loss is kept but never
    backpropagated is not part of it."""
    torch.manual_seed(3)
    cell = nn.GRUCell(2, 3)
    xs = torch.randn(6, 2, 2)
    with rd.attach(cell) as probe:
        other = cell(xs[0]).sum()  # another forward, kept alive, never backpropagated
        h, outs = torch.zeros(2, 3), []
        for t in range(6):
            h = cell(xs[t], h)
            outs.append(h)
        sum(o.sum() for o in outs[:3]).backward()
    norms = probe.hidden_grad_log10_norms()
    assert norms.shape == (6, 2)
    assert torch.isfinite(norms[:3]).all() and torch.isneginf(norms[3:]).all()
    assert other.requires_grad


def test_in_place_change_of_a_recorded_state_warns_and_records_nothing():
    torch.manual_seed(4)
    cell = nn.LSTMCell(2, 3)
    xs = torch.randn(4, 2, 2)
    with rd.attach(cell) as probe, pytest.warns(ProbeWarning, match="in place"):
        h, c = torch.zeros(2, 3), torch.zeros(2, 3)
        loss = 0
        for t in range(4):
            h, c = cell(xs[t], (h, c))
            loss = loss + h.sum()
            h[0] = 0.0  # autograd allows it (h is not saved by this graph); values are gone
        loss.backward()
    with pytest.raises(RuntimeError, match="no backward pass"):
        probe.hidden_grads()


def test_a_failing_analysis_warns_instead_of_raising_into_backward(monkeypatch):
    from rnn_diag.probes import series

    def broken(*args, **kwargs):
        raise IndexError("simulated bug")

    monkeypatch.setattr(series, "analyse_step_calls", broken)
    gru = nn.GRU(2, 3)
    with rd.attach(gru), pytest.warns(ProbeWarning, match="simulated bug"):
        h = None
        for _ in range(3):
            out, h = gru(torch.randn(1, 2, 2), h)
        out.sum().backward()  # must not raise


def test_separate_sequences_in_one_backward_warn_and_are_concatenated():
    """A shared encoder run on two sequences (question and answer): one series of 5 + 4
    steps in call order, with a warning naming the module."""
    torch.manual_seed(5)
    enc = nn.GRU(2, 3)
    a, b = torch.randn(5, 2, 2), torch.randn(4, 2, 2)
    with rd.attach(nn.ModuleDict({"enc": enc})) as probe, pytest.warns(ProbeWarning,
                                                                      match="'enc'"):
        oa, _ = enc(a)
        ob, _ = enc(b)
        (oa[-1] * ob[-1]).sum().backward()
    assert probe.hidden_grads("enc").shape == (9, 2, 3)


def test_frame_and_summary_of_a_per_step_loop():
    """The frame has one row per step of the series, and a loop's profile is summarised like
    a fused module's."""
    torch.manual_seed(6)
    gru = nn.GRU(2, 4)
    with rd.attach(gru) as probe:
        h = None
        for _ in range(20):
            out, h = gru(torch.randn(1, 3, 2), h)
        out.sum().backward()
    df = probe.frame()
    assert sorted(df.t.unique()) == list(range(20))
    s = rd.gradient_summary(probe.hidden_grad_log10_norms().mean(1))
    assert s["verdict"] in ("vanishing", "stable", "exploding")
    assert s["anchor"] == 19 and not math.isnan(s["decay_per_step"])
    assert LN10 > 0


def test_chunks_and_single_steps_mixed_in_one_forward():
    """An LSTM run on a chunk of 4 steps, then one step at a time (3 calls), then a masked
    hand-over, then a chunk of 3: 11 steps whose totals equal the unrolled float64 truth; the
    immediate gradient is NaN exactly where a call's final state went on into a later call
    whose recursion is not joined to it (never a guess)."""
    torch.manual_seed(7)
    B = 2
    lstm = nn.LSTM(2, 3, num_layers=2).double()
    xs = torch.randn(11, B, 2, dtype=torch.float64)
    plan = [(0, 4, None), (4, 5, None), (5, 6, None), (6, 7, None), (7, 8, 0.5), (8, 11, None)]

    def run(module):
        state, loss = None, 0
        for lo, hi, scale in plan:
            if scale is not None:
                state = (state[0] * scale, state[1] * scale)
            out, state = module(xs[lo:hi]) if state is None else module(xs[lo:hi], state)
            loss = loss + (out.sin() * torch.arange(1, hi - lo + 1).view(-1, 1, 1)).sum()
        (loss + (state[0] ** 2).sum()).backward()

    probe = _probed_against_explicit(lstm, run, shape=(11, B, 3))
    nan_steps = torch.isnan(probe.immediate_grads(layer=1)).any(-1).any(-1)
    # only step 6, before the masked hand-over: the chunks and the one-step calls are joined
    # to each other through the state they return
    assert nan_steps.nonzero().flatten().tolist() == [6]


def test_recorded_calls_are_freed_with_their_graph():
    """A probe kept attached over many training steps holds nothing of old steps: the calls
    it recorded die with the user's graph (a hook-held record that kept graph tensors would
    form a cycle through autograd's C++ nodes that the collector cannot break)."""
    import gc

    from rnn_diag.probes.cell_chain import CellChain
    from rnn_diag.probes.fused import FusedCall

    def live() -> int:
        gc.collect()
        return sum(isinstance(o, (FusedCall, CellChain)) for o in gc.get_objects())

    lstm, cell = nn.LSTM(3, 4), nn.GRUCell(3, 4)
    custom = nn.Sequential(nn.Linear(7, 4), nn.Tanh())
    model = nn.ModuleDict({"lstm": lstm, "cell": cell, "custom": custom})

    def step():
        state, h, u, loss = None, torch.zeros(2, 4), torch.zeros(2, 4), 0
        for _ in range(6):
            out, state = lstm(torch.randn(1, 2, 3), state)
            h = cell(torch.randn(2, 3), h)
            u = custom(torch.cat([torch.randn(2, 3), u], -1))
            loss = loss + out.sum() + h.sum() + u.sum()
        loss.backward()
        lstm(torch.randn(4, 2, 3))  # a forward with grad on that is never backpropagated

    with rd.attach(model, modules=["lstm", "cell", "custom.1"]):
        step()
        after_one = live()
        for _ in range(10):
            step()
        assert live() <= after_one


def test_bidirectional_module_handing_its_state_on_warns_and_stays_exact():
    """A bidirectional GRU run on two chunks, the second from the first's h_n: the calls
    cannot be joined (the reverse direction runs against call order), so the probe says so;
    every step's total still equals what autograd delivers (truth: the unrolled reference
    on each chunk, with the second chunk's h0 gradient fed back into the first's h_n)."""
    torch.manual_seed(8)
    gru = nn.GRU(2, 3, bidirectional=True).double()
    a, b = torch.randn(4, 2, 2, dtype=torch.float64), torch.randn(3, 2, 2, dtype=torch.float64)
    with rd.attach(gru) as probe, pytest.warns(ProbeWarning, match="bidirectional"):
        oa, ha = gru(a)
        ob, hb = gru(b, ha)
        (oa.sin().sum() + ob.cos().sum() + (hb**2).sum()).backward()
    got = probe.hidden_grads(direction=0)
    assert got.shape == (7, 2, 3)
    # truth: the same two calls, every state retained through the reference unroll
    from reference import unroll_fused

    ra = unroll_fused(gru, a)
    rb = unroll_fused(gru, b, ra.h_n)  # its h0 is a fresh leaf: feed its gradient back below
    (ra.output.sin().sum() + rb.output.cos().sum() + (rb.h_n**2).sum()).backward(
        retain_graph=True)
    ra.h_n.backward(rb.initial[0].grad)
    for d in (0, 1):
        want = torch.cat([ra.traces[(0, d)].hidden_grads(), rb.traces[(0, d)].hidden_grads()])
        torch.testing.assert_close(probe.hidden_grads(direction=d), want, rtol=1e-9,
                                   atol=1e-12)


def test_a_signal_that_underflows_on_its_way_in_is_never_a_false_finite_number():
    """Two GRUs stepped together in float32, ``o2 = gru2(o1)``, ``y = head(o1 + o2)`` on the last
    step (a held-out reviewer's stacked model): gru1 forgets fast, so its own recursion
    carries little, while gru2 carries the signal back and hands it to gru1 at every step
    through o1 — faintly, until float32 underflows it. Truth: the same model in float64 with
    retain_grad on every returned state. Where the probe's float32 log10 norm is finite it must
    match the truth; where the truth is below what float32 carried in, it must read -inf and
    be counted in ``underflow_fraction``."""
    torch.manual_seed(9)
    T, B, H = 600, 2, 4
    gru1, gru2, head = nn.GRU(2, H), nn.GRU(H, H), nn.Linear(H, 1)
    with torch.no_grad():
        gru1.weight_hh_l0.mul_(0.2)
        gru1.bias_hh_l0.zero_()
        gru2.weight_hh_l0.mul_(3.0)
    xs = torch.randn(T, B, 2)

    def run(m1, m2, hd, x, retain):
        h1 = h2 = None
        outs = []
        for t in range(T):
            o1, h1 = m1(x[t : t + 1], h1)
            o2, h2 = m2(o1, h2)
            if retain:
                o1.retain_grad()
                h1.retain_grad()
            outs.append((o1, h1))
        hd(o1 + o2).sum().backward()
        return outs

    m64 = [m.double() for m in (copy.deepcopy(gru1), copy.deepcopy(gru2), copy.deepcopy(head))]
    outs = run(*m64, xs.double(), True)
    truth = torch.stack([_g(o)[0] + _g(h)[0] for o, h in outs])
    want = torch.linalg.vector_norm(truth, dim=-1).log10()
    assert want.min() < -60, "premise: the truth goes far below float32's range"

    model = nn.ModuleDict({"gru1": gru1, "gru2": gru2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        with rd.attach(model) as probe:
            run(gru1, gru2, head, xs, False)
    got = probe.hidden_grad_log10_norms("gru1")
    finite = torch.isfinite(got)
    assert finite[-20:].all()
    # float32's own precision: 1e-3 decades, 1e-2 within 100x of its smallest normal number
    tol = torch.where(want < -35.9, 1e-2, 1e-3)
    assert ((got - want).abs()[finite] <= tol[finite]).all()
    frame = probe.frame()
    under = frame[(frame.module == "gru1") & (frame.metric == "underflow_fraction")]
    assert under.value.max() > 0 and (~finite).any()


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_output_handed_on_as_the_next_state_is_joined(batch_first):
    """``out, _ = gru(x_t, h); h = out`` (a one-layer GRU's output is its state): the calls are
    joined like ``h = h_n``, without a warning. Totals equal retain_grad on every output; the
    immediate gradient equals what the loss reads from out_t directly (its own gradient,
    computed separately); the norms stay in log space."""
    torch.manual_seed(10)
    T, B, H = 12, 3, 4
    gru = nn.GRU(2, H, batch_first=batch_first).double()
    head = nn.Linear(H, 2).double()
    xs = torch.randn(T, B, 2, dtype=torch.float64)

    def step_in(t):
        return xs[t].unsqueeze(1) if batch_first else xs[t].unsqueeze(0)

    def as_state(out):
        return out.transpose(0, 1) if batch_first else out

    def as_rows(out):
        return out[:, 0] if batch_first else out[0]

    def run(retain):
        h, outs, loss = None, [], 0
        for t in range(T):
            out, _ = gru(step_in(t), h)
            if retain:
                out.retain_grad()
            outs.append(out)
            loss = loss + (head(as_rows(out)) ** 2).sum()
            h = as_state(out)
        loss.backward()
        return outs

    outs = run(True)
    want = torch.stack([as_rows(o.grad) for o in outs])
    direct = []
    for o in outs:
        leaf = as_rows(o).detach().requires_grad_()
        (head(leaf) ** 2).sum().backward()
        direct.append(leaf.grad)
    gru.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeWarning)
        with rd.attach(gru) as probe:
            run(False)
    torch.testing.assert_close(probe.hidden_grads(), want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(probe.immediate_grads(), torch.stack(direct), rtol=1e-7,
                               atol=1e-12)


class _DropoutCell(nn.Module):
    """The PyTorch "generating names" tutorial's pattern: dropout inside a custom cell."""

    def __init__(self):
        super().__init__()
        self.lin, self.drop = nn.Linear(3 + 4, 4), nn.Dropout(0.3)

    def forward(self, x, h):
        return self.drop(torch.tanh(self.lin(torch.cat([x, h], -1))))


class _StatefulCell(nn.Module):
    """A custom cell whose output depends on how often it ran: not a function of its inputs."""

    def __init__(self):
        super().__init__()
        self.lin, self.calls = nn.Linear(3 + 4, 4), 0

    def forward(self, x, h):
        self.calls += 1
        return torch.tanh(self.lin(torch.cat([x, h], -1))) * (1 + 0.1 * self.calls)


def _drive_custom(cell, xs, retain=False, seed=3):
    torch.manual_seed(seed)
    h, hs, loss = torch.zeros(2, 4, dtype=torch.float64), [], 0
    for t in range(xs.shape[0]):
        h = cell(xs[t], h)
        if retain:
            h.retain_grad()
        hs.append(h)
        loss = loss + (h**2).sum()
    loss.backward()
    return hs, torch.rand(3)


def test_custom_cell_with_dropout_is_replayed_exactly_and_keeps_the_rng_stream():
    """The analysis re-runs a custom cell step by step; it replays the random numbers each
    call drew, so dropout masks match (totals equal retain_grad) and the user's stream after
    the step is bitwise the unprobed one."""
    torch.manual_seed(11)
    cell = _DropoutCell().double().train()
    plain = copy.deepcopy(cell)
    xs = torch.randn(6, 2, 3, dtype=torch.float64)
    hs, after_plain = _drive_custom(plain, xs, retain=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeWarning)
        with rd.attach(cell, modules=[""]) as probe:
            _, after_probe = _drive_custom(cell, xs)
    torch.testing.assert_close(probe.hidden_grads(), torch.stack([h.grad for h in hs]),
                               rtol=1e-9, atol=1e-12)
    assert torch.equal(after_plain, after_probe)


def test_custom_cell_that_is_not_a_function_of_its_inputs_warns_and_records_nothing():
    cell = _StatefulCell().double()
    xs = torch.randn(5, 2, 3, dtype=torch.float64)
    with rd.attach(cell, modules=[""]) as probe, pytest.warns(ProbeWarning, match="pure"):
        _drive_custom(cell, xs)
    with pytest.raises(RuntimeError, match="no backward pass"):
        probe.hidden_grads()


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_checkpointed_steps(reentrant):
    """``h = checkpoint(cell, x_t, h)``: the non-reentrant form recomputes the cell inside
    backward, which the probe ignores, keeping the forward's record (exact, no warning); the
    reentrant form runs the forward without grad, so there is nothing to record: it warns,
    naming the module, instead of a partial answer."""
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(12)
    cell = nn.GRUCell(3, 4).double()
    xs = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)

    def run(retain):
        h, hs = torch.zeros(2, 4, dtype=torch.float64), []
        for t in range(6):
            h = checkpoint(cell, xs[t], h, use_reentrant=reentrant)
            if retain:
                h.retain_grad()
            hs.append(h)
        sum((q**2).sum() for q in hs).backward()
        return hs

    hs = run(True)
    want = torch.stack([h.grad for h in hs])
    if reentrant:
        with rd.attach(nn.ModuleDict({"cell": cell})) as probe, pytest.warns(
            ProbeWarning, match="'cell'.*use_reentrant=False"
        ):
            run(False)
        with pytest.raises(RuntimeError, match="no backward pass"):
            probe.hidden_grads()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeWarning)
        with rd.attach(cell) as probe:
            run(False)
    torch.testing.assert_close(probe.hidden_grads(), want, rtol=1e-9, atol=1e-12)


def test_autocast_and_non_cell_forms_warn_instead_of_recording():
    """Calls under autocast computed in reduced precision; the PyTorch tutorial's
    ``return output, hidden`` cell is not ``cell(x, state) -> state``: both warn with the
    reason and record nothing; the user's training runs unchanged."""

    class TutorialRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.i2h, self.h2o = nn.Linear(3 + 5, 5), nn.Linear(3 + 5, 2)

        def forward(self, input, hidden):
            combined = torch.cat((input, hidden), 1)
            return self.h2o(combined).log_softmax(1), self.i2h(combined)

    rnn = TutorialRNN()
    with rd.attach(rnn, modules=[""]), pytest.warns(ProbeWarning, match="cell\\(x_t, state\\)"):
        h = torch.zeros(1, 5)
        for _ in range(4):
            out, h = rnn(torch.randn(1, 3), h)
        out.sum().backward()

    lstm = nn.LSTM(3, 4)
    with rd.attach(lstm), pytest.warns(ProbeWarning, match="autocast"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.randn(5, 2, 3))
        out.float().sum().backward()
