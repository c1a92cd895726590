"""find_fixed_points against analytic answers: linear maps, tanh(g h), a double well, a map with
no fixed point; Jacobians against finite differences; merging, outliers, sample_states."""

import itertools
import math

import numpy as np
import pytest
import torch

from rnn_diag.dynamics.fixed_points import (
    FixedPoints,
    batched_jacobians,
    find_fixed_points,
    sample_states,
)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bisect_tanh(g: float) -> float:
    """The positive root of h = tanh(g h) for g > 1, by bisection on (0, 1]."""
    lo, hi = 1e-9, 1.0  # f(lo) = tanh(g lo) - lo > 0 for g > 1, f(1) = tanh(g) - 1 < 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.tanh(g * mid) - mid > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _match(points: np.ndarray, expected: np.ndarray, atol: float) -> None:
    """The rows of ``points`` are exactly the rows of ``expected`` (in any order), within atol."""
    assert points.shape == expected.shape, (points, expected)
    used = set()
    for e in expected:
        d = np.abs(points - e).max(-1)
        i = int(np.argmin(d))
        assert d[i] <= atol and i not in used, (e, points)
        used.add(i)


# ---------------------------------------------------------------- linear maps


@pytest.mark.parametrize("kind", ["stable", "saddle"])
def test_linear_map_single_point_and_spectrum(kind):
    rng = np.random.default_rng(3)
    N = 5
    Q = rng.normal(size=(N, N))
    ev = np.array([0.9, -0.5, 0.3, 0.1, -0.2]) if kind == "stable" else \
        np.array([1.7, -0.5, 0.3, 0.1, -0.2])
    W_np = Q @ np.diag(ev) @ np.linalg.inv(Q)
    b_np = rng.normal(size=N)
    W, b = torch.tensor(W_np), torch.tensor(b_np)
    x0 = torch.randn(40, N, dtype=F64, generator=_gen(0))
    fps = find_fixed_points(lambda h: h @ W.T + b, x0)
    assert len(fps) == 1 and bool(fps.converged[0]) and int(fps.count[0]) == 40
    ref = np.linalg.solve(np.eye(N) - W_np, b_np)
    np.testing.assert_allclose(fps.points[0].numpy(), ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(fps.jacobians[0].numpy(), W_np, atol=1e-12)
    got = fps.eigenvalues[0].numpy()
    assert fps.eigenvalues.dtype == torch.complex128
    np.testing.assert_allclose(np.sort(got.real)[::-1], np.sort(ev)[::-1], atol=1e-9)
    np.testing.assert_allclose(got.imag, 0, atol=1e-9)
    assert np.all(np.diff(np.abs(got)) <= 1e-12)  # modulus descending
    if kind == "stable":
        assert fps.stability == ["stable"] and int(fps.n_unstable[0]) == 0
    else:
        assert fps.stability == ["saddle"] and int(fps.n_unstable[0]) == 1
        assert abs(got[0] - 1.7) < 1e-9
    # eigenvectors: W v = λ v, unit norm
    V = fps.eigenvectors[0].numpy()
    np.testing.assert_allclose(W_np @ V, V * got[None, :], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(V, axis=0), 1, atol=1e-12)


def test_linear_rotation_complex_pair_sorted_and_stable():
    th, rho = 0.7, 0.8
    W = rho * torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]],
                           dtype=F64)
    fps = find_fixed_points(lambda h: h @ W.T, torch.randn(8, 2, dtype=F64, generator=_gen(1)))
    assert len(fps) == 1 and fps.stability == ["stable"]
    ev = fps.eigenvalues[0]
    assert abs(ev[0].imag - rho * math.sin(th)) < 1e-12  # a + bi before a - bi
    assert abs(ev[1].imag + rho * math.sin(th)) < 1e-12


# ---------------------------------------------------------------- tanh(g h)


