"""Load a run folder (the result store of ``rnn-diag run``) into memory for the report.

A run folder holds ``config.yaml``, ``manifest.json``, ``trials.parquet`` and the long tables
``curves/ gradients/ summaries/ spectra/ lyapunov/ predictions/`` and, when fixed points were
analysed, ``fixed_points/ fixed_point_eigenvalues/ state_trajectories/ pca/`` (one Parquet file
per trial, column ``trial``); see :mod:`rnn_diag.experiments.store`. Only trials with a row in
``trials.parquet`` are finished: the table files of any other trial are ignored.

The report never re-runs a model: everything it shows comes from these files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..experiments.store import CONFIG, MANIFEST, TRIALS, Table
from ..experiments.store import TABLES as STORE_TABLES
from .figures._data import SWEEP, sweep_table

__all__ = ["FIXED_POINT_TABLES", "TABLES", "NotARunError", "RunData", "check_run", "find_runs",
           "is_run", "load_run", "missing_files"]

_REQUIRED = (TRIALS, CONFIG, MANIFEST)

#: Long tables of the fixed-point analysis (:func:`rnn_diag.fixed_points`), read whether or not
#: the store lists them in its own :data:`~rnn_diag.experiments.store.TABLES`.
FIXED_POINT_TABLES = ("fixed_points", "fixed_point_eigenvalues", "state_trajectories", "pca")
#: The long tables the report reads: the store's, then any of :data:`FIXED_POINT_TABLES` it
#: does not list.
TABLES = STORE_TABLES + tuple(t for t in FIXED_POINT_TABLES if t not in STORE_TABLES)


class NotARunError(Exception):
    """The folder is not a run folder; the message names it and what is missing."""


@dataclass(frozen=True)
class RunData:
    """Everything the report reads from one run folder.

    Attributes:
        root: the run folder.
        config_text: ``config.yaml`` exactly as stored.
        config: the parsed config as a plain mapping (``yaml.safe_load``); ``{}`` if unreadable.
        manifest: ``manifest.json`` as a mapping (``{}`` if unreadable).
        trials: ``trials.parquet``, one row per finished trial.
        tables: table name -> long DataFrame restricted to the finished trials (an empty
            DataFrame when the run did not record that table). Always has every key of
            :data:`TABLES`.
        swept: the swept dotted keys, in config order (``seed`` given as ``train.seed``).
        warnings: problems that did not stop loading (e.g. a config that is not valid YAML).
    """

    root: Path
    config_text: str
    config: dict[str, Any]
    manifest: dict[str, Any]
    trials: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    swept: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The experiment name from the config, else the folder name."""
        name = self.config.get("name")
        return str(name) if name not in (None, "") else self.root.name

    @property
    def description(self) -> str:
        """The config's description ("" when none)."""
        text = self.config.get("description")
        return "" if text is None else str(text).strip()

    def for_figures(self) -> dict[str, pd.DataFrame]:
        """The tables a figure's ``build`` receives: ``"trials"``, every long table and
        ``"sweep"``, the config's sweep in its order (:func:`~.figures._data.sweep_table`:
        e.g. the order and colours of the remedies)."""
        return {Table.TRIALS: self.trials, **self.tables, SWEEP: sweep_table(self.config)}


def is_run(path) -> bool:
    """True when ``path`` is a folder with the files of a run (see :func:`missing_files`)."""
    return not missing_files(Path(path))


def missing_files(path: Path) -> list[str]:
    """The files of a run that ``path`` lacks (all of them when it is not a folder)."""
    if not path.is_dir():
        return list(_REQUIRED)
    return [name for name in _REQUIRED if not (path / name).is_file()]


def find_runs(root) -> list[Path]:
    """The run folders directly under ``root``, sorted by name (``[]`` if none or no root)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_run(p))


def _read_config(path: Path) -> tuple[str, dict, list[str]]:
    """The config text, its mapping (with ``sweep`` keys in their stored spelling, e.g.
    ``seed`` → ``train.seed``), and warnings about what could not be read.

    The config is not re-validated: that imports torch (seconds) to list the optimizers, and
    the report shows what was run whatever today's schema says."""
    from ..experiments.config import SWEEP_ALIASES  # deferred: loads pydantic, only needed here

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return text, {}, [f"{path.name} is not valid YAML: {exc}"]
    if not isinstance(data, dict):
        return text, {}, [f"{path.name} is not a mapping"]
    raw = data.get("sweep") or {}
    sweep = {SWEEP_ALIASES.get(k, k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    return text, {**data, "sweep": sweep}, []


def _read_manifest(path: Path) -> tuple[dict, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        return {}, [f"{path.name} is not valid JSON: {exc}"]
    if not isinstance(data, dict):
        return {}, [f"{path.name} is not a JSON object"]
    return data, []


def _read_table(folder: Path, ids: list[str]) -> pd.DataFrame:
    """The per-trial files of the finished trials, concatenated (columns may differ)."""
    frames = []
    for trial_id in ids:
        f = folder / f"{trial_id}.parquet"
        if f.is_file():
            frames.append(pd.read_parquet(f))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return _for_report(pd.concat(frames, ignore_index=True))


def _for_report(df: pd.DataFrame) -> pd.DataFrame:
    """A stored table as the report computes with it.

    * Nullable integer columns (``Int64``: a column's dtype never depends on which trials
      failed) become float64 with NaN for missing values: the report's arithmetic and
      comparisons are NaN-aware, while ``pd.NA`` would raise in an ``if``.
    * A recording of a user's loop (:func:`rnn_diag.record`) counts training steps where the
      runner counts epochs: its column ``step`` is read as the report's time axis ``epoch``;
      ``trials.time_unit`` says which it is (see :func:`rnn_diag.report.figures.time_unit`);
      its ``steps_run`` is read as ``epochs_run``.
    """
    nullable = [c for c in df.columns if isinstance(df[c].dtype, pd.api.extensions.ExtensionDtype)
                and pd.api.types.is_integer_dtype(df[c].dtype)]
    if nullable:
        df = df.astype({c: "float64" for c in nullable})
    renames = {"step": "epoch", "steps_run": "epochs_run"}
    return df.rename(columns={k: v for k, v in renames.items()
                              if k in df.columns and v not in df.columns})


def check_run(path) -> Path:
    """``path`` as a Path if it is a run folder.

    Raises:
        NotARunError: ``path`` does not exist, is a file, or lacks ``trials.parquet``,
            ``config.yaml`` or ``manifest.json`` (the message names the folder and the
            missing files).
    """
    root = Path(path)
    if not root.exists():
        raise NotARunError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotARunError(f"{root}: is a file, not a run folder")
    missing = missing_files(root)
    if missing:
        raise NotARunError(
            f"{root}: not a run folder (missing {', '.join(missing)}; "
            "a run folder is written by `rnn-diag run`)"
        )
    return root


def load_run(path) -> RunData:
    """Read a run folder.

    Args:
        path: the folder written by ``rnn-diag run``.

    Raises:
        NotARunError: see :func:`check_run`.
    """
    root = check_run(path)
    config_text, config, warnings = _read_config(root / CONFIG)
    manifest, more = _read_manifest(root / MANIFEST)
    warnings += more
    trials = _for_report(pd.read_parquet(root / TRIALS))
    ids = [str(i) for i in trials["id"]] if "id" in trials else []
    tables = {name: _read_table(root / name, ids) for name in TABLES}
    swept = tuple(str(k) for k in config.get("sweep", {}))
    return RunData(root=root, config_text=config_text, config=config, manifest=manifest,
                   trials=trials, tables=tables, swept=swept, warnings=tuple(warnings))
