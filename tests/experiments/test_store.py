"""The result store: atomic files, resume semantics, long tables."""

import os

import pandas as pd
import pytest

from rnn_diag.experiments import store as store_mod
from rnn_diag.experiments.store import Store, TrialResult, write_parquet


def result(tid, status="ok", n=2):
    return TrialResult(tid, {"status": status, "loss": 0.5},
                       {"curves": pd.DataFrame({"epoch": range(n), "loss": [1.0] * n})})


def test_save_reload_and_resume(tmp_path):
    s = Store(tmp_path)
    s.save(result("a"))
    s.save(result("b", "diverged"))
    s.save(result("c", "failed"))
    again = Store(tmp_path)  # a new process resuming
    assert again.finished_ids() == {"a", "b"}  # failed trials are retried
    again.save(result("c", "ok", n=3))
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert list(trials.id) == ["a", "b", "c"] and list(trials.status) == ["ok", "diverged", "ok"]
    curves = pd.read_parquet(tmp_path / "curves")  # the directory reads as one table
    assert sorted(curves.trial.unique()) == ["a", "b", "c"]
    assert (curves.trial == "c").sum() == 3  # replaced, not appended


def test_fresh_clears_only_the_store(tmp_path):
    s = Store(tmp_path)
    s.save(result("a"))
    s.write_manifest({"x": 1})
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "figures").mkdir()
    fresh = Store(tmp_path, fresh=True)
    assert fresh.finished_ids() == set()
    assert not (tmp_path / "curves").exists() and not (tmp_path / "trials.parquet").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "figures").is_dir()


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write_parquet(path, pd.DataFrame({"v": [1]}))

    def broken(self, tmp, **kwargs):
        with open(tmp, "wb") as f:
            f.write(b"PAR1 half a file")
        raise KeyboardInterrupt  # as if killed in the middle

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(KeyboardInterrupt):
        write_parquet(path, pd.DataFrame({"v": [2]}))
    monkeypatch.undo()
    assert pd.read_parquet(path).v.tolist() == [1]
    assert os.listdir(tmp_path) == ["t.parquet"]


def test_row_is_written_after_the_tables(tmp_path, monkeypatch):
    order = []
    real = store_mod.write_parquet
    monkeypatch.setattr(store_mod, "write_parquet",
                        lambda path, df: (order.append(path.name), real(path, df)))
    Store(tmp_path).save(result("a"))
    assert order == ["a.parquet", "trials.parquet"]


def test_a_retried_trial_leaves_no_table_of_its_earlier_attempt(tmp_path):
    s = Store(tmp_path)
    s.save(TrialResult("a", {"status": "failed"},
                       {"curves": pd.DataFrame({"epoch": [1]}),
                        "gradients": pd.DataFrame({"t": [0]})}))
    s.save(TrialResult("b", {"status": "ok"}, {"gradients": pd.DataFrame({"t": [5]})}))
    s.save(TrialResult("a", {"status": "ok"}, {"curves": pd.DataFrame({"epoch": [1, 2]})}))
    assert s.table("curves").trial.tolist() == ["a", "a"]
    assert s.table("gradients").trial.tolist() == ["b"]  # a's old profile is gone, b's kept
    assert sorted(s.trials().id) == ["a", "b"]


def test_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_parquet(tmp_path / "t.parquet", pd.DataFrame({"v": [1]}))
    finally:
        os.umask(old)
    assert (tmp_path / "t.parquet").stat().st_mode & 0o777 == 0o644
