"""Recording a user's own training loop into a run folder (see :func:`rnn_diag.record`)."""

from .recorder import Recorder, record

__all__ = ["Recorder", "record"]
