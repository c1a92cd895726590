"""Exactness of the probe: every per-timestep gradient it reports equals plain autograd on an
explicitly unrolled float64 model with the same weights (tests/probes/reference.py).

What is compared, per configuration, for every layer, direction and state (h, and c for LSTM):
  - ``probe.hidden_grads``  vs the reference's ``h_t.grad`` / ``c_t.grad`` (None means 0);
  - ``probe.hidden_grad_log10_norms`` vs log10 of the reference's per-sample norms;
  - ``probe.immediate_grads`` vs the .grad of the reference's exit copies of h_t (the copy that
    feeds the output / the layer above) plus, at each sample's last step, the .grad of its
    final-state copy (h_n / c_n);
  - for the top layer, ``probe.immediate_grads`` also vs the real module's own output and h_n
    gradients, read with ``retain_grad()`` on the tensors the real module returned.

Why this is independent of rnn_diag: the reference never calls a recurrent module's forward and
never uses rnn_diag; its gradients are plain autograd through its own unrolled graph. The
reference itself is checked first (``test_reference_*``): its outputs and final states equal the
real module's forward, its dL/dx and dL/dh0 equal the real module's backward, and its top-layer
immediate gradients equal the real module's output gradients, all in float64 to ~1e-12.

Tolerances: float64 models 1e-9 relative, float32 models (reference still float64, from the same
float32 weights and inputs) 1e-5 relative; "relative" is to the largest per-sample norm of the
reference at that t (T <= 11 here, so every step is within distance 10 of the loss). Where an
immediate gradient is exactly zero for the whole batch at t, the scale is the total gradient's.
Log10 norms: within the same number of decades, and -inf exactly where the reference is 0.

Custom cells returning (h, c): state "c" is the gradient w.r.t. the returned c as plain autograd
gives it in the user's model (test_custom_tuple_cell_c_state).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
import torch
from reference import TanhCell, TupleCell, Unrolled, unroll_cell_loop, unroll_fused
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

C = 3  # classes of the linear head
RTOL = {torch.float64: 1e-9, torch.float32: 1e-5}
REF_TOL = dict(rtol=1e-10, atol=1e-12)  # reference forward/backward vs the real module


# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class FusedCase:
    kind: str  # rnn_tanh | rnn_relu | gru | lstm
    layers: int = 1
    bi: bool = False
    batch_first: bool = False
    packed: str | None = None  # None | "sorted" (enforce_sorted=True) | "unsorted"
    h0: bool = False
    loss: str = "last"  # last | every | h_n | c_n | mixed (every + h_n + c_n)
    dtype: torch.dtype = torch.float64
    train: bool = False
    wrapped: bool = False  # model is Wrapper(rnn) (module name "rnn") vs the rnn itself ("")
    bias: bool = True
    unbatched: bool = False  # 2-D [T, I] input, no batch dimension
    T: int = 7
    B: int = 3

    I = 3
    H = 4

    def __str__(self) -> str:
        parts = [
            self.kind,
            f"L{self.layers}",
            "bi" if self.bi else "uni",
            "batch_first" if self.batch_first else None,
            f"packed_{self.packed}" if self.packed else None,
            "unbatched" if self.unbatched else None,
            ("h0c0" if self.kind == "lstm" else "h0") if self.h0 else None,
            "nobias" if not self.bias else None,
            f"loss_{self.loss}",
            "f64" if self.dtype == torch.float64 else "f32",
            "train" if self.train else "eval",
            "wrapped" if self.wrapped else "bare",
        ]
        return "-".join(p for p in parts if p)

    @property
    def D(self) -> int:
        return 2 if self.bi else 1

    @property
    def states(self) -> tuple[str, ...]:
        return ("h", "c") if self.kind == "lstm" else ("h",)


F64, F32 = torch.float64, torch.float32
FUSED_CASES = [
    # nn.RNN, tanh
    FusedCase("rnn_tanh"),  # docs/design.md §3's example: 1 layer, loss on the last output
    FusedCase("rnn_tanh", 2, True, True, "sorted", True, "every", train=True, wrapped=True),
    FusedCase("rnn_tanh", 3, True, packed="unsorted", loss="h_n", B=4, T=9),
    FusedCase("rnn_tanh", 1, True, True, h0=True, loss="every", dtype=F32),
    FusedCase("rnn_tanh", 3, packed="sorted", loss="last", dtype=F32, wrapped=True, B=4),
    # unbatched 2-D [T, I] input (h0 [L*D, H]): the probe is expected to report [T, 1, H]
    FusedCase("rnn_tanh", 2, True, loss="mixed", unbatched=True, h0=True),
    # nn.RNN, relu
    FusedCase("rnn_relu", loss="every", wrapped=True),
    FusedCase("rnn_relu", 2, True, packed="unsorted", h0=True, loss="last", T=8, B=4),
    FusedCase("rnn_relu", 2, loss="every", bias=False, dtype=F32),
    FusedCase("rnn_relu", 3, True, True, loss="mixed", train=True),
    # nn.GRU
    FusedCase("gru", loss="last", dtype=F32, wrapped=True),
    FusedCase("gru", 2, True, True, "unsorted", loss="last", train=True, wrapped=True),
    FusedCase("gru", 3, h0=True, loss="h_n", T=10),
    FusedCase("gru", 1, True, packed="sorted", loss="every", dtype=F32, B=4),
    FusedCase("gru", 2, True, h0=True, loss="mixed", bias=False),
    FusedCase("gru", 3, True, True, "unsorted", h0=True, loss="mixed", B=4, T=11),
    # nn.LSTM
    FusedCase("lstm"),
    FusedCase("lstm", 2, True, True, "unsorted", h0=True, loss="last", wrapped=True, B=4),
    FusedCase("lstm", 3, True, loss="c_n"),
    FusedCase("lstm", 2, packed="sorted", h0=True, loss="c_n", T=9, B=4),
    FusedCase("lstm", 1, True, loss="every", dtype=F32, train=True, wrapped=True),
    FusedCase("lstm", 3, batch_first=True, h0=True, loss="mixed", dtype=F32),
    FusedCase("lstm", 2, True, packed="unsorted", loss="mixed", bias=False),
    FusedCase("lstm", 1, packed="unsorted", loss="h_n", dtype=F32, T=11, B=4),
    FusedCase("lstm", 1, h0=True, loss="c_n", unbatched=True),  # unbatched, see above
    FusedCase("lstm", 2, True, True, "sorted", loss="every", dtype=F32, T=11, B=4),
]


@dataclass(frozen=True)
class CellCase:
    kind: str  # rnncell_tanh | rnncell_relu | grucell | lstmcell | custom_tanh | custom_tuple
    init: bool = False  # pass an initial state (custom cells always get one: zeros if False)
    loss: str = "last"  # last | every | h_n | c_n | mixed, on (stacked h_t, final h, final c)
    dtype: torch.dtype = torch.float64
    attach: str = "auto"  # auto | self (model is the cell) | object | name (modules=[...])
    T: int = 8
    B: int = 3

    I = 3
    H = 4

    def __str__(self) -> str:
        parts = [
            self.kind,
            "init" if self.init else "noinit",
            f"loss_{self.loss}",
            "f64" if self.dtype == torch.float64 else "f32",
            f"attach_{self.attach}",
        ]
        return "-".join(parts)

    @property
    def states(self) -> tuple[str, ...]:
        # custom_tuple's "c" is checked on its own in test_custom_tuple_cell_c_state
        return ("h", "c") if self.kind == "lstmcell" else ("h",)

    @property
    def n_states(self) -> int:
        return 2 if self.kind in ("lstmcell", "custom_tuple") else 1


CELL_CASES = [
    CellCase("rnncell_tanh", loss="last"),
    CellCase("rnncell_tanh", init=True, loss="every", attach="self"),
    CellCase("rnncell_relu", init=True, loss="every"),
    CellCase("rnncell_relu", loss="last", dtype=F32, T=11),
    CellCase("grucell", init=True, loss="last", dtype=F32),
    CellCase("grucell", loss="every", B=4),
    CellCase("grucell", init=True, loss="h_n", attach="self"),
    CellCase("lstmcell", loss="last"),
    CellCase("lstmcell", init=True, loss="c_n"),
    CellCase("lstmcell", init=True, loss="mixed", dtype=F32, attach="self"),
    CellCase("lstmcell", loss="every", T=10),
    CellCase("custom_tanh", init=True, loss="last", attach="object"),
    CellCase("custom_tanh", loss="every", dtype=F32, attach="name"),
    CellCase("custom_tuple", init=True, loss="every", attach="object"),
    CellCase("custom_tuple", loss="mixed", attach="name", T=10),
]


# --------------------------------------------------------------------------- models and losses


class Wrapper(nn.Module):
    """A user model holding the recurrent module as ``self.rnn`` and a linear head."""

    def __init__(self, rnn: nn.RNNBase, head: nn.Linear):
        super().__init__()
        self.rnn = rnn
        self.head = head

    def forward(self, x, hx=None):
        return self.rnn(x) if hx is None else self.rnn(x, hx)


def drive(cell: nn.Module, x: Tensor, state=None):
    """The user's loop ``state = cell(x[t], state)``; returns (stacked h_t [T, B, H], state)."""
    outs = []
    for t in range(x.shape[0]):
        state = cell(x[t]) if state is None else cell(x[t], state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outs), state


