"""Triangle surface meshes, the idealised bi-atrial surface and its recording sites.

Units: millimetres. Axes of the bi-atrial model: +x towards the patient's left, +y posterior,
+z superior.

Any surface given as arrays ``(vertices, faces)`` can be used in place of the built-in atria
(:meth:`AtrialGeometry.from_arrays`), so a user can bring a patient's segmented atria. Face
orientation defines the outward side (right-hand rule): electrodes sit on the side the normals
point to.

The idealised geometry follows a throw-away prototype that preceded this repository (measured
there: complete SR activation and sustained AF on it): LA radius 23 mm
and RA radius 25 mm shells (centres 56 mm apart here instead of the prototype's 50, so that the
electrode layers 1.5 mm off each shell stay clear of each other and each atrium's electrodes can
span a closed heart surface for the potential-to-potential BEM), holes cut by cones (LA: four
pulmonary veins of radius 6 mm and the mitral valve, 13 mm; RA: venae cavae, 9 mm, and tricuspid
valve, 14 mm), joined
by Bachmann's bundle (superior-anterior) and a septal / coronary-sinus link (posterior-inferior),
each modelled as extra stiffness between paired nodes of the two shells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import ConvexHull, cKDTree

__all__ = [
    "SITE_ORDERS",
    "AtrialGeometry",
    "MeshError",
    "RecordingSites",
    "TriMesh",
    "biatrial_geometry",
    "column_step_mm",
    "ellipsoid_mesh",
    "farthest_point_sampling",
    "order_sites",
    "recording_sites",
    "sphere_mesh",
]

RA, LA = 0, 1
REGION_NAMES = ("RA", "LA")


class MeshError(ValueError):
    """A mesh given as arrays is not a valid triangle surface."""


@dataclass(frozen=True, eq=False)
class TriMesh:
    """A triangle surface mesh: ``vertices`` (n, 3) float64 in mm and ``faces`` (m, 3) int64.

    Construction validates the arrays (finite coordinates, indices in range, no repeated index in a
    face, no degenerate face, no unreferenced vertex) and raises :class:`MeshError` otherwise.
    """

    vertices: NDArray[np.float64]
    faces: NDArray[np.int64]

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(np.asarray(self.vertices, dtype=np.float64))
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
            raise MeshError(f"vertices must have shape (n >= 3, 3); got {v.shape}")
        if not np.all(np.isfinite(v)):
            bad = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
            raise MeshError(f"vertices must be finite; vertex {bad} is {v[bad].tolist()}")
        if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
            raise MeshError(f"faces must have shape (m >= 1, 3); got {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            if not np.all(np.mod(f, 1) == 0):
                raise MeshError("faces must hold integer vertex indices")
        f = np.ascontiguousarray(f.astype(np.int64))
        if f.min() < 0 or f.max() >= len(v):
            raise MeshError(f"face indices must lie in [0, {len(v) - 1}]; "
                            f"got [{f.min()}, {f.max()}]")
        repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
        if repeated.any():
            raise MeshError(f"degenerate face {int(np.flatnonzero(repeated)[0])}: "
                            "a vertex index repeats")
        cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        area2 = np.linalg.norm(cross, axis=1)
        edge = np.linalg.norm(v[f[:, 1]] - v[f[:, 0]], axis=1)
        tiny = area2 <= 1e-10 * max(float(np.mean(edge)) ** 2, 1e-300)
        if tiny.any():
            raise MeshError(f"degenerate face {int(np.flatnonzero(tiny)[0])}: zero area "
                            "(collinear or coincident vertices)")
        used = np.zeros(len(v), bool)
        used[f.ravel()] = True
        if not used.all():
            raise MeshError(f"{int((~used).sum())} vertices belong to no face "
                            f"(first: {int(np.flatnonzero(~used)[0])}); remove them")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        self.vertices.setflags(write=False)
        self.faces.setflags(write=False)

    # --- basic measures --------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    def face_normals(self) -> NDArray[np.float64]:
        """Unit normals of the faces (right-hand rule)."""
        v, f = self.vertices, self.faces
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def face_areas(self) -> NDArray[np.float64]:
        """Areas of the faces (mm^2)."""
        v, f = self.vertices, self.faces
        return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]),
                                    axis=1)

    def vertex_areas(self) -> NDArray[np.float64]:
        """Lumped (barycentric) area per vertex: a third of each incident face (mm^2)."""
        return np.bincount(self.faces.ravel(), np.repeat(self.face_areas() / 3.0, 3),
                           minlength=self.n_vertices)

    def vertex_normals(self) -> NDArray[np.float64]:
        """Area-weighted unit vertex normals."""
        fn = self.face_normals() * self.face_areas()[:, None]
        n = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(n, self.faces[:, k], fn)
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def edges(self) -> NDArray[np.int64]:
        """Unique undirected edges (e, 2), smaller index first."""
        f = self.faces
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        return np.unique(np.sort(e, axis=1), axis=0)

    def edge_lengths(self) -> NDArray[np.float64]:
        e = self.edges()
        return np.linalg.norm(self.vertices[e[:, 0]] - self.vertices[e[:, 1]], axis=1)

    def boundary_edges(self) -> NDArray[np.int64]:
        """Edges used by exactly one face (the rims of holes)."""
        f = self.faces
        e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, counts = np.unique(e, axis=0, return_counts=True)
        return uniq[counts == 1]

    def boundary_loops(self) -> list[NDArray[np.int64]]:
        """The vertices of each hole rim (connected set of boundary edges), largest first."""
        be = self.boundary_edges()
        if len(be) == 0:
            return []
        n = self.n_vertices
        g = sparse.coo_matrix((np.ones(len(be)), (be[:, 0], be[:, 1])), shape=(n, n))
        _, lab = csgraph.connected_components(g + g.T, directed=False)
        rim = np.unique(be)
        loops = [rim[lab[rim] == c] for c in np.unique(lab[rim])]
        return sorted(loops, key=len, reverse=True)

    def is_closed(self) -> bool:
        """True when every edge is shared by exactly two faces."""
        f = self.faces
        e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _, counts = np.unique(e, axis=0, return_counts=True)
        return bool(np.all(counts == 2))

    def signed_volume(self) -> float:
        """Signed enclosed volume (mm^3); positive for a closed mesh with outward normals."""
        v, f = self.vertices, self.faces
        return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum()
                     / 6.0)

    def adjacency(self) -> sparse.csr_matrix:
        """Vertex adjacency (n, n) as a symmetric 0/1 sparse matrix."""
        e = self.edges()
        n = self.n_vertices
        a = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        return (a + a.T).tocsr()

    def submesh(self, keep: NDArray[np.bool_]) -> tuple[TriMesh, NDArray[np.int64]]:
        """The mesh of the faces whose three vertices are all kept; returns it and the indices
        of its vertices in this mesh. Unreferenced vertices are dropped."""
        keep = np.asarray(keep, bool)
        faces = self.faces[keep[self.faces].all(axis=1)]
        used = np.unique(faces)
        remap = -np.ones(self.n_vertices, np.int64)
        remap[used] = np.arange(len(used))
        return TriMesh(self.vertices[used], remap[faces]), used

    # --- FEM ------------------------------------------------------------------------------
    def stiffness(self, fibres: ArrayLike | None = None, anisotropy: float = 1.0
                  ) -> sparse.csr_matrix:
        """P1 finite-element stiffness, symmetric positive semi-definite (Neumann boundaries at
        hole rims).

        Isotropic (``fibres`` None): the cotangent Laplacian, ``K[i, j] = -(cot a_ij + cot b_ij)
        / 2`` for an edge ij with opposite angles a, b, and ``K[i, i] = -sum_j K[i, j]`` (unit
        conductivity).

        Anisotropic: ``fibres`` (m, 3) gives a direction per face (projected onto the face's
        plane and normalised); the face's conductivity tensor is ``f f^T + anisotropy (P - f
        f^T)`` with P the projector onto the face plane, i.e. 1 along the fibre and
        ``anisotropy`` across it, and ``K[i, j] = sum_faces area grad(phi_i) . sigma
        grad(phi_j)`` (phi the P1 hat functions). With ``anisotropy`` 1 this equals the cotangent
        Laplacian. A conduction-velocity ratio along/across of r needs ``anisotropy = 1 / r^2``
        (CV scales as sqrt(D)).
        """
        v, f = self.vertices, self.faces
        n = self.n_vertices
        if fibres is None:
            rows, cols, vals = [], [], []
            for k in range(3):
                i, j, o = f[:, k], f[:, (k + 1) % 3], f[:, (k + 2) % 3]
                a, b = v[i] - v[o], v[j] - v[o]
                cot = np.einsum("ij,ij->i", a, b) / np.linalg.norm(np.cross(a, b), axis=1)
                rows += [i, j]
                cols += [j, i]
                vals += [-0.5 * cot, -0.5 * cot]
            off = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                            np.concatenate(cols))), shape=(n, n))
            off = off.tocsr()
            return (off - sparse.diags(np.asarray(off.sum(axis=1)).ravel())).tocsr()
        if not 0.0 < anisotropy <= 1.0:
            raise ValueError(f"anisotropy must lie in (0, 1] (across-fibre over along-fibre "
                             f"conductivity); got {anisotropy}")
        fib = np.asarray(fibres, float)
        if fib.shape != (self.n_faces, 3) or not np.all(np.isfinite(fib)):
            raise MeshError(f"fibres must be finite with shape ({self.n_faces}, 3) (one "
                            f"direction per face); got {fib.shape}")
        nrm = self.face_normals()
        fib = fib - np.einsum("ij,ij->i", fib, nrm)[:, None] * nrm
        length = np.linalg.norm(fib, axis=1)
        if np.any(length < 1e-9):
            raise MeshError(f"fibre of face {int(np.argmin(length))} is zero or normal to the "
                            "face; give a direction in the face's plane")
        fib /= length[:, None]
        area = self.face_areas()
        # grad(phi_k) = n x e_k / (2 A), e_k the edge opposite vertex k (counter-clockwise)
        grads = [np.cross(nrm, v[f[:, (k + 2) % 3]] - v[f[:, (k + 1) % 3]]) / (2 * area[:, None])
                 for k in range(3)]
        gf = [np.einsum("ij,ij->i", g, fib) for g in grads]
        rows, cols, vals = [], [], []
        for a in range(3):
            for b in range(3):
                iso = np.einsum("ij,ij->i", grads[a], grads[b])
                vals.append(area * (anisotropy * iso + (1.0 - anisotropy) * gf[a] * gf[b]))
                rows.append(f[:, a])
                cols.append(f[:, b])
        return sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                         np.concatenate(cols))),
                                 shape=(n, n)).tocsr()

    def largest_component(self) -> tuple[TriMesh, NDArray[np.int64]]:
        """The largest edge-connected component and the indices of its vertices."""
        _, lab = csgraph.connected_components(self.adjacency(), directed=False)
        keep = lab == np.bincount(lab).argmax()
        return self.submesh(keep)


def _fibonacci_sphere(n: int) -> NDArray[np.float64]:
    """``n`` nearly evenly spread unit vectors (golden-angle spiral)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def sphere_mesh(radius: float, edge: float, center: ArrayLike = (0.0, 0.0, 0.0)) -> TriMesh:
    """A closed, outward-oriented triangulated sphere with mean edge close to ``edge`` (mm).

    Nodes on a golden-angle spiral, triangulated by their convex hull. A triangulated surface of
    near-equilateral triangles carries sqrt(3)/2 e^2 of area per node, which sets the node count.
    """
    n = max(12, round(4.0 * np.pi * radius**2 / (np.sqrt(3.0) / 2.0 * edge**2)))
    p = _fibonacci_sphere(n)
    faces = ConvexHull(p).simplices.astype(np.int64)
    # orient outwards: the normal must point along the face centroid (sphere centred at 0)
    nrm = np.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]])
    flip = np.einsum("ij,ij->i", nrm, p[faces].mean(axis=1)) < 0
    faces[flip] = faces[flip][:, ::-1]
    return TriMesh(p * radius + np.asarray(center, float), faces)


