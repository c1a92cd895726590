"""The software a run folder was written with, for its ``manifest.json``: the same keys for a
sweep (:mod:`.runner`) and a recording (:mod:`rnn_diag.recording`)."""

from __future__ import annotations

import platform

import torch

from .. import __version__

__all__ = ["versions"]


def versions() -> dict[str, str]:
    """``{"rnn_diag", "torch", "python", "platform"}``: their versions, and the OS line.

    >>> sorted(versions())
    ['platform', 'python', 'rnn_diag', 'torch']
    """
    return {
        "rnn_diag": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