class CellLoop(nn.Module):
    """A user model driving a cell in a Python loop (module name "cell")."""

    def __init__(self, cell: nn.Module, head: nn.Linear):
        super().__init__()
        self.cell = cell
        self.head = head

    def forward(self, x, state=None):
        return drive(self.cell, x, state)


@dataclass
class LossSpec:
    """A fixed loss on the time-major output [T, B, W] and the final states [S, B, H]."""

    kind: str
    targets: Tensor  # [T, B] class indices
    a_h: Tensor  # [S, B, H] float64 coefficients
    a_c: Tensor


def make_loss_spec(kind: str, T: int, B: int, S: int, H: int, gen: torch.Generator) -> LossSpec:
    targets = torch.randint(0, C, (T, B), generator=gen)
    a_h = torch.randn(S, B, H, generator=gen, dtype=F64)
    a_c = torch.randn(S, B, H, generator=gen, dtype=F64)
    return LossSpec(kind, targets, a_h, a_c)


def compute_loss(spec: LossSpec, w, b, out, h_n, c_n, lengths: list[int]) -> Tensor:
    """The same scalar loss for the real model (its dtype) and the reference (float64).

    last: cross-entropy of a linear head on each sample's last valid output (many-to-one).
    every: cross-entropy of the head at every valid step (many-to-many).
    h_n / c_n: a nonlinear function of the final states only. mixed: every + h_n + c_n.
    """
    dt = out.dtype
    loss = out.new_zeros(())
    if spec.kind == "last":
        rows = torch.stack([out[n - 1, i] for i, n in enumerate(lengths)])
        loss = loss + nn.functional.cross_entropy(rows @ w.T + b, spec.targets[0])
    if spec.kind in ("every", "mixed"):
        T = out.shape[0]
        valid = torch.arange(T).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)
        logits = out @ w.T + b
        loss = loss + nn.functional.cross_entropy(logits[valid], spec.targets[valid])
    if spec.kind in ("h_n", "mixed"):
        loss = loss + (torch.tanh(2 * h_n) * spec.a_h.to(dt)).sum()
    if spec.kind in ("c_n", "mixed") and c_n is not None:
        loss = loss + (torch.tanh(c_n) * spec.a_c.to(dt) + 0.1 * c_n**2).sum()
    return loss


