"""Task.loss and Task.metric: perfect, input-free and partly right outputs of known value."""

import math

import pytest
import torch
import torch.nn.functional as F

from rnn_diag.tasks import Task, make_task

TASK_ARGS = {
    "weather": dict(seq_len=10),
    "weather-lag": dict(seq_len=10, lag=2, p=0.6),
    "adding": dict(seq_len=12),
    "copy": dict(seq_len=6),
}


def build(key: str) -> Task:
    return make_task(key.split("-")[0], seed=0, **TASK_ARGS[key])


def perfect_output(task: Task, y: torch.Tensor) -> torch.Tensor:
    if task.kind == "classification":
        return 50.0 * F.one_hot(y, task.output_size).float()
    return y.clone()


@pytest.mark.parametrize("key", sorted(TASK_ARGS))
def test_perfect_output(key):
    task = build(key)
    out = perfect_output(task, task.y_train)
    assert out.shape == (task.n_train, task.output_steps, task.output_size)
    assert 0.0 <= task.loss(out, task.y_train).item() < 1e-12
    best = 1.0 if task.higher_is_better else 0.0
    assert task.metric(out, task.y_train) == best


@pytest.mark.parametrize("key", ["weather", "weather-lag", "copy"])
def test_uniform_logits_cost_exactly_chance(key):
    task = build(key)
    out = torch.zeros(task.n_val, task.output_steps, task.output_size)
    assert task.loss(out, task.y_val).item() == pytest.approx(task.chance_loss, rel=1e-6)
    assert task.chance_loss == pytest.approx(math.log(task.output_size), rel=1e-12)
    assert task.chance_metric == pytest.approx(1 / task.output_size, rel=1e-12)


def test_loss_and_accuracy_average_over_all_readout_steps():
    """Copy, S = 5 steps: right at 4, uniform logits at the last gives loss ln(8)/5; pointing
    at a wrong class at the last gives accuracy 4/5."""
    task = build("copy")
    y = task.y_val
    out = perfect_output(task, y)
    out[:, -1] = 0.0
    assert task.loss(out, y).item() == pytest.approx(math.log(8) / 5, rel=1e-6)
    out[:, -1] = 50.0 * F.one_hot((y[:, -1] + 1) % 8, 8).float()
    assert task.metric(out, y) == pytest.approx(4 / 5)


def test_regression_loss_is_mse():
    task = build("adding")
    out = task.y_val + 0.5
    assert task.loss(out, task.y_val).item() == pytest.approx(0.25, rel=1e-6)
    assert task.metric(out, task.y_val) == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize("key", sorted(TASK_ARGS))
def test_loss_is_differentiable(key):
    task = build(key)
    out = torch.randn(task.n_val, task.output_steps, task.output_size, requires_grad=True)
    loss = task.loss(out, task.y_val)
    assert loss.dim() == 0
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


@pytest.mark.parametrize("key", sorted(TASK_ARGS))
def test_wrong_output_shape_is_refused(key):
    task = build(key)
    out = torch.zeros(task.n_val, task.output_steps + 1, task.output_size)
    with pytest.raises(ValueError, match="output_steps"):
        task.loss(out, task.y_val)
    with pytest.raises(ValueError, match="output_steps"):
        task.metric(out, task.y_val)


def test_empty_split_scores_nan():
    task = make_task("weather", seq_len=10, seed=0, val_fraction=0.0)
    assert math.isnan(task.metric(torch.zeros(0, 1, 3), task.y_val))
