"""Module-facing wrappers of the dynamics maths: spectra of a model's recurrent weights and
Lyapunov exponents of a recurrent module along a trajectory.

* :func:`recurrent_spectra` — one row per eigenvalue of every recurrent weight block.
* :func:`lyapunov_spectrum` — dispatches on what it is given: a PyTorch recurrent module
  (``nn.RNN``/``nn.GRU``/``nn.LSTM``, or ``nn.RNNCell``/``nn.GRUCell``/``nn.LSTMCell``) is run
  without grad and linearised from the cell equations (:func:`rnn_diag.dynamics.cells.linearise`);
  any other callable — including a custom ``nn.Module`` — is treated as ``step(h, x) -> h_next``
  on one state vector and differentiated with ``torch.func``.
* :func:`module_linearisation` — the per-step Jacobians of one layer/direction of a module along
  the trajectory it computes from given inputs (what :func:`lyapunov_spectrum` uses).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..dynamics.cells import CellWeights, linearise
from ..dynamics.lyapunov import lyapunov_exponents, lyapunov_spectrum_callable
from ..dynamics.spectrum import spectrum
from .layers import (
    CELL_TYPES,
    FUSED_TYPES,
    RECURRENT_TYPES,
    cell_kind,
    layer_weights,
    module_kind,
    run_layer,
    single_layer_shadow,
)
from .scans import (
    capture_decays,
    is_scan_layer,
    is_scan_stack,
    registered_eigenvalues,
    scan_layers,
)

__all__ = ["lyapunov_spectrum", "module_linearisation", "recurrent_spectra"]

#: Gate names of the row blocks of ``weight_hh``, in PyTorch's order.
GATES = {
    "rnn_tanh": ("hh",),
    "rnn_relu": ("hh",),
    "gru": ("r", "z", "n"),
    "lstm": ("i", "f", "g", "o"),
}

SPECTRA_COLUMNS = [
    "module", "layer", "direction", "gate", "index", "real", "imag", "modulus", "singular_value",
]



def _gate_blocks(w: CellWeights) -> list[Tensor]:
    """The square recurrent matrix of each gate: the row blocks ``W_hh[g]`` ``[H, H]``, or
    ``W_hr @ W_hh[g]`` ``[P, P]`` with a projection."""
    G = len(GATES[w.kind])
    blocks = list(w.weight_hh.detach().chunk(G, 0))
    if w.weight_hr is not None:  # the product in float64, as spectrum() takes it
        w_hr = w.weight_hr.detach().cpu().double()
        blocks = [w_hr @ b.cpu().double() for b in blocks]
    return blocks


def _recurrent_matrices(module: nn.Module):
    """``(layer, direction, kind, gate blocks)`` of every layer and direction of a module."""
    if isinstance(module, FUSED_TYPES):
        kind = module_kind(module)
        for layer in range(module.num_layers):
            for direction in range(2 if module.bidirectional else 1):
                yield layer, direction, kind, _gate_blocks(layer_weights(module, layer, direction))
    else:
        kind = cell_kind(module)
        yield 0, 0, kind, _gate_blocks(CellWeights(kind, module.weight_ih, module.weight_hh, None,
                                                   None))


def recurrent_spectra(model: nn.Module) -> pd.DataFrame:
    """Eigenvalues and singular values of every recurrent weight block in a model.

    Finds every ``nn.RNN``/``nn.GRU``/``nn.LSTM``/``nn.RNNCell``/``nn.GRUCell``/``nn.LSTMCell``
    in ``model`` (``named_modules`` order). Each layer and direction of ``weight_hh`` is split
    into its gate blocks ``[H, H]`` (rnn: "hh"; gru: "r", "z", "n"; lstm: "i", "f", "g", "o")
    and each block's :func:`rnn_diag.dynamics.spectrum.spectrum` is taken (float64). Cells count
    as layer 0, direction 0.

    ``nn.LSTM`` with ``proj_size = P > 0`` (h_t = W_hr (o_t ⊙ tanh c_t), ``weight_hh`` ``[4H, P]``,
    ``weight_hr`` ``[P, H]``): gate g's block is the ``[P, P]`` map ``W_hr @ W_hh[g]`` from h_{t-1}
    through the gate pre-activation and back to h-space, so P rows per gate. Its eigenvalues are
    the non-zero eigenvalues of the ``[H, H]`` map ``W_hh[g] @ W_hr`` (m_{t-1} = o ⊙ tanh c to
    the pre-activation), whose other H − P eigenvalues are zero; its singular values are those
    of the ``[P, P]`` matrix.

    Args:
        model: any ``nn.Module`` (may itself be the recurrent module; its name is then "").

    Returns:
        A tidy DataFrame, one row per eigenvalue (H rows per gate block, P for a projected
        LSTM), columns ``module`` (qualified name), ``layer``, ``direction``, ``gate``,
        ``index`` (rank, 0 = largest), ``real``, ``imag``, ``modulus`` (eigenvalues sorted by
        modulus, descending) and ``singular_value`` (the index-th largest singular value of the
        same block, so the block's spectral radius is the modulus at index 0 and its spectral
        norm the singular_value at index 0).

    Raises:
        ValueError: the model has no recurrent module.

    Example:
        >>> torch.manual_seed(0) and None
        >>> df = recurrent_spectra(nn.GRU(3, 4))
        >>> df.groupby("gate").size().to_dict()
        {'n': 4, 'r': 4, 'z': 4}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"recurrent_spectra needs an nn.Module, got {type(model).__name__}")
    found = []
    for n, m in model.named_modules():
        if any(n.startswith(f"{outer}.") or outer == "" for outer, o in found
               if scan_layers(o) is not None):
            continue  # inside a scan stack or layer already found
        if isinstance(m, RECURRENT_TYPES) or is_scan_stack(m) or is_scan_layer(m):
            found.append((n, m))
    if not found:
        raise ValueError(
            f"no recurrent module found in {type(model).__name__}: recurrent_spectra looks for "
            "nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell and scan layers"
        )
    frames = []
    for name, module in found:
        if scan_layers(module) is not None:
            frames.extend(_scan_spectra(name, module))
            continue
        for layer, direction, kind, blocks in _recurrent_matrices(module):
            for gate, block in zip(GATES[kind], blocks, strict=True):
                H = block.shape[0]
                s = spectrum(block)
                ev = s.eigenvalues.numpy()
                frames.append(
                    pd.DataFrame(
                        {
                            "module": name,
                            "layer": layer,
                            "direction": direction,
                            "gate": gate,
                            "index": np.arange(H),
                            "real": ev.real,
                            "imag": ev.imag,
                            "modulus": np.abs(ev),
                            "singular_value": s.singular_values.numpy(),
                        }
                    )
                )
    if not frames:
        return pd.DataFrame(columns=SPECTRA_COLUMNS)
    return pd.concat(frames, ignore_index=True)[SPECTRA_COLUMNS]