@pytest.mark.parametrize("method", ["newton", "adam"])
def test_tanh_1d_three_points(method):
    g = 2.0
    hs = _bisect_tanh(g)
    x0 = torch.linspace(-2, 2, 41, dtype=F64)[:, None]
    # Adam stops at q ≤ tol_q unpolished (error ≈ √(2 tol_q) / |1 - λ|): ask for a smaller q so
    # that copies of a point fall within tol_unique
    kw = {"max_iters": 4000, "tol_q": 1e-24} if method == "adam" else {}
    fps = find_fixed_points(lambda h: torch.tanh(g * h), x0, method=method, **kw)
    assert bool(fps.converged.all()), fps.frame()
    atol = 1e-12 if method == "newton" else 1e-10
    _match(fps.points.numpy(), np.array([[0.0], [hs], [-hs]]), atol)
    assert int(fps.count.sum()) == 41
    for p, s, lam in zip(fps.points[:, 0].tolist(), fps.stability, fps.eigenvalues[:, 0]):
        # derivative g (1 - tanh²(g p)) = g (1 - p²) at a fixed point
        assert abs(lam.real - g * (1 - p * p)) < 1e-9
        assert s == ("unstable" if abs(p) < 0.5 else "stable")


def test_tanh_3d_diagonal_27_points():
    g = torch.tensor([1.5, 2.0, 3.0], dtype=F64)
    roots = [_bisect_tanh(float(x)) for x in g]
    expected = np.array(list(itertools.product(*[(0.0, r, -r) for r in roots])))
    x0 = (torch.rand(600, 3, dtype=F64, generator=_gen(2)) * 2 - 1) * 1.5
    fps = find_fixed_points(lambda h: torch.tanh(g * h), x0)
    assert bool(fps.converged.all())
    _match(fps.points.numpy(), expected, 1e-12)
    for p, s, nu in zip(fps.points.numpy(), fps.stability, fps.n_unstable.tolist()):
        zeros = int((np.abs(p) < 1e-6).sum())  # unstable directions: the zero coordinates
        assert nu == zeros
        assert s == {0: "stable", 3: "unstable"}.get(zeros, "saddle")
    assert len(fps.stability) == 27 and fps.counts()["saddle"] == 18


def test_tanh_gain_below_one_only_origin():
    fps = find_fixed_points(lambda h: torch.tanh(0.7 * h),
                            torch.randn(50, 3, dtype=F64, generator=_gen(3)) * 2)
    assert len(fps) == 1 and bool(fps.converged[0]) and fps.stability == ["stable"]
    assert float(fps.points.abs().max()) < 1e-12
    np.testing.assert_allclose(fps.eigenvalues[0].real.numpy(), 0.7, atol=1e-12)


# ---------------------------------------------------------------- double well


def test_double_well_saddle_and_two_stable():
    eps = 0.2

    def F(h):
        x, y = h[:, 0], h[:, 1]
        return torch.stack([x + eps * (x - x ** 3), 0.5 * y], -1)

    x0 = torch.randn(100, 2, dtype=F64, generator=_gen(4))
    fps = find_fixed_points(F, x0)
    assert bool(fps.converged.all())
    _match(fps.points.numpy(), np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]), 1e-12)
    by_x = {round(float(p[0])): i for i, p in enumerate(fps.points)}
    o = by_x[0]
    assert fps.stability[o] == "saddle" and int(fps.n_unstable[o]) == 1
    ev = fps.eigenvalues[o].numpy()
    np.testing.assert_allclose(ev, [1 + eps, 0.5], atol=1e-12)
    v = fps.eigenvectors[o][:, 0].real.numpy()
    assert abs(abs(v[0]) - 1) < 1e-12 and abs(v[1]) < 1e-12  # unstable direction: the x axis
    for k in (1, -1):
        i = by_x[k]
        assert fps.stability[i] == "stable" and int(fps.n_unstable[i]) == 0
        np.testing.assert_allclose(np.sort(fps.eigenvalues[i].real.numpy()),
                                   [0.5, 1 - 2 * eps], atol=1e-12)
    assert fps.counts() == {"stable": 2, "saddle": 1, "unstable": 0, "marginal": 0,
                            "unconverged": 0, "outlier": 0}
    assert "2 stable, 1 saddles" in repr(fps)


# ---------------------------------------------------------------- honesty


@pytest.mark.parametrize("method", ["newton", "adam"])
def test_no_fixed_point_reported_unconverged(method):
    N = 4
    x0 = torch.randn(30, N, dtype=F64, generator=_gen(5))
    fps = find_fixed_points(lambda h: h + 1, x0, method=method, max_iters=50)
    assert not bool(fps.converged.any())
    assert int(fps.count.sum()) == 30 and len(fps) == 30  # distinct starts, none merged
    np.testing.assert_allclose(fps.q.numpy(), N / 2, rtol=1e-12)
    assert set(fps.stability) == {"marginal"}  # J = I
    c = fps.counts()
    assert c["unconverged"] == 30 and c["marginal"] == 0  # classes count converged points only
    assert "30 not converged" in repr(fps)


