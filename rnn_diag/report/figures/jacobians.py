"""Figure 6a: norms of the Jacobian products ‖∂h_{T−1}/∂h_t‖₂ against the distance from the
last step, where recorded (``probes.jacobians``), with the same theory lines as the gradient
profile."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from ._data import Trials
from .gradient_profile import draw_profiles, profile_table
from .style import add_note, figure_style
from .theory import Snapshots

__all__ = ["jacobian_norms"]


def jacobian_norms(trials: pd.DataFrame, gradients: pd.DataFrame,
                   spectra: pd.DataFrame | None = None,
                   lyapunov: pd.DataFrame | None = None) -> Figure:
    """log10 ‖∂h_{T−1}/∂h_t‖₂ (spectral norm of the Jacobian product, mean over the probed
    samples, decades) against the distance T−1−t, laid out as :func:`gradient_profiles`: one
    block of panel rows per seq_len (own y scale), one panel per setting in it (wrapped as in
    the loss figure), first recorded epoch dashed, last one solid, theory lines at the last
    epoch.

    Args:
        trials: the trials table.
        gradients: long table; the rows with ``metric == "jacobian_mean"``, state "h", last
            layer, direction 0 (present when the run had ``probes.jacobians`` on).
        spectra, lyapunov: optional, for the Pascanu bound σ_max^(T−1−t) (Elman RNN) and the
            Lyapunov slope λ₁/ln10, both drawn from 0 at distance 0 (the product is the
            identity there).

    Raises:
        MissingData: no ``jacobian_mean`` rows (Jacobian norms were not recorded).
    """
    info = Trials.from_table(trials)
    df, n_layers = profile_table(info, gradients, "jacobian_mean")
    with figure_style():
        fig, notes = draw_profiles(info, df, Snapshots(info.info, spectra, lyapunov),
                                   ylabel="log10 ‖∂h_{T−1}/∂h_t‖₂ (decades)",
                                   xlabel="distance to the last step T−1−t (steps)")
        if n_layers > 1:
            notes.insert(0, f"last of {n_layers} layers")
        add_note(fig, "; ".join(notes))
    return fig
