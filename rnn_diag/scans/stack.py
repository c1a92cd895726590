"""A stack of scan layers: input projection, pre-norm residual blocks, final norm.

    h = W_in x + b_in;   h = h + layer_l(LayerNorm_l(h))  for l = 1 … L;   y = LayerNorm(h)

The usual arrangement of LRU, Mamba and minGRU models, minus their MLP/GLU sub-blocks, so that
every recurrence in the model is one of the scan layers.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import ScanLayer
from .lru import LRU
from .mingru import MinGRU
from .selective_ssm import SelectiveSSM

__all__ = ["SCAN_CELLS", "ScanStack"]

#: cell name -> scan layer class, as a config names it
SCAN_CELLS: dict[str, type[ScanLayer]] = {"lru": LRU, "mingru": MinGRU, "ssm": SelectiveSSM}


def _make_layer(cell: str, d_model: int, kwargs: dict) -> ScanLayer:
    """One ``d_model -> d_model`` layer of kind ``cell``."""
    if cell == "lru":
        kw = dict(kwargs)
        return LRU(d_model, kw.pop("state_size", d_model), d_model, **kw)
    if cell == "mingru":
        return MinGRU(d_model, d_model, **kwargs)
    return SelectiveSSM(d_model, **kwargs)


class ScanStack(nn.Module):
    """``num_layers`` residual scan layers of one kind: ``x [B, T, I] -> y [B, T, d_model]``.

    Args:
        cell: ``"lru"``, ``"mingru"`` or ``"ssm"`` (keys of :data:`SCAN_CELLS`).
        input_size: I.
        d_model: width of the residual stream and of every layer's input and output.
        num_layers: number of blocks.
        **cell_kwargs: passed to every layer: for ``"lru"`` ``state_size`` (default d_model),
            ``r_min``, ``r_max``, ``max_phase``; for ``"mingru"`` ``r_min``, ``r_max`` (the
            hidden size is d_model); for ``"ssm"`` ``d_state``, ``expand``, ``d_conv``,
            ``dt_rank``, ``dt_min``, ``dt_max``, ``r_max``.

    Attributes: ``cell`` (the name), ``num_layers``, ``input_proj`` (``nn.Linear(I,
    d_model)``), ``norms`` and ``layers`` (``nn.ModuleList``, one per block), ``final_norm``;
    ``scan_layers`` is the list of the layers.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = ScanStack("mingru", 3, 16, num_layers=2, r_max=0.9)
        >>> net(torch.randn(4, 20, 3)).shape
        torch.Size([4, 20, 16])
        >>> [type(l).__name__ for l in net.scan_layers]
        ['MinGRU', 'MinGRU']
    """

    def __init__(self, cell: str, input_size: int, d_model: int, num_layers: int = 1,
                 **cell_kwargs):
        super().__init__()
        if cell not in SCAN_CELLS:
            raise ValueError(f"cell must be one of {sorted(SCAN_CELLS)}, got {cell!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.cell, self.num_layers = cell, num_layers
        self.input_size, self.d_model = input_size, d_model
        self.input_proj = nn.Linear(input_size, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))
        self.layers = nn.ModuleList(_make_layer(cell, d_model, cell_kwargs)
                                    for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)

    @property
    def scan_layers(self) -> list[ScanLayer]:
        return list(self.layers)

    def set_sequential(self, sequential: bool = True) -> ScanStack:
        """Run every layer's scan as the plain loop (True) or the parallel scan (False)."""
        for layer in self.layers:
            layer.set_sequential(sequential)
        return self

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, T, input_size] -> [B, T, d_model]``."""
        h = self.input_proj(x)
        for norm, layer in zip(self.norms, self.layers):
            h = h + layer(norm(h))
        return self.final_norm(h)