def test_slow_point_kept_with_its_q():
    # x ↦ x + 0.1 (x² + 0.01): q has a minimum 0.5 · 1e-6 at x = 0, no fixed point
    fps = find_fixed_points(lambda h: h + 0.1 * (h ** 2 + 0.01),
                            torch.linspace(-1, 1, 21, dtype=F64)[:, None])
    assert not bool(fps.converged.any())
    best = int(torch.argmin(fps.q))
    assert abs(float(fps.points[best, 0])) < 1e-6
    assert float(fps.q[best]) == pytest.approx(0.5e-6, rel=1e-6)


def test_non_finite_candidates_kept_not_converged():
    # F(h) = sqrt(h) is NaN for h < 0: those candidates cannot move and stay unconverged
    x0 = torch.tensor([[-1.0], [-2.0], [0.5], [2.0]], dtype=F64)
    fps = find_fixed_points(torch.sqrt, x0)
    assert int(fps.count.sum()) == 4
    conv = fps.points[fps.converged, 0].tolist()
    assert len(conv) == 1 and abs(conv[0] - 1) < 1e-12  # 0 is not reachable from 0.5 or 2
    assert int((~fps.converged).sum()) == 2
    assert bool(torch.isnan(fps.eigenvalues[~fps.converged].real).all())
    assert [s for s, c in zip(fps.stability, fps.converged) if not c] == ["unknown"] * 2
    assert fps.stability[0] == "stable"


# ---------------------------------------------------------------- Jacobians


def test_jacobians_match_finite_differences():
    torch.manual_seed(0)
    N = 6
    W = torch.randn(N, N, dtype=F64) * 1.6 / math.sqrt(N)
    b = torch.randn(N, dtype=F64) * 0.1

    def F(h):
        return torch.tanh(h @ W.T + b)

    x0 = torch.randn(64, N, dtype=F64, generator=_gen(6))
    fps = find_fixed_points(F, x0)
    assert len(fps) >= 1 and bool(fps.converged.any())
    step = 1e-6
    for p, J in zip(fps.points, fps.jacobians):
        # independent reference: central differences, one column at a time, plus the closed form
        fd = torch.stack([(F((p + step * e)[None])[0] - F((p - step * e)[None])[0]) / (2 * step)
                          for e in torch.eye(N, dtype=F64)], -1)
        np.testing.assert_allclose(J.numpy(), fd.numpy(), atol=1e-8)
        exact = (1 - torch.tanh(W @ p + b) ** 2)[:, None] * W
        np.testing.assert_allclose(J.numpy(), exact.numpy(), atol=1e-12)
    conv = fps.points[fps.converged]
    assert float((F(conv) - conv).abs().max()) < 1e-10


def test_batched_jacobians_rows_independent():
    A = torch.randn(3, 3, dtype=F64, generator=_gen(7))
    h = torch.randn(5, 3, dtype=F64, generator=_gen(8))
    J = batched_jacobians(lambda x: torch.sin(x @ A.T), h)
    ref = torch.cos(h @ A.T)[:, :, None] * A
    np.testing.assert_allclose(J.numpy(), ref.numpy(), atol=1e-14)


# ---------------------------------------------------------------- merging and outliers


def test_merging_tolerance_keeps_lowest_q_and_sums_counts():
    # identity-like contraction towards 0, stopped early so candidates sit at different q
    x0 = torch.tensor([[1e-7, 0.0], [3e-7, 0.0], [0.5, 0.0]], dtype=F64)
    ident = lambda h: 0.5 * h  # noqa: E731
    fps = find_fixed_points(ident, x0, max_iters=0, tol_q=1e-12)
    # max_iters=0: nothing moves; the two tiny ones are converged (q ≤ 1e-12), within 1e-6
    assert len(fps) == 2
    assert fps.converged.tolist() == [True, False]
    assert fps.count.tolist() == [2, 1]
    assert float(fps.points[0, 0]) == 1e-7  # the lower q of the two
    fps2 = find_fixed_points(ident, x0, max_iters=0, tol_unique=1e-8)
    assert fps2.count.tolist() == [1, 1, 1]
    # unconverged are merged among themselves too
    x1 = torch.tensor([[0.5, 0.0], [0.5 + 1e-8, 0.0], [0.9, 0.0]], dtype=F64)
    fps3 = find_fixed_points(ident, x1, max_iters=0)
    assert (~fps3.converged).all() and sorted(fps3.count.tolist()) == [1, 2]


