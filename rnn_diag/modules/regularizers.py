"""Differentiable regularisers of a recurrent module's dynamics, for use as loss terms:

* :func:`lyapunov_exponents_differentiable` and :func:`flossing_loss` — gradient flossing
  (Engelken, NeurIPS 2023): the k leading finite-time Lyapunov exponents of a layer along the
  trajectory driven by the training inputs, differentiable w.r.t. the module's parameters, and
  the mean squared distance of those exponents from a target (0: neither vanishing nor
  exploding).
* :func:`spectral_norm_penalty` — Σ (σ_max(W_hh block) − target)² over every layer and gate.
* :func:`orthogonality_penalty` — Σ ‖W Wᵀ − I‖_F² over every layer and gate block.

Modules: ``nn.RNN`` (tanh, relu), ``nn.GRU``, ``nn.LSTM`` (``proj_size`` allowed), any number
of layers, forward direction only (bidirectional modules are refused). LSTM states are the joint
``[h | c]`` (S = 2H; P + H with ``proj_size = P``). The step equations are PyTorch's (gate
orders r, z, n and i, f, g, o); see docs/design.md §8 for the exponents' definition.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..dynamics.cell_step import cell_step, input_preactivations, state_sizes
from ..dynamics.cells import CellWeights
from .dynamics import GATES
from .layers import FUSED_TYPES, layer_weights

__all__ = [
    "flossing_loss",
    "lyapunov_exponents_differentiable",
    "orthogonality_penalty",
    "spectral_norm_penalty",
]

def _check_module(module: nn.Module, name: str) -> None:
    if not isinstance(module, FUSED_TYPES):
        raise TypeError(f"{name} needs an nn.RNN, nn.GRU or nn.LSTM, got {type(module).__name__}")
    if module.bidirectional:
        raise ValueError(f"{name}: bidirectional modules are not supported (the reverse "
                         "direction runs against time)")


def _layer_index(module: nn.RNNBase, layer: int | None) -> int:
    L = module.num_layers
    if layer is None:
        if L > 1:
            raise ValueError(f"{type(module).__name__} has {L} layers: pass layer= (0..{L - 1})")
        return 0
    if not 0 <= layer < L:
        raise ValueError(f"layer={layer} is out of range for {type(module).__name__} with "
                         f"{L} layers")
    return layer


def _run_layer(w: CellWeights, x: Tensor) -> Tensor:
    """The h outputs ``[T, B, P]`` of one layer from a zero state (with grad)."""
    P, C = state_sizes(w)
    px = input_preactivations(w, x)
    s = x.new_zeros(x.shape[1], P + C)
    out = []
    for t in range(x.shape[0]):
        s, _ = cell_step(w, s, px[t], None)
        out.append(s[:, :P])
    return torch.stack(out)


def _initial_state(h0, B: int, P: int, C: int, dtype, device) -> Tensor:
    S = P + C
    if h0 is None:
        return torch.zeros(B, S, dtype=dtype, device=device)
    if isinstance(h0, (tuple, list)):
        if C == 0 or len(h0) != 2:
            raise ValueError("h0 as a pair is for an LSTM: (h [P] or [B, P], c [C] or [B, C])")
        h0 = torch.cat([torch.as_tensor(h0[0]), torch.as_tensor(h0[1])], -1)
    s = torch.as_tensor(h0).to(dtype=dtype, device=device)
    if s.shape == (S,):
        s = s.expand(B, S)
    if tuple(s.shape) != (B, S):
        raise ValueError(f"h0 must be the analysed layer's state [{S}] or [{B}, {S}] (LSTM: "
                         f"[h | c] or a (h, c) pair), got shape {tuple(s.shape)}")
    return s


def lyapunov_exponents_differentiable(
    module: nn.Module,
    inputs: Tensor,
    h0=None,
    *,
    k: int,
    window: int,
    layer: int | None = None,
    warmup: int = 0,
    detach_trajectory: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The k leading finite-time Lyapunov exponents of one layer along the trajectory driven by
    ``inputs``, differentiable w.r.t. the module's parameters (gradient flossing, Engelken 2023).

    The layer runs from ``h0`` on ``inputs`` with its own equations (lower layers from a zero
    state); an orthonormal block Q ``[S, k]`` (the same random start as
    :func:`rnn_diag.lyapunov_spectrum`: ``randn`` from seed 0, so the two agree on one
    sequence) is pushed through the step Jacobians J_t — directional derivatives written from
    the cell equations — and re-orthonormalised by ``torch.linalg.qr`` every step. The first
    ``warmup`` steps only align Q; ``log |R_ii|`` is summed over the next ``window`` steps and
    divided by ``window``. Everything stays in the autograd graph, including the trajectory (as
    in Engelken's implementation), so the gradient is that of this finite-time estimate:
    through the weights in J_t, the states J_t is evaluated at, and the QR factorisations.
    ``detach_trajectory=True`` cuts the states out of the graph (the gradient then flows only
    through the weights inside J_t and the QRs).

    Args:
        module: ``nn.RNN`` (tanh/relu), ``nn.GRU`` or ``nn.LSTM`` (``proj_size`` allowed), not
            bidirectional.
        inputs: ``[T, B, I]`` or ``[T, I]``, time-major whatever ``batch_first`` says, with
            T ≥ warmup + window (later steps are ignored).
        h0: initial state of the analysed layer: None (zeros), ``[S]`` or ``[B, S]`` (LSTM:
            joint ``[h | c]``, or a pair ``(h, c)``). Other layers start at zero.
        k: number of exponents, 1 ≤ k ≤ S (S = H; 2H for an LSTM; P + H with a projection).
        window: number of counted steps.
        layer: which layer (default 0; required for multi-layer modules).
        warmup: uncounted initial steps (alignment of Q).
        detach_trajectory: see above.
        generator: random source of the initial block (default: seed 0).

    Returns:
        ``[k]`` in the parameters' dtype, nats per step, descending: each sequence's exponents
        sorted, then averaged over the B sequences. Cost: window + warmup steps of O(B·S²·k)
        plus a QR of ``[S, k]`` per step; the graph holds O(T·B·S·k) numbers. A direction
        annihilated exactly (dead relu units) gives −inf and a non-finite gradient; an
        exploding trajectory gives NaN — check ``isfinite`` before stepping an optimiser.

    Example:
        >>> torch.manual_seed(0) and None
        >>> rnn = nn.RNN(2, 8)
        >>> lam = lyapunov_exponents_differentiable(rnn, torch.randn(60, 2), k=2, window=50,
        ...                                         warmup=10)
        >>> lam.shape, lam.requires_grad
        (torch.Size([2]), True)
    """
    _check_module(module, "lyapunov_exponents_differentiable")
    layer = _layer_index(module, layer)
    x = torch.as_tensor(inputs)
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3 or x.shape[-1] != module.input_size:
        raise ValueError(f"inputs must be [T, B, {module.input_size}] or [T, "
                         f"{module.input_size}], got shape {tuple(torch.as_tensor(inputs).shape)}")
    window, warmup = int(window), int(warmup)
    if window < 1 or warmup < 0:
        raise ValueError(f"need window >= 1 and warmup >= 0, got {window}, {warmup}")
    T = warmup + window
    if x.shape[0] < T:
        raise ValueError(f"inputs hold {x.shape[0]} steps, fewer than warmup + window = {T}")
    p = next(module.parameters())
    x = x[:T].to(dtype=p.dtype, device=p.device)
    for l in range(layer):
        x = _run_layer(layer_weights(module, l, 0), x)
    w = layer_weights(module, layer, 0)
    P, C = state_sizes(w)
    S, B = P + C, x.shape[1]
    if not 1 <= int(k) <= S:
        raise ValueError(f"k must be between 1 and the state size {S}, got {k}")
    k = int(k)
    s = _initial_state(h0, B, P, C, p.dtype, p.device)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    start = torch.randn(B, S, k, generator=generator, dtype=torch.float64)
    Q = torch.linalg.qr(start.to(dtype=p.dtype, device=p.device)).Q
    px = input_preactivations(w, x)
    sums = x.new_zeros(B, k)
    for t in range(T):
        if detach_trajectory:
            s = s.detach()
        s, M = cell_step(w, s, px[t], Q)
        Q, R = torch.linalg.qr(M)
        if t >= warmup:
            sums = sums + R.diagonal(dim1=-2, dim2=-1).abs().log()
    exponents = torch.sort(sums / window, dim=1, descending=True).values
    return exponents.mean(0)


