"""rd.record: a user's own training loop recorded into a run folder that the report reads.

References are independent of rnn_diag: an explicitly unrolled float64 Elman RNN for the
gradients, numpy for the spectra, and theory (a near-linear contraction) for the exponents.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import rnn_diag as rd
from rnn_diag.report.page import render_report
from rnn_diag.report.run_data import load_run


class Net(nn.Module):
    """A many-to-one model as projects write it: batch_first RNN, a head on the last step."""

    def __init__(self, cell=nn.RNN, hidden=6):
        super().__init__()
        self.rnn = cell(3, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _data(n=16, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 3, generator=g)
    return x, x[:, 2, :1].clone()


def _reference_log10_norms(net: Net, x, y) -> np.ndarray:
    """log10‖∂L/∂h_t‖ per sample, [T, B], from a float64 unrolled copy of ``net``."""
    rnn = net.rnn
    w_ih, w_hh = rnn.weight_ih_l0.detach().double(), rnn.weight_hh_l0.detach().double()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().double()
    xs = x.double()
    h = torch.zeros(x.shape[0], w_hh.shape[0], dtype=torch.float64, requires_grad=True)
    states = []
    for t in range(x.shape[1]):
        h = torch.tanh(xs[:, t] @ w_ih.T + h @ w_hh.T + b)
        h.retain_grad()
        states.append(h)
    out = h @ net.head.weight.detach().double().T + net.head.bias.detach().double()
    nn.functional.mse_loss(out, y.double()).backward()
    return np.stack([s.grad.norm(dim=1).log10().numpy() for s in states])


def _train(net, folder, steps=7, every=3, lr=0.05, **kwargs):
    x, y = _data()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    references = {}
    with rd.record(folder, net, every=every, **kwargs) as rec:
        for step in range(steps):
            if step % every == 0:
                references[step] = _reference_log10_norms(net, x, y)
            loss = nn.functional.mse_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=loss, val_loss=loss.item() * 2)
    return rec, references


def test_recorded_gradients_match_an_unrolled_float64_reference(tmp_path):
    torch.manual_seed(0)
    net = Net()
    rec, references = _train(net, tmp_path / "run", lyapunov=())
    grads = pd.read_parquet(tmp_path / "run" / "gradients")
    assert sorted(grads["step"].unique()) == [0, 3, 6] == sorted(references)
    for step, ref in references.items():
        rows = grads[(grads.step == step) & (grads.metric == "total_mean") & (grads.state == "h")]
        got = rows.sort_values("t")["value"].to_numpy()
        np.testing.assert_allclose(got, ref.mean(axis=1), atol=2e-5)
        rows = grads[(grads.step == step) & (grads.metric == "total_min")]
        np.testing.assert_allclose(rows.sort_values("t")["value"], ref.min(axis=1), atol=2e-5)
    # the summaries are gradient_summary of those very profiles
    summaries = pd.read_parquet(tmp_path / "run" / "summaries")
    last = summaries[summaries.step == 6].iloc[0]
    expected = rd.gradient_summary(references[6].mean(axis=1))
    assert last["horizon"] == expected["horizon"]
    assert last["decay_per_step"] == pytest.approx(expected["decay_per_step"], abs=1e-5)


def test_curves_spectra_and_trial_row(tmp_path):
    torch.manual_seed(1)
    net = Net()
    w0 = net.rnn.weight_hh_l0.detach().double().numpy().copy()
    _train(net, tmp_path / "run", spectra=("init", 3, "end"), lyapunov=())
    w1 = net.rnn.weight_hh_l0.detach().double().numpy()
    curves = pd.read_parquet(tmp_path / "run" / "curves")
    assert curves["step"].tolist() == list(range(7))
    assert (curves["val_loss"] == 2 * curves["train_loss"]).all()  # loss= is train_loss
    spectra = pd.read_parquet(tmp_path / "run" / "spectra")
    assert sorted(spectra["when"].unique()) == ["3", "end", "init"]
    for when, w in (("init", w0), ("end", w1)):
        part = spectra[spectra["when"] == when].sort_values("index")
        np.testing.assert_allclose(part["modulus"], np.sort(np.abs(np.linalg.eigvals(w)))[::-1],
                                   rtol=1e-6)
        np.testing.assert_allclose(part["singular_value"], np.linalg.svd(w)[1], rtol=1e-6)
    row = pd.read_parquet(tmp_path / "run" / "trials.parquet").iloc[0]
    assert row["id"] == "Net" and row["status"] == "ok" and row["time_unit"] == "step"
    assert row["steps_run"] == 7 and row["task.seq_len"] == 12 and row["model.cell"] == "rnn"
    assert row["spectral_radius_init"] == pytest.approx(np.abs(np.linalg.eigvals(w0)).max())


def test_lyapunov_of_a_near_linear_contraction_is_log_of_its_factor(tmp_path):
    """h_t = tanh(0.5 h_{t-1} + tiny input): every exponent is ln 0.5 (tanh' ≈ 1 near 0)."""
    net = Net(hidden=4)
    with torch.no_grad():
        net.rnn.weight_hh_l0.copy_(0.5 * torch.eye(4))
        net.rnn.weight_ih_l0.mul_(1e-4)
        net.rnn.bias_ih_l0.zero_()
        net.rnn.bias_hh_l0.zero_()
    x, y = _data(n=64)
    with rd.record(tmp_path / "run", net, every=1, lyapunov=("init",), spectra=()) as rec:
        nn.functional.mse_loss(net(x), y).backward()
    lyap = pd.read_parquet(tmp_path / "run" / "lyapunov")
    assert len(lyap) == 4 and (lyap["when"] == "init").all()
    np.testing.assert_allclose(lyap["exponent"], math.log(0.5), atol=1e-4)
    assert rec.trial_ids == {"rnn": "Net"}


def test_training_is_unchanged_by_the_recorder(tmp_path):
    """Same seed, same loop: the parameters after training are bitwise the same with and
    without the recorder, snapshots included (they must not draw from the user's RNG)."""

    def run(folder):
        torch.manual_seed(3)
        net = Net(cell=nn.GRU)
        x, y = _data()
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        rec = rd.record(folder, net, every=2, lyapunov=("init", 2, "end")) if folder else None
        for _ in range(5):
            idx = torch.randperm(16)[:8]  # the user's RNG stream
            loss = nn.functional.mse_loss(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if rec is not None:
            rec.close()
        return [p.detach().clone() for p in net.parameters()], torch.rand(1)

    plain, plain_next = run(None)
    recorded, recorded_next = run(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded))
    assert torch.equal(plain_next, recorded_next)
    lyap = pd.read_parquet(tmp_path / "run" / "lyapunov")
    assert sorted(lyap["when"].unique()) == ["2", "end", "init"]


def test_an_exception_or_ctrl_c_leaves_a_readable_folder(tmp_path):
    torch.manual_seed(0)
    net = Net()
    x, y = _data()
    for folder, error, status in ((tmp_path / "a", RuntimeError("boom"), "failed"),
                                  (tmp_path / "b", KeyboardInterrupt(), "interrupted")):
        with pytest.raises(type(error)), rd.record(folder, net, every=1, lyapunov=()):
            for step in range(3):
                nn.functional.mse_loss(net(x), y).backward()
                if step == 1:
                    raise error
        run = load_run(folder)
        row = run.trials.iloc[0]
        assert row["status"] == status and "after step 1" in row["error"]
        assert sorted(run.tables["gradients"]["epoch"].unique()) == [0, 1]
    assert "boom" in load_run(tmp_path / "a").trials.iloc[0]["error"]


def test_a_killed_process_leaves_the_last_flush(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, torch, rnn_diag as rd
        rnn = torch.nn.RNN(2, 4)
        rec = rd.record({str(tmp_path / "run")!r}, rnn, every=1, flush_seconds=0, lyapunov=())
        for step in range(3):
            out, _ = rnn(torch.randn(5, 2, 2))
            out.sum().backward()
            rec.log(step, loss=float(step))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    run = load_run(tmp_path / "run")
    assert run.trials.iloc[0]["status"] == "running"
    assert sorted(run.tables["gradients"]["epoch"].unique()) == [0, 1, 2]
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


def test_unclosed_recorder_is_closed_at_exit(tmp_path):
    script = textwrap.dedent(f"""
        import torch, rnn_diag as rd
        rnn = torch.nn.GRU(2, 4)
        rec = rd.record({str(tmp_path / "run")!r}, rnn, every=1, lyapunov=())
        out, _ = rnn(torch.randn(5, 2, 2))
        out.sum().backward()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    row = load_run(tmp_path / "run").trials.iloc[0]
    assert row["status"] == "unfinished" and "close" in row["error"]


def test_two_recordings_and_two_modules_share_one_folder_and_report(tmp_path):
    class EncoderDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.GRU(3, 5, batch_first=True)
            self.decoder = nn.GRUCell(1, 5)
            self.head = nn.Linear(5, 1)

        def forward(self, x, steps=4):
            _, h = self.encoder(x)
            h, y, outs = h[0], torch.zeros(x.shape[0], 1), []
            for _ in range(steps):
                h = self.decoder(y, h)
                y = self.head(h)
                outs.append(y)
            return torch.cat(outs, 1)

    torch.manual_seed(0)
    folder = tmp_path / "run"
    x = torch.randn(8, 10, 3)
    for name in ("small_lr", "big_lr"):
        model = EncoderDecoder()
        opt = torch.optim.SGD(model.parameters(), lr=0.01 if name == "small_lr" else 0.5)
        with rd.record(folder, model, every=2, name=name, lyapunov=("end",)) as rec:
            for step in range(4):
                loss = model(x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.log(step, loss=loss.item())
        assert rec.trial_ids == {"encoder": f"{name}--encoder", "decoder": f"{name}--decoder"}
    run = load_run(folder)
    assert sorted(run.trials["id"]) == ["big_lr--decoder", "big_lr--encoder",
                                        "small_lr--decoder", "small_lr--encoder"]
    assert set(run.swept) == {"recording.name", "recording.module"}
    assert (run.trials["status"] == "ok").all()
    # the decoder's series: 4 one-step calls per forward
    grads = run.tables["gradients"]
    assert grads[grads.trial == "big_lr--decoder"]["t"].max() == 3
    lyap = run.tables["lyapunov"]
    assert set(lyap["trial"]) == set(run.trials["id"])
    rendered = render_report(run, jobs=1)
    assert not rendered.errors, [s.error for s in rendered.errors]
    html = rendered.html
    assert "chance" not in html.lower() and "Next-step prediction" not in html
    assert "last recorded step" in html and "epoch" not in html.split("config.yaml")[0].lower()
    assert any("horizon" in f.text and "between step 0 and step 2" in f.text
               for f in rendered.findings)


def test_custom_cells_are_recorded_and_their_missing_snapshots_said(tmp_path):
    class MyCell(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 4)

        def forward(self, x, h):
            return torch.tanh(self.lin(torch.cat([x, h], -1)))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = MyCell()

        def forward(self, x):
            h = torch.zeros(x.shape[1], 4)
            for t in range(x.shape[0]):
                h = self.cell(x[t], h)
            return h

    model = Model()
    with pytest.warns(rd.ProbeWarning, match="custom cell"):
        rec = rd.record(tmp_path / "run", model, modules=["cell"], every=1)
    with rec:
        model(torch.randn(7, 3, 2)).sum().backward()
    run = load_run(tmp_path / "run")
    assert run.trials.iloc[0]["model.cell"] == "custom"
    assert "custom cell" in run.trials.iloc[0]["warnings"]  # kept beyond the terminal
    assert run.tables["gradients"]["t"].max() == 6 and run.tables["spectra"].empty


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    rnn = nn.RNN(2, 3)
    with pytest.raises(ValueError, match="spectra"):
        rd.record(tmp_path / "a", rnn, spectra=("start",))
    with pytest.raises(ValueError, match="every"):
        rd.record(tmp_path / "b", rnn, every=0)
    with pytest.raises(ValueError, match="no recurrent module"):
        rd.record(tmp_path / "c", nn.Linear(2, 2))
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "abc")


def test_recording_costs_nothing_between_recorded_steps(tmp_path):
    """Not a timing: between recorded steps the probe adds no rows and keeps no calls."""
    rnn = nn.LSTM(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on a plain model
        with rd.record(tmp_path / "run", rnn, every=5, lyapunov=()) as rec:
            for _ in range(12):
                out, _ = rnn(torch.randn(6, 3, 2))
                out.sum().backward()
            rec.flush()
            assert rec.probe.frame().empty  # taken into the recorder
    grads = pd.read_parquet(tmp_path / "run" / "gradients")
    assert sorted(grads["step"].unique()) == [0, 5, 10]


def test_probe_warnings_are_kept_in_the_folder_and_named_by_the_report(tmp_path):
    """Two separate sequences through one GRU in one backward: the probe warns, and the
    warning must outlive the terminal: in trials.parquet and in the report's findings."""
    gru = nn.GRU(3, 4)
    with pytest.warns(rd.ProbeWarning, match="separate sequences"), \
            rd.record(tmp_path / "run", gru, every=1, lyapunov=(), spectra=()):
        a, _ = gru(torch.randn(5, 2, 3))
        b, _ = gru(torch.randn(6, 2, 3))
        (a[-1].sum() + b[-1].sum()).backward()
    run = load_run(tmp_path / "run")
    assert "separate sequences" in run.trials.iloc[0]["warnings"]
    findings = render_report(run, jobs=1).findings
    assert any("separate sequences" in f.text and f.key == "trials" for f in findings)


@pytest.mark.parametrize("losses, status, words", [
    ([1.0, 2.0, 5e3, 1e5, 4e5, 4.9e5], "diverged", ["4.9e+05 at step 5", "limit 100"]),
    ([1.0, 1e4, 0.9, 0.8, 0.7, 0.6], "ok", []),          # one spike that recovers
    ([1.0, 0.5, 0.4, 0.3, float("nan")], "diverged", ["nan", "step 4"]),
])
def test_a_loss_that_blew_up_and_stayed_there_is_diverged(tmp_path, losses, status, words):
    rnn = nn.RNN(2, 3)
    with rd.record(tmp_path / "run", rnn, every=1, lyapunov=(), spectra=()) as rec:
        for step, loss in enumerate(losses):
            out, _ = rnn(torch.randn(4, 2, 2))
            out.sum().backward()
            rec.log(step, loss=loss)
    run = load_run(tmp_path / "run")
    row = run.trials.iloc[0]
    assert row["status"] == status
    assert all(w in str(row["error"]) for w in words), row["error"]
    assert len(run.tables["curves"]) == len(losses)  # the spike stays visible
    assert len(run.tables["gradients"]) > 0  # a diverged recording keeps its tables
