"""Lifecycle of a Probe: attaching, recording, detaching, errors, references.

The checks compare against the model's own hook dictionaries, Python's garbage collector and
the known number/scale of backward passes, never against the probe's own bookkeeping alone.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import rnn_diag as rd
from rnn_diag import Probe

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _hook_snapshot(model: nn.Module):
    """Keys of every hook dictionary of every submodule (and of the global module hooks)."""
    snap = {
        (name, attr): tuple(getattr(m, attr, {}).keys())
        for name, m in model.named_modules()
        for attr in HOOK_DICTS
    }
    g = nn.modules.module
    for attr in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        snap[("<global>", attr)] = tuple(getattr(g, attr, {}).keys())
    return snap


class Net(nn.Module):
    """A GRU followed by a linear head."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


class CellNet(nn.Module):
    """A loop over an nn.LSTMCell."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(3, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        state = None
        hs = []
        for t in range(x.shape[0]):
            state = self.cell(x[t]) if state is None else self.cell(x[t], state)
            hs.append(state[0])
        return self.head(torch.stack(hs))


class TwoRNNs(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(3, 4)
        self.dec = nn.GRU(4, 5)

    def forward(self, x):
        out, _ = self.enc(x)
        out, _ = self.dec(out)
        return out


MODELS = [pytest.param(Net, id="fused-gru"), pytest.param(CellNet, id="lstmcell-loop")]


def _step(model, x, scale=1.0, **backward_kwargs):
    loss = model(x).sum() * scale
    loss.backward(**backward_kwargs)
    return loss


def _x(T=6, B=2):
    return torch.randn(T, B, 3)


# --------------------------------------------------------------------------- hooks


@pytest.mark.parametrize("make", MODELS)
def test_detach_removes_every_hook_and_stops_recording(make):
    """After ``detach()`` every hook dictionary is as before attach, and further forward /
    backward passes change neither the frame nor the stored gradients."""
    torch.manual_seed(0)
    model = make()
    before = _hook_snapshot(model)
    probe = rd.attach(model)
    assert _hook_snapshot(model) != before, "test premise: attach installs hooks"
    _step(model, _x())
    frame = probe.frame()
    grads = probe.hidden_grads().clone()
    probe.detach()
    assert _hook_snapshot(model) == before

    _step(model, _x(), scale=3.0)  # would change every recorded value if still recording
    after = probe.frame()
    assert after["iteration"].nunique() == 1
    assert after.equals(frame)
    assert torch.equal(probe.hidden_grads(), grads)


def test_detach_twice_is_harmless():
    """``detach()`` after leaving the ``with`` block (which already detached) does not raise."""
    model = Net()
    before = _hook_snapshot(model)
    with rd.attach(model) as probe:
        _step(model, _x())
    probe.detach()
    assert _hook_snapshot(model) == before


@pytest.mark.parametrize("make", MODELS)
def test_hooks_removed_when_with_block_raises(make):
    """An exception inside ``with rd.attach(model)`` propagates unchanged and the hooks are gone
    afterwards."""
    model = make()
    before = _hook_snapshot(model)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), rd.attach(model):
        model(_x())  # forward done, backward never run
        raise Boom
    assert _hook_snapshot(model) == before


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("make", MODELS)
def test_detached_probe_keeps_no_reference_to_the_model(make):
    """Once detached, the probe must not keep the model (or its parameters) alive: after
    deleting the model and every tensor that came from it, a weakref to the model is dead while
    the probe object is alive, and the probe's recorded results stay readable."""
    model = make()
    ref = weakref.ref(model)
    x = _x()
    with rd.attach(model) as probe:
        loss = _step(model, x)
    del model, loss, x
    gc.collect()
    assert ref() is None, (
        f"model still alive; referrers: {[type(r) for r in gc.get_referrers(ref())]}"
    )
    assert isinstance(probe, Probe)
    assert probe.hidden_grads().shape == (6, 2, 5)
    assert len(probe.frame()) > 0


# --------------------------------------------------------------------------- what is recorded


def test_forward_under_no_grad_records_nothing():
    """A forward under ``torch.no_grad()`` (e.g. evaluation) raises nothing and records
    nothing: the frame is empty and gradients are not available."""
    model = Net()
    with rd.attach(model) as probe, torch.no_grad():
        model(_x())
    assert len(probe.frame()) == 0
    with pytest.raises(RuntimeError):
        probe.hidden_grads()


def test_gradients_before_any_backward_raise_runtime_error():
    """Asking for gradients before any backward (none at all, or a forward without backward)
    raises RuntimeError rather than returning stale or empty tensors."""
    model = Net()
    probe = rd.attach(model)
    try:
        for ask in (probe.hidden_grads, probe.immediate_grads, probe.hidden_grad_log10_norms):
            with pytest.raises(RuntimeError):
                ask()
        model(_x())
        for ask in (probe.hidden_grads, probe.immediate_grads, probe.hidden_grad_log10_norms):
            with pytest.raises(RuntimeError):
                ask()
        assert len(probe.frame()) == 0
    finally:
        probe.detach()


