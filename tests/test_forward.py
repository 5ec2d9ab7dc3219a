"""BEM forward models against analytic solutions, the heart surface, referencing, noise, Tikhonov.

Measured on a 2-core AMD EPYC virtual machine (relative L2 errors at the torso vertices):

* torso-only BEM (linear collocation), centred dipole in a sphere of radius 150 mm: 0.9 % at 363
  nodes, 0.4 % at 816;
* Barr transfer (constant elements), heart sphere a = 30 mm, torso b = 150 mm, (heart, torso)
  edges (8, 30) / (6, 25) / (4, 20) mm, i.e. 204 / 363 / 816 heart and 363 / 522 / 816 torso
  nodes: l = 1: 2.2 / 1.1 / 0.3 % and l = 2: 5.6 / 4.8 / 1.0 %; the error is dominated by the
  flat heart faces (chords) cutting inside the sphere, where the potential falls off steeply;
* the two formulations on the bi-atrial geometry (4 mm tissue edge, 256 electrodes, nominal torso,
  smooth wavefront sources): correlation 0.998, relative error 8 % between the torso-only BSPM and
  the transfer matrix applied to the infinite-medium electrode potentials (7 % when applied to the
  bounded-torso electrode potentials).
"""

from __future__ import annotations

import numpy as np
import pytest

from egmlib.physics.forward import (
    LEAD_RANK_WINDOW,
    SVD,
    add_noise,
    bounded_potentials,
    compress_lead_field,
    gcv_lambda,
    heart_surface,
    infinite_medium,
    lambda_grid,
    lcurve_lambda,
    lead_rank,
    reference_mean,
    svd,
    tikhonov,
    tikhonov_solution,
    tikhonov_windows,
    torso_lead_field,
    transfer_matrix,
    winding_number,
)
from egmlib.physics.geometry import MeshError, biatrial_geometry, recording_sites, sphere_mesh
from egmlib.physics.torso import make_torso

A_HEART, B_TORSO = 30.0, 150.0


def _rel(x, y):
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))


def _y(l: int, v: np.ndarray) -> np.ndarray:
    """Zonal harmonics P_l(cos theta) at points v."""
    c = v[:, 2] / np.linalg.norm(v, axis=1)
    return c if l == 1 else 0.5 * (3 * c * c - 1)


def barr_ratio(l: int, a: float, b: float) -> float:
    """Outer/inner potential ratio for concentric spheres, source-free homogeneous shell.

    In a < r < b, phi = (C r^l + D r^-(l+1)) P_l(cos theta). The insulated outer sphere gives
    d phi / dr = 0 at r = b: l C b^(l-1) = (l+1) D b^-(l+2), so D = l C b^(2l+1) / (l+1). With
    phi(a) = P_l: C (a^l + l b^(2l+1) / ((l+1) a^(l+1))) = 1, and
    phi(b) = C b^l (2l+1)/(l+1). Hence
    phi(b) / phi(a) = (2l+1) a^(l+1) b^l / ((l+1) a^(2l+1) + l b^(2l+1)).
    """
    return (2 * l + 1) * a ** (l + 1) * b**l / ((l + 1) * a ** (2 * l + 1) + l * b ** (2 * l + 1))


def _barr_errors(heart_edge: float, torso_edge: float) -> dict[int, float]:
    h = sphere_mesh(A_HEART, heart_edge)
    t = sphere_mesh(B_TORSO, torso_edge)
    a = transfer_matrix(h.vertices, h.faces, t.vertices, t.faces)
    np.testing.assert_allclose(a @ np.ones(h.n_vertices), 1.0, atol=1e-9)  # constants
    return {l: _rel(a @ _y(l, h.vertices), barr_ratio(l, A_HEART, B_TORSO) * _y(l, t.vertices))
            for l in (1, 2)}


@pytest.fixture(scope="module")
def barr_levels():
    return [_barr_errors(8.0, 30.0), _barr_errors(6.0, 25.0), _barr_errors(4.0, 20.0)]


def test_barr_transfer_concentric_spheres(barr_levels):
    coarse, default, fine = barr_levels
    assert default[1] < 0.05  # l = 1 at the default resolution (363 heart nodes)
    assert fine[1] < 0.01 and fine[2] < 0.03
    for l in (1, 2):  # the error falls as the meshes are refined
        assert coarse[l] > default[l] > fine[l]


