"""Finding the recurrent modules of a model and resolving the user's ``modules=`` argument."""

from __future__ import annotations

from torch import nn

from ..modules.layers import RECURRENT_TYPES
from ..modules.scans import is_scan_layer, is_scan_stack


def find_recurrent(model: nn.Module, modules=None) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of the modules to probe, in ``named_modules`` order.

    Args:
        model: the user's model (may itself be a recurrent module; its name is then "").
        modules: None to find every built-in recurrent module, or an iterable of qualified
            names and/or module objects inside ``model`` (custom cells are allowed here).

    Raises:
        ValueError: nothing recurrent found, a name that does not exist, or a module object
            that is not part of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"attach() needs an nn.Module, got {type(model).__name__}")
    named = dict(model.named_modules())
    if modules is None:
        found = {}
        for name, m in named.items():
            if any(name.startswith(f"{outer}.") or outer == "" for outer in found
                   if _is_scan(found[outer])):
                continue  # a layer of a scan stack (or inside a scan layer) already found
            if isinstance(m, RECURRENT_TYPES) or _is_scan(m):
                found[name] = m
        if not found:
            raise ValueError(
                f"no recurrent module found in {type(model).__name__}: rnn_diag looks for "
                "nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell, the scan layers "
                "of rnn_diag.scans and classes declared with rnn_diag.register_scan; name a "
                "custom cell with attach(model, modules=['name'])"
            )
        return found
    if isinstance(modules, (str, nn.Module)):
        modules = [modules]
    by_id = {id(m): name for name, m in named.items()}
    found = {}
    for item in modules:
        if isinstance(item, str):
            if item not in named:
                raise ValueError(
                    f"no module named {item!r} in {type(model).__name__}; "
                    f"known names: {sorted(n for n in named if n)}"
                )
            found[item] = named[item]
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise ValueError(f"{type(item).__name__} passed in modules= is not part of model")
            found[by_id[id(item)]] = item
        else:
            raise TypeError(f"modules= takes names or nn.Module objects, got {item!r}")
    if not found:
        raise ValueError("modules= is empty: name at least one module to probe")
    return found


def _is_scan(module: nn.Module) -> bool:
    return is_scan_stack(module) or is_scan_layer(module)
