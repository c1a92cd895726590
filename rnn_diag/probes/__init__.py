"""Attaching to models and recording per-timestep gradients."""

from .probe import Probe, ProbeWarning, attach

__all__ = ["Probe", "ProbeWarning", "attach"]
