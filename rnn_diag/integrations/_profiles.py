"""The logger-independent core of the TensorBoard and W&B integrations: from a probe (or a probe
frame) to the scalars to log, and a bounded history of profiles for the heatmap.

Nothing here knows a logging backend. A backend calls :meth:`ProfileLog.update` once per
``log(probe_or_frame, step)`` and writes what it returns: :func:`scalars` of the profiles, the
profiles themselves (line figure, W&B table), and :meth:`ProfileLog.history` (heatmap). The
numbers come from :func:`rnn_diag.probes.summaries.summarise_frame` and
:func:`~rnn_diag.probes.summaries.profiles`, so a horizon logged here is the horizon of the
report, of the sweep runner and of the Lightning callback.

Tags: ``rnn_diag/<module>/<layer>/<metric>``, where ``<module>`` is the probed module's
qualified name ("model" for the root module itself, whose name is "") and ``<layer>`` is
``layer0``, ``layer1``, ... (``layer0_reverse``, ... for direction 1).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..probes import Probe
from ..probes.summaries import VERDICT_CODES, profiles, summarise_frame

__all__ = ["MAX_STEPS", "METRICS", "LayerProfile", "ProfileLog", "ProfileLogger", "by_module",
           "layer_tag", "module_tag", "scalars"]

#: Prefix of every tag and key.
PREFIX = "rnn_diag"
#: Profiles kept per (module, layer, direction) for the heatmap (plus the latest one).
MAX_STEPS = 200
#: The scalar metrics, in the order they are logged.
METRICS = ("horizon", "decay_per_step", "verdict", "log10_grad_first", "steps")
_FRAME_COLUMNS = ("module", "layer", "direction", "state", "t", "metric", "value")


def module_tag(module: str) -> str:
    """The ``<module>`` part of a tag: the qualified name, or "model" for the root ("")."""
    return module if module else "model"


def layer_tag(layer: int, direction: int) -> str:
    """The ``<layer>`` part of a tag: ``layer0``, ``layer1``, ... or ``layer0_reverse``."""
    return f"layer{int(layer)}" + ("_reverse" if int(direction) == 1 else "")


@dataclass(frozen=True)
class LayerProfile:
    """The batch-mean gradient profile of one (module, layer, direction) in one backward.

    Attributes:
        module: qualified name of the probed module ("" for the root).
        layer, direction: as in :meth:`rnn_diag.Probe.frame` (direction 1: reverse).
        iteration: the probe's backward index the profile was recorded in.
        values: float64 ``[T]``: batch mean of log10‖∂L/∂h_t‖ (decades), in input order t;
            −inf where the gradient is exactly zero, NaN where no sample is valid.
        summary: the row of :func:`~rnn_diag.probes.summaries.summarise_frame` for it
            (``horizon``, ``decay_per_step``, ``verdict``, ``steps``, ...).
    """

    module: str
    layer: int
    direction: int
    iteration: int
    values: np.ndarray
    summary: Mapping

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.module, self.layer, self.direction)

    @property
    def label(self) -> str:
        """``layer0``, ``layer0_reverse``, ..."""
        return layer_tag(self.layer, self.direction)

    @property
    def prefix(self) -> str:
        """``rnn_diag/<module>/<layer>``."""
        return f"{PREFIX}/{module_tag(self.module)}/{self.label}"


def scalars(layer_profiles) -> dict[str, float]:
    """``{tag: value}`` of every :data:`METRICS` of the given :class:`LayerProfile` s.

    ``horizon`` (steps), ``decay_per_step`` (decades per step), ``verdict`` (−1 vanishing,
    0 stable, +1 exploding, from :data:`~rnn_diag.probes.summaries.VERDICT_CODES`),
    ``log10_grad_first`` (the profile's value at t = 0, decades) and ``steps`` (T). A metric
    that is undefined at this step is left out rather than logged as a made-up number: an
    "undetermined" verdict, a horizon of −1 (no finite norm), and any NaN or ±inf value (an
    exactly zero gradient at t = 0 has log10 −inf; charts show a gap there).
    """
    out = {}
    for p in layer_profiles:
        s = p.summary
        values = {
            "horizon": float(s["horizon"]) if int(s["horizon"]) >= 0 else math.nan,
            "decay_per_step": float(s["decay_per_step"]),
            "verdict": VERDICT_CODES.get(s["verdict"], math.nan),
            "log10_grad_first": float(p.values[0]),
            "steps": float(s["steps"]),
        }
        for metric in METRICS:
            if math.isfinite(values[metric]):
                out[f"{p.prefix}/{metric}"] = values[metric]
    return out


class _Rows:
    """The profiles of one key, thinned evenly: profile number i (0, 1, 2, ... of this key) is
    kept while i is a multiple of ``stride``; when more than ``cap`` are kept, the stride
    doubles and every other one goes. The latest profile is always kept as well."""

    def __init__(self, cap: int):
        self.cap, self.stride, self.count = cap, 1, 0
        self.kept: list[tuple[int, int, np.ndarray]] = []  # (i, step, values)
        self.latest: tuple[int, int, np.ndarray] | None = None

    def add(self, step: int, values: np.ndarray) -> None:
        row = (self.count, int(step), values)
        self.count += 1
        self.latest = row
        if row[0] % self.stride:
            return
        self.kept.append(row)
        if len(self.kept) > self.cap:
            self.stride *= 2
            self.kept = [r for r in self.kept if r[0] % self.stride == 0]

    def rows(self) -> dict[int, np.ndarray]:
        rows = list(self.kept)
        if self.latest is not None and (not rows or rows[-1][0] != self.latest[0]):
            rows.append(self.latest)
        return {step: values for _, step, values in rows}


class ProfileLog:
    """Turns each ``log(probe_or_frame, step)`` into profiles and keeps their history.

    Memory is bounded: per (module, layer, direction) at most ``max_steps`` profiles are kept,
    evenly spaced over the logged ones (when full, every other one is dropped and from then on
    only every 2nd, 4th, ... new one is kept), plus the latest one, i.e. at most
    ``(max_steps + 1) × T`` float64 values per layer.

    A :class:`~rnn_diag.Probe` whose latest recorded backward was already logged by this
    ``ProfileLog`` gives no profiles (nothing new to log: with ``attach(..., every=N)`` a
    logger called every step logs each recorded backward once). A probe that has recorded
    nothing yet, or an empty frame, gives none either, with a warning (once per ProfileLog).
    """

    def __init__(self, max_steps: int = MAX_STEPS):
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        self.max_steps = max_steps
        self._rows: dict[tuple[str, int, int], _Rows] = {}
        self._logged: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._warned = False

    def update(self, source, step: int) -> list[LayerProfile]:
        """The profiles of the most recent recorded backward in ``source``, added to the
        history at ``step``.

        Args:
            source: a :class:`~rnn_diag.Probe`, or rows of :meth:`~rnn_diag.Probe.frame` (if
                they hold several iterations, the last one is used).
            step: the user's step (any int; the heatmap's y axis).

        Returns:
            One :class:`LayerProfile` per (module, layer, direction) of that backward, in the
            order of (module, layer, direction); empty when there is nothing (new) to log.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"step must be an int, got {step!r}")
        rows = _latest_rows(source)
        if rows is None or rows.empty:
            if not self._warned:
                self._warned = True
                what = ("the probe has not recorded a backward pass yet (run forward and "
                        "loss.backward() with it attached first)" if isinstance(source, Probe)
                        else "the frame has no rows")
                warnings.warn(f"rnn_diag: nothing to log at step {step}: {what}", UserWarning,
                              stacklevel=3)
            return []
        iteration = int(rows["iteration"].iloc[0]) if "iteration" in rows else 0
        if isinstance(source, Probe):
            if self._logged.get(source) == iteration:
                return []
            self._logged[source] = iteration
        out = _layer_profiles(rows, iteration)
        for p in out:
            self._rows.setdefault(p.key, _Rows(self.max_steps)).add(int(step), p.values)
        return out

    def history(self, key: tuple[str, int, int]) -> dict[int, np.ndarray]:
        """``{step: values [T]}`` of the kept profiles of ``key`` = (module, layer, direction),
        in logging order (steps as the user gave them)."""
        rows = self._rows.get(key)
        return {} if rows is None else rows.rows()