def _scan_spectra(name: str, module: nn.Module) -> list[pd.DataFrame]:
    """Rows of every scan layer of ``module``: its diagonal, sorted by modulus. A diagonal
    matrix's singular values are its moduli, so ``singular_value`` repeats ``modulus``."""
    frames = []
    for layer, scan in enumerate(scan_layers(module)):
        registered = registered_eigenvalues(scan)
        if registered is not None:
            ev, gate = registered(scan), "a(x=0)"
        elif hasattr(scan, "eigenvalues"):
            ev = scan.eigenvalues()
            gate = "a(x=0)" if getattr(scan, "input_dependent", True) else "lambda"
        else:
            warnings.warn(
                f"recurrent_spectra: layer {layer} of {name or '<root>'!r} "
                f"({type(scan).__name__}) is a registered scan without eigenvalues=: its decays "
                "depend on inputs the function does not have, so it has no rows; pass "
                "register_scan(..., eigenvalues=fn) for its decays at zero input",
                RuntimeWarning, stacklevel=3)
            continue
        ev = torch.as_tensor(ev).detach().reshape(-1).cpu().to(torch.complex128).numpy()
        ev = ev[np.argsort(-np.abs(ev), kind="stable")]
        frames.append(pd.DataFrame({
            "module": name, "layer": layer, "direction": 0, "gate": gate,
            "index": np.arange(ev.size), "real": ev.real, "imag": ev.imag,
            "modulus": np.abs(ev), "singular_value": np.abs(ev),
        }))
    return frames


