"""An explicitly unrolled float64 reference for recurrent modules, independent of rnn_diag.

Written from the equations in the PyTorch documentation of nn.RNN / nn.GRU / nn.LSTM and their
Cell versions; it never calls a recurrent module's forward. It reads only the module's
parameters (cast to float64) and its configuration (num_layers, bidirectional, batch_first,
nonlinearity, bias).

Every sample is unrolled on its own (1-D tensors, one Python step per timestep), so there is no
padding, masking or batch sorting inside the recurrence: a PackedSequence sample of length n
simply has n steps, and the reverse direction of a sample starts at its own last valid step from
its own initial state. Every hidden state h_t (and c_t for LSTM) is a separate autograd node
with ``retain_grad()``, so after ``loss.backward()`` its ``.grad`` is the plain-autograd total
gradient dL/dh_t. For LSTM, h_t is computed from c_t inside the same step (h_t = o_t tanh c_t),
so c_t.grad includes the path through h_t.

Each state is also used outside the recurrence only through separate copies (``clone()``), also
retained: ``exits[k]`` feeds the layer's output at that step (the module output, or the input of
the layer above), and ``final`` feeds h_n / c_n. Their ``.grad`` is therefore, by construction,
the immediate gradient g_t (what reaches h_t from outside the recurrence), with no arithmetic of
ours involved.

Gate conventions (PyTorch documentation):
  RNN:  h = act(W_ih x + b_ih + W_hh h_prev + b_hh), act = tanh or relu.
  GRU:  rows (r, z, n); r = s(W_ir x + b_ir + W_hr h + b_hr), z likewise,
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h = (1 - z) * n + z * h_prev.
  LSTM: rows (i, f, g, o); i, f, o sigmoid, g tanh; c = f * c_prev + i * g, h = o * tanh(c);
        with proj_size = P > 0, h = W_hr (o * tanh(c)) (W_hr [P, H]), so h has P entries, c H.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

State = tuple[Tensor, ...]  # (h,) or (h, c), float64
Step = Callable[[Tensor, State], State]

# --------------------------------------------------------------------------- cell equations


@dataclass
class CellParams:
    """float64 copies of one cell's weights; missing biases are zeros. w_hr: the LSTM
    projection [P, H], or None."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor
    b_hh: Tensor
    w_hr: Tensor | None = None


def _params(w_ih, w_hh, b_ih, b_hh, w_hr=None) -> CellParams:
    w_ih, w_hh = w_ih.detach().double(), w_hh.detach().double()
    zeros = torch.zeros(w_hh.shape[0], dtype=torch.float64)
    b_ih = zeros if b_ih is None else b_ih.detach().double()
    b_hh = zeros if b_hh is None else b_hh.detach().double()
    w_hr = None if w_hr is None else w_hr.detach().double()
    return CellParams(w_ih, w_hh, b_ih, b_hh, w_hr)


def rnn_step(p: CellParams, nonlinearity: str) -> Step:
    act = torch.tanh if nonlinearity == "tanh" else torch.relu

    def step(x, state):
        (h,) = state
        return (act(x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh),)

    return step


def gru_step(p: CellParams) -> Step:
    def step(x, state):
        (h,) = state
        gi = x @ p.w_ih.T + p.b_ih
        gh = h @ p.w_hh.T + p.b_hh
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return ((1 - z) * n + z * h,)

    return step


def lstm_step(p: CellParams) -> Step:
    def step(x, state):
        h, c = state
        gates = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh
        i, f, g, o = gates.chunk(4, -1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        if p.w_hr is not None:
            h = h @ p.w_hr.T
        return (h, c)

    return step


# --------------------------------------------------------------------------- custom cells
# Two user-style cells (not nn.RNNCellBase). Their float64 equations are written out again below
# so that the reference reads only their Linear layers' weights.


class TanhCell(nn.Module):
    """h = tanh(W x + b + U h) with its own Linear layers; called as ``cell(x_t, h)``."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.W = nn.Linear(input_size, hidden_size)
        self.U = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, h):
        return torch.tanh(self.W(x) + self.U(h))


class TupleCell(nn.Module):
    """A small gated cell with state (h, c), returning a tuple:
    f = sigmoid(F x + G h), c = f * c_prev + tanh(W x + U h), h = tanh(c)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.F = nn.Linear(input_size, hidden_size)
        self.G = nn.Linear(hidden_size, hidden_size, bias=False)
        self.W = nn.Linear(input_size, hidden_size)
        self.U = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, state):
        h, c = state
        f = torch.sigmoid(self.F(x) + self.G(h))
        c = f * c + torch.tanh(self.W(x) + self.U(h))
        return torch.tanh(c), c


