"""rd.record against training code written the way real projects write it.

Each test is a small training loop of a common shape (validation passes, gradient
accumulation, packed variable-length batches, dropout between layers, a siamese encoder, a
crash, a resumed run, two processes sharing a folder) and checks concrete values in the run
folder. References are independent of rnn_diag: float64 models unrolled from the PyTorch
equations (as in ``tests/probes/reference.py``, re-written here), plain autograd, or the same
loop run without the recorder.

Several of these tests were written first as strict xfails, one per defect found (the
validation tape, the warnings the folder kept, resuming on the ``every`` grid, resuming after
a crash past the checkpoint), and pass since those were fixed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnn_diag as rd
from rnn_diag.cli import main
from rnn_diag.report.run_data import load_run

# --------------------------------------------------------------------------- helpers


def _table(folder, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / name)


def _profile(grads: pd.DataFrame, step: int, metric: str, *, layer: int = 0, state="h",
             trial: str | None = None) -> np.ndarray:
    rows = grads[(grads.step == step) & (grads.metric == metric) & (grads.layer == layer)
                 & (grads.state == state) & (grads.direction == 0)]
    if trial is not None:
        rows = rows[rows.trial == trial]
    assert rows["t"].is_unique, "one value per t expected"
    return rows.sort_values("t")["value"].to_numpy()


def _gru_step(w_ih, w_hh, b_ih, b_hh):
    """h' = (1 - z) * n + z * h, gates (r, z, n) as in the PyTorch documentation."""

    def step(x, h):
        i_r, i_z, i_n = (x @ w_ih.T + b_ih).chunk(3, -1)
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    return step


