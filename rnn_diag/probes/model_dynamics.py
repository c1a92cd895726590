"""Moved: :mod:`rnn_diag.modules.dynamics` (the dynamics of a model's recurrent modules is not a
probe). This name keeps working, with a DeprecationWarning."""

import warnings

from ..modules.dynamics import *  # noqa: F403
from ..modules.dynamics import __all__  # noqa: F401

warnings.warn(
    "rnn_diag.probes.model_dynamics moved to rnn_diag.modules.dynamics; import from there "
    "(or use rd.recurrent_spectra / rd.lyapunov_spectrum)",
    DeprecationWarning,
    stacklevel=2,
)
