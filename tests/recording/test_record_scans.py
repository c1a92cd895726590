"""rd.record on a model whose recurrence is a scan stack: the trial names the cell, and its
spectra and Lyapunov exponents are the layers' own (the diagonal, and the time mean of ln|a|)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

import rnn_diag as rd
from rnn_diag.scans import ScanStack


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = ScanStack("lru", 3, 6, num_layers=2, r_min=0.5, r_max=0.9)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[:, -1])


def test_record_a_scan_stack(tmp_path):
    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    inputs = []
    with rd.record(tmp_path, model, every=2) as rec:
        for step in range(4):
            x, y = torch.randn(4, 20, 3), torch.randint(0, 2, (4,))
            inputs.append(x)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=loss.item())
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    row = trials.iloc[0]
    assert row["model.cell"] == "lru" and row["status"] == "ok"
    spectra = pd.read_parquet(tmp_path / "spectra")
    end = spectra[spectra["when"] == "end"]
    assert set(end.gate) == {"lambda"} and sorted(end.layer.unique()) == [0, 1]
    lam = model.rnn.scan_layers[1].eigenvalues().abs().double().sort(descending=True).values
    got = torch.tensor(end[end.layer == 1].modulus.to_numpy())
    assert torch.allclose(got, lam)
    lyap = pd.read_parquet(tmp_path / "lyapunov")
    top = lyap[(lyap["when"] == "end") & (lyap.layer == 1)].exponent.max()
    # a fixed-λ LRU: every channel's exponent is ln|λ_i|, whatever the inputs
    assert abs(top - float(lam[0].log())) < 1e-6
    assert row["lyapunov_top_end"] == max(lyap[lyap["when"] == "end"].exponent)
