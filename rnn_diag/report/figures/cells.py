"""How the report speaks of the recurrent cells: which ones are diagonal scans, which of those
decay by an input-dependent factor, and the one conversion of a Lyapunov exponent into steps
that the figures, the findings and the page share.

A *diagonal scan* (``model.cell`` ``lru``, ``mingru``, ``ssm``) runs h_t = a_t ⊙ h_{t-1} + b_t
with a diagonal a_t. Its ``spectra`` rows are the diagonal itself, with ``gate``:

* ``"lambda"``: LRU's fixed complex eigenvalues λ (the same at every step);
* ``"a(x=0)"``: minGRU's and the selective SSM's decays at zero input (1 − σ(b_z), and
  exp(softplus(b_Δ)·A)): the decay applied at a step depends on that step's input, so these
  are one point of an input-dependent quantity, not fixed eigenvalues.

Its ``lyapunov`` rows are one exponent per channel, the time mean of ln|a_t,i| on the training
inputs (nats per step); the largest is the slowest channel, so exp(``lyapunov_top_end``) is
that channel's geometric-mean |a| over the trajectory (for the LRU exactly its |λ|).
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["DIAGONAL_GATES", "SCAN_CELLS", "decade_steps", "is_diagonal_gate", "is_scan",
           "input_dependent"]

LN10 = math.log(10.0)

#: The diagonal scans of the runner: ``model.cell`` -> whether a_t depends on the input.
SCAN_CELLS = {"lru": False, "mingru": True, "ssm": True}

#: ``spectra.gate`` of a diagonal scan -> how a reader is told what the points are.
DIAGONAL_GATES = {"lambda": "fixed eigenvalues λ", "a(x=0)": "a at zero input"}


def is_scan(cell) -> bool:
    """True for a diagonal scan (``lru``, ``mingru``, ``ssm``).

    >>> is_scan("lru"), is_scan("lstm"), is_scan(None)
    (True, False, False)
    """
    return str(cell) in SCAN_CELLS


def input_dependent(cell) -> bool:
    """True for a diagonal scan whose decay a_t depends on the input (``mingru``, ``ssm``).

    >>> input_dependent("ssm"), input_dependent("lru"), input_dependent("rnn")
    (True, False, False)
    """
    return SCAN_CELLS.get(str(cell), False)


def is_diagonal_gate(gate) -> bool:
    """True for the ``gate`` of a diagonal scan's spectra rows (``"lambda"``, ``"a(x=0)"``).

    >>> is_diagonal_gate("a(x=0)"), is_diagonal_gate("hh")
    (True, False)
    """
    return str(gate) in DIAGONAL_GATES


def decade_steps(exponent: float, decades: float = 3.0) -> float:
    """Steps over which a quantity changing by ``exponent`` nats per step changes by
    ``decades`` decades: ``decades · ln 10 / |exponent|``.

    The *3-decade timescale* of a trial is ``decade_steps(lyapunov_top_end)``: the distance over
    which its slowest direction (for a diagonal scan, its slowest channel) loses 3 decades, the
    same 3 decades that define the gradient's horizon. ``inf`` for an exponent of exactly 0,
    ``0`` for −inf, NaN for NaN.

    Example:
        >>> round(decade_steps(-0.002)), decade_steps(0.0), decade_steps(-math.inf)
        (3454, inf, 0.0)
    """
    if exponent is None or pd.isna(exponent):
        return math.nan
    x = abs(float(exponent))
    if math.isinf(x):
        return 0.0
    return math.inf if x == 0 else decades * LN10 / x
