"""Torso geometry: ellipsoid-like torso variants and user torsos, with their electrodes.

Units: millimetres, in the frame of the bi-atrial model (:mod:`egmlib.physics.geometry`): +x
towards the
patient's left, +y posterior, +z superior; the atria sit around the origin (RA at -x, LA at +x).

A torso is placed *around* the atria: the nominal torso is an ellipsoid with semi-axes near
170 x 110 x 300 mm (x, y, z) whose centre lies at ``-atria_center``, so that the atria are
``atria_center`` (default 25 mm left, 25 mm posterior, 80 mm superior) from the torso centre:
posterior-left of centre, in the upper thorax. :func:`make_torsos` draws variants from a seeded
generator, as the paper used ten torso transfer matrices: per-axis size (+-10 %), position
(+-10 mm per axis) and rotation (+-10 degrees about each axis, about the torso centre); the
parameters are stored with each torso.

Electrodes: a dense set (all torso vertices by default) and a 64-electrode subset spread by
farthest-point sampling over the thorax band (torso-frame height within -130 / +110 mm of the
atria), which covers the anterior and posterior chest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csgraph

from egmlib.physics.geometry import MeshError, TriMesh, ellipsoid_mesh, farthest_point_sampling

__all__ = [
    "DEFAULT_ATRIA_CENTER",
    "DEFAULT_SEMI_AXES",
    "DEFAULT_TORSO_EDGE_MM",
    "Torso",
    "make_torso",
    "make_torsos",
    "require_closed_outward",
    "rotation_matrix",
    "select_subset",
]

DEFAULT_SEMI_AXES = (170.0, 110.0, 300.0)
DEFAULT_ATRIA_CENTER = (25.0, 25.0, 80.0)
# about 600 torso nodes for the nominal ellipsoid (a sphere mesh of the mean radius, stretched)
DEFAULT_TORSO_EDGE_MM = 27.5
THORAX_BAND_MM = (-130.0, 110.0)  # torso-frame height range around the atria for the subset


def require_closed_outward(mesh: TriMesh, what: str = "mesh") -> None:
    """Raise :class:`~egmlib.physics.geometry.MeshError` (a ``ValueError``) unless every connected
    part
    of ``mesh`` is a closed surface with outward normals (positive signed volume)."""
    if not mesh.is_closed():
        n_open = len(mesh.boundary_edges())
        raise MeshError(f"the {what} mesh is not closed: {n_open} edges belong to one face only "
                        "(every edge must be shared by exactly two faces)")
    n_comp, lab = csgraph.connected_components(mesh.adjacency(), directed=False)
    face_lab = lab[mesh.faces[:, 0]]
    v, f = mesh.vertices, mesh.faces
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])) / 6.0
    for c in range(n_comp):
        vc = float(vol[face_lab == c].sum())
        if not vc > 0:
            raise MeshError(f"the {what} mesh is inside-out: part {c} of {n_comp} has signed "
                            f"volume {vc:.4g} mm^3 <= 0; faces must be ordered so that normals "
                            "(right-hand rule) point outwards (reverse each face's vertex order)")


def rotation_matrix(angles_deg: ArrayLike) -> NDArray[np.float64]:
    """Rotation ``Rz @ Ry @ Rx`` from angles (degrees) about the x, y and z axes."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def select_subset(positions: ArrayLike, n: int = 64, band: NDArray[np.bool_] | None = None
                  ) -> NDArray[np.int64]:
    """Indices (into ``positions``) of ``n`` electrodes spread by farthest-point sampling over
    the candidates ``band`` (a mask; all when None, or when fewer than ``n`` are in the band).
    Starts from the most anterior candidate (smallest y), so the result is deterministic.
    Returns all indices when there are at most ``n`` positions."""
    p = np.asarray(positions, float)
    if len(p) <= n:
        return np.arange(len(p), dtype=np.int64)
    cand = np.arange(len(p)) if band is None or band.sum() < n else np.flatnonzero(band)
    local = farthest_point_sampling(p[cand], n, start=int(np.argmin(p[cand, 1])))
    return np.sort(cand[local]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Torso:
    """A homogeneous torso: a closed outward surface and its electrodes.

    Attributes:
        mesh: the torso surface (closed, outward normals), mm.
        electrodes: indices of the torso vertices forming the dense electrode set (sorted).
        subset64: indices *into* ``electrodes`` of the (up to) 64-electrode subset.
        name: a label, e.g. ``"torso03"``.
        parameters: how the torso was made (size, shift, rotation, ...), JSON-serialisable.
    """

    mesh: TriMesh
    electrodes: NDArray[np.int64]
    subset64: NDArray[np.int64]
    name: str = "torso"
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_closed_outward(self.mesh, "torso")
        e = np.asarray(self.electrodes)
        if e.ndim != 1 or len(e) == 0 or not np.issubdtype(e.dtype, np.integer):
            raise ValueError("electrodes must be a non-empty 1-D array of vertex indices")
        if e.min() < 0 or e.max() >= self.mesh.n_vertices or len(np.unique(e)) != len(e):
            raise ValueError(f"electrodes must be distinct vertex indices in "
                             f"[0, {self.mesh.n_vertices - 1}]")
        s = np.asarray(self.subset64)
        if s.ndim != 1 or len(s) == 0 or not np.issubdtype(s.dtype, np.integer):
            raise ValueError("subset64 must be a non-empty 1-D array of indices into electrodes")
        if s.min() < 0 or s.max() >= len(e) or len(np.unique(s)) != len(s):
            raise ValueError(f"subset64 must be distinct indices into electrodes, in "
                             f"[0, {len(e) - 1}]")
        object.__setattr__(self, "electrodes", e.astype(np.int64))
        object.__setattr__(self, "subset64", s.astype(np.int64))

    @classmethod
    def from_arrays(cls, vertices: ArrayLike, faces: ArrayLike,
                    electrodes: ArrayLike | None = None, name: str = "user",
                    n_subset: int = 64) -> Torso:
        """Wrap any closed, outward triangle mesh given as arrays (mm, the atria's frame).

        ``electrodes``: vertex indices of the dense set (default: all vertices). The subset is
        spread by farthest-point sampling over the dense set. Raises
        :class:`~egmlib.physics.geometry.MeshError` (a ``ValueError``) for an invalid, open or
        inside-out mesh.
        """
        mesh = TriMesh(np.asarray(vertices, float), np.asarray(faces))
        require_closed_outward(mesh, "torso")
        e = (np.arange(mesh.n_vertices, dtype=np.int64) if electrodes is None
             else np.asarray(electrodes))
        if e.ndim != 1 or len(e) == 0 or not np.issubdtype(e.dtype, np.integer):
            raise ValueError("electrodes must be a non-empty 1-D array of vertex indices")
        if e.min() < 0 or e.max() >= mesh.n_vertices:
            raise ValueError(f"electrodes must be vertex indices in [0, {mesh.n_vertices - 1}]")
        e = np.unique(e).astype(np.int64)
        subset = select_subset(mesh.vertices[e], n_subset)
        return cls(mesh=mesh, electrodes=e, subset64=subset, name=name,
                   parameters={"source": "arrays", "n_vertices": mesh.n_vertices})

    @property
    def n_electrodes(self) -> int:
        return len(self.electrodes)

    @property
    def electrode_positions(self) -> NDArray[np.float64]:
        """Positions (n_electrodes, 3) of the dense electrode set."""
        return self.mesh.vertices[self.electrodes]

    @property
    def subset_vertices(self) -> NDArray[np.int64]:
        """Torso vertex indices of the subset electrodes."""
        return self.electrodes[self.subset64]


def make_torso(scale: ArrayLike = (1.0, 1.0, 1.0), shift_mm: ArrayLike = (0.0, 0.0, 0.0),
               rotation_deg: ArrayLike = (0.0, 0.0, 0.0),
               edge_mm: float = DEFAULT_TORSO_EDGE_MM,
               atria_center: ArrayLike = DEFAULT_ATRIA_CENTER,
               semi_axes: ArrayLike = DEFAULT_SEMI_AXES, name: str = "torso",
               n_subset: int = 64) -> Torso:
    """One ellipsoid torso around the atria (which stay at the origin of the atria's frame).

    Args:
        scale: per-axis factors on ``semi_axes`` (x, y, z).
        shift_mm: translation of the torso (mm) from its nominal centre ``-atria_center``.
        rotation_deg: rotation angles about x, y, z (degrees, ``Rz @ Ry @ Rx``) about the torso
            centre.
        edge_mm: target mean edge of the unit-sphere mesh scaled to the mean radius (about 600
            nodes at 27.5 mm for the nominal size).
        atria_center: where the atria are relative to the nominal torso centre, in the torso's
            frame (mm).
        semi_axes: nominal semi-axes (mm).
    """
    if not 5.0 <= edge_mm <= 80.0:
        raise ValueError(f"edge_mm must lie in [5, 80] mm; got {edge_mm}")
    axes = np.asarray(semi_axes, float) * np.asarray(scale, float)
    if axes.shape != (3,) or not np.all(axes > 0):
        raise ValueError(f"semi-axes times scale must be three positive numbers; got {axes}")
    rot = rotation_matrix(rotation_deg)
    a_c = np.asarray(atria_center, float)
    center = -a_c + np.asarray(shift_mm, float)
    mesh = ellipsoid_mesh(axes, edge_mm, center=center, rotation=rot)
    # thorax band in the torso's own frame, relative to the atria's nominal height
    local = (mesh.vertices - center) @ rot
    z_lo, z_hi = a_c[2] + THORAX_BAND_MM[0], a_c[2] + THORAX_BAND_MM[1]
    band = (local[:, 2] >= z_lo) & (local[:, 2] <= z_hi)
    electrodes = np.arange(mesh.n_vertices, dtype=np.int64)
    subset = select_subset(mesh.vertices, n_subset, band)
    params = {"semi_axes_mm": axes.tolist(), "scale": np.asarray(scale, float).tolist(),
              "shift_mm": np.asarray(shift_mm, float).tolist(),
              "rotation_deg": np.asarray(rotation_deg, float).tolist(),
              "center_mm": center.tolist(), "atria_center_mm": a_c.tolist(),
              "edge_mm": float(edge_mm), "n_vertices": mesh.n_vertices}
    return Torso(mesh=mesh, electrodes=electrodes, subset64=subset, name=name, parameters=params)


def make_torsos(n: int, seed: int, edge_mm: float = DEFAULT_TORSO_EDGE_MM,
                atria_center: ArrayLike = DEFAULT_ATRIA_CENTER,
                size_jitter: float = 0.10, shift_jitter_mm: float = 10.0,
                rotation_jitter_deg: float = 10.0, semi_axes: ArrayLike = DEFAULT_SEMI_AXES
                ) -> list[Torso]:
    """``n`` torso variants drawn from ``numpy.random.default_rng(seed)``.

    Each variant draws per-axis size factors uniform in ``1 +- size_jitter``, a shift uniform in
    ``+-shift_jitter_mm`` per axis and rotation angles uniform in ``+-rotation_jitter_deg`` about
    each axis; the draws are stored in ``Torso.parameters`` (with the seed and index). Torsos are
    named ``torso00``, ``torso01``, ...
    """
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scale = 1.0 + rng.uniform(-size_jitter, size_jitter, 3)
        shift = rng.uniform(-shift_jitter_mm, shift_jitter_mm, 3)
        rot = rng.uniform(-rotation_jitter_deg, rotation_jitter_deg, 3)
        t = make_torso(scale, shift, rot, edge_mm=edge_mm, atria_center=atria_center,
                       semi_axes=semi_axes, name=f"torso{i:02d}")
        t.parameters.update({"seed": int(seed), "index": i})
        out.append(t)
    return out
