"""Eigenvalues and singular values of a square (recurrent) weight matrix.

Both numbers matter for gradient flow (docs/design.md §8): the spectral radius ρ governs the
long-run growth of a *linear* recurrence, while the spectral norm σ_max bounds a single step. For a
tanh RNN, σ_max(W_hh) < 1 forces vanishing gradients (Pascanu et al., 2013), and σ_max > 1 is
necessary for exploding ones. For a random W ~ N(0, g²/N), ρ → g but σ_max → 2g, so the two tell
different stories for 0.5 < g < 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Spectrum", "spectrum"]


@dataclass(frozen=True)
class Spectrum:
    """The spectrum of one ``[N, N]`` matrix.

    Attributes:
        eigenvalues: complex128 ``[N]``, sorted by modulus, descending (ties, e.g. a complex
            conjugate pair, by real part then imaginary part, descending, so ``a + bi`` comes
            before ``a - bi``).
        singular_values: float64 ``[N]``, descending.
        spectral_radius: ``max |eigenvalue|`` (0.0 for an empty matrix).
        spectral_norm: ``max singular value`` = ‖W‖₂ (0.0 for an empty matrix).
    """

    eigenvalues: Tensor
    singular_values: Tensor
    spectral_radius: float
    spectral_norm: float


def _as_float64_matrix(W) -> Tensor:
    if isinstance(W, Tensor):
        t = W.detach().cpu()
    elif isinstance(W, np.ndarray) or hasattr(W, "__array__") or isinstance(W, (list, tuple)):
        t = torch.as_tensor(np.asarray(W))
    else:
        raise TypeError(f"spectrum() needs a torch.Tensor or numpy array, got {type(W).__name__}")
    if t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"spectrum() needs a square 2-D matrix [N, N], got shape {tuple(t.shape)}")
    if t.is_complex():
        raise ValueError("spectrum() needs a real matrix, got a complex one")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("spectrum() needs a finite matrix: W holds inf or NaN entries")
    return t


def sort_by_modulus(eigenvalues: Tensor) -> Tensor:
    """Complex eigenvalues ``[N]`` sorted by modulus, then real part, then imaginary part, all
    descending."""
    ev = eigenvalues.numpy()
    order = np.lexsort((-ev.imag, -ev.real, -np.abs(ev)))  # last key is the primary one
    return eigenvalues[torch.as_tensor(order)]


def spectrum(W) -> Spectrum:
    """Eigenvalues, singular values, spectral radius and spectral norm of a square real matrix.

    Computed in float64 on the CPU with ``torch.linalg.eigvals`` (LAPACK ``geev``) and
    ``torch.linalg.svdvals``, whatever the input's dtype or device.

    Args:
        W: ``[N, N]`` real matrix: a torch tensor (any float dtype/device, gradients are
            ignored) or a numpy array.

    Returns:
        :class:`Spectrum` with complex128 ``eigenvalues [N]`` (modulus descending), float64
        ``singular_values [N]`` (descending), ``spectral_radius`` and ``spectral_norm``
        (Python floats).

    Raises:
        ValueError: not 2-D square, complex, or not finite.

    Example:
        >>> s = spectrum(torch.tensor([[0.0, -2.0], [2.0, 0.0]]))   # rotation by 90° times 2
        >>> s.eigenvalues
        tensor([0.+2.0000j, 0.-2.0000j], dtype=torch.complex128)
        >>> round(s.spectral_radius, 12), round(s.spectral_norm, 12)
        (2.0, 2.0)
    """
    w = _as_float64_matrix(W)
    if w.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return Spectrum(empty.to(torch.complex128), empty, 0.0, 0.0)
    eigenvalues = sort_by_modulus(torch.linalg.eigvals(w))
    singular_values = torch.linalg.svdvals(w)
    return Spectrum(
        eigenvalues=eigenvalues,
        singular_values=singular_values,
        spectral_radius=float(eigenvalues[0].abs()),
        spectral_norm=float(singular_values[0]),
    )
