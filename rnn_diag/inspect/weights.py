"""Finding the recurrent weight groups of a state dict by PyTorch's parameter names, and
rebuilding the modules they came from without the user's code.

Names (the last dotted component; everything before it is the module's prefix, e.g.
``encoder.rnn`` or DataParallel's ``module.lstm``):

* fused ``nn.RNN``/``nn.GRU``/``nn.LSTM``: ``weight_ih_l{k}``, ``weight_hh_l{k}``,
  ``bias_ih_l{k}``, ``bias_hh_l{k}``, ``weight_hr_l{k}`` (LSTM with ``proj_size``), each with an
  optional ``_reverse`` suffix (bidirectional);
* cells ``nn.RNNCell``/``nn.GRUCell``/``nn.LSTMCell``: ``weight_ih``, ``weight_hh``,
  ``bias_ih``, ``bias_hh``.

The kind follows from ``weight_hh`` ``[G·H, H]`` (``[4H, P]`` with a projection): G = rows /
H gates, 1/3/4 → rnn/gru/lstm, H = columns (with ``weight_hr`` ``[P, H]``: H =
``weight_hr.shape[1]``, P = ``weight_hr.shape[0]``). Because H is read from the columns, the gate
count is never ambiguous when ``weight_hh`` is present. What a state dict cannot say is the
nonlinearity of an ``nn.RNN``/``nn.RNNCell`` (tanh or relu): it is an argument, not a weight, so
it is taken from the caller and flagged as assumed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["RecurrentGroup", "find_groups", "rebuild", "signature_of", "summarise_names"]

_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)(?:_l(\d+)(_reverse)?)?$")
_KINDS = {1: "rnn", 3: "gru", 4: "lstm"}
_FUSED = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
_CELLS = {"rnn": "RNNCell", "gru": "GRUCell", "lstm": "LSTMCell"}


@dataclass
class RecurrentGroup:
    """One recurrent module's weights, found in a state dict.

    Attributes:
        prefix: the module's qualified name in the model ("" at the top level).
        cell: True for ``nn.*Cell`` names (no ``_l{k}`` suffix).
        kind: "rnn", "gru" or "lstm".
        input_size, hidden_size: I (columns of ``weight_ih_l0``) and H.
        proj_size: P (0 without ``weight_hr``).
        num_layers, bidirectional, bias: as the module's constructor takes them.
        params: ``{local name: Tensor}`` (the prefix stripped), what ``load_state_dict`` gets.
        dtype: the weights' dtype, as text (e.g. "float32").
    """

    prefix: str
    cell: bool
    kind: str
    input_size: int
    hidden_size: int
    proj_size: int = 0
    num_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    params: dict = field(default_factory=dict, repr=False)
    dtype: str = "float32"

    @property
    def type_name(self) -> str:
        """``"LSTM"``, ``"GRUCell"``, ...: the ``torch.nn`` class that is rebuilt."""
        return (_CELLS if self.cell else _FUSED)[self.kind]

    def signature(self, nonlinearity: str = "tanh") -> str:
        """The constructor call that rebuilds it, e.g. ``nn.LSTM(3, 8, num_layers=2)``."""
        args = [str(self.input_size), str(self.hidden_size)]
        if not self.cell:
            if self.num_layers != 1:
                args.append(f"num_layers={self.num_layers}")
            if self.proj_size:
                args.append(f"proj_size={self.proj_size}")
            if self.bidirectional:
                args.append("bidirectional=True")
        if not self.bias:
            args.append("bias=False")
        if self.kind == "rnn":
            args.append(f"nonlinearity={nonlinearity!r}")
        return f"nn.{self.type_name}({', '.join(args)})"


def _split(name: str) -> tuple[str, str]:
    prefix, _, last = name.rpartition(".")
    return prefix, last


def summarise_names(names, limit: int = 6) -> str:
    """A few parameter names and the prefixes they live under, for "nothing found" messages.

    Example:
        >>> summarise_names(["enc.conv.weight", "enc.conv.bias", "head.weight"])
        '3 tensors under enc.conv (2), head (1), e.g. enc.conv.weight, enc.conv.bias, head.weight'
    """
    names = list(names)
    if not names:
        return "no tensors at all"
    prefixes: dict[str, int] = defaultdict(int)
    for n in names:
        prefixes[_split(n)[0] or "(top level)"] += 1
    shown = ", ".join(f"{p} ({c})" for p, c in list(prefixes.items())[:limit])
    more = f" and {len(prefixes) - limit} more prefixes" if len(prefixes) > limit else ""
    examples = ", ".join(names[:3])
    return f"{len(names)} tensors under {shown}{more}, e.g. {examples}"


def _infer(prefix: str, cell: bool, params: dict) -> RecurrentGroup:
    """Sizes and settings of one group from its shapes; ValueError when they do not fit."""
    sfx = "" if cell else "_l0"
    hh, ih = params.get("weight_hh" + sfx), params.get("weight_ih" + sfx)
    if hh is None or ih is None:
        missing = "weight_hh" + sfx if hh is None else "weight_ih" + sfx
        raise ValueError(f"{missing} is missing, so the module cannot be rebuilt")
    if hh.dim() != 2 or ih.dim() != 2:
        raise ValueError(f"weight_hh{sfx} {tuple(hh.shape)} / weight_ih{sfx} {tuple(ih.shape)} "
                         "are not matrices")
    hr = params.get("weight_hr" + sfx)
    rows, cols = hh.shape
    if hr is not None:
        if hr.dim() != 2:
            raise ValueError(f"weight_hr{sfx} has shape {tuple(hr.shape)}, not a matrix")
        P, H = hr.shape
        if cols != P or rows != 4 * H:
            raise ValueError(f"weight_hr{sfx} {tuple(hr.shape)} needs weight_hh{sfx} "
                             f"[{4 * H}, {P}] (an LSTM with proj_size), got {tuple(hh.shape)}")
        gates = 4
    else:
        P, H = 0, cols
        if H == 0 or rows % H or rows // H not in _KINDS:
            raise ValueError(f"weight_hh{sfx} has shape {tuple(hh.shape)}: rows/columns must be "
                             "1, 3 or 4 (RNN, GRU, LSTM)")
        gates = rows // H
    if ih.shape[0] != rows:
        raise ValueError(f"weight_ih{sfx} {tuple(ih.shape)} and weight_hh{sfx} "
                         f"{tuple(hh.shape)} disagree on the number of gate rows")
    layers = sorted({int(m.group(2)) for m in map(_NAME.match, params) if m and m.group(2)})
    return RecurrentGroup(
        prefix=prefix,
        cell=cell,
        kind=_KINDS[gates],
        input_size=int(ih.shape[1]),
        hidden_size=int(H),
        proj_size=int(P),
        num_layers=1 if cell else (max(layers) + 1),
        bidirectional=any(k.endswith("_reverse") for k in params),
        bias=any(k.startswith("bias_") for k in params),
        params=params,
        dtype=str(hh.dtype).removeprefix("torch."),
    )


def find_groups(state_dict: dict) -> tuple[list[RecurrentGroup], list[tuple[str, str]]]:
    """Every recurrent weight group of a flat state dict, in the order of its names.

    Returns:
        ``(groups, skipped)``: the groups whose shapes fit a PyTorch recurrent module, and
        ``(prefix, reason)`` for names that look recurrent but do not fit (e.g. a custom
        module's ``weight_hh`` of a shape no ``nn.RNN``/``GRU``/``LSTM`` has).

    Example:
        >>> import torch
        >>> sd = {f"enc.gru.{k}": v for k, v in torch.nn.GRU(3, 5, 2).state_dict().items()}
        >>> groups, skipped = find_groups(sd)
        >>> g = groups[0]
        >>> g.prefix, g.kind, g.input_size, g.hidden_size, g.num_layers, skipped
        ('enc.gru', 'gru', 3, 5, 2, [])
    """
    found: dict[tuple[str, bool], dict] = {}
    for name, tensor in state_dict.items():
        prefix, last = _split(name)
        m = _NAME.match(last)
        if m is None:
            continue
        found.setdefault((prefix, m.group(2) is None), {})[last] = tensor
    groups, skipped = [], []
    for (prefix, cell), params in found.items():
        if (prefix, not cell) in found and cell:
            skipped.append((prefix, "mixes cell names (weight_hh) and layer names "
                                    "(weight_hh_l0) under one prefix"))
            continue
        try:
            groups.append(_infer(prefix, cell, params))
        except ValueError as exc:
            skipped.append((prefix, str(exc)))
    return groups, skipped


def rebuild(group: RecurrentGroup, nonlinearity: str = "tanh"):
    """The ``torch.nn`` module of a group, with its weights loaded (strictly), on the CPU.

    Half-precision weights are loaded into a float32 module (the analysis needs QR and
    eigenvalues, which CPU half precision lacks); float64 stays float64.

    Raises:
        ValueError: the weights do not fit the inferred module (a missing layer or direction,
            a shape that disagrees); the message is ``load_state_dict``'s first line.
    """
    import torch
    from torch import nn

    dtype = next(iter(group.params.values())).dtype
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    cls = getattr(nn, group.type_name)
    kwargs: dict = {"bias": group.bias}
    if group.kind == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    if not group.cell:
        kwargs.update(num_layers=group.num_layers, bidirectional=group.bidirectional)
        if group.proj_size:
            kwargs["proj_size"] = group.proj_size
    with torch.random.fork_rng(devices=[]):  # the initial draws are overwritten at once
        module = cls(group.input_size, group.hidden_size, **kwargs)
    module = module.to(dtype)
    params = {k: v.to(dtype) for k, v in group.params.items()}
    try:
        module.load_state_dict(params, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ValueError(f"the weights do not fit {group.signature(nonlinearity)}: "
                         f"{' '.join(lines[1:3]) or lines[0]}") from None
    return module.eval()


def signature_of(module) -> str:
    """The constructor call of a PyTorch recurrent module, as :meth:`RecurrentGroup.signature`.

    Example:
        >>> from torch import nn
        >>> signature_of(nn.LSTM(3, 8, num_layers=2, proj_size=4, bias=False))
        'nn.LSTM(3, 8, num_layers=2, proj_size=4, bias=False)'
    """
    name = type(module).__name__
    cell = name.endswith("Cell")
    group = RecurrentGroup(
        prefix="", cell=cell, kind=name.removesuffix("Cell").lower(),
        input_size=module.input_size, hidden_size=module.hidden_size,
        proj_size=getattr(module, "proj_size", 0),
        num_layers=1 if cell else module.num_layers,
        bidirectional=False if cell else module.bidirectional, bias=bool(module.bias),
    )
    return group.signature(getattr(module, "nonlinearity", "tanh"))