def _dipole_error(edge: float) -> float:
    """Centred dipole (two monopoles +-1/d, 0.5 mm apart) in an insulated sphere: the surface
    potential is 3x the infinite-medium one, 3 p cos(theta) / b^2."""
    m = sphere_mesh(B_TORSO, edge)
    d = 0.5
    lf = torso_lead_field(m, [[0, 0, d / 2], [0, 0, -d / 2]])
    phi = lf @ np.array([1 / d, -1 / d])
    return _rel(phi, 3 * _y(1, m.vertices) / B_TORSO**2)


def test_torso_bem_centred_dipole_is_three_times_infinite_medium():
    coarse, fine = _dipole_error(30.0), _dipole_error(20.0)
    assert coarse < 0.05 and fine < 0.05
    assert fine < coarse


def test_torso_lead_field_zero_mean_gauge_and_bounded_potentials():
    m = sphere_mesh(B_TORSO, 30.0)
    d = 0.5
    src = np.array([[0, 0, d / 2], [0, 0, -d / 2]])
    q = np.array([1 / d, -1 / d])
    lf = torso_lead_field(m, src)
    a = m.vertex_areas()
    assert abs(a @ (lf @ q)) < 1e-9 * np.abs(lf @ q).max() * a.sum()
    # inside the sphere: phi = p cos / r^2 + 2 p r cos / b^3 (uniform secondary field)
    x = np.array([[0.0, 0.0, 40.0], [30.0, 0.0, -50.0], [0.0, 60.0, 60.0]])
    phi = bounded_potentials(m, src, x, surface_lead_field=lf) @ q
    r = np.linalg.norm(x, axis=1)
    exact = x[:, 2] / r**3 + 2 * x[:, 2] / B_TORSO**3
    np.testing.assert_allclose(phi, exact, rtol=0.02)


def test_forward_models_agree_on_biatrial_geometry():
    """Torso-only BSPM vs transfer matrix x electrode potentials, smooth wavefront sources.

    Tolerance: correlation >= 0.99 and relative error <= 0.15 after mean referencing (measured
    0.998 and 0.08 with infinite-medium electrode potentials, 0.07 with bounded ones)."""
    geom = biatrial_geometry(edge_mm=4.0)
    sites = recording_sites(geom, 256)
    torso = make_torso()
    heart = heart_surface(sites.electrodes, geom.region[sites.vertex])
    assert np.all(winding_number(heart, geom.mesh.vertices) > 0.5)  # sources inside the hulls
    a = transfer_matrix(heart.vertices, heart.faces, torso.mesh.vertices, torso.mesh.faces)
    lt = torso_lead_field(torso, geom.mesh.vertices)
    rng = np.random.default_rng(1)
    v, k = geom.mesh.vertices, geom.mesh.stiffness()
    q = []
    for _ in range(6):  # current sources of sigmoid wavefronts: q = K V, zero sum
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        q.append(k @ np.tanh((v @ direction - rng.uniform(-40, 40)) / 3.0))
    q = np.array(q).T
    bspm = reference_mean(lt @ q, axis=0)
    for egm in (infinite_medium(sites.electrodes, v) @ q,
                bounded_potentials(torso, v, sites.electrodes, surface_lead_field=lt) @ q):
        pred = reference_mean(a @ egm, axis=0)
        assert np.corrcoef(pred.ravel(), bspm.ravel())[0, 1] >= 0.99
        assert _rel(pred, bspm) <= 0.15
    # an EGM window (T, n_rec) maps to a BSPM window (T, n_leads) through A.T
    window = rng.normal(size=(5, sites.electrodes.shape[0]))
    np.testing.assert_allclose(window @ a.T, (a @ window.T).T)


