"""``Probe.frame()``: a tidy table of per-timestep batch aggregates of every recorded backward.

The aggregates are recomputed here with numpy from independent per-sample gradients: plain
autograd on an unrolled float64 nn.RNNCell (single-layer cases, packed sequences), or, for the
multi-layer/bidirectional LSTM+GRU case, from the probe's own ``hidden_grads`` /
``immediate_grads`` tensors, which checks the aggregation and the table layout independently
of how the gradients were computed. All models are float64 and short, so nothing underflows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnn_diag as rd

COLUMNS = ["iteration", "module", "layer", "direction", "state", "t", "metric", "value"]
METRICS = {
    "total_mean",
    "total_min",
    "total_max",
    "immediate_mean",
    "immediate_min",
    "immediate_max",
    "nonfinite_fraction",
    "underflow_fraction",
}
KEY = ["iteration", "module", "layer", "direction", "state", "t", "metric"]


def _log10_norms(x) -> np.ndarray:
    """[T, B, H] -> [T, B] log10 L2 norms in float64 (inputs are well inside float64 range)."""
    x = x.detach().double().numpy() if isinstance(x, torch.Tensor) else x
    with np.errstate(divide="ignore"):
        return np.log10(np.linalg.norm(x, axis=-1))


def _stats(logs: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Batch mean/min/max over valid samples at each t: {'mean'|'min'|'max': [T]}."""
    if valid is None:
        valid = np.ones(logs.shape, dtype=bool)
    out = {"mean": [], "min": [], "max": []}
    for t in range(logs.shape[0]):
        v = logs[t][valid[t]]
        out["mean"].append(v.mean())
        out["min"].append(v.min())
        out["max"].append(v.max())
    return {k: np.array(v) for k, v in out.items()}


def _series(frame, metric, **where) -> np.ndarray:
    """Values of one metric over t (sorted by t), for rows matching ``where``."""
    rows = frame[frame.metric == metric]
    for col, val in where.items():
        rows = rows[rows[col] == val]
    rows = rows.sort_values("t")
    np.testing.assert_array_equal(rows["t"].to_numpy(), np.arange(len(rows)))
    return rows["value"].to_numpy()


def _unrolled_rnn(rnn: nn.RNN, x: torch.Tensor, h0: torch.Tensor | None = None):
    """Unrolled nn.RNNCell with the module's weights; returns the list of h_t (grads retained)."""
    cell = nn.RNNCell(rnn.input_size, rnn.hidden_size, nonlinearity=rnn.nonlinearity)
    cell = cell.to(x.dtype)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(rnn, n + "_l0"))
    h = torch.zeros(x.shape[1], rnn.hidden_size, dtype=x.dtype) if h0 is None else h0
    hs = []
    for t in range(x.shape[0]):
        h = cell(x[t], h)
        h.retain_grad()
        hs.append(h)
    return hs


# --------------------------------------------------------------------------- schema


@pytest.fixture(scope="module")
def lstm_gru():
    """A 2-layer bidirectional LSTM feeding a GRU, float64, two recorded backward passes."""
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
            self.gru = nn.GRU(8, 5)

        def forward(self, x):
            out, _ = self.lstm(x)
            out, _ = self.gru(out)
            return out

    model = Model().double()
    T, B = 7, 3
    with rd.attach(model, saturation=True) as probe:
        for _ in range(2):
            x = torch.randn(T, B, 3, dtype=torch.float64)
            coeff = torch.randn(T, B, 5, dtype=torch.float64)
            (model(x) * coeff).sum().backward()
    return probe, T, B


def test_frame_schema_and_dtypes(lstm_gru):
    """Exactly the documented columns, in order; integer / string / float64 dtypes; every
    documented metric present."""
    probe, _, _ = lstm_gru
    frame = probe.frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == COLUMNS
    for col in ("iteration", "layer", "direction", "t"):
        assert pd.api.types.is_integer_dtype(frame[col]), (col, frame[col].dtype)
    for col in ("module", "state", "metric"):
        assert pd.api.types.is_string_dtype(frame[col]) or frame[col].dtype == object, col
    assert frame["value"].dtype == np.float64
    gradient_metrics = set(frame.loc[frame.state == "c", "metric"])
    assert gradient_metrics == METRICS
    saturation = {f"saturation_{g}" for g in "ifgoc"} | {f"saturation_{g}" for g in "rzn"}
    assert set(frame["metric"]) == METRICS | saturation
    assert set(frame["state"]) == {"h", "c"}


def test_frame_is_tidy(lstm_gru):
    """One observation per row: scalar cells only (no lists/arrays/tensors) and no duplicate
    (iteration, module, layer, direction, state, t, metric) keys."""
    probe, _, _ = lstm_gru
    frame = probe.frame()
    for col in ("module", "state", "metric"):
        assert all(isinstance(v, str) for v in frame[col]), col
    for col in ("iteration", "layer", "direction", "t", "value"):
        assert all(np.isscalar(v) for v in frame[col]), col
    assert not frame.duplicated(KEY).any()


