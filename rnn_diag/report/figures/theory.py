"""Theory lines drawn over measured profiles, from stored numbers only.

For a loss on the last step T−1 and distance d = T−1−t:

* **Lyapunov slope** — in the long run log‖∂L/∂h_t‖ changes by the top Lyapunov exponent λ₁
  per step (docs/design.md §8): a line of slope λ₁ / ln 10 decades per step (``lyapunov.exponent``
  is in nats per step). Any cell.
* **Pascanu bound** — for an Elman RNN with |f'| ≤ 1 (tanh, relu),
  ‖∂L/∂h_t‖ ≤ σ_max(W_hh)^d ‖∂L/∂h_{T−1}‖ (Pascanu et al., 2013): a line of slope log10 σ_max
  from the measured value at d = 0. Only for ``model.cell == "rnn"``; not for GRU/LSTM, whose
  Jacobians are not bounded by σ_max of a weight block.

Both use the snapshot (``when`` = init, an epoch, or end) nearest to the epoch of the profile,
and the last layer (the one whose profile is drawn).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._data import last_layer, snapshot_epoch

__all__ = ["LN10", "Snapshots"]

LN10 = math.log(10.0)


class Snapshots:
    """Per trial, the stored top Lyapunov exponent and the spectral norm of W_hh at each
    snapshot, looked up by epoch.

    Args:
        info: ``Trials.info`` (needs ``epochs_run`` and ``cell``).
        spectra: the spectra table or None.
        lyapunov: the lyapunov table or None.
    """

    def __init__(self, info: pd.DataFrame, spectra: pd.DataFrame | None,
                 lyapunov: pd.DataFrame | None):
        self._info = info
        self.sigma = self._table(spectra, "singular_value", ("when", "singular_value"))
        self.lyap = self._table(lyapunov, "exponent", ("when", "exponent"))

    def _table(self, df, column, needed) -> dict[str, list[tuple[float, float, str]]]:
        """trial -> [(epoch, value, when)]: the largest ``column`` of the last layer (over its
        gate blocks, for the spectral norm) at each snapshot."""
        if df is None or len(df) == 0 or not all(c in df for c in ("trial", *needed)):
            return {}
        df = df.copy()
        df["trial"] = df["trial"].astype(str)
        df, _ = last_layer(df)
        top = df.groupby(["trial", "when"])[column].max()
        out: dict[str, list[tuple[float, float, str]]] = {}
        for (trial, when), value in top.items():
            if trial not in self._info.index:
                continue
            epoch = snapshot_epoch(str(when), self._info.at[trial, "epochs_run"])
            if math.isfinite(epoch) and math.isfinite(value):
                out.setdefault(trial, []).append((epoch, float(value), str(when)))
        return out

    @staticmethod
    def _nearest(rows, epoch: float) -> tuple[float, str] | None:
        if not rows:
            return None
        e, value, when = min(rows, key=lambda r: (abs(r[0] - epoch), r[0]))
        return value, when

    def lyapunov_slope(self, trials, epoch: float) -> tuple[float, list[str]]:
        """Mean over ``trials`` of λ₁ / ln 10 (decades per step) nearest ``epoch``, and the
        snapshot names used; NaN when none is stored."""
        found = [self._nearest(self.lyap.get(t, []), epoch) for t in trials]
        found = [f for f in found if f is not None]
        if not found:
            return math.nan, []
        return float(np.mean([v for v, _ in found])) / LN10, sorted({w for _, w in found})

    def pascanu_slope(self, trials, epoch: float) -> tuple[float, list[str]]:
        """Mean over ``trials`` of log10 σ_max(W_hh) nearest ``epoch`` (decades per step), for
        Elman RNN trials only; NaN otherwise."""
        rnn = [t for t in trials if str(self._info.at[t, "cell"]) == "rnn"]
        found = [self._nearest(self.sigma.get(t, []), epoch) for t in rnn]
        found = [f for f in found if f is not None and f[0] > 0]
        if not found or len(found) < len(trials):
            return math.nan, []
        return float(np.mean([math.log10(v) for v, _ in found])), sorted({w for _, w in found})
