"""The trial grid: size and order of the Cartesian product, resolved trial configs, stable ids."""

import pickle
import re

import pytest
import yaml

from rnn_diag.experiments.config import load_config, validate_config
from rnn_diag.experiments.grid import TrialSpec, expand, trial_id, trial_label

WEATHER = """\
name: weather
description: first
task:
  name: weather
  seq_len: 10
model:
  cell: rnn
  hidden_size: 10
train:
  lr: 0.01
  seed: 0
sweep:
  task.seq_len: [10, 100, 1000]
  model.weight_scale: [null, 0.5, 1, 1.5]
"""

# the same settings: other name and description, keys in another order, values spelled otherwise
WEATHER_REORDERED = """\
train:
  seed: 0
  lr: 1.0e-2
sweep:
  task.seq_len: [10, 100, 1000]
  model.weight_scale: [null, 0.5, 1.0, 1.5]
model:
  hidden_size: 10
task:
  seq_len: 10
  name: weather
  n_days: 1500
name: elsewhere
"""


def load(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_no_sweep_is_one_default_trial():
    cfg = validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20}})
    (spec,) = expand(cfg)
    assert spec.params == {} and spec.config == cfg and spec.id == trial_id(cfg)
    assert trial_label(spec) == "default"


def test_grid_size_and_order(tmp_path):
    specs = expand(load(tmp_path, WEATHER))
    assert len(specs) == 3 * 4
    # the first key varies slowest; values as validated (1 -> 1.0)
    assert [tuple(s.params.values()) for s in specs] == [
        (seq_len, scale) for seq_len in (10, 100, 1000) for scale in (None, 0.5, 1.0, 1.5)
    ]
    assert all(list(s.params) == ["task.seq_len", "model.weight_scale"] for s in specs)
    assert [trial_label(s) for s in specs[:2]] == ["seq_len=10 weight_scale=null",
                                                    "seq_len=10 weight_scale=0.5"]
    assert expand(load(tmp_path, WEATHER)) == specs  # deterministic


def test_trial_configs_are_resolved(tmp_path):
    cfg = load(tmp_path, WEATHER)
    for spec in expand(cfg):
        trial = spec.config
        assert trial.sweep == {}
        assert trial.task.seq_len == spec.params["task.seq_len"]
        assert trial.model.weight_scale == spec.params["model.weight_scale"]
        assert trial.name == cfg.name and trial.description == cfg.description
        assert trial.train == cfg.train and trial.probes == cfg.probes
        assert trial.task.options == cfg.task.options


def test_ids_are_distinct_hex(tmp_path):
    ids = [s.id for s in expand(load(tmp_path, WEATHER))]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


def test_ids_are_stable_across_files_and_key_order(tmp_path):
    a = expand(load(tmp_path, WEATHER, "a.yaml"))
    b = expand(load(tmp_path, WEATHER_REORDERED, "b.yaml"))
    assert [s.id for s in a] == [s.id for s in b]
    # swapping the sweep keys changes the order, not the ids
    swapped = yaml.safe_load(WEATHER)
    swapped["sweep"] = dict(reversed(list(swapped["sweep"].items())))
    c = expand(validate_config(swapped))
    assert sorted(s.id for s in c) == sorted(s.id for s in a)
    assert [s.id for s in c] != [s.id for s in a]


def test_a_swept_trial_has_the_id_of_the_same_settings_written_out(tmp_path):
    specs = expand(load(tmp_path, WEATHER))
    data = yaml.safe_load(WEATHER)
    del data["sweep"]
    data["task"]["seq_len"] = 100
    data["model"]["weight_scale"] = 0.5
    (single,) = expand(validate_config(data))
    assert single.id == specs[5].id and single.id == trial_id(specs[5].config)


@pytest.mark.parametrize("key, value", [
    ("task.seq_len", 11), ("task.n_days", 1000), ("model.cell", "gru"),
    ("model.hidden_size", 11), ("train.lr", 0.02), ("train.seed", 1),
    ("train.optimizer_args.weight_decay", 0.1), ("probes.every", 2),
    ("probes.lyapunov", ["end"]), ("probes.saturation", True),
])
def test_any_changed_setting_changes_the_id(key, value):
    base = validate_config({"name": "x", "task": {"name": "weather", "seq_len": 10}})
    swept = validate_config({"name": "x", "task": {"name": "weather", "seq_len": 10},
                             "sweep": {key: [value]}})
    (plain,), (other,) = expand(base), expand(swept)
    assert plain.id != other.id


def test_seed_alias_in_the_grid():
    cfg = validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20},
                           "sweep": {"seed": [0, 1, 2]}})
    specs = expand(cfg)
    assert [s.params for s in specs] == [{"train.seed": i} for i in range(3)]
    assert [s.config.train.seed for s in specs] == [0, 1, 2]
    assert trial_label(specs[1]) == "seed=1"


def test_task_sweep_gives_each_task_its_defaults():
    cfg = validate_config({"name": "x", "task": {"name": "weather", "seq_len": 20},
                           "sweep": {"task.name": ["weather", "adding", "copy"]}})
    specs = expand(cfg)
    assert [s.config.task.name for s in specs] == ["weather", "adding", "copy"]
    assert specs[1].config.task.options == {"n_train": 1000, "n_val": 200}
    assert "n_symbols" in specs[2].config.task.options


def test_labels():
    cfg = validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20},
                           "sweep": {"probes.lyapunov": [["init", "end"]],
                                     "train.clip_grad_norm": [None, 1],
                                     "probes.saturation": [True]}})
    assert [trial_label(s) for s in expand(cfg)] == [
        "lyapunov=[init, end] clip_grad_norm=null saturation=true",
        "lyapunov=[init, end] clip_grad_norm=1.0 saturation=true",
    ]
    clash = TrialSpec("0" * 12, {"a.x": 1, "b.x": 2, "c.y": "z"}, cfg)
    assert trial_label(clash) == "a.x=1 b.x=2 y=z"


def test_trial_spec_is_frozen_and_pickles(tmp_path):
    spec = expand(load(tmp_path, WEATHER))[3]
    with pytest.raises(AttributeError):
        spec.id = "x"
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and again.id == trial_id(again.config)
