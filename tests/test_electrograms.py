"""egmlib.physics.electrograms: current sources and the infinite-medium lead field.

A planar wave v(x, t) (a smooth step moving along +x at 0.5 mm/ms over a flat 60 x 30 mm sheet of
0.5 mm triangles) passes under an electrode at height h above x = 0: the unipolar EGM is biphasic,
positive while the wave approaches and negative after it passed, crossing zero when the front is
under the electrode (t = 40 ms). Measured peak amplitudes (mV): 4.28, 2.98, 2.23, 1.76, 1.21, 0.71
at h = 0.5, 1, 1.5, 2, 3, 5 mm.
"""

from __future__ import annotations

import numpy as np
import pytest

from egmlib.physics import electrograms, simulate
from egmlib.physics.electrograms import BETA_MM, current_sources, infinite_medium_lead_field
from egmlib.physics.geometry import TriMesh

SPEED, WIDTH, X0 = 0.5, 1.0, -20.0  # mm/ms, mm, mm
T_MS = np.arange(0.0, 80.0, 0.25)
T_UNDER = -X0 / SPEED  # the front is under the electrode (x = 0) at 40 ms


def _sheet(h: float = 0.5) -> TriMesh:
    xs = np.arange(-30.0, 30.0 + h / 2, h)
    ys = np.arange(-15.0, 15.0 + h / 2, h)
    x, y = np.meshgrid(xs, ys, indexing="ij")
    v = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    idx = np.arange(x.size).reshape(x.shape)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    return TriMesh(v, np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])]))


@pytest.fixture(scope="module")
def planar():
    mesh = _sheet()
    x = mesh.vertices[:, 0]
    front = X0 + SPEED * T_MS
    # excited (v = 1) behind the front, resting ahead of it
    v = 0.5 * (1.0 - np.tanh((x[:, None] - front[None, :]) / WIDTH))
    q = current_sources(mesh.stiffness(), v, 0.5)
    return mesh, v, q


def _egm(mesh, q, electrode):
    return (infinite_medium_lead_field(np.atleast_2d(electrode), mesh.vertices) @ q)[0]


def test_sources_sum_to_zero_and_sit_at_the_front(planar):
    mesh, v, q = planar
    assert q.shape == v.shape
    # a stiffness row sums to zero: the membrane currents of a closed circuit cancel
    assert np.abs(q.sum(axis=0)).max() < 1e-9 * np.abs(q).max()
    k = np.argmin(np.abs(T_MS - T_UNDER))
    x = mesh.vertices[:, 0]
    interior = (np.abs(x) < 25.0) & (np.abs(mesh.vertices[:, 1]) < 12.0)
    # positive ahead of the front (current leaves resting cells), negative behind it
    assert q[interior & (x > 0.3) & (x < 2.0), k].min() > 0
    assert q[interior & (x < -0.3) & (x > -2.0), k].max() < 0
    assert np.abs(q[interior & (np.abs(x) > 6.0), k]).max() < 1e-3 * np.abs(q[:, k]).max()


def test_planar_wave_gives_a_biphasic_egm_positive_first(planar):
    mesh, _, q = planar
    phi = _egm(mesh, q, [0.0, 0.0, 1.5])
    i_max, i_min = int(np.argmax(phi)), int(np.argmin(phi))
    assert phi[i_max] > 0.5 and phi[i_min] < -0.5
    assert T_MS[i_max] < T_UNDER < T_MS[i_min]  # positive while approaching, then negative
    # the first large extremum is the positive one
    big = np.flatnonzero(np.abs(phi) > 0.5 * np.abs(phi).max())
    assert phi[big[0]] > 0 and phi[big[-1]] < 0
    # it crosses zero (downwards) once, when the front is under the electrode
    cross = np.flatnonzero((phi[:-1] > 0) & (phi[1:] <= 0))
    assert len(cross) == 1
    assert abs(T_MS[cross[0]] - T_UNDER) <= 1.0
    # symmetric for a symmetric wave: equal and opposite peaks, small far field (a front 20 mm
    # away still subtends a solid angle: about 11 % of the peak here)
    assert phi[i_max] == pytest.approx(-phi[i_min], rel=0.02)
    assert abs(phi[0]) < 0.2 * phi[i_max] and abs(phi[-1]) < 0.2 * phi[i_max]


