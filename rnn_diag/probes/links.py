"""How the state a recurrent call receives relates to the state the previous call returned.

User code hands the state from one call to the next in many ways: the returned tensor itself
(``h = cell(x, h)``), a view of it (``h.unsqueeze(0)``), a transformed copy (PPO's done-mask
``(1 - done) * h``, a captioning decoder's ``h[:batch_size_t]``), a detached copy (truncated
BPTT), or a fresh state. The probe joins calls into one recursion only where the values are
provably the returned ones; everywhere else it reports what autograd delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

#: Link kinds, from the strongest to the weakest.
SAME = "same"  # the returned tensor itself, unmodified
VIEW = "view"  # a view with the same values in the same order (reshape, (un)squeeze, ...)
TRANSFORM = "transform"  # computed from the returned state (mask, slice, in-place change, ...)
DETACHED = "detached"  # the returned values with the graph cut (``detach()``): no gradient
FRESH = "fresh"  # not derived from the previous call (None, zeros, another tensor)

#: Autograd nodes that only re-index their input (no arithmetic).
_VIEW_NODES = (
    "ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward", "AliasBackward",
    "UnsqueezeBackward", "SqueezeBackward", "SliceBackward", "SelectBackward",
    "PermuteBackward", "TransposeBackward", "TBackward", "ExpandBackward", "AsStridedBackward",
)
#: Nodes searched for a transform's origin before giving up (a cell's own graph has ~20).
_SEARCH_LIMIT = 64


@dataclass
class Handed:
    """What one call returned to the user, remembered to recognise the next call's state.

    Attributes:
        tensors: the returned state components (h, or (h, c)).
        versions: their ``_version`` at return (an in-place change bumps it).
        nodes: their ``grad_fn`` (held so that the node's Python object stays the same one).
        output: for a one-step, one-layer, one-direction fused call, its ``output``, which
            holds the same values as h_n (``out, _ = gru(x, h); h = out`` hands it on).
    """

    tensors: tuple[Tensor, ...]
    versions: tuple[int, ...]
    nodes: tuple
    output: Handed | None = None

    @staticmethod
    def of(tensors: tuple[Tensor, ...], output: Tensor | None = None) -> Handed:
        return Handed(
            tuple(tensors), tuple(t._version for t in tensors), tuple(t.grad_fn for t in tensors),
            None if output is None else Handed.of((output,)),
        )

    def modified(self) -> bool:
        """Whether any returned tensor was changed in place since the call."""
        return any(t._version != v for t, v in zip(self.tensors, self.versions, strict=True))


_STRENGTH = {SAME: 4, VIEW: 3, TRANSFORM: 2, DETACHED: 1, FRESH: 0}


def classify_fused(parts: tuple[Tensor, ...] | None, handed: Handed | None) -> tuple[str, bool]:
    """:func:`classify` for a fused call's state, also accepting the previous call's output
    in place of h_n (see :attr:`Handed.output`). Returns the link kind and whether h came
    through the output."""
    kind = classify(parts, handed)
    if handed is None or handed.output is None or parts is None or kind in (SAME, VIEW):
        return kind, False
    rest = Handed(handed.tensors[1:], handed.versions[1:], handed.nodes[1:])
    alt = Handed(handed.output.tensors + rest.tensors, handed.output.versions + rest.versions,
                 handed.output.nodes + rest.nodes)
    via = classify(parts, alt)
    if _STRENGTH[via] > _STRENGTH[kind]:
        return via, True
    return kind, False


def classify(parts: tuple[Tensor, ...] | None, handed: Handed | None) -> str:
    """The link kind between the state components ``parts`` a call receives and what the
    previous call returned (``handed``)."""
    if parts is None or handed is None or len(parts) != len(handed.tensors):
        return FRESH
    kinds = {
        _classify_one(p, h, v, n)
        for p, h, v, n in zip(parts, handed.tensors, handed.versions, handed.nodes, strict=True)
    }
    if kinds <= {SAME}:
        return SAME
    if kinds <= {SAME, VIEW}:
        return VIEW
    if kinds <= {DETACHED, FRESH}:
        return DETACHED if DETACHED in kinds else FRESH
    return TRANSFORM


def _classify_one(p: Tensor, h: Tensor, version: int, node) -> str:
    if p is None:
        return FRESH
    if h._version != version:
        # Changed in place after the call: the recorded values are gone either way.
        return TRANSFORM if _derived(p, h, node) or p is h else FRESH
    if p is h:
        return SAME
    if _same_elements(p, h):
        if not p.requires_grad:
            return DETACHED
        if _view_path(p.grad_fn, node):
            return VIEW
    if p.requires_grad and _derived(p, h, node):
        return TRANSFORM
    if not p.requires_grad and _shares_storage(p, h):
        return DETACHED
    return FRESH


def _shares_storage(p: Tensor, h: Tensor) -> bool:
    try:
        return p.untyped_storage().data_ptr() == h.untyped_storage().data_ptr()
    except RuntimeError:  # tensors without storage (e.g. functorch wrappers)
        return False


def _same_elements(p: Tensor, h: Tensor) -> bool:
    """Same memory, same element order, shapes equal up to size-1 dimensions."""
    if p.numel() != h.numel() or p.dtype != h.dtype or p.device != h.device:
        return False
    if not (p.is_contiguous() and h.is_contiguous()) or p.data_ptr() != h.data_ptr():
        return False
    return [s for s in p.shape if s != 1] == [s for s in h.shape if s != 1]


def _view_path(fn, target) -> bool:
    """Whether ``fn`` reaches ``target`` through view nodes only."""
    for _ in range(_SEARCH_LIMIT):
        if fn is target:
            return True
        if fn is None or not type(fn).__name__.startswith(_VIEW_NODES):
            return False
        nexts = [f for f, _ in fn.next_functions if f is not None]
        if len(nexts) != 1:
            return False
        fn = nexts[0]
    return False


def _derived(p: Tensor, h: Tensor, node) -> bool:
    """Whether ``p``'s graph reaches the node that produced ``h`` (bounded search)."""
    if node is None:
        return False
    start = p.grad_fn
    seen, frontier = set(), [start] if start is not None else []
    while frontier and len(seen) < _SEARCH_LIMIT:
        fn = frontier.pop()
        if fn is node:
            return True
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        frontier.extend(f for f, _ in fn.next_functions if f is not None)
    return False


def reads(output: Tensor, source: Tensor) -> bool:
    """Whether ``output`` was computed from ``source`` inside one call's graph (e.g. an LSTM
    cell's h_t from its c_t on CPU), as opposed to both coming out of one node (the fused CUDA
    LSTM cell)."""
    node = source.grad_fn
    if node is None or output.grad_fn is None or output.grad_fn is node:
        return False
    return _derived(output, source, node)
