"""Weights & Biases: log a probe's per-timestep gradient profile as scalars, a queryable table
with a line chart, and a heatmap image.

Needs ``pip install 'rnn_diag[wandb]'``. Usage::

    import wandb
    import rnn_diag as rd
    from rnn_diag.integrations.wandb import WandbLogger

    run = wandb.init(project="my-rnn")
    probe = rd.attach(model)
    logger = WandbLogger(run, figures_every=10)     # run defaults to wandb.run
    for step, (x, y) in enumerate(loader):
        loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
        logger.log(probe, step)

or, without a class, ``log_probe(probe, step)`` (on ``wandb.run``).

Keys logged at each ``log`` (``<module>``: the probed module's qualified name, "model" for the
root; ``<layer>``: ``layer0``, ``layer1``, ..., ``layer0_reverse`` for direction 1):

================================================  ==================================================
key                                               value
================================================  ==================================================
``rnn_diag/<module>/<layer>/horizon``             how far back (steps) ‖∂L/∂h_t‖ stays within 3
                                                  decades of its peak
``rnn_diag/<module>/<layer>/decay_per_step``      fitted slope of log10‖∂L/∂h_t‖ per step back in
                                                  time (decades/step; < 0 vanishing)
``rnn_diag/<module>/<layer>/verdict``             −1 vanishing, 0 stable, +1 exploding (not logged
                                                  when undetermined)
``rnn_diag/<module>/<layer>/log10_grad_first``    log10‖∂L/∂h_0‖ (batch mean, decades)
``rnn_diag/<module>/<layer>/steps``               sequence length T
``rnn_diag/step``                                 the ``step`` given to ``log``: the x axis of all
                                                  ``rnn_diag/*`` charts
``rnn_diag/<module>/profile``                     line chart (``wandb.plot.line``, one line per
                                                  layer) of log10_grad against distance
``rnn_diag/<module>/profile_table``               its ``wandb.Table`` (W&B names it): columns step,
                                                  module, layer, distance (T−1−t), t, log10_grad
                                                  (null where not finite), one row per (layer, t)
``rnn_diag/<module>/<layer>/heatmap``             ``wandb.Image``: log10‖∂L/∂h_t‖ over (logged step,
                                                  distance), the history of the profile
================================================  ==================================================

Steps. W&B drops a row logged at a step below the run's current step, so a logger that passed
``step=`` would lose rows whenever the user's own ``wandb.log`` calls (auto-incremented, or
counted differently) are ahead of it. By default this logger therefore does not pass
``step=``: it logs ``rnn_diag/step`` with the data and declares it the x axis of ``rnn_diag/*``
(``run.define_metric``), and each ``log`` is one committed ``run.log`` call (it advances W&B's
own ``_step`` by one, as any ``wandb.log`` call does). Nothing is lost whatever the user logs in
between. With ``step_metric=None`` it passes ``step=step`` instead (for users who drive
W&B's step with the same counter and want these keys in their own rows); then ``step`` must
not decrease.
"""

from __future__ import annotations

import math
import weakref

from . import require
from ._profiles import MAX_STEPS, LayerProfile, ProfileLogger, by_module, module_tag
from .figures import heatmap_figure, render

wandb = require("wandb", "wandb")

__all__ = ["TABLE_COLUMNS", "WandbLogger", "log_probe"]

#: Columns of the profile table, one row per (layer, t).
TABLE_COLUMNS = ["step", "module", "layer", "distance", "t", "log10_grad"]


class WandbLogger(ProfileLogger):
    """Logs a probe's gradient-flow summaries to a W&B run (keys: see the module docstring).

    Args:
        run: an active ``wandb`` run; None for ``wandb.run`` (the one ``wandb.init`` started).
        figures_every: log the chart and images at the first logged call and every
            ``figures_every``-th after it; scalars are logged at every call.
        max_steps: profiles kept per layer for the heatmap (evenly thinned beyond).
        step_metric: the key holding ``step`` and declared the x axis of ``rnn_diag/*``
            (default ``"rnn_diag/step"``); None to pass ``step=step`` to ``run.log`` instead.

    Raises:
        RuntimeError: when ``run`` is None and no run is active.
    """

    def __init__(self, run=None, *, figures_every: int = 1, max_steps: int = MAX_STEPS,
                 step_metric: str | None = "rnn_diag/step"):
        super().__init__(figures_every=figures_every, max_steps=max_steps)
        run = wandb.run if run is None else run
        if run is None:
            raise RuntimeError("rnn_diag: no active W&B run: call wandb.init(...) first, or "
                               "pass run= to WandbLogger")
        self.run = run
        self.step_metric = step_metric
        if step_metric:
            run.define_metric(step_metric)
            run.define_metric("rnn_diag/*", step_metric=step_metric)

    def _write(self, step: int, values: dict[str, float], layer_profiles: list[LayerProfile]):
        data: dict = dict(values)
        for module, group in by_module(layer_profiles).items():
            name = module_tag(module)
            table = wandb.Table(columns=TABLE_COLUMNS, data=_table_rows(step, name, group))
            data[f"rnn_diag/{name}/profile"] = wandb.plot.line(
                table, "distance", "log10_grad", stroke="layer",
                title=f"{name}: log10 ‖∂L/∂h_t‖ against distance T−1−t")
            for p in group:
                fig = heatmap_figure(self.profiles.history(p.key), title=f"{name} {p.label}")
                data[f"{p.prefix}/heatmap"] = wandb.Image(render(fig), caption=f"step {step}")
                fig.clear()
        if self.step_metric:
            self.run.log({**data, self.step_metric: step})
        else:
            self.run.log(data, step=step)


def _table_rows(step: int, name: str, group: list[LayerProfile]) -> list[list]:
    rows = []
    for p in group:
        T = p.values.size
        for t, v in enumerate(p.values.tolist()):
            rows.append([step, name, p.label, T - 1 - t, t, v if math.isfinite(v) else None])
    return rows


_LOGGERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def log_probe(probe_or_frame, step: int, *, run=None, figures: bool = True) -> dict[str, float]:
    """``WandbLogger(run).log(probe_or_frame, step, figures=figures)`` with one logger kept
    per run (so the heatmap has the history of earlier calls); ``run`` defaults to
    ``wandb.run``.

    Returns:
        ``{key: value}`` of the scalars logged (empty when there was nothing new to log).
    """
    run = wandb.run if run is None else run
    if run is None:
        raise RuntimeError("rnn_diag: no active W&B run: call wandb.init(...) first, or pass "
                           "run= to log_probe")
    logger = _LOGGERS.get(run)
    if logger is None:  # holds the run weakly, so that the cache entry dies with it
        logger = _LOGGERS[run] = WandbLogger(weakref.proxy(run))
    return logger.log(probe_or_frame, step, figures=figures)
