"""Scan layers as rnn_diag reads them: which modules are diagonal scans, and how to describe one
call of a layer as the recurrence h_t = a_t ⊙ h_{t-1} + b_t (docs/design.md §23).

Two kinds of layer are understood:

* layers built on :class:`rnn_diag.scans.ScanLayer` (rnn_diag's LRU, MinGRU, SelectiveSSM, and
  a user's own layer that runs its recurrence through ``self.scan``, a
  :class:`~rnn_diag.scans.DiagonalScan`): the probe watches the scan call itself and never
  re-runs anything;
* any other class, registered from outside with :func:`register_scan` and an *adapter*: a
  function that computes, from the layer's own inputs and parameters, the decays, the drives,
  the initial state and how the output reads the states (:class:`ScanTrace`). Third-party
  layers work unchanged.

A :class:`rnn_diag.scans.ScanStack` counts as one module whose scan layers are its layers
0 … L−1, as ``num_layers`` does for ``nn.LSTM``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..scans.base import ScanLayer

__all__ = [
    "ScanTrace",
    "register_scan",
    "registered_adapter",
    "scan_layers",
    "unregister_scan",
]


@dataclass
class ScanTrace:
    """One call of a scan layer, described as a diagonal linear recurrence (batch-first).

    Attributes:
        decay: ``[B, T, *S]`` a_t, real or complex (the state's dtype); an expanded view of a
            constant decay is fine. Must not depend on the states.
        drive: ``[B, T, *S]`` b_t, same dtype.
        h0: ``[B, *S]`` the state before step 0, or None for zeros.
        readout: ``readout(h [B, T, *S]) -> output``: how the layer's output follows from the
            states with everything else held fixed, returning what the layer returned (a
            tensor, or a tuple whose tensors are compared and differentiated in order).
    """

    decay: Tensor
    drive: Tensor
    h0: Tensor | None
    readout: Callable[[Tensor], Any]


#: ``adapter(module, args, kwargs) -> ScanTrace``, called with the arguments of one forward.
Adapter = Callable[[nn.Module, tuple, dict], ScanTrace]


@dataclass(frozen=True)
class _Registration:
    adapter: Adapter
    eigenvalues: Callable[[nn.Module], Tensor] | None


_REGISTRY: dict[type, _Registration] = {}


def register_scan(cls: type, adapter: Adapter | None = None, *,
                  eigenvalues: Callable[[nn.Module], Tensor] | None = None):
    """Declare a layer class to be a diagonal scan, from outside the class.

    Args:
        cls: the ``nn.Module`` subclass (subclasses are covered too).
        adapter: ``adapter(module, args, kwargs) -> ScanTrace`` computing, from the layer's
            inputs and parameters of one forward call, the decays a_t, drives b_t, initial state
            and read-out (see :class:`ScanTrace`). Omit it to use ``register_scan`` as a
            decorator on the adapter.
        eigenvalues: optional ``eigenvalues(module) -> Tensor [*S]``, the decays at zero input
            (constant decays for LRU/S4D-like layers), for :func:`rnn_diag.recurrent_spectra`.

    The probe re-runs the adapter after each recorded backward (without grad, with the
    random state of the forward restored), checks that ``readout`` reproduces the layer's
    recorded output, and warns instead of recording when it does not.

    Example:
        >>> import torch
        >>> from rnn_diag.dynamics.linear_scan import linear_scan
        >>> class Leaky(nn.Module):          # h_t = 0.9 h_{t-1} + x_t, returns h
        ...     def forward(self, x):
        ...         return linear_scan(torch.full_like(x, 0.9), x)
        >>> @register_scan(Leaky)
        ... def leaky(module, args, kwargs):
        ...     x = args[0]
        ...     return ScanTrace(torch.full_like(x, 0.9), x, None, readout=lambda h: h)
        >>> registered_adapter(Leaky()) is leaky
        True
        >>> unregister_scan(Leaky)
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_scan needs an nn.Module subclass, got {cls!r}")
    if adapter is None:
        def decorate(fn: Adapter) -> Adapter:
            register_scan(cls, fn, eigenvalues=eigenvalues)
            return fn
        return decorate
    if not callable(adapter):
        raise TypeError(f"adapter must be callable(module, args, kwargs) -> ScanTrace, got "
                        f"{adapter!r}")
    _REGISTRY[cls] = _Registration(adapter, eigenvalues)
    return adapter


def unregister_scan(cls: type) -> None:
    """Forget a registration made with :func:`register_scan` (no error if there is none)."""
    _REGISTRY.pop(cls, None)


def _registration(module: nn.Module) -> _Registration | None:
    for klass in type(module).__mro__:
        if klass in _REGISTRY:
            return _REGISTRY[klass]
    return None


def registered_adapter(module: nn.Module) -> Adapter | None:
    """The adapter registered for ``module``'s class (or a base class), or None."""
    reg = _registration(module)
    return None if reg is None else reg.adapter


def registered_eigenvalues(module: nn.Module) -> Callable[[nn.Module], Tensor] | None:
    reg = _registration(module)
    return None if reg is None else reg.eigenvalues


def is_scan_layer(module: nn.Module) -> bool:
    """A :class:`~rnn_diag.scans.ScanLayer`, or an instance of a registered class."""
    return isinstance(module, ScanLayer) or _registration(module) is not None


def is_scan_stack(module: nn.Module) -> bool:
    """An :class:`rnn_diag.scans.ScanStack`: one module whose layers are scan layers."""
    from ..scans.stack import ScanStack

    return isinstance(module, ScanStack)


def scan_layers(module: nn.Module) -> list[nn.Module] | None:
    """The scan layers a module stands for, in layer order: a stack's layers, ``[module]`` for
    a scan layer, None for anything else."""
    if is_scan_stack(module):
        return list(module.scan_layers)
    if is_scan_layer(module):
        return [module]
    return None


def capture_decays(module: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    """Run ``module`` on ``x`` (batch-first, no grad) and return the decays ``[B, T, *S]`` of
    its scan layer ``layer`` during that forward (the first call, if several)."""
    seen: list[Tensor] = []
    if isinstance(layer, ScanLayer):
        def hook(mod, args, kwargs, out):
            if not seen:
                seen.append((args[0] if args else kwargs["a"]).detach())
        handle = layer.scan.register_forward_hook(hook, with_kwargs=True)
    else:
        adapter = registered_adapter(layer)

        def hook(mod, args, kwargs, out):
            if not seen:
                seen.append(adapter(mod, args, kwargs).decay.detach())
        handle = layer.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            module(x)
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{type(layer).__name__} did not run during {type(module).__name__}'s "
                           "forward")
    decay = seen[0]
    return decay


def scan_cell_name(module: nn.Module) -> str | None:
    """The runner's cell name of a scan module: a stack's ``cell``, "lru" / "mingru" / "ssm"
    for rnn_diag's layers, "scan" for any other scan layer; None when not a scan."""
    from ..scans import SCAN_CELLS

    layers = scan_layers(module)
    if layers is None:
        return None
    if is_scan_stack(module):
        return str(module.cell)
    names = {cls: name for name, cls in SCAN_CELLS.items()}
    return names.get(type(module), "scan")
