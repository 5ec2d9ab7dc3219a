"""egmlib.physics.simulate: the physics of SR and AF, batched against reference, seeds and bad
input.

Measured on the 4 mm bi-atrial mesh (874 nodes) at dt 0.1 ms: SR conduction velocity (median over
triangles) 0.614 m/s at D 0.5 and 0.924 m/s at D 1.0 (ratio 1.50, i.e. CV ~ D^0.59); AF from the
phase field at D 0.22-0.28: DF 4.35-5.7 Hz, 15-22 wavefronts at once. Batched float32 against
scipy float64 over 200 ms: trace relative error 2e-5 (SR) and 1e-3 (AF), voltage difference below
1e-3, on both backends (the numba kernel and the torch tensors); the two backends agree to 5e-5
of the trace scale.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import DT, one_thread

from egmlib.core import metrics
from egmlib.physics import electrograms, geometry, simulate
from egmlib.physics.simulate import SimulationSpec, Simulator, conduction_velocity, draw_specs

# --- parameters ------------------------------------------------------------------------------


def test_draw_specs_ranges_and_seeds(biatrial):
    sr = draw_specs("SR", 40, 3, biatrial)
    af = draw_specs("AF", 40, 3, biatrial, first_id=500)
    assert [s.sim_id for s in sr] == list(range(40))
    assert [s.sim_id for s in af] == list(range(500, 540))
    for s in sr:
        assert s.rhythm == "SR" and 0.5 <= s.D <= 1.0 and 600 <= s.cycle_length_ms <= 1000
        assert 130 <= s.tau_close_ra <= 150 and 130 <= s.tau_close_la <= 150
        assert s.tau_open == 120.0  # the published value: SR does not draw it
        assert s.fibrosis == () and s.start_axes == ()
        assert 0 <= s.pacing_shift < max(1, len(biatrial.pacing) // 2)
    for s in af:
        assert s.rhythm == "AF" and 0.12 <= s.D <= 0.45 and s.cycle_length_ms == 0
        assert 18 <= s.tau_close_la <= 100 and 15 <= s.tau_open <= 120
        assert 1.1 <= s.tau_close_ra / s.tau_close_la <= 1.7  # RA longer than LA
        assert len(s.start_axes) == 2
        assert np.allclose(np.linalg.norm(s.start_axes, axis=1), 1.0)
        assert len(s.fibrosis) <= 6
        for centre, radius in s.fibrosis:
            assert 0 <= centre < biatrial.n_vertices and 5 <= radius <= 12
    # about 60 % of the AF draws carry fibrotic patches
    assert 12 <= sum(bool(s.fibrosis) for s in af) <= 36
    # same seed: same list; another seed: other values; seeds of the simulations differ
    assert draw_specs("SR", 40, 3, biatrial) == sr
    assert draw_specs("AF", 40, 3, biatrial, first_id=500) == af
    other = draw_specs("SR", 40, 4, biatrial)
    assert all(a.D != b.D for a, b in zip(sr, other))
    assert len({s.seed for s in sr}) == 40
    # a SeedSequence is accepted and means the same as its entropy
    assert draw_specs("SR", 3, np.random.SeedSequence(3), biatrial) == sr[:3]


def test_draw_specs_rejects_bad_input(biatrial):
    with pytest.raises(ValueError, match="rhythm"):
        draw_specs("VF", 2, 0, biatrial)
    with pytest.raises(ValueError, match="n must be"):
        draw_specs("SR", -1, 0, biatrial)
    assert draw_specs("SR", 0, 0, biatrial) == []


def test_spec_round_trips_through_json(biatrial):
    for spec in draw_specs("AF", 5, 1, biatrial) + draw_specs("SR", 2, 1, biatrial):
        back = SimulationSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and hash(back) == hash(spec)


def test_single_cell_action_potential():
    v, h = simulate.single_cell_ap(140.0, 600.0, dt=0.05)
    t = np.arange(len(v)) * 0.05
    assert len(v) == 12001 and v[0] == pytest.approx(0.3) and h[0] == 1.0
    assert v.max() > 0.9 and t[v.argmax()] < 10.0  # fast upstroke
    assert v[-1] < 0.05 and h.min() < 0.3  # repolarised, gate closed during the plateau

    def apd(tau):
        vv, _ = simulate.single_cell_ap(tau, 600.0, dt=0.05)
        above = np.flatnonzero(vv >= simulate.V_ACTIVATION)
        return (above[-1] - above[0]) * 0.05

    # APD grows with tau_close (remodelled AF tissue has short APD): MS APD ~ tau_close ln(...)
    a_af, a_sr = apd(60.0), apd(140.0)
    assert 80 < a_af < a_sr < 400
    assert a_sr / a_af == pytest.approx(140.0 / 60.0, rel=0.2)


def test_node_fields_region_fibrosis_and_heterogeneity(biatrial):
    g = biatrial
    spec = SimulationSpec(0, "AF", 5, D=0.2, tau_close_ra=66.0, tau_close_la=55.0,
                          fibrosis=((10, 8.0),), fibrosis_factor=0.2)
    d, tau = simulate.node_fields(spec, g)
    assert np.all(tau[g.region == geometry.RA] == 66.0)
    assert np.all(tau[g.region == geometry.LA] == 55.0)
    inside = np.linalg.norm(g.mesh.vertices - g.mesh.vertices[10], axis=1) <= 8.0
    assert inside.sum() >= 3
    assert np.allclose(d[inside], 0.04) and np.allclose(d[~inside], 0.2)
    het = SimulationSpec(0, "AF", 5, D=0.2, tau_close_ra=66.0, tau_close_la=55.0,
                         heterogeneity=0.1)
    _, tau_h = simulate.node_fields(het, g)
    ra = tau_h[g.region == geometry.RA] / 66.0 - 1.0
    assert abs(ra.mean()) < 0.05 and 0.03 < ra.std() < 0.15 and np.abs(ra).max() <= 0.25 + 1e-9
    # the field is the simulation's own: same seed same field, another seed another one
    assert np.array_equal(simulate.node_fields(het, g)[1], tau_h)
    other = SimulationSpec(0, "AF", 6, D=0.2, tau_close_ra=66.0, tau_close_la=55.0,
                           heterogeneity=0.1)
    assert not np.allclose(simulate.node_fields(other, g)[1], tau_h)


def test_conduction_velocity_of_a_planar_activation(biatrial):
    g = biatrial
    x = g.mesh.vertices
    direction = np.array([0.6, 0.0, 0.8])
    t = x @ direction / 0.8  # a plane wave at 0.8 mm/ms in 3-D, seen on the surface
    cv = conduction_velocity(g, t)
    assert cv.shape == (g.mesh.n_faces,)
    # on a surface the apparent speed is c / |projection of the direction on the tangent plane|
    tangential = np.linalg.norm(direction - np.einsum(
        "ij,j->i", g.mesh.face_normals(), direction)[:, None] * g.mesh.face_normals(), axis=1)
    ok = tangential > 0.3
    assert np.allclose(cv[ok], 0.8 / tangential[ok], rtol=1e-6)
    # a missing time makes its triangles nan; a constant time (collision) gives nan too
    t_nan = t.copy()
    t_nan[0] = np.nan
    cv_nan = conduction_velocity(g, t_nan)
    touching = (g.mesh.faces == 0).any(axis=1)
    assert np.isnan(cv_nan[touching]).all() and np.isfinite(cv_nan[~touching & ok]).all()
    assert np.isnan(conduction_velocity(g, np.full(g.n_vertices, 5.0))).all()


# --- sinus rhythm ----------------------------------------------------------------------------


def _cv(run, j):
    return float(np.nanmedian(conduction_velocity(run.geometry, run.result.first_activation_ms[j])))


def test_sr_conduction_velocity_in_range_and_grows_like_sqrt_d(sr_run):
    cv05, cv10 = _cv(sr_run, 0), _cv(sr_run, 1)
    assert 0.6 <= cv05 <= 1.2
    assert 0.6 <= cv10 <= 1.2
    exponent = math.log(cv10 / cv05) / math.log(1.0 / 0.5)
    assert 0.4 <= exponent <= 0.7  # CV ~ sqrt(D)


def test_sr_every_node_activates_once_per_cycle(sr_run):
    res = sr_run.result
    for j, spec in enumerate(sr_run.specs):
        beats = round(sr_run.duration_ms / spec.cycle_length_ms)
        assert beats * spec.cycle_length_ms == sr_run.duration_ms  # whole cycles
        assert np.all(res.activation_count[j] == beats)
        first = res.first_activation_ms[j]
        assert np.isfinite(first).all()
        # the whole tissue is activated within one beat, well before the next stimulus
        assert first.max() < 0.5 * spec.cycle_length_ms
        g = sr_run.geometry
        pace = first[g.pacing[spec.pacing_shift % len(g.pacing)]]
        assert pace < 5.0
        # the LA is reached through the inter-atrial links, later than the pacing site
        assert first[g.region == geometry.LA].min() > pace + 10.0
    # faster conduction activates the tissue sooner
    assert res.first_activation_ms[1].max() < res.first_activation_ms[0].max()
    assert np.all(res.alive)  # liveness is only judged for AF columns


def test_sr_egm_dominant_frequency_equals_pacing_rate(sr_run):
    res = sr_run.result
    assert res.t_ms[1] - res.t_ms[0] == 2.0  # 500 Hz
    for j, spec in enumerate(sr_run.specs):
        egm = res.traces["egm"][j]  # (n_out, n_samples)
        assert egm.shape == (len(sr_run.sites.vertex), round(sr_run.duration_ms / 2.0))
        assert egm.dtype == np.float32 and np.isfinite(egm).all()
        df = metrics.dominant_frequency(egm.T, 500.0, band=(0.5, 3.0), method="botteron")
        assert np.abs(df - 1000.0 / spec.cycle_length_ms).max() <= 0.1


def test_sr_has_one_front_at_a_time(sr_run):
    wf = sr_run.result.wavefronts
    assert wf.shape[0] == 2 and wf.shape[1] >= 40
    assert wf.max() <= 4 and wf.mean() < 1.0  # a front may split briefly around the veins


# --- atrial fibrillation ---------------------------------------------------------------------


def test_af_is_sustained_with_several_wavefronts(af_run):
    res = af_run.result
    assert res.alive.all()
    assert res.wavefronts.shape == (2, round(1500.0 / 50.0) - 1)
    assert np.all(res.wavefronts.mean(axis=1) > 1.0)
    assert np.all(res.wavefronts[:, -5:] > 0)  # still active at the end of the recording
    # re-entry: the median node activates many times in 1.5 s
    assert np.all(np.median(res.activation_count, axis=1) >= 4)


def test_af_dominant_frequency_in_4_to_10_hz(af_run):
    for j in range(len(af_run.specs)):
        df = metrics.dominant_frequency(af_run.result.traces["egm"][j].T, 500.0, band=(3, 15))
        assert 4.0 <= float(np.median(df)) <= 10.0


def test_af_wavefronts_exceed_sr(af_run, sr_run):
    assert af_run.result.wavefronts.mean() > 3 * sr_run.result.wavefronts.mean()


# --- a user-style surface: an ellipsoid from raw arrays --------------------------------------


def test_ellipsoid_sr_conducts_in_range_and_activates_every_node(ellipsoid_run):
    res = ellipsoid_run.result
    for j in (0, 1):
        assert 0.6 <= _cv(ellipsoid_run, j) <= 1.2
        assert np.all(res.activation_count[j] == 3)
        df = metrics.dominant_frequency(res.traces["egm"][j].T, 500.0, band=(0.5, 3.0),
                                        method="botteron")
        assert np.abs(df - 2.0).max() <= 0.1
    assert _cv(ellipsoid_run, 1) > 1.3 * _cv(ellipsoid_run, 0)


def test_ellipsoid_af_from_start_axes_is_sustained(ellipsoid_run):
    res = ellipsoid_run.result
    assert res.alive[2]
    assert res.wavefronts[2].mean() > 1.0 and np.all(res.wavefronts[2, -5:] > 0)
    df = metrics.dominant_frequency(res.traces["egm"][2].T, 500.0, band=(3, 15))
    assert 4.0 <= float(np.median(df)) <= 10.0


def test_phase_field_on_one_region(ellipsoid_geometry):
    """A user mesh is one region (RA): the first start axis makes one rotating wave over the whole
    surface; a second axis (for the absent LA) is ignored; without an axis nothing is excited."""
    g = ellipsoid_geometry
    tau = np.full(g.n_vertices, 65.0)
    one = SimulationSpec(0, "AF", 1, D=0.25, tau_close_ra=65.0, tau_close_la=56.0,
                         start_axes=((0.0, 0.0, 1.0),))
    two = SimulationSpec(0, "AF", 1, D=0.25, tau_close_ra=65.0, tau_close_la=56.0,
                         start_axes=((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)))
    v1, h1 = simulate.phase_field_state(one, g, tau)
    v2, h2 = simulate.phase_field_state(two, g, tau)
    assert np.array_equal(v1, v2) and np.array_equal(h1, h2)
    # one wave: a share of the surface excited, the rest recovering, gates partly closed
    excited = v1 > simulate.V_ACTIVATION
    assert 0.1 < excited.mean() < 0.6
    assert h1.min() < 0.5 and h1.max() > 0.9
    # the excited nodes form one band around the axis: connected, spanning all heights
    from scipy.sparse import csgraph

    sub = g.mesh.adjacency()[excited][:, excited]
    assert csgraph.connected_components(sub, directed=False)[0] <= 2
    z = g.mesh.vertices[:, 2]
    assert z[excited].min() < np.percentile(z, 10) and z[excited].max() > np.percentile(z, 90)
    none = SimulationSpec(0, "AF", 1, D=0.25, tau_close_ra=65.0, tau_close_la=56.0)
    v0, h0 = simulate.phase_field_state(none, g, tau)
    assert np.all(v0 == 0) and np.all(h0 == 1)


def test_phase_field_on_the_biatrial_surface_uses_one_axis_per_atrium(biatrial):
    g = biatrial
    tau = np.full(g.n_vertices, 60.0)
    spec = SimulationSpec(0, "AF", 1, D=0.2, tau_close_ra=60.0, tau_close_la=60.0,
                          start_axes=((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)))
    v, _ = simulate.phase_field_state(spec, g, tau)
    for reg in (geometry.RA, geometry.LA):
        share = (v[g.region == reg] > simulate.V_ACTIVATION).mean()
        assert 0.1 < share < 0.6
    swapped = SimulationSpec(0, "AF", 1, D=0.2, tau_close_ra=60.0, tau_close_la=60.0,
                             start_axes=((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    v_s, _ = simulate.phase_field_state(swapped, g, tau)
    la = g.region == geometry.LA
    assert not np.allclose(v_s[la], v[la])


# --- batched engine against the scipy float64 reference --------------------------------------

REF_MS = 200.0
#: a pacing cycle length (ms) that tau_open 40 ms follows 1:1 and 120 ms does not
CAPTURE_CL_MS = 110.0


BACKENDS = ["torch"] + (["numba"] if simulate.numba_available() else [])


@pytest.fixture(scope="module")
def reference_runs(biatrial, biatrial_sites):
    """An SR, an AF and a fast-paced SR simulation with tau_open 45 ms instead of 120, in one
    batch, with the scipy float64 reference, 200 ms, every step."""
    specs = [
        SimulationSpec(0, "SR", 1, D=0.7, tau_close_ra=140.0, tau_close_la=140.0,
                       cycle_length_ms=600.0, heterogeneity=0.03, pacing_shift=1),
        SimulationSpec(1, "AF", 2, D=0.25, tau_close_ra=65.0, tau_close_la=56.0,
                       heterogeneity=0.1, fibrosis=((10, 6.0),),
                       start_axes=((0.0, 0.0, 1.0), (0.0, 1.0, 0.0))),
        # a per-simulation tau_open (the AF priors draw it) in the same batch, paced fast: the
        # second beat (at 120 ms) meets a gate recovered by tau_open 45 ms well past threshold
        # (not a marginal re-excitation, whose timing float32 and float64 resolve differently)
        SimulationSpec(2, "SR", 3, D=0.7, tau_close_ra=30.0, tau_close_la=30.0,
                       cycle_length_ms=120.0, tau_open=45.0),
    ]
    lead = electrograms.infinite_medium_lead_field(biatrial_sites.electrodes,
                                                   biatrial.mesh.vertices)
    refs = [simulate.simulate_reference(biatrial, s, REF_MS + 2 * DT, dt=DT, record_every=1,
                                        lead=lead) for s in specs]
    return specs, lead, refs


@pytest.fixture(scope="module", params=BACKENDS)
def batched_vs_reference(request, biatrial, reference_runs):
    """The same two simulations batched, on each backend."""
    specs, lead, refs = reference_runs
    with one_thread():
        res = Simulator(biatrial, dt=DT, backend=request.param).run(
            specs, REF_MS, leads={"egm": lead}, snapshot_ms=[0.0, 50.0, 150.0],
            log_activations=True, show_progress=False)
    return specs, res, refs


def test_batched_traces_equal_reference(batched_vs_reference):
    specs, res, refs = batched_vs_reference
    every = round(2.0 / DT)
    for j in range(len(specs)):
        got = res.traces["egm"][j].T.astype(np.float64)  # (n_samples, n_out)
        want = refs[j]["trace"][::every][: got.shape[0]]
        assert got.shape == want.shape
        scale = np.abs(want).max()
        assert scale > 0.1  # there is a signal to compare
        assert np.abs(got - want).max() <= 1e-2 * scale
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9999


def test_reference_uses_the_spec_tau_open(biatrial, reference_runs):
    """The tau_open = 45 ms column is not the 120 ms one: the batched comparisons above
    check a per-column tau_open, not the default."""
    specs, lead, refs = reference_runs
    ref120 = simulate.simulate_reference(biatrial, replace(specs[2], tau_open=120.0),
                                         REF_MS, dt=DT, record_every=20, lead=lead)
    diff = np.abs(refs[2]["trace"][::20][: len(ref120["trace"])] - ref120["trace"]).max()
    assert diff > 0.1 * np.abs(ref120["trace"]).max(), diff


def test_batched_activation_times_equal_reference(batched_vs_reference):
    specs, res, refs = batched_vs_reference
    for j in range(len(specs)):
        v = refs[j]["v"]  # v at t = k dt, k = 0 .. n
        up = (v[:-1] < simulate.V_ACTIVATION) & (v[1:] >= simulate.V_ACTIVATION)
        up[round(REF_MS / DT):] = False
        has = up.any(axis=0)
        k = up.argmax(axis=0)
        cols = np.arange(v.shape[1])
        frac = (simulate.V_ACTIVATION - v[k, cols]) / (v[k + 1, cols] - v[k, cols])
        t_ref = np.where(has, (k + frac) * DT, np.nan)
        t_got = res.first_activation_ms[j]
        assert np.array_equal(np.isnan(t_got), np.isnan(t_ref))
        assert has.sum() > 0.3 * len(has)
        assert np.nanmax(np.abs(t_got - t_ref)) < 0.05


def test_activation_log_agrees_with_counts_and_first_times(batched_vs_reference):
    specs, res, _ = batched_vs_reference
    assert len(res.activations) == len(specs)
    for j, ev in enumerate(res.activations):
        assert ev.shape == (res.activation_count[j].sum(), 2)
        nodes = ev[:, 0].astype(int)
        assert np.array_equal(np.bincount(nodes, minlength=res.activation_count.shape[1]),
                              res.activation_count[j])
        assert np.all(np.diff(ev[:, 1]) >= -0.1 - 1e-6)  # in time order (within one step)
        first = np.full(res.activation_count.shape[1], np.inf)
        np.minimum.at(first, nodes, ev[:, 1])
        seen = np.isfinite(first)
        assert np.allclose(first[seen], res.first_activation_ms[j][seen])
        assert np.isnan(res.first_activation_ms[j][~seen]).all()
        assert (ev[:, 1] >= 0).all() and (ev[:, 1] <= REF_MS).all()


def test_snapshots_are_the_voltages_at_their_times(batched_vs_reference):
    specs, res, refs = batched_vs_reference
    for j in range(len(specs)):
        for i, t in enumerate(res.snapshot_ms):
            want = refs[j]["v"][round(t / DT)]
            assert np.abs(res.snapshots[j, i] - want).max() < 5e-3


def _short_run(geom, sites, seed, backend="auto"):
    lead = electrograms.infinite_medium_lead_field(sites.electrodes, geom.mesh.vertices)
    specs = draw_specs("SR", 1, seed, geom) + draw_specs("AF", 1, seed, geom, first_id=1)
    with one_thread():
        return Simulator(geom, dt=DT, backend=backend).run(
            specs, 60.0, leads={"egm": lead}, snapshot_ms=[30.0], show_progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_arrays_other_seed_other_arrays(biatrial, biatrial_sites, backend):
    a = _short_run(biatrial, biatrial_sites, 7, backend)
    b = _short_run(biatrial, biatrial_sites, 7, backend)
    c = _short_run(biatrial, biatrial_sites, 8, backend)
    for name in ("activation_count", "snapshots", "wavefronts", "alive"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.first_activation_ms, b.first_activation_ms, equal_nan=True)
    assert a.traces["egm"].tobytes() == b.traces["egm"].tobytes()
    assert a.specs == b.specs and a.specs != c.specs
    assert not np.array_equal(a.traces["egm"], c.traces["egm"])
    assert not np.array_equal(a.snapshots, c.snapshots)


# --- the numba kernel against the torch path -------------------------------------------------

needs_numba = pytest.mark.skipif(not simulate.numba_available(), reason="numba not installed")


def _both_backends(geom, sites, threads=1):
    """SR (paced from t = 0) and AF (with fibrosis) on both backends: 20 ms discarded, 150 ms
    recorded, snapshots and every activation kept."""
    lead = electrograms.infinite_medium_lead_field(sites.electrodes, geom.mesh.vertices)
    specs = draw_specs("SR", 2, 5, geom) + draw_specs("AF", 2, 5, geom, first_id=2)
    out = {}
    for backend in ("torch", "numba"):
        with one_thread():
            out[backend] = Simulator(geom, dt=DT, backend=backend).run(
                specs, 150.0, transient_ms=20.0, leads={"egm": lead},
                snapshot_ms=[0.0, 70.0, 149.0], log_activations=True, show_progress=False)
    return out["torch"], out["numba"]


@needs_numba
def test_numba_and_torch_backends_agree(biatrial, biatrial_sites):
    """Measured: traces within 5e-5 of their scale, voltages within 1e-5 (one fast AF column:
    2.2e-3, see below), the same activation counts and wavefronts, activation times within
    0.008 ms (float32 rounding in another order; an event can fall one step later when v lands
    on the threshold)."""
    t, n = _both_backends(biatrial, biatrial_sites)
    # the AF columns carry their own drawn tau_open, the SR ones the default 120 ms
    assert [sp.tau_open for sp in t.specs][:2] == [120.0, 120.0]
    assert len({sp.tau_open for sp in t.specs}) == 3
    assert n.traces["egm"].shape == t.traces["egm"].shape
    scale = np.abs(t.traces["egm"]).max()
    assert scale > 0.1
    assert np.abs(n.traces["egm"] - t.traces["egm"]).max() <= 1e-3 * scale
    # voltages: a median difference below 1e-6, the largest where a node sits near threshold
    # in a fast AF column (measured 2.2e-3 at 149 ms in the column with tau_close 28 ms and
    # tau_open 31 ms, against 1e-5 with tau_open 120 ms there: rounding differences amplified
    # by the dynamics, not a drift)
    assert np.abs(n.snapshots - t.snapshots).max() < 5e-3
    assert np.median(np.abs(n.snapshots - t.snapshots)) < 1e-6
    assert np.abs(n.snapshots).max() > 0.5  # there are excited nodes to compare
    assert np.array_equal(n.activation_count, t.activation_count)
    assert n.activation_count.sum() > 1000
    assert np.array_equal(np.isnan(n.first_activation_ms), np.isnan(t.first_activation_ms))
    assert np.nanmax(np.abs(n.first_activation_ms - t.first_activation_ms)) < 0.05
    assert np.array_equal(n.wavefronts, t.wavefronts) and np.array_equal(n.alive, t.alive)
    for en, et in zip(n.activations, t.activations):
        assert en.shape == et.shape
        # the same events, compared node by node in time order
        on = np.lexsort((en[:, 1], en[:, 0]))
        ot = np.lexsort((et[:, 1], et[:, 0]))
        assert np.array_equal(en[on, 0], et[ot, 0])
        assert np.abs(en[on, 1] - et[ot, 1]).max() < 0.05


def _paced_counts(geom, cl_ms, tau_opens, backend, duration_ms=1200.0):
    """Activations per node (one row per tau_open, all in one batch) of the SR protocol paced
    every ``cl_ms`` from t = 0 (tau_close 30 ms, D 0.5)."""
    specs = [SimulationSpec(k, "SR", 1, D=0.5, tau_close_ra=30.0, tau_close_la=30.0,
                            cycle_length_ms=cl_ms, tau_open=to)
             for k, to in enumerate(tau_opens)]
    with one_thread():
        res = Simulator(geom, dt=DT, backend=backend).run(specs, duration_ms,
                                                          show_progress=False)
    return res.activation_count


@pytest.mark.parametrize("backend", BACKENDS)
def test_shorter_tau_open_captures_faster_pacing(biatrial, backend):
    """tau_open is the recovery of excitability: paced every CAPTURE_CL_MS ms, a tissue with
    tau_open 40 ms conducts every stimulus over the atria (1:1; the median node misses only
    the last wave, still in flight at the end) while the published 120 ms blocks every other
    one (2:1: the gate has not recovered by the next stimulus). Measured, 11 stimuli in
    1200 ms: median activations per node 10 and 5 on both backends; at a 300 ms cycle both
    follow 1:1 (4 and 4)."""
    n_stim = math.ceil(1200.0 / CAPTURE_CL_MS)
    counts = np.median(_paced_counts(biatrial, CAPTURE_CL_MS, [40.0, 120.0], backend), axis=1)
    assert counts[0] >= n_stim - 1, counts
    assert counts[1] <= n_stim // 2, counts
    slow = np.median(_paced_counts(biatrial, 300.0, [40.0, 120.0], backend), axis=1)
    assert slow.tolist() == [4, 4]


def test_tau_open_is_validated_and_round_trips(biatrial):
    spec = SimulationSpec(0, "AF", 1, D=0.2, tau_close_ra=60.0, tau_close_la=50.0,
                          start_axes=((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)), tau_open=55.5)
    assert SimulationSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # a spec stored before tau_open existed reads back with the published 120 ms
    old = {k: v for k, v in spec.to_dict().items() if k != "tau_open"}
    assert SimulationSpec.from_dict(old).tau_open == simulate.MS_FIXED["tau_open"] == 120.0
    bad = SimulationSpec(**{**spec.to_dict(), "tau_open": 0.0})
    with pytest.raises(ValueError, match="tau_open"):
        Simulator(biatrial, dt=DT).run([bad], 10.0, show_progress=False)


def test_single_cell_recovers_faster_with_shorter_tau_open():
    """The gate recovers as 1 - (1 - h) exp(-t / tau_open) after repolarisation: 300 ms after
    the upstroke, h is still below 0.9 with tau_open 120 ms and nearly back to 1 with 40 ms;
    the default is the published 120 ms."""
    v_d, h_d = simulate.single_cell_ap(30.0, 300.0)
    v_s, h_s = simulate.single_cell_ap(30.0, 300.0, tau_open=120.0)
    assert np.array_equal(h_d, h_s) and np.array_equal(v_d, v_s)
    _, h_f = simulate.single_cell_ap(30.0, 300.0, tau_open=40.0)
    assert h_f[-1] > 0.99 and h_s[-1] < 0.9  # measured 0.997 and 0.862
    # same upstroke and repolarisation (tau_open acts only below the gate voltage)
    assert np.argmax(v_s < simulate.MS_FIXED["v_gate"]) == np.argmax(
        simulate.single_cell_ap(30.0, 300.0, tau_open=40.0)[0] < simulate.MS_FIXED["v_gate"])


@needs_numba
def test_numba_results_do_not_depend_on_the_thread_count(biatrial, biatrial_sites,
                                                          monkeypatch):
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core: nothing to compare")
    one = _short_run(biatrial, biatrial_sites, 7, "numba")

    class TwoThreads(simulate._ThreadChooser):
        def __init__(self, max_threads: int) -> None:
            super().__init__(max_threads)
            self.candidates, self._probing = [2], [2]
            self.current = 2

    monkeypatch.setattr(simulate, "_ThreadChooser", TwoThreads)
    sim = Simulator(biatrial, dt=DT, backend="numba")
    lead = electrograms.infinite_medium_lead_field(biatrial_sites.electrodes,
                                                   biatrial.mesh.vertices)
    specs = draw_specs("SR", 1, 7, biatrial) + draw_specs("AF", 1, 7, biatrial, first_id=1)
    two = sim.run(specs, 60.0, leads={"egm": lead}, snapshot_ms=[30.0], show_progress=False)
    assert {t for t, _ in sim.last_thread_history} == {2}
    assert two.snapshots.tobytes() == one.snapshots.tobytes()
    assert np.array_equal(two.activation_count, one.activation_count)
    assert np.array_equal(two.first_activation_ms, one.first_activation_ms, equal_nan=True)
    # the lead products are BLAS calls on the same data: equal to rounding
    assert np.allclose(two.traces["egm"], one.traces["egm"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_hold_for_the_run_only(biatrial, biatrial_sites, backend, monkeypatch):
    """``Simulator(threads=n)`` runs with n torch threads and leaves the process's count as it
    was, after construction and after :meth:`Simulator.run`."""
    import torch

    lead = electrograms.infinite_medium_lead_field(biatrial_sites.electrodes,
                                                   biatrial.mesh.vertices)
    with one_thread():
        sim = Simulator(biatrial, dt=DT, threads=2, backend=backend)
        assert torch.get_num_threads() == 1
        seen = []
        setup = sim._setup

        def spy(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return setup(*args, **kwargs)

        monkeypatch.setattr(sim, "_setup", spy)
        sim.run(draw_specs("SR", 1, 3, biatrial), 4.0, leads={"egm": lead},
                show_progress=False)
        assert seen == [2] and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads"):
        Simulator(biatrial, dt=DT, threads=0)


def test_thread_chooser_keeps_the_faster_count_and_probes_again():
    ch = simulate._ThreadChooser(2, window=100, period=1000, max_period=4000)
    assert ch.current == 1  # one thread is timed first

    def feed(steps, s_per_step):
        for _ in range(steps // 20):
            ch.update(20 * s_per_step[ch.current], 20)

    # a busy machine: two threads 30x slower; the probe of 2 stops after 40 steps
    slow2 = {1: 3e-4, 2: 9e-3}
    feed(100, slow2)
    assert ch.current == 2
    feed(40, slow2)
    assert ch.current == 1 and ch.history[-1][0] == 2
    feed(1000, slow2)  # the period ends: 2 is tried again, loses, the period doubles
    feed(100, slow2)
    assert ch.current == 1 and ch.period == 2000
    # the machine frees up: at the next probe two threads win and are kept
    fast2 = {1: 3e-4, 2: 1.6e-4}
    feed(2100, fast2)
    feed(200, fast2)
    assert ch.current == 2 and ch.period == 1000
    assert simulate._ThreadChooser(1).candidates == [1]


# --- bad input -------------------------------------------------------------------------------


def test_unstable_dt_is_refused(biatrial):
    spec = SimulationSpec(0, "SR", 1, D=50.0, tau_close_ra=140.0, tau_close_la=140.0,
                          cycle_length_ms=600.0)
    sim = Simulator(biatrial, dt=0.2)
    lam_dt = sim.max_stable_dt(50.0)
    assert lam_dt < 0.2 / 0.9
    with pytest.raises(ValueError, match=r"dt = 0.2 ms is unstable"):
        sim.run([spec], 10.0, show_progress=False)
    # the stability bound scales as 1 / D
    assert sim.max_stable_dt(1.0) == pytest.approx(50.0 * lam_dt, rel=1e-2)
    for dt in (0.0, -0.1, 0.25):
        with pytest.raises(ValueError, match="dt must lie"):
            Simulator(biatrial, dt=dt)


def test_bad_backend_is_refused_by_name(biatrial):
    with pytest.raises(ValueError, match=r"parameter 'backend' must be one of 'auto', 'numba', "
                                         r"'torch'; got 'cuda'"):
        Simulator(biatrial, backend="cuda")
    with pytest.raises(ValueError, match=r"'numba' runs on the CPU only"):
        Simulator(biatrial, device="cuda", backend="numba")
    sim = Simulator(biatrial, backend="auto")
    assert sim.backend == ("numba" if simulate.numba_available() else "torch")
    assert Simulator(biatrial, backend="torch").backend == "torch"


def test_run_rejects_bad_arguments(biatrial):
    sim = Simulator(biatrial, dt=0.1)
    spec = SimulationSpec(0, "SR", 1, D=0.5, tau_close_ra=140.0, tau_close_la=140.0,
                          cycle_length_ms=600.0)
    with pytest.raises(ValueError, match="at least one"):
        sim.run([], 10.0, show_progress=False)
    with pytest.raises(ValueError, match="must divide record_dt_ms"):
        sim.run([spec], 10.0, record_dt_ms=0.25, show_progress=False)
    other = SimulationSpec(1, "SR", 1, D=0.5, tau_close_ra=140.0, tau_close_la=140.0,
                           cycle_length_ms=600.0, link_strength=0.5)
    with pytest.raises(ValueError, match="link_strength"):
        sim.run([spec, other], 10.0, show_progress=False)
    with pytest.raises(ValueError, match="lead 'egm'"):
        sim.run([spec], 10.0, leads={"egm": np.ones((3, 10))}, show_progress=False)


def test_priors_bound_the_draws_and_are_validated(biatrial):
    """draw_specs draws inside the given priors: a degenerate range gives exactly its value,
    fibrosis appears only with its probability, and a bad range names its field."""
    from egmlib.physics.simulate import PRIORS, RhythmPriors

    fixed = RhythmPriors(D=(0.2, 0.2), tau_close_ra=(65, 65), tau_close_la=(55, 55),
                         heterogeneity=(0.0, 0.0), fibrosis_probability=1.0,
                         fibrosis_patches=(3, 3), fibrosis_radius_mm=(7, 7))
    for spec in draw_specs("AF", 6, 0, biatrial, priors=fixed):
        assert (spec.D, spec.tau_close_ra, spec.tau_close_la) == (0.2, 65.0, 55.0)
        assert len(spec.fibrosis) == 3 and all(r == 7.0 for _, r in spec.fibrosis)
    never = RhythmPriors(**{**PRIORS["AF"].__dict__, "fibrosis_probability": 0.0})
    assert all(s.fibrosis == () for s in draw_specs("AF", 20, 1, biatrial, priors=never))
    # the default priors are the ones documented; the manifest form is plain JSON
    assert PRIORS["AF"].to_dict()["tau_close_la"] == [18, 100]
    assert PRIORS["AF"].to_dict()["tau_open"] == [15, 120]
    assert PRIORS["SR"].to_dict()["tau_open"] is None
    assert PRIORS["SR"].to_dict()["ra_over_la"] is None
    with pytest.raises(ValueError, match="tau_close_ra"):
        RhythmPriors(D=(0.2, 0.3), tau_close_ra=(70, 60), tau_close_la=(50, 62),
                     heterogeneity=(0.0, 0.1))
    with pytest.raises(ValueError, match="cycle_length_ms"):
        draw_specs("SR", 1, 0, biatrial, priors=PRIORS["AF"])
