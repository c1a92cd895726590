"""Module-facing dynamics: recurrent_spectra against numpy, and the module form of
lyapunov_spectrum against the callable form on PyTorch's own cells (Jacobians by torch.func)."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rnn_diag.modules.dynamics import (
    lyapunov_spectrum,
    module_linearisation,
    recurrent_spectra,
)

F64 = torch.float64
GATES = {nn.RNN: ["hh"], nn.GRU: ["r", "z", "n"], nn.LSTM: ["i", "f", "g", "o"],
         nn.RNNCell: ["hh"], nn.GRUCell: ["r", "z", "n"], nn.LSTMCell: ["i", "f", "g", "o"]}


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.GRU(8, 5))
        self.cell = nn.RNNCell(5, 3)
        self.head = nn.Linear(3, 2)


def test_recurrent_spectra_rows_and_values_match_numpy():
    torch.manual_seed(0)
    model = Model()
    df = recurrent_spectra(model)
    assert list(df.columns) == ["module", "layer", "direction", "gate", "index", "real", "imag",
                                "modulus", "singular_value"]
    expected_rows = 2 * 2 * 4 * 4 + 3 * 5 + 1 * 3
    assert len(df) == expected_rows
    named = dict(model.named_modules())
    for (name, layer, direction, gate), block_df in df.groupby(
        ["module", "layer", "direction", "gate"]
    ):
        m = named[name]
        H = m.hidden_size
        if isinstance(m, nn.RNNBase):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            W = getattr(m, "weight_hh" + sfx)
        else:
            assert layer == 0 and direction == 0
            W = m.weight_hh
        g = GATES[type(m)].index(gate)
        block = W.detach().double().numpy()[g * H : (g + 1) * H]
        assert len(block_df) == H
        assert block_df["index"].tolist() == list(range(H))
        ours = block_df["real"].to_numpy() + 1j * block_df["imag"].to_numpy()
        ref = np.linalg.eigvals(block)
        # same multiset, ours sorted by modulus
        assert np.all(np.diff(block_df["modulus"].to_numpy()) <= 1e-12)
        for z in ref:
            assert np.min(np.abs(ours - z)) < 1e-10
        np.testing.assert_allclose(block_df["modulus"], np.abs(ours), rtol=1e-12)
        np.testing.assert_allclose(
            block_df["singular_value"], np.linalg.svd(block, compute_uv=False), rtol=1e-10
        )
    assert set(df["module"]) == {"enc", "body.1", "cell"}


def test_recurrent_spectra_on_a_bare_module_and_errors():
    df = recurrent_spectra(nn.RNN(2, 6))
    assert len(df) == 6 and set(df["module"]) == {""} and set(df["gate"]) == {"hh"}
    with pytest.raises(ValueError, match="no recurrent module"):
        recurrent_spectra(nn.Linear(2, 2))
    # nn.LSTM(proj_size=P): one [P, P] block W_hr @ W_hh[g] per gate (values checked in
    # tests/dynamics/test_projected_lstm.py)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = recurrent_spectra(nn.ModuleDict({"a": nn.LSTM(2, 4, proj_size=2),
                                              "b": nn.GRUCell(2, 3)}))
    assert set(df["module"]) == {"a", "b"}
    assert df[df["module"] == "a"].groupby("gate").size().to_dict() == {
        "f": 2, "g": 2, "i": 2, "o": 2
    }


# ---------------------------------------------------------------- Lyapunov, module form


def cell_for(module, layer=0, direction=0):
    """PyTorch's own cell with the weights of one layer/direction of a fused module."""
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    I = getattr(module, "weight_ih" + sfx).shape[1]
    if isinstance(module, nn.LSTM):
        cell = nn.LSTMCell(I, module.hidden_size)
    elif isinstance(module, nn.GRU):
        cell = nn.GRUCell(I, module.hidden_size)
    else:
        cell = nn.RNNCell(I, module.hidden_size, nonlinearity=module.nonlinearity)
    cell = cell.double()
    with torch.no_grad():
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, p).copy_(getattr(module, p + sfx))
    return cell


def callable_step(cell):
    if isinstance(cell, nn.LSTMCell):
        H = cell.hidden_size
        return lambda s, x: torch.cat(cell(x, (s[:H], s[H:])))
    return lambda h, x: cell(x, h)


@pytest.mark.parametrize(
    "make",
    [lambda: nn.RNN(3, 6), lambda: nn.RNN(3, 6, nonlinearity="relu"), lambda: nn.GRU(3, 6),
     lambda: nn.LSTM(3, 5)],
    ids=["rnn_tanh", "rnn_relu", "gru", "lstm"],
)
def test_module_form_equals_callable_form_with_autograd_jacobians(make):
    torch.manual_seed(0)
    m = make().double()
    T = 120
    x = torch.randn(T, 3, dtype=F64)
    S = 2 * m.hidden_size if isinstance(m, nn.LSTM) else m.hidden_size
    h0 = 0.3 * torch.randn(S, dtype=F64)
    ours = lyapunov_spectrum(m, h0, x, warmup=20)
    ref = lyapunov_spectrum(callable_step(cell_for(m)), h0, x, warmup=20)
    assert ours.shape == (S,) and ours.dtype == F64
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