def flossing_loss(
    module: nn.Module,
    inputs: Tensor,
    *,
    k: int = 1,
    window: int = 100,
    warmup: int = 0,
    target: float = 0.0,
    layer: int | None = None,
    h0=None,
) -> Tensor:
    """Gradient flossing's loss: ``mean_i (λ_i − target)²`` over the k leading exponents of
    :func:`lyapunov_exponents_differentiable` (nats per step).

    ``layer=None`` on a multi-layer module averages the loss over its layers (each analysed
    on its own state, driven by the layer below); an int picks one layer. Cost: that of the
    exponents, per layer.

    Example:
        >>> torch.manual_seed(0) and None
        >>> rnn = nn.GRU(2, 6)
        >>> loss = flossing_loss(rnn, torch.randn(40, 3, 2), k=2, window=30, warmup=10)
        >>> loss.backward()
        >>> rnn.weight_hh_l0.grad.shape
        torch.Size([18, 6])
    """
    _check_module(module, "flossing_loss")
    layers = range(module.num_layers) if layer is None else [_layer_index(module, layer)]
    losses = [
        ((lyapunov_exponents_differentiable(module, inputs, h0 if len(layers) == 1 else None,
                                            k=k, window=window, layer=l, warmup=warmup)
          - target) ** 2).mean()
        for l in layers
    ]
    return torch.stack(losses).mean()


