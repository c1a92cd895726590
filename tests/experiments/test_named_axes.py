"""Named sweep axes (``sweep: {remedy: {name: {dotted: value}}}``): one value sets several keys
together; the trials, labels, ids, row columns and errors that follow from it."""

from __future__ import annotations

import pytest
import yaml

from rnn_diag.experiments.config import ConfigError, load_config, validate_config
from rnn_diag.experiments.grid import expand, trial_id, trial_label
from rnn_diag.experiments.trial import run_trial

REMEDIES = """\
name: remedies
task: {name: delayed_xor, seq_len: 12, delay: 4, n_train: 20, n_val: 10}
model: {hidden_size: 6}
train: {epochs: 1, device: cpu}
probes: {lyapunov: [], spectra: []}
sweep:
  remedy:
    none: {}
    clip: {train.clip_grad_norm: 1.0}
    irnn:
      model.nonlinearity: relu
      model.init: identity
    gru: {model.cell: gru}
  seed: [0, 1]
"""


def _load(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def test_each_name_applies_its_settings_in_order(tmp_path):
    specs = expand(_load(tmp_path, REMEDIES))
    assert [trial_label(s) for s in specs[:3]] == [
        "remedy=none seed=0", "remedy=none seed=1", "remedy=clip seed=0"]
    irnn = specs[4].config
    assert (irnn.model.nonlinearity, irnn.model.init, irnn.model.cell) == ("relu", "identity",
                                                                          "rnn")
    assert specs[6].config.model.cell == "gru" and specs[6].config.model.nonlinearity == "tanh"
    assert specs[2].config.train.clip_grad_norm == 1.0 and specs[0].config.train.clip_grad_norm \
        is None
    assert specs[4].params == {"remedy": "irnn", "train.seed": 0}
    # every key any name sets, as this trial resolves it: the same columns for every trial
    assert specs[0].settings == {"train.clip_grad_norm": None, "model.nonlinearity": "tanh",
                                 "model.init": "default", "model.cell": "rnn"}


def test_ids_name_the_settings_not_the_names(tmp_path):
    """A named value gives the id of the same settings written as plain keys."""
    specs = expand(_load(tmp_path, REMEDIES))
    plain = validate_config({**yaml.safe_load(REMEDIES), "sweep": {}})
    plain = plain.model_copy(update={"model": plain.model.model_copy(
        update={"nonlinearity": "relu", "init": "identity"})})
    assert specs[4].id == trial_id(plain)
    renamed = _load(tmp_path, REMEDIES.replace("irnn:", "le2015:"))
    assert [s.id for s in expand(renamed)] == [s.id for s in specs]


def test_a_config_round_trips_through_model_dump(tmp_path):
    cfg = _load(tmp_path, REMEDIES)
    dumped = cfg.model_dump()
    assert dumped["sweep"]["remedy"] == ["none", "clip", "irnn", "gru"]
    again = validate_config(dumped)
    assert [s.id for s in expand(again)] == [s.id for s in expand(cfg)]


@pytest.mark.parametrize("edit, where, words", [
    ("    clip: {train.clip: 1}", "sweep.remedy.clip.train.clip (line 9)",
     'not a config key; did you mean "train.lr"'),
    ("    clip: {train.clip_grad_norm: -1.0}", "sweep.remedy.clip (line 9)",
     "expected a number greater than 0"),
    ("    clip: {}", "sweep.remedy.clip (line 9)", 'the values "none" and "clip" give the same'),
])
def test_bad_values_name_the_axis_name_and_line(tmp_path, edit, where, words):
    text = REMEDIES.replace("    clip: {train.clip_grad_norm: 1.0}", edit)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    line = next(x for x in str(err.value).splitlines() if x.strip().startswith("sweep.remedy"))
    assert line.strip().startswith(where) and words in line


def test_a_key_set_by_an_axis_and_swept_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.cell is swept and also set by the named axis "
                                          "remedy"):
        _load(tmp_path, REMEDIES + "  model.cell: [rnn, lstm]\n")
    two = REMEDIES + "  other: {a: {model.cell: lstm}}\n"
    with pytest.raises(ConfigError, match="model.cell is set by the named axes remedy and other"):
        _load(tmp_path, two)


def test_an_axis_may_not_be_named_like_a_section(tmp_path):
    with pytest.raises(ConfigError, match="a named axis needs a name"):
        _load(tmp_path, REMEDIES.replace("  remedy:", "  model:"))


def test_the_row_holds_the_name_and_the_settings(tmp_path):
    spec = expand(_load(tmp_path, REMEDIES))[4]
    row = run_trial(spec).row
    assert row["status"] == "ok", row["error"]
    assert row["remedy"] == "irnn" and row["model.nonlinearity"] == "relu"
    assert row["label"] == "remedy=irnn seed=0" and row["memory_steps"] == 4


def test_an_axis_may_set_other_tasks_and_their_options(tmp_path):
    text = REMEDIES.replace(" delay: 4,", "").replace("  remedy:", """  problem:
    xor: {task.delay: 3}
    copy: {task.name: copy, task.length: 2}
  remedy:""")
    specs = expand(_load(tmp_path, text))
    copy = next(s for s in specs if s.params["problem"] == "copy")
    assert copy.config.task.name == "copy" and copy.config.task.options["length"] == 2
    assert copy.settings["task.delay"] is None and copy.settings["task.length"] == 2
    xor = specs[0]
    assert xor.settings["task.delay"] == 3 and xor.settings["task.length"] is None
