"""Figure 8: fixed points and slow points of the trained dynamics (Sussillo & Barak 2013).

Two views of the tables ``fixed_points``, ``fixed_point_eigenvalues``, ``state_trajectories``
and ``pca`` that the runner stores (see :func:`rnn_diag.fixed_points`):

* :func:`fixed_point_portraits` — per trial, its recorded hidden-state trajectories (thin
  grey lines) and the fixed points found, in the top 3 principal components of those
  trajectories (3-D axes), coloured and shaped by stability, each saddle's unstable direction
  drawn through it;
* :func:`fixed_point_spectra` — per trial, the eigenvalues of the step Jacobian at each fixed
  point in the complex plane with the unit circle, coloured by the point's stability.

Both show one trial per setting (its first seed), the top layer and the last snapshot
("end" when recorded). Candidates that did not converge (q above tolerance: *slow points*) are
drawn hollow, never left out; outliers (the finder's flag: far from the trajectories) are left
out and counted in the note. Nothing is computed here beyond projecting the stored directions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from ._data import Trials, downsample, last_layer, require, snapshot_epoch
from .style import MISSING_COLOUR, add_note, figure_style, new_figure

__all__ = ["STABILITY_COLOURS", "STABILITY_MARKERS", "fixed_point_portraits",
           "fixed_point_spectra"]

#: One colour per stability class, from the Okabe-Ito palette (colour-blind-safe), shared by
#: both figures; anything else is grey.
STABILITY_COLOURS = {"stable": "#0072b2", "saddle": "#d55e00", "unstable": "#cc79a7",
                     "marginal": "#009e73"}
#: One marker per stability class, so the classes read apart without colour too.
STABILITY_MARKERS = {"stable": "o", "saddle": "^", "unstable": "s", "marginal": "D"}
_CLASSES = tuple(STABILITY_COLOURS)

#: Trials (one per setting, first seed) shown at most.
MAX_PANELS = 9
#: Trajectories per panel at most, and points per trajectory.
MAX_SAMPLES = 20
MAX_STEPS = 400
#: Half-length of a saddle's unstable-direction segment, as a fraction of the panel's extent.
ARROW_FRACTION = 0.12

_FP_COLUMNS = ["trial", "when", "point", "converged", "outlier", "stability"]


def _flag(column: pd.Series) -> np.ndarray:
    """A stored bool column as numpy bools (missing: False)."""
    return column.astype(object).map(lambda v: False if pd.isna(v) else bool(v)
                                     ).to_numpy(dtype=bool)


def _last_snapshot(df: pd.DataFrame) -> pd.DataFrame:
    """Per trial, the rows of its latest snapshot ("end" when recorded)."""
    when = df["when"].astype(str)
    rank = when.map(lambda w: math.inf if w == "end" else snapshot_epoch(w, math.nan))
    rank = rank.fillna(-math.inf)
    best = rank.groupby(df["trial"]).transform("max")
    return df.assign(when=when)[rank == best]


def _points(trials: pd.DataFrame, fixed_points: pd.DataFrame
            ) -> tuple[Trials, pd.DataFrame, int]:
    """The fixed points of the finished trials: top layer, last snapshot, with flags as
    bools and the placement columns of :meth:`Trials.attach`; and the number of layers."""
    info = Trials.from_table(trials)
    require(fixed_points, "fixed_points", _FP_COLUMNS)
    df = info.attach(fixed_points)
    df, n_layers = last_layer(df)
    require(df, "fixed_points", hint=" for the trials of this run")
    df = _last_snapshot(df)
    df = df.assign(converged=_flag(df["converged"]), outlier=_flag(df["outlier"]),
                   stability=df["stability"].astype(str))
    return info, df, n_layers


def _chosen(info: Trials, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The trials to draw: the first seed of each (setting, seq_len), at most
    :data:`MAX_PANELS`, in setting order; and notes on what was left out."""
    order = info.info.loc[info.info.index.isin(df["trial"].unique())].copy()
    order = order.sort_values(["setting_rank", "seq_len", "seed"], kind="stable")
    first = order.groupby(["setting_rank", "seq_len"], sort=False).head(1)
    notes = []
    if len(first) < len(order):
        notes.append(f"first seed of each setting ({len(first)} of {len(order)} trials)")
    if len(first) > MAX_PANELS:
        notes.append(f"{MAX_PANELS} of {len(first)} settings shown")
        first = first.head(MAX_PANELS)
    return first, notes


