"""The delayed XOR task: targets against a plain-Python recomputation, balance, reference values,
option errors, and a tiny GRU that learns it (so the task is learnable as built)."""

import math

import pytest
import torch
from torch import nn

from rnn_diag.tasks import DelayedXorTask, make_task


def _reference_targets(x: torch.Tensor, delay: int) -> list[list[int]]:
    """Targets recomputed element by element from the ±1 inputs: for t in [delay, T),
    bit(t - delay) XOR bit(t - delay // 2), with bit = 1 for +1 and 0 for -1."""
    out = []
    for row in x[:, :, 0].tolist():
        bits = [1 if v > 0 else 0 for v in row]
        assert all(v in (-1.0, 1.0) for v in row)
        out.append([bits[t - delay] ^ bits[t - delay // 2] for t in range(delay, len(bits))])
    return out


@pytest.mark.parametrize("delay, seq_len", [(1, 2), (1, 9), (2, 7), (5, 6), (10, 31)])
def test_targets_equal_an_independent_recomputation(delay, seq_len):
    task = make_task("delayed_xor", seq_len=seq_len, seed=4, delay=delay, n_train=40, n_val=9)
    assert isinstance(task, DelayedXorTask)
    assert task.output_steps == seq_len - delay == task.y_train.shape[1]
    assert task.n_steps == seq_len and task.input_size == 1 and task.output_size == 2
    assert task.y_train.dtype == torch.int64
    assert task.y_train.tolist() == _reference_targets(task.x_train, delay)
    assert task.y_val.tolist() == _reference_targets(task.x_val, delay)


def test_delay_one_is_xor_with_the_current_bit():
    task = make_task("delayed_xor", seq_len=3, seed=0, delay=1, n_train=50, n_val=0)
    bits = (task.x_train[:, :, 0] > 0).long()
    assert torch.equal(task.y_train, bits[:, 1:] ^ bits[:, :-1])


def test_classes_and_input_bits_are_balanced():
    task = make_task("delayed_xor", seq_len=60, seed=1, delay=10, n_train=1000, n_val=0)
    # 50,000 targets; the sample's class-1 fraction has std 0.0022, so 0.01 is 4.5 sigma
    assert abs(task.y_train.float().mean().item() - 0.5) < 0.01
    assert abs(task.x_train.mean().item()) < 0.02
    assert set(task.x_train.unique().tolist()) == {-1.0, 1.0}


def test_chance_and_best_values():
    task = make_task("delayed_xor", seq_len=12, seed=0, delay=3)
    assert task.chance_loss == pytest.approx(math.log(2))
    assert task.chance_metric == 0.5
    assert (task.best_loss, task.best_metric) == (0.0, 1.0)
    assert (task.kind, task.metric_name, task.higher_is_better) == ("classification",
                                                                     "accuracy", True)
    uniform = torch.zeros(task.n_val, task.output_steps, 2)
    assert task.loss(uniform, task.y_val).item() == pytest.approx(math.log(2))
    perfect = 10.0 * nn.functional.one_hot(task.y_val, 2).float()
    assert task.metric(perfect, task.y_val) == 1.0
    assert task.class_names == ["same", "differ"]


def test_deterministic_given_seed_and_train_independent_of_n_val():
    a = make_task("delayed_xor", seq_len=15, seed=7, delay=4, n_val=10)
    b = make_task("delayed_xor", seq_len=15, seed=7, delay=4, n_val=50)
    c = make_task("delayed_xor", seq_len=15, seed=8, delay=4, n_val=10)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.x_val, b.x_val[:10])
    assert not torch.equal(a.x_train, c.x_train)
    assert a.options == {"delay": 4, "n_train": 1000, "n_val": 10}


@pytest.mark.parametrize(
    "seq_len, options, pattern",
    [
        (10, {"delay": 10}, "task 'delayed_xor'.*seq_len=10.*'delay'=10"),
        (3, {}, "task 'delayed_xor'.*seq_len=3.*'delay'=5"),
        (10, {"delay": 0}, "task 'delayed_xor'.*option 'delay'"),
        (10, {"delay": 2.0}, "task 'delayed_xor'.*option 'delay'"),
        (10, {"delay": True}, "task 'delayed_xor'.*option 'delay'"),
        (10, {"n_train": 0}, "task 'delayed_xor'.*option 'n_train'"),
        (10, {"n_val": -1}, "task 'delayed_xor'.*option 'n_val'"),
        (10, {"lag": 3}, "task 'delayed_xor'.*unknown option 'lag'.*delay"),
    ],
)
def test_bad_options_are_named(seq_len, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_task("delayed_xor", seq_len=seq_len, seed=0, **options)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(threads)


def test_a_tiny_gru_learns_a_short_delay(one_thread):
    """delay 2 with 16 GRU units and Adam: measured 1.0 validation accuracy after 50 steps
    (under 1 s on one core); the test allows 150 steps and asks for > 0.9."""
    torch.manual_seed(0)
    task = make_task("delayed_xor", seq_len=12, seed=0, delay=2, n_train=512, n_val=256)
    gru, head = nn.GRU(1, 16, batch_first=True), nn.Linear(16, 2)
    optimizer = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=0.01)

    def forward(x):
        return head(gru(x)[0][:, -task.output_steps :])

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        assert task.metric(forward(task.x_val), task.y_val) < 0.7
    for _ in range(150):
        rows = torch.randint(0, task.n_train, (64,), generator=generator)
        loss = task.loss(forward(task.x_train[rows]), task.y_train[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        val = forward(task.x_val)
        assert task.metric(val, task.y_val) > 0.9
        assert task.loss(val, task.y_val).item() < 0.2 * task.chance_loss
