"""The sweep driver: config in, store out. Validates, expands the grid, skips finished trials,
runs the rest on a backend, writes each result as it arrives and prints a summary table, with
one line per trial that did not end "ok" naming its status and reason."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .backends import Backend, make_backend
from .config import load_config
from .grid import expand, trial_label
from .store import DONE, Store
from .versions import versions

SUMMARY_COLUMNS = ["label", "status", "train_loss", "val_loss", "val_metric", "chance_metric",
                   "verdict_last", "horizon_last", "seconds"]
#: Columns of :attr:`SweepOutcome.summary` that :func:`format_summary` prints under the table
#: (one line per trial that is not "ok") rather than in it.
NOTE_COLUMNS = ["error"]


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: the store directory, trial counts and the summary (the
    :data:`SUMMARY_COLUMNS` and :data:`NOTE_COLUMNS` of every trial of the config, by id).

    ``stale``: stored trials that are not trials of this config (an earlier run of the folder
    with other settings; kept, and shown by the report). ``renamed``: stored trials of this
    config whose label or named-axis names were renamed to the config's."""

    out: Path
    ran: int
    skipped: int
    failed: int
    summary: pd.DataFrame
    diverged: int = 0
    stale: int = 0
    renamed: int = 0


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def _manifest(config_path: Path, started: str, ended: str | None, execution: dict) -> dict:
    return {
        **versions(),
        "command": sys.argv,
        "config": str(config_path),
        **execution,
        "started": started,
        "ended": ended,
        "git_commit": _git_commit(),
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, after the backend stopped; what was stored is kept.

    Attributes: ``out`` (the store directory) and ``stored`` (trials finished in this run).
    """

    def __init__(self, out: Path, stored: int):
        super().__init__(f"interrupted; {stored} trial(s) of this run stored in {out}")
        self.out = out
        self.stored = stored


class EpochBars:
    """One tqdm bar per running trial (at most ``max_bars``, below the trials bar), labelled
    with the trial; a trial's bar appears with its first epoch report and goes when its result
    arrives. Trials beyond ``max_bars`` (a big cluster) are only counted in the trials bar.

    Late reports of a finished trial (they travel separately from results) are ignored.
    """

    def __init__(self, labels: dict[str, str], max_bars: int = 8, disable: bool = False):
        self.labels = labels
        self.max_bars = max_bars
        self.disable = disable
        self.bars: dict = {}  # trial id -> (slot, tqdm)
        self.finished: set[str] = set()

    def __call__(self, trial_id: str, done: int, total: int) -> None:
        if self.disable or trial_id in self.finished:
            return
        if trial_id not in self.bars:
            used = {slot for slot, _ in self.bars.values()}
            free = [s for s in range(self.max_bars) if s not in used]
            if not free:
                return
            bar = tqdm(total=total, desc=self.labels.get(trial_id, trial_id), unit="epoch",
                       position=1 + free[0], leave=False)
            self.bars[trial_id] = (free[0], bar)
        bar = self.bars[trial_id][1]
        bar.update(done - bar.n)

    def finish(self, trial_id: str) -> None:
        self.finished.add(trial_id)
        entry = self.bars.pop(trial_id, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        for trial_id in list(self.bars):
            self.finish(trial_id)


def _threads_used(runner, threads: int | None) -> int | str | None:
    """The torch threads per trial, for the manifest: the backend's resolved number where it
    has one (local backends), else what was asked (None: the backend's rule)."""
    resolved = getattr(runner, "threads", None)
    if resolved is None and type(runner).__name__ == "DaskBackend":
        return "CPUs / Dask threads per machine"
    return resolved if resolved is not None else threads


def run_sweep(config_path, out=None, jobs: int | None = None, fresh: bool = False,
              quiet: bool = False, backend: str | Backend = "local",
              scheduler: str | None = None, threads: int | None = None) -> SweepOutcome:
    """Run every unfinished trial of a config and store the results.

    Args:
        config_path: the YAML file.
        out: the store directory (default ``reports/<name>/``).
        jobs: see :func:`~rnn_diag.experiments.backends.make_backend`: with the local backend
            None runs in-process and N runs N worker processes.
        fresh: discard what an earlier run stored in ``out``.
        quiet: no progress bars.
        backend: ``"local"``, ``"dask"`` or a backend object (then ``jobs`` and ``scheduler``
            are only recorded in the manifest).
        scheduler: the Dask scheduler address (``tcp://HOST:PORT``) for ``backend="dask"``.
        threads: torch threads per trial (None: the backend's default, 1 for the local ones;
            see :func:`~rnn_diag.experiments.backends.make_backend`). In-process, torch's
            thread count is restored when the sweep ends. Recorded in the manifest.

    Raises:
        ConfigError: the config is invalid (nothing has been run or written).
        BackendError: the backend cannot be used (nothing has been run).
        SweepInterrupted: Ctrl-C; outstanding trials were cancelled, finished ones are stored.
    """
    config_path = Path(config_path)
    config = load_config(config_path)
    runner = (make_backend(backend, jobs, scheduler, threads) if isinstance(backend, str)
              else backend)
    execution = {"backend": backend if isinstance(backend, str) else type(backend).__name__,
                 "jobs": jobs, "scheduler": scheduler,
                 "threads": _threads_used(runner, threads)}
    specs = expand(config)
    out = Path(out) if out is not None else Path("reports") / config.name
    store = Store(out, fresh=fresh)
    store.write_config(config_path.read_text(encoding="utf-8"))
    started = _now()
    store.write_manifest(_manifest(config_path, started, None, execution))
    renamed = _rename_stored(store, specs, config)
    stale = len(set(store.stored_rows()) - {s.id for s in specs})
    done = store.finished_ids()
    todo = [s for s in specs if s.id not in done]
    skipped = len(specs) - len(todo)

    trials_bar = tqdm(total=len(specs), initial=skipped, desc="trials", unit="trial",
                      disable=quiet, position=0)
    bars = EpochBars({s.id: trial_label(s) for s in todo}, disable=quiet)

    failed = diverged = stored = 0
    try:
        with closing(runner.run(todo, None if quiet else bars)) as results:
            for result in results:
                bars.finish(result.trial_id)
                store.save(result)
                stored += 1
                failed += result.row.get("status") == "failed"
                diverged += result.row.get("status") == "diverged"
                trials_bar.set_postfix_str(
                    f"{result.row.get('label')}: {result.row.get('status')}")
                trials_bar.update(1)
    except KeyboardInterrupt:
        raise SweepInterrupted(out, stored) from None
    finally:
        bars.close()
        trials_bar.close()
        store.write_manifest(_manifest(config_path, started, _now(), execution))
    trials = store.trials()
    ids = [s.id for s in specs]
    summary = trials.set_index("id").reindex(ids) if len(trials) else pd.DataFrame()
    summary = summary[[c for c in SUMMARY_COLUMNS + NOTE_COLUMNS if c in summary.columns]]
    return SweepOutcome(out, len(todo), skipped, failed, summary, diverged, stale, renamed)


def _rename_stored(store: Store, specs, config) -> int:
    """Give stored trials of this config the labels and named-axis names the config gives them
    now: a trial's id hashes its settings, not the names, so a renamed value (``clip`` to
    ``clipping``) finds its trials stored under the old name. Returns how many were renamed."""
    rows = store.stored_rows()
    updates = {}
    for spec in specs:
        row = rows.get(spec.id)
        if row is None or row.get("status") not in DONE:
            continue  # not stored, or to be run again (and stored under the new names)
        names = {"label": trial_label(spec), **{a: spec.params[a] for a in config.axes}}
        if any(row.get(k) != v for k, v in names.items()):
            updates[spec.id] = names
    store.relabel(updates)
    return len(updates)


def format_summary(summary: pd.DataFrame) -> str:
    """The end-of-sweep table as text, one line per trial, then one line per trial whose
    status is not "ok" (diverged, failed): its label, status and reason (the ``error``)."""
    if summary.empty:
        return "(no trials)"
    table = summary[[c for c in summary.columns if c not in NOTE_COLUMNS]]
    text = table.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")
    if "status" not in summary.columns:
        return text
    notes = []
    for trial_id, row in summary.iterrows():
        status = row.get("status")
        if pd.isna(status) or status == "ok":
            continue
        error = row.get("error")
        reason = "" if error is None or pd.isna(error) else str(error).strip()
        reason = reason.splitlines()[0] if reason else "no reason recorded"
        label = row.get("label")
        name = trial_id if label is None or pd.isna(label) else label
        notes.append(f"  {name} [{trial_id}] {status}: {reason}")
    if notes:
        text += f"\n\n{len(notes)} trial(s) not ok:\n" + "\n".join(notes)
    return text
