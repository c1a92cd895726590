"""The plain-language verdict of one layer: what a signal ``steps`` steps back still weighs.

The label is :func:`rnn_diag.gradient_summary`'s verdict of the Jacobian-product profile
("vanishing", "stable", "exploding", "undetermined"), or "diverged" when the driven trajectory
itself became inf/NaN. "Near the edge of chaos" is added when the top Lyapunov exponent is
within :data:`EDGE_NATS` of zero.
"""

from __future__ import annotations

import math

__all__ = ["EDGE_NATS", "power_of_ten", "verdict_sentence"]

#: |λ₁| at or below this (nats per step; a factor e^0.01 ≈ 1.01 per step, one decade per ~230
#: steps) counts as "near the edge of chaos".
EDGE_NATS = 0.01


def power_of_ten(decades: float) -> str:
    """``10^-87``, ``10^-2.4``, ``10^+3.1``: a log10 value as a power of ten for a sentence.

    Example:
        >>> power_of_ten(-87.2), power_of_ten(-2.44), power_of_ten(3.06), power_of_ten(-math.inf)
        ('10^-87', '10^-2.4', '10^+3.1', '0')
    """
    if math.isnan(decades):
        return "an undefined fraction"
    if decades == -math.inf:
        return "0"
    if decades == math.inf:
        return "an overflowing multiple"
    return f"10^{decades:+.0f}" if abs(decades) >= 10 else f"10^{decades:+.1f}"


def verdict_sentence(verdict: str, steps: int, log10_at_steps: float, horizon: int,
                     decay_per_step: float, lyapunov_top: float, edge: bool) -> str:
    """One sentence for one layer.

    Args:
        verdict: "vanishing", "stable", "exploding", "undetermined" or "diverged".
        steps: ``--steps``: how far back the signal is followed.
        log10_at_steps: log10 ‖∂s_T/∂s_{T-steps}‖ (decades).
        horizon: steps back until 3 decades are lost (``gradient_summary``'s horizon).
        decay_per_step: fitted slope, decades per step.
        lyapunov_top: λ₁, nats per step.
        edge: |λ₁| ≤ :data:`EDGE_NATS`.

    Example:
        >>> verdict_sentence("vanishing", 1000, -87.0, 35, -0.087, -0.2, False)
        'vanishing: a signal 1000 steps back arrives scaled by 10^-87; memory horizon ≈ 35 steps'
    """
    if verdict == "diverged":
        return ("diverged: the driven state became inf or NaN, so the Lyapunov exponents and "
                "Jacobian products are undefined under this input (try a smaller --input-scale)")
    back = f"a signal {steps} steps back arrives scaled by {power_of_ten(log10_at_steps)}"
    if horizon >= steps:
        memory = f"memory horizon ≥ {steps} steps (3 decades are never lost)"
    else:
        memory = f"memory horizon ≈ {horizon} steps"
    edge_text = (f"; near the edge of chaos (top Lyapunov exponent {lyapunov_top:+.4f} "
                 "nats/step ≈ 0)") if edge else ""
    if verdict == "vanishing":
        return f"vanishing: {back}; {memory}{edge_text}"
    if verdict == "exploding":
        rate = f"{decay_per_step:+.3g} decades per step" if math.isfinite(decay_per_step) \
            else "overflowing"
        return f"exploding: {back} (growing {rate}); {memory}{edge_text}"
    if verdict == "stable":
        return f"stable over {steps} steps: {back}; {memory}{edge_text}"
    return f"undetermined: too few finite Jacobian-product norms to fit a decay{edge_text}"