def _seed(case) -> int:
    return zlib.crc32(str(case).encode())


# --------------------------------------------------------------------------- a run of each side


@dataclass
class Run:
    """One forward + backward of the real model (its tensors kept, with retained grads)."""

    model: nn.Module
    module: nn.Module  # the recurrent module or cell
    name: str  # its qualified name in model
    head: nn.Linear
    x: Tensor  # the input before packing (requires grad), in the module's layout
    x_in: object  # what the module received (tensor or PackedSequence)
    hx: object  # None, a tensor, or a tuple (requires grad)
    lengths: list[int]
    spec: LossSpec
    out: Tensor | None = None  # time-major [T, B, W], retained grad
    h_n: Tensor | None = None  # [S, B, H], retained grad
    c_n: Tensor | None = None
    loss: Tensor | None = None


def _lengths(case: FusedCase) -> list[int]:
    T, B = case.T, case.B
    if case.packed == "sorted":
        return [T, T - 2, 3, 1][:B]
    if case.packed == "unsorted":
        return [3, T, 1, T - 2][:B]
    return [T] * (1 if case.unbatched else B)


def build_fused(case: FusedCase) -> Run:
    torch.manual_seed(_seed(case))
    gen = torch.Generator().manual_seed(_seed(case))
    cls = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[case.kind]
    kwargs = dict(
        num_layers=case.layers,
        bidirectional=case.bi,
        batch_first=case.batch_first,
        bias=case.bias,
    )
    if cls is nn.RNN:
        kwargs["nonlinearity"] = case.kind.split("_")[1]
    rnn = cls(case.I, case.H, **kwargs).to(case.dtype)
    head = nn.Linear(case.D * case.H, C).to(case.dtype)
    model = Wrapper(rnn, head) if case.wrapped else rnn
    model.train(case.train)
    lengths = _lengths(case)
    B = len(lengths)

    x = torch.randn(case.T, B, case.I, generator=gen, dtype=F64)
    if case.unbatched:
        x = x[:, 0]
    elif case.batch_first:
        x = x.transpose(0, 1).contiguous()
    x = x.to(case.dtype).requires_grad_()
    x_in = x
    if case.packed:
        x_in = pack_padded_sequence(
            x, torch.tensor(lengths), case.batch_first, enforce_sorted=case.packed == "sorted"
        )
    hx = None
    if case.h0:
        shape = (
            (case.layers * case.D, case.H) if case.unbatched else (case.layers * case.D, B, case.H)
        )
        parts = [
            (0.5 * torch.randn(shape, generator=gen, dtype=F64)).to(case.dtype).requires_grad_()
            for _ in case.states
        ]
        hx = tuple(parts) if case.kind == "lstm" else parts[0]
    spec = make_loss_spec(case.loss, case.T, B, case.layers * case.D, case.H, gen)
    return Run(model, rnn, "rnn" if case.wrapped else "", head, x, x_in, hx, lengths, spec)


