"""Diagonal linear recurrences (LRU, S4D/S5, selective SSMs, minGRU), linearised.

For h_t = a_t ⊙ h_{t-1} + b_t with a_t and b_t independent of h (they may depend on the
input), the step Jacobian is J_t = diag(a_t) exactly (docs/design.md §23). Everything the
other cell kinds compute with matrices is elementwise here:

* the adjoint step J_tᵀ v = ā_t ⊙ v (ā the complex conjugate; PyTorch's gradient of a real loss
  with respect to a complex z is ∂L/∂Re z + i ∂L/∂Im z, and multiplying by a transposes to
  multiplying by ā in that convention);
* ‖∂h_target/∂h_k‖₂ = max_i Π_{t=k+1..target} |a_{t,i}|: a reverse cumulative sum of log|a|,
  exact, no products formed (:meth:`DiagonalSteps.product_log10_norms`);
* the Lyapunov exponent of channel i is the time mean of ln|a_{t,i}|, no QR
  (:meth:`DiagonalSteps.channel_exponents`).

The adjoint state is real, so that the log-space machinery shared with the other cells applies
unchanged: a real state of n channels is itself (S = n); a complex one is stored as
``torch.view_as_real`` pairs, channel i at entries 2i (real part) and 2i + 1 (imaginary part),
S = 2n. A state with several dimensions (a selective SSM's ``[D, N]``) is flattened.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import scan_kernels
from .base import Steps


class DiagonalSteps(Steps):
    """The linearisation of h_t = a_t ⊙ h_{t-1} + b_t along a recorded trajectory.

    Args:
        decay: ``[T, B, *S]`` the decays a_t, time-major, real or complex, in the dtype the
            layer computed them (complex64 for a float32 model).

    ``state_size`` is n = prod(S) for a real decay, 2n for a complex one (real and imaginary
    parts interleaved, see the module docstring); ``channels`` is n.

    Example:
        >>> a = torch.full((5, 1, 2), 0.5, dtype=torch.float64)
        >>> DiagonalSteps(a).product_log10_norms(5, 4)[:, 0]      # log10 0.5^(4-k)
        tensor([-1.2041, -0.9031, -0.6021, -0.3010,  0.0000], dtype=torch.float64)
    """

    def __init__(self, decay: Tensor):
        if decay.dim() < 3:
            raise ValueError(f"decay must be [T, B, *S], got shape {tuple(decay.shape)}")
        T, B = decay.shape[:2]
        self.decay = decay.reshape(T, B, -1)
        self.channels = self.decay.shape[-1]
        self.complex = decay.is_complex()
        self.state_size = 2 * self.channels if self.complex else self.channels
        self.saturation = {}
        self._conj = self.decay.conj().resolve_conj() if self.complex else self.decay

    # -- real <-> complex views of [..., S] vectors
    def _c(self, v: Tensor) -> Tensor:
        if not self.complex:
            return v
        return torch.view_as_complex(v.reshape(*v.shape[:-1], self.channels, 2).contiguous())

    def _r(self, v: Tensor) -> Tensor:
        if not self.complex:
            return v
        return torch.view_as_real(v).reshape(*v.shape[:-1], self.state_size)

    def vjp_rows(self, t: int, V: Tensor, out: Tensor | None = None) -> Tensor:
        res = self._r(self._c(V) * self._conj[t].unsqueeze(1))
        if out is None:
            return res
        return out.copy_(res)

    def jvp_rows(self, t: int, V: Tensor) -> Tensor:
        return self._r(self._c(V) * self.decay[t].unsqueeze(1))

    def vjp_all(self, v: Tensor) -> Tensor:
        return self._r(self._c(v) * self._conj)

    def fill_block(self, X: Tensor, g: Tensor | None, t0: int, t1: int) -> None:
        if self.complex:  # the kernel works on complex views of the real rows
            X = torch.view_as_complex(X.view(*X.shape[:2], self.channels, 2))
            if g is not None:
                g = torch.view_as_complex(g.contiguous().view(*g.shape[:2], self.channels, 2))
        scan_kernels.diagonal_block_compiled(self._conj, X, g, t0, t1)

    def jacobian(self, t: int) -> Tensor:
        """``J_t`` as ``[B, S, S]``: diag(a_t), or 2 × 2 blocks [[Re a, −Im a], [Im a, Re a]]
        per complex channel (dense: for checks and small states)."""
        a = self.decay[t]
        if not self.complex:
            return torch.diag_embed(a)
        B, n = a.shape
        blocks = torch.stack([torch.stack([a.real, -a.imag], -1),
                              torch.stack([a.imag, a.real], -1)], -2)  # [B, n, 2, 2]
        J = a.real.new_zeros(B, n, 2, n, 2)
        idx = torch.arange(n, device=a.device)
        J[:, idx, :, idx, :] = blocks.transpose(0, 1)
        return J.reshape(B, 2 * n, 2 * n)

    def input_grads(self, scaled: Tensor) -> Tensor:
        raise NotImplementedError(
            "a diagonal scan's input map is the layer's own code: the gradient reaching each "
            "layer is taken from that layer's output hooks instead")

    def log_abs_decay(self) -> Tensor:
        """``[T, B, n]`` float64 ln|a_t,i|."""
        return self.decay.abs().double().log()

    def product_log10_norms(self, T: int, target: int = -1, samples: int | None = None,
                            chunk: int = 512) -> Tensor:
        """``log10 ‖∂h_target/∂h_k‖₂`` for every k, ``[T, B]`` float64 (the first ``samples``
        samples only when given), exactly: max over channels of Σ_{t=k+1..target} log10|a_t|.
        0 at k = target, NaN after it, -inf where a factor is exactly 0, NaN where a is."""
        if target < 0:
            target += T
        if not 0 <= target < T:
            raise ValueError(f"target={target} is outside the T={T} steps")
        decay = self.decay if samples is None else self.decay[:, :samples]
        B = decay.shape[1]
        out = torch.full((T, B), math.nan, dtype=torch.float64, device=decay.device)
        out[target] = 0.0
        if target == 0:
            return out
        best = None
        for lo in range(0, self.channels, chunk):  # bounded memory for states of thousands
            part = decay[1 : target + 1, :, lo : lo + chunk].abs().double().log10()
            sums = part.flip(0).cumsum(0).flip(0).amax(-1)  # [target, B]: row k: Σ_{t>k}
            best = sums if best is None else torch.maximum(best, sums)
        # NaN (a non-finite decay) must win over any number: maximum() propagates NaN already
        out[:target] = best
        return out

    def channel_exponents(self, warmup: int = 0) -> Tensor:
        """``[B, n]`` float64: each channel's Lyapunov exponent along the trajectory, the mean
        of ln|a_t,i| over the steps t ≥ warmup (nats per step). A complex channel is one
        exponent (its real pair shares it)."""
        T = self.decay.shape[0]
        if not 0 <= warmup < T:
            raise ValueError(f"warmup must be in [0, T) = [0, {T}), got {warmup}")
        return self.decay[warmup:].abs().double().log().mean(0)
