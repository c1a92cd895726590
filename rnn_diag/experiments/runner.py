"""The sweep driver: config in, store out. Validates, expands the grid, skips finished trials,
runs the rest on a backend, writes each result as it arrives and prints a summary table."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import __version__
from .backends import make_backend
from .config import load_config
from .grid import expand
from .store import Store

SUMMARY_COLUMNS = ["label", "status", "train_loss", "val_loss", "val_metric", "chance_metric",
                   "verdict_last", "horizon_last", "seconds"]


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: the store directory, trial counts and the summary."""

    out: Path
    ran: int
    skipped: int
    failed: int
    summary: pd.DataFrame


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def _manifest(config_path: Path, started: str, ended: str | None, jobs) -> dict:
    import torch

    return {
        "rnn_diag": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": sys.argv,
        "config": str(config_path),
        "jobs": jobs,
        "started": started,
        "ended": ended,
        "git_commit": _git_commit(),
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_sweep(config_path, out=None, jobs: int | None = None, fresh: bool = False,
              quiet: bool = False) -> SweepOutcome:
    """Run every unfinished trial of a config and store the results.

    Args:
        config_path: the YAML file.
        out: the store directory (default ``reports/<name>/``).
        jobs: None runs in-process; N runs N worker processes.
        fresh: discard what an earlier run stored in ``out``.
        quiet: no progress bars.

    Raises:
        ConfigError: the config is invalid (nothing has been run or written).
    """
    from tqdm.auto import tqdm

    config_path = Path(config_path)
    config = load_config(config_path)
    specs = expand(config)
    out = Path(out) if out is not None else Path("reports") / config.name
    store = Store(out, fresh=fresh)
    store.write_config(config_path.read_text(encoding="utf-8"))
    started = _now()
    store.write_manifest(_manifest(config_path, started, None, jobs))
    done = store.finished_ids()
    todo = [s for s in specs if s.id not in done]
    skipped = len(specs) - len(todo)

    trials_bar = tqdm(total=len(specs), initial=skipped, desc="trials", unit="trial",
                      disable=quiet, position=0)
    epoch_bar = tqdm(total=0, desc="epochs", unit="epoch", disable=quiet or jobs is not None,
                     position=1, leave=False)

    def progress(trial_id: str, done_epochs: int, total: int) -> None:
        if epoch_bar.total != total or done_epochs < epoch_bar.n:
            epoch_bar.reset(total=total)
        epoch_bar.update(done_epochs - epoch_bar.n)

    failed = 0
    try:
        for result in make_backend(jobs).run(todo, progress):
            store.save(result)
            failed += result.row.get("status") == "failed"
            trials_bar.set_postfix_str(f"{result.row.get('label')}: {result.row.get('status')}")
            trials_bar.update(1)
    finally:
        epoch_bar.close()
        trials_bar.close()
        store.write_manifest(_manifest(config_path, started, _now(), jobs))
    trials = store.trials()
    ids = [s.id for s in specs]
    summary = trials.set_index("id").reindex(ids) if len(trials) else pd.DataFrame()
    summary = summary[[c for c in SUMMARY_COLUMNS if c in summary.columns]]
    return SweepOutcome(out, len(todo), skipped, failed, summary)


def format_summary(summary: pd.DataFrame) -> str:
    """The end-of-sweep table as text, one line per trial."""
    if summary.empty:
        return "(no trials)"
    return summary.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")