def ellipsoid_mesh(semi_axes: ArrayLike, edge: float, center: ArrayLike = (0.0, 0.0, 0.0),
                   rotation: ArrayLike | None = None) -> TriMesh:
    """A closed, outward-oriented ellipsoid: a sphere mesh of the mean radius, stretched.

    ``rotation`` is a 3x3 rotation matrix applied before the translation to ``center``.
    """
    a = np.asarray(semi_axes, float)
    r_mean = float(np.cbrt(np.prod(a)))
    unit = sphere_mesh(1.0, edge / r_mean)
    v = unit.vertices * a
    if rotation is not None:
        v = v @ np.asarray(rotation, float).T
    return TriMesh(v + np.asarray(center, float), unit.faces)


def farthest_point_sampling(points: ArrayLike, n: int,
                            start: int = 0) -> NDArray[np.int64]:
    """Indices of ``n`` points chosen greedily, each farthest (Euclidean) from those chosen.

    Deterministic given ``start``. O(n * len(points)) with vectorised distance updates.
    """
    p = np.asarray(points, float)
    if not 1 <= n <= len(p):
        raise ValueError(f"n must lie in [1, {len(p)}] (the number of points); got {n}")
    chosen = np.empty(n, np.int64)
    chosen[0] = start
    dist = np.linalg.norm(p - p[start], axis=1)
    for k in range(1, n):
        chosen[k] = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(p - p[chosen[k]], axis=1))
    return chosen


