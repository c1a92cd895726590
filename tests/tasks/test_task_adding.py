"""The adding problem: marker placement, targets, and the chance value 1/6 checked empirically.

Hoeffding: for n i.i.d. values in an interval of width w, P(|mean - E| > eps) <= 2 exp(-2 n
eps^2 / w^2); eps below fails with probability <= 1e-6 (the data are seeded, so deterministic).
"""

import math

import pytest
import torch

from rnn_diag.tasks import AddingTask, make_task


def hoeffding_eps(n: int, width: float) -> float:
    return width * math.sqrt(math.log(2 / 1e-6) / (2 * n))


@pytest.mark.parametrize("seq_len", [2, 7, 50])
def test_two_markers_one_per_half_and_target_is_their_sum(seq_len):
    task = make_task("adding", seq_len=seq_len, seed=3, n_train=500, n_val=100)
    half = seq_len // 2
    for x, y in ((task.x_train, task.y_train), (task.x_val, task.y_val)):
        assert x.dtype == torch.float32 and x.shape[1:] == (seq_len, 2)
        assert y.dtype == torch.float32 and y.shape[1:] == (1, 1)
        values, markers = x[..., 0], x[..., 1]
        assert ((values >= 0) & (values < 1)).all()
        assert ((markers == 0) | (markers == 1)).all()
        assert (markers[:, :half].sum(dim=1) == 1).all()
        assert (markers[:, half:].sum(dim=1) == 1).all()
        marked = [v[m == 1].tolist() for v, m in zip(values, markers)]
        expected = torch.tensor([a + b for a, b in marked])
        torch.testing.assert_close(y[:, 0, 0], expected, rtol=0, atol=1e-6)
    assert (task.n_train, task.n_val) == (500, 100)


def test_defaults_and_task_constants():
    task = make_task("adding", seq_len=20, seed=0)
    assert (task.n_train, task.n_val) == (1000, 200)
    assert (task.input_size, task.output_size, task.output_steps) == (2, 1, 1)
    assert task.kind == "regression" and task.metric_name == "mse" and not task.higher_is_better
    assert task.chance_loss == task.chance_metric == pytest.approx(1 / 6, abs=1e-15)
    assert (task.best_loss, task.best_metric) == (0.0, 0.0)
    assert task.class_names is None


def test_chance_is_the_target_variance_empirically():
    n = 200_000
    task = make_task("adding", seq_len=6, seed=1, n_train=n, n_val=0)
    y = task.y_train.double()
    assert abs(y.mean().item() - 1.0) <= hoeffding_eps(n, width=2.0)
    assert abs(((y - 1) ** 2).mean().item() - 1 / 6) <= hoeffding_eps(n, width=1.0)
    predict_mean = torch.ones_like(task.y_train)
    assert abs(task.loss(predict_mean, task.y_train).item() - 1 / 6) <= hoeffding_eps(n, 1.0)
    assert abs(task.metric(predict_mean, task.y_train) - task.chance_metric) <= hoeffding_eps(
        n, 1.0
    )


def test_markers_cover_each_half_uniformly():
    n, seq_len = 60_000, 6
    x = make_task("adding", seq_len=seq_len, seed=2, n_train=n, n_val=0).x_train
    counts = x[..., 1].sum(dim=0) / n
    for t in range(seq_len):
        assert abs(counts[t].item() - 1 / 3) <= hoeffding_eps(n, 1.0), t


def test_seeded_and_deterministic():
    a = make_task("adding", seq_len=10, seed=5)
    b = make_task("adding", seq_len=10, seed=5)
    c = make_task("adding", seq_len=10, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)
    fewer_val = make_task("adding", seq_len=10, seed=5, n_val=3)
    assert torch.equal(a.x_train, fewer_val.x_train)
    assert not torch.equal(a.x_val[:3], a.x_train[:3])


def test_too_short_sequences_are_refused():
    with pytest.raises(ValueError, match="adding.*seq_len=1"):
        make_task("adding", seq_len=1, seed=0)
    with pytest.raises(ValueError, match="adding.*n_train"):
        make_task("adding", seq_len=5, seed=0, n_train=0)
    assert make_task("adding", seq_len=5, seed=0, n_val=0).x_val.shape == (0, 5, 2)


def test_build_directly_matches_make_task():
    task = AddingTask.build(seq_len=8, seed=4, options=AddingTask.Options())
    assert torch.equal(task.x_val, make_task("adding", seq_len=8, seed=4).x_val)