def by_module(layer_profiles) -> dict[str, list[LayerProfile]]:
    """The profiles grouped by module (qualified name), in their order."""
    out: dict[str, list[LayerProfile]] = {}
    for p in layer_profiles:
        out.setdefault(p.module, []).append(p)
    return out


class ProfileLogger:
    """What the TensorBoard and W&B loggers share: one :class:`ProfileLog`, the figure cadence
    and the ``log`` entry point; a backend implements :meth:`_write`.

    Args:
        figures_every: draw the figures at the 1st logged call and every ``figures_every``-th
            after it (calls that logged nothing do not count); scalars are logged every call.
        max_steps: profiles kept per layer for the heatmap (see :class:`ProfileLog`).

    Cost per call (CPU): a few tens of ms for the scalars (independent of how many backward
    passes the probe has recorded), plus about 0.1 s per figure when figures are due (one
    profile per module, one heatmap per layer).
    """

    def __init__(self, *, figures_every: int = 1, max_steps: int = MAX_STEPS):
        if isinstance(figures_every, bool) or not isinstance(figures_every, int) \
                or figures_every < 1:
            raise ValueError(f"figures_every must be a positive int, got {figures_every!r}")
        self.figures_every = figures_every
        self.profiles = ProfileLog(max_steps)
        self._logged_calls = 0

    def log(self, probe_or_frame, step: int, *, figures: bool = True) -> dict[str, float]:
        """Log the most recent recorded backward of ``probe_or_frame`` at ``step``.

        Args:
            probe_or_frame: an :class:`rnn_diag.Probe`, or rows of its ``frame()`` (the last
                iteration in them is used).
            step: the user's step (global step, batch index, epoch: any int).
            figures: False to log the scalars only at this call (the figures are drawn when
                this is True and the call is due by ``figures_every``).

        Returns:
            ``{tag: value}`` of the scalars logged; empty when there was nothing (new) to log
            (a probe that has recorded nothing yet warns once; a probe whose latest backward
            was already logged is skipped silently).
        """
        layer_profiles = self.profiles.update(probe_or_frame, step)
        if not layer_profiles:
            return {}
        values = scalars(layer_profiles)
        due = figures and self._logged_calls % self.figures_every == 0
        self._logged_calls += 1
        self._write(int(step), values, layer_profiles if due else [])
        return values

    def _write(self, step: int, values: dict[str, float], layer_profiles: list[LayerProfile]):
        """Write ``values`` and, when ``layer_profiles`` is not empty, their figures."""
        raise NotImplementedError