def test_frame_covers_every_module_layer_direction_and_state(lstm_gru):
    """2-layer bidirectional LSTM: layers {0,1} x directions {0,1} x states {h,c}; GRU: layer
    0, direction 0, state h only. Every combination has every metric at every t, for each of
    the 2 recorded iterations."""
    probe, T, _ = lstm_gru
    frame = probe.frame()
    assert probe.modules == ["lstm", "gru"]
    combos = set(map(tuple, frame[["module", "layer", "direction", "state"]].to_numpy().tolist()))
    expected = {("lstm", l, d, s) for l in (0, 1) for d in (0, 1) for s in ("h", "c")}
    expected |= {("gru", 0, 0, "h")}
    assert combos == expected
    assert frame["iteration"].nunique() == 2
    gradient_rows = frame[frame.metric.isin(METRICS)]
    assert len(gradient_rows) == 2 * len(expected) * T * len(METRICS)
    assert set(frame["t"]) == set(range(T))


def test_frame_values_are_batch_aggregates_of_the_gradient_tensors(lstm_gru):
    """For the latest iteration, every total_* / immediate_* series equals numpy's batch
    mean/min/max of log10 L2 norms of ``hidden_grads`` / ``immediate_grads`` for that module,
    layer, direction and state; nonfinite_fraction is 0 (all finite)."""
    probe, T, B = lstm_gru
    frame = probe.frame()
    last = frame["iteration"].max()
    frame = frame[frame.iteration == last]
    for module, layer, direction, state in [
        ("lstm", l, d, s) for l in (0, 1) for d in (0, 1) for s in ("h", "c")
    ] + [("gru", 0, 0, "h")]:
        sel = dict(module=module, layer=layer, direction=direction, state=state)
        kw = dict(layer=layer, direction=direction, state=state)
        for which, tensor in (
            ("total", probe.hidden_grads(module, **kw)),
            ("immediate", probe.immediate_grads(module, **kw)),
        ):
            assert tensor.shape[:2] == (T, B)
            expected = _stats(_log10_norms(tensor))
            for stat in ("mean", "min", "max"):
                np.testing.assert_allclose(
                    _series(frame, f"{which}_{stat}", **sel),
                    expected[stat],
                    rtol=1e-9,
                    atol=1e-9,
                    err_msg=f"{which}_{stat} {sel}",
                )
        np.testing.assert_array_equal(_series(frame, "nonfinite_fraction", **sel), 0.0)


# --------------------------------------------------------------------------- vs autograd


def test_frame_matches_unrolled_autograd_aggregates_each_iteration():
    """Single-layer tanh RNN (float64), 3 backward passes with different inputs and losses
    reading every output: for each iteration, total_* equal the batch aggregates of log10
    ||dL/dh_t|| from plain autograd on an unrolled nn.RNNCell, and immediate_* those of
    ||dL/d output_t|| (the loss coefficients). Iterations are 0-based, one per backward."""
    torch.manual_seed(3)
    rnn = nn.RNN(3, 6).double()
    T, B = 9, 4
    expected = []
    with rd.attach(rnn) as probe:
        for _ in range(3):
            x = torch.randn(T, B, 3, dtype=torch.float64)
            coeff = torch.randn(T, B, 6, dtype=torch.float64)
            out, _ = rnn(x)
            (out * coeff).sum().backward()
            hs = _unrolled_rnn(rnn, x)
            (torch.stack(hs) * coeff).sum().backward()
            expected.append(
                (
                    _stats(_log10_norms(torch.stack([h.grad for h in hs]))),
                    _stats(_log10_norms(coeff)),
                )
            )
    frame = probe.frame()
    assert sorted(frame["iteration"].unique()) == [0, 1, 2]
    assert set(frame["module"]) == {""}
    for it, (total, immediate) in enumerate(expected):
        for stat in ("mean", "min", "max"):
            np.testing.assert_allclose(
                _series(frame, f"total_{stat}", iteration=it), total[stat], atol=1e-10
            )
            np.testing.assert_allclose(
                _series(frame, f"immediate_{stat}", iteration=it), immediate[stat], atol=1e-10
            )