def test_layer_and_reverse_direction_of_a_deep_bidirectional_module():
    torch.manual_seed(1)
    m = nn.GRU(3, 4, num_layers=2, bidirectional=True).double()
    T = 80
    x = torch.randn(T, 1, 3, dtype=F64)
    # Reference trajectory of layer 1, from plain PyTorch modules: layer 0 as its own module.
    lower = nn.GRU(3, 4, bidirectional=True).double()
    with torch.no_grad():
        for name, p in lower.named_parameters():
            p.copy_(getattr(m, name))
        layer0_out, _ = lower(x)
    for direction in (0, 1):
        cell = cell_for(m, layer=1, direction=direction)
        inputs = layer0_out[:, 0]
        if direction == 1:
            inputs = inputs.flip(0)  # the reverse direction runs backwards in time
        ref = lyapunov_spectrum(callable_step(cell), torch.zeros(4, dtype=F64), inputs, k=3)
        ours = lyapunov_spectrum(m, None, x, layer=1, direction=direction, k=3)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)
    # the trajectories are the module's own outputs
    with torch.no_grad():
        top, _ = m(x)
    _, h_fwd = module_linearisation(m, x, layer=1, direction=0)
    _, h_rev = module_linearisation(m, x, layer=1, direction=1)
    torch.testing.assert_close(h_fwd, top[..., :4])
    torch.testing.assert_close(h_rev.flip(0), top[..., 4:])


def test_cell_modules_and_lstm_state_formats():
    torch.manual_seed(2)
    cell = nn.LSTMCell(2, 3).double()
    x = torch.randn(60, 2, dtype=F64)
    h, c = torch.randn(3, dtype=F64), torch.randn(3, dtype=F64)
    ref = lyapunov_spectrum(callable_step(cell), torch.cat([h, c]), x)
    for h0 in [(h, c), torch.cat([h, c]), (h[None], c[None]), torch.cat([h, c])[None]]:
        torch.testing.assert_close(lyapunov_spectrum(cell, h0, x), ref, rtol=0, atol=1e-9)
    # the fused LSTM with the same weights, h0 in the module's own layout [L*D, 1, H]
    fused = nn.LSTM(2, 3).double()
    with torch.no_grad():
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(fused, p + "_l0").copy_(getattr(cell, p))
    ours = lyapunov_spectrum(fused, (h.view(1, 1, 3), c.view(1, 1, 3)), x.unsqueeze(1))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)
    gru = nn.GRUCell(2, 4).double()
    torch.testing.assert_close(
        lyapunov_spectrum(gru, None, x, k=2),
        lyapunov_spectrum(callable_step(gru), torch.zeros(4, dtype=F64), x, k=2),
        rtol=0,
        atol=1e-9,
    )


def test_float32_module_and_zero_input_steps():
    torch.manual_seed(3)
    m = nn.RNN(2, 8)
    out = lyapunov_spectrum(m, steps=200, k=2)
    assert out.shape == (2,) and torch.isfinite(out).all()
    m64 = nn.RNN(2, 8).double()
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    torch.testing.assert_close(out, lyapunov_spectrum(m64, steps=200, k=2), rtol=0, atol=1e-4)


def test_float64_tangent_block_for_a_float32_module():
    torch.manual_seed(4)
    m = nn.RNN(3, 16)
    x = torch.randn(300, 3)
    m64 = nn.RNN(3, 16).double()
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    ref = lyapunov_spectrum(m64, inputs=x.double())
    out = lyapunov_spectrum(m, inputs=x, dtype=F64)
    assert out.dtype == F64
    # only the float32 trajectory differs from the reference
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_exploding_module_warns_and_returns_nan():
    m = nn.RNN(1, 4, nonlinearity="relu", bias=False).double()
    with torch.no_grad():
        m.weight_hh_l0.copy_(50 * torch.eye(4))
        m.weight_ih_l0.fill_(1.0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = lyapunov_spectrum(m, None, torch.ones(400, 1, dtype=F64))
    assert out.shape == (4,) and torch.isnan(out).all()


def test_errors():
    deep = nn.GRU(2, 3, num_layers=2)
    with pytest.raises(ValueError, match="layer="):
        lyapunov_spectrum(deep, None, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="direction"):
        lyapunov_spectrum(nn.GRU(2, 3), None, torch.zeros(5, 2), direction=1)
    with pytest.raises(ValueError, match=r"\[T, 2\]"):
        lyapunov_spectrum(nn.GRU(2, 3), None, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="h0"):
        lyapunov_spectrum(lambda h, x: h, None, steps=3)
    with pytest.raises(ValueError, match="modules only"):
        lyapunov_spectrum(lambda h, x: h, torch.ones(2), steps=3, layer=1)
    with pytest.raises(ValueError, match="h0"):
        lyapunov_spectrum(nn.LSTM(2, 3), torch.zeros(4), torch.zeros(5, 2))
    with pytest.raises(TypeError, match="callable"):
        lyapunov_spectrum(42, torch.ones(2), steps=3)
    assert math.isfinite(float(lyapunov_spectrum(nn.RNN(2, 3), None, torch.zeros(5, 2))[0]))
