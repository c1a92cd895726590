"""TensorBoard: log a probe's per-timestep gradient profile as scalars and images.

Needs ``pip install 'rnn_diag[tensorboard]'`` (``torch.utils.tensorboard`` needs the
``tensorboard`` package). Usage::

    import rnn_diag as rd
    from rnn_diag.integrations.tensorboard import TensorBoardLogger

    probe = rd.attach(model)
    with TensorBoardLogger("runs/exp1", figures_every=10) as tb:  # or TensorBoardLogger(writer)
        for step, (x, y) in enumerate(loader):
            loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
            tb.log(probe, step)

or, without a class, ``log_probe(writer, probe, step)``.

Tags written at each ``log`` (``<module>``: the probed module's qualified name, "model" for the
root; ``<layer>``: ``layer0``, ``layer1``, ..., ``layer0_reverse`` for direction 1):

================================================  ==================================================
tag                                               value
================================================  ==================================================
``rnn_diag/<module>/<layer>/horizon``             scalar: how far back (steps) ‖∂L/∂h_t‖ stays
                                                  within 3 decades of its peak
``rnn_diag/<module>/<layer>/decay_per_step``      scalar: fitted slope of log10‖∂L/∂h_t‖ per step
                                                  back in time (decades/step; < 0 vanishing)
``rnn_diag/<module>/<layer>/verdict``             scalar: −1 vanishing, 0 stable, +1 exploding
                                                  (not written when undetermined)
``rnn_diag/<module>/<layer>/log10_grad_first``    scalar: log10‖∂L/∂h_0‖ (batch mean, decades)
``rnn_diag/<module>/<layer>/steps``               scalar: sequence length T
``rnn_diag/<module>/profile``                     image: log10‖∂L/∂h_t‖ against distance T−1−t,
                                                  one line per layer
``rnn_diag/<module>/<layer>/heatmap``             image: log10‖∂L/∂h_t‖ over (logged step,
                                                  distance), the history of the profile
================================================  ==================================================

The numbers are :func:`rnn_diag.probes.summaries.summarise_frame` of the most recent recorded
backward (see :mod:`rnn_diag.dynamics.summary` for their definitions); a metric undefined at a
step (NaN, ±inf, horizon −1) is not written then. Scalars use ``add_scalar`` with hierarchical
tags (not ``add_scalars``, which makes one run per key), images ``add_figure``.
"""

from __future__ import annotations

import os
import weakref

from . import require
from ._profiles import MAX_STEPS, LayerProfile, ProfileLogger, by_module, module_tag
from .figures import heatmap_figure, profile_figure

require("tensorboard", "tensorboard")
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

__all__ = ["TensorBoardLogger", "log_probe"]


class TensorBoardLogger(ProfileLogger):
    """Writes a probe's gradient-flow summaries to TensorBoard (tags: see the module docstring).

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or anything with its
            ``add_scalar`` / ``add_figure`` / ``flush``), or a log directory to open one in.
        figures_every: draw the images at the first logged call and every
            ``figures_every``-th after it; scalars are written at every call.
        max_steps: profiles kept per layer for the heatmap (evenly thinned beyond).

    ``close()`` closes a writer this logger opened and only flushes one it was given.
    """

    def __init__(self, writer: SummaryWriter | str | os.PathLike, *, figures_every: int = 1,
                 max_steps: int = MAX_STEPS):
        super().__init__(figures_every=figures_every, max_steps=max_steps)
        self._owns_writer = isinstance(writer, (str, os.PathLike))
        self.writer = SummaryWriter(os.fspath(writer)) if self._owns_writer else writer

    def _write(self, step: int, values: dict[str, float], layer_profiles: list[LayerProfile]):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)
        for module, group in by_module(layer_profiles).items():
            name = module_tag(module)
            fig = profile_figure({p.label: p.values for p in group}, step, title=name)
            self.writer.add_figure(f"rnn_diag/{name}/profile", fig, global_step=step)
            fig.clear()
            for p in group:
                fig = heatmap_figure(self.profiles.history(p.key), title=f"{name} {p.label}")
                self.writer.add_figure(f"{p.prefix}/heatmap", fig, global_step=step)
                fig.clear()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Close the writer if this logger opened it, else flush it."""
        if self._owns_writer:
            self.writer.close()
        else:
            self.writer.flush()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


_LOGGERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def log_probe(writer: SummaryWriter, probe_or_frame, step: int, *,
              figures: bool = True) -> dict[str, float]:
    """``TensorBoardLogger(writer).log(probe_or_frame, step, figures=figures)`` with one
    logger kept per writer (so the heatmap has the history of earlier calls).

    Returns:
        ``{tag: value}`` of the scalars written (empty when there was nothing new to log).
    """
    logger = _LOGGERS.get(writer)
    if logger is None:  # holds the writer weakly, so that the cache entry dies with it
        logger = _LOGGERS[writer] = TensorBoardLogger(weakref.proxy(writer))
    return logger.log(probe_or_frame, step, figures=figures)