def test_retain_graph_backward_twice_records_two_equal_iterations():
    """``backward(retain_graph=True)`` twice on the same graph is two backward passes with the
    same dL/dh_t: two iterations in the frame, with equal values, and equal tensors."""
    torch.manual_seed(1)
    model = Net()
    with rd.attach(model) as probe:
        loss = model(_x()).pow(2).sum()
        loss.backward(retain_graph=True)
        first = probe.hidden_grads().clone()
        first_imm = probe.immediate_grads().clone()
        loss.backward(retain_graph=True)
    assert torch.equal(probe.hidden_grads(), first)
    assert torch.equal(probe.immediate_grads(), first_imm)
    frame = probe.frame()
    iterations = sorted(frame["iteration"].unique())
    assert len(iterations) == 2
    key = ["module", "layer", "direction", "state", "t", "metric"]
    a = frame[frame.iteration == iterations[0]].sort_values(key).reset_index(drop=True)
    b = frame[frame.iteration == iterations[1]].sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())


def test_every_n_records_the_first_and_every_nth_backward():
    """``every=3`` with 7 backward passes records passes 1, 4 and 7. Each pass i scales the
    loss by i, so the gradient norms identify which passes were recorded: the recorded
    log10 norms must be those of passes 1, 4 and 7 (offsets log10(4), log10(7) from pass 1),
    and the latest tensors are those of pass 7 even after an unrecorded 8th pass."""
    torch.manual_seed(2)
    model = Net()
    x = _x()
    with rd.attach(model, every=3) as probe:
        for i in range(1, 8):
            _step(model, x, scale=float(i))
        latest = probe.hidden_grads().clone()
        _step(model, x, scale=8.0)  # pass 8: not recorded
    assert torch.equal(probe.hidden_grads(), latest)

    frame = probe.frame()
    iterations = sorted(frame["iteration"].unique())
    assert len(iterations) == 3
    # Documented: index among all backward passes (0, 3, 6); an index among recorded passes
    # (0, 1, 2) would also be a consistent convention.
    assert iterations in ([0, 3, 6], [0, 1, 2]), iterations
    rows = frame[(frame.metric == "total_mean") & (frame.t == 0)].sort_values("iteration")
    offsets = rows["value"].to_numpy() - rows["value"].to_numpy()[0]
    np.testing.assert_allclose(offsets, np.log10([1.0, 4.0, 7.0]), atol=1e-5)


def test_every_must_be_a_positive_integer():
    """``every=0`` (or negative) cannot select any backward pass: refuse it."""
    with pytest.raises(ValueError, match="every"):
        rd.attach(Net(), every=0)


# --------------------------------------------------------------------------- API shape


def test_context_manager_yields_the_attached_probe_and_results_outlive_it():
    """``with p as q`` gives back p itself; gradients of the last backward stay readable after
    the block exits (the block only detaches)."""
    model = Net()
    p = rd.attach(model)
    with p as q:
        assert q is p
        _step(model, _x())
    assert p.hidden_grads().shape == (6, 2, 5)
    assert p.modules == ["rnn"]


def test_attach_to_model_itself_names_it_empty_string():
    """When the model is itself the recurrent module its name is ""."""
    rnn = nn.LSTM(3, 4)
    with rd.attach(rnn) as probe:
        out, _ = rnn(_x())
        out.sum().backward()
    assert probe.modules == [""]
    assert probe.hidden_grads().shape == probe.hidden_grads("").shape == (6, 2, 4)


def test_model_without_recurrent_module_is_refused():
    """Nothing to probe is a user error, reported at attach with a clear message."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    before = _hook_snapshot(model)
    with pytest.raises(ValueError, match=r"(?i)recurrent|RNN"):
        rd.attach(model)
    assert _hook_snapshot(model) == before


def test_module_none_with_two_modules_lists_both_names():
    """``module=None`` is ambiguous with two recurrent modules: ValueError naming both; an
    explicit name works for each."""
    model = TwoRNNs()
    with rd.attach(model) as probe:
        model(_x()).sum().backward()
    assert probe.modules == ["enc", "dec"]
    with pytest.raises(ValueError) as info:
        probe.hidden_grads()
    assert "enc" in str(info.value) and "dec" in str(info.value)
    assert probe.hidden_grads("enc").shape == (6, 2, 4)
    assert probe.hidden_grads("dec").shape == (6, 2, 5)
    assert probe.hidden_grads(model.dec).shape == (6, 2, 5)


def test_unknown_module_name_is_refused_listing_known_names():
    """A name that is not probed raises ValueError/KeyError that lists the probed names."""
    model = TwoRNNs()
    with rd.attach(model) as probe:
        model(_x()).sum().backward()
    with pytest.raises((ValueError, KeyError)) as info:
        probe.hidden_grads("decoder")
    assert "enc" in str(info.value) and "dec" in str(info.value)


def test_unknown_layer_or_direction_is_refused():
    """Asking for layer 1 of a one-layer module, or direction 1 of a unidirectional one, is an
    error, not a silent fallback to layer 0."""
    rnn = nn.GRU(3, 4)
    with rd.attach(rnn) as probe:
        out, _ = rnn(_x())
        out.sum().backward()
    with pytest.raises((ValueError, KeyError, IndexError)):
        probe.hidden_grads(layer=1)
    with pytest.raises((ValueError, KeyError, IndexError)):
        probe.hidden_grads(direction=1)
    with pytest.raises((ValueError, KeyError)):
        probe.hidden_grads(state="c")  # a GRU has no cell state