def test_max_abs_distance_used_for_merging():
    x0 = torch.zeros(2, 4, dtype=F64)
    x0[1] = 0.9e-6  # L∞ distance 0.9e-6, L2 1.8e-6
    fps = find_fixed_points(lambda h: h + 0 * h, x0, max_iters=0)  # every point is fixed
    assert len(fps) == 1 and fps.count.tolist() == [2]


def test_outlier_flagged_and_kept():
    # x ↦ x + 0.1 (x - c)(x - 100): fixed points c ≈ 0 (stable-ish) and 100, far from starts
    def F(h):
        return h - 0.01 * h * (h - 100.0)

    x0 = torch.cat([torch.linspace(-1, 1, 20, dtype=F64), torch.tensor([99.0], dtype=F64)])
    fps = find_fixed_points(F, x0[:, None])
    pts = fps.points[:, 0].tolist()
    assert any(abs(p) < 1e-12 for p in pts) and any(abs(p - 100) < 1e-9 for p in pts)
    for p, out in zip(pts, fps.outlier.tolist()):
        assert out == (abs(p - 100) < 1e-6)
    assert fps.counts()["outlier"] == 1
    assert not bool(fps.stable[fps.outlier].any())
    fps_loose = find_fixed_points(F, x0[:, None], outlier_factor=1e6)
    assert not bool(fps_loose.outlier.any())


# ---------------------------------------------------------------- frame, repr, subset


def test_frame_and_subset():
    g = 2.0
    fps = find_fixed_points(lambda h: torch.tanh(g * h),
                            torch.linspace(-2, 2, 11, dtype=F64)[:, None])
    df = fps.frame()
    assert list(df.columns) == ["point", "q", "converged", "outlier", "count", "stability",
                                "n_unstable", "max_modulus"]
    assert len(df) == len(fps) == 3 and df["count"].sum() == 11
    np.testing.assert_allclose(df["max_modulus"].to_numpy(), fps.eigenvalues[:, 0].abs().numpy())
    st = fps.subset(fps.stable)
    assert isinstance(st, FixedPoints) and len(st) == 2 and set(st.stability) == {"stable"}
    assert repr(fps).startswith("FixedPoints(3 points of S=1: 2 stable, 0 saddles, 1 unstable")


def test_device_and_dtype_follow_input():
    dev = torch.randn(1).device  # whatever the default device is; nothing assumes "cpu"
    x0 = torch.randn(10, 2, generator=_gen(9)).to(dev)  # float32 in, float64 out
    W = torch.tensor([[0.5, 0.0], [0.0, 0.2]], dtype=F64, device=dev)
    fps = find_fixed_points(lambda h: h @ W.T, x0)
    for t in (fps.points, fps.q, fps.converged, fps.jacobians, fps.eigenvalues, fps.count):
        assert t.device == x0.device
    assert fps.points.dtype == F64 and fps.eigenvectors.dtype == torch.complex128


# ---------------------------------------------------------------- sample_states


def test_sample_states_shapes_rows_and_noise():
    traj = torch.randn(40, 5, 3, dtype=F64, generator=_gen(10)) * 2.0
    flat = traj.reshape(-1, 3)
    s = sample_states(traj, 50, generator=_gen(11))
    assert s.shape == (50, 3) and s.dtype == F64 and s.device == traj.device
    # exact recorded rows, drawn without replacement when n ≤ M
    assert bool((s[:, None, :] == flat[None]).all(-1).any(-1).all())
    assert len({tuple(r) for r in s.tolist()}) == 50
    big = sample_states(traj, 500, generator=_gen(12))  # n > M = 200: with replacement
    assert big.shape == (500, 3)
    # noise: std relative to the pooled std of the states (≈ 2)
    noisy = sample_states(traj, 200, noise=0.1, generator=_gen(13))
    base = sample_states(traj, 200, generator=_gen(13))  # same draw of rows
    jitter = noisy - base
    assert float(jitter.std()) == pytest.approx(0.1 * float(flat.std()), rel=0.1)
    # reproducible
    assert torch.equal(noisy, sample_states(traj, 200, noise=0.1, generator=_gen(13)))
