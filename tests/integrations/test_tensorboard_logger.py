"""rnn_diag.integrations.tensorboard with the real packages: write with a SummaryWriter, read the
event files back with TensorBoard's EventAccumulator, compare with summarise_frame."""

from __future__ import annotations

import pytest
import torch
from integration_helpers import backward, expected_scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import rnn_diag as rd
from rnn_diag.integrations.tensorboard import TensorBoardLogger, log_probe

FIGURES = {"rnn_diag/model/profile", "rnn_diag/model/layer0/heatmap",
           "rnn_diag/model/layer1/heatmap"}


def _read(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _assert_scalars(acc: EventAccumulator, expected: dict[int, dict[str, float]]) -> None:
    tags = set(acc.Tags()["scalars"])
    assert tags == set().union(*expected.values())
    for tag in tags:
        events = acc.Scalars(tag)
        want = [(step, values[tag]) for step, values in expected.items() if tag in values]
        assert [e.step for e in events] == [s for s, _ in want], tag
        # TensorBoard stores float32
        assert [e.value for e in events] == pytest.approx([v for _, v in want], rel=1e-6,
                                                          abs=1e-6), tag


def test_scalars_and_figures_read_back_equal_summarise_frame(tmp_path, lstm_run):
    steps, log = lstm_run
    with TensorBoardLogger(tmp_path, figures_every=2) as logger:
        expected = log(logger)
    acc = _read(tmp_path)
    for metric in ("horizon", "decay_per_step", "verdict", "log10_grad_first", "steps"):
        assert f"rnn_diag/model/layer1/{metric}" in acc.Tags()["scalars"]
    _assert_scalars(acc, expected)
    # the two layers differ, so a swapped layer or a stale step would not pass
    assert expected[0]["rnn_diag/model/layer0/log10_grad_first"] != \
        expected[0]["rnn_diag/model/layer1/log10_grad_first"]
    assert [expected[s]["rnn_diag/model/layer0/steps"] for s in steps] == [12.0, 15.0, 18.0]
    # figures at the 1st and 3rd call (figures_every=2), as PNG images
    assert set(acc.Tags()["images"]) == FIGURES
    for tag in FIGURES:
        images = acc.Images(tag)
        assert [im.step for im in images] == [0, 10]
        assert all(im.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" for im in images)
        assert all(im.width > 300 and im.height > 200 for im in images)


def test_given_writer_is_flushed_not_closed(tmp_path, lstm_run):
    steps, log = lstm_run
    writer = SummaryWriter(str(tmp_path))
    with TensorBoardLogger(writer) as logger:
        expected = log(logger, figures=False)
    writer.add_scalar("user/loss", 1.0, 3)  # still open
    writer.close()
    acc = _read(tmp_path)
    assert acc.Tags()["images"] == []
    assert "user/loss" in acc.Tags()["scalars"]
    ours = {t for t in acc.Tags()["scalars"] if t.startswith("rnn_diag/")}
    assert ours == set().union(*expected.values())


def test_log_probe_function_keeps_history_per_writer(tmp_path):
    torch.manual_seed(1)
    model = nn.GRU(2, 5)
    writer = SummaryWriter(str(tmp_path))
    expected = {}
    with rd.attach(model) as probe:
        for step in (3, 7):
            backward(model, T=10, seed=step)
            expected[step] = expected_scalars(probe.frame())
            log_probe(writer, probe, step)
    writer.close()
    acc = _read(tmp_path)
    _assert_scalars(acc, expected)
    assert [im.step for im in acc.Images("rnn_diag/model/layer0/heatmap")] == [3, 7]


def test_submodule_names_and_reverse_direction_from_a_frame(tmp_path):
    """A frame with several iterations logs the last one; tags carry the qualified name and
    ``layer0_reverse`` for the reverse direction."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.GRU(3, 6, bidirectional=True)
            self.head = nn.Linear(12, 1)

        def forward(self, x):
            out, _ = self.encoder(x)
            return self.head(out).mean()

    torch.manual_seed(2)
    model = Model()
    with rd.attach(model) as probe:
        for _ in range(2):
            model(torch.randn(9, 2, 3)).backward()
    frame = probe.frame()
    assert sorted(frame["iteration"].unique()) == [0, 1]
    expected = expected_scalars(frame)
    with TensorBoardLogger(tmp_path) as logger:
        logger.log(frame, 4)
    acc = _read(tmp_path)
    _assert_scalars(acc, {4: expected})
    assert {"rnn_diag/encoder/layer0/horizon",
            "rnn_diag/encoder/layer0_reverse/horizon"} <= set(acc.Tags()["scalars"])
    assert set(acc.Tags()["images"]) == {"rnn_diag/encoder/profile",
                                         "rnn_diag/encoder/layer0/heatmap",
                                         "rnn_diag/encoder/layer0_reverse/heatmap"}
