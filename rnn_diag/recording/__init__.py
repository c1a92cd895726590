"""Recording a user's own training loop into a run folder (see :func:`rnn_diag.record`)."""
