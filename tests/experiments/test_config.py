"""The experiment config: defaults, round trips, and an error message for every kind of mistake
that names the file, the key path and the value given."""

import copy
import pickle
from pathlib import Path

import pytest
import yaml

from rnn_diag.experiments.config import (
    ConfigError,
    ExperimentConfig,
    TaskConfig,
    canonical_settings,
    load_config,
    validate_config,
    with_params,
)

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "name": "demo",
    "task": {"name": "weather", "seq_len": 10},
}

FULL = """\
name: weather-full
description: "every key written out"
task:
  name: weather
  seq_len: 10
  lag: 3
  p: 0.5
model:
  cell: rnn
  hidden_size: 10
  num_layers: 1
  nonlinearity: tanh
  init: default
  weight_scale: null
train:
  epochs: 100
  optimizer: Adam
  optimizer_args: {betas: [0.9, 0.99]}
  lr: 0.01
  batch_size: null
  clip_grad_norm: null
  device: auto
  seed: 0
probes:
  every: 1
  jacobians: off
  lyapunov: [init, end]
  lyapunov_steps: null
  spectra: [init, end]
  saturation: false
sweep:
  task.seq_len: [10, 100, 1000]
  model.weight_scale: [null, 0.5, 1.0, 1.5]
"""


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def merged(**sections):
    """BASE with the given sections merged in (a section of None is removed)."""
    data = copy.deepcopy(BASE)
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def refused(tmp_path, data) -> ConfigError:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message.splitlines()[0]
    assert "pydantic" not in message and "Input should" not in message
    assert "Traceback" not in message
    return info.value


# ---------------------------------------------------------------------------------------------
# valid configs


def test_minimal_config_gets_every_default():
    cfg = validate_config(copy.deepcopy(BASE))
    assert cfg.description is None
    assert cfg.task.name == "weather" and cfg.task.seq_len == 10
    assert cfg.task.options == {"n_days": 1500, "data_seed": 42, "lag": None, "p": 0.0,
                                "val_fraction": 0.2}
    assert cfg.model.model_dump() == {"cell": "rnn", "hidden_size": 10, "num_layers": 1,
                                      "nonlinearity": "tanh", "init": "default",
                                      "weight_scale": None, "state_size": None,
                                      "r_min": None, "max_phase": None, "d_state": None,
                                      "expand": None, "d_conv": None, "dt_rank": None,
                                      "dt_min": None, "dt_max": None}
    assert cfg.train.model_dump() == {"epochs": 100, "optimizer": "Adam", "optimizer_args": {},
                                      "lr": 0.01, "batch_size": None, "clip_grad_norm": None,
                                      "device": "auto", "seed": 0,
                                      "divergence": {"chance_factor": 100.0,
                                                     "first_factor": 100.0, "patience": 3},
                                      "regularizer": [], "tbptt": None}
    assert cfg.probes.model_dump() == {"every": 1, "jacobians": "off", "jacobian_samples": 64,
                                       "lyapunov": ["init", "end"], "lyapunov_steps": None,
                                       "gradients": True,
                                       "spectra": ["init", "end"], "saturation": False,
                                       "fixed_points": [], "fixed_point_states": 256,
                                       "fixed_point_noise": 0.5, "fixed_point_tol_q": 1e-12,
                                       "fixed_point_trajectories": 8}
    assert cfg.sweep == {}


def test_full_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.name == "weather-full" and cfg.description == "every key written out"
    assert cfg.task.options["lag"] == 3 and cfg.task.options["p"] == 0.5
    assert cfg.task.options["n_days"] == 1500  # a default filled in from the task's options
    assert cfg.train.optimizer_args == {"betas": [0.9, 0.99]}
    assert cfg.probes.jacobians == "off"
    assert cfg.sweep == {"task.seq_len": [10, 100, 1000],
                         "model.weight_scale": [None, 0.5, 1.0, 1.5]}
    dumped = cfg.model_dump()
    # the task serialises flat, as in the file
    assert dumped["task"] == {"name": "weather", "seq_len": 10, "n_days": 1500, "data_seed": 42,
                              "lag": 3, "p": 0.5, "val_fraction": 0.2}
    assert validate_config(dumped) == cfg
    again = load_config(write(tmp_path, yaml.safe_dump(dumped), "again.yaml"))
    assert again == cfg
    assert ExperimentConfig.model_validate_json(cfg.model_dump_json()) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.name


