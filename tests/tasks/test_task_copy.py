"""The copy task's layout (symbols, delay, GO, readout) and its chance values."""

import math

import pytest
import torch

from rnn_diag.tasks import CopyTask, make_task


@pytest.mark.parametrize("seq_len, length, n_symbols", [(1, 1, 2), (10, 5, 8), (30, 3, 4)])
def test_layout(seq_len, length, n_symbols):
    task = make_task(
        "copy", seq_len=seq_len, seed=0, length=length, n_symbols=n_symbols, n_train=300, n_val=50
    )
    blank, go = n_symbols, n_symbols + 1
    n_steps = 2 * length + seq_len
    assert task.n_steps == n_steps
    assert (task.input_size, task.output_size, task.output_steps) == (
        n_symbols + 2,
        n_symbols,
        length,
    )
    for x, y in ((task.x_train, task.y_train), (task.x_val, task.y_val)):
        assert x.dtype == torch.float32 and x.shape[1:] == (n_steps, n_symbols + 2)
        assert y.dtype == torch.int64 and y.shape[1:] == (length,)
        assert ((x == 0) | (x == 1)).all() and (x.sum(dim=-1) == 1).all()
        channel = x.argmax(dim=-1)
        assert torch.equal(channel[:, :length], y)
        assert (y >= 0).all() and (y < n_symbols).all()
        go_step = length + seq_len - 1
        assert (channel[:, go_step] == go).all()
        assert (x[:, :, go].sum(dim=1) == 1).all()
        rest = torch.cat([channel[:, length:go_step], channel[:, go_step + 1 :]], dim=1)
        assert rest.shape[1] == seq_len - 1 + length
        assert (rest == blank).all()


def test_defaults_and_chance_values():
    task = make_task("copy", seq_len=10, seed=0)
    assert (task.n_train, task.n_val) == (1000, 200)
    assert task.options == {"length": 5, "n_symbols": 8, "n_train": 1000, "n_val": 200}
    assert task.chance_loss == pytest.approx(math.log(8), abs=1e-15)
    assert task.chance_metric == pytest.approx(1 / 8, abs=1e-15)
    assert (task.best_loss, task.best_metric) == (0.0, 1.0)
    assert task.kind == "classification" and task.metric_name == "accuracy"


def test_symbols_are_uniform():
    """Chance ln(n_symbols) presumes uniform symbols: each frequency is within the Hoeffding
    bound (failure probability <= 1e-6) of 1/n_symbols over 100,000 i.i.d. draws."""
    task = make_task("copy", seq_len=1, seed=0, n_train=20_000, n_val=0)
    y = task.y_train.reshape(-1)
    eps = math.sqrt(math.log(2 / 1e-6) / (2 * y.numel()))
    for s in range(8):
        assert abs((y == s).double().mean().item() - 1 / 8) <= eps, s


def test_seeded_and_deterministic():
    a = make_task("copy", seq_len=10, seed=5)
    b = make_task("copy", seq_len=10, seed=5)
    c = make_task("copy", seq_len=10, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.y_train, c.y_train)
    assert torch.equal(a.y_train, make_task("copy", seq_len=10, seed=5, n_val=0).y_train)


def test_bad_options():
    with pytest.raises(ValueError, match="copy.*n_symbols"):
        make_task("copy", seq_len=10, seed=0, n_symbols=1)
    with pytest.raises(ValueError, match="copy.*length"):
        make_task("copy", seq_len=10, seed=0, length=0)


def test_build_directly_matches_make_task():
    task = CopyTask.build(seq_len=3, seed=1, options=CopyTask.Options(length=2))
    assert torch.equal(task.x_train, make_task("copy", seq_len=3, seed=1, length=2).x_train)