def _scan_exponents(module: nn.Module, inputs, steps, k, warmup, layer) -> Tensor:
    """Per-channel exponents of one scan layer: the mean of ln|a_t,i| over the steps after
    ``warmup`` (the Jacobian is diag(a_t) whatever the state), descending."""
    layers = scan_layers(module)
    if layer is None:
        if len(layers) > 1:
            raise ValueError(f"{type(module).__name__} has {len(layers)} layers: pass layer= "
                             f"(0..{len(layers) - 1})")
        layer = 0
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer={layer} is out of range for {type(module).__name__} with "
                         f"{len(layers)} layers")
    if inputs is None:
        raise ValueError("a scan layer's decays come from its inputs: pass inputs [T, I]")
    x = torch.as_tensor(inputs).detach()
    if x.dim() == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 2:
        raise ValueError(f"inputs must be one time-major sequence [T, I] or [T, 1, I], got "
                         f"shape {tuple(x.shape)}")
    if steps is not None:
        x = x[: int(steps)]
    dtype, device = _param_dtype(module)
    decay = capture_decays(module, layers[layer], x.to(dtype=dtype, device=device).unsqueeze(0))
    log_a = decay[0].abs().double().log().reshape(decay.shape[1], -1)  # [T, n]
    T = log_a.shape[0]
    if not 0 <= warmup < T:
        raise ValueError(f"warmup must be in [0, T) = [0, {T}), got {warmup}")
    exps = log_a[warmup:].mean(0)
    if bool(torch.isnan(exps).any()):
        warnings.warn(f"the decays of {type(module).__name__} became NaN: its Lyapunov "
                      "exponents are undefined; returning NaN", RuntimeWarning, stacklevel=3)
        return torch.full((k or exps.numel(),), math.nan, dtype=torch.float64)
    exps = exps.sort(descending=True).values
    if k is not None:
        if not 1 <= int(k) <= exps.numel():
            raise ValueError(f"k must be between 1 and the {exps.numel()} channels, got {k}")
        exps = exps[: int(k)]
    return exps.cpu()


# --------------------------------------------------------------------------------------------
# Trajectories of PyTorch's recurrent modules


def _param_dtype(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(module.parameters())
    return p.dtype, p.device


def _inputs(module, inputs, steps, input_size: int, dtype, device) -> Tensor:
    """Inputs as time-major ``[T, 1, I]`` in the module's dtype."""
    if inputs is None:
        if steps is None:
            raise ValueError("pass inputs [T, I] (or steps= to run T steps with zero input)")
        return torch.zeros(int(steps), 1, input_size, dtype=dtype, device=device)
    x = torch.as_tensor(inputs).detach().to(dtype=dtype, device=device)
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] != input_size:
        raise ValueError(
            f"inputs must be one time-major sequence [T, {input_size}] or [T, 1, {input_size}] "
            f"for {type(module).__name__}, got shape {tuple(torch.as_tensor(inputs).shape)}"
        )
    if steps is not None:
        if int(steps) > x.shape[0]:
            raise ValueError(f"steps={steps} exceeds the {x.shape[0]} inputs given")
        x = x[: int(steps)]
    if x.shape[0] < 1:
        raise ValueError("inputs hold no time step")
    return x