# ---------------------------------------------------------------------------- validation
def test_transfer_matrix_rejects_bad_meshes():
    h = sphere_mesh(30.0, 12.0)
    t = sphere_mesh(150.0, 45.0)
    hv = h.vertices.copy()
    hv[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        transfer_matrix(hv, h.faces, t.vertices, t.faces)
    with pytest.raises(ValueError, match="not closed"):
        transfer_matrix(h.vertices, h.faces, t.vertices, t.faces[2:])
    with pytest.raises(ValueError, match="inside-out"):
        transfer_matrix(h.vertices, h.faces, t.vertices, t.faces[:, ::-1])
    with pytest.raises(ValueError, match="inside-out"):
        transfer_matrix(h.vertices, h.faces[:, ::-1], t.vertices, t.faces)
    with pytest.raises(ValueError, match="outside the torso"):
        transfer_matrix(h.vertices + np.array([140.0, 0.0, 0.0]), h.faces, t.vertices, t.faces)
    assert issubclass(MeshError, ValueError)


def test_torso_lead_field_rejects_bad_inputs():
    t = sphere_mesh(150.0, 45.0)
    with pytest.raises(ValueError, match="NaN"):
        torso_lead_field(t, [[0.0, np.nan, 0.0]])
    with pytest.raises(ValueError, match="outside the torso"):
        torso_lead_field(t, [[0.0, 0.0, 200.0]])
    with pytest.raises(ValueError, match="inside-out"):
        torso_lead_field(type(t)(t.vertices, t.faces[:, ::-1]), [[0.0, 0.0, 0.0]])


def test_heart_surface_is_closed_and_keeps_electrode_order():
    p1 = sphere_mesh(20.0, 8.0, center=(-25, 0, 0)).vertices
    p2 = sphere_mesh(18.0, 8.0, center=(25, 0, 0)).vertices
    pts = np.concatenate([p1, p2])
    reg = np.r_[np.zeros(len(p1), int), np.ones(len(p2), int)]
    perm = np.random.default_rng(0).permutation(len(pts))
    h = heart_surface(pts[perm], reg[perm])
    np.testing.assert_array_equal(h.vertices, pts[perm])
    assert h.is_closed()
    vol = 4 / 3 * np.pi * (20.0**3 + 18.0**3)
    assert 0.85 * vol < h.signed_volume() < vol


def test_heart_surface_rejects_intersections_and_interior_sites():
    p1 = sphere_mesh(20.0, 8.0, center=(-10, 0, 0)).vertices
    p2 = sphere_mesh(18.0, 8.0, center=(10, 0, 0)).vertices
    pts = np.concatenate([p1, p2])
    reg = np.r_[np.zeros(len(p1), int), np.ones(len(p2), int)]
    with pytest.raises(ValueError, match="intersect"):
        heart_surface(pts, reg)
    inner = np.concatenate([p1, [[-10.0, 0.0, 0.0]]])
    with pytest.raises(ValueError, match="not vertices of its convex hull"):
        heart_surface(inner, np.zeros(len(inner), int))
    with pytest.raises(ValueError, match=">= 4"):
        heart_surface(pts[:3], np.zeros(3, int))
    with pytest.raises(ValueError, match="NaN"):
        heart_surface(np.full((5, 3), np.nan), np.zeros(5, int))


# ---------------------------------------------------------------------------- reference, noise
def test_reference_mean_zero_over_leads():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(64, 50)) + 3.0
    r = reference_mean(b, axis=0)
    np.testing.assert_allclose(r.mean(axis=0), 0.0, atol=1e-12)
    w = reference_mean(b.T, axis=1)  # (T, n_leads) windows
    np.testing.assert_allclose(w.mean(axis=1), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        reference_mean(np.array([[1.0, np.nan]]), axis=0)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0, 40.0])
def test_add_noise_realised_snr(snr_db):
    rng = np.random.default_rng(3)
    t = np.linspace(0, 1, 400)
    x = np.sin(2 * np.pi * 5 * t)[:, None] * rng.normal(size=64)[None, :]
    y = add_noise(x, snr_db, np.random.default_rng(4))
    measured = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert abs(measured - snr_db) < 0.5
    batch = np.stack([x, 10 * x])  # per-window SNR
    yb = add_noise(batch, snr_db, np.random.default_rng(5), axis=(1, 2))
    for xb, ybb in zip(batch, yb):
        assert abs(10 * np.log10(np.mean(xb**2) / np.mean((ybb - xb) ** 2)) - snr_db) < 0.5


