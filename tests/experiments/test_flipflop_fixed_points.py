"""The classic result (Sussillo & Barak, 2013): a network trained on the 3-bit flip-flop has, at
zero input, exactly 2^3 = 8 stable fixed points, one near each corner of the output cube, with
saddles between them.

The network is trained here with a plain loop (fixed seeds); the points come from
:func:`rnn_diag.modules.fixed_points.fixed_points` and are checked independently: F(h*) = h*
with the module itself, the readout's signs, and the stable points held by the module for many
steps at zero input.
"""

from __future__ import annotations

import pytest
import torch

from rnn_diag.dynamics.fixed_points import sample_states
from rnn_diag.experiments.fixed_point_tables import layer_states
from rnn_diag.experiments.model import SequenceModel
from rnn_diag.modules.fixed_points import fixed_points
from rnn_diag.tasks import make_task

BITS, T, H = 3, 40, 16


def trained(cell: str, steps: int = 300, seed: int = 0):
    task = make_task("flipflop", seq_len=T, seed=seed, bits=BITS, n_train=512, n_val=128)
    torch.manual_seed(seed)
    model = SequenceModel(cell, BITS, H, BITS, output_steps=T)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, task.n_train, (64,), generator=batches)
        loss = task.loss(model(task.x_train[idx]), task.y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return task, model


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_three_bit_flipflop_has_eight_stable_fixed_points_at_the_corners(cell):
    task, model = trained(cell)
    with torch.no_grad():
        accuracy = task.metric(model(task.x_val), task.y_val)
    assert accuracy >= 0.99
    states = layer_states(model.rnn, task.x_val)[0][0]
    start = sample_states(states, 1024, noise=0.5, generator=torch.Generator().manual_seed(0))
    fps = fixed_points(model.rnn, start)  # zero input

    stable = fps.points[fps.stable]
    assert stable.shape == (2**BITS, H)
    with torch.no_grad():
        # F(h*) = h* with the module's own forward at zero input
        x0 = torch.zeros(len(stable), 1, BITS)
        _, h1 = model.rnn(x0, stable.float()[None])
        torch.testing.assert_close(h1[0].double(), stable, atol=1e-5, rtol=0)
        # attractors: the module holds them for 200 steps of zero input
        _, h200 = model.rnn(torch.zeros(len(stable), 200, BITS), stable.float()[None])
        torch.testing.assert_close(h200[0].double(), stable, atol=1e-4, rtol=0)
        corners = model.head(stable.float())
    patterns = {tuple(row) for row in torch.sign(corners).int().tolist()}
    assert len(patterns) == 2**BITS  # every sign pattern: one point per corner
    assert (corners.abs() > 0.5).all()  # near the corners (±1), not at the centre
    assert (fps.eigenvalues[fps.stable].abs() < 1).all()

    saddles = fps.saddle
    assert int(saddles.sum()) >= 1
    assert (fps.n_unstable[saddles] >= 1).all()
