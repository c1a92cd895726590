"""Lightning: a callback that records the per-timestep gradient flow of a LightningModule's
recurrent modules every N optimizer steps and logs it to the Trainer's loggers.

Needs ``pip install 'rnn_diag[lightning]'``. Usage::

    from lightning.pytorch import Trainer
    from rnn_diag.integrations.lightning import GradientFlowMonitor

    monitor = GradientFlowMonitor(every_n_steps=50, run_dir="runs/lstm")  # run_dir: optional
    Trainer(callbacks=[monitor], max_steps=5000).fit(model, data)
    # then: rnn-diag report runs/lstm

What it does:

* On a recorded step (``trainer.global_step`` a multiple of ``every_n_steps``) it attaches a
  :class:`rnn_diag.Probe` in ``on_train_batch_start``, before the forward, and reads it and
  detaches it in ``on_before_optimizer_step``, after the backward, so steps it does not record
  cost nothing. With gradient accumulation the last micro-batch's backward is kept.
* Values are after unscaling: under AMP with a gradient scaler (``precision="16-mixed"``), the
  loss was multiplied by the scaler's scale S before the backward, so every ∂L/∂h_t is S times
  too large; the callback subtracts log10 S from the gradient metrics (``total_*``,
  ``immediate_*``), as the precision plugin unscales the parameter gradients before this hook.
  Note that the probe does not record forwards run under ``torch.autocast`` (it says so with a
  :class:`rnn_diag.ProbeWarning`): for recorded steps, train in full precision.
* Logging: every Trainer logger receives the scalars ``rnn_diag/<module>/<layer>/horizon``,
  ``decay_per_step``, ``verdict`` (−1 vanishing, 0 stable, +1 exploding), ``log10_grad_first``
  and ``steps`` at the recorded global step. A TensorBoard or W&B logger also receives the
  figures (profile and step × distance heatmap) through :mod:`rnn_diag.integrations.tensorboard`
  and :mod:`rnn_diag.integrations.wandb`.
* ``run_dir``: also write a run folder (:func:`rnn_diag.record`'s format: gradients, summaries,
  training losses, spectra and Lyapunov exponents at the start and the end) that
  ``rnn-diag report`` renders.
* A gradient that explodes is warned about once per module and layer.
* ``state_dict`` / ``load_state_dict``: the recorded steps and their summaries travel in the
  checkpoint, so a fit resumed from it continues the series (and the run folder's recording,
  rather than starting it again).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import require
from ._profiles import ProfileLog, scalars

require("lightning", "lightning")
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.utilities import rank_zero_warn  # noqa: E402

from ..probes import Probe  # noqa: E402
from ..probes.discovery import find_recurrent  # noqa: E402
from ..probes.summaries import summarise_frame  # noqa: E402
from ..recording import Recorder  # noqa: E402

__all__ = ["GradientFlowMonitor", "loss_scale"]

#: The metrics of a probe frame that are log10 norms of ∂L/∂h (scaled with the loss under AMP).
_GRADIENT_METRICS = ("total_mean", "total_min", "total_max", "immediate_mean", "immediate_min",
                     "immediate_max")


def loss_scale(trainer) -> float:
    """The factor the loss of the current step was multiplied by before its backward: the AMP
    gradient scaler's scale (``precision="16-mixed"``), else 1. Read before the optimizer step,
    which may change it."""
    plugin = getattr(trainer, "precision_plugin", None) or getattr(
        getattr(trainer, "strategy", None), "precision_plugin", None)
    scaler = getattr(plugin, "scaler", None)
    if scaler is None or not getattr(scaler, "is_enabled", lambda: True)():
        return 1.0
    return float(scaler.get_scale())


class GradientFlowMonitor(Callback):
    """Record and log the per-timestep gradient flow of the recurrent modules every
    ``every_n_steps`` optimizer steps (see the module docstring).

    Args:
        every_n_steps: record the global steps 0, N, 2N, ...
        modules: as for :func:`rnn_diag.attach` (None: every nn.RNN/GRU/LSTM and cell).
        jacobians, jacobian_samples: as for :func:`rnn_diag.attach` (default: the estimate on
            8 samples, as :func:`rnn_diag.record`).
        run_dir: also write a run folder there (None: only log).
        name: the recording's name in ``run_dir`` (default: the LightningModule's class name).
        figures_every: log the figures at every ``figures_every``-th recorded step (the scalars
            at every recorded step).
        spectra, lyapunov: the snapshots of the run folder (see :func:`rnn_diag.record`).
        warn_exploding: warn (once per module and layer) when a recorded profile explodes.
    """

    def __init__(self, every_n_steps: int = 50, *, modules=None,
                 jacobians: str | None = "estimate", jacobian_samples: int | None = 8,
                 run_dir=None, name: str | None = None, figures_every: int = 1,
                 spectra=("init", "end"), lyapunov=("init", "end"),
                 warn_exploding: bool = True):
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) \
                or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive int, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.modules = modules
        self.jacobians = jacobians
        self.jacobian_samples = jacobian_samples
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.name = name
        self.figures_every = figures_every
        self.spectra, self.lyapunov = spectra, lyapunov
        self.warn_exploding = warn_exploding
        #: The recorded global steps and the summaries of their profiles (one row per module,
        #: layer and direction): what ``state_dict`` carries across a resume.
        self.recorded_steps: list[int] = []
        self.summaries: list[dict] = []
        self._resumed = False
        self._probe: Probe | None = None
        self._recorder: Recorder | None = None
        self._batch_step = 0
        self._figure_loggers: dict[int, Any] = {}
        self._scalars = ProfileLog(max_steps=1)  # scalars only: no heatmap history to keep
        self._warned: set = set()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, name=self.name,
                                        run_dir=str(self.run_dir))

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            find_recurrent(pl_module, self.modules)  # a clear error now, not at step 0

    def on_train_start(self, trainer, pl_module) -> None:
        if self.run_dir is not None and trainer.is_global_zero:
            self._recorder = Recorder(
                self.run_dir, pl_module, every=self.every_n_steps, modules=self.modules,
                jacobians=self.jacobians, jacobian_samples=self.jacobian_samples,
                spectra=self.spectra, lyapunov=self.lyapunov,
                name=self.name or type(pl_module).__name__, manual=True, resume=self._resumed,
                start_step=trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        self._batch_step = step
        if self._recorder is not None:
            self._recorder.set_step(step)
        if (step % self.every_n_steps or self._probe is not None
                or step in self.recorded_steps):
            return
        self._probe = Probe(pl_module, modules=self.modules, jacobians=self.jacobians,
                            jacobian_samples=self.jacobian_samples)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._probe is None:
            return
        probe, self._probe = self._probe, None
        frame = probe.take_frame()
        probe.detach()
        if self._recorder is not None:
            self._recorder.note(probe.warnings)
        step = trainer.global_step
        if frame.empty:
            self._warn("empty", f"rnn_diag: nothing was recorded at step {step} (see the "
                       "ProbeWarning above for why, e.g. a forward under autocast)")
            return
        frame = frame[frame["iteration"] == frame["iteration"].max()].copy()
        scale = loss_scale(trainer)
        if scale != 1.0:
            rows = frame["metric"].isin(_GRADIENT_METRICS)
            frame.loc[rows, "value"] -= math.log10(scale)
        self._record(trainer, frame, step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._recorder is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._recorder.log(self._batch_step, loss=loss.detach().float().item())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        val = trainer.callback_metrics.get("val_loss")
        if self._recorder is not None and val is not None and not trainer.sanity_checking:
            self._recorder.log(trainer.global_step, val_loss=float(val))

    def on_train_end(self, trainer, pl_module) -> None:
        self._close(trainer, "ok")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        self._close(trainer, status, f"{type(exception).__name__}: {exception} "
                                     f"(at step {trainer.global_step})")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._probe is not None:
            self._probe.detach()
            self._probe = None

    def state_dict(self) -> dict[str, Any]:
        return {"every_n_steps": self.every_n_steps, "recorded_steps": list(self.recorded_steps),
                "summaries": list(self.summaries)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recorded_steps = list(state_dict.get("recorded_steps", []))
        self.summaries = list(state_dict.get("summaries", []))
        self._resumed = True

    # ------------------------------------------------------------------ internals
    def _record(self, trainer, frame: pd.DataFrame, step: int) -> None:
        self.recorded_steps.append(step)
        summary = summarise_frame(frame, by=("module", "layer", "direction"))
        for row in summary.to_dict("records"):
            self.summaries.append({"step": step, **row})
            if self.warn_exploding and row["verdict"] == "exploding":
                self._warn(("exploding", row["module"], row["layer"]),
                           f"rnn_diag: the gradient explodes in module "
                           f"{row['module'] or '<root>'!r}, layer {row['layer']}, at step {step} "
                           f"({row['decay_per_step']:+.3f} decades per step back)")
        if self._recorder is not None:
            self._recorder.add_frame(frame, step)
        self._log(trainer, frame, step)

    def _log(self, trainer, frame: pd.DataFrame, step: int) -> None:
        if not trainer.is_global_zero:
            return
        figures = (len(self.recorded_steps) - 1) % self.figures_every == 0
        values = None  # made once, for the loggers that take scalars only
        for logger in trainer.loggers:
            writer = self._figure_writer(logger)
            if writer is not None:  # TensorBoard / W&B: scalars and figures from one place
                writer.log(frame, step, figures=figures)
                continue
            if values is None:
                values = scalars(self._scalars.update(frame, step))
            if values:
                logger.log_metrics(values, step=step)

    def _figure_writer(self, logger):
        """An rnn_diag TensorBoard/W&B logger on the Lightning logger's own writer or run, or
        None for other loggers (CSV, MLflow, ...), which get the scalars only."""
        if id(logger) in self._figure_loggers:
            return self._figure_loggers[id(logger)]
        writer = None
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            from .tensorboard import TensorBoardLogger

            writer = TensorBoardLogger(logger.experiment)
        elif kind == "WandbLogger":
            from .wandb import WandbLogger

            writer = WandbLogger(logger.experiment)
        self._figure_loggers[id(logger)] = writer
        return writer

    def _close(self, trainer, status: str, error: str | None = None) -> None:
        if self._recorder is not None:
            recorder, self._recorder = self._recorder, None
            recorder.set_step(trainer.global_step)  # the optimizer steps taken
            recorder.close(status=status, error=error)

    def _warn(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)
