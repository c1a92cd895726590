"""Integrations with the tools people already train with: Lightning, TensorBoard and W&B.

Each lives in its own module (``rnn_diag.integrations.lightning``, ``.tensorboard``,
``.wandb``) and needs its optional extra (``pip install 'rnn_diag[lightning]'``, ...); importing
one without its package raises an ImportError that names the extra to install.
"""

from __future__ import annotations

import importlib


def require(package: str, extra: str):
    """Import ``package``, or raise ImportError naming ``pip install 'rnn_diag[extra]'``."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"rnn_diag.integrations.{extra} needs the package {package!r}: "
            f"pip install 'rnn_diag[{extra}]'"
        ) from exc
