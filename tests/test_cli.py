"""The command-line entry point: version, help, and a light import."""

import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import rnn_diag
from rnn_diag.cli import main


def test_version_matches_package():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"rnn-diag, version {rnn_diag.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["-h"], []], ids=["help", "h", "bare"])
def test_help_explains_the_tool(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert "gradient" in result.output and "--version" in result.output


def test_console_script_is_installed():
    exe = shutil.which("rnn-diag")
    if exe is None:
        pytest.skip("package not installed with its console script")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert rnn_diag.__version__ in out.stdout


def test_cli_import_does_not_load_torch():
    """`rnn-diag --help` must stay instant: the package imports torch only when used."""
    code = "import sys, rnn_diag.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_ci_runs_the_readme_test_command():
    """README's second set-up command and .ci/run must run the same checks."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme, ci = (root / "README.md").read_text(), (root / ".ci/run").read_text()
    assert "ruff check . && lint-imports && python -m pytest" in readme
    assert "ruff check . && lint-imports && python -m pytest" in ci  # the comment at its top
    assert "\nruff check .\n" in ci and "\nlint-imports\n" in ci and "python -m pytest" in ci
    assert ci.index("\nruff check .\n") < ci.index("\nlint-imports\n") \
        < ci.index("\npython -m pytest")  # the steps, in the comment's order
    assert "pip install torch==2.13.0" in readme and "pip install torch==2.13.0" in ci


def test_run_names_diverged_trials_and_their_reason_and_takes_threads(tmp_path):
    """GitHub issue 17: the summary of `rnn-diag run` lists every trial that is not ok with its
    reason; --threads sets (and the manifest records) torch threads per trial."""
    import json

    import yaml

    cfg = tmp_path / "boom.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "boom",
        "task": {"name": "weather", "seq_len": 10, "n_days": 200},
        "model": {"cell": "rnn", "hidden_size": 10, "weight_scale": 5.0},
        "train": {"epochs": 5},
        "probes": {"lyapunov": [], "spectra": []},
        "sweep": {"train.lr": [0.01, 1.0e6]},
    }))
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output  # diverged is a result, not a failure
    lines = result.output.splitlines()
    assert "1 trial(s) not ok:" in lines
    note = lines[lines.index("1 trial(s) not ok:") + 1]
    import pandas as pd

    trials = pd.read_parquet(out / "trials.parquet")
    boom = trials[trials["train.lr"] == 1e6].iloc[0]
    assert boom.status == "diverged" and f"[{boom.id}] diverged: {boom.error}" in note
    assert note.split("diverged: ")[1].startswith("train loss") and "× chance" in note
    assert "2 trial(s) run, 0 already finished, 1 diverged, 0 failed" in result.output
    assert json.loads((out / "manifest.json").read_text())["threads"] == 1
    bad = CliRunner().invoke(main, ["run", str(cfg), "--out", str(out), "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output
