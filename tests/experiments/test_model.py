"""Recurrent initialisations against their definitions (numpy eigenvalues, orthogonality)."""

import numpy as np
import pytest
import torch
from torch import nn

from rnn_diag.experiments.model import SequenceModel, init_recurrent, recurrent_blocks


def radius(block):
    return float(np.abs(np.linalg.eigvals(block.double().numpy())).max())


@pytest.mark.parametrize("cls, gates", [(nn.RNN, 1), (nn.GRU, 3), (nn.LSTM, 4)])
@pytest.mark.parametrize("init", ["default", "orthogonal", "identity", "normal"])
@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_weight_scale_sets_every_gate_block_radius(cls, gates, init, scale):
    rnn = cls(3, 12, num_layers=2, bidirectional=True)
    init_recurrent(rnn, init, scale, torch.Generator().manual_seed(0))
    blocks = list(recurrent_blocks(rnn))
    assert len(blocks) == 2 * 2 * gates
    for _, _, b in blocks:
        assert radius(b) == pytest.approx(scale, rel=1e-5)


def test_inits_match_their_definitions():
    g = torch.Generator().manual_seed(1)
    rnn = nn.LSTM(2, 64)
    init_recurrent(rnn, "orthogonal", None, g)
    for _, _, b in recurrent_blocks(rnn):
        torch.testing.assert_close(b.T @ b, torch.eye(64), atol=1e-5, rtol=0)
    init_recurrent(rnn, "identity")
    for _, _, b in recurrent_blocks(rnn):
        assert torch.equal(b, torch.eye(64))
    init_recurrent(rnn, "normal", None, g)
    w = rnn.weight_hh_l0.detach()
    assert float(w.std()) == pytest.approx(1 / 8, rel=0.05)  # N(0, 1/H), H = 64


def test_default_init_is_left_alone_and_bad_values_refused():
    torch.manual_seed(0)
    rnn = nn.RNN(2, 5)
    before = rnn.weight_hh_l0.detach().clone()
    init_recurrent(rnn, "default")
    assert torch.equal(rnn.weight_hh_l0, before)
    with pytest.raises(ValueError, match="init"):
        init_recurrent(rnn, "xavier")
    with pytest.raises(ValueError, match="weight_scale"):
        init_recurrent(rnn, "default", -1.0)
    with torch.no_grad():
        rnn.weight_hh_l0.zero_()
    with pytest.raises(ValueError, match="spectral radius is 0"):
        init_recurrent(rnn, "default", 1.0)


def test_sequence_model_reads_out_the_last_states():
    torch.manual_seed(0)
    m = SequenceModel("lstm", 3, 7, 4, num_layers=2, output_steps=3)
    x = torch.randn(5, 11, 3)
    out, _ = m.rnn(x)
    torch.testing.assert_close(m(x), out[:, -3:] @ m.head.weight.T + m.head.bias)
    with pytest.raises(ValueError, match="cell"):
        SequenceModel("transformer", 3, 7, 4)