def test_add_noise_per_window_and_site():
    """``axis=-2``: one SNR per window and site of (n, T, C) windows, whatever their scale."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 500, 4)) * np.array([0.1, 1.0, 10.0, 100.0])
    y = add_noise(x, 10.0, np.random.default_rng(2), axis=-2)
    snr = 10 * np.log10((x**2).mean(axis=1) / ((y - x) ** 2).mean(axis=1))
    # 500 samples: the noise power is estimated to sqrt(2 / 500) = 6.3 %, i.e. 0.27 dB (1 sd)
    np.testing.assert_allclose(snr, 10.0, atol=1.2)
    # the noise is sigma * standard_normal(x.shape) from the generator as given
    sigma = np.sqrt((x**2).mean(axis=1, keepdims=True) / 10.0)
    np.testing.assert_allclose(y - x, sigma * np.random.default_rng(2).standard_normal(x.shape))


def test_add_noise_rejects_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="NaN"):
        add_noise(np.array([1.0, np.nan]), 20.0, rng)
    with pytest.raises(ValueError, match="zero power"):
        add_noise(np.zeros(10), 20.0, rng)


# ---------------------------------------------------------------------------- compression
def test_lead_rank_cuts_at_the_widest_gap_in_the_window():
    # log10 spectrum 0, -6.9, -7.2, -7.3, -7.7, -7.8, -8.1, -9: the candidate cuts discard at most
    # 1e-7 and keep at least 1e-8: after -6.9 (gap 0.3), -7.2 (0.1), -7.3 (0.4), -7.7 (0.1) and
    # -7.8 (0.3); the widest is after -7.3: rank 4, gap 0.4, margin 0.4 - 0.3
    s = 10.0 ** np.array([0.0, -6.9, -7.2, -7.3, -7.7, -7.8, -8.1, -9.0])
    r, gap, margin = lead_rank(s)
    assert r == 4 and gap == pytest.approx(0.4) and margin == pytest.approx(0.1)
    # the cut from 0 down to -6 lies across the whole window: keep only the first
    assert lead_rank(10.0 ** np.array([0.0, -6.0, -10.0]), (1e-8, 1e-7))[0] == 2
    assert lead_rank(np.array([1.0, 0.5]))[0] == 2  # nothing small: keep everything
    with pytest.raises(ValueError, match="window"):
        lead_rank(s, (1e-7, 1e-8))


@pytest.fixture(scope="module")
def stacked_lead():
    """The stacked torso lead field of the tiny data set (4 mm mesh, one 60 mm torso)."""
    geom = biatrial_geometry(4.0)
    t = make_torso(edge_mm=60.0, scale=(1.05, 0.95, 1.0), rotation_deg=(3.0, -4.0, 5.0))
    return torso_lead_field(t, geom.mesh.vertices) / (4 * np.pi)


def test_compress_lead_field_rank_is_robust_and_accurate(stacked_lead):
    lead = stacked_lead
    c = compress_lead_field(lead)
    r = c.basis.shape[0]
    s = c.singular_values
    np.testing.assert_allclose(s, np.linalg.svd(lead, compute_uv=False), rtol=1e-8,
                               atol=1e-13 * s[0])
    # the stated accuracy: ||L - W R||_2 = s_r <= 1e-7 s_0, and R has orthonormal rows
    err = np.linalg.norm(lead - c.weights @ c.basis, 2)
    assert err == pytest.approx(s[r], rel=1e-3) and err <= LEAD_RANK_WINDOW[1] * s[0]
    assert s[r - 1] >= LEAD_RANK_WINDOW[0] * s[0]
    np.testing.assert_allclose(c.basis @ c.basis.T, np.eye(r), atol=1e-10)
    # rounding-level perturbations (1e-12 relative, far above the thread-count differences of
    # BLAS) never move the rank; the margin between the two widest gaps is what protects it
    _, _, margin = lead_rank(s)
    assert margin > 1e-3
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = compress_lead_field(lead * (1.0 + 1e-12 * rng.standard_normal(lead.shape)))
        assert p.basis.shape[0] == r
        np.testing.assert_allclose(p.weights @ p.basis, c.weights @ c.basis, rtol=0,
                                   atol=1e-9 * np.abs(lead).max())
        # signed singular vectors: the factors themselves agree, not only their product
        np.testing.assert_allclose(p.weights, c.weights, rtol=0, atol=1e-6 * s[0])
    # a realistic (zero-sum, smooth) source: the compressed BSPM matches to 1e-6
    geom = biatrial_geometry(4.0)
    q = np.exp(-np.sum((geom.mesh.vertices - geom.mesh.vertices[0]) ** 2, axis=1) / 400.0)
    q -= q.mean()
    assert _rel(c.weights @ (c.basis @ q), lead @ q) < 1e-6  # measured 1.1e-8


def test_compress_lead_field_needs_a_finite_matrix():
    with pytest.raises(ValueError, match="NaN"):
        compress_lead_field(np.array([[1.0, np.nan], [0.0, 1.0]]))


# ---------------------------------------------------------------------------- Tikhonov
def test_tikhonov_recovers_source_of_well_conditioned_problem():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(80, 40))
    x = rng.normal(size=(40, 30))
    b = a @ x
    assert _rel(tikhonov(a, b, 1e-8), x) < 1e-8
    dec = svd(a)
    assert isinstance(dec, SVD)
    np.testing.assert_allclose(tikhonov(dec, b[:, 0], 1e-8), x[:, 0], rtol=1e-8, atol=1e-10)
    # lam shrinks the solution towards zero
    assert np.linalg.norm(tikhonov(dec, b, 10.0)) < np.linalg.norm(x)


def _ill_posed(seed=0, m=64, n=120, noise=0.01):
    """A smoothing (Gaussian-kernel) forward problem with a smooth source and noisy data."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 1, n)
    t = np.linspace(0, 1, m)
    a = np.exp(-((t[:, None] - s[None, :]) ** 2) / (2 * 0.03**2)) / n
    x = np.sin(2 * np.pi * s)[:, None] * np.cos(np.linspace(0, 3, 20))[None, :]
    b = a @ x
    return a, x, b + noise * np.abs(b).max() * rng.normal(size=b.shape)


