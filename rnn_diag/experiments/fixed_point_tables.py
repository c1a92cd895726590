"""The fixed points of a trial's recurrent layers as run-folder tables (``probes.fixed_points``).

At a snapshot ("init", "end" or an epoch), for every layer of the model's ``rnn`` (``nn.RNN``,
``nn.GRU``, ``nn.LSTM``; the scan cells have no rows):

1. the layer's states are recorded on the first validation sequences (training ones without a
   validation split), at most :data:`MAX_SEQUENCES`: h_t, or the joint ``[h_t | c_t]`` of an
   LSTM (S = 2H), the state its step map acts on (:mod:`rnn_diag.modules.fixed_points`);
2. ``fixed_point_states`` initial states are drawn from them with relative noise
   ``fixed_point_noise`` (:func:`rnn_diag.dynamics.fixed_points.sample_states`, generator
   seeded ``train.seed + 3``) and :func:`rnn_diag.modules.fixed_points.fixed_points` minimises
   q(h) = ½‖F(h, x) − h‖² from them at a **constant input x**: zero for layer 0 (the network
   without input: for the flip-flop, "hold"); for a layer l ≥ 1, whose input is the output of
   layer l − 1 and is never zero, the mean of that output over the recorded sequences and
   steps (the layer's average operating point). Only layer 0's points are fixed points of the
   whole network at zero input; an upper layer's are those of the layer driven by its mean
   input.
3. the recorded states are centred and their top 3 principal components (``torch.linalg.svd``)
   give the coordinates ``pc1..pc3`` of the stored trajectories and of the points.

Tables (one row per observation; the store adds ``trial``):

* ``fixed_points``: when, layer, point, q, converged, outlier, count, stability, n_unstable,
  max_modulus (largest |λ| of the Jacobian), pc1..pc3, unstable_pc1..unstable_pc3 (for a point
  with an unstable direction: the real part of the leading eigenvector, projected on the PCs
  and scaled to unit length; NaN otherwise, and NaN when that projection is 0).
* ``fixed_point_eigenvalues``: when, layer, point, index (0 = largest |λ|), real, imag,
  modulus.
* ``state_trajectories``: when, layer, sample, t, pc1..pc3 for the first
  ``fixed_point_trajectories`` recorded sequences.
* ``pca``: when, layer, component (1..3), explained_variance_ratio (of the recorded states).

With S < 3 the missing components are NaN.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor, nn

from ..dynamics.fixed_points import sample_states
from ..modules.fixed_points import fixed_points
from ..modules.layers import output_size, run_layer, single_layer_shadow

__all__ = ["MAX_SEQUENCES", "fixed_point_tables", "layer_states"]

#: Recorded sequences per snapshot (their states seed the search and define the PCs).
MAX_SEQUENCES = 128
_PCS = 3


@torch.no_grad()
def layer_states(rnn: nn.RNNBase, x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Every layer's states on the batch-first input ``x [N, T, I]``.

    Returns:
        one ``(states, output)`` pair per layer: ``states [N, T, S]`` (h_t, or ``[h_t | c_t]``
        for an LSTM, S = 2H) and ``output [N, T, H]``, the layer's output (the next layer's
        input), in the module's dtype and on its device. Unidirectional modules only.

    Example:
        >>> lstm = nn.LSTM(2, 4, num_layers=2, batch_first=True)
        >>> [(tuple(s.shape), tuple(o.shape)) for s, o in layer_states(lstm, torch.zeros(3, 5, 2))]
        [((3, 5, 8), (3, 5, 4)), ((3, 5, 8), (3, 5, 4))]
    """
    if rnn.bidirectional:
        raise ValueError("fixed points of a bidirectional module are not defined")
    out, inp = [], x
    for layer in range(rnn.num_layers):
        size = rnn.input_size if layer == 0 else output_size(rnn)
        shadow = single_layer_shadow(rnn, size, batch_first=True)
        if isinstance(rnn, nn.LSTM):  # c_t is not returned per step: one step at a time
            state, hs, cs = None, [], []
            for t in range(inp.shape[1]):
                step_out, state = _run(rnn, shadow, layer, inp[:, t : t + 1], state)
                hs.append(step_out[:, 0])
                cs.append(state[1][0])
            output = torch.stack(hs, 1)
            states = torch.cat([output, torch.stack(cs, 1)], -1)
        else:
            output, _ = _run(rnn, shadow, layer, inp, None)
            states = output
        out.append((states, output))
        inp = output
    return out


def _run(rnn, shadow, layer, inp, state):
    """One layer on the batch-first ``inp`` (through a batch-first ``shadow``) from the layer's
    own ``state`` (None: zeros)."""
    if state is not None:  # run_layer takes a whole-module state and picks the layer's rows
        state = tuple(s.expand(rnn.num_layers, *s.shape[1:]) for s in state)
    return run_layer(rnn, shadow, layer, inp, state)