def _split_state(h0, lstm: bool, sizes: tuple[int, int], rows: int, name: str):
    """``(h, c)`` as ``[rows, 1, size]`` tensors (c None unless LSTM; None where not given) from
    the user's h0: ``[H]``/``[1, H]`` (LSTM: a ``(h, c)`` pair or ``[H + C]``/``[1, H + C]``) for
    the analysed layer, or the module's own ``[rows, H]``/``[rows, 1, H]`` layout.

    ``sizes`` is (H, C), the sizes of h and c: C = H, except for an LSTM with ``proj_size = P``
    (h has P entries, c has hidden_size)."""
    if h0 is None:
        return None, None, False
    Hh, Hc = sizes
    if lstm:
        if isinstance(h0, (tuple, list)):
            if len(h0) != 2:
                raise ValueError(f"h0 for {name} must be a (h, c) pair, got {len(h0)} tensors")
            h, c = (torch.as_tensor(s) for s in h0)
        else:
            s = torch.as_tensor(h0)
            if s.shape[-1] != Hh + Hc:
                raise ValueError(
                    f"h0 for {name} must be a (h, c) pair or a joint [{Hh + Hc}] vector "
                    f"(h first: {Hh}, then c: {Hc}), got shape {tuple(s.shape)}"
                )
            h, c = s[..., :Hh], s[..., Hh:]
    else:
        h, c = torch.as_tensor(h0), None
    full = False
    shaped = []
    for s, H in ((h, Hh), (c, Hc)):
        if s is None:
            shaped.append(None)
            continue
        if tuple(s.shape) in ((H,), (1, H)):
            s = s.reshape(1, 1, H)
        elif s.dim() == 2 and s.shape == (rows, H):
            s, full = s.unsqueeze(1), True
        elif s.dim() == 3 and s.shape == (rows, 1, H):
            full = True
        else:
            raise ValueError(
                f"h0 for {name}: expected [{H}], [1, {H}] or the module's [{rows}, 1, {H}], "
                f"got shape {tuple(s.shape)}"
            )
        shaped.append(s)
    return shaped[0], shaped[1], full and rows > 1


def _fused_trajectory(module, x, h0, layer, direction):
    name = type(module).__name__
    L, D, C = module.num_layers, (2 if module.bidirectional else 1), module.hidden_size
    H = getattr(module, "proj_size", 0) or C  # the size of h
    if layer is None:
        if L > 1:
            raise ValueError(f"{name} has {L} layers: pass layer= (0..{L - 1})")
        layer = 0
    if not 0 <= layer < L:
        raise ValueError(f"layer={layer} is out of range for {name} with {L} layers")
    if not 0 <= direction < D:
        raise ValueError(f"direction={direction} is out of range for {name} with {D} direction(s)")
    lstm = isinstance(module, nn.LSTM)
    h_init, c_init, full = _split_state(h0, lstm, (H, C), L * D, name)
    dtype, device = x.dtype, x.device
    hs = torch.zeros(L * D, 1, H, dtype=dtype, device=device)
    cs = torch.zeros(L * D, 1, C, dtype=dtype, device=device)
    idx = layer * D + direction
    if full:
        hs = h_init.to(dtype=dtype, device=device)
        cs = c_init.to(dtype=dtype, device=device) if lstm else cs
    elif h_init is not None:
        hs[idx] = h_init[0].to(dtype=dtype, device=device)
        if lstm:
            cs[idx] = c_init[0].to(dtype=dtype, device=device)
    inp = x
    with torch.no_grad():
        for l in range(layer + 1):
            shadow = single_layer_shadow(module, inp.shape[-1], batch_first=False)
            out, _ = run_layer(module, shadow, l, inp, (hs, cs) if lstm else hs)
            if l < layer:
                inp = out
    h = out[..., direction * H : (direction + 1) * H]
    x_layer = inp
    if direction == 1:  # processing order of the reverse direction
        h, x_layer = h.flip(0), x_layer.flip(0)
    w = layer_weights(module, layer, direction)
    return w, x_layer, hs[idx], h, (cs[idx] if lstm else None)


def _cell_trajectory(module, x, h0):
    name = type(module).__name__
    kind = cell_kind(module)
    lstm = kind == "lstm"
    H = module.hidden_size
    h_init, c_init, _ = _split_state(h0, lstm, (H, H), 1, name)
    dtype, device = x.dtype, x.device
    h = torch.zeros(1, H, dtype=dtype, device=device) if h_init is None else h_init[0]
    c = torch.zeros(1, H, dtype=dtype, device=device) if c_init is None else c_init[0]
    h, c = h.to(dtype=dtype, device=device), c.to(dtype=dtype, device=device)
    h0_, c0_ = h, c
    hs = []
    with torch.no_grad():
        state = (h, c) if lstm else h
        for t in range(x.shape[0]):
            state = module(x[t], state)
            hs.append(state[0] if lstm else state)
    w = CellWeights(kind, module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh)
    return w, x, h0_, torch.stack(hs), (c0_ if lstm else None)


