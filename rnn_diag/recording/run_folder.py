"""A run folder that several recordings share: the store format of ``rnn-diag run``, written
under a lock so that recorders in several processes can write one folder.

The files are those of :mod:`rnn_diag.experiments.store` (``config.yaml``, ``manifest.json``,
``trials.parquet``, ``<table>/<id>.parquet``), each written atomically, so ``rnn-diag report``
reads a recording like a sweep. What differs:

* ``config.yaml`` is not a sweep config but a description of the recordings (``kind:
  recording``), with ``sweep: {name: [...]}`` listing them, so that the report treats each
  recording as one setting (its rows carry the dotted settings ``recording.name`` and
  ``recording.module``, as a sweep's carry ``model.cell``).
* ``manifest.json`` holds the versions and, per recording, the command line and the start and
  end times (``recordings``); ``started`` is the earliest start, ``ended`` the latest end.
* ``trials.parquet`` is re-read under the lock before each write, so a recorder never drops a
  row that another one wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from filelock import FileLock

from ..experiments.store import CONFIG, MANIFEST, TRIALS, write_parquet, write_text
from ..experiments.versions import versions

__all__ = ["RunFolder"]

LOCK = ".rnn_diag.lock"


class RunFolder:
    """The run folder ``root`` (created if missing), written by :class:`~.recorder.Recorder`.

    Args:
        root: the folder.
        description: a sentence for the report's header (kept from the first recorder when
            None).
    """

    def __init__(self, root, description: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.description = description
        self._lock = FileLock(str(self.root / LOCK))

    def save(self, trial_id: str, row: dict, tables: dict[str, pd.DataFrame],
             recording: dict, settings: dict) -> None:
        """Write one recording: its tables (column ``trial`` first), its row in
        ``trials.parquet`` (replacing an earlier row of ``trial_id``), then ``config.yaml`` and
        ``manifest.json``.

        Args:
            trial_id: the recording's id (its file name in every table folder).
            row: its ``trials.parquet`` row, without ``id``.
            tables: table name -> DataFrame; empty ones are not written.
            recording: this recording's manifest entry (command, started, ended, ...).
            settings: this recording's options, listed under ``recordings`` in config.yaml.
        """
        with self._lock:
            for name, df in tables.items():
                if len(df):
                    df = df.copy()
                    df.insert(0, "trial", trial_id)
                    write_parquet(self.root / name / f"{trial_id}.parquet", df)
            rows = self._rows()
            rows = [r for r in rows if r.get("id") != trial_id] + [{"id": trial_id, **row}]
            write_parquet(self.root / TRIALS, pd.DataFrame(rows))
            self._write_config(trial_id, rows, settings)
            self._write_manifest(trial_id, recording)

    def _rows(self) -> list[dict]:
        path = self.root / TRIALS
        return pd.read_parquet(path).to_dict("records") if path.is_file() else []

    def _read(self, name: str, parse) -> dict:
        path = self.root / name
        try:
            data = parse(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (ValueError, yaml.YAMLError):
            data = {}
        return data if isinstance(data, dict) else {}

    def _write_config(self, trial_id: str, rows: list[dict], settings: dict) -> None:
        old = self._read(CONFIG, yaml.safe_load)
        recordings = dict(old.get("recordings") or {})
        recordings[trial_id] = settings
        names = sorted({str(r["recording.name"]) for r in rows
                        if r.get("recording.name") is not None})
        modules = sorted({str(r["recording.module"]) for r in rows
                          if r.get("recording.module") is not None})
        sweep = {"recording.name": names}
        if len(modules) > 1:
            sweep["recording.module"] = modules
        description = self.description or old.get("description") or (
            "Recorded from a training loop with rnn_diag.record: the gradient flow of the "
            "user's own model at the recorded training steps.")
        config = {"name": self.root.name, "kind": "recording", "description": description,
                  "sweep": sweep, "recordings": recordings}
        text = ("# Written by rnn_diag.record: what was recorded here, not a sweep config.\n"
                + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        write_text(self.root / CONFIG, text)

    def _write_manifest(self, trial_id: str, recording: dict) -> None:
        old = self._read(MANIFEST, json.loads)
        recordings = dict(old.get("recordings") or {})
        recordings[trial_id] = recording
        starts = [r["started"] for r in recordings.values() if r.get("started")]
        ends = [r["ended"] for r in recordings.values() if r.get("ended")]
        manifest = {
            "kind": "recording",
            **versions(),
            "command": recording.get("command"),
            "started": min(starts) if starts else None,
            "ended": max(ends) if ends and len(ends) == len(recordings) else None,
            "recordings": recordings,
        }
        write_text(self.root / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
