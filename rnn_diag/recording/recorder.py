"""Record a user's own training loop into a run folder that ``rnn-diag report`` renders.

::

    import rnn_diag as rd

    with rd.record("runs/lstm", model, every=50) as rec:
        for step, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rec.log(step, loss=loss.item())

    # then: rnn-diag report runs/lstm

The recorder keeps a :class:`rnn_diag.Probe` attached (its hooks cost next to nothing on the
steps it does not record) and records every ``every``-th backward pass. It writes the store
format of ``rnn-diag run`` (:mod:`rnn_diag.experiments.store`), one trial per recorded module
and ``name``, with training *steps* where a sweep has epochs:

* ``gradients``: :meth:`rnn_diag.Probe.frame` rows, ``step`` in place of ``iteration``;
* ``summaries``: :func:`rnn_diag.gradient_summary` of each recorded batch-mean profile;
* ``curves``: what :meth:`Recorder.log` was given (``loss=`` is stored as ``train_loss``);
* ``spectra`` and ``lyapunov``: the recurrent weights' spectra and the Lyapunov exponents of
  the dynamics driven by the module's own recent inputs, at the start ("init"), at chosen
  steps and at the end ("end").

A *step* is a backward pass that reached the recorded modules, counted from 0: in a loop with
one backward per optimizer step it is the loop's step index. Pass ``rec.log(step, ...)`` the
same numbering.

Nothing is lost to a crash: the folder is rewritten (atomically, under a lock) every
``flush_seconds`` and when the recorder closes; an exception or Ctrl-C inside ``with`` stores
what was recorded with the status "failed" or "interrupted", and a process killed outright
leaves the last flush with the status "running".
"""

from __future__ import annotations

import atexit
import datetime as dt
import math
import re
import sys
import time
import traceback
import warnings
import weakref
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..experiments.derived_columns import derived_columns
from ..experiments.store import Table
from ..modules.layers import FUSED_TYPES, cell_kind, module_kind
from ..modules.scans import scan_cell_name
from ..probes import Probe, ProbeWarning
from ..probes.discovery import find_recurrent
from ..probes.summaries import summarise_frame
from .run_folder import RunFolder
from .snapshots import InputTape, lyapunov_rows, spectra_rows, supports_snapshots

__all__ = ["Recorder", "record"]

#: When spectra and Lyapunov exponents are taken by default: before the first update and at
#: the end.
DEFAULT_SNAPSHOTS = ("init", "end")
#: A recording is "diverged" when its last BLOW_UP_PATIENCE logged training losses all exceed
#: BLOW_UP_FACTOR × its first one (the sweep's rule of ``train.divergence.first_factor``; a
#: recording has no chance level), or when the last one is not finite.
BLOW_UP_FACTOR = 100.0
BLOW_UP_PATIENCE = 3