def forward_fused(run: Run, unbatched: bool) -> None:
    """Real forward in time-major layout, with retain_grad on output / h_n / c_n."""
    if run.model is run.module:  # the model is the bare nn.RNN/GRU/LSTM
        out, state = run.module(run.x_in) if run.hx is None else run.module(run.x_in, run.hx)
    else:
        out, state = run.model(run.x_in, run.hx)
    if isinstance(out, PackedSequence):
        out = pad_packed_sequence(out)[0]
    elif unbatched:
        out = out.unsqueeze(1)
    elif run.module.batch_first:
        out = out.transpose(0, 1)
    states = state if isinstance(state, tuple) else (state,)
    if unbatched:
        states = tuple(s.unsqueeze(1) for s in states)
    _finish(run, out, states)


def _finish(run: Run, out: Tensor, states: tuple[Tensor, ...]) -> None:
    for t in (out, *states):
        t.retain_grad()
    run.out, run.h_n = out, states[0]
    run.c_n = states[1] if len(states) > 1 else None
    run.loss = compute_loss(
        run.spec, run.head.weight, run.head.bias, run.out, run.h_n, run.c_n, run.lengths
    )
    run.loss.backward()


def reference_loss(run: Run, ref: Unrolled) -> Tensor:
    w = run.head.weight.detach().double()
    b = run.head.bias.detach().double()
    loss = compute_loss(run.spec, w, b, ref.output, ref.h_n, ref.c_n, ref.lengths)
    loss.backward()
    return loss