def test_lcurve_lambda_finite_inside_range_and_useful():
    a, x, b = _ill_posed()
    dec = svd(a)
    lam, curve = lcurve_lambda(dec, b)
    assert np.isfinite(lam)
    assert curve.lambdas.min() < lam < curve.lambdas.max()
    assert curve.lambdas[curve.index] == lam
    # the regularised solution is far better than the barely-regularised one
    err = _rel(tikhonov(dec, b, lam), x)
    assert err < 0.5 < _rel(tikhonov(dec, b, curve.lambdas[-1]), x)
    # the closed-form curvature agrees with finite differences of the log-log curve
    lr, le = np.log(curve.residual_norm), np.log(curve.solution_norm)
    t = np.log(curve.lambdas)
    d1r, d1e = np.gradient(lr, t), np.gradient(le, t)
    d2r, d2e = np.gradient(d1r, t), np.gradient(d1e, t)
    kappa = (d1r * d2e - d2r * d1e) / (d1r**2 + d1e**2) ** 1.5
    assert abs(int(np.argmax(kappa[2:-2])) + 2 - curve.index) <= 3


def test_tikhonov_solution_is_the_choice_then_the_solve():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 30)) @ np.diag(0.8 ** np.arange(30))
    b = a @ rng.normal(size=(30, 5)) + 0.01 * rng.normal(size=(40, 5))
    for method, choose in (("lcurve", lcurve_lambda), ("gcv", gcv_lambda)):
        sol = tikhonov_solution(a, b, method)
        lam, curve = choose(a, b)
        assert sol.lam == lam and sol.curve.index == curve.index
        np.testing.assert_allclose(sol.x, tikhonov(a, b, lam), rtol=1e-12)
    # windows (n, T, n_leads): one lambda each, solutions (n, T, n_sources)
    w = np.stack([b.T, 2 * b.T])
    rec, lams = tikhonov_windows(svd(a), w, "lcurve")
    assert rec.shape == (2, 5, 30) and lams.shape == (2,)
    np.testing.assert_allclose(rec[1], tikhonov_solution(a, 2 * b, "lcurve").x.T, rtol=1e-12)
    with pytest.raises(ValueError, match="method"):
        tikhonov_solution(a, b, "discrepancy")


def test_gcv_lambda_and_custom_grid():
    a, x, b = _ill_posed(seed=1)
    grid = lambda_grid(svd(a).s, n=50)
    lam, _ = gcv_lambda(a, b, grid)
    assert np.isfinite(lam) and grid.min() < lam < grid.max()
    assert _rel(tikhonov(a, b, lam), x) < 0.5
    lam2, _ = lcurve_lambda(a, b, grid)
    assert grid.min() < lam2 < grid.max()
    with pytest.raises(ValueError, match="rows"):
        tikhonov(a, b[:-1], 1.0)
    with pytest.raises(ValueError, match="NaN"):
        tikhonov(a, np.full_like(b, np.nan), 1.0)
    with pytest.raises(ValueError, match="lam"):
        tikhonov(a, b, -1.0)
    with pytest.raises(ValueError, match="lambdas"):
        lcurve_lambda(a, b, [1.0, 0.0, 2.0])
