"""A real Lightning checkpoint: fit a tiny LightningModule holding an nn.LSTM for one epoch on
the CPU, then inspect the .ckpt the trainer wrote. Lightning's checkpoints (plain containers,
tensors and the hyper-parameters saved with save_hyperparameters) load with
torch.load(weights_only=True) in this torch."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from rnn_diag.inspect.command import inspect

L = pytest.importorskip("lightning")


class LitLSTM(L.LightningModule):
    def __init__(self, hidden_size: int = 6):
        super().__init__()
        self.save_hyperparameters()
        self.lstm = nn.LSTM(3, hidden_size, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        out, _ = self.lstm(x)
        return nn.functional.mse_loss(self.head(out[:, -1]), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def lightning_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 5, 3), torch.randn(16, 1))
    model = LitLSTM()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, enable_progress_bar=False,
                        logger=False, enable_model_summary=False, default_root_dir=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8))
    path = trainer.checkpoint_callback.best_model_path
    assert path
    return model, path


def test_lightning_checkpoints_load_with_weights_only(lightning_ckpt):
    _, path = lightning_ckpt
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    assert "pytorch-lightning_version" in ckpt and "lstm.weight_hh_l1" in ckpt["state_dict"]


def test_inspect_a_lightning_checkpoint(lightning_ckpt):
    model, path = lightning_ckpt
    result = CliRunner().invoke(inspect, [path, "--steps", "30", "--warmup", "5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["lightning"] is True and data["container"] == "state_dict"
    (m,) = data["modules"]
    assert (m["name"], m["type_name"], m["input_size"], m["hidden_size"], m["num_layers"]) == \
        ("lstm", "LSTM", 3, 6, 2)
    assert m["nonlinearity_assumed"] is False
    # the trained weights, not a fresh init: spectra of the trained model's blocks
    W = model.lstm.weight_hh_l1.detach().double()
    rho_f = torch.linalg.eigvals(W[6:12]).abs().max().item()
    assert m["layers"][1]["gates"][1]["spectral_radius"] == pytest.approx(rho_f, rel=1e-10)
    text = CliRunner().invoke(inspect, [path, "--steps", "30", "--warmup", "5"]).output
    assert text.startswith(f"Lightning checkpoint {path}: the weights under 'state_dict'")