def module_linearisation(
    module: nn.Module,
    inputs: Tensor | None = None,
    h0=None,
    *,
    steps: int | None = None,
    layer: int | None = None,
    direction: int = 0,
):
    """Run a PyTorch recurrent module on one sequence (no grad) and linearise one of its
    layers/directions along that trajectory.

    Lower layers of a multi-layer ``nn.RNN``/``nn.GRU``/``nn.LSTM`` are recomputed with the
    module's weights (single-layer functional copies, as the probes do); inter-layer dropout is
    not applied (eval-mode semantics).

    Args:
        module: ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (``proj_size`` allowed) or
            ``nn.RNNCell``/``nn.GRUCell``/``nn.LSTMCell``.
        inputs: ``[T, I]`` or ``[T, 1, I]``, time-major whatever ``batch_first`` says; None for
            ``steps`` steps of zero input.
        h0: initial state: None (zeros); ``[H]`` or ``[1, H]`` for the analysed layer/direction
            (other layers start at zero); or the module's own ``[L*D, H]``/``[L*D, 1, H]``.
            LSTM: a pair ``(h, c)`` of those, or one joint ``[2H]``/``[1, 2H]`` vector, h first;
            with ``proj_size = P`` h has P entries and c H, so the joint vector is ``[P + H]``.
        steps: number of steps (default: all inputs).
        layer: which layer (default 0; required for multi-layer modules).
        direction: 0 (forward) or 1 (reverse; its steps run backwards in input time, and the
            returned linearisation is in that processing order).

    Returns:
        ``(steps_obj, h)``: the linearisation (``state_size``, ``jacobian(t) -> [1, S, S]``,
        ``vjp_into``; S = H, or 2H for the joint LSTM state (h, c), P + H with a projection:
        :class:`rnn_diag.dynamics.cells.ProjectedLSTMSteps`) and the hidden states
        ``[T, 1, H]`` (``[T, 1, P]``) of the trajectory in processing order.
    """
    if not isinstance(module, FUSED_TYPES + CELL_TYPES):
        raise TypeError(
            f"module_linearisation needs nn.RNN/GRU/LSTM or nn.RNNCell/GRUCell/LSTMCell, got "
            f"{type(module).__name__}"
        )
    dtype, device = _param_dtype(module)
    x = _inputs(module, inputs, steps, module.input_size, dtype, device)
    if isinstance(module, FUSED_TYPES):
        w, x_layer, h_start, h, c0 = _fused_trajectory(module, x, h0, layer, direction)
    else:
        if layer not in (None, 0) or direction != 0:
            raise ValueError(f"{type(module).__name__} has a single layer and direction")
        w, x_layer, h_start, h, c0 = _cell_trajectory(module, x, h0)
    w = CellWeights(
        w.kind,
        *(None if p is None else p.detach() for p in (w.weight_ih, w.weight_hh, w.bias_ih,
                                                      w.bias_hh, w.weight_hr)),
    )
    h_prev = torch.cat([h_start.reshape(1, 1, -1), h[:-1]])
    with torch.no_grad():
        steps_obj = linearise(w, x_layer, h_prev, h, c0)
    return steps_obj, h


