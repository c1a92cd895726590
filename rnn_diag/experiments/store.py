"""The on-disk result store of a sweep. Only the driver writes it; every write is atomic.

Layout of a store directory (``reports/<name>/`` by default)::

    config.yaml            the config file exactly as given
    manifest.json          versions, command line, start/end time, git commit
    trials.parquet         one row per finished trial (the index of the store)
    <table>/<id>.parquet   long tables, one file per trial, keyed by the column ``trial``

``pandas.read_parquet(store / "curves")`` reads a long table of every trial at once.

Crash safety: a trial's tables are written first and its row in ``trials.parquet`` last, each
file through a temporary file and ``os.replace``; a trial without a row is not finished, and its
tables are overwritten when it runs again. ``kill -9`` at any moment leaves every file either
in its previous or its new complete state.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


class Table:
    """The table names of a store, spelled once for its writer (:mod:`.trial`) and its readers
    (:mod:`rnn_diag.report`). Plain ``str`` values.

    ``TRIALS`` is the index, one row per finished trial, stored as the file ``trials.parquet``;
    the others are long tables, stored as ``<name>/<trial id>.parquet`` (see :data:`TABLES`).
    """

    TRIALS = "trials"
    CURVES = "curves"
    GRADIENTS = "gradients"
    SUMMARIES = "summaries"
    SPECTRA = "spectra"
    LYAPUNOV = "lyapunov"
    PREDICTIONS = "predictions"


#: The long tables a trial may store, in the order the report uses them.
TABLES = (Table.CURVES, Table.GRADIENTS, Table.SUMMARIES, Table.SPECTRA, Table.LYAPUNOV,
          Table.PREDICTIONS)

TRIALS = f"{Table.TRIALS}.parquet"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
#: Statuses of a trial that is not run again on resume ("failed" trials are retried).
DONE = ("ok", "diverged")


@dataclass
class TrialResult:
    """What one trial produced: its row for ``trials.parquet`` and its long tables."""

    trial_id: str
    row: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write ``path`` through a temporary file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Atomically write a DataFrame as Parquet (pyarrow, no index)."""
    _atomic(Path(path), lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))


class Store:
    """A sweep's result directory.

    Args:
        root: the directory (created if missing).
        fresh: delete what an earlier run stored there first (only the store's own files).

    Example:
        >>> import tempfile
        >>> store = Store(tempfile.mkdtemp())
        >>> curves = pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5]})
        >>> store.save(TrialResult("t1", {"status": "ok", "loss": 0.5}, {Table.CURVES: curves}))
        >>> sorted(store.finished_ids()), store.table(Table.CURVES).shape
        (['t1'], (2, 3))
    """

    def __init__(self, root, fresh: bool = False):
        self.root = Path(root)
        if fresh and self.root.exists():
            self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        self._rows = self._load_rows()

    def clear(self) -> None:
        """Remove the store's files: trials, tables, manifest and config copy."""
        for name in (TRIALS, MANIFEST, CONFIG):
            (self.root / name).unlink(missing_ok=True)
        for sub in self.root.iterdir():
            if sub.is_dir() and any(p.suffix == ".parquet" for p in sub.iterdir()):
                shutil.rmtree(sub)

    def _load_rows(self) -> list[dict]:
        path = self.root / TRIALS
        if not path.exists():
            return []
        return pd.read_parquet(path).to_dict("records")

    def finished_ids(self) -> set[str]:
        """Ids of the trials stored with a status in :data:`DONE`."""
        return {r["id"] for r in self._rows if r.get("status") in DONE}

    def write_config(self, text: str) -> None:
        write_text(self.root / CONFIG, text)

    def write_manifest(self, manifest: dict) -> None:
        write_text(self.root / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")

    def save(self, result: TrialResult) -> None:
        """Store one trial: its tables, then its row (replacing an earlier row of that id).

        Tables an earlier attempt of the same trial wrote and this one did not (a failed trial
        run again) are removed, so that no table outlives its row."""
        for sub in self.root.iterdir():
            stale = sub / f"{result.trial_id}.parquet"
            if sub.is_dir() and sub.name not in result.tables and stale.exists():
                stale.unlink()
        for name, df in result.tables.items():
            df = df.copy()
            df.insert(0, "trial", result.trial_id)
            write_parquet(self.root / name / f"{result.trial_id}.parquet", df)
        row = {"id": result.trial_id, **result.row}
        self._rows = [r for r in self._rows if r["id"] != result.trial_id] + [row]
        write_parquet(self.root / TRIALS, self.trials())

    def trials(self) -> pd.DataFrame:
        """``trials.parquet`` as a DataFrame (one row per stored trial)."""
        return pd.DataFrame(self._rows)

    def table(self, name: str) -> pd.DataFrame:
        """A long table over every stored trial (empty when none wrote it)."""
        path = self.root / name
        files = sorted(path.glob("*.parquet")) if path.is_dir() else []
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