def _lstm_layer(w_ih, w_hh, b_ih, b_hh, xs):
    """A float64 LSTM layer over time-major ``xs [T, B, I]`` (batched: all samples have the
    same length), rows (i, f, g, o). Returns the retained states h_t and c_t."""
    T, B = xs.shape[:2]
    H = w_hh.shape[1]
    h = torch.zeros(B, H, dtype=torch.float64, requires_grad=True)  # so the states need grad
    c = torch.zeros(B, H, dtype=torch.float64, requires_grad=True)
    hs, cs = [], []
    for t in range(T):
        i, f, g, o = (xs[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        h.retain_grad()
        c.retain_grad()
        hs.append(h)
        cs.append(c)
    return hs, cs


def _p(module, name):
    return getattr(module, name).detach().double()


class Tagger(nn.Module):
    """A batch_first LSTM many-to-one regressor, as most projects write one."""

    def __init__(self, hidden=5, layers=1, dropout=0.0):
        super().__init__()
        self.lstm = nn.LSTM(3, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _batches(n_batches=4, B=6, T=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n_batches, B, T, 3, generator=g)
    return [(x, x[:, 1, :1].clone()) for x in xs]


# --------------------------------------------------------------------------- 1. validation


def _train_with_validation(folder, *, validate: str | None, steps=7, every=3):
    """Train on 4 rotating batches; after steps 0, 2, 4, 6 a validation pass on held-out data:
    ``validate="no_grad"`` (eval() + torch.no_grad(), the usual way), ``"eval_only"`` (eval()
    but grad enabled, a common slip), None (no validation). Returns the logged val losses."""
    torch.manual_seed(0)
    model = Tagger()
    train = _batches()
    xv, yv = _batches(1, B=5, T=11, seed=99)[0]
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    logged = {}
    with rd.record(folder, model, every=every, lyapunov=("init", "end"),
                   spectra=("init", "end"), lyapunov_steps=40) as rec:
        for step in range(steps):
            x, y = train[step % len(train)]
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=loss.item())
            if validate and step % 2 == 0:
                model.eval()
                if validate == "no_grad":
                    with torch.no_grad():
                        val = nn.functional.mse_loss(model(xv), yv).item()
                else:
                    val = nn.functional.mse_loss(model(xv), yv).item()
                model.train()
                rec.log(step, val_loss=val)
                logged[step] = val
    return logged, [p.detach().clone() for p in model.parameters()]


def test_validation_passes_are_not_steps_and_their_losses_are_curves(tmp_path):
    """Validation forwards are not backward passes: the recorded steps stay 0, every,
    2*every, the gradients at those steps are the ones of the same loop without validation
    (bitwise: validation does not touch the training), and ``curves`` hold each logged
    val_loss at its step. Right for the Lyapunov tape: it holds the *training* inputs, so the
    "end" exponents equal those of the loop without validation (the last forward of the loop
    below is a validation pass on other data, other batch and length)."""
    logged, params = _train_with_validation(tmp_path / "val", validate="no_grad")
    _, plain_params = _train_with_validation(tmp_path / "plain", validate=None)
    assert all(torch.equal(a, b) for a, b in zip(params, plain_params))

    grads = _table(tmp_path / "val", "gradients")
    plain = _table(tmp_path / "plain", "gradients")
    assert sorted(grads["step"].unique()) == [0, 3, 6]
    for step in (0, 3, 6):
        np.testing.assert_array_equal(_profile(grads, step, "total_mean"),
                                      _profile(plain, step, "total_mean"))
    assert grads["t"].max() == 7  # the training length, not the validation one (11)

    curves = _table(tmp_path / "val", "curves")
    assert curves["train_loss"].notna().sum() == 7
    val = curves.dropna(subset=["val_loss"]).set_index("step")["val_loss"]
    assert val.to_dict() == pytest.approx(logged) and sorted(logged) == [0, 2, 4, 6]
    row = pd.read_parquet(tmp_path / "val" / "trials.parquet").iloc[0]
    assert row["steps_run"] == 7 and row["val_loss"] == pytest.approx(logged[6])
    assert row["task.seq_len"] == 8

    lyap = _table(tmp_path / "val", "lyapunov").sort_values(["when", "index"])
    lyap_plain = _table(tmp_path / "plain", "lyapunov").sort_values(["when", "index"])
    np.testing.assert_array_equal(lyap["exponent"].to_numpy(), lyap_plain["exponent"].to_numpy())

    # the report reads a sparse val_loss (logged on its own rows) as the held-out curve
    run = load_run(tmp_path / "val")
    assert run.tables["curves"]["epoch"].max() == 6


def test_an_eval_mode_forward_with_grad_enabled_does_not_drive_the_lyapunov_tape(tmp_path):
    _train_with_validation(tmp_path / "val", validate="eval_only")
    _train_with_validation(tmp_path / "plain", validate=None)
    # steps and gradients are still right
    grads = _table(tmp_path / "val", "gradients")
    assert sorted(grads["step"].unique()) == [0, 3, 6]
    np.testing.assert_array_equal(
        _profile(grads, 6, "total_mean"),
        _profile(_table(tmp_path / "plain", "gradients"), 6, "total_mean"))
    lyap = _table(tmp_path / "val", "lyapunov").sort_values(["when", "index"])
    lyap_plain = _table(tmp_path / "plain", "lyapunov").sort_values(["when", "index"])
    np.testing.assert_allclose(lyap["exponent"].to_numpy(), lyap_plain["exponent"].to_numpy(),
                               rtol=1e-6)


# --------------------------------------------------------------------------- 2. accumulation


def test_gradient_accumulation_counts_backward_passes_not_optimizer_steps(tmp_path):
    """Two backward passes per optimizer step. Documented behaviour: a recorder *step* is a
    backward pass, so ``every=2`` records the first micro-batch of every optimizer step and
    the gradients are dated 0, 2, 4, 6 (backward passes) while ``steps_run`` is 8 for 4
    optimizer steps; a curve logged with the optimizer's step (what users write) is on another
    axis than the gradients, and nothing in the folder says which unit each table uses. Logged
    without a step (``rec.log(loss=...)``), the curve takes the last backward's step and
    agrees with the gradients."""
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = _batches(8, B=4)
    optimizer_steps, backwards_seen = 4, []
    with rd.record(tmp_path / "run", model, every=2, lyapunov=(),
                   spectra=("init", 2, "end")) as rec:
        for opt_step in range(optimizer_steps):
            opt.zero_grad()
            for micro in range(2):
                x, y = data[2 * opt_step + micro]
                (nn.functional.mse_loss(model(x), y) / 2).backward()
                backwards_seen.append(rec.step - 1)
            opt.step()
            rec.log(opt_step, loss=float(opt_step))  # the optimizer's step
            rec.log(loss_by_backward=float(opt_step))  # default step: the last backward's
    assert backwards_seen == list(range(8))
    grads = _table(tmp_path / "run", "gradients")
    assert sorted(grads["step"].unique()) == [0, 2, 4, 6]
    curves = _table(tmp_path / "run", "curves")
    assert curves.dropna(subset=["train_loss"])["step"].tolist() == [0, 1, 2, 3]
    assert curves.dropna(subset=["loss_by_backward"])["step"].tolist() == [1, 3, 5, 7]
    row = pd.read_parquet(tmp_path / "run" / "trials.parquet").iloc[0]
    assert row["steps_run"] == 8 and row["time_unit"] == "step"
    # the snapshot "at step 2" is after the 2nd backward pass, i.e. after optimizer step 0
    assert sorted(_table(tmp_path / "run", "spectra")["when"].unique()) == ["2", "end", "init"]
    settings = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["recordings"]
    assert settings["Tagger"]["every"] == 2


# --------------------------------------------------------------------------- 3. packed GRU


class PackedClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 6, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)
        return self.head(h_n[-1])


def _packed_reference(model: PackedClassifier, x, lengths, y) -> np.ndarray:
    """log10 ||dL/dh_t|| per sample, [T, B], NaN past each sample's length: every sample
    unrolled on its own in float64 to its own length, the loss on each one's last state."""
    gru = model.gru
    step = _gru_step(_p(gru, "weight_ih_l0"), _p(gru, "weight_hh_l0"), _p(gru, "bias_ih_l0"),
                     _p(gru, "bias_hh_l0"))
    T, B = x.shape[1], x.shape[0]
    states, finals = [], []
    for b in range(B):
        h, row = torch.zeros(6, dtype=torch.float64, requires_grad=True), []
        for t in range(int(lengths[b])):
            h = step(x[b, t].double(), h)
            h.retain_grad()
            row.append(h)
        states.append(row)
        finals.append(h)
    logits = torch.stack(finals) @ _p(model.head, "weight").T + _p(model.head, "bias")
    nn.functional.cross_entropy(logits, y).backward()
    out = np.full((T, B), np.nan)
    for b, row in enumerate(states):
        for t, h in enumerate(row):
            out[t, b] = h.grad.norm().log10().item()
    return out


def test_packed_variable_length_gru_matches_a_float64_unrolled_reference(tmp_path):
    """nn.GRU(batch_first=True) on a PackedSequence of lengths 9, 6, 4, 9, 3 (unsorted): at
    every t the recorded total_mean/min/max aggregate the samples still running at t only
    (t >= 6: the two samples of length 9), as a per-sample float64 unroll gives."""
    torch.manual_seed(0)
    model = PackedClassifier()
    lengths = torch.tensor([9, 6, 4, 9, 3])
    x = torch.randn(5, 9, 3)
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0  # padding, as a collate function leaves it
    y = torch.tensor([0, 1, 1, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    references = {}
    with rd.record(tmp_path / "run", model, every=1, lyapunov=("end",), lyapunov_steps=20) as rec:
        for step in range(3):
            references[step] = _packed_reference(model, x, lengths, y)
            loss = nn.functional.cross_entropy(model(x, lengths), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=loss)
    grads = _table(tmp_path / "run", "gradients")
    assert sorted(grads["step"].unique()) == [0, 1, 2]
    for step, ref in references.items():
        assert np.isfinite(ref[8, [0, 3]]).all() and np.isnan(ref[8, [1, 2, 4]]).all()
        for metric, agg in (("total_mean", np.nanmean), ("total_min", np.nanmin),
                            ("total_max", np.nanmax)):
            got = _profile(grads, step, metric)
            assert got.shape == (9,)
            np.testing.assert_allclose(got, agg(ref, axis=1), atol=2e-5, err_msg=metric)
    # beyond the shorter sequences: only samples 0 and 3 count
    late = _profile(grads, 2, "total_mean")[6:]
    np.testing.assert_allclose(late, references[2][6:, [0, 3]].mean(axis=1), atol=2e-5)
    row = pd.read_parquet(tmp_path / "run" / "trials.parquet").iloc[0]
    assert row["task.seq_len"] == 9 and row["model.cell"] == "gru"
    # the Lyapunov tape holds the samples to their own lengths (5 samples, 40 steps > 20 kept)
    lyap = _table(tmp_path / "run", "lyapunov")
    assert len(lyap) == 6 and np.isfinite(lyap["exponent"]).all()


# --------------------------------------------------------------------------- 4. dropout


def _dropout_run(folder, steps=5):
    torch.manual_seed(7)
    model = Tagger(hidden=4, layers=2, dropout=0.3)
    model.train()
    data = _batches(4, B=6, T=7, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    rec = (rd.record(folder, model, every=2, lyapunov=("init", 2, "end"), lyapunov_steps=30)
           if folder else None)
    references = {}
    for step in range(steps):
        idx = torch.randperm(4)[0]  # the user's RNG stream
        x, y = data[idx]
        rng = torch.get_rng_state()
        out = model(x)
        loss = nn.functional.mse_loss(out, y)
        opt.zero_grad()
        loss.backward()
        if step % 2 == 0:
            references[step] = _dropout_reference(model, x, y, rng, out)
        opt.step()
    if rec is not None:
        rec.close()
    return [p.detach().clone() for p in model.parameters()], torch.rand(3), references


def _dropout_reference(model: Tagger, x, y, rng, out) -> dict:
    """log10 ||dL/dh_t|| per layer, [T, B], of a float64 2-layer LSTM with the dropout mask
    the CPU kernel drew (``bernoulli_(1 - p)`` on layer 0's output [T, B, H], the first draw
    of the forward), re-drawn from the RNG state before the forward."""
    lstm, p = model.lstm, model.lstm.dropout
    xs = x.transpose(0, 1).double()
    T, B, H = xs.shape[0], xs.shape[1], lstm.hidden_size
    g = torch.Generator()
    g.set_state(rng)
    mask = torch.empty(T, B, H).bernoulli_(1 - p, generator=g).double() / (1 - p)
    h0, _ = _lstm_layer(_p(lstm, "weight_ih_l0"), _p(lstm, "weight_hh_l0"),
                        _p(lstm, "bias_ih_l0"), _p(lstm, "bias_hh_l0"), xs)
    h1, _ = _lstm_layer(_p(lstm, "weight_ih_l1"), _p(lstm, "weight_hh_l1"),
                        _p(lstm, "bias_ih_l1"), _p(lstm, "bias_hh_l1"),
                        torch.stack(h0) * mask)
    pred = h1[-1] @ _p(model.head, "weight").T + _p(model.head, "bias")
    # the mask is the one the model used: same output
    np.testing.assert_allclose(pred.detach().numpy(), out.detach().double().numpy(), atol=1e-5)
    nn.functional.mse_loss(pred, y.double()).backward()
    return {layer: np.stack([h.grad.norm(dim=1).log10().numpy() for h in hs])
            for layer, hs in ((0, h0), (1, h1))}


def test_dropout_between_lstm_layers_is_replayed_and_training_unchanged(tmp_path):
    """nn.LSTM(num_layers=2, dropout=0.3) in train mode: the parameters after 5 steps, and
    the user's next random numbers, are bitwise those of the loop without the recorder; both
    layers' recorded profiles match a float64 unroll with the very dropout mask drawn."""
    plain, plain_next, _ = _dropout_run(None)
    recorded, recorded_next, references = _dropout_run(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded))
    assert torch.equal(plain_next, recorded_next)
    grads = _table(tmp_path / "run", "gradients")
    assert sorted(grads["step"].unique()) == [0, 2, 4]
    assert sorted(grads["layer"].unique()) == [0, 1]
    assert set(grads["state"]) == {"h", "c"}
    for step, ref in references.items():
        for layer in (0, 1):
            np.testing.assert_allclose(_profile(grads, step, "total_mean", layer=layer),
                                       ref[layer].mean(axis=1), atol=2e-5,
                                       err_msg=f"step {step} layer {layer}")
    lyap = _table(tmp_path / "run", "lyapunov")
    assert sorted(lyap["when"].unique()) == ["2", "end", "init"]
    assert sorted(lyap["layer"].unique()) == [0, 1]
    row = pd.read_parquet(tmp_path / "run" / "trials.parquet").iloc[0]
    assert row["model.num_layers"] == 2


# --------------------------------------------------------------------------- 5. siamese


class Siamese(nn.Module):
    """One LSTM encodes both sequences of a pair; a head scores their distance."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 1)

    def forward(self, a, b):
        _, (ha, _) = self.encoder(a)
        _, (hb, _) = self.encoder(b)
        return self.head((ha[-1] - hb[-1]).abs())


def _siamese_reference(model: Siamese, a, b, y) -> np.ndarray:
    """log10 ||dL/dh_t|| of both calls, [Ta + Tb, B], float64."""
    enc = model.encoder
    w = [_p(enc, n) for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    ha, _ = _lstm_layer(*w, a.transpose(0, 1).double())
    hb, _ = _lstm_layer(*w, b.transpose(0, 1).double())
    pred = (ha[-1] - hb[-1]).abs() @ _p(model.head, "weight").T + _p(model.head, "bias")
    nn.functional.mse_loss(pred, y.double()).backward()
    return np.stack([h.grad.norm(dim=1).log10().numpy() for h in ha + hb])


def test_a_module_called_twice_per_step_gives_one_series_in_call_order(tmp_path):
    """Two sequences (lengths 6 and 9) through one LSTM, losses joined: as the Probe documents,
    the calls of one module in one backward form one series in call order, 6 + 9 = 15 steps,
    with a ProbeWarning saying so; the values are each call's own gradients."""
    torch.manual_seed(0)
    model = Siamese()
    a, b, y = torch.randn(4, 6, 3), torch.randn(4, 9, 3), torch.ones(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    references = {}
    with (pytest.warns(rd.ProbeWarning, match="several separate sequences") as caught,
          rd.record(tmp_path / "run", model, every=1, lyapunov=()) as rec):
        for step in range(2):
            references[step] = _siamese_reference(model, a, b, y)
            loss = nn.functional.mse_loss(model(a, b), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=loss)
    assert sum("several separate sequences" in str(w.message) for w in caught) == 1
    assert "'encoder'" in next(str(w.message) for w in caught
                               if "several separate" in str(w.message))
    assert rec.trial_ids == {"encoder": "Siamese"}
    grads = _table(tmp_path / "run", "gradients")
    for step, ref in references.items():
        got = _profile(grads, step, "total_mean")
        assert got.shape == (15,)
        np.testing.assert_allclose(got, ref.mean(axis=1), atol=2e-5)
    row = pd.read_parquet(tmp_path / "run" / "trials.parquet").iloc[0]
    assert row["task.seq_len"] == 15 and row["recording.module"] == "encoder"


def test_the_folder_says_that_a_series_joins_separate_sequences(tmp_path):
    torch.manual_seed(0)
    model = Siamese()
    a, b, y = torch.randn(4, 6, 3), torch.randn(4, 9, 3), torch.ones(4, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rd.ProbeWarning)
        with rd.record(tmp_path / "run", model, every=1, lyapunov=()):
            nn.functional.mse_loss(model(a, b), y).backward()
    run = load_run(tmp_path / "run")
    text = json.dumps(run.manifest) + run.trials.to_json()
    assert "separate sequences" in text


# --------------------------------------------------------------------------- 6. a crash


def test_a_crash_after_a_flush_leaves_a_failed_run_that_the_report_renders(tmp_path):
    """The loop raises on step k=3 (a bad batch in the forward) after the folder was flushed:
    the folder loads with status "failed", the error names the exception, the gradients hold
    steps 0..2, the curves what was logged, and `rnn-diag report` renders it with exit 0."""
    torch.manual_seed(0)
    model = Tagger()
    data = _batches(5)
    data[3] = (torch.randn(6, 8, 4), data[3][1])  # 4 features instead of 3
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    folder = tmp_path / "run"
    with (pytest.raises(RuntimeError, match="input.size"),
          rd.record(folder, model, every=1, flush_seconds=0, lyapunov_steps=20) as rec):
        for step, (x, y) in enumerate(data):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=loss.item())  # flushes (flush_seconds=0)
            if step == 2:  # what a crash would leave: the last flush
                flushed = load_run(folder)
                assert flushed.trials.iloc[0]["status"] == "running"
                assert sorted(flushed.tables["gradients"]["epoch"].unique()) == [0, 1, 2]
    run = load_run(folder)
    row = run.trials.iloc[0]
    assert row["status"] == "failed"
    assert row["error"].startswith("RuntimeError") and "after step 2" in row["error"]
    assert sorted(run.tables["gradients"]["epoch"].unique()) == [0, 1, 2]
    assert row["epochs_run"] == 3
    assert run.manifest["ended"] is not None
    # a failed run takes no "end" snapshot; the "init" one is there
    assert sorted(run.tables["spectra"]["when"].unique()) == ["init"]

    result = CliRunner().invoke(main, ["report", str(folder), "--jobs", "1", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    html = (folder / "index.html").read_text(encoding="utf-8")
    assert "failed" in html and "RuntimeError" in html


# --------------------------------------------------------------------------- 7. resume


def _resumable_loop(folder, model, opt, steps, *, every, start=0, resume=False, crash_at=None,
                    checkpoint_at=None):
    x = _batches(1, B=4, T=6, seed=5)[0][0]
    checkpoint = None
    rec = rd.record(folder, model, every=every, name="lstm", resume=resume, start_step=start,
                    lyapunov=("init", "end"), spectra=("init", "end"), lyapunov_steps=20)
    try:
        with rec:
            for step in range(start, start + steps):
                loss = model(x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.log(step, loss=loss.item())
                if step == checkpoint_at:
                    checkpoint = ({k: v.clone() for k, v in model.state_dict().items()},
                                  opt.state_dict())
                if step == crash_at:
                    raise KeyboardInterrupt  # preempted
    except KeyboardInterrupt:
        pass
    return rec, checkpoint


def _restart(checkpoint):
    model = Tagger()
    model.load_state_dict(checkpoint[0])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt.load_state_dict(checkpoint[1])
    return model, opt


def test_resume_continues_a_recording_after_a_restart(tmp_path):
    """Steps 0..5 recorded (every=2), the process ends; a new process builds a new model from
    the checkpoint and records steps 6..9 into the same folder and name with resume=True,
    start_step=6: the gradients hold 0, 2, 4 then 6, 8, each once; the curves 0..9 once; the
    "init" snapshot is the first half's, not taken again."""
    folder = tmp_path / "run"
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first, checkpoint = _resumable_loop(folder, model, opt, 6, every=2, crash_at=5,
                                        checkpoint_at=5)
    init_spectra = _table(folder, "spectra")
    init_spectra = init_spectra[init_spectra["when"] == "init"]
    model, opt = _restart(checkpoint)
    second, _ = _resumable_loop(folder, model, opt, 4, every=2, start=6, resume=True)
    run = load_run(folder)
    assert list(run.trials["id"]) == ["lstm"] and run.trials.iloc[0]["status"] == "ok"
    assert run.trials.iloc[0]["epochs_run"] == 10
    grads = run.tables["gradients"]
    per_step = grads.groupby("epoch").size()
    assert per_step.index.tolist() == [0, 2, 4, 6, 8]
    assert per_step.nunique() == 1  # no step twice
    assert run.tables["curves"]["epoch"].tolist() == list(range(10))
    spectra = run.tables["spectra"]
    assert (spectra["when"] == "init").sum() == len(init_spectra)
    np.testing.assert_array_equal(spectra[spectra["when"] == "init"]["modulus"],
                                  init_spectra["modulus"])
    summaries = run.tables["summaries"]
    assert summaries["epoch"].tolist() == [0, 2, 4, 6, 8]


def test_resume_keeps_the_every_grid(tmp_path):
    folder = tmp_path / "run"
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    _, checkpoint = _resumable_loop(folder, model, opt, 5, every=3, checkpoint_at=4)
    model, opt = _restart(checkpoint)
    _resumable_loop(folder, model, opt, 5, every=3, start=5, resume=True)
    assert sorted(_table(folder, "gradients")["step"].unique()) == [0, 3, 6, 9]


def test_resume_after_a_crash_past_the_checkpoint_has_no_duplicate_steps(tmp_path):
    folder = tmp_path / "run"
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    _, checkpoint = _resumable_loop(folder, model, opt, 8, every=1, crash_at=6, checkpoint_at=4)
    model, opt = _restart(checkpoint)
    _resumable_loop(folder, model, opt, 4, every=1, start=5, resume=True)
    grads = _table(folder, "gradients")
    assert grads.groupby("step").size().nunique() == 1, grads.groupby("step").size().to_dict()
    assert _table(folder, "curves")["step"].tolist() == list(range(9))
    assert _table(folder, "summaries")["step"].is_unique


def test_resume_of_a_finished_recording_has_one_end_snapshot(tmp_path):
    """Continuing a recording that was closed normally (train 4 steps, then 4 more): the
    "end" snapshot is the second close's only (trials.parquet's *_end read it); the first
    one is kept as the snapshot of the step it was taken at."""
    folder = tmp_path / "run"
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    _, checkpoint = _resumable_loop(folder, model, opt, 4, every=1, checkpoint_at=3)
    model, opt = _restart(checkpoint)
    first_end = _table(folder, "spectra")
    first_end = first_end[first_end["when"] == "end"]
    _resumable_loop(folder, model, opt, 4, every=1, start=4, resume=True)
    spectra = _table(folder, "spectra")
    # the first close's "end" is now the snapshot of step 4; one "end": the second close's
    assert sorted(spectra["when"].unique()) == ["4", "end", "init"]
    assert len(spectra[spectra["when"] == "end"]) == len(first_end)
    np.testing.assert_array_equal(spectra[spectra["when"] == "4"]["modulus"],
                                  first_end["modulus"])
    lyap = _table(folder, "lyapunov")
    assert sorted(lyap["when"].unique()) == ["4", "end", "init"]
    assert lyap.groupby("when").size().nunique() == 1
    w = model.lstm.weight_hh_l0.detach().double().numpy()
    radius = max(np.abs(np.linalg.eigvals(w[i * 5:(i + 1) * 5])).max() for i in range(4))
    row = pd.read_parquet(folder / "trials.parquet").iloc[0]
    assert row["spectral_radius_end"] == pytest.approx(radius, rel=1e-6)


# --------------------------------------------------------------------------- 8. two processes

_WRITER = textwrap.dedent("""
    import sys, torch, rnn_diag as rd
    folder, name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rnn = torch.nn.GRU(2, 3, batch_first=True)
    opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
    with rd.record(folder, rnn, every=1, name=name, flush_seconds=0, lyapunov=()) as rec:
        for step in range(12):
            out, _ = rnn(torch.randn(2, 4, 2))
            loss = out.pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            rec.log(step, loss=loss.item())
""")


def test_two_processes_record_into_one_folder_at_once(tmp_path):
    """Two recorders in two processes, flushing at every step into one folder: both trials
    end up in trials.parquet (each re-reads it under the lock), config.yaml and the manifest
    list both, and every step of both is in its gradients."""
    folder = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), name, str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, name in enumerate(("alpha", "beta"))]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    run = load_run(folder)
    assert sorted(run.trials["id"]) == ["alpha", "beta"]
    assert (run.trials["status"] == "ok").all() and (run.trials["epochs_run"] == 12).all()
    assert run.config["sweep"] == {"recording.name": ["alpha", "beta"]}
    assert sorted(run.config["recordings"]) == ["alpha", "beta"]
    assert sorted(run.manifest["recordings"]) == ["alpha", "beta"]
    assert run.manifest["ended"] is not None
    steps = run.tables["gradients"].groupby("trial")["epoch"].nunique()
    assert steps.to_dict() == {"alpha": 12, "beta": 12}
    curves = run.tables["curves"].groupby("trial")["epoch"].apply(list)
    assert curves.to_dict() == {"alpha": list(range(12)), "beta": list(range(12))}
    assert not [p for p in folder.rglob("*.tmp")]


# --------------------------------------------------------------------------- 9. cost


def test_nothing_is_kept_between_recorded_steps(tmp_path):
    """every=1000 over 20 steps: step 0 is recorded; after the flush the probe's history stays
    empty through the 19 unrecorded steps, nothing holds a batch's graph, and a plain
    nn.LSTM gives no ProbeWarning."""
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = _batches(20, B=4, T=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with rd.record(tmp_path / "run", model, every=1000, lyapunov=("init", "end"),
                       lyapunov_steps=20) as rec:
            outputs = []
            for step, (x, y) in enumerate(data):
                pred = model(x)
                loss = nn.functional.mse_loss(pred, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.log(step, loss=loss.item())
                if step == 0:
                    assert set(rec.probe.frame()["iteration"]) == {0}
                    rec.flush()
                outputs.append(weakref.ref(pred))
                del pred, loss
                assert rec.probe.frame().empty, f"rows kept after step {step}"
            rec.flush()
            assert rec.probe.frame().empty
            assert rec.step == 20
            assert all(ref() is None for ref in outputs)  # no graph kept alive
    grads = _table(tmp_path / "run", "gradients")
    assert sorted(grads["step"].unique()) == [0]
    assert _table(tmp_path / "run", "curves")["step"].tolist() == list(range(20))