def build_cell(case: CellCase) -> Run:
    torch.manual_seed(_seed(case))
    gen = torch.Generator().manual_seed(_seed(case))
    I, H = case.I, case.H
    cell = {
        "rnncell_tanh": lambda: nn.RNNCell(I, H),
        "rnncell_relu": lambda: nn.RNNCell(I, H, nonlinearity="relu"),
        "grucell": lambda: nn.GRUCell(I, H),
        "lstmcell": lambda: nn.LSTMCell(I, H),
        "custom_tanh": lambda: TanhCell(I, H),
        "custom_tuple": lambda: TupleCell(I, H),
    }[case.kind]().to(case.dtype)
    head = nn.Linear(H, C).to(case.dtype)
    model = cell if case.attach == "self" else CellLoop(cell, head)
    x = torch.randn(case.T, case.B, I, generator=gen, dtype=F64).to(case.dtype).requires_grad_()
    hx = None
    if case.init or case.kind.startswith("custom"):
        scale = 0.5 if case.init else 0.0
        parts = [
            (scale * torch.randn(case.B, H, generator=gen, dtype=F64))
            .to(case.dtype)
            .requires_grad_(case.init)
            for _ in range(case.n_states)
        ]
        hx = tuple(parts) if len(parts) == 2 else parts[0]
    spec = make_loss_spec(case.loss, case.T, case.B, 1, H, gen)
    name = "" if case.attach == "self" else "cell"
    return Run(model, cell, name, head, x, x, hx, [case.T] * case.B, spec)


def forward_cells(run: Run) -> None:
    if run.model is run.module:
        out, state = drive(run.module, run.x, run.hx)
    else:
        out, state = run.model(run.x, run.hx)
    states = state if isinstance(state, tuple) else (state,)
    _finish(run, out, tuple(s.unsqueeze(0) for s in states))


def attach_kwargs(case: CellCase, run: Run) -> dict:
    if case.attach == "object":
        return {"modules": [run.module]}
    if case.attach == "name":
        return {"modules": ["cell"]}
    return {}


# --------------------------------------------------------------------------- comparisons


def _valid(lengths: list[int], T: int) -> Tensor:
    return torch.arange(T).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)


def assert_series(
    got: Tensor,
    want: Tensor,
    valid: Tensor,
    rtol: float,
    what: str,
    fallback: Tensor | None = None,
) -> None:
    """got (probe, model dtype) vs want (float64), both [T, B, H]: the per-sample error norm at
    each t must be <= rtol * (largest reference norm over the batch at t); past each sample's
    length got must be exactly 0.

    ``fallback`` ([T, B, H], the reference total gradient) gives the scale at steps where
    ``want`` is exactly zero for the whole batch: an immediate gradient obtained by subtracting
    the recurrent part from the total carries rounding of the total's size there."""
    assert tuple(got.shape) == tuple(want.shape), (
        f"{what}: shape {tuple(got.shape)}, want {tuple(want.shape)}"
    )
    got64 = got.detach().double()
    assert torch.isfinite(got64).all(), f"{what}: non-finite values"
    pad = got64[~valid]
    assert (pad == 0).all(), f"{what}: non-zero past sample length (max |.| {pad.abs().max():.3g})"
    err = (got64 - want).norm(dim=-1)  # [T, B]
    norms = want.norm(dim=-1)
    scale = norms.amax(dim=1, keepdim=True)
    if fallback is not None:
        scale = torch.where(scale > 0, scale, fallback.norm(dim=-1).amax(dim=1, keepdim=True))
    scale = scale.clamp(min=1e-12 * float(norms.max()) + 1e-300)
    rel = err / scale
    if rel.max() > rtol:
        t, b = divmod(int(rel.argmax()), rel.shape[1])
        pytest.fail(
            f"{what}: relative error {float(rel.max()):.3g} > {rtol:g} at t={t}, b={b}: "
            f"|got|={float(got64[t, b].norm()):.6g}, |want|={float(norms[t, b]):.6g}, "
            f"|got-want|={float(err[t, b]):.3g}; per-t max rel err: "
            f"{[f'{v:.1e}' for v in rel.amax(1).tolist()]}"
        )


def assert_log_norms(got: Tensor, want: Tensor, valid: Tensor, rtol: float, what: str) -> None:
    """got: probe log10 norms [T, B] float64; want: reference vectors [T, B, H]. -inf exactly
    where the reference is exactly zero (always past a sample's length), otherwise within
    rtol decades of log10 of the reference norm."""
    assert got.dtype == torch.float64, f"{what}: dtype {got.dtype}, want float64"
    assert tuple(got.shape) == tuple(want.shape[:2]), f"{what}: shape {tuple(got.shape)}"
    norms = want.norm(dim=-1)
    zero = norms == 0
    assert (zero | valid).all()
    assert torch.isneginf(got[~valid]).all(), f"{what}: past sample length must be -inf"
    assert torch.isneginf(got[zero]).all(), f"{what}: exactly zero reference must give -inf"
    ok = ~zero
    diff = (got[ok] - norms[ok].log10()).abs()
    if not torch.isfinite(got[ok]).all() or diff.max() > rtol:
        pytest.fail(
            f"{what}: max |log10 error| {float(diff.nan_to_num(math.inf).max()):.3g} decades "
            f"> {rtol:g}; got {got.tolist()}, want {norms.log10().tolist()}"
        )


