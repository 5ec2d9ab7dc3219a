"""Real anatomy: remeshing, bi-atrial geometry from two surfaces, fibres, the shipped CT atria,
the wrapped Barr heart surface, and the ``anatomy`` parameter."""

from __future__ import annotations

import numpy as np
import pytest

from egmlib.core.metrics import rhythm_df
from egmlib.core.params import DataConfig, ParameterError
from egmlib.physics.anatomy import CT_FILE, anatomy_digest, ct_atria, load_anatomy
from egmlib.physics.forward import interpolation_matrix, winding_number
from egmlib.physics.geometry import (
    LA,
    RA,
    AtrialGeometry,
    MeshError,
    TriMesh,
    biatrial_geometry,
    recording_sites,
    sphere_mesh,
)
from egmlib.physics.remesh import CAP_TOLERANCE, mesh_quality, remesh, wrap_surface
from egmlib.physics.simulate import (
    SimulationSpec,
    Simulator,
    conduction_velocity,
    draw_specs,
)
from egmlib.physics.surface_io import clean_surface


@pytest.fixture(scope="module")
def ct() -> AtrialGeometry:
    return load_anatomy("ct_biatrial", 2.0)


def _open_shell(edge: float) -> TriMesh:
    """A sphere of radius 20 mm with two holes (an open 'atrium')."""
    s = sphere_mesh(20.0, edge)
    keep = (s.vertices[:, 2] < 16.0) & (s.vertices[:, 0] < 17.0)
    return s.submesh(keep)[0]


