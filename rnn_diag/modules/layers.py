"""What rnn_diag knows about PyTorch's recurrent modules: their kinds, their weights layer by
layer, and how to run one layer of a fused module on its own with the module's weights.

Shared by the probes (which recompute lower layers during backward) and by the module-level
dynamics (:mod:`rnn_diag.modules.dynamics`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..dynamics.cells import CellWeights

#: Module types found automatically; anything else must be named in ``attach(modules=)``.
RECURRENT_TYPES = (nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell)


def cell_kind(module: nn.Module) -> str | None:
    """"rnn_tanh", "rnn_relu", "gru", "lstm" for PyTorch's cells; None for a custom cell."""
    if isinstance(module, nn.LSTMCell):
        return "lstm"
    if isinstance(module, nn.GRUCell):
        return "gru"
    if isinstance(module, nn.RNNCell):
        return "rnn_relu" if module.nonlinearity == "relu" else "rnn_tanh"
    return None


FUSED_TYPES = (nn.RNN, nn.GRU, nn.LSTM)
CELL_TYPES = (nn.RNNCell, nn.GRUCell, nn.LSTMCell)


def module_kind(module: nn.RNNBase) -> str:
    """"rnn_tanh", "rnn_relu", "gru" or "lstm"."""
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    return "rnn_relu" if module.nonlinearity == "relu" else "rnn_tanh"


def output_size(module: nn.RNNBase) -> int:
    """Size of h (and of each direction's output): ``proj_size`` when set, else hidden_size."""
    return getattr(module, "proj_size", 0) or module.hidden_size


def state_size(module: nn.Module) -> int:
    """S, the size of one layer's full recurrent state: h (P entries with an LSTM projection),
    plus c (hidden_size) for an LSTM."""
    if not isinstance(module, FUSED_TYPES + CELL_TYPES):
        raise TypeError(f"state_size needs a PyTorch recurrent module, got "
                        f"{type(module).__name__}")
    h = getattr(module, "proj_size", 0) or module.hidden_size
    lstm = isinstance(module, (nn.LSTM, nn.LSTMCell))
    return h + (module.hidden_size if lstm else 0)


def layer_weights(module: nn.RNNBase, layer: int, direction: int) -> CellWeights:
    """The weights of one layer and direction, named as PyTorch names them."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    bias = module.bias
    weights = CellWeights(
        kind=module_kind(module),
        weight_ih=getattr(module, "weight_ih" + suffix),
        weight_hh=getattr(module, "weight_hh" + suffix),
        bias_ih=getattr(module, "bias_ih" + suffix) if bias else None,
        bias_hh=getattr(module, "bias_hh" + suffix) if bias else None,
    )
    if getattr(module, "proj_size", 0):
        weights.weight_hr = getattr(module, "weight_hr" + suffix)
    return weights


def single_layer_shadow(module: nn.RNNBase, input_size: int, batch_first: bool) -> nn.RNNBase:
    """A one-layer copy of ``module``'s kind and settings on the meta device (no memory, no
    RNG draws), to be run with real weights through ``functional_call``."""
    kwargs = dict(
        num_layers=1,
        bias=module.bias,
        batch_first=batch_first,
        bidirectional=module.bidirectional,
        device="meta",
    )
    if isinstance(module, nn.RNN):
        kwargs["nonlinearity"] = module.nonlinearity
    if getattr(module, "proj_size", 0):
        kwargs["proj_size"] = module.proj_size
    with torch.random.fork_rng(devices=[]):
        return type(module)(input_size, module.hidden_size, **kwargs)


def single_layer_params(module: nn.RNNBase, layer: int) -> dict[str, Tensor]:
    """The weights of layer ``layer`` (every direction) under a one-layer module's names."""
    params = {}
    for direction in range(2 if module.bidirectional else 1):
        w = layer_weights(module, layer, direction)
        sfx = "_l0" + ("_reverse" if direction else "")
        params["weight_ih" + sfx], params["weight_hh" + sfx] = w.weight_ih, w.weight_hh
        if module.bias:
            params["bias_ih" + sfx], params["bias_hh" + sfx] = w.bias_ih, w.bias_hh
        if w.weight_hr is not None:
            params["weight_hr" + sfx] = w.weight_hr
    return params


def make_shadows(module: nn.RNNBase) -> list[nn.RNNBase]:
    """Single-layer copies (see :func:`single_layer_shadow`), one per layer, used to recompute
    the lower layers' outputs with the real weights (and the top layer, to check a dropout
    replay)."""
    if module.num_layers == 1:
        return []
    directions = 2 if module.bidirectional else 1
    upper = directions * output_size(module)
    sizes = [module.input_size] + [upper] * (module.num_layers - 1)
    return [single_layer_shadow(module, size, module.batch_first) for size in sizes]


def run_layer(module: nn.RNNBase, shadow: nn.RNNBase, layer: int, inp, hx):
    """Layer ``layer`` (every direction) of ``module`` on ``inp``, with the module's weights,
    through a single-layer ``shadow`` (:func:`single_layer_shadow`, built for ``inp``'s size and
    layout) and ``functional_call``.

    Args:
        hx: the module's whole initial state (``[L*D, B, H]``, or an (h, c) pair), or None;
            the layer's rows are taken here.

    Returns:
        ``(output, final state)`` as the one-layer module returns them.
    """
    if hx is not None:
        D = 2 if module.bidirectional else 1
        rows = slice(layer * D, (layer + 1) * D)
        hx = tuple(s[rows] for s in hx) if isinstance(hx, tuple) else hx[rows]
    return functional_call(shadow, single_layer_params(module, layer), (inp, hx))
