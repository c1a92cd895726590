"""Guarantees of the probe: it never changes the model, it obeys theory, it survives non-finite
values, and it refuses configurations it cannot handle exactly.

Every reference here is independent of rnn_diag: the model run without the probe, the Pascanu et
al. (2013) bound computed from the weights with numpy, or plain autograd on an unrolled cell.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import unrolled_rnn_cell_grads
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnn_diag as rd

# --------------------------------------------------------------------------- helpers


def _unpack(out):
    return pad_packed_sequence(out)[0] if isinstance(out, PackedSequence) else out


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


class FusedModel(nn.Module):
    """A fused recurrent module, an optional dropout and a linear head; the loss reads every
    output step and the final states, so every gradient path is exercised."""

    def __init__(self, rnn: nn.RNNBase, p_drop: float = 0.0):
        super().__init__()
        self.rnn = rnn
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.drop = nn.Dropout(p_drop)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        out, state = self.rnn(x)
        y = self.head(self.drop(_unpack(out)))
        return (y, *_as_tuple(state))


class CellLoop(nn.Module):
    """A hand-written loop over an nn.RNNCell / GRUCell / LSTMCell, time-major input."""

    def __init__(self, cell: nn.Module, p_drop: float = 0.0):
        super().__init__()
        self.cell = cell
        self.drop = nn.Dropout(p_drop)
        self.head = nn.Linear(cell.hidden_size, 3)

    def forward(self, x):
        state = None
        hs = []
        for t in range(x.shape[0]):
            state = self.cell(x[t]) if state is None else self.cell(x[t], state)
            hs.append(state[0] if isinstance(state, tuple) else state)
        y = self.head(self.drop(torch.stack(hs)))
        return (y, *_as_tuple(state))


def _loss(outputs, coeffs):
    """A random linear function of every output tensor (fixed coefficients)."""
    return sum((o * c).sum() for o, c in zip(outputs, coeffs))


def _make_case(name: str):
    """Return (model, make_input) for a named non-interference case."""
    torch.manual_seed(1234)
    T, B, F = 7, 3, 4
    if name == "rnn_tanh-2layer-bidir":
        model = FusedModel(nn.RNN(F, 5, num_layers=2, bidirectional=True))
        return model, lambda: torch.randn(T, B, F)
    if name == "rnn_relu-2layer-batch_first":
        model = FusedModel(nn.RNN(F, 5, num_layers=2, nonlinearity="relu", batch_first=True))
        return model, lambda: torch.randn(B, T, F)
    if name == "rnn_unbatched-input":
        model = FusedModel(nn.RNN(F, 5))
        return model, lambda: torch.randn(T, F)
    if name == "gru-2layer-bidir":
        model = FusedModel(nn.GRU(F, 5, num_layers=2, bidirectional=True))
        return model, lambda: torch.randn(T, B, F)
    if name == "lstm-2layer-bidir":
        model = FusedModel(nn.LSTM(F, 5, num_layers=2, bidirectional=True))
        return model, lambda: torch.randn(T, B, F)
    if name in ("lstm-packed-unsorted", "gru-packed-unsorted-bidir"):
        rnn = (
            nn.LSTM(F, 5, num_layers=2)
            if name.startswith("lstm")
            else nn.GRU(F, 5, bidirectional=True)
        )
        model = FusedModel(rnn)
        lengths = torch.tensor([4, 7, 2])

        def make_packed():
            x = torch.randn(T, B, F)
            return pack_padded_sequence(x, lengths, enforce_sorted=False)

        return model, make_packed
    if name == "lstmcell-loop":
        return CellLoop(nn.LSTMCell(F, 5)), lambda: torch.randn(T, B, F)
    if name == "grucell-loop":
        return CellLoop(nn.GRUCell(F, 5)), lambda: torch.randn(T, B, F)
    if name == "train-mode-lstm-with-dropout-head":
        # Dropout outside the recurrent module draws random numbers: if the probe consumed
        # RNG state, the masks (and so outputs and grads) of the probed run would differ.
        return FusedModel(nn.LSTM(F, 5), p_drop=0.5).train(), lambda: torch.randn(T, B, F)
    if name == "train-mode-rnncell-with-dropout-head":
        return CellLoop(nn.RNNCell(F, 5), p_drop=0.5).train(), lambda: torch.randn(T, B, F)
    raise AssertionError(name)


NON_INTERFERENCE_CASES = [
    "rnn_tanh-2layer-bidir",
    "rnn_relu-2layer-batch_first",
    "rnn_unbatched-input",
    "gru-2layer-bidir",
    "lstm-2layer-bidir",
    "lstm-packed-unsorted",
    "gru-packed-unsorted-bidir",
    "lstmcell-loop",
    "grucell-loop",
    "train-mode-lstm-with-dropout-head",
    "train-mode-rnncell-with-dropout-head",
]


# --------------------------------------------------------------------------- non-interference


@pytest.mark.parametrize("case", NON_INTERFERENCE_CASES)
def test_probe_does_not_change_outputs_or_parameter_grads(case):
    """Outputs and every parameter ``.grad`` are bitwise equal with and without the probe.

    Reference: the very same model and input run once without any probe. The RNG is reseeded
    before each forward so that dropout draws the same masks; any extra RNG draw, in-place
    change or re-ordered computation by the probe shows up as a bitwise difference.
    """
    model, make_input = _make_case(case)
    torch.manual_seed(99)
    x = make_input()

    torch.manual_seed(7)
    ref_out = model(x)
    coeffs = [torch.randn_like(o) for o in ref_out]
    _loss(ref_out, coeffs).backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    ref_out = [o.detach().clone() for o in ref_out]

    model.zero_grad(set_to_none=True)
    with rd.attach(model) as probe:
        torch.manual_seed(7)
        out = model(x)
        _loss(out, coeffs).backward()

    assert len(out) == len(ref_out)
    for i, (a, b) in enumerate(zip(out, ref_out)):
        assert torch.equal(a.detach(), b), f"output {i} differs with the probe attached"
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.equal(p.grad, ref_grads[n]), f"grad of {n} differs with the probe attached"
    # The probe did record something (otherwise the comparison above proves nothing).
    assert len(probe.modules) == 1
    grads = probe.hidden_grads()
    assert grads.dim() == 3 and grads.shape[0] == 7
    assert len(probe.frame()) > 0


def test_probe_does_not_change_a_second_training_step():
    """Two SGD steps with the probe give bitwise the same weights as two without.

    Reference: a deep copy of the model trained without a probe. (Plain in-place SGD rather
    than torch.optim, whose first import costs seconds.)
    """
    torch.manual_seed(3)
    model = FusedModel(nn.GRU(4, 6, num_layers=2, bidirectional=True), p_drop=0.3).train()
    twin = copy.deepcopy(model)
    xs = [torch.randn(9, 2, 4) for _ in range(2)]
    coeffs = [torch.randn(9, 2, 3), torch.randn(4, 2, 6)]

    def train(m, probe_it):
        probe = rd.attach(m) if probe_it else None
        for i, x in enumerate(xs):
            torch.manual_seed(100 + i)
            m.zero_grad(set_to_none=True)
            _loss(m(x), coeffs).backward()
            with torch.no_grad():
                for p in m.parameters():
                    p.sub_(0.1 * p.grad)
        if probe is not None:
            probe.detach()
            assert len(probe.frame()["iteration"].unique()) == 2

    train(twin, False)
    train(model, True)
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), n


# --------------------------------------------------------------------------- theory


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    H=st.integers(2, 16),
    T=st.integers(5, 60),
    B=st.integers(1, 4),
    sigma=st.floats(0.05, 0.99),
    input_scale=st.floats(0.05, 3.0),
)
def test_pascanu_bound_holds_for_contractive_tanh_rnn(seed, H, T, B, sigma, input_scale):
    """Pascanu et al. (2013): for tanh, ``J_t = diag(1 - h_t^2) W_hh`` so
    ``||J_t^T v|| <= sigma_max(W_hh) ||v||``; with the loss on the last output only,
    ``log10 ||dL/dh_k|| <= log10 ||dL/dh_T|| + (T - k) log10 sigma_max`` for every k.

    Also checked, from the same argument: the one-step version of the bound; the matching lower
    bound ``||J_t^T v|| >= sigma_min(W_hh) min_i(1 - h_{t,i}^2) ||v||`` (so a probe returning
    zeros/-inf cannot pass); and ``dL/dh_T`` equals the loss coefficients. sigma_max,
    sigma_min and h_t come from numpy / the model's own output, not from rnn_diag.
    """
    g = torch.Generator().manual_seed(seed)
    I = 3
    rnn = nn.RNN(I, H, nonlinearity="tanh").double()
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * input_scale)
        W = torch.randn(H, H, generator=g, dtype=torch.float64)
        W *= sigma / np.linalg.norm(W.numpy(), 2)
        rnn.weight_hh_l0.copy_(W)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    c = torch.randn(B, H, generator=g, dtype=torch.float64)

    with rd.attach(rnn) as probe:
        out, _ = rnn(x)
        (out[-1] * c).sum().backward()
    logs = probe.hidden_grad_log10_norms().numpy()
    assert logs.shape == (T, B)
    assert np.isfinite(logs).all(), "the true gradient is non-zero everywhere here"

    svals = np.linalg.svd(W.numpy(), compute_uv=False)
    log_smax, log_smin = math.log10(svals[0]), math.log10(svals[-1])
    assert log_smax < 0
    np.testing.assert_allclose(logs[-1], np.log10(np.linalg.norm(c.numpy(), axis=1)), atol=1e-9)

    k = np.arange(T)[:, None]
    bound = logs[-1][None, :] + (T - 1 - k) * log_smax
    assert (logs <= bound + 1e-6).all(), np.max(logs - bound)

    # One step at a time: lambda_{t-1} = J_t^T lambda_t.
    h = out.detach().numpy()  # [T, B, H]
    assert (logs[:-1] <= logs[1:] + log_smax + 1e-6).all()
    with np.errstate(divide="ignore"):  # a saturated unit (h = +-1 exactly) gives -inf
        dmin = np.log10(np.min(1.0 - h[1:] ** 2, axis=-1))  # [T-1, B]: min_i (1 - h_{t,i}^2)
    assert (logs[:-1] >= logs[1:] + log_smin + dmin - 1e-6).all()


# --------------------------------------------------------------------------- non-finite values


def _unrolled_tanh_grads(rnn: nn.RNN, x: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """Plain autograd on an explicitly unrolled nn.RNNCell with the module's weights:
    ``dL/dh_t`` for ``L = sum_t <h_t, coeff_t>``, [T, B, H]."""
    return unrolled_rnn_cell_grads(rnn, x, lambda hs: (torch.stack(hs) * coeff).sum())


def test_inf_in_input_gives_nonfinite_gradients_for_that_sample_only():
    """An input with +inf in every feature of one sample makes that sample's pre-activations
    +inf - inf = NaN, so its states and every gradient through them are NaN.

    Reference: plain autograd on an unrolled float64 nn.RNNCell with the same weights. The
    probe's per-(t, sample) finiteness must match it exactly, other samples stay finite, and
    ``nonfinite_fraction`` equals the reference fraction at every t.
    """
    torch.manual_seed(5)
    T, B, F, H = 12, 4, 4, 6
    rnn = nn.RNN(F, H).double()
    x = torch.randn(T, B, F, dtype=torch.float64)
    x[5, 2, :] = math.inf
    coeff = torch.randn(T, B, H, dtype=torch.float64)

    with rd.attach(rnn) as probe:
        out, _ = rnn(x)
        (out * coeff).sum().backward()  # must not raise
    assert torch.isnan(out[6:, 2]).all(), "test premise: sample 2 is NaN after the inf input"

    ref = _unrolled_tanh_grads(rnn, x, coeff)
    ref_finite = torch.isfinite(ref).all(-1).numpy()  # [T, B]
    assert not ref_finite[:, 2].all() and ref_finite[:, [0, 1, 3]].all()

    logs = probe.hidden_grad_log10_norms().numpy()
    np.testing.assert_array_equal(np.isfinite(logs), ref_finite)

    frame = probe.frame()
    nf = frame[frame.metric == "nonfinite_fraction"].sort_values("t")
    np.testing.assert_array_equal(nf["t"].to_numpy(), np.arange(T))
    np.testing.assert_allclose(nf["value"].to_numpy(), 1.0 - ref_finite.mean(axis=1))
    assert (nf["value"] > 0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_exploding_relu_rnn_is_flagged_nonfinite(dtype):
    """relu RNN with ``W_hh = 50 I``, T=300: the forward overflows to inf within ~25 steps
    (float32) / ~190 steps (float64) and then ``0 * inf`` in ``W_hh h`` makes every later state
    NaN. PyTorch's own backward then gives NaN for every parameter gradient.

    Once ``h_t`` of a sample is NaN, ``J_t = diag(relu'(a_t)) W_hh`` is undefined and so is
    ``dL/dh_k`` for every k < t: the probe must report those gradients as non-finite
    (``nonfinite_fraction > 0``, non-finite log10 norms), not as finite numbers that hide the
    explosion. This is what tanh/GRU/LSTM give naturally (``1 - h^2`` and the gates are NaN,
    see the inf-input test); for relu a derivative computed as ``1[h > 0]`` turns a NaN state
    into 0 and silently cuts the recurrence. Attach, forward and backward must not raise.
    """
    torch.manual_seed(0)
    T, B, H = 300, 4, 8
    rnn = nn.RNN(3, H, nonlinearity="relu").to(dtype)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(50 * torch.eye(H))
    x = torch.randn(T, B, 3, dtype=dtype)

    with rd.attach(rnn) as probe:
        out, _ = rnn(x)
        out.sum().backward()  # must not raise
    assert not torch.isfinite(rnn.weight_hh_l0.grad).any(), "premise: PyTorch's grads are NaN"

    nan_rows = torch.isnan(out.detach()).any(-1).numpy()  # [T, B]: h_t of sample b has NaN
    assert nan_rows.any()
    logs = probe.hidden_grad_log10_norms().numpy()
    frame = probe.frame()
    nf = frame[frame.metric == "nonfinite_fraction"]
    assert (nf["value"] > 0).any(), "the explosion is not flagged by nonfinite_fraction"
    for b in range(B):
        last_nan = np.flatnonzero(nan_rows[:, b]).max()
        finite_before = np.flatnonzero(np.isfinite(logs[:last_nan, b]))
        assert finite_before.size == 0, (
            f"sample {b}: h_t is NaN up to t={last_nan}, yet the probe reports finite "
            f"log10 norms at {finite_before.size} earlier steps, e.g. t={finite_before[:5]} "
            f"-> {logs[finite_before[:5], b]}"
        )


def test_nan_loss_gives_nan_gradients_everywhere():
    """A head with a NaN weight makes the loss NaN and dL/dh_t NaN at every step (the
    immediate gradient itself is NaN). Nothing must raise; every log10 norm is NaN and
    ``nonfinite_fraction`` is 1 at every t (all samples)."""
    torch.manual_seed(2)
    model = FusedModel(nn.LSTM(3, 4))
    with torch.no_grad():
        model.head.weight[0, 0] = math.nan
    x = torch.randn(6, 2, 3)
    with rd.attach(model) as probe:
        y, _, _ = model(x)
        loss = y.sum()
        assert torch.isnan(loss)
        loss.backward()  # must not raise
    for state in ("h", "c"):
        logs = probe.hidden_grad_log10_norms(state=state)
        assert torch.isnan(logs).all(), state
    frame = probe.frame()
    nf = frame[frame.metric == "nonfinite_fraction"]
    assert len(nf) == 6 * 2  # 6 steps, states h and c
    assert (nf["value"] == 1.0).all()


def test_inf_loss_coefficient_gives_nonfinite_gradients():
    """``loss = inf * out[-1].sum()``: the immediate gradient at the last step is +inf, so the
    total gradient there has an infinite entry and earlier ones are inf or NaN (inf*0 in the
    matmuls). Nothing must raise; nonfinite_fraction is 1 at the last step."""
    torch.manual_seed(4)
    rnn = nn.GRU(3, 5)
    with rd.attach(rnn) as probe:
        out, _ = rnn(torch.randn(6, 2, 3))
        (out[-1].sum() * math.inf).backward()
    logs = probe.hidden_grad_log10_norms()
    assert not torch.isfinite(logs[-1]).any()
    frame = probe.frame()
    nf = frame[frame.metric == "nonfinite_fraction"].set_index("t")["value"]
    assert nf.loc[5] == 1.0


# --------------------------------------------------------------------------- refusals


class TwoModules(nn.Module):
    def __init__(self, second: nn.Module):
        super().__init__()
        self.first = nn.GRU(3, 4)
        self.encoder = second

    def forward(self, x):
        out, _ = self.first(x)
        out, _ = self.encoder(out)
        return out


def _hook_counts(model: nn.Module):
    return {
        name: (
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            len(getattr(m, "_backward_pre_hooks", {})),
        )
        for name, m in model.named_modules()
    }


def test_interlayer_dropout_in_eval_mode_works():
    """The same module in eval mode applies no dropout: the probe works and reports finite
    gradients for both layers and both states; outputs equal the unprobed eval outputs."""
    torch.manual_seed(0)
    model = TwoModules(nn.LSTM(4, 5, num_layers=2, dropout=0.5)).eval()
    x = torch.randn(5, 2, 3)
    ref = model(x).detach()
    with rd.attach(model) as probe:
        out = model(x)
        out.sum().backward()
    assert torch.equal(out.detach(), ref)
    for layer in (0, 1):
        for state in ("h", "c"):
            g = probe.hidden_grads("encoder", layer=layer, state=state)
            assert g.shape == (5, 2, 5)
            assert torch.isfinite(probe.hidden_grad_log10_norms("encoder", layer=layer)).all()


def test_single_layer_dropout_in_train_mode_is_harmless():
    """PyTorch ignores ``dropout`` for num_layers=1 (it only warns), so there is nothing for the
    probe to get wrong: it must not refuse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rnn = nn.GRU(3, 4, num_layers=1, dropout=0.5).train()
    with rd.attach(rnn) as probe:
        out, _ = rnn(torch.randn(5, 2, 3))
        out.sum().backward()
    assert probe.hidden_grads().shape == (5, 2, 4)