def test_wave_in_the_other_direction_is_also_positive_first():
    mesh = _sheet()
    x = mesh.vertices[:, 0]
    front = -X0 - SPEED * T_MS  # from +20 mm towards -x
    v = 0.5 * (1.0 + np.tanh((x[:, None] - front[None, :]) / WIDTH))
    q = current_sources(mesh.stiffness(), v, 0.5)
    phi = _egm(mesh, q, [0.0, 0.0, 1.5])
    assert T_MS[np.argmax(phi)] < T_UNDER < T_MS[np.argmin(phi)]


def test_amplitude_falls_with_electrode_height(planar):
    mesh, _, q = planar
    heights = [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0]
    amp = []
    for h in heights:
        phi = _egm(mesh, q, [0.0, 0.0, h])
        amp.append(phi.max() - phi.min())
    amp = np.array(amp)
    assert np.all(np.diff(amp) < 0)
    assert amp[0] > 4.0 * amp[-1]
    # the deflection also widens with height (the electrode sees a larger patch)
    widths = []
    for h in (0.5, 3.0):
        phi = _egm(mesh, q, [0.0, 0.0, h])
        widths.append(T_MS[np.argmin(phi)] - T_MS[np.argmax(phi)])
    assert widths[1] > widths[0]


def test_sources_scale_with_diffusivity(planar):
    mesh, v, q = planar
    k = mesh.stiffness()
    assert np.allclose(current_sources(k, v, 1.0), 2.0 * q)
    # per-node D: half the sheet at D 0.1
    d = np.where(mesh.vertices[:, 0] > 0, 0.1, 0.5)
    q_d = current_sources(k, v, d)
    assert np.allclose(q_d[mesh.vertices[:, 0] <= 0], q[mesh.vertices[:, 0] <= 0])
    assert np.allclose(q_d[mesh.vertices[:, 0] > 0], 0.2 * q[mesh.vertices[:, 0] > 0])
    # one time instant (n_nodes,) works as well
    assert np.allclose(current_sources(k, v[:, 5], 0.5), q[:, 5])
    # units: q = -V_SCALE * D * K v
    assert np.allclose(q[:, 7], -simulate.V_SCALE * 0.5 * (k @ v[:, 7]))


def test_lead_field_is_the_1_over_r_kernel():
    nodes = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, -2.0]])
    electrodes = np.array([[0.0, 0.0, 1.0], [3.0, 4.0, 12.0]])
    g = infinite_medium_lead_field(electrodes, nodes)
    r = np.linalg.norm(electrodes[:, None] - nodes[None], axis=-1)
    assert g.shape == (2, 3)
    assert np.allclose(g, BETA_MM / (4 * np.pi * r))
    assert g[0, 0] == pytest.approx(BETA_MM / (4 * np.pi))
    with pytest.raises(ValueError, match="lies on source point"):
        infinite_medium_lead_field(nodes[:1], nodes)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        infinite_medium_lead_field(electrodes[:, :2], nodes)


def test_simulator_records_lead_times_current_sources(biatrial, biatrial_sites):
    """The batched engine's traces are lead @ current_sources(K with links, v, D): checked
    through the float64 reference, which records exactly that expression."""
    spec = simulate.SimulationSpec(0, "SR", 1, D=0.8, tau_close_ra=140.0, tau_close_la=140.0,
                                   cycle_length_ms=600.0)
    lead = infinite_medium_lead_field(biatrial_sites.electrodes, biatrial.mesh.vertices)
    ref = simulate.simulate_reference(biatrial, spec, 40.0, dt=0.1, record_every=100, lead=lead)
    k, _ = simulate.Simulator(biatrial, dt=0.1).operators(spec.link_strength)
    d, _ = simulate.node_fields(spec, biatrial)
    for i, v in enumerate(ref["v"]):
        want = lead @ electrograms.current_sources(k, v, d)
        assert np.allclose(ref["trace"][i], want, rtol=1e-9, atol=1e-12)
    assert np.abs(ref["trace"][-1]).max() > 0.1
