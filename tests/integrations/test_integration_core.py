"""The logger-independent core of the integrations (rnn_diag.integrations._profiles, .figures),
the logging cadence, figure hygiene and the missing-package messages."""

from __future__ import annotations

import gc
import importlib
import sys

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import torch
from integration_helpers import backward, expected_scalars
from torch import nn

import rnn_diag as rd
from rnn_diag.integrations._profiles import (
    ProfileLog,
    ProfileLogger,
    _probe_latest_frame,
    layer_tag,
    module_tag,
)
from rnn_diag.integrations.figures import heatmap_figure, profile_figure, render


def _frame(values, *, module="", layer=0, direction=0, iteration=0) -> pd.DataFrame:
    """Rows of a probe frame holding one total_mean profile (and a distractor metric)."""
    values = np.asarray(values, dtype=np.float64)
    T = values.size
    base = dict(iteration=iteration, module=module, layer=layer, direction=direction,
                state="h", t=np.arange(T))
    return pd.concat([pd.DataFrame({**base, "metric": "total_mean", "value": values}),
                      pd.DataFrame({**base, "metric": "total_max", "value": values + 5.0})],
                     ignore_index=True)


class Recorder(ProfileLogger):
    """A backend that remembers what it was asked to write."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def _write(self, step, values, layer_profiles):
        self.calls.append((step, dict(values), [p.label for p in layer_profiles]))


def test_tag_names():
    assert module_tag("") == "model"
    assert module_tag("encoder.rnn") == "encoder.rnn"
    assert [layer_tag(0, 0), layer_tag(2, 0), layer_tag(0, 1)] == \
        ["layer0", "layer2", "layer0_reverse"]


def test_undefined_metrics_are_left_out_not_faked():
    logger = Recorder()
    flat = np.full(6, -np.inf)
    flat[-1] = 0.0  # one finite point: no slope, undetermined verdict, log10 at t=0 is -inf
    values = logger.log(_frame(flat), 0)
    assert values == {"rnn_diag/model/layer0/horizon": 0.0, "rnn_diag/model/layer0/steps": 6.0}
    values = logger.log(_frame(np.full(4, -np.inf)), 1)  # nothing finite: horizon -1
    assert values == {"rnn_diag/model/layer0/steps": 4.0}


def test_frame_with_several_iterations_uses_the_last():
    frame = pd.concat([_frame(-0.5 * np.arange(10)[::-1], iteration=0),
                       _frame(-0.1 * np.arange(10)[::-1], iteration=3)], ignore_index=True)
    values = Recorder().log(frame, 7)
    assert values["rnn_diag/model/layer0/decay_per_step"] == pytest.approx(-0.1)
    assert values["rnn_diag/model/layer0/verdict"] == 0.0  # 0.9 decades: stable
    assert values["rnn_diag/model/layer0/log10_grad_first"] == pytest.approx(-0.9)


def test_history_is_bounded_and_evenly_thinned():
    log = ProfileLog(max_steps=4)
    for step in range(0, 210, 10):  # 21 logged steps
        log.update(_frame(np.linspace(-3, 0, 5) + step), step)
    history = log.history(("", 0, 0))
    # kept every 8th of the 21 (stride doubled at the 5th, 9th and 17th), plus the latest
    assert list(history) == [0, 80, 160, 200]
    assert history[200] == pytest.approx(np.linspace(-3, 0, 5) + 200)
    with pytest.raises(ValueError, match="max_steps"):
        ProfileLog(max_steps=0)


def test_figures_every_and_figures_false():
    logger = Recorder(figures_every=3)
    for step in range(7):
        logger.log(_frame(np.linspace(-2, 0, 4), iteration=step), step, figures=step != 3)
    drawn = [step for step, _, labels in logger.calls if labels]
    assert drawn == [0, 6]  # due at calls 0, 3, 6; call 3 asked for scalars only
    assert len(logger.calls) == 7
    with pytest.raises(ValueError, match="figures_every"):
        Recorder(figures_every=0)


def test_probe_without_backward_warns_once_and_logs_nothing():
    model = nn.RNN(2, 3)
    logger = Recorder()
    with rd.attach(model) as probe:
        with pytest.warns(UserWarning, match="nothing to log at step 0: the probe has not "
                                             "recorded a backward pass yet"):
            assert logger.log(probe, 0) == {}
        assert logger.log(probe, 1) == {}  # warned once
        backward(model, T=5)
        assert logger.log(probe, 2) != {}
        assert logger.log(probe, 3) == {}  # the same backward is not logged twice
        backward(model, T=5)
        assert logger.log(probe, 4) != {}
    assert [c[0] for c in logger.calls] == [2, 4]
    with pytest.warns(UserWarning, match="the frame has no rows"):
        assert Recorder().log(probe.frame().iloc[:0], 0) == {}


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="Probe or a Probe.frame"):
        Recorder().log([1, 2], 0)
    with pytest.raises(ValueError, match="no column"):
        Recorder().log(pd.DataFrame({"value": [1.0]}), 0)
    with pytest.raises(TypeError, match="step must be an int"):
        Recorder().log(_frame([0.0, 1.0]), 1.5)


def test_latest_rows_of_a_probe_are_those_of_its_frame():
    """The fast path reads only the probe's last history blocks: the same rows as the last
    iteration of ``probe.frame()``."""
    model = nn.GRU(2, 4, num_layers=2, bidirectional=True)
    with rd.attach(model, every=2) as probe:
        for seed in range(5):
            backward(model, T=6 + seed, seed=seed)
    frame = probe.frame()
    assert sorted(frame["iteration"].unique()) == [0, 2, 4]
    last = frame[frame["iteration"] == 4].reset_index(drop=True)
    pd.testing.assert_frame_equal(_probe_latest_frame(probe), last)
    assert Recorder().log(probe, 0) == pytest.approx(expected_scalars(frame))


def test_figures_are_plain_figures_with_blank_non_finite_cells():
    import matplotlib.pyplot as plt

    y = np.linspace(-6.0, 0.0, 12)
    y[:3] = -np.inf
    fig = profile_figure({"layer0": y, "layer0_reverse": y - 1, "layer1": np.full(12, np.nan)},
                         5, title="lstm")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "lstm · step 5"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["layer0", "layer0_reverse", "layer1", "exact zero (−∞)"]
    fig = heatmap_figure({0: y, 10: y + 1, 30: np.linspace(-1, 0, 20)}, title="lstm layer0")
    mesh = fig.axes[0].collections[0]
    z = mesh.get_array()
    assert z.shape == (3, 20)
    assert z.mask[0, 9:12].all() and z.mask[0, 12:].all()  # -inf and beyond T=12: blank
    assert not z.mask[2].any()
    assert z[1, 0] == pytest.approx(1.0)  # distance 0 is t = T-1
    assert "decades" in fig.axes[1].get_ylabel()  # the colour bar has units
    image = render(fig)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert plt.get_fignums() == []
    long = heatmap_figure({0: np.linspace(-50, 0, 1000)})
    assert long.axes[0].collections[0].get_array().shape[1] <= 300


def test_no_figure_is_left_alive_after_50_logs(tmp_path):
    """No pyplot figure, and no Figure kept alive, after 50 logs (10 with figures); the
    heatmap history stays bounded."""
    import matplotlib.pyplot as plt

    from rnn_diag.integrations.tensorboard import TensorBoardLogger

    def alive() -> int:  # type(o): isinstance would trigger lazy module attributes
        return sum(issubclass(type(o), matplotlib.figure.Figure) for o in gc.get_objects())

    gc.collect()
    before = alive()
    with TensorBoardLogger(tmp_path, max_steps=20, figures_every=5) as logger:
        for step in range(50):
            logger.log(_frame(np.linspace(-3, 0, 8) - step / 50, iteration=step), step)
        assert len(logger.profiles.history(("", 0, 0))) <= 21
    assert plt.get_fignums() == []
    gc.collect()
    assert alive() == before


@pytest.mark.parametrize("extra", ["tensorboard", "wandb"])
def test_missing_package_names_the_extra(monkeypatch, extra):
    monkeypatch.setitem(sys.modules, extra, None)  # "import <extra>" raises ImportError
    monkeypatch.delitem(sys.modules, f"rnn_diag.integrations.{extra}", raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'rnn_diag\[{extra}\]'"):
        importlib.import_module(f"rnn_diag.integrations.{extra}")


def test_lstm_root_module_is_named_model():
    torch.manual_seed(0)
    model = nn.LSTM(3, 5)
    with rd.attach(model) as probe:
        backward(model, T=8)
        values = Recorder().log(probe, 0)
    assert probe.modules == [""]
    assert set(values) == {f"rnn_diag/model/layer0/{m}" for m in
                           ("horizon", "decay_per_step", "verdict", "log10_grad_first", "steps")}
