"""The Lightning callback with a real Trainer on CPU: logged metrics, the run folder, and a fit
resumed from a checkpoint that continues the series."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning")
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from rnn_diag.integrations.lightning import GradientFlowMonitor  # noqa: E402
from rnn_diag.probes.summaries import summarise_frame  # noqa: E402
from rnn_diag.report.run_data import load_run  # noqa: E402

TAG = "rnn_diag/lstm/layer{}/{}"


class TinyLSTM(LightningModule):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 15, 3, generator=g)
    return DataLoader(TensorDataset(x, x[:, 3, :1].clone()), batch_size=8)


def _trainer(tmp_path, max_steps, callbacks, version=0):
    return Trainer(max_steps=max_steps, callbacks=callbacks, accelerator="cpu", devices=1,
                   logger=CSVLogger(tmp_path / "logs", name="csv", version=version),
                   enable_progress_bar=False, enable_model_summary=False,
                   limit_val_batches=2, val_check_interval=4, num_sanity_val_steps=0,
                   default_root_dir=tmp_path)


def _metrics(tmp_path, version=0) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "logs" / "csv" / f"version_{version}" / "metrics.csv")


def test_fit_logs_every_n_steps_and_writes_a_run_folder(tmp_path):
    torch.manual_seed(0)
    monitor = GradientFlowMonitor(every_n_steps=3, run_dir=tmp_path / "run", lyapunov=("end",))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        _trainer(tmp_path, 7, [monitor]).fit(TinyLSTM(), _loader(), _loader())
    assert monitor.recorded_steps == [0, 3, 6]
    metrics = _metrics(tmp_path)
    rows = metrics.dropna(subset=[TAG.format(1, "horizon")])
    assert rows["step"].tolist() == [0, 3, 6]
    # what was logged is the summary of what the run folder stored for that step
    run = load_run(tmp_path / "run")
    grads = run.tables["gradients"]
    assert sorted(grads["epoch"].unique()) == [0, 3, 6]
    for step in (0, 3, 6):
        frame = grads[grads.epoch == step].assign(module="lstm")
        expected = summarise_frame(frame, by=("layer", "direction"))
        logged = rows[rows.step == step].iloc[0]
        for layer in (0, 1):
            e = expected[expected.layer == layer].iloc[0]
            assert logged[TAG.format(layer, "horizon")] == e["horizon"]
            assert logged[TAG.format(layer, "decay_per_step")] == pytest.approx(
                e["decay_per_step"], rel=1e-6)
            assert logged[TAG.format(layer, "steps")] == 15
    trial = run.trials.iloc[0]
    assert trial["status"] == "ok" and trial["id"] == "TinyLSTM"
    curves = run.tables["curves"]
    assert curves["train_loss"].notna().sum() == 7 and curves["val_loss"].notna().any()
    assert set(run.tables["lyapunov"]["when"]) == {"end"}


def test_resumed_fit_continues_the_series(tmp_path):
    torch.manual_seed(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=4)
    first = GradientFlowMonitor(every_n_steps=2, run_dir=tmp_path / "run", lyapunov=())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        _trainer(tmp_path, 4, [first, ckpt]).fit(TinyLSTM(), _loader(), _loader())
        assert first.recorded_steps == [0, 2]
        second = GradientFlowMonitor(every_n_steps=2, run_dir=tmp_path / "run", lyapunov=())
        _trainer(tmp_path, 8, [second], version=1).fit(
            TinyLSTM(), _loader(), _loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert second.recorded_steps == [0, 2, 4, 6]
    assert [s["step"] for s in second.summaries if s["layer"] == 1] == [0, 2, 4, 6]
    run = load_run(tmp_path / "run")
    grads = run.tables["gradients"]
    assert sorted(grads["epoch"].unique()) == [0, 2, 4, 6]
    assert not grads.duplicated(["epoch", "layer", "direction", "state", "t", "metric"]).any()
    spectra = run.tables["spectra"]
    # init taken once; the first fit's end is kept as the snapshot of step 4
    assert sorted(spectra["when"].unique()) == ["4", "end", "init"]
    assert spectra.groupby("when").size().nunique() == 1
    rows = _metrics(tmp_path, 1).dropna(subset=[TAG.format(0, "horizon")])
    assert rows["step"].tolist() == [4, 6]


def test_values_are_unscaled_by_the_loss_scale(tmp_path, monkeypatch):
    """Under a gradient scaler every ∂L/∂h_t is S times too large; the callback takes log10 S
    off the gradient metrics (and leaves the Jacobian norms, which do not scale, alone)."""
    import rnn_diag.integrations.lightning as module

    def run(scale):
        monkeypatch.setattr(module, "loss_scale", lambda trainer: scale)
        torch.manual_seed(0)
        monitor = GradientFlowMonitor(every_n_steps=2, run_dir=tmp_path / f"run{scale}",
                                      spectra=(), lyapunov=())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            _trainer(tmp_path, 1, [monitor], version=int(scale)).fit(TinyLSTM(), _loader())
        return load_run(tmp_path / f"run{scale}").tables["gradients"]

    plain, scaled = run(1.0), run(1024.0)
    key = ["layer", "state", "t", "metric"]
    merged = plain.merge(scaled, on=key, suffixes=("_plain", "_scaled"))
    grad = merged.metric.str.startswith(("total", "immediate"))
    diff = merged.value_plain - merged.value_scaled
    np.testing.assert_allclose(diff[grad & np.isfinite(diff)], math.log10(1024.0), atol=1e-9)
    np.testing.assert_allclose(diff[merged.metric.str.startswith("jacobian")], 0.0, atol=1e-12)


def test_a_module_without_recurrent_layers_is_refused_at_setup(tmp_path):
    class Dense(TinyLSTM):
        def __init__(self):
            super().__init__()
            self.lstm = nn.Identity()

        def forward(self, x):
            return self.head(x[:, -1, :1].repeat(1, 8))

    with pytest.raises(ValueError, match="no recurrent module"):
        _trainer(tmp_path, 1, [GradientFlowMonitor()]).fit(Dense(), _loader())


def test_bf16_autocast_steps_are_not_recorded_and_said(tmp_path):
    monitor = GradientFlowMonitor(every_n_steps=1)
    trainer = Trainer(max_steps=2, callbacks=[monitor], accelerator="cpu", devices=1,
                      precision="bf16-mixed", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyLSTM(), _loader())
    messages = " ".join(str(w.message) for w in caught)
    assert "autocast" in messages and "nothing was recorded at step 0" in messages
    assert monitor.recorded_steps == []


def test_tensorboard_logger_gets_scalars_and_figures(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    logger = TensorBoardLogger(tmp_path / "tb", name="", version="v")
    trainer = Trainer(max_steps=5, callbacks=[GradientFlowMonitor(every_n_steps=2)],
                      accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(TinyLSTM(), _loader())
    events = EventAccumulator(str(tmp_path / "tb" / "v")).Reload()
    horizon = events.Scalars(TAG.format(1, "horizon"))
    assert [e.step for e in horizon] == [0, 2, 4]
    assert all(e.value >= 0 for e in horizon)
    images = events.Tags()["images"]
    assert "rnn_diag/lstm/profile" in images and "rnn_diag/lstm/layer1/heatmap" in images