def record(run_dir, model: nn.Module, *, every: int = 50, modules=None,
           jacobians: str | None = "estimate", jacobian_samples: int | None = 8,
           spectra: Iterable = DEFAULT_SNAPSHOTS, lyapunov: Iterable = DEFAULT_SNAPSHOTS,
           lyapunov_steps: int = 500, lyapunov_k: int | None = 16, name: str | None = None,
           description: str | None = None,
           flush_seconds: float = 30.0, resume: bool = False,
           start_step: int | None = None) -> Recorder:
    """Record the gradient flow of ``model`` in the user's own training loop.

    Args:
        run_dir: the run folder (created if missing; other recordings in it are kept, an
            earlier recording of the same ``name`` is replaced).
        model: the model; every nn.RNN/GRU/LSTM and cell inside it is recorded (or ``modules``).
        every: record every ``every``-th backward pass (the 1st, the every+1-th, ...).
        modules: as for :func:`rnn_diag.attach` (names or modules; custom cells allowed).
        jacobians: None, "exact" or "estimate" (default): also record the Jacobian-product
            norms (see :func:`rnn_diag.attach`).
        jacobian_samples: the samples of the batch the Jacobian-product norms are taken on (8:
            see ``benchmarks/record_overhead.py`` for what the defaults cost).
        spectra, lyapunov: when to take the weight spectra and the Lyapunov exponents:
            "init" (the first recorded forward, before any update), step numbers (the first
            forward at or after that step), and "end" (when the recorder closes). ``()``: never.
        lyapunov_k: how many leading Lyapunov exponents (None: all S, one QR of the full
            [S, S] tangent block per step, about 4× the cost of 16 for a 2-layer LSTM with
            H = 128). The leading ones are exact whatever k; they set the gradient's slope.
        lyapunov_steps: the length of the input sequence driving the Lyapunov exponents (the
            module's most recent inputs, samples strung end to end).
        name: the recording's name (default: the model's class name); one trial per recorded
            module, named ``name`` (one module) or ``name--module``.
        description: a sentence for the report's header.
        flush_seconds: rewrite the folder at most this often while recording.
        resume: continue a recording of the same ``name`` already in ``run_dir`` (a training
            resumed from a checkpoint) instead of replacing it: its rows before
            ``start_step`` are read back and new ones added; snapshots it already took are not
            taken again.
        start_step: the number of the first backward pass: a resumed loop's global step (the
            checkpoint's), so that the steps continue the earlier recording's on the same
            ``every`` grid; rows the earlier recording stored from that step on (after the
            checkpoint) are dropped. Default: 0, or with ``resume`` the step where the stored
            recording stopped.

    Returns:
        The :class:`Recorder`; use it as a context manager, or call :meth:`Recorder.close`.

    Example:
        >>> import tempfile, torch, rnn_diag as rd
        >>> rnn = torch.nn.GRU(3, 8)
        >>> opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
        >>> with rd.record(tempfile.mkdtemp(), rnn, every=2, lyapunov=()) as rec:
        ...     for step in range(4):
        ...         out, _ = rnn(torch.randn(20, 5, 3))
        ...         loss = out[-1].pow(2).mean()
        ...         opt.zero_grad(); loss.backward(); opt.step()
        ...         rec.log(step, loss=loss.item())
        >>> sorted(rec.summaries()["step"].unique().tolist())
        [0, 2]
    """
    return Recorder(run_dir, model, every=every, modules=modules, jacobians=jacobians,
                    jacobian_samples=jacobian_samples, spectra=spectra, lyapunov=lyapunov,
                    lyapunov_steps=lyapunov_steps, lyapunov_k=lyapunov_k, name=name,
                    description=description,
                    flush_seconds=flush_seconds, resume=resume, start_step=start_step)


def _when_list(value, key: str) -> tuple:
    if isinstance(value, (str, int)):
        value = [value]
    out = []
    for w in value:
        if w in ("init", "end") or (isinstance(w, int) and not isinstance(w, bool) and w >= 0):
            out.append(w)
        else:
            raise ValueError(f"{key}: expected 'init', 'end' or a step number >= 0, got {w!r}")
    return tuple(out)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "model"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _kind(module: nn.Module) -> tuple[str, str | None]:
    """("rnn" | "gru" | "lstm" | "lru" | "mingru" | "ssm" | "custom", nonlinearity or None), as
    the runner names cells; a registered scan layer is "scan"."""
    scan = scan_cell_name(module)
    if scan is not None:
        return scan, None
    kind = module_kind(module) if isinstance(module, FUSED_TYPES) else cell_kind(module)
    if kind is None:
        return "custom", None
    if kind.startswith("rnn_"):
        return "rnn", kind[4:]
    return kind, None


