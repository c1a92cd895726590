"""The experiment config: its schema, its loader and its validator (docs/design.md §2, §17).

A config is a YAML file, read with ``yaml.safe_load`` and validated into an
:class:`ExperimentConfig`::

    name: weather                 # required; letters, digits, "_", "." and "-" (a folder name)
    description: "..."            # optional
    task:
      name: weather               # weather | adding | copy | flipflop | delayed_xor
      seq_len: 10                 # required, > 0
      lag: 5                      # further keys are that task's options (rnn_diag.tasks)
    model:
      cell: rnn                   # rnn | gru | lstm | lru | mingru | ssm
      hidden_size: 10             # > 0 (d_model for lru, mingru, ssm)
      num_layers: 1               # > 0
      nonlinearity: tanh          # tanh | relu (relu only with cell rnn)
      init: default               # default | orthogonal | identity | normal (rnn, gru, lstm)
      weight_scale: null          # null, or the spectral radius (> 0) at initialisation: of
                                  # W_hh (rnn, gru, lstm), the scan's r_max (lru, mingru, ssm)
      # the scan cells' own settings; null = the layer's default; each only with its cells
      state_size: null            # lru: complex states per layer
      r_min: null                 # lru, mingru: smallest decay |a| at initialisation, [0, 1)
      max_phase: null             # lru: largest phase of the eigenvalues (radians)
      d_state: null               # ssm: states per channel
      expand: null                # ssm: inner width = expand x hidden_size
      d_conv: null                # ssm: causal convolution width
      dt_rank: null               # ssm: rank of the step size's projection
      dt_min: null                # ssm: smallest step size at initialisation
      dt_max: null                # ssm: largest step size at initialisation
    train:
      epochs: 100                 # > 0
      optimizer: Adam             # an optimizer class of torch.optim
      optimizer_args: {}          # its further keyword arguments (not lr: use train.lr)
      lr: 0.01                    # > 0
      batch_size: null            # null = full batch, or > 0
      clip_grad_norm: null        # null, or the max gradient norm (> 0)
      device: auto                # cpu | cuda | auto
      seed: 0                     # >= 0
      divergence:                 # when a finite loss counts as diverged; null: NaN/inf only
        chance_factor: 100        # training loss > 100 x task chance loss (null: off), or
        first_factor: 100         # > 100 x the trial's first-epoch loss (null: off),
        patience: 3               # for 3 epochs in a row (training stops), or at the last
      regularizer: []             # loss terms on the dynamics (rnn, gru, lstm), each with a kind:
                                  # flossing | spectral_norm_penalty | orthogonality_penalty
                                  # (see rnn_diag.experiments.config.regularizers)
      tbptt: null                 # null, or N: truncated BPTT, state detached every N steps
    probes:
      every: 1                    # gradient profile every N epochs (and always the last one)
      jacobians: off              # off | estimate | exact
      jacobian_samples: 64        # Jacobian norms on the first N samples; null = all
      lyapunov: [init, end]       # when: "init" (before training), "end", epoch numbers; []
      gradients: true             # record gradient profiles at all (false: train only)
      lyapunov_steps: null        # trajectory length; null = max(task.seq_len, 500)
      spectra: [init, end]        # when to record the spectra of W_hh; same format
      saturation: false
      fixed_points: []            # when to find fixed points at zero input (rnn, gru, lstm)
      fixed_point_states: 256     # initial states, drawn from validation trajectories
      fixed_point_noise: 0.5      # their Gaussian noise, relative to the states' std
      fixed_point_tol_q: 1.0e-12  # converged when q = 0.5 |F(h) - h|^2 <= this
      fixed_point_trajectories: 8 # validation sequences stored in state_trajectories
    sweep:                        # optional: dotted key -> non-empty list of values
      task.seq_len: [10, 100, 1000]
      model.weight_scale: [null, 0.5, 1.0, 1.5]
      remedy:                     # a named axis: name -> the settings it applies
        none: {}
        irnn: {model.nonlinearity: relu, model.init: identity}
        gru: {model.cell: gru}

Every section but ``name`` and ``task`` may be left out; every key has the default shown
(``task.seq_len`` excepted). Unknown keys are refused everywhere.

Numbers: a whole number is accepted where a number is expected; text that reads as a number is
accepted too (PyYAML reads ``1e-3`` as the text "1e-3": it needs ``1.0e-3`` for a float);
``true``/``false`` are not numbers.

Schedules (``probes.lyapunov``, ``probes.spectra``, ``probes.fixed_points``) are stored in a
canonical order without repeats: ``"init"``, then epoch numbers ascending, then ``"end"``.
Epoch ``k`` (1 ≤ k ≤ ``train.epochs``) means "after epoch k"; ``0`` is the moment before
training and is stored as ``"init"``. A single value stands for a one-element list; ``false``
or ``null`` for ``[]``.

Sweeps: every key is a dotted path to one setting (``task.seq_len``, ``task.lag``,
``model.cell``, ``train.optimizer_args.momentum``, ...); ``seed`` is short for ``train.seed``
(stored as ``train.seed``). A *named axis* is a key without a dot (``remedy``, ``problem``)
whose value is a mapping of names to settings (dotted keys and values, ``{}`` for none): one
value of the axis sets several keys together, as a remedy such as IRNN (relu and identity
init) needs. Its names are its values: trial labels and the ``trials.parquet`` column of that
name hold them, and each setting any of its names sets is a column too. A key may be set by
one axis only, and not swept as well. The trials are the Cartesian product of the lists (see
:func:`rnn_diag.experiments.grid.expand`), and every one is validated with the config, so a bad
value is refused before anything runs. When a sweep changes ``task.name``, base task options at
their default value are dropped for the other task, which then uses its own defaults; base
options set to another value are kept (and refused if that task has no such option). When a
sweep changes ``model.cell``, each trial keeps the base's scan settings (``state_size``,
``d_state``, ...) of its own cell and drops the others, so one base can set those of several
cells; a swept scan setting is not dropped (and refused with a cell it does not apply to).

Errors: :func:`load_config` and :func:`validate_config` raise :class:`ConfigError`, whose text
names the file and lists one problem per line: the key path, what was expected, the value given
and, from a file, its line.

The package, one concept a module:

- :mod:`.schema`: the pydantic models, the keys a sweep may name, :func:`with_params`,
  :func:`canonical_settings` and :func:`validate_config`;
- :mod:`.errors`: :class:`ConfigError` and the translation of pydantic's errors into plain
  English (key path, what was expected, the value given);
- :mod:`.yaml_lines`: :func:`load_config`, which reads the YAML keeping line numbers, so that
  each problem names its line.

The sweep's trials are built and validated, each once, by :mod:`rnn_diag.experiments.grid`.
Importing this package does not import torch (the optimizers are listed on first use).
"""

from .errors import ConfigError, ConfigProblem
from .schema import (
    SWEEP_ALIASES,
    DivergenceConfig,
    ExperimentConfig,
    ModelConfig,
    ProbesConfig,
    TaskConfig,
    TrainConfig,
    canonical_settings,
    sweep_keys,
    validate_config,
    with_params,
)
from .yaml_lines import load_config

# isort: split
# Last: the sweep module builds its trials from the schema above and registers their check
# with it (schema.register_trial_check), so that a config with a sweep validates every trial.
from .. import grid as _grid  # noqa: E402, F401

__all__ = [
    "SWEEP_ALIASES",
    "ConfigError",
    "ConfigProblem",
    "DivergenceConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ProbesConfig",
    "TaskConfig",
    "TrainConfig",
    "canonical_settings",
    "load_config",
    "sweep_keys",
    "validate_config",
    "with_params",
]