@dataclass(frozen=True, eq=False)
class RecordingSites:
    """Where the EGMs are recorded.

    Attributes:
        vertex: index of the tissue vertex under each electrode (n_rec,).
        electrodes: electrode positions (n_rec, 3), ``offset_mm`` above ``vertex`` along the
            outward normal.
        offset_mm: the electrode height above the surface.
    """

    vertex: NDArray[np.int64]
    electrodes: NDArray[np.float64]
    offset_mm: float


@dataclass(frozen=True, eq=False)
class AtrialGeometry:
    """An atrial surface ready for simulation.

    Attributes:
        mesh: the tissue surface (one mesh; several components are allowed when ``links`` join
            them).
        region: per-vertex region code (0 = RA, 1 = LA); a user mesh is all one region.
        links: (L, 2) vertex pairs coupled by extra stiffness (inter-atrial connections).
        link_names: a name per link pair ("bachmann" or "septal").
        pacing: vertices of the sinus-node pacing patch.
        landmarks: named points (mm), for figures and protocols.
        fibres: optional (n_faces, 3) fibre direction per face; with it, diffusion is
            anisotropic (:meth:`TriMesh.stiffness`): D along the fibre, ``anisotropy * D``
            across.
        anisotropy: across- over along-fibre diffusivity (used only with ``fibres``).
    """

    mesh: TriMesh
    region: NDArray[np.int64]
    links: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    link_names: tuple[str, ...] = ()
    pacing: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    landmarks: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    fibres: NDArray[np.float64] | None = None
    anisotropy: float = 1.0

    def __post_init__(self) -> None:
        if self.fibres is not None:
            self.mesh.stiffness(self.fibres, self.anisotropy)  # validates shape and values
        elif self.anisotropy != 1.0:
            raise ValueError("anisotropy needs fibres (one direction per face)")

    def stiffness(self) -> sparse.csr_matrix:
        """The tissue stiffness: isotropic, or anisotropic along :attr:`fibres`."""
        return self.mesh.stiffness(self.fibres, self.anisotropy)

    @classmethod
    def from_arrays(cls, vertices: ArrayLike, faces: ArrayLike,
                    pacing_point: ArrayLike | None = None,
                    pacing_radius_mm: float = 4.0) -> AtrialGeometry:
        """Wrap a user surface (for example a patient's segmented atria).

        The pacing patch is the vertices within ``pacing_radius_mm`` of ``pacing_point``
        (default: the most superior vertex). The surface must be edge-connected.
        """
        mesh = TriMesh(np.asarray(vertices, float), np.asarray(faces))
        n_comp, _ = csgraph.connected_components(mesh.adjacency(), directed=False)
        if n_comp != 1:
            raise MeshError(f"the surface has {n_comp} disconnected parts; give one connected "
                            "surface (or join parts with links through AtrialGeometry(...))")
        v = mesh.vertices
        point = v[np.argmax(v[:, 2])] if pacing_point is None else np.asarray(pacing_point,
                                                                                 float)
        pacing = _patch(v, point, pacing_radius_mm)
        return cls(mesh=mesh, region=np.zeros(mesh.n_vertices, np.int64), pacing=pacing,
                   landmarks={"sinus_node": v[pacing[0]]})

    @classmethod
    def from_atria(cls, la: TriMesh, ra: TriMesh, *, contact_mm: float = 6.0,
                   bachmann_radius_mm: float = 7.5, septal_radius_mm: float = 6.5,
                   sinus_node: ArrayLike | None = None, pacing_radius_mm: float = 4.0,
                   fibres: tuple[ArrayLike, ArrayLike] | None = None,
                   anisotropy: float = 1.0) -> AtrialGeometry:
        """A bi-atrial geometry from two separate surfaces (for example segmented from CT).

        Frame: millimetres, x towards the patient's left, y posterior, z superior (DICOM's LPS
        patient frame), as the idealised geometry; :func:`egmlib.physics.anatomy` recentres.

        Inter-atrial connections, found from the geometry: the *contact zone* is the RA vertices
        within ``contact_mm`` of the LA surface (the inter-atrial septum and the roof where the
        atria touch). Bachmann's bundle is anchored at the contact vertex farthest superior and
        anterior (largest z - y), the septal / coronary-sinus route at the one farthest inferior
        and posterior (largest y - z), following the anatomy of the inter-atrial connections
        (Ho et al., "Atrial structure and fibres: morphologic bases of atrial conduction",
        Cardiovasc Res 54:325, 2002). Each contact vertex within ``bachmann_radius_mm`` /
        ``septal_radius_mm`` of its anchor is linked to its nearest LA vertex (extra stiffness,
        as in :func:`biatrial_geometry`); the rest of the septum stays uncoupled.

        Sinus node: given (``sinus_node``, a point in mm), or found as the rim vertex of the
        superior vena cava (the RA hole whose rim centroid is most superior) farthest lateral
        and anterior (smallest x + y), i.e. at the superior end of the crista terminalis. The
        pacing patch is the RA vertices within ``pacing_radius_mm`` of it.

        Landmarks: the sinus node, each atrium's centroid, and the centre of each hole rim: the
        LA's largest is named ``LA_MV`` (mitral valve) and the others ``LA_vein_<i>``; the RA's
        largest ``RA_TV`` (tricuspid valve), then ``RA_SVC`` and ``RA_IVC`` (the higher of the
        next two is the superior vena cava).

        ``fibres``: optional per-face directions ``(la_fibres, ra_fibres)``.

        Raises:
            MeshError: the surfaces overlap or share no contact zone, or the RA has no hole
                that could be the superior vena cava (give ``sinus_node``).
        """
        la_tree = cKDTree(la.vertices)
        gap, nearest = la_tree.query(ra.vertices)
        if gap.min() < 0.5:
            raise MeshError(f"the atria touch or overlap (closest RA-LA vertices "
                            f"{gap.min():.2f} mm apart); give two separate surfaces")
        contact = np.flatnonzero(gap <= contact_mm)
        if len(contact) == 0:
            raise MeshError(f"no RA vertex lies within contact_mm = {contact_mm} mm of the LA "
                            f"(closest: {gap.min():.1f} mm); increase contact_mm")
        p = ra.vertices[contact]
        links, names = [], []
        for name, score, radius in (("bachmann", p[:, 2] - p[:, 1], bachmann_radius_mm),
                                    ("septal", p[:, 1] - p[:, 2], septal_radius_mm)):
            anchor = p[int(np.argmax(score))]
            nodes = contact[np.linalg.norm(p - anchor, axis=1) <= radius]
            links.append(np.column_stack([nodes, nearest[nodes] + ra.n_vertices]))
            names += [name] * len(nodes)
        pairs = np.concatenate(links)

        if sinus_node is None:
            rims = ra.boundary_loops()
            if not rims:
                raise MeshError("the RA surface has no hole, so the superior vena cava cannot "
                                "be found; give sinus_node")
            svc = max(rims, key=lambda r: ra.vertices[r, 2].mean())
            rim = ra.vertices[svc]
            point = rim[int(np.argmin(rim[:, 0] + rim[:, 1]))]
        else:
            point = np.asarray(sinus_node, float)
        pacing = _patch(ra.vertices, point, pacing_radius_mm)

        mesh = TriMesh(np.concatenate([ra.vertices, la.vertices]),
                       np.concatenate([ra.faces, la.faces + ra.n_vertices]))
        region = np.concatenate([np.full(ra.n_vertices, RA), np.full(la.n_vertices, LA)])
        fib = None
        if fibres is not None:
            fib = np.concatenate([np.asarray(fibres[1], float), np.asarray(fibres[0], float)])
        landmarks = {"sinus_node": ra.vertices[pacing[0]],
                     "RA_center": ra.vertices.mean(axis=0), "LA_center": la.vertices.mean(axis=0)}
        # hole centres: the LA's largest rim is the mitral valve, the others veins; the RA's
        # largest the tricuspid valve, then the venae cavae (superior: the higher one)
        la_rims = la.boundary_loops()
        if la_rims:
            landmarks["LA_MV"] = la.vertices[la_rims[0]].mean(axis=0)
            for i, rim in enumerate(la_rims[1:]):
                landmarks[f"LA_vein_{i}"] = la.vertices[rim].mean(axis=0)
        ra_rims = ra.boundary_loops()
        if ra_rims:
            landmarks["RA_TV"] = ra.vertices[ra_rims[0]].mean(axis=0)
            cavae = sorted(ra_rims[1:3], key=lambda r: -ra.vertices[r, 2].mean())
            for name, rim in zip(("RA_SVC", "RA_IVC"), cavae):
                landmarks[name] = ra.vertices[rim].mean(axis=0)
        return cls(mesh=mesh, region=region, links=pairs, link_names=tuple(names),
                   pacing=pacing, landmarks=landmarks, fibres=fib, anisotropy=anisotropy)

    @property
    def n_vertices(self) -> int:
        return self.mesh.n_vertices