def test_task_options_can_be_given_nested():
    a = TaskConfig(name="adding", seq_len=20, options={"n_train": 50})
    b = TaskConfig.model_validate({"name": "adding", "seq_len": 20, "n_train": 50})
    assert a == b and a.options == {"n_train": 50, "n_val": 200}
    assert a.model_dump() == {"name": "adding", "seq_len": 20, "n_train": 50, "n_val": 200}
    with pytest.raises(ConfigError, match="given twice"):
        validate_config(merged(task={"n_train": 5, "options": {"n_train": 6}}))


def test_yaml_off_means_off_and_on_is_refused(tmp_path):
    text = "name: x\ntask: {name: adding, seq_len: 5}\nprobes: {jacobians: off}\n"
    assert load_config(write(tmp_path, text)).probes.jacobians == "off"
    error = refused(tmp_path, text.replace("off", "on"))
    assert "probes.jacobians" in str(error) and "true" in str(error)
    assert "estimate" in str(error)


def test_numbers_written_as_yaml_text_are_read():
    # PyYAML reads 1e-3 as the text "1e-3"
    cfg = validate_config(yaml.safe_load("name: x\ntask: {name: adding, seq_len: 5}\n"
                                         "train: {lr: 1e-3, clip_grad_norm: 1}\n"))
    assert cfg.train.lr == 0.001 and cfg.train.clip_grad_norm == 1.0


def test_schedules_are_canonical():
    probes = {"lyapunov": ["end", 5, "init", 0, 5], "spectra": "end"}
    cfg = validate_config(merged(probes=probes, train={"epochs": 10}))
    assert cfg.probes.lyapunov == ["init", 5, "end"]  # 0 is "init", repeats dropped
    assert cfg.probes.spectra == ["end"]
    assert validate_config(merged(probes={"lyapunov": []})).probes.lyapunov == []


def test_seed_is_an_alias_of_train_seed():
    cfg = validate_config(merged(sweep={"model.cell": ["rnn", "gru"], "seed": [0, 1]}))
    assert list(cfg.sweep) == ["model.cell", "train.seed"]
    assert with_params(cfg, {"seed": 7}).train.seed == 7
    error = pytest.raises(ConfigError, validate_config,
                          merged(sweep={"seed": [0], "train.seed": [1]})).value
    assert "train.seed" in str(error) and "twice" in str(error)


def test_canonical_settings_ignore_name_order_and_spelling():
    a = validate_config(merged(train={"lr": "1e-3", "seed": 2}, description="one"))
    b = validate_config({"train": {"seed": 2, "lr": 0.001}, "name": "other",
                         "task": {"seq_len": 10, "name": "weather", "n_days": 1500}})
    assert canonical_settings(a) == canonical_settings(b)
    assert canonical_settings(a) != canonical_settings(validate_config(merged()))


def test_sweeping_the_task_uses_each_tasks_defaults():
    cfg = validate_config(merged(sweep={"task.name": ["weather", "adding"]}))
    adding = with_params(cfg, {"task.name": "adding"})
    assert adding.task.options == {"n_train": 1000, "n_val": 200}
    # a base option set away from its default is kept, so it is refused for a task without it
    error = pytest.raises(ConfigError, validate_config,
                          merged(task={"lag": 2}, sweep={"task.name": ["weather", "adding"]})).value
    assert "sweep.task.name" in str(error) and "task.lag" in str(error)
    assert '"adding"' in str(error)


def test_config_error_pickles():
    error = pytest.raises(ConfigError, validate_config, merged(train={"lr": -1}), "x.yaml").value
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.problems == error.problems


# ---------------------------------------------------------------------------------------------
# errors: each names the file, the key path and the value given

