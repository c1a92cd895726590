"""The step maps of rnn_diag.modules.fixed_points against PyTorch's own modules, and the
Jacobians at the fixed points found against autograd's Jacobian of the module's real step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnn_diag as rd
from rnn_diag.modules.fixed_points import state_size, step_function

DT = torch.float64


def module_step(module, x, s, layer=0):
    """One step of the real module from states s [K, S] at input x [I] (float64 module)."""
    K = s.shape[0]
    xb = x.expand(K, -1)
    if isinstance(module, nn.LSTMCell):
        H = module.hidden_size
        h, c = module(xb, (s[:, :H], s[:, H:]))
        return torch.cat([h, c], -1)
    if isinstance(module, (nn.RNNCell, nn.GRUCell)):
        return module(xb, s)
    L = module.num_layers
    lstm = isinstance(module, nn.LSTM)
    P = getattr(module, "proj_size", 0) or module.hidden_size
    hs = torch.zeros(L, K, P, dtype=DT)
    cs = torch.zeros(L, K, module.hidden_size, dtype=DT)
    hs[layer] = s[:, :P]
    if lstm:
        cs[layer] = s[:, P:]
    # run `layer` alone: a single-layer module with that layer's weights
    single = type(module)(xb.shape[1], module.hidden_size, batch_first=True,
                          **({"proj_size": module.proj_size} if lstm and module.proj_size
                             else {}),
                          **({"nonlinearity": module.nonlinearity}
                             if isinstance(module, nn.RNN) else {})).to(DT)
    for name, p in single.named_parameters():
        p.data.copy_(getattr(module, name.replace("_l0", f"_l{layer}")))
    state = (hs[layer : layer + 1], cs[layer : layer + 1]) if lstm else hs[layer : layer + 1]
    _, final = single(xb.unsqueeze(1), state)
    if lstm:
        return torch.cat([final[0][0], final[1][0]], -1)
    return final[0]


MODULES = {
    "rnn": lambda: nn.RNN(3, 5, num_layers=2),
    "rnn_relu": lambda: nn.RNN(3, 5, nonlinearity="relu"),
    "gru": lambda: nn.GRU(3, 5, num_layers=2),
    "lstm": lambda: nn.LSTM(3, 5, num_layers=2),
    "lstm_proj": lambda: nn.LSTM(3, 6, proj_size=4),
    "rnncell": lambda: nn.RNNCell(3, 5),
    "grucell": lambda: nn.GRUCell(3, 5),
    "lstmcell": lambda: nn.LSTMCell(3, 5),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_step_and_jacobian_equal_the_module(name):
    torch.manual_seed(0)
    module = MODULES[name]().to(DT)
    layer = 1 if getattr(module, "num_layers", 1) > 1 else 0
    I = module.hidden_size if layer == 1 else 3
    if isinstance(module, nn.LSTM) and layer == 1:
        I = getattr(module, "proj_size", 0) or module.hidden_size
    x = torch.randn(I, dtype=DT)
    S = state_size(module)
    s = torch.randn(6, S, dtype=DT) * 0.5
    F = step_function(module, x, layer=layer if layer else None)
    with torch.no_grad():
        assert torch.allclose(F(s), module_step(module, x, s, layer), atol=1e-13)
    J = torch.func.vmap(torch.func.jacrev(lambda v: F(v[None])[0]))(s)
    for k in range(s.shape[0]):
        ref = torch.autograd.functional.jacobian(
            lambda v: module_step(module, x, v[None], layer)[0], s[k])
        assert torch.allclose(J[k], ref, atol=1e-12), k


def test_custom_cell_and_plain_map():
    torch.manual_seed(1)

    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2 + 4, 4)

        def forward(self, x, h):
            return torch.tanh(self.lin(torch.cat([x, h], -1)))

    cell = Cell()
    F = step_function(cell, torch.zeros(2))
    s = torch.randn(3, 4, dtype=DT)
    with torch.no_grad():
        ref = cell.double()(torch.zeros(3, 2, dtype=DT), s)
    assert torch.allclose(F(s), ref)
    G = step_function(lambda h: 0.5 * h)
    assert torch.equal(G(s), 0.5 * s)
    with pytest.raises(ValueError, match="needs inputs="):
        step_function(Cell())
    with pytest.raises(ValueError, match="bidirectional"):
        step_function(nn.GRU(2, 3, bidirectional=True))
    with pytest.raises(ValueError, match="constant input"):
        step_function(nn.GRU(2, 3), torch.zeros(5))


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm", "custom"])
def test_jacobians_at_the_fixed_points_equal_autograd_on_the_module(name):
    """rd.fixed_points on real modules: every converged point is a fixed point of the module's
    own step (q ≤ 1e-12), and its Jacobian is autograd's Jacobian of that step (1e-10)."""
    torch.manual_seed(2)
    if name == "custom":
        lin = nn.Linear(2 + 4, 4).to(DT)
        with torch.no_grad():
            lin.weight[:, 2:] *= 3  # strong recurrence: several fixed points

        def cell(x, h):
            return torch.tanh(lin(torch.cat([x, h], -1)))

        module, x, S = cell, torch.zeros(2, dtype=DT), 4
        step = lambda s: cell(x.expand(s.shape[0], -1), s)  # noqa: E731
    else:
        module = MODULES[name]().to(DT)
        with torch.no_grad():
            for p_name, p in module.named_parameters():
                if "weight_hh" in p_name:
                    p.mul_(4)
        x, S = torch.zeros(3, dtype=DT), state_size(module)
        step = lambda s: module_step(module, x, s)  # noqa: E731
    fps = rd.fixed_points(module, torch.randn(64, S, dtype=DT), x)
    assert bool(fps.converged.any())
    for k in torch.nonzero(fps.converged).flatten().tolist():
        point = fps.points[k]
        with torch.no_grad():
            assert float(0.5 * (step(point[None])[0] - point).pow(2).sum()) <= 1e-12
        ref = torch.autograd.functional.jacobian(lambda v: step(v[None])[0], point)
        assert torch.allclose(fps.jacobians[k], ref, atol=1e-10), k
