"""Attaching to models and recording per-timestep gradients."""

from .probe import Probe, attach

__all__ = ["Probe", "attach"]