def _square_blocks(module: nn.RNNBase):
    """Every layer's square recurrent gate blocks: ``W_hh[g]`` ``[H, H]``, or with
    ``proj_size = P`` the ``[P, P]`` map ``W_hr @ W_hh[g]`` (as :func:`recurrent_spectra`)."""
    for layer in range(module.num_layers):
        for direction in range(2 if module.bidirectional else 1):
            w = layer_weights(module, layer, direction)
            for block in w.weight_hh.chunk(len(GATES[w.kind]), 0):
                yield block if w.weight_hr is None else w.weight_hr @ block


def spectral_norm_penalty(module: nn.Module, target: float = 1.0) -> Tensor:
    """``Σ (σ_max(B) − target)²`` over the square recurrent gate blocks B of every layer and
    direction (rnn: W_hh; GRU: r, z, n; LSTM: i, f, g, o; with ``proj_size``: W_hr W_hh[g]).

    The two-sided squared deviation (not a hinge) pulls σ_max to ``target`` from above and
    below. σ_max is ``torch.linalg.matrix_norm(ord=2)``, differentiable through the SVD
    (gradient u₁v₁ᵀ; arbitrary within the top singular subspace when σ₁ is repeated). Cost: one
    SVD of an ``[H, H]`` block per gate and layer, O(H³).

    Example:
        >>> rnn = nn.RNN(1, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = rnn.weight_hh_l0.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
        >>> spectral_norm_penalty(rnn, target=1.0).item()
        4.0
    """
    if not isinstance(module, FUSED_TYPES):
        raise TypeError(f"spectral_norm_penalty needs an nn.RNN, nn.GRU or nn.LSTM, got "
                        f"{type(module).__name__}")
    terms = [(torch.linalg.matrix_norm(b, ord=2) - target) ** 2 for b in _square_blocks(module)]
    return torch.stack(terms).sum()


def orthogonality_penalty(module: nn.Module) -> Tensor:
    """``Σ ‖B Bᵀ − I‖_F²`` over the square recurrent gate blocks B of every layer and direction
    (as :func:`spectral_norm_penalty`); zero exactly when every block is orthogonal. Cost: one
    ``[H, H]`` matrix product per block, O(H³), no decomposition.

    Example:
        >>> rnn = nn.RNN(1, 3)
        >>> with torch.no_grad():
        ...     _ = rnn.weight_hh_l0.copy_(torch.eye(3))
        >>> orthogonality_penalty(rnn).item()
        0.0
    """
    if not isinstance(module, FUSED_TYPES):
        raise TypeError(f"orthogonality_penalty needs an nn.RNN, nn.GRU or nn.LSTM, got "
                        f"{type(module).__name__}")
    terms = []
    for b in _square_blocks(module):
        eye = torch.eye(b.shape[0], dtype=b.dtype, device=b.device)
        terms.append(((b @ b.T - eye) ** 2).sum())
    return torch.stack(terms).sum()
