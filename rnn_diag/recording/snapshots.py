"""Weight spectra and Lyapunov exponents of a user's recurrent module, on the inputs it was
actually given: the ``spectra`` and ``lyapunov`` rows of a recording.

A recording has no task to draw inputs from, so :class:`InputTape` keeps the inputs of the
module's most recent call(s): the Lyapunov exponents are those of the dynamics driven by the
user's own data, as in the sweep runner (``rnn_diag.experiments.trial``), which strings
training windows end to end.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..modules.dynamics import lyapunov_spectrum, recurrent_spectra
from ..modules.layers import CELL_TYPES, FUSED_TYPES, state_size
from ..modules.scans import scan_layers

__all__ = ["InputTape", "lyapunov_rows", "spectra_rows", "supports_snapshots"]

def supports_snapshots(module: nn.Module) -> bool:
    """Whether spectra and Lyapunov exponents can be taken of ``module`` (PyTorch's recurrent
    modules and cells, scan layers and stacks; a custom cell has no ``weight_hh`` to read)."""
    return isinstance(module, FUSED_TYPES + CELL_TYPES) or scan_layers(module) is not None


class InputTape:
    """The recent inputs of one module, as one time-major sequence ``[≤ steps, I]`` (detached).

    A fused module's call gives its samples one after another (each to its own length for a
    PackedSequence); a cell's calls give sample 0 of each call, in call order. The tape keeps
    the last ``steps`` steps.

    Args:
        module: the recurrent module (see :func:`supports_snapshots`).
        steps: the length kept.
    """

    def __init__(self, module: nn.Module, steps: int):
        self.module = module
        self.steps = int(steps)
        self._parts: list[Tensor] = []
        self._length = 0

    def add(self, inp) -> None:
        """Append the input of one call (``args[0]`` of the module's forward)."""
        if isinstance(self.module, FUSED_TYPES) or scan_layers(self.module) is not None:
            parts = _samples(self.module, inp, self.steps)
            self._parts, self._length = [], 0  # a fused call is a whole sequence: start over
        else:
            x = inp.detach()
            parts = [(x[0] if x.dim() == 2 else x).unsqueeze(0)]
        for p in parts:
            self._parts.append(p.detach())
            self._length += p.shape[0]
        while self._parts and self._length - self._parts[0].shape[0] >= self.steps:
            self._length -= self._parts.pop(0).shape[0]

    def sequence(self) -> Tensor | None:
        """``[T, I]`` with T ≤ ``steps``, or None before the first call."""
        if not self._parts:
            return None
        return torch.cat(self._parts)[-self.steps:]


def _samples(module: nn.RNNBase, inp, steps: int) -> list[Tensor]:
    """The first samples of a fused call's input, each ``[T_b, I]``, until ``steps`` steps."""
    if isinstance(inp, PackedSequence):
        padded, lengths = pad_packed_sequence(inp, batch_first=False)
        seqs = [padded[: int(lengths[b]), b] for b in range(padded.shape[1])]
    else:
        x = inp.detach()
        if x.dim() == 2:  # unbatched [T, I]
            seqs = [x]
        else:
            # scan layers are batch-first [B, T, I]
            x = x.transpose(0, 1) if getattr(module, "batch_first", True) else x
            seqs = [x[:, b] for b in range(x.shape[1])]
    out, total = [], 0
    for s in seqs:
        if total >= steps:
            break
        out.append(s)
        total += s.shape[0]
    return out


def spectra_rows(module: nn.Module, when: str) -> pd.DataFrame:
    """:func:`rnn_diag.recurrent_spectra` of ``module``, with ``when`` first and without
    ``module`` (a recording stores one module per trial)."""
    df = recurrent_spectra(module).drop(columns=["module"])
    df.insert(0, "when", str(when))
    return df


def lyapunov_rows(module: nn.Module, inputs: Tensor, when: str,
                  k: int | None = None) -> list[dict]:
    """The ``k`` leading Lyapunov exponents (None: all) of every layer of ``module`` driven by
    ``inputs [T, I]`` (nats per step; 100 or T/10 warm-up steps, whichever is fewer): rows
    ``when, layer, index, exponent``. Bidirectional modules: the forward direction."""
    T = inputs.shape[0]
    scans = scan_layers(module)
    layers = getattr(module, "num_layers", 1) if isinstance(module, FUSED_TYPES) else 1
    if scans is not None:
        layers = len(scans)
    elif k is not None:
        k = min(k, state_size(module))
    rows = []
    for layer in range(layers):
        kwargs = {"layer": layer} if isinstance(module, FUSED_TYPES) or scans else {}
        exps = lyapunov_spectrum(module, None, inputs, warmup=min(100, T // 10),
                                 k=None if scans else k, **kwargs)
        if scans and k is not None:
            exps = exps[:k]  # one exponent per channel, descending
        rows += [{"when": str(when), "layer": layer, "index": i, "exponent": v}
                 for i, v in enumerate(exps.tolist())]
    return rows
