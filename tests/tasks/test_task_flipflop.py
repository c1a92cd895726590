"""The N-bit flip-flop: pulses, targets (checked against a plain loop), chance and best values."""

import math

import pytest
import torch

from rnn_diag.tasks import FlipFlopTask, make_task


def hoeffding_eps(n: int, width: float) -> float:
    """P(|mean - E| > eps) <= 1e-6 for n i.i.d. values in an interval of this width."""
    return width * math.sqrt(math.log(2 / 1e-6) / (2 * n))


def held_targets(x: torch.Tensor) -> torch.Tensor:
    """Reference: walk every sequence and channel, remembering the last non-zero input."""
    y = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for b in range(x.shape[2]):
            memory = 0.0
            for t in range(x.shape[1]):
                if x[n, t, b] != 0:
                    memory = float(x[n, t, b])
                y[n, t, b] = memory
    return y


@pytest.mark.parametrize(("bits", "p_pulse"), [(1, 0.5), (3, 0.05), (4, 0.2)])
def test_targets_are_the_sign_of_the_last_pulse(bits, p_pulse):
    task = make_task("flipflop", seq_len=30, seed=4, bits=bits, p_pulse=p_pulse, n_train=40,
                     n_val=10)
    for x, y in ((task.x_train, task.y_train), (task.x_val, task.y_val)):
        assert x.dtype == y.dtype == torch.float32
        assert x.shape == y.shape == (x.shape[0], 30, bits)
        assert set(x.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert (x[:, 0] != 0).all()  # every channel pulses at step 0: every target is defined
        assert torch.equal(y, held_targets(x))
    assert (task.n_train, task.n_val) == (40, 10)
    assert (task.input_size, task.output_size, task.output_steps) == (bits, bits, 30)


def test_pulse_rate_and_sign_balance():
    n, T, p = 4000, 20, 0.1
    x = make_task("flipflop", seq_len=T, seed=1, p_pulse=p, n_train=n, n_val=0).x_train
    later = (x[:, 1:] != 0).double()
    assert abs(later.mean().item() - p) <= hoeffding_eps(later.numel(), 1.0)
    signs = x[x != 0].double()
    assert abs(signs.mean().item()) <= hoeffding_eps(signs.numel(), 2.0)
    none = make_task("flipflop", seq_len=T, seed=1, p_pulse=0.0, n_train=50, n_val=0)
    assert (none.x_train[:, 1:] == 0).all()  # p_pulse=0: only the step-0 pulses


def test_constants_chance_and_best():
    task = make_task("flipflop", seq_len=25, seed=0)
    assert isinstance(task, FlipFlopTask) and task.name == "flipflop"
    assert task.options == {"bits": 3, "p_pulse": 0.05, "n_train": 1000, "n_val": 200}
    assert task.kind == "regression"  # float targets, MSE loss ...
    assert (task.metric_name, task.higher_is_better) == ("accuracy", True)  # ... scored by sign
    assert (task.chance_loss, task.chance_metric) == (1.0, 0.5)
    assert (task.best_loss, task.best_metric) == (0.0, 1.0)
    y = task.y_train
    # best: the targets themselves; chance: input-free predictors
    assert task.metric(y, y) == 1.0 and task.loss(y, y).item() == 0.0
    n = y.numel()
    for constant in (1.0, -1.0):
        acc = task.metric(torch.full_like(y, constant), y)
        assert abs(acc - task.chance_metric) <= hoeffding_eps(n, 1.0)
    zero_mse = task.loss(torch.zeros_like(y), y).item()
    assert zero_mse == pytest.approx(task.chance_loss)  # targets are ±1: (0 - y)^2 = 1


def test_metric_counts_signs_and_skips_undefined_targets():
    task = make_task("flipflop", seq_len=2, seed=0, bits=2, n_train=1, n_val=1)
    y = torch.tensor([[[1.0, -1.0], [0.0, -1.0]]])
    out = torch.tensor([[[0.2, 0.3], [5.0, -0.1]]])  # right, wrong, (undefined), right
    assert task.metric(out, y) == pytest.approx(2 / 3)
    assert task.metric(torch.zeros_like(y), y) == 0.0  # an output of exactly 0 is wrong
    assert math.isnan(task.metric(out, torch.zeros_like(y)))
    with pytest.raises(ValueError, match="output_steps"):
        task.metric(out[:, :1], y)


def test_seeded_and_split_independent():
    a = make_task("flipflop", seq_len=15, seed=5, n_train=30, n_val=20)
    b = make_task("flipflop", seq_len=15, seed=5, n_train=30, n_val=20)
    c = make_task("flipflop", seq_len=15, seed=6, n_train=30, n_val=20)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)
    fewer_val = make_task("flipflop", seq_len=15, seed=5, n_train=30, n_val=0)
    assert torch.equal(a.x_train, fewer_val.x_train) and fewer_val.n_val == 0
    assert not torch.equal(a.x_val, a.x_train[:20])


@pytest.mark.parametrize(("options", "pattern"), [
    ({"bits": 0}, "bits"), ({"p_pulse": 1.5}, "p_pulse"), ({"n_train": 0}, "n_train"),
    ({"bit": 3}, "unknown option 'bit'"),
])
def test_bad_options_are_named(options, pattern):
    with pytest.raises(ValueError, match=f"task 'flipflop'.*{pattern}"):
        make_task("flipflop", seq_len=10, seed=0, **options)