class Recorder:
    """A recording in progress; made by :func:`rnn_diag.record` (see there for the arguments).

    With ``manual=True`` (for integrations such as the Lightning callback, which attach a
    probe only on the steps they record) the recorder's own probe is detached at once; the
    caller hands in each recorded frame with :meth:`add_frame` and the current step with
    :meth:`set_step`. Snapshots, curves and the folder work as in the automatic mode.

    Attributes:
        probe: the attached :class:`rnn_diag.Probe` (read it as usual between steps).
        folder: the run folder.
        trial_ids: module name -> its trial id in the folder.
    """

    def __init__(self, run_dir, model: nn.Module, *, every: int = 50, modules=None,
                 jacobians: str | None = "estimate", jacobian_samples: int | None = 8,
                 spectra: Iterable = DEFAULT_SNAPSHOTS, lyapunov: Iterable = DEFAULT_SNAPSHOTS,
                 lyapunov_steps: int = 500, lyapunov_k: int | None = 16, name: str | None = None,
                 description: str | None = None, flush_seconds: float = 30.0,
                 manual: bool = False, resume: bool = False, start_step: int | None = None):
        self._spectra_at = _when_list(spectra, "spectra")
        self._lyapunov_at = _when_list(lyapunov, "lyapunov")
        if int(lyapunov_steps) < 10:
            raise ValueError(f"lyapunov_steps must be at least 10, got {lyapunov_steps!r}")
        if start_step is not None and (not isinstance(start_step, int)
                                       or isinstance(start_step, bool) or start_step < 0):
            raise ValueError(f"start_step must be None or an int >= 0, got {start_step!r}")
        targets = find_recurrent(model, modules)
        self.name = name if name is not None else type(model).__name__
        several = len(targets) > 1
        self.trial_ids = {n: _safe(f"{self.name}--{n or 'model'}" if several else self.name)
                          for n in targets}
        stored = _stored_steps(Path(run_dir), self.trial_ids.values()) if resume else {}
        if start_step is None:  # a resumed recording goes on where the stored one stopped
            start_step = max(stored.values(), default=0)
        self.start_step = start_step
        self.probe = Probe(model, modules=modules, every=every, jacobians=jacobians,
                           jacobian_samples=jacobian_samples, start=start_step)
        self._manual_step: int | None = None
        if manual:  # the caller probes the steps it chooses and hands the rows in (add_frame)
            self.probe.detach()
            self._manual_step = start_step
        self.folder = RunFolder(run_dir, description)
        self.flush_seconds = float(flush_seconds)
        self._modules = {n: m for n, m in model.named_modules() if n in self.probe.modules}
        self._settings = {"every": every, "jacobians": jacobians,
                          "jacobian_samples": jacobian_samples,
                          "spectra": list(self._spectra_at), "lyapunov": list(self._lyapunov_at),
                          "lyapunov_steps": int(lyapunov_steps), "lyapunov_k": lyapunov_k,
                          "step_unit": "optimizer step" if manual else "backward pass"}
        self._lyapunov_k = lyapunov_k
        self._tapes = {n: InputTape(m, lyapunov_steps) for n, m in self._modules.items()
                       if supports_snapshots(m)}
        self._gradients: list[pd.DataFrame] = []  # probe frame rows, `step` for `iteration`
        self._summaries: list[pd.DataFrame] = []  # their summaries, made once per frame
        self._curves: list[dict] = []
        self._spectra: dict[str, list[pd.DataFrame]] = {n: [] for n in self._modules}
        self._lyapunov: dict[str, list[dict]] = {n: [] for n in self._modules}
        self._done_snapshots: set = set()
        self._started = _now()
        self._t0 = time.perf_counter()
        self._last_flush = time.monotonic()
        self._status, self._error = "running", None
        self._closed = False
        self._warned: set[str] = set()
        self._notes: list[str] = []  # ProbeWarnings of probes other than self.probe
        self._handles = [m.register_forward_pre_hook(self._pre_hook(n))
                         for n, m in self._modules.items()]
        unsupported = [n or "<root>" for n, m in self._modules.items()
                       if not supports_snapshots(m)]
        if unsupported and (self._spectra_at or self._lyapunov_at):
            self._warn(f"no spectra or Lyapunov exponents for the custom cell(s) "
                       f"{unsupported}: they have no weight_hh to read")
        if resume:
            self._resume(stored)
        self._atexit = _register_atexit(self)
        self.flush()

    # ---------------------------------------------------------------- the user's side
    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close(status="interrupted", error=f"interrupted ({self._where()})")
        else:
            self.close(status="failed", error=f"{exc_type.__name__}: {exc} ({self._where()})")
        return False

    @property
    def step(self) -> int:
        """The backward passes so far: the step the next backward will be (in manual mode:
        what :meth:`set_step` was last told)."""
        if self._manual_step is None:
            return self.probe.backwards  # numbered from start_step
        return self._manual_step

    def set_step(self, step: int) -> None:
        """Manual mode (``manual=True``, the recorder's probe detached): the current training
        step, which dates the snapshots and the status messages."""
        self._manual_step = int(step)

    def note(self, messages: Iterable[str]) -> None:
        """Manual mode: keep the ProbeWarnings of a probe other than the recorder's own
        (:attr:`rnn_diag.Probe.warnings`) in the trial row's ``warnings``."""
        for text in messages:
            if text not in self._notes:
                self._notes.append(text)

    def add_frame(self, frame: pd.DataFrame, step: int) -> None:
        """Manual mode: store the rows of a :meth:`rnn_diag.Probe.frame` of one recorded
        backward as training step ``step`` (its ``iteration`` column is replaced)."""
        if len(frame):
            frame = frame.drop(columns=["iteration"], errors="ignore")
            frame.insert(0, "step", int(step))
            self._append(frame)

    def log(self, step: int | None = None, **values) -> None:
        """Store the user's numbers of one step (losses, metrics): one ``curves`` row.

        Args:
            step: the step they belong to (default: the last backward's, ``self.step - 1``).
            values: name -> number (float, int or a 0-d tensor); ``loss`` is stored as
                ``train_loss``, the name the report's loss figure reads.

        Example: ``rec.log(step, loss=loss.item(), val_loss=val, accuracy=acc)``.
        """
        if step is None:
            step = max(self.step - 1, 0)
        row = {"step": int(step)}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().item()
            row["train_loss" if key == "loss" else key] = float(value)
        self._curves.append(row)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def snapshot(self, when: str | None = None) -> None:
        """Take the weight spectra and Lyapunov exponents now (``when`` defaults to the
        current step), on the most recent inputs of each module."""
        self._snapshot(str(self.step) if when is None else str(when), spectra=True,
                       lyapunov=True)

    def flush(self) -> None:
        """Write what was recorded so far to the run folder (atomically)."""
        self._collect()
        self._last_flush = time.monotonic()
        recording = {"command": list(sys.argv), "started": self._started,
                     "ended": None if self._status == "running" else _now(),
                     "name": self.name}
        for module, trial_id in self.trial_ids.items():
            tables, row = self._tables(module), self._row(module)
            self.folder.save(trial_id, row, tables, recording,
                             {**self._settings, "name": self.name, "module": module})

    def close(self, status: str = "ok", error: str | None = None) -> None:
        """Take the "end" snapshots, detach the probe and write the folder with ``status``
        ("ok", or "failed"/"interrupted" as ``with`` sets them). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if status == "ok":
                self._snapshot("end", spectra="end" in self._spectra_at,
                               lyapunov="end" in self._lyapunov_at)
                status, error = self._diverged() or (status, error)
        finally:
            for handle in self._handles:
                handle.remove()
            self.probe.detach()
            self._status, self._error = status, error
            atexit.unregister(self._atexit)
            self.flush()

    def summaries(self) -> pd.DataFrame:
        """The ``summaries`` rows recorded so far, all modules (column ``module``)."""
        self._collect()
        return self._module_summaries(None)

    # ---------------------------------------------------------------- internals
    def _pre_hook(self, name: str):
        def hook(module, args):
            if not torch.is_grad_enabled() or not args:
                return None
            try:  # never raise into the user's forward
                tape = self._tapes.get(name)
                if tape is not None and module.training:  # not a validation pass with grad on
                    tape.add(args[0])
                self._due_snapshots()
                if time.monotonic() - self._last_flush >= self.flush_seconds:
                    self.flush()
            except Exception as error:  # noqa: BLE001
                self._warn(f"could not record a snapshot or write the folder ({error!r})")
            return None

        return hook

    def _due_snapshots(self) -> None:
        step = self.step
        for when in ("init", *sorted(w for w in {*self._spectra_at, *self._lyapunov_at}
                                     if isinstance(w, int))):
            key = "init" if when == "init" else str(when)
            if key in self._done_snapshots or (when != "init" and step < when):
                continue
            self._snapshot(key, spectra=when in self._spectra_at,
                           lyapunov=when in self._lyapunov_at)

    def _snapshot(self, when: str, *, spectra: bool, lyapunov: bool) -> None:
        self._done_snapshots.add(when)
        device = next((p.device for m in self._modules.values() for p in m.parameters()),
                      torch.device("cpu"))
        forked = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        with forked, torch.no_grad():
            for name, module in self._modules.items():
                if not supports_snapshots(module):
                    continue
                if spectra:
                    self._spectra[name].append(spectra_rows(module, when))
                inputs = self._tapes[name].sequence()
                if lyapunov and inputs is not None and inputs.shape[0] >= 10:
                    self._lyapunov[name] += lyapunov_rows(module, inputs, when,
                                                          k=self._lyapunov_k)

    def _where(self) -> str:
        """Where training stood, for a status message: "after step N" (the last backward pass
        that reached the modules, or optimizer step in manual mode)."""
        done = self.step - self.start_step
        if done <= 0:
            return f"before step {self.step}" if self.start_step else "before the first step"
        return f"after step {self.step - 1}"

    def _resume(self, stored: dict[str, int]) -> None:
        """Continue the recordings of this name already in the folder: their gradients,
        curves, spectra and Lyapunov rows are read back (the snapshots they took are not taken
        again; their "end" snapshot becomes the snapshot of the step it was taken at). Rows at
        or after ``start_step`` (recorded after the checkpoint a run resumes from) are
        dropped, so no step is stored twice."""
        keep = self.start_step
        folder = self.folder.root
        for module, trial_id in self.trial_ids.items():
            ended = str(stored[trial_id]) if trial_id in stored else "resumed"
            def read(table, trial_id=trial_id):
                path = folder / table / f"{trial_id}.parquet"
                return pd.read_parquet(path).drop(columns=["trial"]) if path.is_file() else None

            gradients = read(Table.GRADIENTS)
            if gradients is not None:
                gradients = gradients[gradients["step"] < keep]
                gradients.insert(1, "module", module)
                self._append(gradients)
            spectra = read(Table.SPECTRA)
            if spectra is not None:
                spectra["when"] = spectra["when"].astype(str).replace("end", ended)
                spectra = spectra[spectra["when"].map(lambda w: _before(w, keep))]
                self._spectra[module].append(spectra)
                self._done_snapshots.update(spectra["when"].astype(str))
            lyap = read(Table.LYAPUNOV)
            if lyap is not None:
                lyap["when"] = lyap["when"].astype(str).replace("end", ended)
                lyap = lyap[lyap["when"].map(lambda w: _before(w, keep))]
                self._lyapunov[module] += lyap.to_dict("records")
                self._done_snapshots.update(lyap["when"].astype(str))
            curves = read(Table.CURVES)
            if curves is not None and not self._curves:  # shared by the modules: read once
                self._curves = curves[curves["step"] < keep].to_dict("records")
        self._done_snapshots.discard("end")

    def _collect(self) -> None:
        frame = self.probe.take_frame()
        if len(frame):
            self._append(frame.rename(columns={"iteration": "step"}))

    def _append(self, frame: pd.DataFrame) -> None:
        """Keep gradient rows (with ``step`` and ``module``) and their summaries."""
        if len(frame):
            self._gradients.append(frame)
            self._summaries.append(
                summarise_frame(frame, by=("step", "module", "layer", "direction")))

    def _module_gradients(self, module: str) -> pd.DataFrame:
        frames = [f[f["module"] == module] for f in self._gradients]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True).drop(columns=["module"])

    def _module_summaries(self, module: str | None) -> pd.DataFrame:
        """The summaries of one module (without its column), or of all (``None``)."""
        frames = [f for f in self._summaries if len(f)]
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True).sort_values(["step", "module", "layer",
                                                                "direction"], kind="stable")
        if module is None:
            return df.reset_index(drop=True)
        return df[df["module"] == module].drop(columns=["module"]).reset_index(drop=True)

    def _tables(self, module: str) -> dict[str, pd.DataFrame]:
        gradients = self._module_gradients(module)
        summaries = self._module_summaries(module)
        spectra = self._spectra[module]
        return {
            Table.CURVES: pd.DataFrame(self._curves),
            Table.GRADIENTS: gradients,
            Table.SUMMARIES: summaries,
            Table.SPECTRA: pd.concat(spectra, ignore_index=True) if spectra else pd.DataFrame(),
            Table.LYAPUNOV: pd.DataFrame(self._lyapunov[module]),
        }

    def _row(self, module: str) -> dict:
        m = self._modules[module]
        cell, nonlinearity = _kind(m)
        summaries = self._module_summaries(module)
        last_curve = pd.DataFrame(self._curves).ffill().iloc[-1] if self._curves else {}
        several = len(self._modules) > 1
        row = {
            "label": f"{self.name}: {module or 'model'}" if several else self.name,
            "recording.name": self.name,
            "recording.module": module or "model",
            "time_unit": "step",
            "status": self._status,
            "error": self._error,
            "warnings": "\n".join(self._warnings()) or None,
            "seconds": time.perf_counter() - self._t0,
            "steps_run": self.step,
            "task.name": None,
            "task.seq_len": (int(summaries["steps"].iloc[-1]) if len(summaries) else None),
            "model.cell": cell,
            "model.nonlinearity": nonlinearity,
            "model.hidden_size": getattr(m, "hidden_size", None),
            "model.num_layers": getattr(m, "num_layers", 1),
            "train_loss": float(last_curve.get("train_loss", math.nan)),
            "val_loss": float(last_curve.get("val_loss", math.nan)),
            "chance_loss": math.nan,
            "chance_metric": math.nan,
        }
        spectra = self._spectra[module]
        spectra = pd.concat(spectra) if spectra else pd.DataFrame()
        row.update(derived_columns(summaries, spectra, pd.DataFrame(self._lyapunov[module])))
        return row

    def _diverged(self) -> tuple[str, str] | None:
        """("diverged", reason) when the last logged training loss is not finite, or when the
        last :data:`BLOW_UP_PATIENCE` logged ones are all above :data:`BLOW_UP_FACTOR` × the
        first one (a loss that blew up and stayed there; one spike that recovers is not)."""
        losses = [(r["step"], r["train_loss"]) for r in self._curves if "train_loss" in r]
        if not losses:
            return None
        last_step, last = losses[-1]
        if not math.isfinite(last):
            first_bad = next(s for s, v in losses if not math.isfinite(v))
            return "diverged", f"loss became {last} (first non-finite at step {first_bad})"
        first = next((v for _, v in losses if math.isfinite(v) and v > 0), None)
        tail = [v for _, v in losses[-BLOW_UP_PATIENCE:]]
        if (first is not None and len(losses) > BLOW_UP_PATIENCE
                and all(v > BLOW_UP_FACTOR * first for v in tail)):
            return "diverged", (
                f"train loss {last:.2g} at step {last_step}, {last / first:.2g}× the first "
                f"logged loss (limit {BLOW_UP_FACTOR:g}×, over the last {BLOW_UP_PATIENCE} "
                "logged losses)")
        return None

    def _warnings(self) -> list[str]:
        """The ProbeWarnings of this recording (the probe's and those handed in), and the
        recorder's own, each once: kept in the trial row, because a warning printed once to a
        terminal is lost when the folder is read later."""
        return list(dict.fromkeys([*self.probe.warnings, *self._notes]))

    def _warn(self, message: str) -> None:
        key = message.split("(")[0]
        if key in self._warned:
            return
        self._warned.add(key)
        self._notes.append(f"rnn_diag.record: {message}")
        warnings.warn(f"rnn_diag.record: {message}", ProbeWarning, stacklevel=3)


def _before(when: str, step: int) -> bool:
    """Whether a snapshot ``when`` ("init", "end" or a step number) was taken on weights no
    later than those of step ``step`` (snapshot s is taken before step s's update)."""
    return when == "init" or (when.isdigit() and int(when) <= step)


def _stored_steps(root: Path, trial_ids) -> dict[str, int]:
    """``{trial id: steps_run}`` of the given trials stored in the run folder ``root``."""
    path = root / "trials.parquet"
    if not path.is_file():
        return {}
    rows = pd.read_parquet(path)
    if "steps_run" not in rows:
        return {}
    rows = rows[rows["id"].isin(list(trial_ids)) & rows["steps_run"].notna()]
    return {str(r["id"]): int(r["steps_run"]) for _, r in rows.iterrows()}


def _register_atexit(recorder: Recorder):
    """Close a recorder that the process ends with (status "unfinished"), without keeping it
    alive: the handler holds a weak reference."""
    ref = weakref.ref(recorder)

    def handler():
        rec = ref()
        if rec is not None and not rec._closed:
            try:
                rec.close(status="unfinished",
                          error="the process ended without Recorder.close() or `with`")
            except Exception:  # noqa: BLE001 - the interpreter is ending; say it, do not raise
                traceback.print_exc()

    atexit.register(handler)
    return handler
