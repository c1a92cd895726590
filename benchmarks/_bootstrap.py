"""Shared start-up of the benchmark scripts (run as ``python benchmarks/<name>.py``, so this
directory is on ``sys.path``)."""

import sys
from pathlib import Path


def import_rnn_diag():
    """Import rnn_diag, falling back to the source tree these scripts live in."""
    try:
        import rnn_diag
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import rnn_diag
    return rnn_diag
