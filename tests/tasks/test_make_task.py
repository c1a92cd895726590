"""The registry contract: names, options models, validation errors, info(), determinism."""

import dataclasses
import json
import math

import pytest
import torch
from pydantic import BaseModel

from rnn_diag.tasks import TASK_OPTIONS, TASKS, Task, make_task

DEFAULTS = {
    "weather": {"n_days": 1500, "data_seed": 42, "lag": None, "p": 0.0, "val_fraction": 0.2},
    "adding": {"n_train": 1000, "n_val": 200},
    "copy": {"length": 5, "n_symbols": 8, "n_train": 1000, "n_val": 200},
    "flipflop": {"bits": 3, "p_pulse": 0.05, "n_train": 1000, "n_val": 200},
    "delayed_xor": {"delay": 5, "n_train": 1000, "n_val": 200},
}
#: Tasks scored by another metric than their kind's default (flipflop: MSE loss, accuracy).
METRICS = {"flipflop": ("accuracy", True)}


def test_registry_names_and_options_models():
    names = {"weather", "adding", "copy", "flipflop", "delayed_xor"}
    assert set(TASKS) == set(TASK_OPTIONS) == names
    for name, options in TASK_OPTIONS.items():
        assert issubclass(TASKS[name], Task)
        assert issubclass(options, BaseModel)
        assert options.model_config.get("extra") == "forbid"
        assert options().model_dump() == DEFAULTS[name]


def test_options_models_validate_config_sections():
    assert TASK_OPTIONS["weather"].model_validate({"lag": 5, "p": 0.3}).lag == 5
    with pytest.raises(ValueError, match="lagg"):
        TASK_OPTIONS["weather"].model_validate({"lagg": 5})


@pytest.mark.parametrize("name", sorted(TASKS))
def test_make_task_returns_the_registered_class_on_cpu(name):
    task = make_task(name, seq_len=10, seed=0)
    assert isinstance(task, TASKS[name]) and task.name == name
    assert task.options == DEFAULTS[name]
    for t in (task.x_train, task.y_train, task.x_val, task.y_val):
        assert t.device.type == "cpu"
    assert task.x_train.dtype == torch.float32
    assert task.x_train.shape[0] == task.y_train.shape[0] > 0
    assert task.x_val.shape[0] == task.y_val.shape[0] > 0
    assert task.kind in ("classification", "regression")
    assert (task.metric_name, task.higher_is_better) == METRICS.get(name, (
        ("accuracy", True) if task.kind == "classification" else ("mse", False)
    ))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_arguments_identical_tensors(name):
    a = make_task(name, seq_len=7, seed=11)
    b = make_task(name, seq_len=7, seed=11)
    for attr in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(a, attr), getattr(b, attr)), attr


@pytest.mark.parametrize("name", sorted(TASKS))
def test_info_is_plain_json(name):
    task = make_task(name, seq_len=10, seed=3)
    info = task.info()
    assert json.loads(json.dumps(info)) == info
    assert info["task"] == name and info["seed"] == 3 and info["seq_len"] == 10
    assert (info["n_train"], info["n_val"]) == (task.n_train, task.n_val)
    assert info["n_steps"] == task.x_train.shape[1]
    assert info["options"] == DEFAULTS[name]
    assert info["chance_loss"] == task.chance_loss and info["chance_metric"] == task.chance_metric
    assert math.isfinite(info["best_loss"]) and math.isfinite(info["best_metric"])


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="'wether'.*adding, copy, delayed_xor, flipflop, weather"):
        make_task("wether", seq_len=10, seed=0)


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("weather", {"lags": 3}, "task 'weather'.*unknown option 'lags'"),
        ("weather", {"p": 1.5}, "task 'weather'.*option 'p'.*1.5"),
        ("weather", {"p": -0.1, "lag": 2}, "task 'weather'.*option 'p'"),
        ("weather", {"p": float("nan"), "lag": 2}, "task 'weather'.*option 'p'"),
        ("weather", {"p": 0.5}, "task 'weather'.*'p'.*needs option 'lag'"),
        ("weather", {"lag": 0}, "task 'weather'.*option 'lag'"),
        ("weather", {"lag": 1500}, "task 'weather'.*'lag'.*'n_days'"),
        ("weather", {"n_days": 0}, "task 'weather'.*option 'n_days'"),
        ("weather", {"n_days": True}, "task 'weather'.*option 'n_days'"),
        ("weather", {"val_fraction": 1.0}, "task 'weather'.*option 'val_fraction'"),
        ("weather", {"data_seed": -1}, "task 'weather'.*option 'data_seed'"),
        ("adding", {"n_train": "100"}, "task 'adding'.*option 'n_train'"),
        ("adding", {"n_val": -1}, "task 'adding'.*option 'n_val'"),
        ("copy", {"n_symbols": 1}, "task 'copy'.*option 'n_symbols'"),
        ("copy", {"size": 3}, "task 'copy'.*unknown option 'size'.*length"),
    ],
)
def test_bad_options_name_the_task_and_the_option(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_task(name, seq_len=10, seed=0, **options)


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("seq_len", [0, -3, 2.5, True, "10"])
def test_bad_seq_len_is_named(name, seq_len):
    with pytest.raises(ValueError, match=f"task '{name}'.*seq_len"):
        make_task(name, seq_len=seq_len, seed=0)


def test_bad_seed_is_named():
    with pytest.raises(ValueError, match="seed"):
        make_task("adding", seq_len=10, seed=1.5)


def test_task_refuses_inconsistent_data():
    task = make_task("weather", seq_len=10, seed=0)
    fields = {
        f.name: getattr(task, f.name)
        for f in dataclasses.fields(task)
        if f.name not in ("metric_name", "higher_is_better")
    }
    Task(**fields)
    with pytest.raises(ValueError, match="y_train"):
        Task(**{**fields, "y_train": task.y_train.float()})
    with pytest.raises(ValueError, match="x_val"):
        Task(**{**fields, "x_val": task.x_val[:, :5]})
    with pytest.raises(ValueError, match="kind"):
        Task(**{**fields, "kind": "ranking"})