def _title(info: Trials, row: pd.Series, several_lengths: bool) -> str:
    text = info.setting_title(row["setting"])
    if several_lengths:
        text += f" · seq_len={row['seq_len']}"
    return text


def _grid(n: int) -> tuple[int, int]:
    ncols = min(n, 3)
    return math.ceil(n / ncols), ncols


def _legend(fig: Figure, classes: list[str], extra: list[Line2D]) -> None:
    handles = [Line2D([], [], ls="", marker=STABILITY_MARKERS[c], ms=6,
                      color=STABILITY_COLOURS[c], label=c) for c in _CLASSES if c in classes]
    if any(c not in STABILITY_COLOURS for c in classes):
        handles.append(Line2D([], [], ls="", marker="o", ms=6, color=MISSING_COLOUR,
                              label="other"))
    fig.legend(handles=handles + extra, loc="outside right upper", frameon=False)


def _hollow_handle() -> Line2D:
    return Line2D([], [], ls="", marker="o", ms=6, mfc="none", mec="black",
                  label="hollow: slow point\n(did not converge)")


def _style(stability: str) -> tuple[str, str]:
    return (STABILITY_COLOURS.get(stability, MISSING_COLOUR),
            STABILITY_MARKERS.get(stability, "o"))


def _variance(pca: pd.DataFrame | None, trial: str, when: str, layer) -> list[float]:
    """The explained-variance ratios of the trial's first 3 components (``[]`` if unknown)."""
    if pca is None or len(pca) == 0 or not {"trial", "explained_variance_ratio"} <= set(pca):
        return []
    part = pca[pca["trial"].astype(str) == trial]
    if "when" in part:
        part = part[part["when"].astype(str) == when]
    if "layer" in part and layer is not None and layer == layer:
        part = part[part["layer"] == layer]
    if "component" in part:
        part = part.sort_values("component")
    ratios = pd.to_numeric(part["explained_variance_ratio"], errors="coerce").to_list()[:3]
    return [float(r) for r in ratios]


def _trajectories(traj: pd.DataFrame | None, trial: str, when: str, layer) -> pd.DataFrame:
    if traj is None or len(traj) == 0:
        return pd.DataFrame(columns=["sample", "t", "pc1", "pc2", "pc3"])
    part = traj[traj["trial"].astype(str) == trial]
    if "when" in part:
        part = part[part["when"].astype(str) == when]
    if "layer" in part and layer is not None and layer == layer:
        part = part[part["layer"] == layer]
    return part


