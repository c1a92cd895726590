"""rnn_diag: see how gradients flow, and fail to flow, through recurrent networks."""

from .probes import Probe, attach

__version__ = "0.1.0"

__all__ = ["Probe", "__version__", "attach"]