def real_top_immediate(run: Run, D: int, H: int, direction: int) -> Tensor:
    """Top-layer immediate gradient from the real module alone: d loss / d output[t] (this
    direction's half), plus d loss / d h_n at each sample's last processed step (t = len-1
    forward, t = 0 reverse). Zero past each sample's length."""
    T, B = run.out.shape[:2]
    g_out = run.out.grad
    g = torch.zeros(T, B, H, dtype=F64)
    if g_out is not None:
        g += g_out[..., direction * H : (direction + 1) * H].detach().double()
    if run.h_n.grad is not None:
        top = run.h_n.shape[0] - D + direction
        for b, n in enumerate(run.lengths):
            g[0 if direction else n - 1, b] += run.h_n.grad[top, b].detach().double()
    return g * _valid(run.lengths, T).unsqueeze(-1)


def check_probe(probe, run: Run, ref: Unrolled, states, D: int, H: int, module_arg) -> None:
    """Every probe quantity vs the reference (and the top layer's vs the real module)."""
    dtype = run.out.dtype
    rtol = RTOL[dtype]
    T = run.out.shape[0]
    valid = _valid(run.lengths, T)
    L = max(layer for layer, _ in ref.traces) + 1
    for (layer, d), trace in ref.traces.items():
        for state in states:
            where = f"layer={layer} direction={d} state={state!r}"
            kw = dict(layer=layer, direction=d, state=state)
            got = probe.hidden_grads(module_arg, **kw)
            assert got.dtype == dtype, f"hidden_grads {where}: dtype {got.dtype}, want {dtype}"
            want = trace.hidden_grads(state)
            assert_series(got, want, valid, rtol, f"hidden_grads {where}")
            got_log = probe.hidden_grad_log10_norms(module_arg, **kw)
            assert_log_norms(got_log, want, valid, rtol, f"hidden_grad_log10_norms {where}")
            got_imm = probe.immediate_grads(module_arg, **kw)
            assert got_imm.dtype == dtype, f"immediate_grads {where}: dtype {got_imm.dtype}"
            imm_want = trace.immediate_grads(state)
            assert_series(got_imm, imm_want, valid, rtol, f"immediate_grads {where}", want)
            if layer == L - 1 and state == "h":
                real = real_top_immediate(run, D, H, d)
                assert_series(got_imm, real, valid, rtol, f"immediate_grads vs real {where}", want)


# --------------------------------------------------------------------------- reference checks


def _tm_grad(run: Run, unbatched: bool, batch_first: bool) -> Tensor:
    g = run.x.grad.detach()
    if unbatched:
        return g.unsqueeze(1)
    return g.transpose(0, 1) if batch_first else g


@pytest.mark.parametrize("case", [replace(c, dtype=F64) for c in FUSED_CASES], ids=str)
def test_reference_matches_fused_module(case: FusedCase):
    """The reference, run on the module's own float64 weights, reproduces the module's forward
    (output, h_n, c_n) and its backward (dL/dx, dL/dh0, and dL/doutput as the top layer's
    immediate gradient). No rnn_diag involved."""
    run = build_fused(case)
    forward_fused(run, case.unbatched)
    ref = unroll_fused(run.module, run.x_in, run.hx)
    ref_loss = reference_loss(run, ref)

    valid = _valid(run.lengths, case.T).unsqueeze(-1)
    torch.testing.assert_close(ref.output, (run.out * valid).detach(), **REF_TOL)
    torch.testing.assert_close(ref.h_n, run.h_n.detach(), **REF_TOL)
    if case.kind == "lstm":
        torch.testing.assert_close(ref.c_n, run.c_n.detach(), **REF_TOL)
    torch.testing.assert_close(ref_loss, run.loss.detach(), **REF_TOL)
    # backward: dL/dx and dL/dh0 of the real module vs the reference's leaves
    torch.testing.assert_close(
        ref.x.grad * valid, _tm_grad(run, case.unbatched, case.batch_first) * valid, **REF_TOL
    )
    if case.h0:
        parts = run.hx if isinstance(run.hx, tuple) else (run.hx,)
        for got, leaf in zip(parts, ref.initial):
            want = leaf.grad.squeeze(1) if case.unbatched else leaf.grad
            torch.testing.assert_close(want, got.grad, **REF_TOL)
    for d in range(case.D):
        torch.testing.assert_close(
            ref.traces[(case.layers - 1, d)].immediate_grads("h"),
            real_top_immediate(run, case.D, case.H, d),
            **REF_TOL,
        )


