"""Probe.jacobian_log10_norms against autograd Jacobians of an explicitly unrolled float64 model.

The reference composes PyTorch's own cells (nn.RNNCell/GRUCell/LSTMCell with the module's
weights) from step k to the target and takes ``torch.autograd.functional.jacobian`` of the
final state with respect to the state at k, then its spectral norm with numpy. For a layer
above the first, its input sequence (the layer below's output) is held fixed, as documented.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rnn_diag as rd

CELLS = {nn.RNN: nn.RNNCell, nn.GRU: nn.GRUCell, nn.LSTM: nn.LSTMCell}


def _cell_for(module: nn.RNNBase, layer: int, direction: int) -> nn.Module:
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    in_size = module.input_size if layer == 0 else module.hidden_size * (
        2 if module.bidirectional else 1)
    kwargs = {"nonlinearity": module.nonlinearity} if isinstance(module, nn.RNN) else {}
    cell = CELLS[type(module)](in_size, module.hidden_size, **kwargs).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(module, name + sfx))
    return cell


def _layer_trajectory(module, x, layer, direction):
    """Inputs and states (h, or h|c) of one layer/direction in processing order, float64."""
    H = module.hidden_size
    inputs = x
    for lower in range(layer):
        outs = []
        for d in range(2 if module.bidirectional else 1):
            outs.append(_run(module, inputs, lower, d)[1])
        inputs = torch.cat([outs[0], outs[1].flip(0)] if len(outs) == 2 else outs, -1)
    seq = inputs if direction == 0 else inputs.flip(0)
    cell = _cell_for(module, layer, direction)
    lstm = isinstance(module, nn.LSTM)
    B = x.shape[1]
    state = (torch.zeros(B, H, dtype=torch.float64),) * (2 if lstm else 1)
    states = []
    with torch.no_grad():
        for t in range(seq.shape[0]):
            out = cell(seq[t], state if lstm else state[0])
            state = out if lstm else (out,)
            states.append(torch.cat(state, -1))
    return cell, seq, torch.stack(states)


def _run(module, x, layer, direction):
    """The cell and its h states, processing order."""
    cell, _, states = _layer_trajectory(module, x, layer, direction)
    return cell, states[..., : module.hidden_size]


def _reference_log10_norms(module, x, layer, direction, target):
    """[T, B] log10 ||∂s_target/∂s_k||_2 in processing order, NaN for k > target."""
    cell, seq, states = _layer_trajectory(module, x, layer, direction)
    H = module.hidden_size
    lstm = isinstance(module, nn.LSTM)
    T, B = seq.shape[:2]
    out = np.full((T, B), np.nan)
    for k in range(target + 1):
        for b in range(B):
            def compose(s, b=b, k=k):
                state = (s[:H], s[H:]) if lstm else s
                for t in range(k + 1, target + 1):
                    state = cell(seq[t, b], state)
                return torch.cat(state) if lstm else state

            J = torch.autograd.functional.jacobian(compose, states[k, b])
            out[k, b] = np.log10(np.linalg.norm(J.numpy(), 2))
    return out


def _probe(module, x, method="exact"):
    with rd.attach(module, jacobians=method) as probe:
        out, _ = module(x)
        out.sum().backward()
    return probe


@pytest.mark.parametrize("kind", [nn.RNN, nn.GRU, nn.LSTM], ids=["rnn", "gru", "lstm"])
@pytest.mark.parametrize(
    "layers,bidirectional,layer,direction",
    [(1, False, 0, 0), (2, True, 1, 0), (2, True, 0, 1)],
    ids=["L1", "L2-top", "L2-bottom-reverse"],
)
def test_exact_matches_autograd(kind, layers, bidirectional, layer, direction):
    torch.manual_seed(0)
    module = kind(3, 4, num_layers=layers, bidirectional=bidirectional).double()
    T, B = 7, 2
    x = torch.randn(T, B, 3, dtype=torch.float64)
    probe = _probe(module, x)
    got = probe.jacobian_log10_norms(layer=layer, direction=direction).numpy()
    want = _reference_log10_norms(module, x, layer, direction, T - 1)
    if direction == 1:
        want = want[::-1]  # processing order -> input order
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, equal_nan=True)


def test_explicit_target_and_frame_metrics():
    torch.manual_seed(1)
    module = nn.GRU(3, 4).double()
    T, B = 8, 2
    x = torch.randn(T, B, 3, dtype=torch.float64)
    probe = _probe(module, x)
    got = probe.jacobian_log10_norms(target=4).numpy()
    want = _reference_log10_norms(module, x, 0, 0, 4)
    np.testing.assert_allclose(got, want, atol=1e-9, equal_nan=True)
    frame = probe.frame()
    series = frame[frame.metric == "jacobian_max"].sort_values("t")["value"].to_numpy()
    full = _reference_log10_norms(module, x, 0, 0, T - 1)
    np.testing.assert_allclose(series, full.max(1), atol=1e-9)


def test_estimate_close_to_exact_on_a_long_sequence():
    """The forward-backward estimate is within 10% of exact for >= 95% of distances."""
    torch.manual_seed(2)
    module = nn.RNN(3, 32)
    with torch.no_grad():
        w = module.weight_hh_l0
        w.mul_(1.0 / torch.linalg.eigvals(w).abs().max())
    x = torch.randn(300, 2, 3)
    exact = _probe(module, x, "exact").jacobian_log10_norms()
    estimate = _probe(module, x, "estimate").jacobian_log10_norms()
    close = (estimate - exact).abs() <= np.log10(1.1)
    assert close.double().mean() >= 0.95


def test_cell_loop_and_custom_cell():
    torch.manual_seed(3)
    cell = nn.LSTMCell(3, 4).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    with rd.attach(cell, jacobians="exact") as probe:
        state, hs = None, []
        for t in range(6):
            state = cell(x[t], state)
            hs.append(state[0])
        torch.stack(hs).sum().backward()
    module = nn.LSTM(3, 4).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(module, name + "_l0").copy_(getattr(cell, name))
    want = _reference_log10_norms(module, x, 0, 0, 5)
    np.testing.assert_allclose(probe.jacobian_log10_norms().numpy(), want, atol=1e-9,
                               equal_nan=True)


def test_not_recorded_is_a_clear_error():
    rnn = nn.RNN(2, 3)
    with rd.attach(rnn) as probe:
        rnn(torch.randn(4, 1, 2))[0].sum().backward()
    with pytest.raises(RuntimeError, match="jacobians="):
        probe.jacobian_log10_norms()
    with pytest.raises(ValueError, match="jacobians"):
        rd.attach(rnn, jacobians="fast")


def test_packed_sequences_use_each_samples_last_step():
    torch.manual_seed(4)
    module = nn.RNN(3, 4).double()
    lengths = [6, 3]
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths)
    with rd.attach(module, jacobians="exact") as probe:
        out, _ = module(packed)
        nn.utils.rnn.pad_packed_sequence(out)[0].sum().backward()
    got = probe.jacobian_log10_norms().numpy()
    for b, length in enumerate(lengths):
        want = _reference_log10_norms(module, x[:length, b : b + 1], 0, 0, length - 1)[:, 0]
        np.testing.assert_allclose(got[:length, b], want, atol=1e-9)
        assert np.isnan(got[length:, b]).all()


@pytest.mark.parametrize("kind", [nn.GRU, nn.LSTM], ids=["gru", "lstm"])
def test_jacobian_samples_keeps_the_first_samples(kind):
    """With jacobian_samples=N only the first N samples are computed, and they are exact."""
    torch.manual_seed(5)
    module = kind(3, 4, num_layers=2, bidirectional=True).double()
    T, B, N = 6, 5, 2
    x = torch.randn(T, B, 3, dtype=torch.float64)
    with rd.attach(module, jacobians="exact", jacobian_samples=N) as probe:
        module(x)[0].sum().backward()
    got = probe.jacobian_log10_norms(layer=1, direction=1).numpy()
    assert got.shape == (T, N)
    want = _reference_log10_norms(module, x[:, :N], 1, 1, T - 1)[::-1]
    np.testing.assert_allclose(got, want, atol=1e-9, equal_nan=True)
    # other targets are recomputed for the same samples
    got4 = probe.jacobian_log10_norms(layer=1, direction=0, target=3).numpy()
    want4 = _reference_log10_norms(module, x[:, :N], 1, 0, 3)
    np.testing.assert_allclose(got4, want4, atol=1e-9, equal_nan=True)
    # the frame aggregates over those samples only
    frame = probe.frame()
    top = frame[(frame.layer == 0) & (frame.direction == 0) & (frame.metric == "jacobian_min")]
    full0 = _reference_log10_norms(module, x[:, :N], 0, 0, T - 1)
    np.testing.assert_allclose(top.sort_values("t")["value"], full0.min(1), atol=1e-9)


def test_jacobian_samples_with_packed_sequences_and_cells():
    torch.manual_seed(6)
    module = nn.RNN(3, 4).double()
    lengths = [6, 4, 3]
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths)
    with rd.attach(module, jacobians="exact", jacobian_samples=2) as probe:
        nn.utils.rnn.pad_packed_sequence(module(packed)[0])[0].sum().backward()
    got = probe.jacobian_log10_norms().numpy()
    assert got.shape == (6, 2)
    want = _reference_log10_norms(module, x[:4, 1:2], 0, 0, 3)[:, 0]
    np.testing.assert_allclose(got[:4, 1], want, atol=1e-9)
    assert np.isnan(got[4:, 1]).all()

    cell = nn.GRUCell(3, 4).double()
    with rd.attach(cell, jacobians="exact", jacobian_samples=1) as probe:
        h, hs = None, []
        for t in range(5):
            h = cell(x[t], h)
            hs.append(h)
        torch.stack(hs).sum().backward()
    fused = nn.GRU(3, 4).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(fused, name + "_l0").copy_(getattr(cell, name))
    want = _reference_log10_norms(fused, x[:5, :1], 0, 0, 4)
    np.testing.assert_allclose(probe.jacobian_log10_norms().numpy(), want, atol=1e-9,
                               equal_nan=True)
    with pytest.raises(ValueError, match="jacobian_samples"):
        rd.attach(cell, jacobian_samples=0)


def test_default_jacobian_samples_subsample_a_large_batch_with_one_warning():
    """GitHub issue 17: without jacobian_samples the norms cover the first 8 samples (to keep
    "estimate" cheap), with one ProbeWarning per probe saying how many of how many and how to
    change it; an explicit number or None gives no warning; a small batch is not subsampled."""
    import warnings

    from rnn_diag.probes.options import AUTO_JACOBIAN_SAMPLES

    assert AUTO_JACOBIAN_SAMPLES == 8
    torch.manual_seed(7)
    module = nn.RNN(3, 4).double()
    T, B = 7, 20
    x = torch.randn(T, B, 3, dtype=torch.float64)
    with pytest.warns(rd.ProbeWarning) as caught, rd.attach(module, jacobians="exact") as probe:
        for _ in range(2):  # two recorded backwards: still one warning
            module(x)[0].sum().backward()
    messages = [str(w.message) for w in caught if issubclass(w.category, rd.ProbeWarning)]
    assert len(messages) == 1
    assert "first 8 of 20 samples" in messages[0] and "jacobian_samples=None" in messages[0]
    got = probe.jacobian_log10_norms().numpy()
    assert got.shape == (T, 8)
    want = _reference_log10_norms(module, x[:, :8], 0, 0, T - 1)
    np.testing.assert_allclose(got, want, atol=1e-9)
    for samples, n in ((8, 8), (None, B)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", rd.ProbeWarning)
            with rd.attach(module, jacobians="estimate", jacobian_samples=samples) as explicit:
                module(x)[0].sum().backward()
        assert explicit.jacobian_log10_norms().shape == (T, n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rd.ProbeWarning)
        with rd.attach(module, jacobians="estimate") as small:
            module(x[:, :5])[0].sum().backward()
    assert small.jacobian_log10_norms().shape == (T, 5)
