"""One trial: train a small RNN on a task and record its gradient flow along the way.

:func:`run_trial` takes a :class:`~rnn_diag.experiments.grid.TrialSpec` and returns a
:class:`~rnn_diag.experiments.store.TrialResult`; it never raises for a problem of the trial
itself (an exception gives status "failed" with the message), so a sweep goes on. It writes
nothing: the driver stores the result.

Status "diverged" (docs/design.md §19), with the reason in the row's ``error``:

* a non-finite training loss (that batch is not stepped and its epoch has no ``curves`` row),
  gradient norm before clipping (no step is taken with it) or validation loss: training stops
  at once ("gradient norm became inf at epoch 3 (before clipping; ...)");
* a finite loss blown up past ``train.divergence`` (:func:`blow_up`): ``patience`` epochs in a
  row stop training; a last epoch blown up counts too ("train loss 4.9e+05 at epoch 30,
  4.4e+05× chance ..."). The weights are finite then, so the trial keeps every table and
  takes its "end" snapshots (spectra, Lyapunov exponents) and predictions like an ok trial.

Recorded (long tables, one row per observation, ``epoch`` is the number of completed epochs
before the measurement, so 0 is the initialisation):

* ``curves``: epoch (1..), train_loss, train_metric, val_loss, val_metric, grad_norm (of all
  parameters, before clipping), seconds; with ``train.regularizer``, regularizer_loss (the
  epoch's mean weighted sum of the terms that acted, NaN when none did). ``train_loss`` is the
  task's loss alone, so trials with and without regularisers compare.

Regularisers (``train.regularizer``, :mod:`.regularization`): the terms in their
``schedule.before`` steps are minimised alone first, after the "init" snapshot; then each is
added to the task's loss on the batches its schedule selects. A non-finite term (flossing
through dead relu units: an exponent of −inf) makes the trial "diverged" with that reason.
Truncated BPTT (``train.tbptt``) runs the model in chunks with the state detached between them
(:class:`~.model.SequenceModel`); the recorded gradient profiles show what that truncation
delivers: each loss reaches back only to the start of its own chunk, so with a loss at the last
step only (``loss_steps`` 1, e.g. adding) the profile is zero (log10 −inf) before the last
chunk; with losses at many steps every chunk that holds one still receives gradient.

The row stores ``memory_steps`` (the span the task needs bridged, :class:`~rnn_diag.tasks.Task`)
and ``loss_steps`` (the read-out steps with a target): with more than one, the gradient's
horizon is at least about their number whatever the memory, so it measures memory only for a
loss at the last step.
* ``gradients``: :meth:`rnn_diag.Probe.frame` rows of the recorded epochs: the per-timestep
  log10 norms of ∂L/∂h_t (total and immediate; Jacobian-product norms and saturation when
  enabled), measured on the first training batch of that epoch, before the update.
* ``summaries``: :func:`rnn_diag.gradient_summary` of each recorded batch-mean profile.
* ``spectra``: :func:`rnn_diag.recurrent_spectra` rows, with ``when`` ("init", "end" or an
  epoch number as text).
* ``lyapunov``: the Lyapunov spectrum of every layer (nats per step), with ``when``.
* ``predictions`` (classification tasks): softmax probabilities of the model for the last
  validation window (the last training window without a validation split), per class.
* ``fixed_points``, ``fixed_point_eigenvalues``, ``state_trajectories``, ``pca`` (at the
  snapshots of ``probes.fixed_points``; cells rnn, gru, lstm): the fixed points of every layer
  at zero input, their stability and eigenvalues, and validation trajectories in the top 3
  principal components (:mod:`.fixed_point_tables`); the trial's row gets their counts at
  "end" (:func:`~.derived_columns.fixed_point_columns`).
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..dynamics.summary import gradient_summary
from ..modules.dynamics import lyapunov_spectrum, recurrent_spectra
from ..probes import attach
from ..tasks import make_task
from .derived_columns import derived_columns
from .fixed_point_tables import fixed_point_tables
from .grid import trial_label
from .model import SCAN_CELLS, SequenceModel, init_recurrent
from .regularization import Regularization, RegularizerError
from .store import Table, TrialResult

#: A trial's epoch progress: ``callback(trial_id, epochs_done, epochs_total)``.
Progress = Callable[[str, int, int], None]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but CUDA is not available on this machine")
    return torch.device(name)


def _batches(n: int, batch_size: int | None, generator: torch.Generator):
    """Index batches of one epoch: everything at once (full batch) or a random permutation."""
    if batch_size is None or batch_size >= n:
        return [None]
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _evaluate(model, task, x, y) -> tuple[float, float]:
    if x.shape[0] == 0:
        return math.nan, math.nan
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss = float(task.loss(out, y))
        metric = float(task.metric(out, y))
    model.train()
    return loss, metric


def _clip(model, max_norm: float | None) -> Tensor:
    """Clip the gradients to ``max_norm`` (None: leave them); returns the norm before."""
    params = [q for q in model.parameters() if q.grad is not None]
    # with max_norm=inf clip_grad_norm_ only measures
    return torch.nn.utils.clip_grad_norm_(params, max_norm or math.inf)


def _closure(model, task, optimizer, xb, yb):
    """The loss closure of optimizers that re-evaluate it during a step (LBFGS). The recorded
    loss and gradients are those of the first evaluation, made before the step as for the
    other optimizers. No clipping: the config refuses ``clip_grad_norm`` with LBFGS."""

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model(xb), yb)
        loss.backward()
        return loss

    return closure


def blow_up(loss: float, chance: float | None, first: float | None, rule,
            epoch: int | None = None) -> str | None:
    """Why an epoch's training loss ``loss`` counts as blown up under ``rule`` (a
    :class:`~rnn_diag.experiments.config.DivergenceConfig`), or None when it does not.

    ``chance`` is the task's chance loss and ``first`` the trial's first-epoch training loss
    (None or non-finite: that comparison is skipped, as is a factor set to None). Either
    comparison suffices; the text names the loss as a multiple of chance in any case, and the
    epoch (1-based) when given.

    >>> from rnn_diag.experiments.config import DivergenceConfig
    >>> blow_up(488764.0, 1.0986, 1.2, DivergenceConfig(), epoch=30)
    'train loss 4.9e+05 at epoch 30, 4.4e+05× chance (limit 100× chance)'
    >>> blow_up(50.0, 1.0986, 0.1, DivergenceConfig())
    'train loss 50, 46× chance, 5e+02× its first-epoch loss (limit 100×)'
    >>> blow_up(50.0, 1.0986, 1.0, DivergenceConfig()) is None
    True
    """
    if rule is None or not math.isfinite(loss):
        return None

    def usable(v):
        return v is not None and math.isfinite(v) and v > 0

    over_chance = (rule.chance_factor is not None and usable(chance)
                   and loss > rule.chance_factor * chance)
    over_first = (rule.first_factor is not None and usable(first)
                  and loss > rule.first_factor * first)
    if not (over_chance or over_first):
        return None
    text = f"train loss {loss:.2g}" + (f" at epoch {epoch}" if epoch is not None else "")
    if usable(chance):
        text += f", {loss / chance:.2g}× chance"
    if over_chance:
        return text + f" (limit {rule.chance_factor:g}× chance)"
    return text + f", {loss / first:.2g}× its first-epoch loss (limit {rule.first_factor:g}×)"


def _lyapunov_rows(model, task, steps: int | None, when) -> list[dict]:

    rnn = model.rnn
    x = task.x_train
    T, I = x.shape[1], x.shape[2]
    steps = steps or max(T, 500)
    n_seq = min(x.shape[0], math.ceil(steps / T))
    inputs = x[:n_seq].reshape(-1, I)[:steps]
    if inputs.shape[0] < steps:  # too little data: repeat it
        reps = math.ceil(steps / inputs.shape[0])
        inputs = inputs.repeat(reps, 1)[:steps]
    inputs = inputs.to(next(model.parameters()).device)
    rows = []
    for layer in range(rnn.num_layers):
        exps = lyapunov_spectrum(rnn, None, inputs, layer=layer, warmup=min(100, steps // 10))
        for i, v in enumerate(exps.tolist()):
            rows.append({"when": str(when), "layer": layer, "index": i, "exponent": v})
    return rows


def _spectra_rows(model, when) -> pd.DataFrame:

    df = recurrent_spectra(model.rnn)
    df.insert(0, "when", str(when))
    return df


def run_trial(spec, progress: Progress | None = None) -> TrialResult:
    """Train and record one trial; see the module docstring. Never raises for trial errors."""
    t0 = time.perf_counter()
    rec = _Recorder(spec)
    try:
        rec.run(progress)
    except Exception as exc:  # noqa: BLE001 - isolate the trial, keep what was recorded
        rec.status = "failed"
        rec.error = f"{type(exc).__name__}: {exc}"
        rec.traceback = traceback.format_exc()
    return rec.result(time.perf_counter() - t0)


def _prepare(cfg) -> tuple[Any, torch.device]:
    """Seed the global RNGs (torch, numpy) with ``train.seed``, resolve ``train.device`` and
    make the task; returns ``(task, device)``. Its tensors are still on the CPU."""

    seed = cfg.train.seed
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    device = _device(cfg.train.device)
    task = make_task(cfg.task.name, seq_len=cfg.task.seq_len, seed=seed, **cfg.task.options)
    return task, device


@dataclass
class _Setup:
    """What a trial trains, built once by :func:`_build`.

    Attributes:
        task: the task (losses, metrics, class names; its tensors stay on the CPU).
        model: the :class:`~rnn_diag.experiments.model.SequenceModel`, on ``device``.
        optimizer: the ``torch.optim`` optimizer of every model parameter.
        device: where the model and the tensors below live.
        x, y: the training windows ``[N, T, input_size]`` and their targets, on ``device``.
        xv, yv: the validation windows ``[N_val, T, input_size]`` and targets (``N_val`` may
            be 0), on ``device``.
        probe_options: the keyword arguments of :func:`rnn_diag.attach` (``jacobians``,
            ``saturation``, ``jacobian_samples``) for the recorded batches.
        batch_generator: the RNG of the batch order (seeded ``train.seed + 2``).
        batch_size: training batch size (None: full batch).
        clip_grad_norm: gradient-norm clipping threshold (None: no clipping).
        regularization: the ``train.regularizer`` terms (false when there are none).
    """

    task: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    x: Tensor
    y: Tensor
    xv: Tensor
    yv: Tensor
    probe_options: dict
    batch_generator: torch.Generator
    batch_size: int | None
    clip_grad_norm: float | None
    regularization: Regularization


def _build(cfg, task, device: torch.device) -> _Setup:
    """The model (rnn/gru/lstm: recurrent weights initialised with the generator seeded
    ``train.seed + 1``; scan cells: initialised by their layers, from the global RNG seeded by
    :func:`_prepare`), the optimizer, the data on ``device`` and the probe options of a trial
    of ``task``."""

    seed = cfg.train.seed
    m = cfg.model
    model = SequenceModel(m.cell, task.input_size, m.hidden_size, task.output_size,
                          m.num_layers, m.nonlinearity, task.output_steps,
                          tbptt=cfg.train.tbptt, **m.layer_kwargs())
    if m.cell not in SCAN_CELLS:  # a scan cell was initialised by its layers, r_max included
        init_recurrent(model.rnn, m.init, m.weight_scale,
                       torch.Generator().manual_seed(seed + 1))
    model.to(device)
    optim_cls = getattr(torch.optim, cfg.train.optimizer)
    optimizer = optim_cls(model.parameters(), lr=cfg.train.lr, **cfg.train.optimizer_args)
    x, y = task.x_train.to(device), task.y_train.to(device)
    xv, yv = task.x_val.to(device), task.y_val.to(device)
    p = cfg.probes
    probe_options = {
        "jacobians": None if p.jacobians in (None, "off", False) else p.jacobians,
        "saturation": p.saturation,
        "jacobian_samples": p.jacobian_samples,
    }
    return _Setup(task=task, model=model, optimizer=optimizer, device=device, x=x, y=y, xv=xv,
                  yv=yv, probe_options=probe_options,
                  batch_generator=torch.Generator().manual_seed(seed + 2),
                  batch_size=cfg.train.batch_size, clip_grad_norm=cfg.train.clip_grad_norm,
                  regularization=Regularization(cfg.train.regularizer, model.rnn))


def _step(s: _Setup, xb: Tensor, yb: Tensor) -> None:
    """Take the optimizer step of the batch ``xb, yb`` (gradients computed and clipped)."""
    if isinstance(s.optimizer, torch.optim.LBFGS):
        s.optimizer.step(_closure(s.model, s.task, s.optimizer, xb, yb))
    else:
        s.optimizer.step()


def _gradient_rows(probe_frame: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """:meth:`rnn_diag.Probe.frame` rows as stored in ``gradients``: ``epoch`` (completed epochs
    before the measurement) first, without ``iteration`` and ``module``."""
    frame = probe_frame.drop(columns=["iteration", "module"])
    frame.insert(0, "epoch", epoch)
    return frame


def summarise_gradients(gradients: pd.DataFrame) -> list[dict]:
    """The ``summaries`` rows of ``gradients`` rows (see :func:`_gradient_rows`).

    Pure: reads only the table. One row per (epoch, layer, direction), in that order:
    ``epoch``, ``layer``, ``direction`` and the keys of :func:`rnn_diag.gradient_summary`
    (decay_per_step in log10 per step, horizon in steps, ratio_log10, verdict, ...) of the
    batch-mean profile of the total gradient, log10 ‖∂L/∂h_t‖ (metric ``total_mean``, state
    ``h``), taken in the order of ``t``.
    """

    total = gradients[(gradients.metric == "total_mean") & (gradients.state == "h")]
    rows = []
    for (epoch, layer, direction), part in total.groupby(["epoch", "layer", "direction"]):
        s = gradient_summary(part.sort_values("t")["value"].to_numpy())
        rows.append({"epoch": epoch, "layer": layer, "direction": direction, **s})
    return rows


class _Recorder:
    """Trains one trial and keeps what it records (the rows of each table) and its status."""

    def __init__(self, spec):
        self.spec = spec
        self.status = "ok"
        self.error = None
        self.traceback = None
        self.curves: list[dict] = []
        self.gradients: list[pd.DataFrame] = []
        self.summaries: list[dict] = []
        self.spectra: list[pd.DataFrame] = []
        self.lyapunov: list[dict] = []
        self.predictions: list[dict] = []
        self.fixed_points: dict[str, list[pd.DataFrame]] = {}
        self.task = None
        self.blown: list[tuple[int, str]] = []  # (epoch, why) of the current blown-up run
        self.batches_done = 0  # training batches so far, over all epochs (regulariser schedules)

    def run(self, progress: Progress | None) -> None:
        """Build, then train ``train.epochs`` epochs or until the trial diverges (see the
        module docstring), recording the configured probes; exceptions propagate
        (:func:`run_trial` catches them)."""
        cfg = self.spec.config
        task, device = _prepare(cfg)
        self.task = task  # kept for the trial's row even if building the model fails
        setup = _build(cfg, task, device)
        p = cfg.probes
        epochs = cfg.train.epochs
        self._snapshots(setup, "init")
        if not self._regularize_before(setup):
            return
        for epoch in range(epochs):
            record = p.gradients and (epoch % p.every == 0 or epoch == epochs - 1)
            if not self._train_epoch(setup, epoch, record):
                return  # non-finite: the weights may be too, no further snapshots
            if any(epoch + 1 in list(schedule)
                   for schedule in (p.lyapunov, p.spectra, p.fixed_points)):
                self._snapshots(setup, epoch + 1)
            if progress is not None:
                progress(self.spec.id, epoch + 1, epochs)
            if self._judge(cfg.train.divergence, last=epoch == epochs - 1):
                break  # diverged: blown up for `patience` epochs, or at the last one
        self._snapshots(setup, "end")
        self._predict(setup)

    def _judge(self, rule, last: bool) -> bool:
        """After an epoch's ``curves`` row: track blown-up epochs (:func:`blow_up`). Sets
        status "diverged" and returns True when ``rule.patience`` epochs in a row are blown up
        or when the ``last`` epoch of training is."""
        if rule is None or not self.curves:
            return False
        row = self.curves[-1]
        why = blow_up(row["train_loss"], self.task.chance_loss,
                      self.curves[0]["train_loss"], rule, epoch=row["epoch"])
        if why is None:
            self.blown = []
            return False
        self.blown.append((row["epoch"], why))
        n = len(self.blown)
        if n < rule.patience and not last:
            return False
        self.status = "diverged"
        run = f"{n} epoch{'s' * (n > 1)} in a row above it"
        self.error = f"{why}; " + (f"{run} at the end of training" if last
                                   else f"{run}, training stopped")
        return True

    def _train_epoch(self, s: _Setup, epoch: int, record: bool) -> bool:
        """Train epoch ``epoch`` (0-based) over every batch once and append its ``curves`` row.

        With ``record``, the first batch is probed (``gradients`` and ``summaries`` rows, with
        the gradients before its update); every batch takes the same forward/backward path.
        Returns False, with status "diverged", when the training loss of a batch or the
        gradient norm of its parameters before clipping (the epoch then has no ``curves`` row,
        and that batch takes no step) or the validation loss is NaN/inf.
        """

        start = time.perf_counter()
        losses, metrics, weights, norms, penalties = [], [], [], [], []
        for i, idx in enumerate(_batches(s.x.shape[0], s.batch_size, s.batch_generator)):
            xb, yb = (s.x, s.y) if idx is None else (s.x[idx.to(s.device)], s.y[idx.to(s.device)])
            probing = record and i == 0
            s.optimizer.zero_grad(set_to_none=True)
            with (attach(s.model.rnn, **s.probe_options) if probing
                  else contextlib.nullcontext()) as probe:
                out = s.model(xb)
                loss = s.task.loss(out, yb)
                try:
                    penalty = (s.regularization.loss(xb, self.batches_done, epoch)
                               if s.regularization else None)
                except RegularizerError as exc:
                    return self._diverge(str(exc))
                (loss if penalty is None else loss + penalty).backward()
            self.batches_done += 1
            if penalty is not None:
                penalties.append(float(penalty.detach()))
            loss_value = loss.item()
            if probing and math.isfinite(loss_value):
                self._store_probe(probe, epoch)
            if not math.isfinite(loss_value):
                return self._diverge(f"training loss became {loss_value} at epoch {epoch + 1}")
            norm = _clip(s.model, s.clip_grad_norm)
            if not math.isfinite(float(norm)):
                return self._diverge(f"gradient norm became {float(norm)} at epoch {epoch + 1} "
                                     f"(before clipping; training loss {loss_value:.3g})")
            _step(s, xb, yb)
            losses.append(loss_value)
            with torch.no_grad():
                metrics.append(float(s.task.metric(out.detach(), yb)))
            weights.append(xb.shape[0])
            norms.append(float(norm))
        w = np.asarray(weights, dtype=float)
        val_loss, val_metric = _evaluate(s.model, s.task, s.xv, s.yv)
        self.curves.append({
            "epoch": epoch + 1,
            "train_loss": float(np.average(losses, weights=w)),
            "train_metric": float(np.average(metrics, weights=w)),
            "val_loss": val_loss,
            "val_metric": val_metric,
            "grad_norm": float(np.max(norms)),
            "seconds": time.perf_counter() - start,
            **({"regularizer_loss": float(np.mean(penalties)) if penalties else math.nan}
               if s.regularization else {}),
        })
        if not all(math.isfinite(v) for v in (val_loss,) if s.xv.shape[0]):
            return self._diverge(f"validation loss became {val_loss} after epoch {epoch + 1}")
        return True

    def _diverge(self, why: str) -> bool:
        """Mark the trial "diverged" with the reason ``why``; returns False (stop training)."""
        self.status, self.error = "diverged", why
        return False

    def _regularize_before(self, s: _Setup) -> bool:
        """Take the ``schedule.before`` optimizer steps on the regularisers alone (each on the
        next batch of the epoch order; gradients clipped as in training). Returns False, with
        status "diverged", when a term or its gradient is not finite."""
        steps, done = s.regularization.before, 0
        while done < steps:
            for idx in _batches(s.x.shape[0], s.batch_size, s.batch_generator):
                if done == steps:
                    break
                xb = s.x if idx is None else s.x[idx.to(s.device)]
                s.optimizer.zero_grad(set_to_none=True)
                try:
                    penalty = s.regularization.before_loss(xb, done)
                except RegularizerError as exc:
                    return self._diverge(str(exc))
                if penalty is not None:
                    penalty.backward()
                    norm = _clip(s.model, s.clip_grad_norm)
                    if not math.isfinite(float(norm)):
                        return self._diverge(f"the regularisers' gradient norm became "
                                             f"{float(norm)} at step {done + 1} before training")
                    s.optimizer.step()
                done += 1
        return True

    def _snapshots(self, s: _Setup, when) -> None:
        p = self.spec.config.probes
        if when in list(p.spectra):
            self.spectra.append(_spectra_rows(s.model, when))
        if when in list(p.lyapunov):
            self.lyapunov.extend(_lyapunov_rows(s.model, s.task, p.lyapunov_steps, when))
        if when in list(p.fixed_points):
            self._fixed_points(s, when)

    def _fixed_points(self, s: _Setup, when) -> None:
        """The fixed-point tables of this snapshot (validation sequences; training ones
        without a validation split). Scan cells (lru, mingru, ssm) have none."""
        p = self.spec.config.probes
        x = s.xv if s.xv.shape[0] else s.x
        s.model.eval()
        try:
            tables = fixed_point_tables(
                s.model.rnn, x, when, n_states=p.fixed_point_states,
                noise=p.fixed_point_noise, tol_q=p.fixed_point_tol_q,
                n_trajectories=p.fixed_point_trajectories,
                seed=self.spec.config.train.seed + 3)
        finally:
            s.model.train()
        for name, df in tables.items():
            if len(df):
                self.fixed_points.setdefault(name, []).append(df)

    def _store_probe(self, probe, epoch: int) -> None:
        frame = _gradient_rows(probe.frame(), epoch)
        self.gradients.append(frame)
        self.summaries.extend(summarise_gradients(frame))

    def _predict(self, s: _Setup) -> None:
        task, model, x, xv, yv = s.task, s.model, s.x, s.xv, s.yv
        if task.kind != "classification":
            return
        last = xv[-1:] if xv.shape[0] else x[-1:]
        target = (yv[-1] if xv.shape[0] else task.y_train[-1]).reshape(-1)[-1]
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(last)[0, -1].double(), dim=-1).cpu()
        names = task.class_names or [str(i) for i in range(probs.shape[0])]
        best = int(probs.argmax())
        for c, prob in enumerate(probs.tolist()):
            self.predictions.append({
                "class": c, "name": names[c], "probability": prob,
                "predicted": c == best, "actual": c == int(target),
            })

    def result(self, seconds: float) -> TrialResult:
        spec = self.spec
        task = self.task
        row = {"label": _label(spec), **resolved_settings(spec), **_scalars(spec.settings),
               **spec.params,
               "status": self.status, "error": self.error, "seconds": seconds}
        last = self.curves[-1] if self.curves else {}
        row["epochs_run"] = len(self.curves)
        for key in ("train_loss", "train_metric", "val_loss", "val_metric"):
            row[key] = last.get(key, math.nan)
        row["metric"] = task.metric_name if task else None
        row["loss_name"] = task.loss_name if task else None
        row["memory_steps"] = task.memory_steps if task else None
        row["loss_steps"] = task.output_steps if task else None
        row["chance_loss"] = task.chance_loss if task else math.nan
        row["chance_metric"] = task.chance_metric if task else math.nan
        # the best values any predictor reaches (the report judges "learned" against them)
        for key in ("best_loss", "best_metric"):
            value = getattr(task, key, None) if task else None
            row[key] = math.nan if value is None else value
        summaries = pd.DataFrame(self.summaries)
        spectra = pd.concat(self.spectra) if self.spectra else pd.DataFrame()
        lyap = pd.DataFrame(self.lyapunov)
        fixed = {name: pd.concat(parts, ignore_index=True)
                 for name, parts in self.fixed_points.items()}
        row.update(derived_columns(summaries, spectra, lyap,
                                   fixed.get(Table.FIXED_POINTS, pd.DataFrame())))
        tables = {
            Table.CURVES: pd.DataFrame(self.curves),
            Table.GRADIENTS: pd.concat(self.gradients, ignore_index=True) if self.gradients
            else pd.DataFrame(),
            Table.SUMMARIES: summaries,
            Table.SPECTRA: spectra.reset_index(drop=True),
            Table.LYAPUNOV: lyap,
            Table.PREDICTIONS: pd.DataFrame(self.predictions),
            **fixed,
        }
        return TrialResult(spec.id, row, {k: v for k, v in tables.items() if len(v)})


#: Settings stored in every trial row, swept or not, so a reader can group and colour trials
#: without the config (dotted names as in ``sweep``).
RESOLVED_KEYS = ("task.name", "task.seq_len", "model.cell", "model.hidden_size",
                 "model.num_layers", "model.init", "model.weight_scale",
                 "train.clip_grad_norm", "train.seed")


def resolved_settings(spec) -> dict:
    """``{dotted key: value}`` of :data:`RESOLVED_KEYS` in the trial's resolved config."""
    values = {}
    for key in RESOLVED_KEYS:
        section, name = key.split(".")
        values[key] = getattr(getattr(spec.config, section), name)
    return values


def _scalars(settings: dict) -> dict:
    """The settings of a trial's named axes that fit in a table column (no lists, mappings)."""
    return {k: v for k, v in settings.items()
            if v is None or isinstance(v, (str, int, float, bool))}


def _label(spec) -> str:

    return trial_label(spec)

