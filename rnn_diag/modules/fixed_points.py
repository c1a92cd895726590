"""Fixed points of a model's recurrent modules: the step map F(h) = f(h, x) of a layer at a
constant input, written from the cell equations, and :func:`fixed_points`, which finds the
states with F(h) = h (:func:`rnn_diag.dynamics.fixed_points.find_fixed_points`).

The step maps are plain batched tensor functions ``[K, S] -> [K, S]`` in float64, so
``torch.func.vmap(torch.func.jacrev(...))`` gives every candidate's Jacobian at once (PyTorch's
recurrent modules themselves do not support ``vmap``). The state is h, or for an LSTM the joint
``[h | c]`` (S = 2H; P + H with ``proj_size = P``): a memory lives in c as much as in h.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..dynamics.cell_step import cell_step, input_preactivations
from ..dynamics.cells import CellWeights
from .layers import CELL_TYPES, FUSED_TYPES, cell_kind, layer_weights, state_size

__all__ = ["fixed_points", "state_size", "step_function"]

def _weights(module: nn.Module, layer: int | None) -> tuple[CellWeights, int]:
    """The layer's weights (float64 copies, detached) and its input size."""
    if isinstance(module, FUSED_TYPES):
        layer = 0 if layer is None else layer
        if not 0 <= layer < module.num_layers:
            raise ValueError(f"layer={layer} is out of range for {type(module).__name__} with "
                             f"{module.num_layers} layers")
        w = layer_weights(module, layer, 0)
    else:
        if layer not in (None, 0):
            raise ValueError(f"{type(module).__name__} has a single layer")
        w = CellWeights(cell_kind(module), module.weight_ih, module.weight_hh,
                        module.bias_ih, module.bias_hh)

    def f64(t):
        return None if t is None else t.detach().to(torch.float64)

    w = CellWeights(w.kind, f64(w.weight_ih), f64(w.weight_hh), f64(w.bias_ih), f64(w.bias_hh),
                    f64(w.weight_hr))
    return w, w.weight_ih.shape[1]


def _constant_input(inputs, size: int, device) -> Tensor:
    if inputs is None:
        return torch.zeros(size, dtype=torch.float64, device=device)
    x = torch.as_tensor(inputs).detach().to(dtype=torch.float64, device=device).reshape(-1)
    if x.shape[0] != size:
        raise ValueError(f"inputs must be one constant input [{size}], got shape "
                         f"{tuple(torch.as_tensor(inputs).shape)}")
    return x


def _standard_step(w: CellWeights, x: Tensor) -> Callable[[Tensor], Tensor]:
    """F(h) of a standard cell at the constant input x (PyTorch's equations and gate order)."""
    px = input_preactivations(w, x)  # [G*C], the same at every step

    def step(s: Tensor) -> Tensor:
        return cell_step(w, s, px, None)[0]

    return step


def step_function(step, inputs=None, layer: int | None = None) -> Callable[[Tensor], Tensor]:
    """The step map F: ``[K, S] -> [K, S]`` (float64, row by row) of a recurrent module at a
    constant input.

    Args:
        step: an ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (``layer=`` picks the layer; its input is
            ``inputs``), an ``nn.RNNCell``/``nn.GRUCell``/``nn.LSTMCell``, a custom cell
            module or function ``cell(x [K, I], h [K, S]) -> [K, S]`` (a float64 copy of a module
            is used), or a function ``F(h [K, S]) -> [K, S]`` of the state alone.
        inputs: the constant input ``[I]`` of that layer (None: zeros; custom cells: needs an
            input size, so pass the input, e.g. ``torch.zeros(I)``).
        layer: the layer of a multi-layer module (default 0).

    LSTM states are the joint ``[h | c]``; the returned map runs on the module's device.

    Example:
        >>> rnn = nn.RNN(2, 3)
        >>> F = step_function(rnn)
        >>> h = torch.zeros(4, 3, dtype=torch.float64)
        >>> torch.allclose(F(h), torch.tanh(rnn.bias_ih_l0 + rnn.bias_hh_l0).double().expand(4, 3))
        True
    """
    if isinstance(step, FUSED_TYPES + CELL_TYPES):
        if isinstance(step, FUSED_TYPES) and step.bidirectional:
            raise ValueError("fixed points of a bidirectional module are not defined (its "
                             "reverse direction runs against time)")
        w, input_size = _weights(step, layer)
        x = _constant_input(inputs, input_size, w.weight_hh.device)
        return _standard_step(w, x)
    if layer not in (None, 0):
        raise ValueError("layer= applies to nn.RNN/GRU/LSTM modules only")
    if isinstance(step, nn.Module):
        cell = copy.deepcopy(step).to(torch.float64)
        two_args = True
    elif callable(step):
        cell = step
        two_args = _positional_args(step) >= 2
    else:
        raise TypeError(f"fixed points need a recurrent module or a callable, got "
                        f"{type(step).__name__}")
    if not two_args:
        return cell
    if inputs is None:
        raise ValueError("a custom cell cell(x, h) needs inputs=: the constant input [I] "
                         "(e.g. torch.zeros(I) for none)")
    x = torch.as_tensor(inputs).detach().to(torch.float64).reshape(-1)

    def custom(h):
        out = cell(x.to(h.device).expand(h.shape[0], -1), h)
        if not isinstance(out, Tensor):
            raise TypeError("a custom cell for fixed points must return the new state as one "
                            "tensor [K, S] (concatenate tuple states)")
        return out

    return custom


def _positional_args(fn) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def fixed_points(step, initial_states, inputs=None, *, layer: int | None = None, **options):
    """Fixed points h* = F(h*) of a recurrent module at a constant input, and their stability.

    Args:
        step: see :func:`step_function` (modules, cells, custom cells, plain maps).
        initial_states: ``[K, S]`` candidates to start from (e.g.
            :func:`rnn_diag.dynamics.fixed_points.sample_states` of recorded states); for an
            LSTM ``[K, 2H]`` (h first) or a pair ``(h [K, H], c [K, H])``.
        inputs: the constant input ``[I]`` (None: zeros).
        layer: the layer of a multi-layer module.
        **options: :func:`rnn_diag.dynamics.fixed_points.find_fixed_points`'s (``tol_q``,
            ``tol_unique``, ``max_iters``, ``method``, ...).

    Returns:
        :class:`rnn_diag.dynamics.fixed_points.FixedPoints`, in float64, on the module's device.

    Example:
        >>> torch.manual_seed(0) and None
        >>> rnn = nn.RNN(1, 2)
        >>> fps = fixed_points(rnn, torch.randn(16, 2))
        >>> bool(fps.converged.any())
        True
    """
    from ..dynamics.fixed_points import find_fixed_points

    F = step_function(step, inputs, layer)
    if isinstance(initial_states, (tuple, list)):
        initial_states = torch.cat([torch.as_tensor(s) for s in initial_states], -1)
    states = torch.as_tensor(initial_states).detach().to(torch.float64)
    if isinstance(step, nn.Module):
        param = next(step.parameters(), None)
        if param is not None:
            states = states.to(param.device)
    if isinstance(step, FUSED_TYPES + CELL_TYPES):
        expected = state_size(step)
        if states.dim() != 2 or states.shape[1] != expected:
            what = "[h | c] " if isinstance(step, (nn.LSTM, nn.LSTMCell)) else ""
            raise ValueError(f"initial_states must be [K, {expected}] {what}for "
                             f"{type(step).__name__}, got {tuple(states.shape)}")
    return find_fixed_points(F, states, **options)
