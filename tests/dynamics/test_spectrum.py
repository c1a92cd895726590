"""spectrum() against numpy/scipy: random, symmetric, defective and complex-eigenvalue matrices."""

import numpy as np
import pytest
import scipy.linalg
import torch

from rnn_diag.dynamics.spectrum import Spectrum, spectrum


def _same_multiset(ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    """Every eigenvalue of ``ref`` is matched by a distinct one of ``ours`` within ``atol``."""
    assert ours.shape == ref.shape
    remaining = list(ours)
    for z in ref:
        dist = np.abs(np.array(remaining) - z)
        i = int(np.argmin(dist))
        assert dist[i] <= atol, (z, remaining)
        remaining.pop(i)


def _check(W: np.ndarray, atol: float = 1e-10) -> Spectrum:
    s = spectrum(W)
    ev = s.eigenvalues.numpy()
    sv = s.singular_values.numpy()
    assert s.eigenvalues.dtype == torch.complex128
    assert s.singular_values.dtype == torch.float64
    # modulus descending
    assert np.all(np.diff(np.abs(ev)) <= 1e-12)
    _same_multiset(ev, scipy.linalg.eigvals(W), atol)
    np.testing.assert_allclose(sv, np.linalg.svd(W, compute_uv=False), rtol=1e-12, atol=1e-12)
    assert s.spectral_radius == pytest.approx(np.max(np.abs(np.linalg.eigvals(W))), abs=atol)
    assert s.spectral_norm == pytest.approx(np.linalg.norm(W, 2), rel=1e-12)
    assert isinstance(s.spectral_radius, float) and isinstance(s.spectral_norm, float)
    return s


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_random_matrices(n):
    rng = np.random.default_rng(n)
    _check(rng.normal(size=(n, n)) / np.sqrt(n))


def test_symmetric_matrix_has_real_spectrum_and_equal_norms():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(10, 10))
    S = (A + A.T) / 2
    s = _check(S)
    np.testing.assert_allclose(s.eigenvalues.imag.numpy(), 0, atol=1e-12)
    ref = np.linalg.eigvalsh(S)
    np.testing.assert_allclose(
        np.sort(np.abs(s.eigenvalues.numpy()))[::-1], np.sort(np.abs(ref))[::-1], rtol=1e-12
    )
    # symmetric: singular values are the eigenvalue moduli, so ρ = σ_max
    assert s.spectral_radius == pytest.approx(s.spectral_norm, rel=1e-12)


def test_defective_jordan_block():
    lam = 0.9
    J = lam * np.eye(4) + np.diag(np.ones(3), 1)  # one Jordan block: eigenvalue 0.9, x4
    s = spectrum(J)
    # A defective eigenvalue of multiplicity m is only determined to ~eps^(1/m).
    np.testing.assert_allclose(s.eigenvalues.numpy(), lam, atol=1e-3)
    _same_multiset(s.eigenvalues.numpy(), scipy.linalg.eigvals(J), atol=1e-3)
    np.testing.assert_allclose(
        s.singular_values.numpy(), np.linalg.svd(J, compute_uv=False), rtol=1e-12
    )
    # non-normal: the norm exceeds the radius
    assert s.spectral_norm > 1.5 > s.spectral_radius


def test_complex_pairs_sorted_by_modulus_then_conjugate_order():
    def rot(r, theta):
        c, s_ = np.cos(theta), np.sin(theta)
        return r * np.array([[c, -s_], [s_, c]])

    blocks = scipy.linalg.block_diag(rot(1.2, 0.3), [[0.5]], rot(0.8, 2.0), [[-1.0]])
    rng = np.random.default_rng(3)
    V = rng.normal(size=(6, 6))
    W = V @ blocks @ np.linalg.inv(V)
    s = _check(W, atol=1e-9)
    ev = s.eigenvalues.numpy()
    expected = np.array([
        1.2 * np.exp(0.3j), 1.2 * np.exp(-0.3j), -1.0, 0.8 * np.exp(2.0j), 0.8 * np.exp(-2.0j), 0.5
    ])
    np.testing.assert_allclose(ev, expected, atol=1e-9)
    assert s.spectral_radius == pytest.approx(1.2, abs=1e-9)


def test_inputs_torch_float32_numpy_and_requires_grad():
    W = torch.randn(5, 5, requires_grad=True)
    s_torch = spectrum(W)
    s_np = spectrum(W.detach().numpy())
    torch.testing.assert_close(s_torch.eigenvalues, s_np.eigenvalues)
    ref = np.linalg.eigvals(W.detach().double().numpy())
    _same_multiset(s_torch.eigenvalues.numpy(), ref, atol=1e-10)


def test_empty_matrix():
    s = spectrum(np.zeros((0, 0)))
    assert s.eigenvalues.shape == (0,) and s.spectral_radius == 0.0 and s.spectral_norm == 0.0


@pytest.mark.parametrize(
    "W, match",
    [
        (np.zeros((2, 3)), "square"),
        (np.zeros((2, 2, 2)), "square"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), "finite"),
        (np.eye(2, dtype=complex), "real"),
    ],
)
def test_bad_inputs(W, match):
    with pytest.raises(ValueError, match=match):
        spectrum(W)