def _broken(edge_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """An open shell made messy as real segmentations are: slivers (a vertex moved 97 % of the
    way to the midpoint of its opposite edge: a face with a 170+ degree angle), 0.02 mm edges (a
    vertex moved to 0.02 mm from a neighbour), a duplicated face and a small separate
    fragment."""
    m = _open_shell(edge_mm)
    v, f = m.vertices.copy(), m.faces
    moved: set[int] = set()
    rim = set(m.boundary_edges().ravel().tolist())
    for k, (a, b, c) in enumerate(f[::25]):
        ring = set(f[(f == c).any(axis=1)].ravel().tolist())
        if ring & (moved | rim):
            continue  # one change per neighbourhood, away from the rims
        moved |= ring
        if k % 3:
            v[c] += 0.97 * (0.5 * (v[a] + v[b]) - v[c])
        else:
            v[c] = v[a] + 0.02 * (v[c] - v[a]) / np.linalg.norm(v[c] - v[a])
    fragment = sphere_mesh(2.0, 1.0, center=(100.0, 0.0, 0.0))
    f = np.concatenate([f, f[:1], fragment.faces + len(v)])
    v = np.concatenate([v, fragment.vertices])
    return v, f


# --- remeshing --------------------------------------------------------------------------------
@pytest.mark.slow
def test_remesh_repairs_a_broken_surface_to_the_idealised_stable_step() -> None:
    v, f = _broken(2.0)
    with pytest.warns(UserWarning, match="fragment|duplicate"):
        cleaned, report = clean_surface((v, f))
    assert report.duplicate_faces == 1
    assert sum(report.fragment_vertices) == sphere_mesh(2.0, 1.0).n_vertices
    q_in = mesh_quality(cleaned)
    assert q_in["angle_max_deg"] > 170 and q_in["edge_min_mm"] < 0.03  # slivers, tiny edges
    out = remesh(cleaned, 2.0)
    q = mesh_quality(out)
    assert q["angle_min_deg"] > 20 and q["angle_max_deg"] < 125
    assert 1.8 < q["edge_mean_mm"] < 2.3
    assert len(out.boundary_loops()) == len(cleaned.boundary_loops()) == 2
    dt_broken = Simulator(AtrialGeometry.from_arrays(cleaned.vertices, cleaned.faces)
                          ).max_stable_dt(1.0)
    dt_out = Simulator(AtrialGeometry.from_arrays(out.vertices, out.faces)).max_stable_dt(1.0)
    dt_ideal = Simulator(biatrial_geometry(2.0)).max_stable_dt(1.0)
    assert dt_broken < 0.05 * dt_ideal  # the slivers set a useless step...
    assert dt_out > 0.5 * dt_ideal  # ...and the remeshed surface is within 2x of the idealised


def test_remesh_keeps_the_surface_where_it_was_and_outward() -> None:
    m = _open_shell(1.0)
    out = remesh(m, 2.5)
    off = np.abs(np.linalg.norm(out.vertices, axis=1) - 20.0)
    rim = np.unique(out.boundary_edges())
    inner = np.setdiff1d(np.arange(out.n_vertices), rim)
    assert off[inner].max() < 0.05  # on the sphere (reprojected)...
    assert off[rim].max() < CAP_TOLERANCE * 2.5  # ...but rim vertices, which may sit on a cap
    n = out.face_normals()
    c = out.vertices[out.faces].mean(axis=1)
    assert np.mean(np.einsum("ij,ij->i", n, c) > 0) == 1.0  # every face outward
    flipped = remesh(TriMesh(m.vertices, m.faces[:, ::-1]), 2.5)
    nf = flipped.face_normals()
    cf = flipped.vertices[flipped.faces].mean(axis=1)
    assert np.all(np.einsum("ij,ij->i", nf, cf) > 0)
    with pytest.raises(ValueError, match="edge_mm"):
        remesh(m, 0.0)


# --- fibres -----------------------------------------------------------------------------------
def _lattice(n: int, h: float) -> TriMesh:
    """An n x n equilateral triangle lattice of spacing h in the plane z = 0."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x, y = (i + 0.5 * (j % 2)) * h, j * h * np.sqrt(3) / 2
    v = np.column_stack([x.ravel(), y.ravel(), np.zeros(n * n)])
    faces = []
    for a in range(n - 1):
        for b in range(n - 1):
            p, q, r, s = a * n + b, (a + 1) * n + b, a * n + b + 1, (a + 1) * n + b + 1
            faces += ([(p, q, r), (q, s, r)] if b % 2 == 0 else [(p, s, r), (p, q, s)])
    return TriMesh(v, np.array(faces))


def test_anisotropic_stiffness_reduces_to_the_cotangent_laplacian() -> None:
    m = sphere_mesh(10.0, 2.0)
    fib = np.random.default_rng(1).normal(size=(m.n_faces, 3))
    assert abs(m.stiffness(fib, 1.0) - m.stiffness()).max() < 1e-12
    k = m.stiffness(fib, 0.3)
    assert abs(k - k.T).max() < 1e-12
    assert np.abs(k @ np.ones(m.n_vertices)).max() < 1e-12  # constants are in the null space
    with pytest.raises(MeshError, match="fibres"):
        m.stiffness(fib[:-1], 0.3)
    with pytest.raises(ValueError, match="anisotropy"):
        m.stiffness(fib, 1.5)


@pytest.mark.slow
def test_fibres_give_the_velocity_ratio_of_the_diffusivity_ratio() -> None:
    """CV scales as sqrt(D): anisotropy 1/4 must halve the across-fibre velocity (ratio 2),
    measured against the isotropic run on the same lattice (its own direction bias cancels)."""
    m = _lattice(61, 1.0)
    c = m.vertices.mean(axis=0)
    d = np.linalg.norm(m.vertices - c, axis=1)
    pace = np.flatnonzero(d < 2.5)
    pace = pace[np.argsort(d[pace])]
    spec = SimulationSpec(sim_id=0, rhythm="SR", seed=0, D=1.0, tau_close_ra=140,
                          tau_close_la=140, cycle_length_ms=1000)

    def velocities(anisotropy: float) -> tuple[float, float]:
        g = AtrialGeometry(mesh=m, region=np.zeros(m.n_vertices, np.int64), pacing=pace,
                           fibres=np.tile([1.0, 0.0, 0.0], (m.n_faces, 1)),
                           anisotropy=anisotropy)
        a = Simulator(g, dt=0.05).run([spec], duration_ms=80, transient_ms=0
                                      ).first_activation_ms[0]

        def t(dx: float, dy: float) -> float:
            target = c + np.array([dx, dy, 0.0])
            return float(a[np.argmin(np.linalg.norm(m.vertices - target, axis=1))])

        return 10.0 / (t(20, 0) - t(10, 0)), 10.0 / (t(0, 20) - t(0, 10))

    along_iso, across_iso = velocities(1.0)
    along, across = velocities(0.25)
    assert along == pytest.approx(along_iso, rel=0.03)  # D along the fibre is unchanged
    assert (along / across) / (along_iso / across_iso) == pytest.approx(2.0, rel=0.05)


# --- the shipped CT anatomy -------------------------------------------------------------------
def test_ct_anatomy_is_shipped_with_its_attribution() -> None:
    readme = (CT_FILE.parent / "README.md").read_text()
    for needed in ("Strocchi", "10.1371/journal.pone.0235145", "CC BY 4.0", "PLoS ONE"):
        assert needed in readme
    la, ra = ct_atria()
    assert (la.n_vertices, ra.n_vertices) == (2140, 2756)
    assert len(la.boundary_loops()) == 6 and len(ra.boundary_loops()) == 3
    for m in (la, ra):
        assert mesh_quality(m)["angle_min_deg"] > 20


def test_from_atria_finds_the_links_and_the_sinus_node(ct: AtrialGeometry) -> None:
    v, reg = ct.mesh.vertices, ct.region
    names = np.array(ct.link_names)
    assert {"bachmann", "septal"} <= set(names)
    ra_end, la_end = ct.links[:, 0], ct.links[:, 1]
    assert np.all(reg[ra_end] == RA) and np.all(reg[la_end] == LA)
    gap = np.linalg.norm(v[ra_end] - v[la_end], axis=1)
    assert gap.max() <= 6.0 + 1e-9
    b, s = v[ra_end[names == "bachmann"]], v[ra_end[names == "septal"]]
    # Bachmann's bundle superior and anterior of the septal route (y posterior, z superior)
    assert b[:, 2].mean() > s[:, 2].mean() + 10 and b[:, 1].mean() < s[:, 1].mean()
    # sinus node: on the RA, in its superior third, lateral (towards -x) of the RA centre
    sn = ct.landmarks["sinus_node"]
    z_ra = v[reg == RA, 2]
    assert np.all(reg[ct.pacing] == RA)
    assert sn[2] > np.percentile(z_ra, 66)
    assert sn[0] < v[reg == RA, 0].mean() + 5


def test_from_atria_refuses_overlapping_or_distant_atria() -> None:
    la, ra = ct_atria()
    with pytest.raises(MeshError, match="overlap"):
        AtrialGeometry.from_atria(la, la)
    far = TriMesh(ra.vertices - [200.0, 0.0, 0.0], ra.faces)
    with pytest.raises(MeshError, match="contact_mm"):
        AtrialGeometry.from_atria(la, far)


@pytest.mark.slow
def test_sinus_rhythm_on_the_ct_atria_activates_everything_through_the_links(
        ct: AtrialGeometry) -> None:
    spec = SimulationSpec(sim_id=0, rhythm="SR", seed=0, D=0.75, tau_close_ra=140,
                          tau_close_la=140, cycle_length_ms=700)
    a = Simulator(ct, dt=0.1).run([spec], duration_ms=250, transient_ms=0
                                  ).first_activation_ms[0]
    assert np.all(np.isfinite(a))  # every node
    cv = np.nanmedian(conduction_velocity(ct, a))
    assert 0.6 <= cv <= 1.2
    total = float(np.nanmax(a))
    assert 80 <= total <= 160  # total atrial activation of a P wave
    unlinked = AtrialGeometry(mesh=ct.mesh, region=ct.region, pacing=ct.pacing)
    b = Simulator(unlinked, dt=0.1).run([spec], duration_ms=250, transient_ms=0
                                        ).first_activation_ms[0]
    assert not np.isfinite(b[ct.region == LA]).any()  # the LA is reached through the links only


@pytest.mark.slow
def test_af_sustains_on_the_ct_atria_within_the_clinical_band(ct: AtrialGeometry) -> None:
    specs = draw_specs("AF", 2, 7, ct)
    sites = recording_sites(ct, 64, 1.5)
    from egmlib.physics.electrograms import infinite_medium_lead_field

    lead = infinite_medium_lead_field(sites.electrodes, ct.mesh.vertices)
    res = Simulator(ct, dt=0.1).run(specs, duration_ms=3000, transient_ms=500,
                                    leads={"egm": lead}, record_dt_ms=2.0)
    assert res.alive.all()
    df = rhythm_df(res.traces["egm"].transpose(0, 2, 1), 500.0, "AF")  # (S, time, site)
    assert np.all((np.median(df, axis=1) >= 3.0) & (np.median(df, axis=1) <= 10.0))


# --- the Barr heart surface of a real anatomy ---------------------------------------------------
def test_interpolation_matrix_hand_worked() -> None:
    src = np.array([[0.0, 0, 0], [1.0, 0, 0], [10.0, 0, 0]])
    tgt = np.array([[1.0 / 3.0, 0, 0], [1.0, 0, 0]])
    w = interpolation_matrix(tgt, src, k=2)
    # distances 1/3 and 2/3: inverse squares 9 and 9/4, normalised 0.8 and 0.2
    np.testing.assert_allclose(w[0], [0.8, 0.2, 0.0])
    np.testing.assert_allclose(w[1], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="k must"):
        interpolation_matrix(tgt, src, k=4)


@pytest.mark.slow
def test_wrapped_heart_surface_encloses_tissue_and_electrodes(ct: AtrialGeometry) -> None:
    heart = wrap_surface(ct.mesh, 4.0, 5.0)
    assert heart.is_closed() and heart.signed_volume() > 0
    sites = recording_sites(ct, 256, 1.5)
    inside = winding_number(heart, np.concatenate([ct.mesh.vertices, sites.electrodes]))
    assert np.all(inside > 0.5)
    assert 3.5 < float(np.median(heart.edge_lengths())) < 6.5


# --- the anatomy parameter --------------------------------------------------------------------
def test_anatomy_parameter_is_checked_before_any_work(tmp_path) -> None:
    assert DataConfig(anatomy="ct_biatrial").anatomy == "ct_biatrial"
    with pytest.raises(ParameterError, match=r"'anatomy'.*no such file"):
        DataConfig(anatomy=str(tmp_path / "missing.vtk"))
    (tmp_path / "la.obj").write_text("v 0 0 0\n")
    with pytest.raises(ParameterError, match=r"'anatomy'.*ra\.obj"):
        DataConfig(anatomy=f"{tmp_path / 'la.obj'},{tmp_path / 'ra.obj'}")


@pytest.mark.slow
def test_a_pair_of_surface_files_becomes_a_linked_biatrial_geometry(tmp_path) -> None:
    """A user's two atria as OBJ files (here the CT atria, moved by 100 mm: the result is
    recentred) give the same geometry as the shipped anatomy."""
    paths = []
    for name, m in zip(("la", "ra"), ct_atria()):
        p = tmp_path / f"{name}.obj"
        lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in m.vertices + 100.0]
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in m.faces]
        p.write_text("\n".join(lines) + "\n")
        paths.append(str(p))
    anatomy = ",".join(paths)
    g = load_anatomy(anatomy, 2.0)
    assert set(g.link_names) == {"bachmann", "septal"}
    assert abs(g.mesh.vertices.mean(axis=0)).max() < 5.0  # recentred
    assert anatomy_digest(anatomy) == anatomy_digest(anatomy)
    assert anatomy_digest(anatomy) != anatomy_digest("ct_biatrial")


# --- the window sampling rate -------------------------------------------------------------------
def test_sampling_study_on_hand_made_traces() -> None:
    """A 6 Hz sine keeps its DF and shape at every rate; a 2-ms-wide deflection loses most of
    its steepest slope at 100 Hz, less at 250 Hz, none at 500 Hz."""
    from egmlib.data.sampling import sampling_study

    t = np.arange(3000) / 500.0
    sine = np.sin(2 * np.pi * 6.0 * t)
    spike = np.zeros_like(t)
    for t0 in np.arange(0.1, 6.0, 1 / 6.0):  # a sharp biphasic deflection every 1/6 s
        spike += -(t - t0) / 0.002 * np.exp(-0.5 * ((t - t0) / 0.002) ** 2)
    x = np.stack([np.stack([sine, sine]), np.stack([spike, spike])])  # (2 sims, 2 sites, n)
    out = sampling_study(x, np.array([1, 1]))  # both AF
    assert set(out) == {"100", "250", "500"}
    assert out["500"]["slope_ratio"] == 1.0 and out["500"]["roundtrip_corr"] == 1.0
    assert out["100"]["slope_ratio"] < out["250"]["slope_ratio"] < 1.0
    assert out["100"]["slope_ratio"] < 0.6
    assert out["100"]["df_error_hz"]["AF"] < 0.1
    assert [out[k]["samples_per_window"] for k in ("100", "250", "500")] == [400, 1000, 2000]
    with pytest.raises(ValueError, match="does not divide"):
        sampling_study(x, np.array([1, 1]), rates=(300.0,))


def test_pulmonary_vein_shortening_reaches_the_ct_veins(ct: AtrialGeometry) -> None:
    """The AF priors' PV region exists on the CT atria too: weight 1 near each vein hole, 0 in
    the RA and far from the veins."""
    from egmlib.physics.simulate import pv_weight

    w = pv_weight(ct)
    veins = [k for k in ct.landmarks if k.startswith("LA_vein_")]
    assert len(veins) == 5
    assert np.all(w[ct.region == RA] == 0.0)
    for k in veins:
        nearest = np.argmin(np.linalg.norm(ct.mesh.vertices - ct.landmarks[k], axis=1))
        assert w[nearest] > 0.8, k
    assert np.median(w[ct.region == LA]) < 0.5
