"""Torso forward models (BEM), the heart-surface transfer matrix, referencing, noise, Tikhonov.

Units: mm. Potentials follow the simulator's *1/r convention*: sources ``q`` (n_sources,) at
points ``y`` give the infinite-medium potential ``phi_inf(x) = sum_n q_n / |x - y_n|`` (the
constant in front is handled by the caller). Every matrix here is linear in that convention.

Two boundary-element discretisations are used on purpose, so that the forward model that makes the
BSPMs and the matrix used by the inverse do not share one (no "inverse crime"):

1. :func:`torso_lead_field` -- sources inside a bounded homogeneous torso with an insulated
   surface. Linear (vertex) collocation: potentials vary linearly over each triangle, the
   double-layer integrals are analytic (de Munck 1992, IEEE TBME 39:986), the solid-angle
   self-terms follow from the row-sum rule. The Neumann problem fixes the potential up to a
   constant; deflation ``M + 1 a^T`` (``a``: vertex areas / total area) selects the solution of
   zero area-weighted mean. It is exact only for sources of zero sum (current conservation: the
   simulator's ``q = K V`` sums to zero); a single monopole column is a deflated, not a physical,
   solution, but any zero-sum combination of columns is.

   Boundary integral equation at a surface point ``x`` (``Omega_x`` the solid angle, positive
   for a triangle whose normal points away from ``x``):
   ``c(x) phi(x) - (1/4 pi) int phi dOmega_x = phi_inf(x)``, ``c(x) = (1/4 pi) int dOmega_x``
   (1/2 at smooth points). A centred dipole in a sphere gives 3x its infinite-medium potential.

2. :func:`transfer_matrix` -- the potential-to-potential transfer of Barr, Ramsey & Spach (1977,
   IEEE TBME 24:1) from a closed heart surface H (one or several closed parts) to the torso T,
   homogeneous source-free volume between them, insulated torso. Constant elements collocated at
   triangle centroids: double layer by exact flat-triangle solid angles (van Oosterom & Strackee
   1983), single layer analytic near the collocation point (Wilton et al. 1984) and one-point
   (centroid) quadrature far from it. With ``n`` the normal out of the volume, ``B`` the
   solid-angle matrix / 4 pi (``c`` its row sums) and ``S`` the single layer / 4 pi::

       T rows: (c_T - B_TT) phi_T - B_TH phi_H = S_TH G_H          (dphi/dn = 0 on T)
       H rows: -B_HT phi_T + (c_H - B_HH) phi_H = S_HH G_H         (G_H = dphi/dn on H)

   ``G_H`` is eliminated: ``[c_T - B_TT + X B_HT] phi_T = [B_TH + X (c_H - B_HH)] phi_H`` with
   ``X = S_TH S_HH^-1``. Heart vertex potentials enter as face means (exact for linear data);
   torso vertex values are the least-squares fit whose face means match the face values (about
   2-3x more accurate on spheres than averaging the incident faces). Constants map to constants.

:func:`heart_surface` closes the recording electrodes into such a heart surface (one convex hull
per atrium), so that an EGM window ``E`` (T, n_rec) maps to a BSPM window ``E @ A.T``.

Inverse: zero-order Tikhonov through one SVD, with the regularisation parameter chosen at the
corner of the L-curve (maximum curvature of ``(log ||A x - b||, log ||x||)``, Hansen's closed form)
or by generalised cross-validation.

Measured on 2 CPU cores (``tests/test_forward.py``): centred dipole in a 150 mm sphere, 0.9 % (363
nodes) and 0.4 % (816); concentric spheres a = 30 / b = 150 mm, Barr transfer, l = 1: 2.2 / 1.1 /
0.3 % and l = 2: 5.6 / 4.8 / 1.0 % for heart edges 8 / 6 / 4 mm (204 / 363 / 816 heart nodes; the
flat heart faces cut inside the sphere where the potential falls off steeply); the two
formulations on the bi-atrial geometry (256 electrodes, nominal torso, wavefront sources):
correlation 0.998, relative error 8 %. Transfer-matrix build (nominal torso, 606 nodes): 0.9 s for
256 electrodes (504 heart faces), 9 s for 2048 (4088 heart faces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg, sparse
from scipy.optimize import linprog
from scipy.spatial import ConvexHull, cKDTree

from egmlib.physics.geometry import MeshError, TriMesh
from egmlib.physics.torso import Torso, require_closed_outward

__all__ = [
    "LAMBDA_RULES",
    "LEAD_RANK_WINDOW",
    "SVD",
    "GCVCurve",
    "LCurve",
    "LeadCompression",
    "MeshError",
    "TikhonovSolution",
    "add_noise",
    "bounded_potentials",
    "compress_lead_field",
    "gcv_lambda",
    "heart_surface",
    "infinite_medium",
    "interpolation_matrix",
    "lambda_grid",
    "lcurve_lambda",
    "lead_rank",
    "reference_mean",
    "svd",
    "tikhonov",
    "tikhonov_solution",
    "tikhonov_windows",
    "torso_lead_field",
    "transfer_matrix",
    "winding_number",
]

FOUR_PI = 4.0 * np.pi
_CHUNK = 1_500_000  # pair evaluations per vectorised block (memory ~ 20 arrays of this size)


# ------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------
def _finite(x: ArrayLike, what: str, ndim: int | tuple[int, ...] | None = None
            ) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in dims:
            raise ValueError(f"{what} must have {' or '.join(map(str, dims))} dimensions; "
                             f"got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.all(np.isfinite(a)):
        n_bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"{what} holds {n_bad} NaN or infinite values")
    return a


def _points(x: ArrayLike, what: str) -> NDArray[np.float64]:
    p = _finite(x, what, 2)
    if p.shape[1] != 3:
        raise ValueError(f"{what} must have shape (n, 3); got {p.shape}")
    return p


def _as_mesh(m: Torso | TriMesh, what: str) -> TriMesh:
    mesh = m.mesh if isinstance(m, Torso) else m
    if not isinstance(mesh, TriMesh):
        raise TypeError(f"{what} must be a Torso or a TriMesh; got {type(m).__name__}")
    require_closed_outward(mesh, what)
    return mesh


# ------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------
def _solid_angles(points: NDArray[np.float64], tri: NDArray[np.float64]) -> NDArray[np.float64]:
    """Solid angles (n_points, n_tri) of flat triangles ``tri`` (m, 3, 3) seen from ``points``
    (van Oosterom & Strackee): positive when the triangle's normal (right-hand rule) points away
    from the point; zero for a point in the triangle's plane."""
    n, m = len(points), len(tri)
    out = np.empty((n, m))
    t = [tri[:, k, :].T for k in range(3)]  # each (3, m)
    step = max(1, _CHUNK // max(m, 1))
    for s in range(0, n, step):
        p = points[s:s + step]
        v = [[t[k][c][None, :] - p[:, c][:, None] for c in range(3)] for k in range(3)]
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = v
        la = np.sqrt(ax * ax + ay * ay + az * az)
        lb = np.sqrt(bx * bx + by * by + bz * bz)
        lc = np.sqrt(cx * cx + cy * cy + cz * cz)
        triple = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
        den = (la * lb * lc + (ax * bx + ay * by + az * bz) * lc
               + (ax * cx + ay * cy + az * cz) * lb + (bx * cx + by * cy + bz * cz) * la)
        out[s:s + step] = 2.0 * np.arctan2(triple, den)
    return out


def winding_number(mesh: TriMesh, points: ArrayLike) -> NDArray[np.float64]:
    """Generalised winding number of a closed outward ``mesh`` at ``points``: the total solid
    angle / 4 pi, about 1 inside and 0 outside (1/2 on the surface)."""
    p = _points(points, "points")
    v = mesh.vertices[mesh.faces]
    return _solid_angles(p, v).sum(axis=1) / FOUR_PI


def _linear_double_layer(points: NDArray[np.float64], mesh: TriMesh) -> NDArray[np.float64]:
    """Double-layer coefficients with linear (hat) basis functions, (n_points, n_vertices):
    ``W[i, j] = int phi_j(y) dOmega_{x_i}(y)`` over the surface (de Munck 1992), so that
    ``int phi dOmega_x = W @ phi_vertices`` for piecewise-linear ``phi``. Triangles that contain
    the point (in their plane) contribute zero."""
    v, f = mesh.vertices, mesh.faces
    m = len(f)
    r = v[f]  # (m, 3, 3)
    nrm = mesh.face_normals()
    area2 = 2.0 * mesh.face_areas()
    # incidence (3m, n_vertices) to scatter the per-corner coefficients onto vertices
    inc = sparse.csr_matrix((np.ones(3 * m), (np.arange(3 * m), f.ravel())),
                            shape=(3 * m, mesh.n_vertices))
    out = np.empty((len(points), mesh.n_vertices))
    step = max(1, _CHUNK // (3 * max(m, 1)))
    for s in range(0, len(points), step):
        p = points[s:s + step]
        y = r[None, :, :, :] - p[:, None, None, :]  # (P, m, 3 corners, 3)
        y1, y2, y3 = y[:, :, 0], y[:, :, 1], y[:, :, 2]
        l1, l2, l3 = (np.linalg.norm(yy, axis=-1) for yy in (y1, y2, y3))
        triple = np.einsum("pmi,pmi->pm", y1, np.cross(y2, y3))
        den = (l1 * l2 * l3 + np.einsum("pmi,pmi->pm", y1, y2) * l3
               + np.einsum("pmi,pmi->pm", y1, y3) * l2 + np.einsum("pmi,pmi->pm", y2, y3) * l1)
        omega = 2.0 * np.arctan2(triple, den)
        in_plane = np.abs(triple) <= 1e-9 * (l1 * l2 * l3 + 1e-300)
        # edge terms beta_k = log((|a| + a.e) / (|b| + b.e)) / |b - a| for edges a -> b
        ys, ls = (y1, y2, y3), (l1, l2, l3)
        beta = []
        for k in range(3):
            a, b = ys[k], ys[(k + 1) % 3]
            la, lb = ls[k], ls[(k + 1) % 3]
            e = r[:, (k + 1) % 3] - r[:, k]  # (m, 3)
            size = np.linalg.norm(e, axis=1)
            e = e / size[:, None]
            num = la + np.einsum("pmi,mi->pm", a, e)
            dnm = lb + np.einsum("pmi,mi->pm", b, e)
            ok = (num > 0) & (dnm > 0) & ~in_plane
            with np.errstate(divide="ignore", invalid="ignore"):
                beta.append(np.where(ok, np.log(np.where(ok, num / np.where(ok, dnm, 1.0), 1.0))
                                     / size[None, :], 0.0))
        vec = ((beta[2] - beta[0])[..., None] * y1 + (beta[0] - beta[1])[..., None] * y2
               + (beta[1] - beta[2])[..., None] * y3)
        coef = np.empty((*y1.shape[:2], 3))
        for k in range(3):
            yb, yc = ys[(k + 1) % 3], ys[(k + 2) % 3]
            z = np.einsum("pmi,mi->pm", np.cross(yb, yc), nrm)
            diff = yc - yb
            coef[..., k] = (area2[None, :] * z * omega
                            - triple * np.einsum("pmi,pmi->pm", diff, vec)) / area2[None, :] ** 2
        coef[in_plane] = 0.0
        out[s:s + step] = np.asarray(inc.T @ coef.reshape(len(p), 3 * m).T).T
    return out


def _single_layer_analytic(x: NDArray[np.float64], tri: NDArray[np.float64]
                           ) -> NDArray[np.float64]:
    """``int_T 1 / |x - y| dS_y`` for pairs of points ``x`` (k, 3) and flat triangles ``tri``
    (k, 3, 3), exact (Wilton et al. 1984; Graglia 1993)."""
    p1, p2, p3 = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(p2 - p1, p3 - p1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    d = np.einsum("ki,ki->k", x - p1, n)
    rho = x - d[:, None] * n
    ad = np.abs(d)
    total = np.zeros(len(x))
    for a, b in ((p1, p2), (p2, p3), (p3, p1)):
        s = b - a
        length = np.linalg.norm(s, axis=1)
        t = s / length[:, None]
        u = np.cross(t, n)  # outward in-plane normal of the edge
        p0 = np.einsum("ki,ki->k", a - rho, u)
        lm = np.einsum("ki,ki->k", a - rho, t)
        lp = np.einsum("ki,ki->k", b - rho, t)
        r0sq = p0 * p0 + d * d
        rm = np.sqrt(r0sq + lm * lm)
        rp = np.sqrt(r0sq + lp * lp)
        with np.errstate(divide="ignore", invalid="ignore"):
            fwd = (rp + lp) / (rm + lm)
            bwd = (rm - lm) / (rp - lp)
            ratio = np.where(lp + lm >= 0, fwd, bwd)
            logt = np.where(np.abs(p0) > 1e-12 * length, p0 * np.log(ratio), 0.0)
        atan = np.arctan2(p0 * lp, r0sq + ad * rp) - np.arctan2(p0 * lm, r0sq + ad * rm)
        total += logt - ad * atan
    return total


def _single_layer(points: NDArray[np.float64], mesh: TriMesh, near_factor: float = 4.0
                  ) -> NDArray[np.float64]:
    """``S[i, j] = int_{T_j} 1 / |x_i - y| dS_y`` (n_points, n_faces): analytic for triangles
    whose centroid lies within ``near_factor`` x (the triangle's longest edge) of the point, the
    centroid rule otherwise."""
    tri = mesh.vertices[mesh.faces]
    cen = tri.mean(axis=1)
    area = mesh.face_areas()
    out = np.empty((len(points), len(tri)))
    step = max(1, _CHUNK // max(len(tri), 1))
    for s in range(0, len(points), step):
        p = points[s:s + step]
        dist = np.sqrt(((p[:, None, :] - cen[None, :, :]) ** 2).sum(-1))
        with np.errstate(divide="ignore"):
            out[s:s + step] = area[None, :] / dist
    e = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max(axis=1)  # longest edges
    near = cKDTree(points).query_ball_point(cen, near_factor * e)
    cols = np.repeat(np.arange(len(tri)), [len(q) for q in near])
    rows = np.fromiter((i for q in near for i in q), np.int64, count=len(cols))
    if len(rows):
        out[rows, cols] = _single_layer_analytic(points[rows], tri[cols])
    return out


def infinite_medium(field_points: ArrayLike, source_points: ArrayLike) -> NDArray[np.float64]:
    """The infinite-medium lead field ``1 / |x_i - y_n|`` (n_field, n_sources), 1/r
    convention (mm); :func:`egmlib.physics.electrograms.infinite_medium_lead_field` scales it to
    EGMs in mV.

    Raises ``ValueError`` when a field point lies within 1e-9 mm of a source point (the 1/r
    kernel is singular there: place electrodes off the tissue surface)."""
    x = _points(field_points, "field_points")
    y = _points(source_points, "source_points")
    d = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    if d.min() <= 1e-9:
        i, n = np.unravel_index(int(np.argmin(d)), d.shape)
        raise ValueError(f"field point {int(i)} lies on source point {int(n)} (1/r is singular): "
                         "place electrodes off the tissue surface")
    return 1.0 / d


# ------------------------------------------------------------------------------------------
# torso-only BEM (linear collocation)
# ------------------------------------------------------------------------------------------
def _torso_operator(mesh: TriMesh) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The deflated linear-collocation operator ``M = diag(c) - W/4pi + 1 a^T`` and ``a``."""
    w = _linear_double_layer(mesh.vertices, mesh) / FOUR_PI
    c = w.sum(axis=1)
    a = mesh.vertex_areas()
    a = a / a.sum()
    m = np.diag(c) - w + np.outer(np.ones(mesh.n_vertices), a)
    return m, a


def _check_inside(mesh: TriMesh, points: NDArray[np.float64], what: str, where: str) -> None:
    w = winding_number(mesh, points)
    bad = np.flatnonzero(w < 0.5)
    if len(bad):
        raise ValueError(f"{len(bad)} of {len(points)} {what} lie outside the {where} mesh "
                         f"(first: index {int(bad[0])} at {points[bad[0]].round(2).tolist()} "
                         f"mm, winding number {w[bad[0]]:.3f}); the meshes intersect or are "
                         "misplaced")


def torso_lead_field(torso_mesh: Torso | TriMesh, source_points: ArrayLike,
                     check_inside: bool = True) -> NDArray[np.float64]:
    """Surface potentials of a bounded homogeneous torso per unit source: ``L`` (n_torso_vertices,
    n_sources) with ``BSPM = L @ q`` in the 1/r convention (linear collocation BEM, deflated to
    zero area-weighted mean; see the module docstring). Sources must lie inside the torso."""
    mesh = _as_mesh(torso_mesh, "torso")
    src = _points(source_points, "source_points")
    if check_inside:
        _check_inside(mesh, src, "source points", "torso")
    m, _ = _torso_operator(mesh)
    g = infinite_medium(mesh.vertices, src)
    return linalg.solve(m, g)


def bounded_potentials(torso_mesh: Torso | TriMesh, source_points: ArrayLike,
                       field_points: ArrayLike, surface_lead_field: ArrayLike | None = None
                       ) -> NDArray[np.float64]:
    """Lead field (n_field, n_sources) at points *inside* the bounded torso (for example the
    recording electrodes): ``phi(x) = phi_inf(x) + (1/4pi) int phi_T dOmega_x``, in the same gauge
    as :func:`torso_lead_field` (pass its result as ``surface_lead_field`` to reuse it)."""
    mesh = _as_mesh(torso_mesh, "torso")
    x = _points(field_points, "field_points")
    _check_inside(mesh, x, "field points", "torso")
    lt = (torso_lead_field(mesh, source_points) if surface_lead_field is None
          else _finite(surface_lead_field, "surface_lead_field", 2))
    if lt.shape[0] != mesh.n_vertices:
        raise ValueError(f"surface_lead_field must have {mesh.n_vertices} rows; got {lt.shape}")
    w = _linear_double_layer(x, mesh) / FOUR_PI
    return infinite_medium(x, source_points) + w @ lt


# ------------------------------------------------------------------------------------------
# lead-field compression
# ------------------------------------------------------------------------------------------
#: The window (relative to the largest singular value) in which :func:`lead_rank` cuts the
#: spectrum of a stacked lead field: the discarded part is at most 1e-7 of the largest singular
#: value in the spectral norm (float32 recording resolves no more), and the kept smallest one is
#: at least 1e-8 of it.
LEAD_RANK_WINDOW: tuple[float, float] = (1e-8, 1e-7)


class LeadCompression(NamedTuple):
    """``lead ~ weights @ basis``: weights (n_out, r) = U_r diag(s_r), basis (r, n_sources) =
    V_r^T (orthonormal rows), and all singular values of ``lead`` (descending)."""

    weights: NDArray[np.float64]
    basis: NDArray[np.float64]
    singular_values: NDArray[np.float64]


def lead_rank(singular_values: ArrayLike, window: tuple[float, float] = LEAD_RANK_WINDOW
              ) -> tuple[int, float, float]:
    """The rank ``r`` at which to cut a descending spectrum ``s``, with the gap and its margin.

    Candidates are the cuts ``r`` whose largest discarded value ``s_r`` is at most ``window[1]
    * s_0`` and whose smallest kept value ``s_{r-1}`` is at least ``window[0] * s_0`` (``s_n =
    0``: keeping everything is a candidate when the whole spectrum is above ``window[0]``). The
    cut is the candidate of widest gap ``log10(s_{r-1} / s_r)``. Returns ``(r, gap, margin)``,
    gaps in decades, ``margin`` the widest gap minus the second widest among the candidates
    (``inf`` when there is one candidate).

    Why a gap and not a threshold: BEM lead-field spectra decay smoothly (about 0.04 decades per
    value, no plateau), so a fixed threshold such as 1e-7 falls between two values that differ
    by a few per cent, and any change of the order of that spacing (the eigenvalues of the Gram
    matrix ``L L^T``, whose small singular values carry relative errors of ``eps s_0^2 / s^2``,
    about 2 % at 1e-7) moves the rank (112 or 113 on two machines). The widest gap moves only
    when the rounding of the singular values (backward-stable SVD: ``|ds| <~ n eps s_0``, about
    1e-6 relative at 1e-8 ``s_0`` for n = 2500) changes the order of two gaps, i.e. when
    ``margin`` is below about 1e-6 decades. The bi-atrial default (2 mm mesh, 4 torsos of 606
    vertices) had margins of 0.01 decades (rank 127, gap 0.067 decades).
    """
    sv = np.asarray(singular_values, np.float64)
    if sv.ndim != 1 or sv.size == 0 or not np.all(np.isfinite(sv)) or not sv[0] > 0:
        raise ValueError("singular_values must be a non-empty finite descending spectrum with a "
                         "positive first value")
    lo, hi = window
    if not 0 < lo <= hi < 1:
        raise ValueError(f"window must satisfy 0 < low <= high < 1; got {window}")
    se = np.append(sv, 0.0)
    r = np.arange(1, sv.size + 1)
    # never empty: the first r with s_r <= hi s_0 has s_{r-1} > hi s_0 >= lo s_0 (s_n = 0)
    ok = (se[r] <= hi * sv[0]) & (se[r - 1] >= lo * sv[0])
    with np.errstate(divide="ignore"):
        gap = np.where(ok, np.log10(se[r - 1]) - np.log10(se[r]), -np.inf)
    order = np.argsort(-gap, kind="stable")
    margin = gap[order[0]] - gap[order[1]] if ok.sum() > 1 else np.inf
    return int(r[order[0]]), float(gap[order[0]]), float(margin)


def compress_lead_field(lead: ArrayLike, window: tuple[float, float] = LEAD_RANK_WINDOW
                        ) -> LeadCompression:
    """Factor ``lead`` (n_out, n_sources) as ``weights @ basis`` by a thin SVD of ``lead``
    itself (not of its Gram matrix, which squares the condition number), cut at
    :func:`lead_rank`; ``||lead - weights @ basis||_2 = s_r <= window[1] * s_0``.

    Singular vectors are signed so that each column of ``U`` has its largest-magnitude entry
    positive (first such entry on ties), so the factors do not depend on the LAPACK build's
    sign choice; ``weights @ basis`` never did.
    """
    m = _finite(lead, "lead", 2)
    u, sv, vt = linalg.svd(m, full_matrices=False, lapack_driver="gesdd", check_finite=False)
    r, _, _ = lead_rank(sv, window)
    u, vt = u[:, :r], vt[:r]
    sign = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(r)])
    sign[sign == 0] = 1.0
    return LeadCompression(u * (sv[:r] * sign), vt * sign[:, None], sv)


# ------------------------------------------------------------------------------------------
# potential-to-potential transfer (constant elements, Barr et al. 1977)
# ------------------------------------------------------------------------------------------
def transfer_matrix(heart_vertices: ArrayLike, heart_faces: ArrayLike, torso_vertices: ArrayLike,
                    torso_faces: ArrayLike) -> NDArray[np.float64]:
    """Heart-surface-to-torso transfer matrix ``A`` (n_torso_vertices, n_heart_vertices):
    ``phi_torso = A @ phi_heart`` for the homogeneous source-free volume between a closed heart
    surface (one or several closed, outward parts) and a closed outward torso with an insulated
    surface (Barr, Ramsey & Spach 1977; constant elements, see the module docstring).

    Raises ``ValueError`` for NaN coordinates, open or inside-out meshes, and a heart that is not
    inside the torso (a heart vertex outside it, or a torso vertex inside the heart).
    """
    heart = TriMesh(_points(heart_vertices, "heart_vertices"), np.asarray(heart_faces))
    torso = TriMesh(_points(torso_vertices, "torso_vertices"), np.asarray(torso_faces))
    require_closed_outward(heart, "heart")
    require_closed_outward(torso, "torso")
    _check_inside(torso, heart.vertices, "heart vertices", "torso")
    w = winding_number(heart, torso.vertices)
    if np.any(w > 0.5):
        raise ValueError(f"{int((w > 0.5).sum())} torso vertices lie inside the heart surface; "
                         "the heart and torso meshes intersect")

    # one surface with normals pointing out of the volume between H and T
    tri_t = torso.vertices[torso.faces]
    tri_h = heart.vertices[heart.faces][:, ::-1]
    nt, nh = len(tri_t), len(tri_h)
    tri = np.concatenate([tri_t, tri_h])
    cen = tri.mean(axis=1)
    b = _solid_angles(cen, tri) / FOUR_PI
    b[np.arange(nt + nh), np.arange(nt + nh)] = 0.0  # flat triangle seen from its centroid
    c = b.sum(axis=1)
    heart_rev = TriMesh(heart.vertices, heart.faces[:, ::-1])
    s_all = _single_layer(cen, heart_rev) / FOUR_PI  # (nt + nh, nh)
    s_th, s_hh = s_all[:nt], s_all[nt:]
    b_tt, b_th, b_ht, b_hh = b[:nt, :nt], b[:nt, nt:], b[nt:, :nt], b[nt:, nt:]
    del b, s_all

    # vertex -> face (mean of corners) on the heart; face -> vertex (area-weighted) on the torso
    mh = sparse.csr_matrix((np.full(3 * nh, 1.0 / 3.0),
                            (np.repeat(np.arange(nh), 3), heart.faces.ravel())),
                           shape=(nh, heart.n_vertices))
    mt = np.zeros((nt, torso.n_vertices))
    mt[np.repeat(np.arange(nt), 3), torso.faces.ravel()] = 1.0 / 3.0

    lu = linalg.lu_factor(s_hh, overwrite_a=True, check_finite=False)
    x = linalg.lu_solve(lu, s_th.T, trans=1, check_finite=False).T  # S_TH S_HH^-1
    del lu, s_hh
    lhs = np.diag(c[:nt]) - b_tt + x @ b_ht
    kh = np.diag(c[nt:]) - b_hh  # (nh, nh)
    rhs = np.asarray((mh.T @ b_th.T).T) + x @ np.asarray((mh.T @ kh.T).T)
    a_face = linalg.solve(lhs, rhs, check_finite=False)
    # torso vertex values whose face means best match the face values (least squares)
    return linalg.lstsq(mt, a_face, check_finite=False)[0]


def heart_surface(electrodes: ArrayLike, region: ArrayLike) -> TriMesh:
    """A closed heart surface whose vertices are exactly the recording electrodes, in order.

    Each region's electrodes (e.g. RA = 0, LA = 1: ``geom.region[sites.vertex]``) are closed by
    their convex hull, oriented outwards; the hulls are joined as one mesh of several closed
    parts. The holes of the atria (valves, veins), which carry no electrodes, are thus capped by
    flat hull faces, over which the transfer matrix interpolates the rim potentials linearly.

    Raises ``ValueError`` when a region has fewer than 4 electrodes, an electrode is not a vertex
    of its region's hull (the region is not convex enough: it would be lost), or two hulls
    intersect (checked exactly by a separating-plane linear program).
    """
    p = _points(electrodes, "electrodes")
    reg = np.asarray(region)
    if reg.shape != (len(p),):
        raise ValueError(f"region must have shape ({len(p)},); got {reg.shape}")
    faces, groups = [], []
    for r in np.unique(reg):
        idx = np.flatnonzero(reg == r)
        if len(idx) < 4:
            raise ValueError(f"region {r} has {len(idx)} electrodes; a closed hull needs >= 4")
        hull = ConvexHull(p[idx])
        missing = np.setdiff1d(np.arange(len(idx)), hull.vertices)
        if len(missing):
            raise ValueError(f"{len(missing)} electrodes of region {r} are not vertices of its "
                             f"convex hull (first: electrode {int(idx[missing[0]])}); the heart "
                             "surface would not pass through them")
        f = hull.simplices.astype(np.int64)
        q = p[idx]
        nrm = np.cross(q[f[:, 1]] - q[f[:, 0]], q[f[:, 2]] - q[f[:, 0]])
        out = np.einsum("ij,ij->i", nrm, q[f].mean(axis=1) - q.mean(axis=0)) < 0
        f[out] = f[out][:, ::-1]
        faces.append(idx[f])
        groups.append(idx)
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if not _separable(p[groups[i]], p[groups[j]]):
                raise ValueError(f"the convex hulls of regions {np.unique(reg)[i]} and "
                                 f"{np.unique(reg)[j]} intersect; the heart surface would not be "
                                 "a set of disjoint closed parts")
    mesh = TriMesh(p, np.concatenate(faces))
    require_closed_outward(mesh, "heart")
    return mesh


def interpolation_matrix(targets: ArrayLike, sources: ArrayLike, k: int = 4
                         ) -> NDArray[np.float64]:
    """(n_targets, n_sources) inverse-square-distance weights of the ``k`` nearest sources,
    rows summing to one (a constant maps to itself; a target on a source takes its value).

    Maps electrode potentials onto the vertices of a heart surface that does not pass through the
    electrodes (:func:`egmlib.physics.remesh.wrap_surface`); the Barr transfer from the electrodes
    is then ``transfer_matrix(...) @ interpolation_matrix(heart, electrodes)``.
    """
    t, s = _points(targets, "targets"), _points(sources, "sources")
    if not 1 <= k <= len(s):
        raise ValueError(f"k must lie in [1, {len(s)}] (the sources); got {k}")
    d, idx = cKDTree(s).query(t, k=k)
    d, idx = d.reshape(len(t), k), idx.reshape(len(t), k)
    w = 1.0 / np.maximum(d, 1e-9) ** 2
    w /= w.sum(axis=1, keepdims=True)
    out = np.zeros((len(t), len(s)))
    np.add.at(out, (np.repeat(np.arange(len(t)), k), idx.ravel()), w.ravel())
    return out


def _separable(p: NDArray[np.float64], q: NDArray[np.float64]) -> bool:
    """True when a plane strictly separates the point sets (their convex hulls are disjoint):
    maximise t subject to w.p - b >= t, w.q - b <= -t, |w_i| <= 1."""
    n_p, n_q = len(p), len(q)
    # variables (w0, w1, w2, b, t); linprog minimises -t
    a_ub = np.zeros((n_p + n_q, 5))
    a_ub[:n_p, :3] = -p
    a_ub[:n_p, 3] = 1.0
    a_ub[:n_p, 4] = 1.0
    a_ub[n_p:, :3] = q
    a_ub[n_p:, 3] = -1.0
    a_ub[n_p:, 4] = 1.0
    res = linprog(np.array([0, 0, 0, 0, -1.0]), A_ub=a_ub, b_ub=np.zeros(n_p + n_q),
                  bounds=[(-1, 1)] * 3 + [(None, None), (None, 1.0)], method="highs")
    return bool(res.status == 0 and -res.fun > 1e-9)


# ------------------------------------------------------------------------------------------
# reference and noise
# ------------------------------------------------------------------------------------------
def reference_mean(bspm: ArrayLike, axis: int = 0) -> NDArray[np.float64]:
    """Subtract the mean over torso leads (``axis`` indexes the leads): the reference of every
    BSPM and transfer matrix in the package (rows of a transfer matrix with ``axis=0``, the lead
    axis of BSPM windows ``(..., T, n_leads)`` with ``axis=-1``)."""
    x = _finite(bspm, "bspm")
    return x - x.mean(axis=axis, keepdims=True)


def add_noise(x: ArrayLike, snr_db: float, rng: np.random.Generator,
              axis: int | tuple[int, ...] | None = None) -> NDArray[np.float64]:
    """``x`` plus white Gaussian noise at ``snr_db`` (signal power / noise power, powers as mean
    squares over ``axis``: the whole array by default, e.g. ``axis=(1, 2)`` for a batch of
    (T, n_leads) windows, each then at its own SNR, or ``axis=-2`` for windows ``(..., T, C)``
    at one SNR per window and site). The realised SNR matches the request to within sampling
    error (about 0.04 dB for 25,000 samples). Float64; ``rng.standard_normal(x.shape)`` is drawn
    once, so the same generator state gives the same noise.

    Raises ``ValueError`` for non-finite ``x`` or ``snr_db`` and for a zero-power part (an SNR is
    undefined there)."""
    a = _finite(x, "x")
    if not np.isfinite(float(snr_db)):
        raise ValueError(f"snr_db must be finite; got {snr_db!r}")
    p_sig = np.mean(a * a, axis=axis, keepdims=True)
    if np.any(p_sig == 0):
        raise ValueError("the signal has zero power: an SNR is undefined")
    sigma = np.sqrt(p_sig / 10.0 ** (snr_db / 10.0))
    return a + sigma * rng.standard_normal(a.shape)


# ------------------------------------------------------------------------------------------
# Tikhonov
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SVD:
    """A thin SVD ``A = U diag(s) Vt``, computed once and reused by the Tikhonov functions."""

    U: NDArray[np.float64]
    s: NDArray[np.float64]
    Vt: NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.U.shape[0], self.Vt.shape[1])


def svd(a: ArrayLike) -> SVD:
    """The thin SVD of ``a`` (finite, 2-D)."""
    m = _finite(a, "A", 2)
    u, s, vt = linalg.svd(m, full_matrices=False, lapack_driver="gesdd")
    return SVD(u, s, vt)


def _svd_and_rhs(a: ArrayLike | SVD, b: ArrayLike) -> tuple[SVD, NDArray[np.float64], bool]:
    dec = a if isinstance(a, SVD) else svd(a)
    rhs = _finite(b, "B", (1, 2))
    vec = rhs.ndim == 1
    rhs = rhs[:, None] if vec else rhs
    if rhs.shape[0] != dec.shape[0]:
        raise ValueError(f"B must have {dec.shape[0]} rows (leads); got {rhs.shape}")
    return dec, rhs, vec


def tikhonov(a: ArrayLike | SVD, b: ArrayLike, lam: float) -> NDArray[np.float64]:
    """Zero-order Tikhonov solution ``argmin ||A X - B||^2 + lam^2 ||X||^2`` column by column;
    ``B`` (n_leads,) or (n_leads, n_times) -> ``X`` (n_sources[, n_times]). ``a`` may be a
    precomputed :class:`SVD`."""
    dec, rhs, vec = _svd_and_rhs(a, b)
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0; got {lam}")
    s = dec.s
    with np.errstate(divide="ignore", invalid="ignore"):
        filt = np.where(s > 0, s / (s * s + lam * lam), 0.0)
    x = dec.Vt.T @ (filt[:, None] * (dec.U.T @ rhs))
    return x[:, 0] if vec else x


def lambda_grid(s: ArrayLike, n: int = 200, rel_min: float = 1e-8) -> NDArray[np.float64]:
    """``n`` log-spaced lambdas from the largest singular value down to the smallest non-zero
    one (but at least ``rel_min`` times the largest)."""
    s = np.asarray(s, float)
    s_max = float(s.max())
    if not s_max > 0:
        raise ValueError("A is zero: no regularisation parameter can be chosen")
    pos = s[s > 0]
    lo = max(float(pos.min()), rel_min * s_max)
    if lo >= s_max:
        lo = s_max * 1e-3
    return np.logspace(np.log10(s_max), np.log10(lo), n)


def _filter_sums(dec: SVD, rhs: NDArray[np.float64], lambdas: NDArray[np.float64]
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                            NDArray[np.float64]]:
    """Residual^2, solution^2, d(solution^2)/dlambda and sum of filter factors per lambda."""
    beta = dec.U.T @ rhs
    b2 = (beta * beta).sum(axis=1)  # (k,)
    perp = float((rhs * rhs).sum() - b2.sum())  # part of B outside range(A)
    s = dec.s
    s2 = s * s
    lam = lambdas[:, None]
    f = s2[None, :] / (s2[None, :] + lam * lam)  # (L, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi2 = np.where(s2 > 0, b2 / s2, 0.0)
    rho = ((1 - f) ** 2 @ b2) + max(perp, 0.0)
    eta = (f * f) @ xi2
    deta = -(4.0 / lambdas) * (((1 - f) * f * f) @ xi2)
    return rho, eta, deta, f.sum(axis=1)


@dataclass(frozen=True, eq=False)
class LCurve:
    """The L-curve sampled at ``lambdas``: residual and solution norms, curvature; ``index`` is
    the chosen corner."""

    lambdas: NDArray[np.float64]
    residual_norm: NDArray[np.float64]
    solution_norm: NDArray[np.float64]
    curvature: NDArray[np.float64]
    index: int


@dataclass(frozen=True, eq=False)
class GCVCurve:
    """The GCV function sampled at ``lambdas``; ``index`` is its minimum."""

    lambdas: NDArray[np.float64]
    gcv: NDArray[np.float64]
    index: int


def _lambdas(dec: SVD, lambdas: ArrayLike | None) -> NDArray[np.float64]:
    if lambdas is None:
        return lambda_grid(dec.s)
    lam = _finite(lambdas, "lambdas", 1)
    if len(lam) < 3 or np.any(lam <= 0):
        raise ValueError("lambdas must hold at least 3 positive values")
    return np.sort(lam)[::-1]


def lcurve_lambda(a: ArrayLike | SVD, b: ArrayLike, lambdas: ArrayLike | None = None
                  ) -> tuple[float, LCurve]:
    """Regularisation parameter at the L-curve corner: the maximum curvature of
    ``(log ||A x - b||, log ||x||)`` over ``lambdas`` (default :func:`lambda_grid`), with
    Hansen's closed form (Hansen 2000, "The L-curve and its use in the numerical treatment of
    inverse problems"), ``eta = ||x||^2``, ``rho = ||Ax - b||^2``::

        kappa = -2 (eta rho / eta') (lam^2 eta' rho + 2 lam eta rho + lam^4 eta eta')
                / (lam^4 eta^2 + rho^2)^(3/2)

    (signed so that the corner, where the curve turns from steep to flat as lambda grows, has
    positive curvature; the test suite checks it against finite differences).
    Norms are Frobenius norms over all columns (time samples) of ``B``. The corner is searched
    among interior grid points, so the result lies strictly inside the searched range."""
    dec, rhs, _ = _svd_and_rhs(a, b)
    lam = _lambdas(dec, lambdas)
    rho, eta, deta, _ = _filter_sums(dec, rhs, lam)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = -(2.0 * eta * rho / deta * (lam**2 * deta * rho + 2.0 * lam * eta * rho
                                           + lam**4 * eta * deta)
                 / (lam**4 * eta**2 + rho**2) ** 1.5)
    kappa = np.where(np.isfinite(kappa), kappa, -np.inf)
    i = 1 + int(np.argmax(kappa[1:-1]))
    curve = LCurve(lam, np.sqrt(rho), np.sqrt(eta), kappa, i)
    return float(lam[i]), curve


def gcv_lambda(a: ArrayLike | SVD, b: ArrayLike, lambdas: ArrayLike | None = None
               ) -> tuple[float, GCVCurve]:
    """Regularisation parameter minimising generalised cross-validation,
    ``||A x - B||_F^2 / (m - sum_i f_i)^2`` (m leads, f the Tikhonov filter factors), among
    interior points of ``lambdas`` (default :func:`lambda_grid`)."""
    dec, rhs, _ = _svd_and_rhs(a, b)
    lam = _lambdas(dec, lambdas)
    rho, _, _, fsum = _filter_sums(dec, rhs, lam)
    g = rho / (dec.shape[0] - fsum) ** 2
    i = 1 + int(np.argmin(g[1:-1]))
    return float(lam[i]), GCVCurve(lam, g, i)


#: The parameter-choice rules of :func:`tikhonov_solution`.
LAMBDA_RULES = ("lcurve", "gcv")


class TikhonovSolution(NamedTuple):
    """A Tikhonov solution ``x`` (n_sources[, n_times]), its ``lam`` and the curve it was
    chosen on (:class:`LCurve` or :class:`GCVCurve`)."""

    x: NDArray[np.float64]
    lam: float
    curve: LCurve | GCVCurve


def tikhonov_solution(a: ArrayLike | SVD, b: ArrayLike, method: str = "lcurve",
                      lambdas: ArrayLike | None = None) -> TikhonovSolution:
    """Zero-order Tikhonov with the regularisation parameter chosen from the data: ``method``
    ``"lcurve"`` (:func:`lcurve_lambda`) or ``"gcv"`` (:func:`gcv_lambda`) over ``lambdas``
    (default :func:`lambda_grid`), then :func:`tikhonov`. ``B`` (n_leads[, n_times]); ``a`` a
    matrix or its :class:`SVD` (pass the SVD when solving many right-hand sides)."""
    if method not in LAMBDA_RULES:
        raise ValueError(f"method must be one of {LAMBDA_RULES}; got {method!r}")
    dec = a if isinstance(a, SVD) else svd(a)
    choose = lcurve_lambda if method == "lcurve" else gcv_lambda
    lam, curve = choose(dec, b, lambdas)
    return TikhonovSolution(tikhonov(dec, b, lam), lam, curve)


def tikhonov_windows(a: ArrayLike | SVD, bspm: ArrayLike, method: str = "lcurve"
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`tikhonov_solution` of every BSPM window ``(n, T, n_leads)``, one lambda per window:
    returns the reconstructions ``(n, T, n_sources)`` and the lambdas ``(n,)``."""
    dec = a if isinstance(a, SVD) else svd(a)
    w = _finite(bspm, "bspm", 3)
    out = np.empty((w.shape[0], w.shape[1], dec.shape[1]))
    lams = np.empty(w.shape[0])
    for j in range(w.shape[0]):
        sol = tikhonov_solution(dec, w[j].T, method)
        out[j], lams[j] = sol.x.T, sol.lam
    return out, lams


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