def fixed_point_portraits(trials: pd.DataFrame, fixed_points: pd.DataFrame,
                          state_trajectories: pd.DataFrame | None = None,
                          pca: pd.DataFrame | None = None) -> Figure:
    """Trajectories and fixed points in the top 3 principal components, one 3-D panel per
    setting (its first seed).

    Args:
        trials: the trials table.
        fixed_points: long table ``trial, when, layer, point, q, converged, outlier, count,
            stability, n_unstable, max_modulus, pc1..pc3, unstable_pc1..unstable_pc3`` (the
            top layer and the last snapshot, "end" when recorded, are drawn).
        state_trajectories: long table ``trial, when, layer, sample, t, pc1, pc2, pc3`` (a few
            held-out sequences' hidden states in the same components; optional).
        pca: table ``trial, when, layer, component, explained_variance_ratio`` (optional: the
            axis labels then give each component's share of the variance).

    Fixed points are coloured and shaped by stability (:data:`STABILITY_COLOURS`,
    :data:`STABILITY_MARKERS`); points that did not converge (slow points) are hollow;
    outliers are left out and counted in the note. Each saddle's leading unstable direction
    (``unstable_pc*``, unit length in the PCs) is a short line through it, in the saddle's
    colour, :data:`ARROW_FRACTION` of the panel's extent to each side.
    """
    info, df, n_layers = _points(trials, fixed_points)
    for col in ("pc1", "pc2", "pc3"):
        require(df, "fixed_points", [col])
    chosen, notes = _chosen(info, df)
    several_lengths = chosen["seq_len"].nunique() > 1
    nrows, ncols = _grid(len(chosen))
    outliers = slow = unplaced = 0
    classes, has_traj, arrows = set(), False, False
    with figure_style():
        fig, axes = new_figure(nrows, ncols, panel_height=3.4,
                               width=min(11.0, 1.8 + 3.4 * ncols),
                               subplot_kw={"projection": "3d"})
        for ax in axes.flat[len(chosen):]:
            ax.set_visible(False)
        for ax, (trial, row) in zip(axes.flat, chosen.iterrows()):
            mine = df[df["trial"] == trial]
            when = str(mine["when"].iloc[0])
            layer = mine["layer"].iloc[0] if "layer" in mine else None
            coords = mine[["pc1", "pc2", "pc3"]].apply(pd.to_numeric, errors="coerce")
            placed = np.isfinite(coords.to_numpy(float)).all(axis=1)
            outliers += int((mine["outlier"] & placed).sum())
            unplaced += int((~placed & ~mine["outlier"]).sum())
            shown = mine[placed & ~mine["outlier"].to_numpy()]
            path = _trajectories(state_trajectories, trial, when, layer)
            extent = [shown[["pc1", "pc2", "pc3"]].to_numpy(float)]
            for k, (_, g) in enumerate(path.groupby("sample", sort=True)):
                if k >= MAX_SAMPLES:
                    break
                g = g.sort_values("t")
                idx = downsample(g["t"].to_numpy(), MAX_STEPS)
                xyz = g[["pc1", "pc2", "pc3"]].to_numpy(float)[idx]
                extent.append(xyz[np.isfinite(xyz).all(axis=1)])
                ax.plot(xyz[:, 0], xyz[:, 1], xyz[:, 2], color="#9a9a9a", lw=0.5, alpha=0.6,
                        label="_trajectory")
                has_traj = True
            allxyz = np.concatenate([e.reshape(-1, 3) for e in extent])
            span = float(np.ptp(allxyz, axis=0).max()) if len(allxyz) else 0.0
            half = ARROW_FRACTION * (span if span > 0 else 1.0)
            for (stability, converged), g in shown.groupby(["stability", "converged"]):
                colour, marker = _style(stability)
                classes.add(stability)
                if not converged:
                    slow += len(g)
                ax.scatter(g["pc1"], g["pc2"], g["pc3"], marker=marker, s=34,
                           facecolors=colour if converged else "none", edgecolors=colour,
                           linewidths=1.0 if converged else 1.3, depthshade=False,
                           label=f"_{stability} {'converged' if converged else 'slow'}",
                           zorder=3)
            if {"unstable_pc1", "unstable_pc2", "unstable_pc3"} <= set(shown.columns):
                for _, p in shown[shown["stability"] == "saddle"].iterrows():
                    u = pd.to_numeric(p[["unstable_pc1", "unstable_pc2", "unstable_pc3"]],
                                      errors="coerce").to_numpy(float)
                    if not np.isfinite(u).all() or not np.any(u):
                        continue
                    u = u / np.linalg.norm(u)
                    c = p[["pc1", "pc2", "pc3"]].to_numpy(float)
                    ends = np.stack([c - half * u, c + half * u])
                    ax.plot(ends[:, 0], ends[:, 1], ends[:, 2], color=STABILITY_COLOURS["saddle"],
                            lw=1.6, label="_unstable direction")
                    arrows = True
            ratios = _variance(pca, trial, when, layer)
            for k, setter in enumerate((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
                share = f" ({100 * ratios[k]:.0f}%)" if k < len(ratios) and \
                    math.isfinite(ratios[k]) else ""
                setter(f"PC{k + 1}{share}", fontsize=8, labelpad=-2)
            ax.tick_params(labelsize=6.5, pad=-2)
            ax.set_box_aspect(None, zoom=0.88)  # room for the z label
            title = _title(info, row, several_lengths)
            if len(ratios) >= 3 and all(map(math.isfinite, ratios)):
                title += f"\nPC1–3: {100 * sum(ratios):.0f}% of the variance"
            if when != "end":
                title += f"\n(snapshot {when})"
            ax.set_title(title, fontsize=9)
        extra = []
        if has_traj:
            extra.append(Line2D([], [], color="#9a9a9a", lw=1.0, label="held-out trajectories"))
        if arrows:
            extra.append(Line2D([], [], color=STABILITY_COLOURS["saddle"], lw=1.6,
                                label="unstable direction\nof a saddle"))
        if slow:
            extra.append(_hollow_handle())
        _legend(fig, sorted(classes), extra)
        if n_layers > 1:
            notes.append(f"last of {n_layers} layers")
        if slow:
            notes.append(f"{slow} slow point{'s' if slow != 1 else ''} (did not converge) "
                         "drawn hollow")
        if outliers:
            notes.append(f"{outliers} outlier point{'s' if outliers != 1 else ''} (far from "
                         "the trajectories) left out")
        if unplaced:
            notes.append(f"{unplaced} point{'s' if unplaced != 1 else ''} without finite PC "
                         "coordinates left out")
        if not has_traj:
            notes.append("no trajectories recorded" if state_trajectories is None
                         or len(state_trajectories) == 0
                         else "no trajectories recorded at the snapshot drawn")
        add_note(fig, "; ".join(notes))
    return fig


def fixed_point_spectra(trials: pd.DataFrame, fixed_points: pd.DataFrame,
                        fixed_point_eigenvalues: pd.DataFrame) -> Figure:
    """The eigenvalues of the step Jacobian at each fixed point in the complex plane with the
    unit circle, one panel per setting (its first seed; the same trials as
    :func:`fixed_point_portraits`).

    Args:
        trials: the trials table.
        fixed_points: as for :func:`fixed_point_portraits` (for each point's stability and
            flags).
        fixed_point_eigenvalues: long table ``trial, when, layer, point, index, real, imag,
            modulus``.

    Each eigenvalue takes the colour and marker of its point's stability; those of a slow
    point (not converged) are hollow; an outlier's are left out. |λ| > 1 is a direction that
    grows near the point: a saddle has at least one such, a stable point none.
    """
    info, df, n_layers = _points(trials, fixed_points)
    require(fixed_point_eigenvalues, "fixed_point_eigenvalues",
            ["trial", "when", "point", "real", "imag"])
    eig = fixed_point_eigenvalues.assign(trial=fixed_point_eigenvalues["trial"].astype(str),
                                         when=fixed_point_eigenvalues["when"].astype(str))
    keys = ["trial", "when", "point"] + (["layer"] if "layer" in eig and "layer" in df else [])
    eig = eig.merge(df[keys + ["converged", "outlier", "stability"]], on=keys, how="inner")
    require(eig, "fixed_point_eigenvalues", hint=" for the fixed points of this run")
    chosen, notes = _chosen(info, df[df["trial"].isin(eig["trial"])])
    several_lengths = chosen["seq_len"].nunique() > 1
    nrows, ncols = _grid(len(chosen))
    classes, outliers, slow = set(), 0, False
    with figure_style():
        fig, axes = new_figure(nrows, ncols, panel_height=3.0,
                               width=min(11.0, 1.8 + 3.0 * ncols))
        for ax in axes.flat[len(chosen):]:
            ax.set_visible(False)
        for ax, (trial, row) in zip(axes.flat, chosen.iterrows()):
            ax: Axes
            mine = eig[eig["trial"] == trial]
            outliers += int(df[(df["trial"] == trial)]["outlier"].sum())
            mine = mine[~mine["outlier"].to_numpy()]
            ax.add_patch(Circle((0, 0), 1.0, fill=False, color="black", lw=0.9))
            re = pd.to_numeric(mine["real"], errors="coerce")
            im = pd.to_numeric(mine["imag"], errors="coerce")
            for (stability, converged), g in mine.groupby(["stability", "converged"]):
                colour, marker = _style(stability)
                classes.add(stability)
                slow = slow or not converged
                ax.scatter(re[g.index], im[g.index], marker=marker, s=14,
                           facecolors=colour if converged else "none", edgecolors=colour,
                           linewidths=0.8, alpha=0.8,
                           label=f"_{stability} {'converged' if converged else 'slow'}")
            modulus = np.hypot(re, im)
            finite = modulus[np.isfinite(modulus)]
            lim = 1.12 * max(1.0, float(finite.max()) if len(finite) else 1.0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xlabel("Re λ")
            ax.set_ylabel("Im λ")
            ax.set_title(_title(info, row, several_lengths), fontsize=9)
        extra = [Line2D([], [], color="black", lw=0.9, label="|λ| = 1 (unit circle)")]
        if slow:
            extra.append(_hollow_handle())
        _legend(fig, sorted(classes), extra)
        if n_layers > 1:
            notes.append(f"last of {n_layers} layers")
        if outliers:
            notes.append(f"eigenvalues of {outliers} outlier point{'s' if outliers != 1 else ''}"
                         " left out")
        add_note(fig, "; ".join(notes))
    return fig
