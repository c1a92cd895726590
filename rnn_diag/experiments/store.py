"""The on-disk result store of a sweep. Only the driver writes it; every write is atomic.

Layout of a store directory (``reports/<name>/`` by default)::

    config.yaml            the config file exactly as given
    manifest.json          versions, command line, start/end time, git commit
    trials.parquet         one row per finished trial (the index of the store)
    <table>/<id>.parquet   long tables, one file per trial, keyed by the column ``trial``

``pandas.read_parquet(store / "curves")`` reads a long table of every trial at once.

Column types of ``trials.parquet`` never depend on which trials failed (docs/design.md §20):
whole-number columns are nullable ``Int64`` (a failed trial's missing value is ``<NA>``, not a
float NaN that turns the column into float64), the numeric columns of :data:`FLOAT_COLUMNS`
are float64 (NaN), and a swept setting is ``Int64`` when every value given is a whole number
(``None`` allowed), float64 when it mixes numbers. The same rows give the same dtypes before
and after a resume.

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

import numpy as np
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
    FIXED_POINTS = "fixed_points"
    FIXED_POINT_EIGENVALUES = "fixed_point_eigenvalues"
    STATE_TRAJECTORIES = "state_trajectories"
    PCA = "pca"


#: The long tables a trial may store, in the order the report uses them.
TABLES = (Table.CURVES, Table.GRADIENTS, Table.SUMMARIES, Table.SPECTRA, Table.LYAPUNOV,
          Table.PREDICTIONS, Table.FIXED_POINTS, Table.FIXED_POINT_EIGENVALUES,
          Table.STATE_TRAJECTORIES, Table.PCA)

TRIALS = f"{Table.TRIALS}.parquet"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
#: Statuses of a trial that is not run again on resume ("failed" trials are retried).
DONE = ("ok", "diverged")


#: Columns of ``trials.parquet`` that are ``Int64`` whatever their values (missing: ``<NA>``).
INT_COLUMNS = ("task.seq_len", "model.hidden_size", "model.num_layers", "train.seed",
               "epochs_run", "horizon_first", "horizon_last", "fixed_points_stable_end",
               "fixed_points_saddle_end", "fixed_points_unstable_end",
               "fixed_points_marginal_end", "fixed_points_unconverged_end", "memory_steps",
               "loss_steps")
#: Text columns of ``trials.parquet``: pandas' ``str`` dtype (missing: NaN) whatever their values,
#: also when every value is missing (e.g. ``error`` when no trial failed).
TEXT_COLUMNS = ("id", "label", "status", "error", "metric", "loss_name", "verdict_first",
                "verdict_last", "task.name", "model.cell", "model.init", "remedy")
#: Columns that are float64 whatever their values (missing: NaN), even when every trial that
#: wrote them failed.
FLOAT_COLUMNS = ("model.weight_scale", "train.clip_grad_norm", "seconds", "train_loss",
                 "train_metric", "val_loss", "val_metric", "chance_loss", "chance_metric",
                 "best_loss", "best_metric",
                 "decay_per_step_first", "decay_per_step_last", "ratio_log10_first",
                 "ratio_log10_last", "spectral_radius_init", "spectral_radius_end",
                 "spectral_norm_init", "spectral_norm_end", "lyapunov_top_init",
                 "lyapunov_top_end", "slowest_stable_modulus_end")


def _missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and value != value  # NaN


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def trials_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows of ``trials.parquet`` as a DataFrame with stable dtypes (see the module
    docstring): :data:`INT_COLUMNS` and whole-number columns ``Int64``, :data:`FLOAT_COLUMNS`
    and other numeric columns float64, :data:`TEXT_COLUMNS` ``str``; other columns as pandas
    makes them.

    Example:
        >>> df = trials_frame([{"id": "a", "horizon_last": 5, "train.lr": 1, "error": None},
        ...                    {"id": "b", "horizon_last": None, "train.lr": 0.5}])
        >>> df.dtypes.astype(str).to_dict()
        {'id': 'str', 'horizon_last': 'Int64', 'train.lr': 'float64', 'error': 'str'}
    """
    df = pd.DataFrame(rows)
    types = {}
    for col in df.columns:
        values = [v for v in df[col].tolist() if not _missing(v)]
        if col in INT_COLUMNS or (values and all(_is_int(v) for v in values)):
            types[col] = "Int64"
        elif col in FLOAT_COLUMNS or (values and all(_is_number(v) for v in values)):
            types[col] = "float64"
        elif col in TEXT_COLUMNS:
            types[col] = "str"
    if not types:
        return df
    out = df.astype({c: "object" for c in types})  # so that None, NaN and pd.NA all read as
    for col, dtype in types.items():              # missing in the conversion below
        column = out[col].map(lambda v: None if _missing(v) else v)
        out[col] = pd.array(column.tolist(), dtype=dtype)
    return out


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

    def stored_rows(self) -> dict[str, dict]:
        """Every stored row (finished or not), by trial id."""
        return {r["id"]: dict(r) for r in self._rows}

    def relabel(self, updates: dict[str, dict]) -> None:
        """Set the given columns of stored rows (``{trial id: {column: value}}``) and rewrite
        ``trials.parquet`` once; ids not stored are ignored. For names only (a trial's label,
        the value names of named axes): a row's measurements are never changed here."""
        if not any(r["id"] in updates for r in self._rows):
            return
        self._rows = [{**r, **updates.get(r["id"], {})} for r in self._rows]
        write_parquet(self.root / TRIALS, self.trials())

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
        """``trials.parquet`` as a DataFrame (one row per stored trial), with the dtypes of
        :func:`trials_frame`."""
        return trials_frame(self._rows)

    def table(self, name: str) -> pd.DataFrame:
        """A long table over every stored trial (empty when none wrote it)."""
        path = self.root / name
        files = sorted(path.glob("*.parquet")) if path.is_dir() else []
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