CASES = {
    "unknown top-level key": (merged(bogus=1), "bogus", "1"),
    "unknown nested key": (merged(model={"hiden_size": 12}), "model.hiden_size", "12"),
    "wrong type": (merged(model={"hidden_size": "ten"}), "model.hidden_size", '"ten"'),
    "section not a mapping": (merged(train=[1, 2]), "train", "[1, 2]"),
    "bool as number": (merged(train={"batch_size": True}), "train.batch_size", "true"),
    "fractional int": (merged(train={"epochs": 10.5}), "train.epochs", "10.5"),
    "seq_len zero": (merged(task={"seq_len": 0}), "task.seq_len", "0"),
    "seq_len negative": (merged(task={"seq_len": -3}), "task.seq_len", "-3"),
    "lr zero": (merged(train={"lr": 0}), "train.lr", "0"),
    "lr negative": (merged(train={"lr": -0.01}), "train.lr", "-0.01"),
    "lr infinite": (merged(train={"lr": float("inf")}), "train.lr", "Infinity"),
    "unknown cell": (merged(model={"cell": "lsmt"}), "model.cell", '"lsmt"'),
    "unknown init": (merged(model={"init": "xavier"}), "model.init", '"xavier"'),
    "weight_scale negative": (merged(model={"weight_scale": -1}), "model.weight_scale", "-1"),
    "unknown task": (merged(task={"name": "wether"}), "task.name", '"wether"'),
    "unknown task option": (merged(task={"n_dayz": 5}), "task.n_dayz", "5"),
    "bad task option value": (merged(task={"n_days": -5}), "task.n_days", "-5"),
    "unknown optimizer": (merged(train={"optimizer": "Adamm"}), "train.optimizer", '"Adamm"'),
    "unknown optimizer argument": (merged(train={"optimizer": "SGD",
                                                 "optimizer_args": {"momentun": 0.9}}),
                                   "train.optimizer_args.momentun", "0.9"),
    "relu with gru": (merged(model={"cell": "gru", "nonlinearity": "relu"}),
                      "model.nonlinearity", '"relu"'),
    "relu with lstm": (merged(model={"cell": "lstm", "nonlinearity": "relu"}),
                       "model.nonlinearity", '"relu"'),
    "bad device": (merged(train={"device": "gpu"}), "train.device", '"gpu"'),
    "negative seed": (merged(train={"seed": -1}), "train.seed", "-1"),
    "bad schedule item": (merged(probes={"lyapunov": ["init", "later"]}), "probes.lyapunov",
                          '"later"'),
    "schedule past the last epoch": (merged(train={"epochs": 10}, probes={"spectra": [20]}),
                                     "probes.spectra", "20"),
    "bad name": (merged(name="my run"), "name", '"my run"'),
    "empty sweep list": (merged(sweep={"task.seq_len": []}), "sweep.task.seq_len", "[]"),
    "sweep value not a list": (merged(sweep={"task.seq_len": 10}), "sweep.task.seq_len", "10"),
    "unknown sweep key": (merged(sweep={"model.cel": ["rnn"]}), "sweep.model.cel", "model.cell"),
    "sweep key without a section": (merged(sweep={"cell": ["rnn"]}), "sweep.cell", "model"),
    "sweep of the name": (merged(sweep={"name": ["a", "b"]}), "sweep.name", "cannot be swept"),
    "sweep of a section": (merged(sweep={"model": [{}]}), "sweep.model", "model.cell"),
    "bad sweep value": (merged(sweep={"model.cell": ["rnn", "lsmt"]}), "sweep.model.cell",
                        '"lsmt"'),
    "bad sweep number": (merged(sweep={"train.lr": [0.1, -1]}), "sweep.train.lr", "-1"),
    "bad sweep task option": (merged(sweep={"task.n_days": [100, 0]}), "sweep.task.n_days",
                              "0"),
    "sweep value listed twice": (merged(sweep={"model.hidden_size": [8, 16, 8]}),
                                 "sweep.model.hidden_size", "8"),
    "sweep values that mean the same": (merged(sweep={"model.weight_scale": [1, 1.0]}),
                                        "sweep.model.weight_scale", "1.0"),
    "sweep value invalid with the base": (merged(model={"nonlinearity": "relu"},
                                                 sweep={"model.cell": ["rnn", "gru"]}),
                                          "sweep.model.cell", '"gru"'),
}