@pytest.mark.parametrize("case", [replace(c, dtype=F64) for c in CELL_CASES], ids=str)
def test_reference_matches_cell_loop(case: CellCase):
    """Same for a cell driven in a loop: outputs, final state, loss, dL/dx and the immediate
    gradients (the real stacked outputs' grads plus the final state's grad at the last step)."""
    run = build_cell(case)
    forward_cells(run)
    ref = unroll_cell_loop(run.module, run.x, run.hx)
    ref_loss = reference_loss(run, ref)
    torch.testing.assert_close(ref.output, run.out.detach(), **REF_TOL)
    torch.testing.assert_close(ref.h_n, run.h_n.detach(), **REF_TOL)
    if case.n_states == 2:
        torch.testing.assert_close(ref.c_n, run.c_n.detach(), **REF_TOL)
    torch.testing.assert_close(ref_loss, run.loss.detach(), **REF_TOL)
    torch.testing.assert_close(ref.x.grad, run.x.grad, **REF_TOL)
    if case.init:
        parts = run.hx if isinstance(run.hx, tuple) else (run.hx,)
        for got, leaf in zip(parts, ref.initial):
            torch.testing.assert_close(leaf.grad, got.grad, **REF_TOL)
    torch.testing.assert_close(
        ref.traces[(0, 0)].immediate_grads("h"), real_top_immediate(run, 1, case.H, 0), **REF_TOL
    )


# --------------------------------------------------------------------------- probe exactness


def _import_rd():
    import rnn_diag as rd  # imported here so the reference checks run without the package

    return rd


@pytest.mark.parametrize("case", FUSED_CASES, ids=str)
def test_fused_probe_is_exact(case: FusedCase):
    rd = _import_rd()
    run = build_fused(case)
    with rd.attach(run.model) as probe:
        forward_fused(run, case.unbatched)
    assert probe.modules == [run.name]
    ref = unroll_fused(run.module, run.x_in, run.hx)
    ref_loss = reference_loss(run, ref)
    torch.testing.assert_close(ref_loss, run.loss.detach().double(), rtol=RTOL[case.dtype], atol=0)
    module_arg = run.name if case.wrapped else None
    check_probe(probe, run, ref, case.states, case.D, case.H, module_arg)


@pytest.mark.parametrize("case", CELL_CASES, ids=str)
def test_cell_loop_probe_is_exact(case: CellCase):
    rd = _import_rd()
    run = build_cell(case)
    with rd.attach(run.model, **attach_kwargs(case, run)) as probe:
        forward_cells(run)
    assert probe.modules == [run.name]
    ref = unroll_cell_loop(run.module, run.x, run.hx)
    ref_loss = reference_loss(run, ref)
    torch.testing.assert_close(ref_loss, run.loss.detach().double(), rtol=RTOL[case.dtype], atol=0)
    check_probe(probe, run, ref, case.states, 1, case.H, run.name)


