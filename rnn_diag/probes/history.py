"""Per-timestep aggregates of every recorded backward, kept compact and turned into a tidy table."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ("iteration", "module", "layer", "direction", "state", "t", "metric", "value")


class History:
    """Appends one block per (iteration, module, layer, direction): ``{state: {metric: [T]}}``."""

    def __init__(self):
        self._blocks: list[tuple[int, str, int, int, dict[str, dict[str, np.ndarray]]]] = []
        self._iterations: set[int] = set()
        self._latest: list = []  # the blocks of the most recent iteration, kept by take()

    @property
    def iterations(self) -> int:
        """Number of distinct recorded backward passes."""
        return len(self._iterations)

    def add(self, iteration: int, module: str, layer: int, direction: int, summary) -> None:
        block = (iteration, module, layer, direction, summary)
        self._blocks.append(block)
        self._iterations.add(iteration)
        if self._latest and self._latest[0][0] != iteration:
            self._latest = []
        self._latest.append(block)

    def take(self) -> pd.DataFrame:
        """The tidy table of every block so far, which are then forgotten (bounded memory for a
        recorder that stores them elsewhere); the count of :attr:`iterations` is kept."""
        frame = self.frame()
        self._blocks = []
        return frame

    def latest(self) -> pd.DataFrame:
        """The tidy table of the most recent iteration only (also after :meth:`take`)."""
        return self.frame(self._latest)

    def frame(self, blocks: list | None = None) -> pd.DataFrame:
        """The tidy table (see ``Probe.frame``) of every block (or of ``blocks``); empty with
        the right columns if nothing yet."""
        parts = []
        for iteration, module, layer, direction, summary in (
                self._blocks if blocks is None else blocks):
            for state, metrics in summary.items():
                names = list(metrics)
                T = len(metrics[names[0]])
                values = np.concatenate([metrics[m] for m in names])
                n = values.size
                parts.append(
                    pd.DataFrame(
                        {
                            "iteration": np.full(n, iteration, dtype=np.int64),
                            "module": module,
                            "layer": np.full(n, layer, dtype=np.int64),
                            "direction": np.full(n, direction, dtype=np.int64),
                            "state": state,
                            "t": np.tile(np.arange(T, dtype=np.int64), len(names)),
                            "metric": np.repeat(np.array(names, dtype=object), T),
                            "value": values.astype(np.float64),
                        }
                    )
                )
        if not parts:
            return pd.DataFrame(
                {
                    "iteration": pd.Series(dtype=np.int64),
                    "module": pd.Series(dtype=object),
                    "layer": pd.Series(dtype=np.int64),
                    "direction": pd.Series(dtype=np.int64),
                    "state": pd.Series(dtype=object),
                    "t": pd.Series(dtype=np.int64),
                    "metric": pd.Series(dtype=object),
                    "value": pd.Series(dtype=np.float64),
                }
            )
        return pd.concat(parts, ignore_index=True)