def test_packed_sequence_aggregates_over_valid_samples_only():
    """PackedSequence with lengths (4, 7, 2) packed with enforce_sorted=False: at step t only
    the samples with length > t enter mean/min/max, so at t = 4..6 (only sample 1 valid)
    mean == min == max == that sample's value.

    Reference: each sample run alone through an unrolled float64 nn.RNNCell, loss = its valid
    outputs times fixed coefficients plus <h_n, d> (h_n is each sample's last valid state).
    Padding positions of ``hidden_grads`` are 0 and their log10 norms are -inf (exactly zero
    gradient), and they never leak into the table (all table values finite).
    """
    torch.manual_seed(4)
    rnn = nn.RNN(3, 5).double()
    lengths = [4, 7, 2]
    T, B = max(lengths), len(lengths)
    x = torch.randn(T, B, 3, dtype=torch.float64)
    coeff = torch.randn(T, B, 5, dtype=torch.float64)
    d = torch.randn(B, 5, dtype=torch.float64)
    valid = np.arange(T)[:, None] < np.array(lengths)[None, :]
    mask = torch.from_numpy(valid).unsqueeze(-1)

    with rd.attach(rnn) as probe:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        out, h_n = rnn(packed)
        padded, _ = pad_packed_sequence(out)
        ((padded * coeff * mask).sum() + (h_n[0] * d).sum()).backward()

    total = np.full((T, B), -np.inf)
    immediate = np.full((T, B), -np.inf)
    for b, n in enumerate(lengths):
        hs = _unrolled_rnn(rnn, x[:n, b : b + 1])
        ((torch.stack(hs)[:, 0] * coeff[:n, b]).sum() + (hs[-1][0] * d[b]).sum()).backward()
        total[:n, b] = _log10_norms(torch.stack([h.grad[0] for h in hs]))
        direct = coeff[:n, b].clone()
        direct[n - 1] += d[b]
        immediate[:n, b] = _log10_norms(direct)

    logs = probe.hidden_grad_log10_norms().numpy()
    np.testing.assert_allclose(logs[valid], total[valid], atol=1e-10)
    assert np.isneginf(logs[~valid]).all()
    assert (probe.hidden_grads()[torch.from_numpy(~valid)] == 0).all()

    frame = probe.frame()
    assert np.isfinite(frame["value"]).all()
    for which, ref in (("total", total), ("immediate", immediate)):
        expected = _stats(ref, valid)
        got = {s: _series(frame, f"{which}_{s}") for s in ("mean", "min", "max")}
        for stat in ("mean", "min", "max"):
            np.testing.assert_allclose(got[stat], expected[stat], atol=1e-10, err_msg=which)
        only_one = valid.sum(1) == 1
        assert only_one.sum() == 3
        np.testing.assert_array_equal(got["mean"][only_one], got["min"][only_one])
        np.testing.assert_array_equal(got["max"][only_one], got["min"][only_one])
        np.testing.assert_allclose(got["mean"][only_one], ref[only_one, 1], atol=1e-10)
    np.testing.assert_array_equal(_series(frame, "nonfinite_fraction"), 0.0)


def test_empty_frame_before_any_backward_has_the_schema():
    """Before anything is recorded the frame is empty but has the documented columns, so
    downstream code (concat, groupby) works without special cases."""
    rnn = nn.GRU(3, 4)
    with rd.attach(rnn) as probe:
        pass
    frame = probe.frame()
    assert len(frame) == 0
    assert list(frame.columns) == COLUMNS


def test_saturation_fraction_matches_the_activations():
    """saturation_h of a tanh RNN equals the fraction of units with 1 - h² < 0.01, computed here
    from the module's own outputs; saturation_f of an LSTM equals the fraction of forget gates
    with f(1 - f) < 0.01, from gates recomputed here with the documented equations."""
    torch.manual_seed(3)
    T, B, H = 6, 4, 5
    rnn = nn.RNN(2, H).double()
    with torch.no_grad():
        rnn.weight_ih_l0.mul_(8)  # push units into saturation
    x = torch.randn(T, B, 2, dtype=torch.float64)
    with rd.attach(rnn, saturation=True) as probe:
        out, _ = rnn(x)
        out.sum().backward()
    frame = probe.frame()
    want = ((1 - out.detach() ** 2) < 0.01).double().mean(-1).mean(-1).numpy()
    got = _series(frame, "saturation_h", module="", layer=0, direction=0, state="h")
    assert want.max() > 0
    np.testing.assert_allclose(got, want)

    lstm = nn.LSTM(2, H).double()
    with torch.no_grad():
        lstm.weight_ih_l0.mul_(8)
    with rd.attach(lstm, saturation=True) as probe:
        out, _ = lstm(x)
        out.sum().backward()
    h_prev = torch.cat([torch.zeros(1, B, H, dtype=torch.float64), out.detach()[:-1]])
    pre = x @ lstm.weight_ih_l0.detach().T + h_prev @ lstm.weight_hh_l0.detach().T
    pre = pre + lstm.bias_ih_l0.detach() + lstm.bias_hh_l0.detach()
    f = torch.sigmoid(pre[..., H : 2 * H])
    want = ((f * (1 - f)) < 0.01).double().mean(-1).mean(-1).numpy()
    got = _series(probe.frame(), "saturation_f", module="", layer=0, direction=0, state="h")
    np.testing.assert_allclose(got, want)


def test_saturation_is_off_by_default():
    """Without saturation=True the frame holds only the gradient metrics."""
    rnn = nn.GRU(2, 3)
    with rd.attach(rnn) as probe:
        out, _ = rnn(torch.randn(4, 2, 2))
        out.sum().backward()
    assert set(probe.frame()["metric"]) == METRICS