def _patch(v: NDArray[np.float64], point: NDArray[np.float64], radius: float
           ) -> NDArray[np.int64]:
    """Vertices within ``radius`` of ``point``, nearest first (at least the nearest one)."""
    d = np.linalg.norm(v - point, axis=1)
    idx = np.flatnonzero(d <= radius)
    if len(idx) == 0:
        idx = np.array([int(np.argmin(d))])
    return idx[np.argsort(d[idx])].astype(np.int64)


def _unit(x: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(x, float)
    return x / np.linalg.norm(x)


# Hole directions from each atrium's centre (x left, y posterior, z superior) and radii in mm.
_RA_HOLES = {"SVC": ((0.0, 0.3, 1.0), 9.0), "IVC": ((0.0, 0.3, -1.0), 9.0),
             "TV": ((0.35, -0.85, -0.35), 14.0)}
_LA_HOLES = {"LSPV": ((0.45, 0.75, 0.45), 6.0), "LIPV": ((0.45, 0.75, -0.45), 6.0),
             "RSPV": ((-0.3, 0.85, 0.45), 6.0), "RIPV": ((-0.3, 0.85, -0.45), 6.0),
             "MV": ((-0.1, -0.75, -0.6), 13.0)}


def _shell(center: NDArray[np.float64], radius: float, stretch: tuple[float, float, float],
           edge: float, holes: dict[str, tuple[tuple[float, float, float], float]]
           ) -> tuple[TriMesh, dict[str, NDArray[np.float64]]]:
    """An ellipsoid-like shell with holes cut by cones from its centre."""
    full = ellipsoid_mesh(np.asarray(stretch) * radius, edge, center)
    u = full.vertices - center
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    keep = np.ones(full.n_vertices, bool)
    marks = {}
    for name, (direction, r_hole) in holes.items():
        d = _unit(direction)
        keep &= u @ d < np.cos(np.arcsin(min(r_hole / radius, 1.0)))
        marks[name] = center + d * radius * np.asarray(stretch)
    mesh, _ = full.submesh(keep)
    mesh, _ = mesh.largest_component()
    return mesh, marks


def biatrial_geometry(edge_mm: float = 2.0, la_radius: float = 23.0, ra_radius: float = 25.0,
                      separation: float = 56.0, stretch: tuple[float, float, float] = (1.0, 0.92,
                                                                                          1.06),
                      bachmann_radius_mm: float = 7.5, septal_radius_mm: float = 6.5,
                      pacing_radius_mm: float = 4.0) -> AtrialGeometry:
    """The idealised bi-atrial surface (see the module docstring for its sources).

    Args:
        edge_mm: target mean edge length (about 1.5-2 mm for the paper profile).
        la_radius, ra_radius: shell radii (mm); ``stretch`` scales the (x, y, z) semi-axes.
        separation: distance between the shell centres (mm); RA at -x, LA at +x.
        bachmann_radius_mm, septal_radius_mm: radius of the RA patch whose nodes are each linked
            to their nearest LA node (Bachmann's bundle: superior-anterior; septal link:
            posterior-inferior, near the coronary sinus).
        pacing_radius_mm: radius of the sinus-node pacing patch at the anterolateral SVC rim.
    """
    if not 0.5 <= edge_mm <= 10.0:
        raise ValueError(f"edge_mm must lie in [0.5, 10] mm; got {edge_mm}")
    c_ra = np.array([-separation / 2, 0.0, 0.0])
    c_la = np.array([separation / 2, 0.0, 0.0])
    ra, marks_ra = _shell(c_ra, ra_radius, stretch, edge_mm, _RA_HOLES)
    la, marks_la = _shell(c_la, la_radius, stretch, edge_mm, _LA_HOLES)
    v = np.concatenate([ra.vertices, la.vertices])
    f = np.concatenate([ra.faces, la.faces + ra.n_vertices])
    mesh = TriMesh(v, f)
    region = np.concatenate([np.full(ra.n_vertices, RA), np.full(la.n_vertices, LA)])

    la_tree = cKDTree(la.vertices)
    links, names = [], []
    ra_semi = np.asarray(stretch) * ra_radius
    for name, direction, radius in (("bachmann", (1.0, -0.6, 0.6), bachmann_radius_mm),
                                    ("septal", (1.0, 0.45, -0.55), septal_radius_mm)):
        anchor = c_ra + _unit(direction) * ra_semi
        ra_nodes = np.flatnonzero(np.linalg.norm(ra.vertices - anchor, axis=1) <= radius)
        _, la_nodes = la_tree.query(ra.vertices[ra_nodes])
        pairs = np.unique(np.column_stack([ra_nodes, la_nodes + ra.n_vertices]), axis=0)
        links.append(pairs)
        names += [name] * len(pairs)

    # sinus node: on the RA, just lateral-anterior of the SVC rim
    svc_dir = _unit(_RA_HOLES["SVC"][0])
    svc_angle = np.arcsin(_RA_HOLES["SVC"][1] / ra_radius)
    lateral = _unit(np.cross(svc_dir, (0.0, 1.0, 0.0)))  # towards -x (lateral RA)
    tilt = svc_angle + 6.0 / ra_radius
    towards = _unit(lateral + np.array([0.0, -0.5, 0.0]))  # lateral and a little anterior
    sn_dir = _unit(np.cos(tilt) * svc_dir + np.sin(tilt) * towards)
    sn_point = c_ra + sn_dir * ra_semi
    pacing = _patch(ra.vertices, sn_point, pacing_radius_mm)

    landmarks = {**{f"RA_{k}": m for k, m in marks_ra.items()},
                 **{f"LA_{k}": m for k, m in marks_la.items()},
                 "sinus_node": ra.vertices[pacing[0]], "RA_center": c_ra, "LA_center": c_la}
    return AtrialGeometry(mesh=mesh, region=region, links=np.concatenate(links),
                          link_names=tuple(names), pacing=pacing, landmarks=landmarks)


#: How the recording sites are ordered as the columns of a window (:func:`order_sites`).
SITE_ORDERS = ("chain", "spectral", "fps")


def _chain_order(points: NDArray[np.float64], start: int) -> NDArray[np.int64]:
    """A short open path through ``points`` from ``start``: greedy nearest neighbour, then 2-opt
    moves (reverse ``path[i..j]`` when that shortens the path) until none helps."""
    n = len(points)
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    path = [start]
    free = np.ones(n, bool)
    free[start] = False
    for _ in range(n - 1):
        cur = path[-1]
        nxt = int(np.argmin(np.where(free, d[cur], np.inf)))
        path.append(nxt)
        free[nxt] = False
    out = np.asarray(path, np.int64)
    for _ in range(100 * n):  # each pass improves the length strictly; bounded for safety
        improved = False
        for i in range(1, n - 1):
            a, b = out[i - 1], out[i]
            c = out[i + 1:]                                   # candidate segment ends j > i
            after = np.append(out[i + 2:], -1)                # out[j + 1], -1 past the end
            has_next = after >= 0
            old = d[a, b] + np.where(has_next, d[c, np.maximum(after, 0)], 0.0)
            new = d[a, c] + np.where(has_next, d[b, np.maximum(after, 0)], 0.0)
            gain = old - new
            k = int(np.argmax(gain))
            if gain[k] > 1e-9:
                j = i + 1 + k
                out[i:j + 1] = out[i:j + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return out


def _spectral_order(points: NDArray[np.float64], k: int = 8) -> NDArray[np.int64]:
    """Sites sorted by the Fiedler vector of their symmetric k-nearest-neighbour graph (the
    second eigenvector of the normalised graph Laplacian; a 1-D spectral embedding)."""
    from scipy.sparse.csgraph import laplacian

    n = len(points)
    if n < 3:
        return np.arange(n, dtype=np.int64)
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    nn = np.argsort(d, axis=1)[:, 1:min(k, n - 1) + 1]
    w = np.zeros((n, n))
    w[np.repeat(np.arange(n), nn.shape[1]), nn.ravel()] = 1.0
    w = np.maximum(w, w.T)
    _, vec = np.linalg.eigh(laplacian(w, normed=True))
    fiedler = vec[:, 1] * np.sign(vec[np.argmax(np.abs(vec[:, 1])), 1])  # a fixed sign
    return np.argsort(fiedler, kind="stable").astype(np.int64)


def column_step_mm(points: ArrayLike) -> float:
    """Mean distance (mm) between the positions of consecutive columns (sites) in their stored
    order: what :func:`order_sites` shortens."""
    p = np.asarray(points, np.float64)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).mean()) if len(p) > 1 else 0.0