@pytest.mark.parametrize("data, path, shown", CASES.values(), ids=CASES.keys())
def test_error_names_file_path_and_value(tmp_path, data, path, shown):
    error = refused(tmp_path, data)
    lines = str(error).splitlines()[1:]
    hits = [line for line in lines if line.strip().startswith(path + " ")
            or line.strip().startswith(path + ":")]
    assert hits, str(error)
    assert any(shown in line for line in hits), str(error)
    assert any(p.path == path for p in error.problems)


@pytest.mark.parametrize("data, path", [({"name": "x"}, "task"),
                                        ({"task": BASE["task"]}, "name"),
                                        ({"name": "x", "task": {"name": "adding"}}, "task.seq_len"),
                                        ({"name": "x", "task": {"seq_len": 5}}, "task.name")])
def test_missing_required_key(tmp_path, data, path):
    error = refused(tmp_path, data)
    assert f"  {path}" in str(error) and "required, but missing" in str(error)
    if "." in path:  # a nested key: the line of its section
        assert f"  {path} (line 2)" in str(error)


def test_expected_values_are_listed(tmp_path):
    message = str(refused(tmp_path, merged(model={"cell": "lsmt"})))
    assert "rnn, gru, lstm" in message and 'did you mean "lstm"' in message
    message = str(refused(tmp_path, merged(task={"name": "wether"})))
    assert "weather" in message and "adding" in message and "copy" in message
    message = str(refused(tmp_path, merged(task={"n_dayz": 5})))
    assert 'did you mean "n_days"' in message and "val_fraction" in message
    message = str(refused(tmp_path, merged(sweep={"model.cel": ["rnn"]})))
    assert "model.hidden_size" in message  # the valid keys nearby


def test_one_line_per_problem_with_line_numbers(tmp_path):
    text = ("name: demo\n"
            "task:\n"
            "  name: weather\n"
            "  seq_len: -1\n"
            "train:\n"
            "  lr: -0.5\n"
            "sweep:\n"
            "  model.cell: [rnn, lsmt]\n")
    error = refused(tmp_path, text)
    lines = str(error).splitlines()
    assert len(lines) == 3, str(error)  # the file, then one line per problem
    assert lines[1].strip().startswith("task.seq_len (line 4):")
    assert lines[2].strip().startswith("train.lr (line 6):") and "-0.5" in lines[2]
    # sweeps are checked once the base config is valid
    error = refused(tmp_path, text.replace("-1", "10").replace("-0.5", "0.5"))
    assert "sweep.model.cell (line 8)" in str(error) and '"lsmt"' in str(error)


def test_invalid_combination_of_sweep_values(tmp_path):
    data = merged(sweep={"model.cell": ["rnn", "gru"], "model.nonlinearity": ["tanh", "relu"]})
    error = refused(tmp_path, data)
    assert "sweep" in str(error) and '"gru"' in str(error) and '"relu"' in str(error)


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    error = refused(tmp_path, "name: x\ntask:\n  name: [weather\n  seq_len: 10\n")
    assert "not valid YAML" in str(error)
    assert "line 4" in str(error) and "column" in str(error)


def test_repeated_key_is_refused(tmp_path):
    error = refused(tmp_path, "name: x\ntask: {name: adding, seq_len: 5}\nmodel: {}\n"
                              "model: {cell: gru}\n")
    assert "model (line 4)" in str(error) and "line 3" in str(error)


@pytest.mark.parametrize("text, words", [("", "empty"), ("- a\n- b\n", "list"),
                                         ("just text\n", "text")])
def test_file_that_is_not_a_mapping(tmp_path, text, words):
    error = refused(tmp_path, text)
    assert "mapping" in str(error) and words in str(error)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "not found" in str(info.value)


def test_validate_config_names_its_source():
    with pytest.raises(ConfigError) as info:
        validate_config(merged(train={"lr": -1}), source="inline")
    assert str(info.value).splitlines() == [
        "Invalid experiment config inline:",
        "  train.lr: expected a number greater than 0, got -1",
    ]
