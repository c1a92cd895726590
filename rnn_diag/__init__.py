"""rnn_diag: see how gradients flow, and fail to flow, through recurrent networks.

Public API (imported lazily, so ``rnn-diag --help`` does not pay for importing torch):

    attach(model, modules=None, every=1) -> Probe
    Probe
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {"attach": ".probes", "Probe": ".probes"}

__all__ = ["Probe", "__version__", "attach"]

if TYPE_CHECKING:
    from .probes import Probe, attach


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rnn_diag' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
