"""The small recurrent models an experiment trains, and their recurrent-weight initialisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..scans import SCAN_CELLS as SCAN_LAYERS
from ..scans import ScanStack

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
INITS = ("default", "orthogonal", "identity", "normal")
SCAN_CELLS = tuple(SCAN_LAYERS)
"""The cells built as a :class:`rnn_diag.scans.ScanStack` (diagonal scans): lru, mingru, ssm."""


class SequenceModel(nn.Module):
    """A recurrent stack (``batch_first``) and a linear read-out of its last states.

    Args:
        cell: "rnn", "gru" or "lstm" (``torch.nn``), or a scan cell "lru", "mingru", "ssm"
            (a :class:`rnn_diag.scans.ScanStack`).
        input_size, hidden_size, output_size: feature sizes I, H and O; H is d_model, the
            width of every layer's output, for the scan cells.
        num_layers: stacked recurrent layers.
        nonlinearity: "tanh" or "relu" (Elman RNN only; the scan cells ignore it).
        output_steps: S, how many of the last hidden states of the top layer are read out.
        tbptt: ``None``, or N for truncated backpropagation through time (rnn, gru, lstm):
            the recurrent module runs on chunks of N steps and the state handed from one chunk
            to the next is detached, so gradient flows back at most to the start of a loss's
            chunk; the outputs' values are those of one run over the whole sequence.
        **layer_kwargs: the scan layers' own keyword arguments (``r_max``, ``state_size``,
            ``d_state``, ...; see :class:`rnn_diag.scans.ScanStack`), only with a scan cell.

    ``forward(x [N, T, I]) -> [N, S, O]``: the head applied to ``h[:, T-S:]``.

    Example:
        >>> m = SequenceModel("gru", 3, 8, 5, output_steps=2)
        >>> m(torch.zeros(4, 10, 3)).shape
        torch.Size([4, 2, 5])
        >>> m = SequenceModel("lru", 3, 8, 5, state_size=16, r_max=0.9)
        >>> m(torch.zeros(4, 10, 3)).shape, type(m.rnn).__name__
        (torch.Size([4, 1, 5]), 'ScanStack')
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        output_steps: int = 1,
        tbptt: int | None = None,
        **layer_kwargs,
    ):
        super().__init__()
        if cell not in CELLS and cell not in SCAN_CELLS:
            raise ValueError(f"cell must be one of {[*CELLS, *SCAN_CELLS]}, got {cell!r}")
        self.cell = cell
        if cell in SCAN_CELLS:
            self.rnn = ScanStack(cell, input_size, hidden_size, num_layers, **layer_kwargs)
        else:
            if layer_kwargs:
                raise ValueError(f"cell {cell} takes no scan-layer arguments, got "
                                 f"{sorted(layer_kwargs)}")
            kwargs = {"num_layers": num_layers, "batch_first": True}
            if cell == "rnn":
                kwargs["nonlinearity"] = nonlinearity
            self.rnn = CELLS[cell](input_size, hidden_size, **kwargs)
        if tbptt is not None and (cell in SCAN_CELLS or tbptt < 1):
            raise ValueError(f"tbptt needs cell rnn, gru or lstm and N >= 1, got cell {cell!r}, "
                             f"tbptt={tbptt!r}")
        self.head = nn.Linear(hidden_size, output_size)
        self.output_steps = output_steps
        self.tbptt = tbptt

    def forward(self, x: Tensor) -> Tensor:
        if self.tbptt is None:
            out = self.rnn(x)
            out = out[0] if isinstance(out, tuple) else out  # torch.nn's (output, state)
        else:
            out = self._truncated(x, self.tbptt)
        return self.head(out[:, -self.output_steps :])

    def _truncated(self, x: Tensor, n: int) -> Tensor:
        """The recurrent outputs ``[N, T, H]`` run in chunks of ``n`` steps, the state detached
        between chunks (truncated BPTT)."""
        chunks, state = [], None
        for chunk in x.split(n, dim=1):
            out, state = self.rnn(chunk, state)
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) \
                else state.detach()
            chunks.append(out)
        return torch.cat(chunks, dim=1)


def recurrent_blocks(rnn: nn.RNNBase):
    """``(layer, gate, block)`` for every ``[H, H]`` gate block of every ``weight_hh``; the
    blocks are views, so writing into them changes the module."""
    H = rnn.hidden_size
    gates = rnn.weight_hh_l0.shape[0] // H
    for layer in range(rnn.num_layers):
        for suffix in ("", "_reverse") if rnn.bidirectional else ("",):
            W = getattr(rnn, f"weight_hh_l{layer}{suffix}")
            for g in range(gates):
                yield layer, g, W.data[g * H : (g + 1) * H]


@torch.no_grad()
def init_recurrent(rnn: nn.RNNBase, init: str = "default", weight_scale: float | None = None,
                   generator: torch.Generator | None = None) -> None:
    """Initialise every recurrent gate block of ``rnn`` in place.

    Args:
        init: "default" keeps PyTorch's U(-1/√H, 1/√H); "orthogonal" draws each block as a
            random orthogonal matrix; "identity" sets each block to I (Le et al., 2015);
            "normal" draws entries from N(0, 1/H) (spectral radius → 1 for large H).
        weight_scale: if given, each block is then rescaled so that its spectral radius (largest
            eigenvalue modulus) equals this value; None keeps the scale of ``init``.
        generator: random source for "orthogonal" and "normal" (the global one by default).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> rnn = nn.GRU(2, 6)
        >>> init_recurrent(rnn, "normal", weight_scale=0.5)
        >>> [round(float(torch.linalg.eigvals(b).abs().max()), 6)
        ...  for _, _, b in recurrent_blocks(rnn)]
        [0.5, 0.5, 0.5]
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if weight_scale is not None and not (weight_scale > 0 and math.isfinite(weight_scale)):
        raise ValueError(f"weight_scale must be a positive number or None, got {weight_scale!r}")
    for layer, gate, block in recurrent_blocks(rnn):
        H = block.shape[0]
        if init == "orthogonal":
            a = torch.randn(H, H, generator=generator, dtype=torch.float64)
            q, r = torch.linalg.qr(a)
            block.copy_(q * torch.sign(torch.diagonal(r)))  # Haar-distributed (Mezzadri, 2007)
        elif init == "identity":
            block.copy_(torch.eye(H))
        elif init == "normal":
            block.copy_(torch.randn(H, H, generator=generator, dtype=torch.float64) / math.sqrt(H))
        if weight_scale is not None:
            radius = float(torch.linalg.eigvals(block.double()).abs().max())
            if radius == 0.0:
                raise ValueError(
                    f"cannot rescale layer {layer} gate block {gate} to spectral radius "
                    f"{weight_scale}: its spectral radius is 0"
                )
            block.mul_(weight_scale / radius)