def _latest_rows(source) -> pd.DataFrame | None:
    """The frame rows of the most recent recorded backward of a probe or a frame."""
    if isinstance(source, Probe):
        frame = _probe_latest_frame(source)
    elif isinstance(source, pd.DataFrame):
        missing = [c for c in _FRAME_COLUMNS if c not in source.columns]
        if missing:
            raise ValueError(f"expected rows of rnn_diag.Probe.frame(); the frame has no "
                             f"column(s) {', '.join(missing)}")
        frame = source
    else:
        raise TypeError(f"expected an rnn_diag.Probe or a Probe.frame() DataFrame, got "
                        f"{type(source).__name__}")
    if frame.empty:
        return None
    if "iteration" in frame.columns:
        frame = frame[frame["iteration"] == frame["iteration"].max()]
    return frame


def _probe_latest_frame(probe: Probe) -> pd.DataFrame:
    """The rows of the probe's most recent recorded backward (:meth:`rnn_diag.Probe.latest_frame`:
    O(layers), where ``probe.frame()`` rebuilds every recorded backward, seconds after a few
    thousand of them, far too slow at every logged step)."""
    return probe.latest_frame()


def _layer_profiles(rows: pd.DataFrame, iteration: int) -> list[LayerProfile]:
    by = ("module", "layer", "direction")
    values = {key: v for key, v in profiles(rows, by)}
    out = []
    for summary in summarise_frame(rows, by).to_dict("records"):
        key = (summary["module"], int(summary["layer"]), int(summary["direction"]))
        out.append(LayerProfile(*key, iteration=iteration, values=values[key],
                                summary=summary))
    return out
