"""PyTorch's recurrent modules, as rnn_diag reads them: kinds and weights per layer
(:mod:`~rnn_diag.modules.layers`) and the dynamics of a model's modules: weight spectra,
Lyapunov exponents, per-step linearisations (:mod:`~rnn_diag.modules.dynamics`)."""
