"""Hand-made tables of the fixed-point analysis (contract of the runner), shaped like a
3-bit flip-flop: 8 stable points at the corners of a cube, saddles at the 12 edge midpoints
(unstable along their edge), an unstable point at the centre, plus per trial a marginal point,
slow points (not converged) and an outlier, and trajectories running along the edges."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

CORNERS = [np.array(c, float) for c in itertools.product((-1.0, 1.0), repeat=3)]
EDGES = [(a, b) for a, b in itertools.combinations(CORNERS, 2)
         if np.abs(a - b).sum() == 2.0]  # 12 edges of the cube
CELLS = ("rnn", "gru", "lstm")
N_SLOW = 2  # slow points per trial (one stable, one saddle)
PCA_RATIOS = (0.5, 0.3, 0.15)


def trials(cells=CELLS, seeds=(0,), counts=None):
    """One row per (cell, seed); ``counts``: {(cell, seed): dict of trials columns}."""
    rows = []
    for cell in cells:
        for seed in seeds:
            row = {"id": f"{cell}{seed}", "label": f"cell={cell}", "task.name": "flipflop",
                   "task.seq_len": 50, "model.cell": cell, "model.hidden_size": 16,
                   "model.num_layers": 1, "train.seed": seed, "status": "ok",
                   "epochs_run": 5}
            row.update((counts or {}).get((cell, seed), {}))
            rows.append(row)
    return pd.DataFrame(rows)


def _point(trial, when, i, xyz, stability, *, converged=True, outlier=False, n_unstable=0,
           modulus=0.9, direction=(math.nan,) * 3):
    return {"trial": trial, "when": when, "layer": 0, "point": i,
            "q": 1e-14 if converged else 1e-5, "converged": converged, "outlier": outlier,
            "count": 3, "stability": stability, "n_unstable": n_unstable,
            "max_modulus": modulus, "pc1": xyz[0], "pc2": xyz[1], "pc3": xyz[2],
            "unstable_pc1": direction[0], "unstable_pc2": direction[1],
            "unstable_pc3": direction[2]}


def fixed_points(trial_ids, whens=("end",)):
    """Per trial and snapshot: 8 stable, 12 saddles, 1 unstable, 1 marginal (converged),
    N_SLOW slow points, 1 outlier."""
    rows = []
    for trial in trial_ids:
        for when in whens:
            pts = [(c, "stable", {"modulus": 0.95}) for c in CORNERS]
            for a, b in EDGES:
                d = (b - a) / np.linalg.norm(b - a)
                pts.append(((a + b) / 2, "saddle", {"n_unstable": 1, "modulus": 1.3,
                                                     "direction": tuple(d)}))
            pts.append((np.zeros(3), "unstable", {"n_unstable": 3, "modulus": 1.5,
                                                  "direction": (0.0, 0.0, 1.0)}))
            pts.append((np.array([0.0, 0.0, 1.4]), "marginal", {"modulus": 1.0}))
            pts.append((np.array([0.5, 0.9, 0.9]), "stable", {"converged": False,
                                                              "modulus": 0.99}))
            pts.append((np.array([0.9, 0.5, -0.9]), "saddle",
                        {"converged": False, "n_unstable": 1, "modulus": 1.1,
                         "direction": (1.0, 0.0, 0.0)}))
            pts.append((np.array([40.0, 40.0, 40.0]), "saddle",
                        {"outlier": True, "n_unstable": 1, "modulus": 2.0,
                         "direction": (1.0, 0.0, 0.0)}))
            rows += [_point(trial, when, i, xyz, s, **kw) for i, (xyz, s, kw) in enumerate(pts)]
    return pd.DataFrame(rows)


def eigenvalues(points, size=4):
    """``size`` eigenvalues per point: the first with modulus ``max_modulus`` on the real
    axis, the rest a complex pair and one real inside the circle."""
    rows = []
    for _, p in points.iterrows():
        values = [p["max_modulus"], 0.5 + 0.3j, 0.5 - 0.3j, 0.1][:size]
        for k, v in enumerate(values):
            v = complex(v)
            rows.append({"trial": p["trial"], "when": p["when"], "layer": p["layer"],
                         "point": p["point"], "index": k, "real": v.real, "imag": v.imag,
                         "modulus": abs(v)})
    return pd.DataFrame(rows)


def trajectories(trial_ids, whens=("end",), samples=3, steps=30):
    rows = []
    for trial in trial_ids:
        for when in whens:
            for s in range(samples):
                a, b = EDGES[s]
                for t in range(steps):
                    x = a + (b - a) * t / (steps - 1)
                    rows.append({"trial": trial, "when": when, "layer": 0, "sample": s, "t": t,
                                 "pc1": x[0], "pc2": x[1], "pc3": x[2]})
    return pd.DataFrame(rows)


def pca(trial_ids, whens=("end",)):
    return pd.DataFrame([{"trial": trial, "when": when, "layer": 0, "component": k,
                          "explained_variance_ratio": r}
                         for trial in trial_ids for when in whens
                         for k, r in enumerate(PCA_RATIOS)])


def tables(cells=CELLS, seeds=(0,), counts=None, whens=("end",)):
    """The figure tables of a flip-flop run: {name: DataFrame}."""
    t = trials(cells, seeds, counts)
    ids = list(t["id"])
    fp = fixed_points(ids, whens)
    return {"trials": t, "fixed_points": fp, "fixed_point_eigenvalues": eigenvalues(fp),
            "state_trajectories": trajectories(ids, whens), "pca": pca(ids, whens)}
