"""Loading a run folder: what is read, what is ignored, what is refused."""

import shutil

import pandas as pd
import pytest

from rnn_diag.report.run_data import TABLES, NotARunError, find_runs, is_run, load_run


def test_loads_every_finished_trial_and_its_tables(small_run):
    run = load_run(small_run)
    assert run.name == "small" and run.description == "A small sweep for the report tests."
    assert run.swept == ("task.seq_len", "model.weight_scale")
    assert run.warnings == ()
    assert run.trials.status.value_counts().to_dict() == {"ok": 3, "failed": 2, "diverged": 1}
    assert set(run.tables) == set(TABLES)
    ids = set(run.trials.id)
    for name in TABLES:
        if not (small_run / name).is_dir():  # not recorded by this run (e.g. fixed points)
            assert run.tables[name].empty, name
            continue
        # every table equals the per-trial files read directly, restricted to the stored trials
        files = sorted((small_run / name).glob("*.parquet"))
        direct = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        assert set(run.tables[name].trial) <= ids
        assert len(run.tables[name]) == len(direct[direct.trial.isin(ids)]), name
    assert run.manifest["rnn_diag"] and "started" in run.manifest
    assert set(run.for_figures()) == {"trials", "sweep", *TABLES}


def test_tables_of_unfinished_trials_are_ignored(small_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(small_run, root)
    curves = pd.read_parquet(next((root / "curves").glob("*.parquet")))
    n = len(load_run(root).tables["curves"])
    # a trial whose tables were written but whose row was not (killed mid-way)
    curves.assign(trial="notfinished0").to_parquet(root / "curves" / "notfinished0.parquet")
    run = load_run(root)
    assert len(run.tables["curves"]) == n
    assert "notfinished0" not in set(run.tables["curves"].trial)


def test_a_folder_that_is_not_a_run_is_refused_with_what_is_missing(tmp_path, small_run):
    with pytest.raises(NotARunError, match="no such folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotARunError) as err:
        load_run(tmp_path / "empty")
    assert "empty" in str(err.value) and "trials.parquet" in str(err.value)
    partial = tmp_path / "partial"
    shutil.copytree(small_run, partial)
    (partial / "manifest.json").unlink()
    with pytest.raises(NotARunError, match="missing manifest.json") as err:
        load_run(partial)
    assert "trials.parquet" not in str(err.value)
    assert not is_run(partial) and is_run(small_run)


def test_a_config_the_schema_now_refuses_still_loads(small_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(small_run, root)
    text = (root / "config.yaml").read_text()
    (root / "config.yaml").write_text(
        text.replace("sweep:", "obsolete_key: 1\nsweep:\n  seed: [0]", 1))
    run = load_run(root)  # not re-validated: the report shows what was run
    assert not run.warnings and run.config["obsolete_key"] == 1
    assert run.swept[0] == "train.seed"  # the alias is resolved without the schema
    assert "task.seq_len" in run.swept and run.name == "small"


def test_find_runs_lists_only_run_folders(small_run, tmp_path):
    shutil.copytree(small_run, tmp_path / "b")
    shutil.copytree(small_run, tmp_path / "a")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert [p.name for p in find_runs(tmp_path)] == ["a", "b"]
    assert find_runs(tmp_path / "missing") == []