def _principal_axes(states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean [S], axes [S, 3], explained_variance_ratio [3])`` of ``states [M, S]`` (float64);
    columns beyond S are NaN."""
    mean = states.mean(0)
    _, sv, vh = torch.linalg.svd(states - mean, full_matrices=False)
    k = min(_PCS, vh.shape[0])
    axes = torch.full((states.shape[1], _PCS), math.nan, dtype=states.dtype,
                      device=states.device)
    axes[:, :k] = vh[:k].T
    var = sv**2
    ratio = torch.full((_PCS,), math.nan, dtype=states.dtype, device=states.device)
    total = var.sum()
    if total > 0:
        ratio[:k] = var[:k] / total
    return mean, axes, ratio


def _project(x: Tensor, mean: Tensor, axes: Tensor) -> Tensor:
    """Coordinates ``[..., 3]`` of states ``x [..., S]`` on the PCs (NaN where S < 3)."""
    k = int(torch.isfinite(axes[0]).sum())
    out = torch.full((*x.shape[:-1], _PCS), math.nan, dtype=torch.float64, device=x.device)
    out[..., :k] = (x.double() - mean) @ axes[:, :k]
    return out


def _unstable_directions(fps, axes: Tensor) -> Tensor:
    """``[P, 3]``: the real part of each point's leading eigenvector on the PCs, unit length;
    NaN for points without an unstable direction or with a zero projection."""
    P = len(fps)
    out = torch.full((P, _PCS), math.nan, dtype=torch.float64)
    if P == 0:
        return out
    k = int(torch.isfinite(axes[0]).sum())
    lead = fps.eigenvectors[:, :, 0].real  # eigenvalues are sorted by modulus, descending
    proj = lead @ axes[:, :k]
    norm = proj.norm(dim=-1, keepdim=True)
    ok = (fps.n_unstable >= 1) & (norm[:, 0] > 1e-12)
    unit = (proj / norm.clamp_min(1e-300)).cpu()
    out[ok.cpu(), :k] = unit[ok.cpu()]
    return out


def fixed_point_tables(rnn: nn.Module, x: Tensor, when, *, n_states: int = 256,
                       noise: float = 0.5, tol_q: float = 1e-12, n_trajectories: int = 8,
                       seed: int = 0) -> dict[str, pd.DataFrame]:
    """The four tables of the module docstring for one snapshot of ``rnn``.

    Args:
        rnn: the model's recurrent module (``nn.RNN``/``nn.GRU``/``nn.LSTM``, batch-first or
            not); anything else gives empty tables.
        x: input sequences, batch-first ``[N, T, I]`` (validation data), on ``rnn``'s device;
            the first :data:`MAX_SEQUENCES` are used.
        when: the snapshot ("init", "end" or an epoch), stored as text.
        n_states, noise, tol_q: the search (``probes.fixed_point_states``, ``..._noise``,
            ``..._tol_q``).
        n_trajectories: sequences stored in ``state_trajectories``.
        seed: seeds the draw of initial states (``torch.Generator().manual_seed(seed)``).

    Returns:
        ``{"fixed_points", "fixed_point_eigenvalues", "state_trajectories", "pca"}`` ->
        DataFrame, every layer's rows.

    Example:
        >>> torch.manual_seed(0) and None
        >>> gru = nn.GRU(1, 4, batch_first=True)
        >>> tables = fixed_point_tables(gru, torch.randn(6, 10, 1), "end", n_states=32)
        >>> sorted(tables), int(tables["state_trajectories"].shape[0])
        (['fixed_point_eigenvalues', 'fixed_points', 'pca', 'state_trajectories'], 60)
        >>> list(tables["fixed_points"].columns[:4])
        ['when', 'layer', 'point', 'q']
    """
    names = ("fixed_points", "fixed_point_eigenvalues", "state_trajectories", "pca")
    if not isinstance(rnn, (nn.RNN, nn.GRU, nn.LSTM)) or x.shape[0] == 0:
        return {name: pd.DataFrame() for name in names}
    x = x[:MAX_SEQUENCES]
    generator = torch.Generator().manual_seed(seed)
    rows: dict[str, list] = {name: [] for name in names}
    layers = layer_states(rnn, x)
    for layer, (states, _) in enumerate(layers):
        inputs = None if layer == 0 else layers[layer - 1][1].double().mean((0, 1))
        flat = states.double().reshape(-1, states.shape[-1])
        mean, axes, ratio = _principal_axes(flat)
        start = sample_states(flat, n_states, noise=noise, generator=generator)
        fps = fixed_points(rnn, start, inputs, layer=layer, tol_q=tol_q)
        frame = fps.frame()
        pcs = _project(fps.points, mean, axes).cpu()
        directions = _unstable_directions(fps, axes)
        for i in range(_PCS):
            frame[f"pc{i + 1}"] = pcs[:, i].numpy()
        for i in range(_PCS):
            frame[f"unstable_pc{i + 1}"] = directions[:, i].numpy()
        frame.insert(0, "layer", layer)
        frame.insert(0, "when", str(when))
        rows["fixed_points"].append(frame)
        rows["fixed_point_eigenvalues"].append(_eigenvalue_rows(fps, when, layer))
        traj = _project(states[:n_trajectories], mean, axes).cpu()
        n, T = traj.shape[:2]
        rows["state_trajectories"].append(pd.DataFrame({
            "when": str(when), "layer": layer,
            "sample": torch.arange(n).repeat_interleave(T).numpy(),
            "t": torch.arange(T).repeat(n).numpy(),
            **{f"pc{i + 1}": traj[..., i].reshape(-1).numpy() for i in range(_PCS)},
        }))
        rows["pca"].append(pd.DataFrame({
            "when": str(when), "layer": layer, "component": range(1, _PCS + 1),
            "explained_variance_ratio": ratio.cpu().numpy(),
        }))
    return {name: pd.concat(parts, ignore_index=True) for name, parts in rows.items()}


def _eigenvalue_rows(fps, when, layer: int) -> pd.DataFrame:
    vals = fps.eigenvalues.cpu()
    P, S = vals.shape
    return pd.DataFrame({
        "when": str(when), "layer": layer,
        "point": torch.arange(P).repeat_interleave(S).numpy(),
        "index": torch.arange(S).repeat(P).numpy(),
        "real": vals.real.reshape(-1).numpy(),
        "imag": vals.imag.reshape(-1).numpy(),
        "modulus": vals.abs().reshape(-1).numpy(),
    })