def test_case_lists_cover_the_brief():
    """Every configuration axis appears, and every cell type is crossed with multi-layer,
    bidirectional and packed inputs."""
    fc = FUSED_CASES
    for kind in ("rnn_tanh", "rnn_relu", "gru", "lstm"):
        mine = [c for c in fc if c.kind == kind]
        assert any(c.layers > 1 and c.bi and c.packed for c in mine), kind
    checks: dict[str, Callable[[FusedCase], bool]] = {
        "layers3": lambda c: c.layers == 3,
        "batch_first": lambda c: c.batch_first,
        "h0": lambda c: c.h0 and c.kind != "lstm",
        "h0c0": lambda c: c.h0 and c.kind == "lstm",
        "no_h0": lambda c: not c.h0,
        "sorted": lambda c: c.packed == "sorted",
        "unsorted": lambda c: c.packed == "unsorted",
        "f32": lambda c: c.dtype == F32,
        "f64": lambda c: c.dtype == F64,
        "train": lambda c: c.train,
        "eval": lambda c: not c.train,
        "wrapped": lambda c: c.wrapped,
        "bare": lambda c: not c.wrapped,
        "nobias": lambda c: not c.bias,
        "unbatched": lambda c: c.unbatched,
        **{f"loss_{k}": (lambda c, k=k: c.loss == k) for k in ("last", "every", "h_n", "c_n")},
    }
    missing = [name for name, ok in checks.items() if not any(ok(c) for c in fc)]
    assert not missing, missing
    cells = {c.kind for c in CELL_CASES}
    assert cells == {
        "rnncell_tanh",
        "rnncell_relu",
        "grucell",
        "lstmcell",
        "custom_tanh",
        "custom_tuple",
    }
    assert {c.attach for c in CELL_CASES} == {"auto", "self", "object", "name"}
    assert {c.loss for c in CELL_CASES} >= {"last", "every"}
    assert {c.init for c in CELL_CASES} == {True, False}


@pytest.mark.parametrize("loss", ["every", "mixed"])
def test_custom_tuple_cell_c_state(loss: str):
    """For a custom cell returning (h, c), rnn_diag cannot see inside the step, so state="c" is
    the gradient w.r.t. the returned c *holding the returned h fixed*: what reaches c_t from the
    next step and from the user's direct uses, not the path through h_t = tanh(c_t) inside
    TupleCell's step. Plain autograd gives exactly that on an alias of each returned c that
    stands for it everywhere outside the step. The reference (whose ``c.grad`` includes the h
    path, like LSTM's) is checked against plain autograd first."""
    rd = _import_rd()
    case = CellCase("custom_tuple", init=True, loss=loss, attach="object")

    plain_run = build_cell(case)  # plain autograd, no probe
    state, hs, raw_cs, cs = plain_run.hx, [], [], []
    for t in range(case.T):
        h, raw_c = plain_run.module(plain_run.x[t], state)
        raw_c.retain_grad()
        c = raw_c.view_as(raw_c)  # every use outside the step goes through this alias
        c.retain_grad()
        state = (h, c)
        hs.append(h)
        raw_cs.append(raw_c)
        cs.append(c)
    w, b = plain_run.head.weight, plain_run.head.bias
    h_n, c_n = state[0].unsqueeze(0), state[1].unsqueeze(0)
    compute_loss(plain_run.spec, w, b, torch.stack(hs), h_n, c_n, plain_run.lengths).backward()

    def grads(tensors):
        return torch.stack([torch.zeros_like(v) if v.grad is None else v.grad for v in tensors])

    with_h_path, plain = grads(raw_cs).detach(), grads(cs).detach()

    ref = unroll_cell_loop(plain_run.module, plain_run.x, plain_run.hx)
    reference_loss(plain_run, ref)
    trace = ref.traces[(0, 0)]
    torch.testing.assert_close(trace.hidden_grads("c"), with_h_path, **REF_TOL)

    run = build_cell(case)  # same seed: same weights and data
    with rd.attach(run.model, modules=[run.module]) as probe:
        forward_cells(run)
    valid = _valid(run.lengths, case.T)
    got = probe.hidden_grads("cell", state="c")
    assert_series(got, plain, valid, RTOL[case.dtype], "hidden_grads state='c' vs c.grad")
    got_log = probe.hidden_grad_log10_norms("cell", state="c")
    assert_log_norms(got_log, plain, valid, RTOL[case.dtype], "hidden_grad_log10_norms 'c'")
    got_imm = probe.immediate_grads("cell", state="c")
    assert_series(
        got_imm, trace.immediate_grads("c"), valid, RTOL[case.dtype], "immediate 'c'", plain
    )