def _lin(layer: nn.Linear) -> Callable[[Tensor], Tensor]:
    w = layer.weight.detach().double()
    b = None if layer.bias is None else layer.bias.detach().double()
    return lambda x: x @ w.T if b is None else x @ w.T + b


def cell_step(cell: nn.Module) -> Step:
    """The float64 step function of an nn.*Cell or of one of the custom cells above."""
    if isinstance(cell, nn.RNNCell):
        p = _params(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        return rnn_step(p, cell.nonlinearity)
    if isinstance(cell, nn.GRUCell):
        return gru_step(_params(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    if isinstance(cell, nn.LSTMCell):
        return lstm_step(_params(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    if isinstance(cell, TanhCell):
        W, U = _lin(cell.W), _lin(cell.U)
        return lambda x, s: (torch.tanh(W(x) + U(s[0])),)
    if isinstance(cell, TupleCell):
        F, G, W, U = _lin(cell.F), _lin(cell.G), _lin(cell.W), _lin(cell.U)

        def step(x, s):
            h, c = s
            c = torch.sigmoid(F(x) + G(h)) * c + torch.tanh(W(x) + U(h))
            return (torch.tanh(c), c)

        return step
    raise TypeError(f"no reference equations for {type(cell).__name__}")


def state_count(module: nn.Module) -> int:
    """2 for modules whose state is (h, c), else 1."""
    return 2 if isinstance(module, (nn.LSTM, nn.LSTMCell, TupleCell)) else 1


# --------------------------------------------------------------------------- unrolling


def _retained_clone(x: Tensor) -> Tensor:
    y = x.clone()
    y.retain_grad()
    return y


@dataclass
class Chain:
    """One sample's unrolled steps in processing order.

    states[k]: the state after step k (retained), exits[k]: the copy of h used outside the
    recurrence at step k (retained), final: copies of the last state, used for h_n / c_n.
    """

    states: list[State]
    exits: list[Tensor]
    final: State


def unroll_chain(step: Step, xs: Sequence[Tensor], state0: State) -> Chain:
    state, states, exits = state0, [], []
    for x in xs:
        state = step(x, state)
        for s in state:
            s.retain_grad()
        states.append(state)
        exits.append(_retained_clone(state[0]))
    return Chain(states, exits, tuple(_retained_clone(s) for s in state))


def _zero_grad_if_none(x: Tensor) -> Tensor:
    return torch.zeros_like(x) if x.grad is None else x.grad


@dataclass
class Trace:
    """One layer and direction of an unrolled model: one Chain per sample.

    The tables below are [T, B, H] float64 in input time order, zero past each sample's length
    (H is the size of h; the c tables are [T, B, C], C = H unless the LSTM has a projection).
    """

    chains: list[Chain]
    lengths: list[int]
    reverse: bool
    T: int
    H: int
    C: int | None = None

    def _width(self, i: int) -> int:
        return self.H if i == 0 or self.C is None else self.C

    def _table(self, value: Callable[[Chain, int], Tensor], i: int = 0) -> Tensor:
        out = torch.zeros(self.T, len(self.chains), self._width(i), dtype=torch.float64)
        for b, (chain, n) in enumerate(zip(self.chains, self.lengths)):
            for k in range(n):
                t = n - 1 - k if self.reverse else k
                out[t, b] = value(chain, k).detach()
        return out

    def states(self, state: str = "h") -> Tensor:
        """The forward values h_t (or c_t)."""
        i = "hc".index(state)
        return self._table(lambda ch, k: ch.states[k][i], i)

    def hidden_grads(self, state: str = "h") -> Tensor:
        """Plain-autograd total dL/dh_t (or dL/dc_t): the .grad of each retained state."""
        i = "hc".index(state)
        return self._table(lambda ch, k: _zero_grad_if_none(ch.states[k][i]), i)

    def immediate_grads(self, state: str = "h") -> Tensor:
        """The gradient reaching h_t (c_t) from outside the recurrence: the .grad of its exit
        copy (h only), plus, at the sample's last processed step, the .grad of its final copy."""
        i = "hc".index(state)

        def value(ch: Chain, k: int) -> Tensor:
            g = _zero_grad_if_none(ch.exits[k]) if i == 0 else torch.zeros(self._width(1)).double()
            if k == len(ch.states) - 1:
                g = g + _zero_grad_if_none(ch.final[i])
            return g

        return self._table(value, i)


@dataclass
class Unrolled:
    """Result of a reference run, all float64 and in the user's batch order.

    output: [T, B, D*H] time-major, zero past each sample's length (like pad_packed_sequence).
    h_n, c_n: [L*D, B, H] (c_n is None without a cell state). With an LSTM projection h (so the
        output and h_n) has P = proj_size entries instead of H; c keeps H.
    traces: {(layer, direction): Trace}.
    x: the time-major [T, B, I] input as a leaf, so x.grad is the reference's dL/dx.
    initial: the initial states as leaves ([L*D, B, H] each for fused modules — h [L*D, B, P]
        with a projection — and [B, H] for cell loops; zeros when none was given).
    """

    output: Tensor
    h_n: Tensor
    c_n: Tensor | None
    lengths: list[int]
    traces: dict[tuple[int, int], Trace]
    x: Tensor
    initial: list[Tensor]


def _stack_padded(rows: list[list[Tensor]], T: int, width: int) -> Tensor:
    """rows[b][t] (t < len_b) -> [T, B, width] with zeros past each length, differentiable."""
    zero = torch.zeros(width, dtype=torch.float64)
    return torch.stack(
        [torch.stack([r[t] if t < len(r) else zero for r in rows]) for t in range(T)]
    )


def input_time_major(module: nn.RNNBase, x) -> tuple[Tensor, list[int]]:
    """The module's input as float64 [T, B, I] in the user's batch order, and the lengths."""
    if isinstance(x, PackedSequence):
        padded, lengths = pad_packed_sequence(x)
        return padded.detach().double(), lengths.tolist()
    x = x.detach().double()
    if x.dim() == 2:  # unbatched [T, I]
        x = x.unsqueeze(1)
    elif module.batch_first:
        x = x.transpose(0, 1)
    return x, [x.shape[0]] * x.shape[1]


def _fused_step(module: nn.RNNBase, layer: int, direction: int) -> Step:
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    p = _params(
        getattr(module, "weight_ih" + sfx),
        getattr(module, "weight_hh" + sfx),
        getattr(module, "bias_ih" + sfx) if module.bias else None,
        getattr(module, "bias_hh" + sfx) if module.bias else None,
        getattr(module, "weight_hr" + sfx) if getattr(module, "proj_size", 0) else None,
    )
    if isinstance(module, nn.LSTM):
        return lstm_step(p)
    if isinstance(module, nn.GRU):
        return gru_step(p)
    return rnn_step(p, module.nonlinearity)


def _initial(hx, sizes: Sequence[int], LD: int, B: int) -> list[Tensor]:
    """hx as a list of float64 [L*D, B, sizes[i]] tensors (zeros when None)."""
    if hx is None:
        out = [torch.zeros(LD, B, size, dtype=torch.float64) for size in sizes]
    else:
        hx = hx if isinstance(hx, tuple) else (hx,)
        out = [s.detach().double() for s in hx]
        out = [s.unsqueeze(1) if s.dim() == 2 else s for s in out]
    return [s.clone().requires_grad_() for s in out]


def unroll_fused(module: nn.RNNBase, x, hx=None) -> Unrolled:
    """Unroll an nn.RNN / nn.GRU / nn.LSTM on ``x`` (tensor in the module's layout, unbatched
    2-D, or PackedSequence) from ``hx`` (h0, or (h0, c0), or None for zeros)."""
    L, C = module.num_layers, module.hidden_size
    H = getattr(module, "proj_size", 0) or C  # the size of h
    D = 2 if module.bidirectional else 1
    n_states = state_count(module)
    x_tm, lengths = input_time_major(module, x)
    x_tm = x_tm.clone().requires_grad_()
    T, B = x_tm.shape[:2]
    init = _initial(hx, (H, C)[:n_states], L * D, B)

    layer_in = [[x_tm[t, b] for t in range(n)] for b, n in enumerate(lengths)]
    traces: dict[tuple[int, int], Trace] = {}
    finals: list[list[State]] = []  # [l*D + d][b]
    for layer in range(L):
        per_dir_exits = []
        for d in range(D):
            step = _fused_step(module, layer, d)
            chains = []
            for b in range(B):
                xs = layer_in[b] if d == 0 else layer_in[b][::-1]
                state0 = tuple(s[layer * D + d, b] for s in init)
                chains.append(unroll_chain(step, xs, state0))
            traces[(layer, d)] = Trace(chains, lengths, bool(d), T, H, C)
            finals.append([ch.final for ch in chains])
            # exits in input time order, per sample
            per_dir_exits.append([ch.exits if d == 0 else ch.exits[::-1] for ch in chains])
        layer_in = [
            [torch.cat([per_dir_exits[d][b][t] for d in range(D)]) for t in range(n)]
            for b, n in enumerate(lengths)
        ]
    output = _stack_padded(layer_in, T, D * H)
    h_n = torch.stack([torch.stack([f[0] for f in fs]) for fs in finals])
    c_n = None
    if n_states == 2:
        c_n = torch.stack([torch.stack([f[1] for f in fs]) for fs in finals])
    return Unrolled(output, h_n, c_n, lengths, traces, x_tm, init)


def unroll_cell_loop(cell: nn.Module, x: Tensor, state=None) -> Unrolled:
    """Unroll ``state = cell(x[t], state)`` for t in range(T), x time-major [T, B, I].

    ``state`` is None (zeros), a tensor h0 [B, H], or a tuple (h0, c0). Returns an Unrolled
    with one layer/direction; output[t] is h_t and h_n / c_n have a leading dimension of 1.
    """
    step = cell_step(cell)
    x = x.detach().double().clone().requires_grad_()
    T, B = x.shape[:2]
    n_states = state_count(cell)
    if state is None:
        H = cell.hidden_size
        state = tuple(torch.zeros(B, H, dtype=torch.float64) for _ in range(n_states))
    else:
        state = tuple(
            s.detach().double() for s in (state if isinstance(state, tuple) else (state,))
        )
    state = tuple(s.clone().requires_grad_() for s in state)
    H = state[0].shape[-1]
    chains = [
        unroll_chain(step, [x[t, b] for t in range(T)], tuple(s[b] for s in state))
        for b in range(B)
    ]
    lengths = [T] * B
    output = _stack_padded([ch.exits for ch in chains], T, H)
    finals = [torch.stack([ch.final[i] for ch in chains]).unsqueeze(0) for i in range(n_states)]
    return Unrolled(
        output,
        finals[0],
        finals[1] if n_states == 2 else None,
        lengths,
        {(0, 0): Trace(chains, lengths, False, T, H)},
        x,
        list(state),
    )


def unrolled_rnn_cell_grads(rnn: nn.RNN, x: Tensor, loss_of_states) -> Tensor:
    """Plain autograd ``dL/dh_t`` on an nn.RNNCell loop with a single-layer ``rnn``'s weights,
    in ``x``'s dtype: ``[T, B, H]``. ``loss_of_states`` maps the list of h_t to the loss."""
    cell = nn.RNNCell(rnn.input_size, rnn.hidden_size, nonlinearity=rnn.nonlinearity)
    cell = cell.to(x.dtype)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(rnn, n + "_l0"))
    h = torch.zeros(x.shape[1], rnn.hidden_size, dtype=x.dtype)
    hs = []
    for t in range(x.shape[0]):
        h = cell(x[t], h)
        h.retain_grad()
        hs.append(h)
    loss_of_states(hs).backward()
    return torch.stack([q.grad for q in hs])