def lyapunov_spectrum(
    step,
    h0=None,
    inputs=None,
    *,
    steps: int | None = None,
    k: int | None = None,
    warmup: int = 0,
    qr_every: int = 1,
    dtype: torch.dtype | None = None,
    layer: int | None = None,
    direction: int = 0,
) -> Tensor:
    """Lyapunov exponents of a recurrent map along one trajectory, in nats per step.

    ``step`` may be:

    * an ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (pick ``layer=`` for multi-layer modules and
      ``direction=`` for bidirectional ones) or an ``nn.RNNCell``/``nn.GRUCell``/``nn.LSTMCell``:
      the module is run without grad on ``inputs`` from ``h0`` (see
      :func:`module_linearisation` for the accepted shapes; h0 None = zeros), and the Jacobians
      come from the cell equations. For LSTM the state is the joint (h, c), so there are 2H
      exponents; h0 is a ``(h, c)`` pair or a ``[2H]`` vector (h first). With ``proj_size = P``
      h has P entries: P + H exponents, h0 ``[P + H]``.
    * a scan layer (:mod:`rnn_diag.scans`, or a class declared with
      :func:`rnn_diag.register_scan`) or a :class:`rnn_diag.scans.ScanStack` (``layer=``): the
      module runs on ``inputs`` (``[T, I]``, one sequence) without grad and each channel's
      exponent is the time mean of ln|a_t,i| (the Jacobian is diag(a_t), whatever the state,
      so ``h0`` is not needed and ``qr_every``/``dtype`` do not apply). One exponent per
      channel: a complex channel counts once (its real pair shares the exponent).
    * any other callable ``step(h, x) -> h_next`` on one state vector ``h [S]`` (x is
      ``inputs[t]``, or None when ``inputs`` is None — then ``steps`` is required); h0 ``[S]``
      is required; Jacobians come from ``torch.func.jacrev``. A custom ``nn.Module`` is treated
      as such a callable.

    The exponents come from QR re-orthonormalisation along the trajectory
    (:func:`rnn_diag.dynamics.lyapunov.lyapunov_exponents`): ``warmup`` initial steps align the
    tangent block and are not counted, a QR every ``qr_every`` steps, log|R_ii| summed in
    float64.

    Args:
        step: the module or callable.
        h0: initial state (see above).
        inputs: the input sequence ``[T, ...]`` (modules: ``[T, I]`` or ``[T, 1, I]``).
        steps: number of steps (default ``len(inputs)``).
        k: number of leading exponents (default: the full spectrum, S).
        warmup, qr_every: see above.
        dtype: compute dtype of the tangent block and its QR factorisations (default: the
            model's, or h0's for a callable). The sums of log|R_ii| are float64 either way.
            Individual exponents of a near-degenerate pair are ill-conditioned over a finite
            trajectory: perturbing every Jacobian by 1e-7 (float32 rounding) moved single
            exponents by ~1e-4 nats/step in float64 at T=1000, H=256, while the top exponent
            and the mean of the top i exponents, for every i, moved by < 1e-6. float64 costs
            about twice float32.
        layer, direction: modules only.

    Returns:
        float64 ``[k]``, descending, nats per step (divide by ln 10 for decades per step).
        NaN, with a RuntimeWarning, when the trajectory or its Jacobians become non-finite.

    Example:
        >>> torch.manual_seed(0) and None
        >>> rnn = nn.RNN(2, 8)
        >>> lyapunov_spectrum(rnn, inputs=torch.randn(500, 2), k=2, warmup=100).shape
        torch.Size([2])
    """
    if isinstance(step, nn.Module) and scan_layers(step) is not None:
        return _scan_exponents(step, inputs, steps, k, warmup, layer)
    if isinstance(step, FUSED_TYPES + CELL_TYPES):
        steps_obj, h = module_linearisation(
            step, inputs, h0, steps=steps, layer=layer, direction=direction
        )
        T = h.shape[0]
        S = steps_obj.state_size
        k_ = S if k is None else k
        finite = torch.isfinite(h).flatten(1).all(1)
        if not bool(finite.all()):
            t0 = int(torch.nonzero(~finite)[0, 0])
            warnings.warn(
                f"the trajectory of {type(step).__name__} became non-finite (inf or NaN) at step "
                f"{t0}: the state explodes, so its Lyapunov exponents are undefined; returning "
                "NaN",
                RuntimeWarning,
                stacklevel=2,
            )
            return torch.full((k_,), math.nan, dtype=torch.float64)
        return lyapunov_exponents(
            steps_obj.jacobian, T, k=k, warmup=warmup, qr_every=qr_every, dtype=dtype
        )[0]
    if layer not in (None, 0) or direction != 0:
        raise ValueError("layer= and direction= apply to nn.RNN/GRU/LSTM modules only")
    if not callable(step):
        raise TypeError(
            "lyapunov_spectrum needs a recurrent module or a callable step(h, x) -> h_next, got "
            f"{type(step).__name__}"
        )
    if h0 is None:
        raise ValueError("the callable form needs h0, the initial state vector [S]")
    return lyapunov_spectrum_callable(
        step, h0, inputs, steps=steps, k=k, warmup=warmup, qr_every=qr_every, dtype=dtype
    )
