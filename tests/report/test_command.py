"""``rnn-diag report``: where it writes, what it prints, and how it refuses bad folders."""

import os
import shutil
import stat
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

import rnn_diag.report.figures
from rnn_diag.cli import main


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    caption: str
    needs: tuple
    build: object


def _tiny(tables):
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def _broken(tables):
    raise KeyError("val_loss")


@pytest.fixture(autouse=True)
def cheap_figures(monkeypatch):
    """The command's plumbing is under test here, not the figures (see test_page.py)."""
    monkeypatch.setattr(rnn_diag.report.figures, "SECTIONS",
                        (Section("loss", "Loss", "cap", ("curves",), _tiny),))


def invoke(*args):
    return CliRunner().invoke(main, ["report", *args], catch_exceptions=False)


def test_writes_index_html_in_the_run_folder_and_prints_its_path(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    result = invoke(str(run), "--quiet")
    assert result.exit_code == 0, result.output
    page = run / "index.html"
    assert result.output.strip() == str(page)
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<h1>small</h1>" in html
    mode = stat.S_IMODE(os.stat(page).st_mode)
    assert mode & stat.S_IRUSR and mode & stat.S_IWUSR
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporary left
    # --out writes elsewhere and leaves the run folder alone
    other = tmp_path / "elsewhere" / "r.html"
    result = invoke(str(run), "--out", str(other), "--quiet", "--format", "svg", "--jobs", "1")
    assert result.exit_code == 0 and result.output.strip() == str(other)
    assert "data:image/svg+xml;base64," in other.read_text(encoding="utf-8")


def test_not_a_run_exits_2_naming_the_folder_and_what_is_missing(small_run, tmp_path):
    empty = tmp_path / "just_a_folder"
    empty.mkdir()
    result = invoke(str(small_run), str(empty))
    assert result.exit_code == 2
    assert str(empty) in result.output and "trials.parquet" in result.output
    assert "Traceback" not in result.output
    assert not (small_run / "index.html").exists()  # checked before anything is written
    result = invoke(str(tmp_path / "missing"))
    assert result.exit_code == 2 and "no such folder" in result.output
    shutil.copytree(small_run, empty / "inner")  # the parent of a run was given: say so
    result = invoke(str(empty))
    assert result.exit_code == 2
    assert f"it holds run folders: {empty / 'inner'}" in result.output


def test_without_arguments_reports_every_run_under_reports(small_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke()
    assert result.exit_code == 2 and "./reports/" in result.output
    (tmp_path / "reports" / "notes").mkdir(parents=True)
    result = invoke()
    assert result.exit_code == 2 and "no run folder under ./reports/" in result.output
    for name in ("a", "b"):
        shutil.copytree(small_run, tmp_path / "reports" / name)
    result = invoke("--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.split() == [os.path.join("reports", n, "index.html") for n in "ab"]
    assert (tmp_path / "reports" / "a" / "index.html").is_file()
    assert not (tmp_path / "reports" / "notes" / "index.html").exists()
    result = invoke("--out", "x.html")
    assert result.exit_code == 2 and "--out needs exactly one RUN_DIR" in result.output


def test_a_broken_figure_warns_but_the_page_is_written(small_run, tmp_path, monkeypatch):
    monkeypatch.setattr(rnn_diag.report.figures, "SECTIONS",
                        (Section("loss", "Loss", "cap", ("curves",), _broken),))
    out = tmp_path / "r.html"
    result = invoke(str(small_run), "--out", str(out), "--quiet")
    assert result.exit_code == 0
    assert "figure 'loss' could not be drawn: KeyError" in result.output
    assert "could not be drawn" in out.read_text(encoding="utf-8")
