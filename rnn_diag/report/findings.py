"""Findings in plain words, computed from a run's stored tables.

Every number in a finding is read from ``trials.parquet`` or the ``summaries`` table (the
output of :func:`rnn_diag.gradient_summary`); nothing is re-derived in another way, so a
finding and the figure it links to always agree. Definitions (see
:mod:`rnn_diag.dynamics.summary`): the *horizon* is the largest distance back from the anchor
step (where the gradient enters) whose log10‖∂L/∂h_k‖ is within 3 decades of its largest
value; *decay_per_step* is the least-squares slope in decades per step back (negative =
vanishing); the *verdict* is "vanishing" when the fitted change over the window is ≤ −3
decades and "exploding" when it is ≥ +1.

Diagonal scans (``model.cell`` lru, mingru, ssm) are spoken of by their slowest channel: its
top Lyapunov exponent λ₁ (``lyapunov_top_end``, nats per step) is the time mean of ln|a_t| on
the training inputs, so exp(λ₁) is that channel's |a| averaged (geometrically) over them — for
the LRU, whose λ is fixed, exactly its |λ| — and the gradient along it changes by 3 decades in
3·ln 10/|λ₁| steps, the *3-decade timescale* (:func:`~.figures.cells.decade_steps`), the same 3
decades as the horizon. Where each cell stops learning in a sweep of a task option × cell is
judged as in :mod:`.figures.learning`.

A *setting* is one combination of the swept values other than the seed, a *panel setting* one
other than the sequence length and the seed (the vocabulary of
:mod:`rnn_diag.experiments.labels`); where a setting has several seeds, its numbers are medians
over them (and say so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..experiments.labels import format_value, short_names
from .figures import time_unit
from .figures.cells import decade_steps, input_dependent, is_scan
from .figures.learning import (
    LEARNED_FRACTION,
    LearningSweep,
    family_reach,
    learning_sweep,
    steps_text,
)
from .figures.remedies import (
    SOLVED_FRACTION,
    baseline_remedy,
    exponent_text,
    horizon_measures_memory,
    number_text,
    remedy_table,
    repeated_seeds_text,
    task_threshold_text,
)

__all__ = ["Finding", "compute_findings", "grid_order", "setting_keys", "setting_labels"]

SEED = "train.seed"
_MAX_REACH = 6  # reach sentences at most (one per seq_len, worst setting first)
_MEMORISE = 0.01  # training loss this far below chance (relative) counts as fitting it
_ONE_TOL = 1e-4  # a spectral radius or norm within this of 1 is not "below 1"


@dataclass(frozen=True)
class Finding:
    """One sentence and the anchor (``#key``) of the figure or table that shows it."""

    text: str
    key: str


def setting_keys(trials: pd.DataFrame, swept: Sequence[str]) -> list[str]:
    """The swept keys that define a setting: every swept column but the seed."""
    return [k for k in swept if k != SEED and k in trials.columns]


def setting_labels(trials: pd.DataFrame, swept: Sequence[str]) -> pd.Series:
    """One text per trial naming its setting, e.g. ``"seq_len 300, weight_scale 0.5"`` (pass
    ``swept`` without ``task.seq_len`` for its panel setting).

    Example:
        >>> t = pd.DataFrame({"task.seq_len": [10, 10], "model.weight_scale": [None, 0.5],
        ...                   "train.seed": [0, 1]})
        >>> setting_labels(t, ["task.seq_len", "model.weight_scale", "seed"]).tolist()
        ['seq_len 10, default init', 'seq_len 10, weight_scale 0.5']
    """
    keys = setting_keys(trials, swept)
    if not keys:
        return pd.Series(["all trials"] * len(trials), index=trials.index, dtype=object)
    short = short_names(keys)
    # column by column: a row of mixed ints and floats would turn 10 into 10.0
    parts = [_whole(trials[k]).map(lambda v, k=k: _setting_text(short[k], k, v))
             for k in keys]
    labels = parts[0]
    for part in parts[1:]:
        labels = labels + ", " + part
    return labels


def _whole(column: pd.Series) -> pd.Series:
    """``column`` as objects, a float column whose values are all whole numbers as ints (a
    stored ``Int64`` column reads back as float64: lag 300, not 300.0).

    Example:
        >>> _whole(pd.Series([2.0, float("nan")])).tolist(), _whole(pd.Series([0.5, 1.0])).tolist()
        ([2, nan], [0.5, 1.0])
    """
    values = column.astype(object)
    if not pd.api.types.is_float_dtype(column):
        return values
    present = column.dropna()
    if len(present) == 0 or not all(float(v).is_integer() for v in present):
        return values
    return pd.Series([v if pd.isna(v) else int(v) for v in values], index=column.index,
                     dtype=object)


def _setting_text(short: str, key: str, value) -> str:
    """``"seq_len 300"``; an unset weight scale reads "default init" (as in the figures)."""
    if key == "model.weight_scale" and format_value(value) == "null":
        return "default init"
    if key == "recording.name":  # a recording's own name needs no key before it
        return format_value(value)
    return f"{short} {format_value(value)}"


def _trial_labels(trials: pd.DataFrame, swept: Sequence[str], labels: pd.Series) -> pd.Series:
    """The setting of each trial, with its seed when seeds are swept."""
    if SEED not in swept or SEED not in trials:
        return labels
    return labels + ", seed " + trials[SEED].map(format_value)


def _pct(x: float) -> str:
    """A fraction as a percentage with two significant digits (``0.0143`` -> ``"1.4%"``)."""
    p = 100.0 * x
    if p >= 10:
        return f"{p:.0f}%"
    return f"{p:.2g}%"


#: Top Lyapunov exponents within this many nats per step of 0 are called near-neutral: a
#: change of one decade takes more than 230 steps, and a finite-trajectory estimate (a few
#: hundred steps) does not resolve the sign reliably.
_NEUTRAL = 0.01


def _span(values: pd.Series, sep: str = "–") -> str:
    """``min–max`` of ``values`` with :func:`_down`, or one value when both read the same.

    Example:
        >>> _span(pd.Series([0.61, 0.61])), _span(pd.Series([0.5, 0.75]), " to ")
        ('0.610', '0.500 to 0.750')
    """
    lo, hi = _down(values.min()), _down(values.max())
    return lo if lo == hi else f"{lo}{sep}{hi}"


def _down(x: float) -> str:
    """Three decimals, rounded down, so a value below 1 never reads as 1.000.

    Example:
        >>> _down(0.99962), _down(1.08), _down(0.5)
        ('0.999', '1.080', '0.500')
    """
    return f"{math.floor(x * 1000 + 1e-9) / 1000:.3f}"


def _col(trials: pd.DataFrame, name: str) -> pd.Series:
    if name in trials:
        return pd.to_numeric(trials[name], errors="coerce")
    return pd.Series(np.nan, index=trials.index)


def _seeds_note(n: int) -> str:
    return f" (median over {n} seeds)" if n > 1 else ""


def _list(items: Sequence[str], limit: int = 4) -> str:
    items = list(items)
    if len(items) > limit:
        return "; ".join(items[:limit]) + f"; and {len(items) - limit} more"
    return "; ".join(items)


def _status(trials: pd.DataFrame, labels: pd.Series) -> list[Finding]:
    status = trials.get("status", pd.Series("ok", index=trials.index)).fillna("unknown")
    bad = trials[status != "ok"]
    if bad.empty:
        return []
    parts = []
    for i, row in bad.iterrows():
        error = str(row.get("error") or "").strip()
        if len(error) > 120:
            error = error[:117] + "..."
        parts.append(f"{labels[i]} {row.get('status')}" + (f" ({error})" if error else ""))
    return [Finding(
        f"{len(bad)} of {len(trials)} trials did not finish normally: {_list(parts)}. "
        "They are marked in the table; the figures show whatever they recorded before "
        "stopping.",
        "trials",
    )]


def _probe_warnings(trials: pd.DataFrame, labels: pd.Series) -> list[Finding]:
    """The ProbeWarnings a recording kept (``trials.warnings``): what the probe could not follow
    exactly, which the numbers of that trial carry."""
    if "warnings" not in trials:
        return []
    parts = []
    for i, text in trials["warnings"].items():
        if isinstance(text, str) and text.strip():
            lines = [line.replace("rnn_diag: ", "", 1) for line in text.strip().splitlines()]
            parts.append(f"{labels[i]}: {' / '.join(lines)}")
    if not parts:
        return []
    return [Finding(f"The probe warned while recording, and the numbers of these trials carry "
                    f"the caveat: {_list(parts, limit=3)}.", "trials")]


def _verdicts(trials: pd.DataFrame, unit: str = "epoch") -> list[Finding]:
    verdict = trials.get("verdict_last")
    if verdict is None or verdict.notna().sum() == 0:
        return []
    n = int(verdict.notna().sum())
    counts = verdict.value_counts()
    if n == 1:
        word = {"vanishing": "vanishes", "exploding": "explodes",
                "undetermined": "has no readable trend (fewer than two finite points)"}.get(
            counts.index[0], "is stable")
        return [Finding(
            f"At the last recorded {unit} the gradient {word} (vanishing: the fitted line falls "
            "by 3 decades or more over the window; exploding: it rises by 1 decade or more).",
            "profile")]
    words = [f"vanishes in {counts.get('vanishing', 0)}",
             f"explodes in {counts.get('exploding', 0)}",
             f"is stable in {counts.get('stable', 0)}"]
    if counts.get("undetermined", 0):
        words.append(f"has no readable trend (fewer than two finite points) in "
                     f"{counts['undetermined']}")
    return [Finding(
        f"At the last recorded {unit} the gradient {', '.join(words)} of the {n} trials with a "
        "gradient profile (vanishing: the fitted line falls by 3 decades or more over the "
        "window; exploding: it rises by 1 decade or more).",
        "profile",
    )]


def _top_layer(summaries: pd.DataFrame) -> pd.DataFrame:
    """The summaries of each trial's top layer, first direction (empty when the table lacks
    the columns the findings read)."""
    need = {"trial", "epoch", "layer", "horizon", "anchor"}
    if summaries.empty or not need <= set(summaries.columns):
        return pd.DataFrame()
    s = summaries
    if "direction" in s:
        s = s[s.direction == s.groupby("trial").direction.transform("min")]
    return s[s.layer == s.groupby("trial").layer.transform("max")]


def _last_summaries(summaries: pd.DataFrame) -> pd.DataFrame:
    """Per trial: the summary of the last recorded epoch, top layer, first direction."""
    s = _top_layer(summaries)
    if s.empty:
        return s
    s = s[s.epoch == s.groupby("trial").epoch.transform("max")]
    return s.drop_duplicates("trial").set_index("trial")


def _reach(trials: pd.DataFrame, summaries: pd.DataFrame, labels: pd.Series,
           panel_settings: pd.Series) -> list[Finding]:
    """How far back the signal reaches, per setting, from the stored horizon and anchor.

    One sentence per *panel setting* (the swept values other than seq_len and seed) at its
    longest sequence, so the effect of the panel setting shows at a glance; with a single
    panel setting, one per sequence length instead.
    """
    last = _last_summaries(summaries)
    if last.empty:
        return []
    rows = []
    for i, row in trials.iterrows():
        if row["id"] not in last.index:
            continue
        s = last.loc[row["id"]]
        if not (s["horizon"] >= 0):  # -1: nothing finite
            continue
        seq_len = row.get("task.seq_len")
        rows.append({"setting": labels[i], "panel_setting": panel_settings[i],
                     "seq_len": -1 if seq_len is None or pd.isna(seq_len) else seq_len,
                     "horizon": float(s["horizon"]), "window": float(s["anchor"]) + 1})
    if not rows:
        return []
    df = pd.DataFrame(rows)
    grouped = df.groupby("setting", sort=False).agg(
        horizon=("horizon", "median"), window=("window", "median"),
        panel_setting=("panel_setting", "first"),
        seq_len=("seq_len", "first"), n=("horizon", "size"))
    grouped["fraction"] = (grouped.horizon + 1) / grouped.window
    short = grouped[grouped.horizon + 1 < grouped.window]
    if grouped.panel_setting.nunique() > 1:
        short = short.sort_values("seq_len", kind="stable").groupby(
            "panel_setting", sort=False).tail(1)
        short = short.loc[[c for c in grouped.index if c in short.index]]  # config order
    out = []
    for setting, g in short.head(_MAX_REACH).iterrows():
        h, w = int(round(g.horizon)), int(round(g.window))
        out.append(Finding(
            f"At {setting}, ∂L/∂h_k fell more than 3 decades below its largest value beyond "
            f"{h} step{'s' if h != 1 else ''} back{_seeds_note(int(g.n))}: "
            f"{'only ' if g.fraction < 0.5 else ''}the last {h + 1} of {w} steps "
            f"({_pct(g.fraction)} of the window) receive learning signal.",
            "profile",
        ))
    full = grouped[grouped.horizon + 1 >= grouped.window]
    if len(full) and len(grouped) == 1:
        out.append(Finding("The gradient stays within 3 decades of its largest value over the "
                           "whole window.", "profile"))
    elif len(full):
        out.append(Finding(
            f"The gradient stays within 3 decades of its largest value over the whole window in "
            f"{len(full)} of {len(grouped)} setting{'s' if len(grouped) != 1 else ''}: "
            f"{_list(list(full.index))}.",
            "profile",
        ))
    return out


def _exploding(trials: pd.DataFrame, labels: pd.Series) -> list[Finding]:
    verdict = trials.get("verdict_last")
    if verdict is None:
        return []
    exp = trials[verdict == "exploding"]
    if exp.empty:
        return []
    parts = []
    for setting, g in exp.groupby(labels[exp.index], sort=False):
        slope = float(np.nanmedian(_col(g, "decay_per_step_last")))
        ratio = float(np.nanmedian(_col(g, "ratio_log10_last")))
        text = f"{setting}: {slope:+.3f} decades per step back"
        if math.isfinite(ratio):
            text += f", ‖∂L/∂h_0‖ is {ratio:+.1f} decades from ‖∂L/∂h_T−1‖"
        parts.append(text + _seeds_note(len(g)))
    return [Finding(
        "The gradient explodes (grows going back in time, so the most distant steps dominate "
        f"the weight update) at {_list(parts)}.",
        "profile",
    )]


def _chance(trials: pd.DataFrame, labels: pd.Series) -> list[Finding]:
    ok = trials[trials.get("status", "ok") == "ok"] if "status" in trials else trials
    chance, val, train = (_col(ok, c) for c in ("chance_loss", "val_loss", "train_loss"))
    known = chance.notna() & val.notna()
    if not known.any():
        return []
    out = []
    below = known & (val < chance)
    best = (val - chance)[known].idxmin()
    where = f" ({labels[best]})" if known.sum() > 1 else ""
    best_text = (f"the best validation loss is {val[best]:.4f}{where} against a "
                 f"chance loss of {chance[best]:.4f}")
    if not below.any():
        out.append(Finding(
            f"No trial predicts held-out data better than chance: {best_text}.", "loss"))
    else:
        margin = float((chance[best] - val[best]) / chance[best])
        small = (f": less than {_MEMORISE:.0%} below chance, too little to call it learning"
                 if margin < _MEMORISE else "")
        out.append(Finding(
            f"{int(below.sum())} of {int(known.sum())} finished trials "
            f"end{'s' if below.sum() == 1 else ''} with a validation loss below chance; "
            f"{best_text}{small}.", "loss"))
    memorise = known & train.notna() & (train < chance * (1 - _MEMORISE)) & (val >= chance)
    if memorise.any():
        parts = [f"{labels[i]} (train {train[i]:.4f}, validation {val[i]:.4f})"
                 for i in ok.index[memorise]]
        out.append(Finding(
            f"Training loss more than {_MEMORISE:.0%} below chance while the validation loss is "
            f"not below it — memorisation of the training windows, not learning: "
            f"{_list(parts)}.", "loss"))
    return out


def _nonlinearity(trials: pd.DataFrame, config: Mapping) -> pd.Series:
    if "model.nonlinearity" in trials:
        return trials["model.nonlinearity"].astype(object)
    model = config.get("model") or {}
    value = model.get("nonlinearity", "tanh") if isinstance(model, Mapping) else "tanh"
    return pd.Series(value, index=trials.index, dtype=object)


def _pascanu(trials: pd.DataFrame, labels: pd.Series, config: Mapping) -> list[Finding]:
    """Spectral norm σ_max and radius ρ of W_hh at init, for tanh RNN cells only."""
    cell = trials.get("model.cell", pd.Series("rnn", index=trials.index))
    tanh_rnn = (cell == "rnn") & (_nonlinearity(trials, config) == "tanh")
    sigma, rho = _col(trials, "spectral_norm_init"), _col(trials, "spectral_radius_init")
    slope = _col(trials, "decay_per_step_first")
    out = []
    # ρ is set by weight_scale exactly (1.0 gives 0.99999994 in float32): a margin keeps a
    # rounding error from reading as "below 1"
    below = 1 - _ONE_TOL
    forced = tanh_rnn & (sigma < below)
    if forced.any():
        settings = list(dict.fromkeys(labels[forced]))
        lo, hi = np.nanmin(slope[forced]), np.nanmax(slope[forced])
        fall = f"{-hi:.2f}" if f"{-hi:.2f}" == f"{-lo:.2f}" else f"{-hi:.2f} to {-lo:.2f}"
        span = (f"; their gradients before training fall by {fall} decades per step back"
                if np.isfinite(lo) and lo < 0 and hi < 0 else "")
        out.append(Finding(
            f"In {int(forced.sum())} trial{'s' if forced.sum() != 1 else ''} the spectral norm "
            f"σ_max of W_hh at initialisation is below 1 ({_span(sigma[forced], ' to ')}): "
            f"for a tanh RNN whose loss reads the last step this "
            f"bounds ‖∂L/∂h_k‖ by σ_max^(T−k)·‖∂L/∂h_T‖, so the gradient must vanish "
            f"(Pascanu et al., 2013){span}. Settings: {_list(settings)}.",
            "spectra",
        ))
    gap = tanh_rnn & (rho < below) & (sigma >= 1)
    if gap.any():
        settings = list(dict.fromkeys(labels[gap]))
        out.append(Finding(
            f"In {int(gap.sum())} trial{'s' if gap.sum() != 1 else ''} the spectral radius ρ of "
            f"W_hh at initialisation is below 1 but σ_max is not ({_span(rho[gap])} vs "
            f"{_span(sigma[gap])}): the "
            "guarantee of vanishing does not apply, ρ < 1 alone does not decide. Settings: "
            f"{_list(settings)}.",
            "spectra",
        ))
    return out


def _lyapunov(trials: pd.DataFrame, labels: pd.Series) -> list[Finding]:
    top = _col(trials, "lyapunov_top_end")
    finite = top[np.isfinite(top)]
    collapsed = int((top == -np.inf).sum())
    texts = []
    if len(finite):
        lo, hi = finite.idxmin(), finite.idxmax()
        per_decade = "over long sequences the gradient norm changes by about exponent / ln 10 " \
                     "decades per step back"
        if len(finite) == 1:
            texts.append(
                f"The largest Lyapunov exponent at the end of training is {_nats(top[lo])} nats "
                f"per step ({labels[lo]}); {per_decade}, i.e. {_nats(top[lo] / math.log(10))}.")
        else:
            texts.append(
                f"The largest Lyapunov exponent at the end of training ranges from "
                f"{_nats(top[lo])} ({labels[lo]}) to {_nats(top[hi])} nats per step "
                f"({labels[hi]}); {per_decade}, i.e. {_nats(top[lo] / math.log(10))} to "
                f"{_nats(top[hi] / math.log(10))}.")
        cell = trials.get("model.cell", pd.Series("rnn", index=trials.index))
        scan = cell.reindex(finite.index).map(is_scan)
        positive = (finite > _NEUTRAL) & ~scan
        if positive.any():
            n = int(positive.sum())
            texts.append(
                f"{n} trial{'s end' if n != 1 else ' ends'} with an exponent above "
                f"+{_NEUTRAL} nats per step: chaotic dynamics, where perturbations and gradients "
                f"grow ({_list(list(dict.fromkeys(labels[finite.index[positive]])))}).")
        growing = (finite > _NEUTRAL) & scan
        if growing.any():
            n = int(growing.sum())
            texts.append(
                f"{n} diagonal-scan trial{'s end' if n != 1 else ' ends'} with an exponent above "
                f"+{_NEUTRAL} nats per step: its slowest channel's |a| exceeds 1 on average, so "
                f"its state and gradient grow without bound "
                f"({_list(list(dict.fromkeys(labels[finite.index[growing]])))}).")
        neutral = finite.abs() <= _NEUTRAL
        if neutral.any():
            n = int(neutral.sum())
            texts.append(
                f"{n} trial{'s end' if n != 1 else ' ends'} within ±{_NEUTRAL} nats per step of 0 "
                f"({_list(list(dict.fromkeys(labels[finite.index[neutral]])))}): near-neutral "
                "dynamics, where the gradient neither vanishes nor explodes over a few hundred "
                "steps, the regime in which long memory is possible.")
    if collapsed:
        settings = list(dict.fromkeys(labels[top == -np.inf]))
        texts.append(
            f"{collapsed} trial{'s end' if collapsed != 1 else ' ends'} with an exponent of −∞: "
            f"the state collapses to exactly zero (e.g. dead relu units), so no gradient "
            f"flows back through time at all ({_list(settings)}).")
    return [Finding(" ".join(texts), "lyapunov")] if texts else []


def _nats(x: float) -> str:
    """An exponent in nats per step: three decimals, two significant digits below 0.01.

    Example:
        >>> _nats(-0.69), _nats(-0.002), _nats(-0.00234), _nats(0.0461)
        ('-0.690', '-0.002', '-0.0023', '+0.046')
    """
    return f"{x:+.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:+.2g}"


def _modulus(exponent: float) -> str:
    """exp(exponent) with three decimals, or as many more as it takes to tell it from 1 (an
    |a| below 1 never reads 1.000).

    Example:
        >>> _modulus(-0.002), _modulus(-0.0004), _modulus(0.0202), _modulus(0.0)
        ('0.998', '0.9996', '1.020', '1.000')
    """
    v = math.exp(exponent)
    digits = 3
    while v != 1.0 and float(f"{v:.{digits}f}") == 1.0 and digits < 12:
        digits += 1
    return f"{v:.{digits}f}"


def _distance(row: pd.Series, config: Mapping) -> tuple[str, float] | None:
    """The distance a trial's timescale is compared with: its lag when the task has one (a
    column, or the config's ``task.lag``), else its window (``task.seq_len``)."""
    lag = row.get("task.lag")
    if lag is None or pd.isna(lag):
        task = config.get("task") if isinstance(config.get("task"), Mapping) else {}
        lag = task.get("lag")
    if lag is not None and not pd.isna(lag):
        return f"the lag of {int(lag)} steps", float(lag)
    seq_len = row.get("task.seq_len")
    if seq_len is not None and not pd.isna(seq_len):
        return f"the window of {int(seq_len)} steps", float(seq_len)
    return None


def _slowest_channel(cell: str, where: str, exponent: float, distance) -> str:
    """One sentence on a diagonal scan's slowest channel (see the module docstring)."""
    head = f"{cell} ({where})" if where else cell
    if exponent == -math.inf:
        return (f"{head}: every channel's |a| is exactly 0 (top Lyapunov exponent −∞), so no "
                "gradient flows back through time.")
    if input_dependent(cell):
        what = f"the slowest channel's |a| averaged {_modulus(exponent)} over the training inputs"
    else:
        what = f"the slowest channel's eigenvalue has |λ| = {_modulus(exponent)}"
    return (f"{head}: {what} (top Lyapunov exponent {_nats(exponent)} nats/step)"
            f"{_decay_clause(exponent, distance, ': the gradient along that channel ')}.")


def _decay_clause(exponent: float, distance, lead: str) -> str:
    """``lead`` + "falls 3 decades in about 3,450 steps, longer than the lag (300 steps)"."""
    if exponent == 0:
        return f"{lead}neither falls nor grows"
    verb = "falls" if exponent < 0 else "grows"
    text = f"{lead}{verb} 3 decades in about {steps_text(decade_steps(exponent))} steps"
    if exponent < 0 and distance is not None:
        name, steps = distance
        if decade_steps(exponent) >= steps:
            text += f", longer than {name}"
        else:
            text += (f", shorter than {name}: over that distance even the slowest channel loses "
                     "more than 3 decades")
    return text


def _slowest_short(where: str, exponent: float, distance) -> str:
    """The same numbers as :func:`_slowest_channel`, as a clause for another setting."""
    if exponent == -math.inf:
        return f"{where}: |a| = 0"
    return (f"{where}: {_modulus(exponent)} ({_nats(exponent)} nats/step"
            f"{_decay_clause(exponent, distance, ', ')})")


#: Settings per scan cell told in the clauses after the first sentence, at most (evenly
#: picked beyond, first and last kept).
_MAX_SCAN = 6


def _scan_decays(trials: pd.DataFrame, swept: Sequence[str], config: Mapping) -> list[Finding]:
    """Per diagonal scan: its slowest channel's |a| (or |λ|) and 3-decade timescale at the end
    of training, compared with the lag or the window — in full for its last setting (the
    longest lag of a lag sweep), in short for the others; medians over seeds."""
    cell = trials.get("model.cell", pd.Series("rnn", index=trials.index)).astype(object)
    top = _col(trials, "lyapunov_top_end")
    scan = cell.map(is_scan) & top.notna()
    if not scan.any():
        return []
    where = setting_labels(trials, [k for k in swept if k != "model.cell"])
    where = where.where(where != "all trials", "")
    out = []
    for name in dict.fromkeys(cell[scan]):
        mine = trials.index[scan & (cell == name)]
        groups = []
        for setting, idx in pd.Series(mine, index=mine).groupby(where[mine], sort=False):
            idx = list(idx)
            groups.append((setting, len(idx), float(np.median(top[idx])),
                           _distance(trials.loc[idx[0]], config)))
        setting, n, exponent, distance = groups[-1]
        place = setting + (f", median over {n} seeds" if n > 1 else "")
        text = _slowest_channel(str(name), place, exponent, distance)
        others = groups[:-1]
        if others:
            picked = [others[i] for i in np.unique(np.linspace(
                0, len(others) - 1, min(_MAX_SCAN, len(others))).round().astype(int))]
            what = "|λ|" if not input_dependent(name) else "mean |a|"
            text += (f" The slowest channel's {what} at the other settings: "
                     + "; ".join(_slowest_short(g[0], g[2], g[3]) for g in picked) + ".")
            if len(picked) < len(others):
                text += f" ({len(others) - len(picked)} more settings: the Lyapunov figure.)"
        out.append(Finding(text, "lyapunov"))
    return out


#: Fixed-point classes counted in ``trials.parquet`` (``fixed_points_<class>_end``), with
#: their names in a finding (singular, plural).
_FP_CLASSES = (("stable", "stable fixed point", "stable fixed points"),
               ("saddle", "saddle", "saddles"),
               ("unstable", "unstable fixed point", "unstable fixed points"),
               ("marginal", "marginal fixed point", "marginal fixed points"))
#: Settings told in the fixed-point finding, at most.
_MAX_FP = 6


def _count_text(values: pd.Series, one: str, many: str) -> str:
    """``"8 stable fixed points"``: the median of ``values`` (seeds), with the range when the
    seeds differ (``"8 (7–9) saddles"``).

    Example:
        >>> _count_text(pd.Series([1.0]), "saddle", "saddles")
        '1 saddle'
        >>> _count_text(pd.Series([7.0, 8.0, 9.0]), "saddle", "saddles")
        '8 (7–9) saddles'
    """
    median = float(values.median())
    text = f"{median:g}"
    if values.min() != values.max():
        text += f" ({values.min():g}–{values.max():g})"
    return f"{text} {one if median == 1 else many}"


def _bits(row: pd.Series, config: Mapping) -> int | None:
    """The flip-flop's number of bits: the column ``task.bits`` (swept), else the config's
    ``task.bits`` when the trial's task is the one the config names; None when unknown."""
    value = row.get("task.bits")
    if value is None or pd.isna(value):
        task = config.get("task") if isinstance(config.get("task"), Mapping) else {}
        if task.get("name") not in (None, row.get("task.name")):
            return None
        value = task.get("bits")
    try:
        return int(value) if value is not None and not pd.isna(value) else None
    except (TypeError, ValueError):
        return None


def _against_bits(stable: float, bits: int | None) -> str:
    """How a count of stable points compares with the 2^N memories of an N-bit flip-flop.

    Example:
        >>> _against_bits(8.0, 3), _against_bits(8.0, None)
        (' (= 2^3, one per pattern of the 3 bits)', '')
    """
    if bits is None or not math.isfinite(stable):
        return ""
    need = 2 ** bits
    if stable == need:
        return f" (= 2^{bits}, one per pattern of the {bits} bits)"
    word = "fewer" if stable < need else "more"
    return f" ({word} than the 2^{bits} = {need} patterns of the {bits} bits)"


def _fixed_points(trials: pd.DataFrame, labels: pd.Series, config: Mapping) -> list[Finding]:
    """Per setting: how many fixed points of each stability the trained network has at zero
    input (top layer, end of training; converged points that are not outliers), the slowest
    stable mode's |λ₁| and the candidates that did not converge, from the ``fixed_points_*_end``
    and ``slowest_stable_modulus_end`` columns; medians over seeds with their ranges."""
    columns = {c: _col(trials, f"fixed_points_{c}_end") for c, _, _ in _FP_CLASSES}
    unconverged = _col(trials, "fixed_points_unconverged_end")
    slowest = _col(trials, "slowest_stable_modulus_end")
    known = pd.concat(columns.values(), axis=1).notna().any(axis=1)
    if not known.any():
        return []
    parts = []
    for setting, idx in pd.Series(trials.index[known], index=trials.index[known]).groupby(
            labels[known], sort=False):
        idx = list(idx)
        counts = [_count_text(columns[c][idx].dropna(), one, many)
                  for c, one, many in _FP_CLASSES
                  if columns[c][idx].notna().any() and (c in ("stable", "saddle")
                                                        or columns[c][idx].max() > 0)]
        stable = float(columns["stable"][idx].median())
        if counts and columns["stable"][idx].notna().any():
            counts[0] += _against_bits(stable, _bits(trials.loc[idx[0]], config))
        text = f"{setting}: " + (", ".join(counts[:-1]) + " and " + counts[-1]
                                 if len(counts) > 1 else counts[0])
        modulus = slowest[idx].dropna()
        if len(modulus):
            m = float(modulus.median())
            notes = [f"over the seeds {_span(modulus)}"] if _span(modulus) != _down(m) else []
            if 0 < m < 1:
                half = math.log(2) / -math.log(m)
                notes.append(f"a perturbation along it halves in about {steps_text(half)} "
                             f"step{'s' if round(half) != 1 else ''}")
            text += f"; the slowest stable mode has |λ₁| = {_down(m)}"
            text += f" ({'; '.join(notes)})" if notes else ""
        slow = unconverged[idx].dropna()
        if len(slow) and slow.sum() > 0:
            n_slow = int(slow.sum())
            text += (f"; {n_slow} candidate{'s' if n_slow != 1 else ''}"
                     f"{f' (over the {len(idx)} seeds)' if len(idx) > 1 else ''} did not "
                     "converge: slow points, drawn hollow")
        parts.append(text + _seeds_note(len(idx)).replace("median", "medians"))
    more = len(parts) - _MAX_FP
    body = ". ".join(parts[:_MAX_FP]) + "."
    if more > 0:
        body += f" ({more} more setting{'s' if more != 1 else ''}: the figure.)"
    return [Finding(
        "Fixed points of the trained network at zero input (top layer, end of training; "
        "converged points that are not outliers): " + body, "fixed_points")]


def _point_text(point: pd.Series, sweep: LearningSweep, best: bool = False) -> str:
    """``accuracy 0.915 against best 0.933 and chance 0.333; horizon 41 steps, 3-decade
    timescale about 691 steps`` for one point of the learning view (``best``: with the best
    and chance values; seeds that disagree are counted)."""
    if point["n_ok"] == 0:
        return f"no finished trial: {point['statuses'] or 'no result'}"
    text = f"{sweep.metric} {point['metric']:.3f}"
    if best:
        text += f" against best {point['best']:.3f} and chance {point['chance']:.3f}"
    if point["learned"] is not None and 0 < point["n_learned"] < point["n_ok"]:
        text += f", {int(point['n_learned'])} of {int(point['n_ok'])} seeds learned"
    h = point["horizon"]
    text += (f"; horizon {int(round(h))} step{'s' if round(h) != 1 else ''}"
             if math.isfinite(h) else "; no finite horizon")
    tau = point["timescale"]
    if tau == math.inf:
        text += ", the slowest direction does not decay"
    elif math.isfinite(tau):
        text += f", 3-decade timescale about {steps_text(tau)} steps"
    return text


def _against(point: pd.Series, sweep: LearningSweep) -> str:
    """How the horizon and the timescale at a point compare with its lag (or window)."""
    if sweep.x_key not in ("task.lag", "task.seq_len") or point["n_ok"] == 0:
        return ""
    name = "the lag" if sweep.x_key == "task.lag" else "the window"
    values = {"horizon": point["horizon"], "timescale": point["timescale"]}
    known = [k for k, v in values.items() if not math.isnan(v)]
    short = [k for k in known if values[k] < point["x"]]
    if not known:
        return ""
    if len(short) == len(known):
        return (f": {'both are' if len(known) == 2 else 'the ' + known[0] + ' is'} shorter "
                f"than {name}")
    if not short:
        return (f": {'both reach' if len(known) == 2 else 'the ' + known[0] + ' reaches'} "
                f"{name}, so the limit is not the gradient's reach")
    other = next(k for k in known if k not in short)
    return f": the {short[0]} is shorter than {name}, the {other} is not"


def _learning(trials: pd.DataFrame) -> list[Finding]:
    """Where each family of a task option × cell sweep stops learning (see
    :mod:`.figures.learning`), with the horizon and timescale there."""
    sweep = learning_sweep(trials)
    if sweep is None:
        return []
    x = sweep.x_name
    if not sweep.has_best:
        return [Finding(
            f"The run does not store the task's best {sweep.metric} (column best_metric), so "
            f"where each cell stops learning against {x} is not judged; the figure shows the "
            f"held-out {sweep.metric} against chance.", "learning")]
    pts = sweep.points
    out = []
    for reach in family_reach(sweep):
        if not reach.judged:
            continue
        mine = pts[pts["family"] == reach.family]
        first = mine.iloc[0]
        name = first["cell"] + (f" ({first['others']})" if first["others"] else "")
        at = {float(r["x"]): r for _, r in mine.iterrows()}
        if reach.largest is None:
            p = at[reach.stop]
            text = (f"{name} learns the task at none of the swept {x} values: at {x} "
                    f"{_fmt(reach.stop)}, the smallest with something to learn, "
                    f"{_point_text(p, sweep, best=True)}{_against(p, sweep)}.")
        else:
            p = at[reach.largest]
            every = not reach.gaps and reach.largest == reach.judged[-1]
            text = (f"{name} learns the task {f'at every swept {x}, ' if every else ''}up to "
                    f"{x} {_fmt(reach.largest)} ({_point_text(p, sweep, best=True)})")
            if reach.stop is not None:
                q = at[reach.stop]
                text += (f" and stops at {x} {_fmt(reach.stop)} ({_point_text(q, sweep)})"
                         f"{_against(q, sweep)}")
            text += "."
            if reach.gaps:
                text += (f" It did not learn at {x} {', '.join(_fmt(g) for g in reach.gaps)}, "
                         "below that.")
        out.append(Finding(text, "learning"))
    if out:
        lo = pts[pts["learnable"]]
        threshold = lo["chance"] + LEARNED_FRACTION * (lo["best"] - lo["chance"])
        lead = (f"Learned means a median held-out {sweep.metric} at least half-way from chance "
                f"to the best possible value (here {_span(threshold, ' to ')} or "
                f"{'more' if (lo['best'] >= lo['chance']).all() else 'less'}). ")
        out[0] = Finding(lead + out[0].text, out[0].key)
    return out


def _fmt(value: float) -> str:
    return f"{value:g}" if not float(value).is_integer() else str(int(value))


def _solved_text(row: pd.Series) -> str:
    """``"0/3"``: seeds solved of the seeds judged."""
    return f"{int(row['n_solved'])}/{int(row['n_judged'])}"


def _remedy_text(name: str, row: pd.Series, why: bool = True, seeds: str = "") -> str:
    """``"flossing 3/3 (horizon 22 → 140 steps, λ₁ −0.010)"``, ``"spectral 0/3 (2 diverged;
    horizon 10 steps)"``: a remedy's seeds solved, its diverged and failed trials, and (``why``)
    the median horizon at the start and the end of training and the top exponent at the end;
    without ``why``, the horizon at the end only; ``seeds`` follows the count ("seeds")."""
    parts = []
    if row["n_diverged"]:
        parts.append(f"{int(row['n_diverged'])} diverged")
    if row["n_failed"]:
        parts.append(f"{int(row['n_failed'])} failed")
    h0, h1 = row["horizon_first"], row["horizon_last"]
    if why and math.isfinite(h0) and math.isfinite(h1):
        reason = f"horizon {_fmt(h0)} → {_fmt(h1)} steps"
    elif math.isfinite(h1):
        reason = f"horizon {_fmt(h1)} steps"
    else:
        reason = "no finite horizon"
    lam = exponent_text(row["lyapunov_top_end"]) if why else ""
    parts.append(reason + (f", λ₁ {lam}" if lam else ""))
    count = f"{_solved_text(row)} {seeds}".strip()
    return f"{name} {count} ({'; '.join(parts)})".strip()


def _where_text(task: str, row: pd.Series) -> str:
    """``"delayed_xor at 20 memory steps"``, with the setting when task and length do not name
    it (``"… (hidden_size=256)"``); ``"flip_flop (memory n/a)"`` for a task without a span."""
    length = row["memory_steps"]
    text = (f"{task} at {_fmt(length)} memory steps" if math.isfinite(length)
            else f"{task} (memory n/a)")
    return f"{text} ({row['label']})" if row["label"] else text


def _loss_steps_text(row: pd.Series) -> str:
    """For a setting with a loss at more than one step: why its horizon says little."""
    n = row["loss_steps"]
    if not math.isfinite(n) or horizon_measures_memory(n, row["memory_steps"]):
        return ""
    return (f" Horizon not comparable with memory here: a loss at {_fmt(n)} steps, so the "
            f"summed gradient reaches back at least about {_fmt(n)} steps whatever the memory; "
            "compare λ₁ instead.")


def _compare(row: pd.Series, ref: pd.Series) -> str:
    """How a remedy's count compares with the baseline's: "more", "fewer", "same" (equal
    counts), or, when the numbers judged differ (failed trials left out), "higher", "lower",
    "equal" (solved rate)."""
    if row["n_judged"] == ref["n_judged"]:
        return ("more" if row["n_solved"] > ref["n_solved"] else
                "fewer" if row["n_solved"] < ref["n_solved"] else "same")
    return ("higher" if row["success"] > ref["success"] + 1e-12 else
            "lower" if row["success"] < ref["success"] - 1e-12 else "equal")


def _names_not_in_config(table: pd.DataFrame, config: Mapping) -> list[str]:
    """The remedy names of ``table`` that the config's remedy axis does not list (``[]`` when
    the config lists none)."""
    sweep = (config or {}).get("sweep")
    given = sweep.get("remedy") if isinstance(sweep, Mapping) else None
    if not isinstance(given, (Mapping, list, tuple)):
        return []
    listed = {str(name) for name in given}
    return [name for name in dict.fromkeys(table["remedy"]) if name not in listed]


def _remedies(trials: pd.DataFrame, config: Mapping) -> list[Finding]:
    """Per task, which remedy solved more (or fewer) seeds than the baseline ("none", else the
    first remedy) in each setting (memory length, and the other swept values where they tell
    two settings apart), with the horizon and top exponent of each (see
    :mod:`.figures.remedies`); the settings where no remedy changed the count, in one sentence;
    and a warning when a run folder repeats seeds within one remedy and setting, or holds
    trials under names the config's remedy axis no longer lists."""
    table = remedy_table(trials, config)
    if table is None:
        return []
    out = []
    warning = repeated_seeds_text(table)
    if warning:
        out.append(Finding(f"Warning: {warning}.", "remedies"))
    stale = _names_not_in_config(table, config)
    if stale:
        out.append(Finding(
            f"Warning: the trials named {', '.join(stale)} are not values of the remedy axis "
            "in config.yaml: an earlier run of this folder named them so (a rename, or "
            "settings that changed). They are shown under those names; rerun with --fresh to "
            "keep only this config's trials.", "remedies"))
    table = table[table["n_judged"] > 0]
    names = list(dict.fromkeys(table["remedy"]))
    base = baseline_remedy(names)
    for task in dict.fromkeys(table["task"]):
        mine = table[table["task"] == task]
        texts = []
        same: list[tuple[pd.Series, pd.Series]] = []
        columns = list(dict.fromkeys(
            (r.memory_steps if math.isfinite(r.memory_steps) else math.inf, r.setting)
            for r in mine.sort_values("memory_steps", na_position="last",
                                      kind="stable").itertuples()))
        for length, setting in columns:
            steps = mine["memory_steps"].fillna(math.inf)
            at = mine[(steps == length) & (mine["setting"] == setting)].set_index("remedy")
            first = at.iloc[0]
            where = _where_text(task, first)
            ref = at.loc[base] if base in at.index else None
            others = [n for n in names if n in at.index and n != base]
            if ref is None:
                listed = ", ".join(_remedy_text(n, at.loc[n]) for n in others)
                texts.append(f"{where}, without the baseline {base}: {listed}."
                             + _loss_steps_text(first))
                continue
            groups: dict[str, list[str]] = {k: [] for k in ("more", "higher", "fewer", "lower",
                                                            "equal", "same")}
            for n in others:
                row = at.loc[n]
                kind = _compare(row, ref)
                groups[kind].append(_remedy_text(n, row, why=kind not in ("same", "equal")))
            if not any(groups[k] for k in ("more", "higher", "fewer", "lower", "equal")):
                same.append((first, ref))
                continue
            ref_count = _solved_text(ref)
            text = f"{where}: {base} solved {_remedy_text('', ref, seeds='seeds')}"
            if groups["more"]:
                text += f"; more seeds solved with {', '.join(groups['more'])}"
            if groups["higher"]:
                text += (f"; a higher solved rate with {', '.join(groups['higher'])} than "
                         f"{base}'s {ref_count}")
            if groups["fewer"]:
                text += f"; fewer seeds solved (worse) with {', '.join(groups['fewer'])}"
            if groups["lower"]:
                text += (f"; a lower solved rate (worse) with {', '.join(groups['lower'])} "
                         f"than {base}'s {ref_count}")
            if groups["equal"]:
                text += f"; the same solved rate with {', '.join(groups['equal'])}"
            if groups["same"]:
                text += f"; no change with {', '.join(groups['same'])}"
            texts.append(text + "." + _loss_steps_text(first))
        if same:
            rows = [r for r, _ in same]
            if all(math.isfinite(r["memory_steps"]) and not r["label"] for r in rows):
                where = f"{task} at {' and '.join(_fmt(r['memory_steps']) for r in rows)} " \
                    "memory steps"
            else:
                where = task + " " + " and ".join(
                    _where_text(task, r)[len(task) + 1:] for r in rows)
            at_text = ", ".join(
                f"{_solved_text(ref)} at "
                + (_fmt(r["memory_steps"]) if math.isfinite(r["memory_steps"]) else "memory n/a")
                + (f" ({r['label']})" if r["label"] else "") for r, ref in same)
            extra = "".join(dict.fromkeys(_loss_steps_text(r) for r in rows))
            texts.append(f"{where}: no remedy solved more or fewer seeds than {base} "
                         f"({base}: {at_text})." + extra)
        threshold = task_threshold_text(table, task)
        if texts and threshold:
            texts[0] = (f"On {task}, a seed counts as solved with a held-out {threshold} "
                        f"({SOLVED_FRACTION:.0%} of the way from chance "
                        f"{number_text(float(mine['chance'].iloc[0]), 3)} to best "
                        f"{number_text(float(mine['best'].iloc[0]), 3)}). " + texts[0])
        out += [Finding(t, "remedies") for t in texts]
    return out


def _changes(trials: pd.DataFrame, labels: pd.Series, unit: str = "epoch") -> list[Finding]:
    if "verdict_first" not in trials or "verdict_last" not in trials:
        return []
    first, last = trials.verdict_first, trials.verdict_last
    changed = first.notna() & last.notna() & (first != last)
    if not changed.any():
        return []
    parts = [f"{labels[i]}: {first[i]} → {last[i]}" for i in trials.index[changed]]
    return [Finding(
        f"Training changed the verdict of {int(changed.sum())} trial"
        f"{'s' if changed.sum() != 1 else ''} (first → last recorded {unit}): {_list(parts)}.",
        "heatmap",
    )]


def _horizon_changes(trials: pd.DataFrame, summaries: pd.DataFrame,
                     labels: pd.Series) -> list[Finding]:
    """For a recording: how the horizon of each module changed from its first recorded step
    to its last (top layer, first direction, as in ``trials``)."""
    s = _top_layer(summaries)
    if s.empty:
        return []
    s = s.sort_values("epoch", kind="stable")
    parts = []
    for i, row in trials.iterrows():
        mine = s[s.trial.astype(str) == str(row["id"])]
        if len(mine) < 2:
            continue
        first, last = mine.iloc[0], mine.iloc[-1]
        if not (first.horizon >= 0 and last.horizon >= 0):
            continue
        h0, h1 = int(first.horizon), int(last.horizon)
        change = ("stayed at" if h0 == h1 else "grew from" if h1 > h0 else "shrank from")
        numbers = f"{h0} steps" if h0 == h1 else f"{h0} to {h1} steps"
        parts.append(f"{labels[i]}: the horizon {change} {numbers} between step "
                     f"{int(first.epoch)} and step {int(last.epoch)} (window "
                     f"{int(last.anchor) + 1} steps)")
    if not parts:
        return []
    return [Finding(f"During training, {_list(parts)}.", "heatmap")]


def grid_order(trials: pd.DataFrame, swept: Sequence[str]) -> pd.DataFrame:
    """The trials sorted by the swept keys in config order (unset first), not finishing order."""
    keys = [k for k in swept if k in trials]
    if not keys:
        return trials
    try:
        return trials.sort_values(keys, na_position="first", kind="stable")
    except TypeError:  # values that do not compare: keep the stored order
        return trials


def compute_findings(tables: Mapping[str, pd.DataFrame], swept: Sequence[str],
                     config: Mapping | None = None) -> list[Finding]:
    """The findings of a run, most important first.

    Args:
        tables: ``"trials"`` (required) and ``"summaries"`` (optional) as stored.
        swept: the swept dotted keys (config order; ``train.seed`` is not part of a setting).
        config: the run's config mapping (for settings that are not columns, e.g. the
            nonlinearity); ``None`` for the defaults.

    Returns:
        :class:`Finding` objects; each ``key`` is a figure section anchor ("profile",
        "heatmap", "loss", "learning", "remedies", "spectra", "lyapunov", "fixed_points") or
        "trials" (the summary table).
    """
    trials = tables.get("trials", pd.DataFrame())
    if trials is None or trials.empty:
        return []
    stored = trials  # the runner's order: the remedies' tasks in the order they were run
    trials = grid_order(trials, swept).reset_index(drop=True)
    summaries = tables.get("summaries")
    summaries = pd.DataFrame() if summaries is None else summaries
    labels = setting_labels(trials, swept)
    panel_settings = setting_labels(trials, [k for k in swept if k != "task.seq_len"])
    per_trial = _trial_labels(trials, swept, labels)
    unit = time_unit(trials)
    return [
        *_status(trials, per_trial),
        *_probe_warnings(trials, per_trial),
        *_verdicts(trials, unit),
        *_reach(trials, summaries, labels, panel_settings),
        *_exploding(trials, labels),
        *_chance(trials, labels),
        *_learning(trials),
        *_remedies(stored, config or {}),
        *_pascanu(trials, labels, config or {}),
        *_lyapunov(trials, labels),
        *_scan_decays(trials, swept, config or {}),
        *_fixed_points(trials, labels, config or {}),
        *_changes(trials, per_trial, unit),
        *(_horizon_changes(trials, summaries, per_trial) if unit == "step" else []),
    ]
