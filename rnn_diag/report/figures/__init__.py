"""The report's figures: pure functions ``DataFrame(s) -> matplotlib Figure``.

Each function takes the stored tables of a run (see README, "Experiments: `rnn-diag run`")
as explicit DataFrame arguments, plots only what they hold (no model diagnostic is computed
here), and returns a new ``matplotlib.figure.Figure`` made without pyplot, so they work in a
notebook and headless alike::

    import pandas as pd
    from rnn_diag.report.figures import loss_history
    run = "reports/weather"
    fig = loss_history(pd.read_parquet(f"{run}/trials.parquet"), pd.read_parquet(f"{run}/curves"))
    fig.savefig("loss.png")

:data:`SECTIONS` lists them in report order, each with its title, caption and the tables it
needs; ``section.build(tables)`` draws it from a ``{name: DataFrame}`` mapping. A figure whose
data were not recorded raises :class:`MissingData`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from ._data import SWEEP, MissingData, sweep_config, table, time_unit
from .fixed_points import fixed_point_portraits, fixed_point_spectra
from .gradient_profile import gradient_profiles
from .heatmap import gradient_heatmaps
from .jacobians import jacobian_norms
from .learning import learning_curves, learning_sweep
from .loss import loss_history
from .lyapunov import lyapunov_spectra
from .phase import phase_diagram
from .predictions import next_step_predictions
from .remedies import has_remedy_axis, remedy_success
from .spectra import weight_spectra
from .style import seq_len_palette

__all__ = [
    "SECTIONS",
    "FigureSection",
    "applies_to",
    "caption_for",
    "MissingData",
    "fixed_point_portraits",
    "fixed_point_spectra",
    "gradient_heatmaps",
    "gradient_profiles",
    "jacobian_norms",
    "learning_curves",
    "loss_history",
    "lyapunov_spectra",
    "next_step_predictions",
    "phase_diagram",
    "remedy_success",
    "seq_len_palette",
    "time_unit",
    "weight_spectra",
]


@dataclass(frozen=True)
class FigureSection:
    """One figure of the report.

    Attributes:
        key: anchor id ("loss", "learning", "remedies", "profile", "heatmap", "phase", "spectra",
            "jacobians", "lyapunov", "predictions", "fixed_points", "fixed_point_eigenvalues").
        title: short heading.
        caption: what the figure shows and what to look for (plain words, 1-3 sentences);
            ``{unit}`` stands for the time axis, "epoch" or "step" (:func:`caption_for`).
        needs: table names that must be present and non-empty.
        build: draws the figure from a ``{table name: DataFrame}`` mapping.
        task_only: the figure is about a task of the runner (e.g. its predictions), so a
            recording of a user's own loop, which has none, leaves it out.
        task_caption: the part of the caption about the task (chance levels), left out for a
            recording.
        applies: ``applies(tables)`` is False when the figure has no place in this run at all
            (e.g. the learning view without a sweep of a task option × cell): the page then
            leaves the section out instead of saying "not recorded". None: always applies.
    """

    key: str
    title: str
    caption: str
    needs: tuple[str, ...]
    build: Callable[[Mapping[str, pd.DataFrame]], Figure]
    task_only: bool = False
    task_caption: str = ""
    applies: Callable[[Mapping[str, pd.DataFrame]], bool] | None = None


def applies_to(section, tables: Mapping[str, pd.DataFrame]) -> bool:
    """Whether ``section`` belongs in the report of these tables (its ``applies``, if any)."""
    test = getattr(section, "applies", None)
    return test is None or bool(test(tables))


def caption_for(section, tables: Mapping[str, pd.DataFrame]) -> str:
    """A section's caption with the time axis of these tables in place of ``{unit}``,
    followed by its ``task_caption`` unless the tables are a recording of a user's loop (no
    task). ``section`` is a :class:`FigureSection` or any object with a ``caption``."""
    trials = tables.get("trials")
    unit = time_unit(trials) if trials is not None else "epoch"
    extra = getattr(section, "task_caption", "")
    text = section.caption if unit == "step" or not extra else f"{section.caption} {extra}"
    return text.replace("{unit}", unit)


def _build_loss(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return loss_history(table(tables, "trials"), table(tables, "curves"))


def _build_learning(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return learning_curves(table(tables, "trials"))


def _has_learning_sweep(tables: Mapping[str, pd.DataFrame]) -> bool:
    trials = table(tables, "trials")
    return trials is not None and learning_sweep(trials) is not None


def _has_remedies(tables: Mapping[str, pd.DataFrame]) -> bool:
    return has_remedy_axis(table(tables, "trials"))


def _build_remedies(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return remedy_success(table(tables, "trials"), sweep_config(table(tables, SWEEP)))


def _build_profile(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return gradient_profiles(table(tables, "trials"), table(tables, "gradients"),
                             table(tables, "spectra"), table(tables, "lyapunov"))


def _build_heatmap(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return gradient_heatmaps(table(tables, "trials"), table(tables, "gradients"))


def _build_phase(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return phase_diagram(table(tables, "trials"))


def _build_spectra(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return weight_spectra(table(tables, "trials"), table(tables, "spectra"))


def _build_jacobians(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return jacobian_norms(table(tables, "trials"), table(tables, "gradients"),
                          table(tables, "spectra"), table(tables, "lyapunov"))


def _build_lyapunov(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return lyapunov_spectra(table(tables, "trials"), table(tables, "lyapunov"))


def _build_predictions(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return next_step_predictions(table(tables, "trials"), table(tables, "predictions"))


def _has_fixed_points(tables: Mapping[str, pd.DataFrame]) -> bool:
    return table(tables, "fixed_points") is not None


def _build_fixed_points(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return fixed_point_portraits(table(tables, "trials"), table(tables, "fixed_points"),
                                 table(tables, "state_trajectories"), table(tables, "pca"))


def _build_fixed_point_eigenvalues(tables: Mapping[str, pd.DataFrame]) -> Figure:
    return fixed_point_spectra(table(tables, "trials"), table(tables, "fixed_points"),
                               table(tables, "fixed_point_eigenvalues"))


SECTIONS: tuple[FigureSection, ...] = (
    FigureSection(
        key="loss",
        title="Loss history",
        caption=(
            "Training loss (solid) and held-out loss (dashed) per {unit}, one colour per "
            "sequence length, one panel per setting."
        ),
        task_caption=(
            "The dotted line is the chance level, the "
            "loss of the best prediction that ignores the input: a curve that stays on it has "
            "learned nothing, and a training loss below it with a held-out loss above it is "
            "memorisation, not learning."
        ),
        needs=("trials", "curves"),
        build=_build_loss,
    ),
    FigureSection(
        key="learning",
        title="Where learning stops",
        caption=(
            "For each cell (a column), above: the held-out metric at the end of training against "
            "the swept task option (median over seeds, band min-max), the filled markers "
            "learned — at least half-way from chance (dotted) to the best possible value "
            "(dashed), the grey threshold — the hollow ones not. Below, in steps: the "
            "gradient's horizon (solid: the farthest step back within 3 decades of the largest "
            "∂L/∂h_k) and the 3-decade timescale of the slowest direction, 3·ln10/|λ₁| from the "
            "top Lyapunov exponent (dash-dotted; for a diagonal scan its slowest channel), with "
            "the dotted line steps = the swept value. Below that line the signal from that far "
            "back arrives more than 3 decades weaker: look whether that is where the cell stops "
            "learning, or whether it stops with the signal still arriving."
        ),
        needs=("trials",),
        build=_build_learning,
        applies=_has_learning_sweep,
    ),
    FigureSection(
        key="remedies",
        title="Remedies",
        caption=(
            "Which remedy works at which memory length, and why. One panel per task, one marker "
            "per remedy (colour) and memory length (shape): up, the fraction of the seeds that "
            "solved the task (the held-out metric at least 80% of the way from chance to the "
            "best possible value, the threshold in each panel's title; a diverged seed counts "
            "as not solved, a failed one is left out); across, the median gradient horizon at "
            "the end of training, in steps (the farthest step back whose ∂L/∂h_k is within 3 "
            "decades of the largest). The dashed lines are the memory lengths, the horizon "
            "each needs: look whether the remedies that solve a length are the ones whose "
            "horizon reaches its line. That comparison holds where the steps with a loss are few "
            "(at most a quarter of the memory: adding, copy): with a loss at many steps "
            "(delayed XOR) the summed gradient's horizon is at least about the number of loss "
            "steps whatever the memory, so there the line is left out and λ₁ is the measure "
            "to look at. Seeds are only pooled "
            "within one setting (a marker shape); the table gives the counts, the median "
            "horizon (h) and top Lyapunov exponent (λ, nats per step) of each remedy."
        ),
        needs=("trials",),
        build=_build_remedies,
        applies=_has_remedies,
    ),
    FigureSection(
        key="profile",
        title="Gradient profile",
        caption=(
            "How strongly the learning signal reaches back: log10 of the gradient norm "
            "‖∂L/∂h_t‖ at each step against its distance from the loss, one block of rows per "
            "sequence length T with its own y scale (T=1000 can fall hundreds of decades, T=10 "
            "a few), one panel per setting, the first recorded {unit} dashed and the last solid. A "
            "straight falling line is exponential vanishing (every 1 down is 10× weaker), a "
            "rising one exploding; look at how the slope changes from dashed to solid and "
            "across settings. Grey, for the last {unit}: dash-dotted the slope predicted by the "
            "top Lyapunov exponent, dotted Pascanu's upper bound σ_max^(T−1−t) (vanilla RNN "
            "only) — a solid line above the dotted one would be an error."
        ),
        needs=("trials", "gradients"),
        build=_build_profile,
    ),
    FigureSection(
        key="heatmap",
        title="Gradient profile during training",
        caption=(
            "One panel per trial: the colour is log10 ‖∂L/∂h_t‖ at each distance from the loss "
            "(x) and each recorded {unit} (y, init at the bottom). Colour changing along x is the "
            "decay over time steps; look for rows that change as training goes on — the "
            "gradient reaching further back (colour spreading right) or collapsing."
        ),
        needs=("trials", "gradients"),
        build=_build_heatmap,
    ),
    FigureSection(
        key="phase",
        title="Phase diagram",
        caption=(
            "Each cell is one setting and sequence length: the colour is the fitted change of "
            "log10 ‖∂L/∂h_t‖ per step back in time (blue: the gradient shrinks, red: it grows), "
            "and the label is the verdict. The same decay per step is harmless at T=10 and "
            "fatal at T=1000, so look for where the verdict turns to vanishing as T grows, and "
            "whether training moves a cell from the left panel to the right one. With a single "
            "sequence length and two swept settings (e.g. cell × lag), one is the rows and the "
            "other the columns."
        ),
        needs=("trials",),
        build=_build_phase,
    ),
    FigureSection(
        key="spectra",
        title="Spectrum of the recurrent weights",
        caption=(
            "The recurrent matrix W_hh at initialisation (grey) and after training (colour): "
            "its eigenvalues with the unit circle, its singular values, and the spectral "
            "radius ρ and spectral norm σ_max at each snapshot. Eigenvalues inside the circle "
            "mean a decaying linear recurrence; for a tanh RNN σ_max < 1 guarantees vanishing "
            "gradients, while ρ < 1 < σ_max (common for random init) guarantees nothing. For a "
            "diagonal scan the points are the diagonal of its recurrence: the LRU's fixed "
            "eigenvalues λ, and for minGRU and the selective SSM the decay a at zero input — "
            "their decay changes with each input, so these points are not fixed eigenvalues "
            "(the Lyapunov spectrum gives its average over the training inputs). With more than "
            "6 settings only the eigenvalues are drawn, one panel per setting."
        ),
        needs=("trials", "spectra"),
        build=_build_spectra,
    ),
    FigureSection(
        key="jacobians",
        title="Jacobian-product norms",
        caption=(
            "How much a change of the hidden state at step t still moves the last state: "
            "log10 of the spectral norm of the product of step Jacobians ∂h_{T−1}/∂h_t, "
            "against the distance, laid out like the gradient profile (a block of rows per T "
            "with its own y scale, a panel per setting, dashed: first {unit}, solid: last). "
            "Unlike the gradient "
            "it does not depend on the loss, so it shows the network's memory itself; compare "
            "the solid line's slope with the grey dash-dotted Lyapunov line and, for a vanilla "
            "RNN, check that it stays under the grey dotted Pascanu bound."
        ),
        needs=("trials", "gradients"),
        build=_build_jacobians,
    ),
    FigureSection(
        key="lyapunov",
        title="Lyapunov spectrum",
        caption=(
            "The Lyapunov exponents of the recurrent dynamics, largest first, at init (dashed) "
            "and after training (solid), in nats per step (right axis: decades per step). The "
            "largest one is the long-run slope of the gradient profile: below 0 the signal "
            "decays exponentially with distance, above 0 it grows; training that pushes it "
            "towards 0 lengthens the memory. A diagonal scan (lru, mingru, ssm) has one "
            "exponent per channel, the mean of ln|a_t,i| over the training inputs (for the "
            "LRU exactly ln|λ_i|): the largest is its slowest channel, whose |a| averaged "
            "exp(λ₁) per step."
        ),
        needs=("trials", "lyapunov"),
        build=_build_lyapunov,
    ),
    FigureSection(
        key="predictions",
        title="Next-step prediction",
        caption=(
            "What each trained model predicts for the last held-out window: the softmax "
            "probability of every class (a probability, not a raw logit), the actual next "
            "step boxed and the predicted class in bold. Probabilities all close to chance "
            "mean the model learned nothing it can use, which is the truth for i.i.d. data."
        ),
        needs=("trials", "predictions"),
        build=_build_predictions,
        task_only=True,
    ),
    FigureSection(
        key="fixed_points",
        title="Fixed points and slow points",
        caption=(
            "Where the trained network's state comes to rest: the fixed points h* = F(h*, x) "
            "of the top layer's step at a constant input (found by minimising "
            "q = ½‖F(h, x) − h‖² from states sampled on real trajectories), drawn with a few "
            "held-out sequences' hidden-state trajectories (thin grey) in the top 3 principal "
            "components of that trial's recorded hidden states (for an LSTM of its joint state "
            "[h | c]); the axis labels give each component's share of the variance when it was "
            "recorded. Colour and marker are the stability from the Jacobian's eigenvalues: "
            "stable (all |λ| < 1, an attractor: a memory), saddle (some |λ| > 1; the short "
            "line is its leading unstable direction, along which the state leaves it), "
            "unstable (all |λ| > 1), marginal (none above 1, some within a small tolerance of "
            "1). Hollow "
            "markers are slow points — candidates where q stayed above the tolerance, places "
            "the state moves slowly without stopping. One panel per setting, its first seed, "
            "at the end of training."
        ),
        needs=("trials", "fixed_points"),
        build=_build_fixed_points,
        applies=_has_fixed_points,
    ),
    FigureSection(
        key="fixed_point_eigenvalues",
        title="Eigenvalues at the fixed points",
        caption=(
            "The eigenvalues of the step Jacobian ∂F/∂h at each fixed point of the figure "
            "above, in the complex plane with the unit circle, coloured and shaped by the "
            "point's stability (hollow: a slow point). Inside the circle a direction decays "
            "near the point, by |λ| per step; outside it grows. An eigenvalue just inside the "
            "circle is a slow direction — a stable point with |λ₁| close to 1 forgets slowly, "
            "and a line of nearly-marginal points is an approximate line attractor."
        ),
        needs=("trials", "fixed_points", "fixed_point_eigenvalues"),
        build=_build_fixed_point_eigenvalues,
        applies=_has_fixed_points,
    ),
)
