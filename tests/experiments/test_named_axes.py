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
    assert row["loss_steps"] == 8  # delayed XOR: a target at each of the T - delay last steps


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


def test_resume_renames_stored_trials_and_counts_stale_ones(tmp_path):
    """A trial's id hashes its settings, not its names: renaming a value reuses its stored
    trials under the new name; a value whose settings changed leaves its old trials behind,
    counted as stale (the report shows them; --fresh drops them)."""
    from rnn_diag.experiments.runner import run_sweep
    from rnn_diag.experiments.store import Store

    small = REMEDIES.replace("    irnn:\n      model.nonlinearity: relu\n      model.init: "
                             "identity\n    gru: {model.cell: gru}\n", "")
    path = tmp_path / "c.yaml"
    path.write_text(small)
    first = run_sweep(path, out=tmp_path / "o", quiet=True)
    assert (first.ran, first.stale, first.renamed) == (4, 0, 0)
    path.write_text(small.replace("clip:", "clipping:"))
    renamed = run_sweep(path, out=tmp_path / "o", quiet=True)
    assert (renamed.ran, renamed.skipped, renamed.renamed, renamed.stale) == (0, 4, 2, 0)
    rows = Store(tmp_path / "o").trials()
    assert sorted(rows.remedy) == ["clipping", "clipping", "none", "none"]
    assert "remedy=clipping seed=1" in set(rows.label)
    path.write_text(small.replace("clip:", "clipping:").replace("1.0}", "0.5}"))
    changed = run_sweep(path, out=tmp_path / "o", quiet=True)
    assert (changed.ran, changed.stale, changed.renamed) == (2, 2, 0)


def test_the_cli_says_when_a_folder_holds_trials_of_other_settings(tmp_path):
    from click.testing import CliRunner

    from rnn_diag.cli import main

    small = REMEDIES.replace("    irnn:\n      model.nonlinearity: relu\n      model.init: "
                             "identity\n    gru: {model.cell: gru}\n", "").replace(
        "seed: [0, 1]", "seed: [0]")
    path = tmp_path / "c.yaml"
    path.write_text(small)
    args = ["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    path.write_text(small.replace("1.0}", "0.5}"))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert "note: 1 trial(s) stored in" in result.output
    assert "run with --fresh to start over" in result.output


@pytest.mark.parametrize("sweep, text", [
    ({"remedy": ["none", "clip"]}, "; or, as a named axis (a key without a dot), map each name "
                                   "to its settings, e.g. remedy: {none: {}, clip: "
                                   "{train.clip_grad_norm: 1.0}}"),
    ({"remedy": None}, "; or, as a named axis (a key without a dot), map each name"),
    ({"remedy": {}}, "sweep.remedy: a named axis needs at least one name, e.g. {none: {}}, "
                     "got {}"),
])
def test_named_axis_mistakes_say_what_a_named_axis_is(sweep, text):
    with pytest.raises(ConfigError) as err:
        validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20},
                         "sweep": sweep})
    assert text in str(err.value)
    assert len(str(err.value).splitlines()) == 2  # the heading and one problem


def test_regularizer_errors_name_the_entry():
    with pytest.raises(ConfigError) as err:
        validate_config({"name": "x", "task": {"name": "adding", "seq_len": 20},
                         "train": {"regularizer": [{"kind": "orthogonality_penalty"},
                                                   {"kind": "flossing", "k": 50, "kk": 1}]}})
    text = str(err.value)
    assert 'train.regularizer[1].kk: unknown key (its value: 1); did you mean "k"?' in text