def order_sites(points: ArrayLike, groups: ArrayLike, method: str = "chain") -> NDArray[np.int64]:
    """A permutation of the recording sites so that neighbouring columns of a window are
    neighbours on the surface, atrium by atrium (``groups``: region code per site; groups in
    increasing code order, RA before LA).

    ``"chain"``: per group, a short open path through the electrode positions from the most
    superior one (greedy nearest neighbour refined by 2-opt; a travelling-salesman heuristic,
    Croes, Oper. Res. 6:791, 1958). ``"spectral"``: per group, sorted by the Fiedler vector of
    the 8-nearest-neighbour graph. ``"fps"``: the farthest-point-sampling order itself
    (consecutive sites far apart; the order before this option existed).

    Why: the generators' convolutions run over (time, site) images, 15 sites wide with stride 4;
    they can only use spatial structure when adjacent columns are adjacent on the atria.
    """
    p = np.asarray(points, np.float64)
    g = np.asarray(groups)
    if method not in SITE_ORDERS:
        raise ValueError(f"method: got {method!r}; allowed: {', '.join(SITE_ORDERS)}")
    if p.ndim != 2 or g.shape != (len(p),):
        raise ValueError(f"points (n, 3) and groups (n,) must match; got {p.shape} and {g.shape}")
    if method == "fps":
        return np.arange(len(p), dtype=np.int64)
    out = []
    for code in np.unique(g):
        idx = np.flatnonzero(g == code)
        sub = p[idx]
        local = (_chain_order(sub, int(np.argmax(sub[:, 2]))) if method == "chain"
                 else _spectral_order(sub))
        out.append(idx[local])
    return np.concatenate(out).astype(np.int64)


