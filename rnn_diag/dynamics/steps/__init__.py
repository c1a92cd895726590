"""Linearisations of recurrent cells along recorded trajectories: one class per cell kind.

See :mod:`rnn_diag.dynamics.steps.base` for the protocol they implement.
"""

from .base import SATURATION_THRESHOLD, CellWeights, Steps, saturated_fraction
from .callable import CallableSteps
from .diagonal import DiagonalSteps
from .gru import GRUSteps
from .lstm import LSTMSteps
from .projected_lstm import ProjectedLSTMSteps
from .rnn import RNNSteps

__all__ = [
    "SATURATION_THRESHOLD",
    "CallableSteps",
    "CellWeights",
    "DiagonalSteps",
    "GRUSteps",
    "LSTMSteps",
    "ProjectedLSTMSteps",
    "RNNSteps",
    "Steps",
    "saturated_fraction",
]
