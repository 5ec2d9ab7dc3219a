"""egmlib.physics.geometry: mesh validation, measures, FEM stiffness, the bi-atrial surface,
sites."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse import csgraph

from egmlib.physics import geometry
from egmlib.physics.geometry import (
    AtrialGeometry,
    MeshError,
    TriMesh,
    biatrial_geometry,
    ellipsoid_mesh,
    farthest_point_sampling,
    recording_sites,
    sphere_mesh,
)


def _tetrahedron() -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, f


def _flat_grid(h: float = 1.0, n: int = 11) -> TriMesh:
    xs = np.arange(n) * h
    x, y = np.meshgrid(xs, xs, indexing="ij")
    v = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    idx = np.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    return TriMesh(v, np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])]))


def _boundary_loops(mesh: TriMesh) -> int:
    be = mesh.boundary_edges()
    n = mesh.n_vertices
    adj = sparse.coo_matrix((np.ones(len(be)), (be[:, 0], be[:, 1])), shape=(n, n))
    _, lab = csgraph.connected_components(adj, directed=False)
    return len(np.unique(lab[np.unique(be)]))


# --- validation ------------------------------------------------------------------------------

def test_valid_tetrahedron_is_closed_and_outward():
    v, f = _tetrahedron()
    m = TriMesh(v, f)
    assert m.n_vertices == 4 and m.n_faces == 4 and m.is_closed()
    assert m.signed_volume() == pytest.approx(1.0 / 6.0)
    assert len(m.edges()) == 6 and len(m.boundary_edges()) == 0
    assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int64
    with pytest.raises(ValueError):
        m.vertices[0, 0] = 5.0  # read-only arrays


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vertices_raise_mesh_error_naming_the_vertex(bad):
    v, f = _tetrahedron()
    v[2, 1] = bad
    with pytest.raises(MeshError, match="vertex 2"):
        TriMesh(v, f)


def test_degenerate_faces_raise_mesh_error():
    v, f = _tetrahedron()
    f_rep = f.copy()
    f_rep[1] = [0, 1, 1]
    with pytest.raises(MeshError, match="degenerate face 1"):
        TriMesh(v, f_rep)
    # zero area: three collinear vertices
    v_col = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]])
    with pytest.raises(MeshError, match=r"degenerate face 0.*zero area"):
        TriMesh(v_col, np.array([[0, 1, 2], [0, 1, 3]]))
    # coincident vertices
    v_dup = np.array([[0.0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(MeshError, match="zero area"):
        TriMesh(v_dup, np.array([[0, 3, 1], [0, 1, 2]]))


def test_other_invalid_arrays_raise_mesh_error():
    v, f = _tetrahedron()
    with pytest.raises(MeshError, match="shape"):
        TriMesh(v[:, :2], f)
    with pytest.raises(MeshError, match=r"\[0, 3\]"):
        TriMesh(v, np.array([[0, 1, 4]]))
    with pytest.raises(MeshError, match=r"\[0, 3\]"):
        TriMesh(v, np.array([[0, 1, -1]]))
    with pytest.raises(MeshError, match="integer"):
        TriMesh(v, f + 0.5)
    with pytest.raises(MeshError, match="belong to no face"):
        TriMesh(np.vstack([v, [5.0, 5.0, 5.0]]), f)
    with pytest.raises(MeshError, match="faces must have shape"):
        TriMesh(v, np.zeros((0, 3), int))
    # integer-valued floats are accepted
    assert TriMesh(v, f.astype(float)).faces.dtype == np.int64


def test_from_arrays_rejects_disconnected_and_invalid_surfaces():
    a = sphere_mesh(10.0, 4.0)
    b = sphere_mesh(10.0, 4.0, center=(50.0, 0.0, 0.0))
    v = np.vstack([a.vertices, b.vertices])
    f = np.vstack([a.faces, b.faces + a.n_vertices])
    with pytest.raises(MeshError, match="2 disconnected parts"):
        AtrialGeometry.from_arrays(v, f)
    bad = a.vertices.copy()
    bad[3] = np.nan
    with pytest.raises(MeshError, match="finite"):
        AtrialGeometry.from_arrays(bad, a.faces)


# --- measures and FEM ------------------------------------------------------------------------

def test_sphere_mesh_measures_match_the_sphere():
    s = sphere_mesh(10.0, 1.0, center=(1.0, 2.0, 3.0))
    assert s.is_closed()
    assert s.signed_volume() == pytest.approx(4.0 / 3.0 * np.pi * 1000.0, rel=0.01)
    assert s.face_areas().sum() == pytest.approx(4.0 * np.pi * 100.0, rel=0.01)
    assert s.vertex_areas().sum() == pytest.approx(s.face_areas().sum(), rel=1e-12)
    assert s.edge_lengths().mean() == pytest.approx(1.0, rel=0.15)
    radial = (s.vertices - [1.0, 2.0, 3.0]) / 10.0
    assert np.einsum("ij,ij->i", s.vertex_normals(), radial).min() > 0.99
    assert np.allclose(np.linalg.norm(s.face_normals(), axis=1), 1.0)


def test_ellipsoid_mesh_volume_rotation_and_centre():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    e = ellipsoid_mesh((10.0, 20.0, 30.0), 2.0, center=(5.0, 0.0, 0.0), rotation=rot)
    assert e.is_closed()
    assert e.signed_volume() == pytest.approx(4.0 / 3.0 * np.pi * 6000.0, rel=0.01)
    ext = e.vertices.max(axis=0) - e.vertices.min(axis=0)
    # rotated by 90 degrees about z: the 20 mm semi-axis now lies along x
    assert ext == pytest.approx([40.0, 20.0, 60.0], rel=0.02)
    assert e.vertices.mean(axis=0) == pytest.approx([5.0, 0.0, 0.0], abs=0.1)


def test_stiffness_is_a_symmetric_psd_laplacian():
    s = sphere_mesh(10.0, 2.0)
    k = s.stiffness()
    assert abs(k - k.T).max() < 1e-12
    assert np.abs(np.asarray(k.sum(axis=1))).max() < 1e-10  # constants are in the kernel
    x = s.vertices[:, 0]
    # Dirichlet energy of a coordinate on a sphere: int |grad_S x|^2 = 8 pi r^2 / 3
    assert x @ k @ x == pytest.approx(8.0 * np.pi * 100.0 / 3.0, rel=0.02)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(s.n_vertices, 5))
    assert np.einsum("ij,ij->j", u, k @ u).min() > 0


def test_stiffness_reproduces_linear_functions_on_a_flat_mesh():
    m = _flat_grid(h=1.0, n=11)
    k = m.stiffness()
    lin = 2.0 * m.vertices[:, 0] - 3.0 * m.vertices[:, 1] + 1.0
    interior = (m.vertices[:, :2] > 0.5).all(axis=1) & (m.vertices[:, :2] < 9.5).all(axis=1)
    assert np.abs((k @ lin)[interior]).max() < 1e-10
    # a quadratic x^2 has Laplacian 2: (K u)_i = -int Laplacian * phi_i = -2 * area_i
    quad = m.vertices[:, 0] ** 2
    assert (k @ quad)[interior] == pytest.approx(-2.0 * m.vertex_areas()[interior], rel=1e-9)


def test_submesh_and_largest_component():
    a = sphere_mesh(10.0, 4.0)
    b = sphere_mesh(5.0, 4.0, center=(40.0, 0.0, 0.0))
    m = TriMesh(np.vstack([a.vertices, b.vertices]),
                np.vstack([a.faces, b.faces + a.n_vertices]))
    big, idx = m.largest_component()
    assert big.n_vertices == a.n_vertices and np.array_equal(idx, np.arange(a.n_vertices))
    top, idx = a.submesh(a.vertices[:, 2] > 0)
    assert np.all(a.vertices[idx, 2] > 0) and not top.is_closed()
    assert np.allclose(top.vertices, a.vertices[idx])


# --- the bi-atrial surface -------------------------------------------------------------------

def test_biatrial_geometry_regions_size_and_orientation(biatrial):
    g = biatrial
    m = g.mesh
    assert m.edge_lengths().mean() == pytest.approx(4.0, rel=0.15)
    assert set(np.unique(g.region)) == {geometry.RA, geometry.LA}
    for reg, key, lo, hi in ((geometry.RA, "RA_center", 50.0, 75.0),
                             (geometry.LA, "LA_center", 40.0, 65.0)):
        sub, _ = m.submesh(g.region == reg)
        area_cm2 = sub.face_areas().sum() / 100.0
        assert lo < area_cm2 < hi
        rel = m.vertices[g.region == reg] - g.landmarks[key]
        # normals point outwards (away from each atrium's centre)
        assert np.einsum("ij,ij->i", m.vertex_normals()[g.region == reg], rel).min() > 0
    # the right atrium is the bigger one and lies at -x
    assert (g.region == geometry.RA).sum() > (g.region == geometry.LA).sum()
    assert m.vertices[g.region == geometry.RA, 0].mean() < m.vertices[g.region == geometry.LA,
                                                                         0].mean()


@pytest.mark.parametrize("edge", [3.0, 2.0])
def test_biatrial_holes(edge):
    g = biatrial_geometry(edge)
    ra, _ = g.mesh.submesh(g.region == geometry.RA)
    la, _ = g.mesh.submesh(g.region == geometry.LA)
    assert _boundary_loops(ra) == 3  # SVC, IVC, tricuspid valve
    assert _boundary_loops(la) == 5  # four pulmonary veins, mitral valve


def test_biatrial_links_join_the_atria_and_pacing_sits_on_the_ra(biatrial):
    g = biatrial
    assert len(g.links) == len(g.link_names) > 0
    assert set(g.link_names) == {"bachmann", "septal"}
    assert np.all(g.region[g.links[:, 0]] == geometry.RA)
    assert np.all(g.region[g.links[:, 1]] == geometry.LA)
    # each RA link node is paired with its nearest LA node, and no pair repeats
    la = np.flatnonzero(g.region == geometry.LA)
    d = np.linalg.norm(g.mesh.vertices[g.links[:, 0], None] - g.mesh.vertices[None, la], axis=-1)
    assert np.array_equal(la[d.argmin(axis=1)], g.links[:, 1])
    assert len(np.unique(g.links, axis=0)) == len(g.links)
    # without links: two components; with links: one
    adj = g.mesh.adjacency()
    assert csgraph.connected_components(adj, directed=False)[0] == 2
    n = g.n_vertices
    lk = sparse.coo_matrix((np.ones(len(g.links)), (g.links[:, 0], g.links[:, 1])), shape=(n, n))
    assert csgraph.connected_components(adj + lk + lk.T, directed=False)[0] == 1
    # Bachmann's bundle is superior-anterior (+z, -y), the septal link posterior-inferior
    names = np.array(g.link_names)
    bb = g.mesh.vertices[g.links[names == "bachmann", 0]].mean(axis=0)
    sep = g.mesh.vertices[g.links[names == "septal", 0]].mean(axis=0)
    assert bb[2] > 0 > bb[1] and sep[2] < 0 < sep[1]
    # pacing patch: RA nodes within 4 mm of the sinus-node point (so within a diameter of the
    # first one, the landmark), above the RA centre
    assert len(g.pacing) >= 2 and np.all(g.region[g.pacing] == geometry.RA)
    assert len(np.unique(g.pacing)) == len(g.pacing)
    d = np.linalg.norm(g.mesh.vertices[g.pacing] - g.landmarks["sinus_node"], axis=1)
    assert d[0] == 0.0 and d.max() <= 8.0
    assert g.landmarks["sinus_node"][2] > g.landmarks["RA_center"][2]


def test_biatrial_geometry_is_deterministic_and_checks_edge():
    a, b = biatrial_geometry(5.0), biatrial_geometry(5.0)
    assert np.array_equal(a.mesh.vertices, b.mesh.vertices)
    assert np.array_equal(a.mesh.faces, b.mesh.faces)
    assert np.array_equal(a.links, b.links)
    with pytest.raises(ValueError, match="edge_mm"):
        biatrial_geometry(0.1)
    with pytest.raises(ValueError, match="edge_mm"):
        biatrial_geometry(20.0)


def test_from_arrays_wraps_a_user_surface(ellipsoid_geometry):
    g = ellipsoid_geometry
    assert np.all(g.region == 0) and len(g.links) == 0
    # default pacing: around the most superior vertex
    top = g.mesh.vertices[np.argmax(g.mesh.vertices[:, 2])]
    assert np.allclose(g.landmarks["sinus_node"], top)
    assert np.linalg.norm(g.mesh.vertices[g.pacing] - top, axis=1).max() <= 4.0
    # an explicit pacing point and radius
    e = ellipsoid_mesh((24.0, 20.0, 30.0), 4.0)
    g2 = AtrialGeometry.from_arrays(e.vertices, e.faces, pacing_point=(24.0, 0.0, 0.0),
                                    pacing_radius_mm=6.0)
    d = np.linalg.norm(g2.mesh.vertices[g2.pacing] - [24.0, 0.0, 0.0], axis=1)
    assert d.max() <= 6.0 and len(g2.pacing) >= 2
    # a point far from the surface still gives one pacing node, the nearest
    g3 = AtrialGeometry.from_arrays(e.vertices, e.faces, pacing_point=(100.0, 0.0, 0.0),
                                    pacing_radius_mm=1.0)
    assert len(g3.pacing) == 1
    assert g3.pacing[0] == np.argmin(np.linalg.norm(e.vertices - [100.0, 0, 0], axis=1))


# --- recording sites -------------------------------------------------------------------------

def test_farthest_point_sampling_spreads_points():
    rng = np.random.default_rng(1)
    p = rng.uniform(-1, 1, size=(500, 3))
    idx = farthest_point_sampling(p, 20, start=3)
    assert idx[0] == 3 and len(np.unique(idx)) == 20
    assert np.array_equal(idx, farthest_point_sampling(p, 20, start=3))

    def min_gap(ii):
        d = np.linalg.norm(p[ii][:, None] - p[ii][None], axis=-1)
        return d[np.triu_indices(len(ii), 1)].min()

    random_gaps = [min_gap(rng.choice(500, 20, replace=False)) for _ in range(20)]
    assert min_gap(idx) > max(random_gaps)
    for n in (0, 501):
        with pytest.raises(ValueError, match="n must lie in"):
            farthest_point_sampling(p, n)


def test_recording_sites_sit_offset_outside_the_tissue(biatrial):
    sites = recording_sites(biatrial, 40, 2.0)
    m = biatrial.mesh
    assert sites.vertex.shape == (40,) and sites.electrodes.shape == (40, 3)
    assert len(np.unique(sites.vertex)) == 40
    assert np.linalg.norm(sites.electrodes - m.vertices[sites.vertex], axis=1) == pytest.approx(
        np.full(40, 2.0))
    # outside: farther from the atrium's centre than the vertex below
    for reg, key in ((geometry.RA, "RA_center"), (geometry.LA, "LA_center")):
        sel = biatrial.region[sites.vertex] == reg
        assert sel.sum() >= 10
        c = biatrial.landmarks[key]
        assert np.all(np.linalg.norm(sites.electrodes[sel] - c, axis=1)
                      > np.linalg.norm(m.vertices[sites.vertex[sel]] - c, axis=1) + 1.5)
    # the electrode is nearer its own vertex than any other tissue node
    d = np.linalg.norm(sites.electrodes[:, None] - m.vertices[None], axis=-1)
    assert np.array_equal(d.argmin(axis=1), sites.vertex)
    # deterministic, and a TriMesh works too
    again = recording_sites(m, 40, 2.0)
    assert np.array_equal(again.vertex, sites.vertex)
    with pytest.raises(ValueError, match="n_rec"):
        recording_sites(biatrial, biatrial.n_vertices + 1)
    with pytest.raises(ValueError, match="offset_mm"):
        recording_sites(biatrial, 4, 0.0)


def test_site_orders_are_permutations_that_put_neighbours_side_by_side(biatrial):
    fps = recording_sites(biatrial, 120, 1.5, "fps")
    step = {"fps": geometry.column_step_mm(fps.electrodes)}
    for order in ("chain", "spectral"):
        s = recording_sites(biatrial, 120, 1.5, order)
        # the same sites, only reordered
        assert sorted(s.vertex.tolist()) == sorted(fps.vertex.tolist())
        perm = geometry.order_sites(fps.electrodes, biatrial.region[fps.vertex], order)
        assert sorted(perm.tolist()) == list(range(120))
        assert np.array_equal(s.vertex, fps.vertex[perm])
        # atria are not interleaved: all RA columns, then all LA columns
        reg = biatrial.region[s.vertex]
        assert np.all(np.diff(reg) >= 0)
        step[order] = geometry.column_step_mm(s.electrodes)
    # farthest-point order jumps across the atria; a short path steps to a near neighbour
    assert step["chain"] < 0.3 * step["fps"]
    assert step["chain"] < step["spectral"] < step["fps"]


def test_chain_order_finds_the_straight_path_through_points_on_a_line():
    rng = np.random.default_rng(3)
    x = rng.permutation(30).astype(float)
    pts = np.column_stack([x, np.zeros(30), -x])       # the top (largest z) is x = 0
    perm = geometry.order_sites(pts, np.zeros(30), "chain")
    assert np.array_equal(x[perm], np.arange(30.0))    # 0, 1, ..., 29: the shortest open path
    assert geometry.column_step_mm(pts[perm]) == pytest.approx(np.sqrt(2.0))
    with pytest.raises(ValueError, match="allowed: chain, spectral, fps"):
        geometry.order_sites(pts, np.zeros(30), "hilbert")
