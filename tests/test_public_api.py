"""The names promised at the top level of the package resolve to the documented objects."""

import importlib

import pytest

import rnn_diag as rd


@pytest.mark.parametrize(
    "name, module",
    [
        ("attach", "rnn_diag.probes.probe"),
        ("Probe", "rnn_diag.probes.probe"),
        ("spectrum", "rnn_diag.dynamics.spectrum"),
        ("Spectrum", "rnn_diag.dynamics.spectrum"),
        ("gradient_summary", "rnn_diag.dynamics.summary"),
        ("recurrent_spectra", "rnn_diag.modules.dynamics"),
        ("lyapunov_spectrum", "rnn_diag.modules.dynamics"),
        ("register_scan", "rnn_diag.modules.scans"),
        ("ScanTrace", "rnn_diag.modules.scans"),
        ("fixed_points", "rnn_diag.modules.fixed_points"),
    ],
)
def test_top_level_names(name, module):
    assert name in rd.__all__
    assert getattr(rd, name) is getattr(importlib.import_module(module), name)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rd.nope  # noqa: B018
