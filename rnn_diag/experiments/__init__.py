"""Experiments: the config schema (:mod:`.config`), the trial grid (:mod:`.grid`), the models an
experiment trains, the training loop, execution backends and the result store.

Import the submodules directly (``from rnn_diag.experiments.config import load_config``); this
package imports nothing itself, so that loading a config does not pay for importing torch.
"""
