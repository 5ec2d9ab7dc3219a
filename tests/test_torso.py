"""Torso variants, user torsos and their validation."""

from __future__ import annotations

import numpy as np
import pytest

from egmlib.physics.forward import winding_number
from egmlib.physics.geometry import MeshError, biatrial_geometry, sphere_mesh
from egmlib.physics.torso import DEFAULT_SEMI_AXES, Torso, make_torso, make_torsos, rotation_matrix


def test_nominal_torso_size_and_placement():
    t = make_torso()
    assert 500 <= t.mesh.n_vertices <= 700
    assert t.mesh.is_closed() and t.mesh.signed_volume() > 0
    lo, hi = t.mesh.vertices.min(axis=0), t.mesh.vertices.max(axis=0)
    np.testing.assert_allclose((hi - lo) / 2, DEFAULT_SEMI_AXES, rtol=0.03)
    center = (hi + lo) / 2
    # the atria (origin of the bi-atrial frame) are posterior (+y) and left (+x) of centre
    assert center[0] < -10 and center[1] < -10
    assert t.n_electrodes == t.mesh.n_vertices
    np.testing.assert_array_equal(t.electrode_positions, t.mesh.vertices)


def test_subset64_spreads_over_anterior_and_posterior_chest():
    t = make_torso()
    assert len(t.subset64) == 64 and len(np.unique(t.subset64)) == 64
    p = t.electrode_positions[t.subset64]
    center_y = -t.parameters["atria_center_mm"][1]
    assert (p[:, 1] < center_y).sum() >= 16 and (p[:, 1] > center_y).sum() >= 16
    # within the thorax band around the atria's height (torso frame: no rotation here)
    assert p[:, 2].min() >= -130 - 1e-9 and p[:, 2].max() <= 110 + 1e-9


def test_make_torsos_seeded_varied_and_stored():
    a = make_torsos(3, seed=7)
    b = make_torsos(3, seed=7)
    c = make_torsos(3, seed=8)
    assert [t.name for t in a] == ["torso00", "torso01", "torso02"]
    for ta, tb in zip(a, b):
        np.testing.assert_array_equal(ta.mesh.vertices, tb.mesh.vertices)
        assert ta.parameters == tb.parameters
    assert a[0].parameters["shift_mm"] != c[0].parameters["shift_mm"]
    atria = biatrial_geometry(edge_mm=5.0).mesh.vertices
    for t in a:
        p = t.parameters
        assert np.all(np.abs(np.array(p["scale"]) - 1) <= 0.1)
        assert np.all(np.abs(p["shift_mm"]) <= 10) and np.all(np.abs(p["rotation_deg"]) <= 10)
        assert p["seed"] == 7
        assert t.mesh.signed_volume() > 0
        assert np.all(winding_number(t.mesh, atria) > 0.99)  # the atria lie inside


def test_rotation_matrix_is_orthonormal():
    r = rotation_matrix((7.0, -5.0, 9.0))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_from_arrays_accepts_closed_mesh_and_electrodes():
    s = sphere_mesh(150.0, 40.0)
    t = Torso.from_arrays(s.vertices, s.faces)
    assert t.n_electrodes == s.n_vertices and len(t.subset64) == 64
    t2 = Torso.from_arrays(s.vertices, s.faces, electrodes=np.arange(0, s.n_vertices, 2))
    assert t2.n_electrodes == (s.n_vertices + 1) // 2
    assert t2.subset_vertices.max() < s.n_vertices


def test_from_arrays_rejects_open_inside_out_and_bad_electrodes():
    s = sphere_mesh(150.0, 40.0)
    with pytest.raises(MeshError, match="not closed"):
        Torso.from_arrays(s.vertices, s.faces[1:])
    with pytest.raises(MeshError, match="inside-out"):
        Torso.from_arrays(s.vertices, s.faces[:, ::-1])
    bad = s.vertices.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        Torso.from_arrays(bad, s.faces)
    with pytest.raises(ValueError, match="electrodes"):
        Torso.from_arrays(s.vertices, s.faces, electrodes=[0, s.n_vertices])


def test_make_torso_rejects_bad_parameters():
    with pytest.raises(ValueError, match="edge_mm"):
        make_torso(edge_mm=1.0)
    with pytest.raises(ValueError, match="positive"):
        make_torso(scale=(1.0, -1.0, 1.0))
