"""The Linear Recurrent Unit (LRU) of Orvieto et al. 2023, "Resurrecting Recurrent Neural
Networks for Long Sequences" (ICML 2023, arXiv:2303.06349), the recurrent layer alone.

Per step, with a complex diagonal state h_t ∈ ℂ^N:

    h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t),        y_t = Re(C h_t) + D ⊙ x_t

λ = exp(−exp(ν_log) + i·exp(θ_log)) [N] (the exponential parameterisation of §3.3, so
|λ| < 1 whatever ν_log is), γ = exp(γ_log) [N] the normalisation of §3.4. The paper's MLP/GLU
after the layer, and its norms and residuals, are not part of this module (see
:class:`~rnn_diag.scans.stack.ScanStack` for a stack).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import ScanLayer

__all__ = ["LRU"]


class LRU(ScanLayer):
    """LRU layer (Orvieto et al. 2023), batch-first: ``x [B, T, I] -> y [B, T, O]``.

    Args:
        input_size: I, features per step.
        state_size: N, complex state channels.
        output_size: O (default I).
        r_min, r_max: the ring of the initial eigenvalues, ``r_min ≤ |λ| ≤ r_max``
            (defaults 0 and 1, the paper's "ring init" of Lemma 3.2: |λ|² uniform in
            [r_min², r_max²], so the eigenvalues are uniform on the ring's area).
        max_phase: initial phases uniform in ``[0, max_phase]`` radians (default 2π).

    Initialisation, as the paper's Appendix A code (``init_lru_parameters``): with
    u1, u2 ~ U(0, 1) per channel, ``ν_log = log(−½·log(u1·(r_max² − r_min²) + r_min²))``,
    ``θ_log = log(max_phase·u2)``, ``γ_log = log(√(1 − |λ|²))`` (a trained parameter, as
    there); ``B = B_re + i·B_im`` [N, I] with each part ~ N(0, 1/(2I)), ``C = C_re + i·C_im``
    [O, N] with each part ~ N(0, 1/N) (the appendix's ``/ np.sqrt(2*H)`` and
    ``/ np.sqrt(N)``), and the skip D ~ N(0, 1) [O] when O == I. When O ≠ I there is no
    elementwise skip; a bias-free ``nn.Linear(I, O)`` (``self.skip``, PyTorch's default init)
    takes its place and ``self.D`` is None.

    Complex quantities are stored as real and imaginary parts (``B_re``, ``B_im``, ...), so
    ``.double()`` and optimisers treat them as ordinary real parameters; the state's dtype
    follows the parameters (float32 → complex64, float64 → complex128).

    ``r_max > 1`` (an unstable initialisation, for experiments): the exponential
    parameterisation cannot represent |λ| ≥ 1, so such a layer stores the log-magnitude
    directly, ``λ = exp(−ν + i·exp(θ_log))`` with ν = ``self.nu`` (a free real parameter,
    ``self.nu_log`` is None) and stability is no longer guaranteed during training either.
    γ = √(1 − |λ|²) is undefined for |λ| ≥ 1: those channels get γ = 1 (γ_log = 0), i.e. no
    normalisation. With ``r_max ≤ 1`` the layer is exactly the paper's.

    Attributes: ``state_shape = (N,)``, ``input_dependent = False``; :meth:`eigenvalues`
    returns λ [N] (complex, detached). ``forward(x, h0=None)``: h0 is ``[B, N]`` (complex,
    cast to the state dtype), zeros when None.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> lru = LRU(3, 8, r_min=0.5, r_max=0.9)
        >>> lru(torch.randn(2, 10, 3)).shape
        torch.Size([2, 10, 3])
        >>> lam = lru.eigenvalues()
        >>> lam.dtype, bool(((lam.abs() >= 0.5 - 1e-6) & (lam.abs() <= 0.9 + 1e-6)).all())
        (torch.complex64, True)
    """

    input_dependent = False

    def __init__(self, input_size: int, state_size: int, output_size: int | None = None, *,
                 r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * math.pi):
        super().__init__()
        if not 0.0 <= r_min <= r_max or r_max <= 0.0:
            raise ValueError(f"need 0 <= r_min <= r_max and r_max > 0, got r_min={r_min}, "
                             f"r_max={r_max}")
        if max_phase <= 0:
            raise ValueError(f"max_phase must be > 0, got {max_phase}")
        I, N = input_size, state_size
        O = input_size if output_size is None else output_size
        self.input_size, self.state_size, self.output_size = I, N, O
        self.state_shape = (N,)
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        dt = torch.get_default_dtype()

        # ring init, in float64: nu = -ln|λ| (> 0 inside the unit circle)
        u1 = torch.rand(N, dtype=torch.float64)
        u2 = torch.rand(N, dtype=torch.float64)
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        theta_log = torch.log(max_phase * u2)
        # γ = sqrt(1 - |λ|²) = sqrt(-expm1(-2ν)), accurate when |λ| is near 1; 1 where |λ| >= 1
        gamma_log = torch.where(nu > 0, 0.5 * torch.log(-torch.expm1(-2 * nu.clamp_min(1e-300))),
                                torch.zeros_like(nu))
        if r_max <= 1.0:
            self.nu_log = nn.Parameter(torch.log(nu).to(dt))
            self.nu = None
        else:
            self.nu_log = None
            self.nu = nn.Parameter(nu.to(dt))
        self.theta_log = nn.Parameter(theta_log.to(dt))
        self.gamma_log = nn.Parameter(gamma_log.to(dt))
        self.B_re = nn.Parameter(torch.randn(N, I) / math.sqrt(2 * I))
        self.B_im = nn.Parameter(torch.randn(N, I) / math.sqrt(2 * I))
        self.C_re = nn.Parameter(torch.randn(O, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(O, N) / math.sqrt(N))
        if O == I:
            self.D = nn.Parameter(torch.randn(O))
            self.skip = None
        else:
            self.D = None
            self.skip = nn.Linear(I, O, bias=False)

    def _lambda(self) -> Tensor:
        """λ [N], complex, with gradient."""
        log_mag = -torch.exp(self.nu_log) if self.nu is None else -self.nu
        return torch.polar(torch.exp(log_mag), torch.exp(self.theta_log))

    def eigenvalues(self) -> Tensor:
        """λ [N], complex (complex64 for float32 parameters), detached."""
        with torch.no_grad():
            return self._lambda()

    def forward(self, x: Tensor, h0: Tensor | None = None) -> Tensor:
        """``x [B, T, I]``, ``h0 [B, N]`` or None -> ``y [B, T, O]`` (real)."""
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, I], got {tuple(x.shape)}")
        Bsz, T, _ = x.shape
        lam = self._lambda()
        gamma = torch.exp(self.gamma_log)
        # γ ⊙ (B x_t) for all steps as one real matmul whose output columns interleave the
        # real and imaginary parts (read as complex without a copy), and Re(C h_t) as one real
        # matmul on the interleaved states: contiguous operands only. With .real/.imag views
        # the backward's matmuls ran on strided operands, 13 s instead of about 1 s at
        # B = 16, T = 4096, N = 256.
        w_in = torch.stack([self.B_re * gamma[:, None], self.B_im * gamma[:, None]], 1)
        b = torch.view_as_complex((x @ w_in.reshape(-1, x.shape[-1]).T)
                                  .view(Bsz, T, self.state_size, 2))
        a = lam.expand(Bsz, T, self.state_size)
        if h0 is not None:
            h0 = h0.to(b.dtype)
        h = self.scan(a, b, h0)  # [B, T, N] complex
        w_out = torch.stack([self.C_re, -self.C_im], 2).reshape(self.C_re.shape[0], -1)
        y = torch.view_as_real(h).reshape(Bsz, T, -1) @ w_out.T  # Re(C h)
        return y + (x * self.D if self.D is not None else self.skip(x))