def recording_sites(geometry: AtrialGeometry | TriMesh, n_rec: int, offset_mm: float = 1.5,
                    order: str = "fps") -> RecordingSites:
    """``n_rec`` recording sites spread evenly over the tissue by farthest-point sampling,
    with electrodes ``offset_mm`` above the surface along the outward vertex normal, in the
    column ``order`` of :func:`order_sites` (``"fps"``: the sampling order).

    The sampling starts from the vertex nearest the centroid's most superior point, so the
    result is deterministic for a given mesh.
    """
    mesh = geometry.mesh if isinstance(geometry, AtrialGeometry) else geometry
    if not 1 <= n_rec <= mesh.n_vertices:
        raise ValueError(f"n_rec must lie in [1, {mesh.n_vertices}] (the tissue vertices); "
                         f"got {n_rec}")
    if not offset_mm > 0:
        raise ValueError(f"offset_mm must be positive; got {offset_mm}")
    start = int(np.argmax(mesh.vertices[:, 2]))
    idx = farthest_point_sampling(mesh.vertices, n_rec, start=start)
    electrodes = mesh.vertices[idx] + offset_mm * mesh.vertex_normals()[idx]
    groups = (geometry.region[idx] if isinstance(geometry, AtrialGeometry)
              else np.zeros(len(idx), np.int64))
    perm = order_sites(electrodes, groups, order)
    return RecordingSites(vertex=idx[perm], electrodes=electrodes[perm],
                          offset_mm=float(offset_mm))
