"""egmlib.data.build: each stage of the data-set build alone, on small hand-made inputs, and
:func:`build_dataset` as the composition of the stages.

The composition test builds the tiny data set of ``test_data.py`` (4 mm mesh, 3 SR + 3 AF
simulations of 0.5 s, 16 sites, one coarse torso) twice: through :func:`build_dataset` and
stage by stage.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_thread

from egmlib.core import params
from egmlib.core.params import DataConfig, ParameterError
from egmlib.core.runs import sha256_file
from egmlib.data import build, store
from egmlib.data.build import (
    DATA_KEYS,
    Simulations,
    TorsoModels,
    Windows,
    assign_splits,
    make_anatomy,
    make_bspms,
    make_torso_models,
    make_windows,
    measure,
    simulate_all,
    spawn_seeds,
)
from egmlib.data.store import save_dataset, split_by_simulation
from egmlib.physics.geometry import RecordingSites, biatrial_geometry
from egmlib.physics.simulate import SimulationSpec

TINY = {"mesh_edge_mm": 4.0, "n_rec": 16, "n_sr": 3, "n_af": 3, "transient_s": 0.0,
        "record_s": 0.5, "batch": 6, "fs": 100.0, "T": 20, "hop_s": 0.1, "n_torsos": 1,
        "test_torsos": 0, "torso_edge_mm": 60.0, "dt_ms": 0.1, "seed": 3}


def _spec(sim_id: int, rhythm: str) -> SimulationSpec:
    return SimulationSpec(sim_id=sim_id, rhythm=rhythm, seed=0, D=0.5, tau_close_ra=150.0,
                          tau_close_la=150.0, cycle_length_ms=800.0 if rhythm == "SR" else 0.0)


def _sims(egm: np.ndarray, rhythms: list[str], coef: np.ndarray | None = None,
          wavefronts: np.ndarray | None = None, count: np.ndarray | None = None) -> Simulations:
    """Simulations of hand-made 500 Hz signals (ids 0, 1, ... per rhythm; SR at 0, AF at
    100000 on)."""
    n_sims, _, n = egm.shape
    ids = {"SR": 0, "AF": 100_000}
    specs = []
    for r in rhythms:
        specs.append(_spec(ids[r], r))
        ids[r] += 1
    n_nodes = 10
    return Simulations(
        specs=specs, egm=egm, lead_coef=np.zeros((n_sims, 2, n), np.float32) if coef is None
        else coef,
        first_activation_ms=np.arange(n_sims * n_nodes, dtype=float).reshape(n_sims, n_nodes),
        activation_count=np.ones((n_sims, n_nodes), int) if count is None else count,
        wavefronts=np.zeros((n_sims, 0)) if wavefronts is None else wavefronts,
        snapshots=np.zeros((n_sims, 5, n_nodes), np.float32), snapshot_ms=(0.0,) * 5,
        replaced_af=0, backend="numba")


# --- the cache key -----------------------------------------------------------------------------


def test_data_keys_are_the_seed_and_the_key_fields_of_the_data_config():
    assert DATA_KEYS == ("seed", *DataConfig.key_names())
    assert "rebuild" not in DATA_KEYS and len(set(DATA_KEYS)) == len(DATA_KEYS)
    p = params.validate("01_data", TINY)
    assert list(build.cache_key(p)) == list(DATA_KEYS)
    assert build.cache_key(p)["n_rec"] == 16 and build.cache_key(p)["seed"] == 3


# --- seeds -------------------------------------------------------------------------------------


def test_seeds_are_reproducible_and_distinct():
    a, b = spawn_seeds(3), spawn_seeds(3)
    assert (a.split, a.torso) == (b.split, b.torso) and a.split != a.torso
    assert a.sr.generate_state(2).tolist() == b.sr.generate_state(2).tolist()
    assert a.sr.generate_state(2).tolist() != a.af.generate_state(2).tolist()
    assert spawn_seeds(4).split != a.split


# --- anatomy -----------------------------------------------------------------------------------


def test_anatomy_has_the_sites_lead_field_and_example_sites():
    anatomy = make_anatomy(DataConfig(mesh_edge_mm=4.0, n_rec=16, electrode_offset_mm=2.0))
    geom = anatomy.geometry
    assert anatomy.sites.vertex.shape == (16,) and anatomy.sites.offset_mm == 2.0
    assert anatomy.egm_lead.shape == (16, geom.n_vertices)
    assert anatomy.example_sites.tolist() == [0, 5, 10, 15]
    assert np.bincount(geom.region[anatomy.sites.vertex]).min() >= 4


def test_anatomy_refuses_too_few_sites_in_an_atrium(monkeypatch):
    def one_atrium(geom, n_rec, offset_mm, order="chain"):
        idx = np.flatnonzero(geom.region == 0)[:n_rec]
        return RecordingSites(vertex=idx, electrodes=geom.mesh.vertices[idx],
                              offset_mm=offset_mm)

    monkeypatch.setattr(build, "recording_sites", one_atrium)
    with pytest.raises(ParameterError, match=r"'n_rec': got 16.*\[16, 0\] for RA, LA"):
        make_anatomy(DataConfig(mesh_edge_mm=4.0, n_rec=16))


# --- windows -----------------------------------------------------------------------------------


def test_make_windows_on_hand_made_signals():
    n = 250  # 0.5 s at 500 Hz
    egm = np.arange(3 * 2 * n, dtype=np.float32).reshape(3, 2, n)
    coef = -egm[:, :1] * 2
    sims = _sims(egm, ["SR", "SR", "AF"], coef=coef)
    # no resampling: windows of 100 samples every 0.1 s (50 samples): starts 0, 50, 100, 150
    win = make_windows(sims, DataConfig(fs=500.0, T=100, hop_s=0.1))
    assert win.per_sim == 4 and win.egm.shape == (12, 100, 2) and win.egm.dtype == np.float32
    assert win.lead_coef.shape == (12, 100, 1) and win.lead_coef.dtype == np.float64
    assert win.sim_id.tolist() == [0] * 4 + [1] * 4 + [100_000] * 4
    assert win.sim_id.dtype == np.int32 and win.label.dtype == np.int8
    assert win.label.tolist() == [0] * 8 + [1] * 4
    assert win.start_s.dtype == np.float32
    assert np.allclose(win.start_s, np.tile([0.0, 0.1, 0.2, 0.3], 3))
    for k in range(3):
        for i in range(4):
            assert np.array_equal(win.egm[4 * k + i], egm[k, :, 50 * i:50 * i + 100].T)
            assert np.array_equal(win.lead_coef[4 * k + i], coef[k, :, 50 * i:50 * i + 100].T)
    # at 100 Hz: 50 samples, windows of 20 every 10: 4 windows, starts 0, 0.1, 0.2, 0.3 s
    win = make_windows(sims, DataConfig(fs=100.0, T=20, hop_s=0.1))
    assert win.per_sim == 4 and win.egm.shape == (12, 20, 2)
    assert np.allclose(win.start_s[:4], [0.0, 0.1, 0.2, 0.3])
    # a hop of 0.25 s: starts 0 and 25 samples
    win = make_windows(sims, DataConfig(fs=100.0, T=20, hop_s=0.25))
    assert win.per_sim == 2 and np.allclose(win.start_s, np.tile([0.0, 0.25], 3))


# --- BSPMs -------------------------------------------------------------------------------------


def test_make_bspms_is_the_referenced_lead_field_product():
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(3, 5, 4))  # (windows, T, r)
    weights = [rng.normal(size=(70, 4)), rng.normal(size=(80, 4))]
    subsets = [np.arange(64), np.arange(80)[::-1][:64]]
    win = Windows(egm=np.zeros((3, 5, 2), np.float32), lead_coef=coef,
                  label=np.array([1, 0, 0], np.int8), sim_id=np.array([7, 1, 1], np.int32),
                  start_s=np.zeros(3, np.float32), per_sim=1)
    models = TorsoModels(torsos=[], subsets=subsets, lead_weights=weights,
                         lead_basis=np.eye(4), lead_singular_values=np.ones(4), heart=None,
                         transfer=np.zeros((2, 64, 2)))
    bspm, examples = make_bspms(win, models)
    assert bspm.shape == (3, 2, 5, 64) and bspm.dtype == np.float32
    for t in range(2):
        raw = np.einsum("wtr,er->wte", coef, weights[t][subsets[t]])
        expect = raw - raw.mean(axis=-1, keepdims=True)
        assert np.allclose(bspm[:, t], expect, rtol=1e-6, atol=1e-6)
    assert np.abs(bspm.mean(axis=-1)).max() < 1e-5
    # the first SR window (1) and the first AF window (0) on the whole torso 0
    assert examples.shape == (2, 5, 70) and examples.dtype == np.float32
    for j, w in enumerate((1, 0)):
        raw = coef[w] @ weights[0].T
        assert np.allclose(examples[j], raw - raw.mean(axis=-1, keepdims=True), atol=1e-6)


# --- measurements ------------------------------------------------------------------------------


def test_measure_af_df_wavefronts_and_activated_fraction():
    t = np.arange(2000) / 500.0  # 4 s at 500 Hz
    f = np.array([5.0, 8.0])
    egm = np.sin(2 * np.pi * f[:, None, None] * t) * np.ones((2, 3, 1))
    count = np.array([[1] * 10, [0] * 5 + [2] * 5])
    sims = _sims(egm.astype(np.float32), ["AF", "AF"], wavefronts=np.array([[1, 3], [2, 6]]),
                 count=count)
    before = sims.first_activation_ms.copy()
    meas = measure(sims, None, DataConfig())
    assert meas.df_hz.shape == (2, 3) and meas.df_hz.dtype == np.float32
    assert np.abs(meas.df_hz - f[:, None]).max() <= 0.3
    info = meas.simulations
    assert [i["wavefronts_mean"] for i in info] == [2.0, 4.0]
    assert [i["activated_fraction"] for i in info] == [1.0, 0.5]
    assert info[0]["spec"]["sim_id"] == 100_000 and "cv_median_m_s" not in info[0]
    # AF maps are the first activations; the input is not modified
    assert np.array_equal(meas.activation_ms, before)
    assert np.array_equal(sims.first_activation_ms, before)


# --- splits ------------------------------------------------------------------------------------


def test_assign_splits_by_simulation_and_last_torsos():
    sim_id = np.repeat(np.arange(10, dtype=np.int32), 3)
    label = np.repeat(np.array([0] * 5 + [1] * 5, np.int8), 3)
    win = Windows(egm=np.zeros((30, 1, 1), np.float32), lead_coef=np.zeros((30, 1, 1)),
                  label=label, sim_id=sim_id, start_s=np.zeros(30, np.float32), per_sim=3)
    cfg = DataConfig(n_torsos=4, test_torsos=1, test_fraction=0.2, val_fraction=0.2)
    splits = assign_splits(win, cfg, seed=11)
    assert splits.torso_split.tolist() == [0, 0, 0, 2] and splits.torso_split.dtype == np.int8
    assert np.array_equal(splits.split, split_by_simulation(sim_id, label, 0.2, 0.2, 11))
    for s in range(10):  # a simulation's windows stay together
        assert len(np.unique(splits.split[sim_id == s])) == 1
    assert assign_splits(win, DataConfig(n_torsos=3, test_torsos=0), 11).torso_split.tolist() \
        == [0, 0, 0]


# --- saving ------------------------------------------------------------------------------------


def test_save_dataset_writes_files_and_fills_the_manifest(tmp_path):
    folder = tmp_path / "run" / "data"
    a = np.arange(6, dtype=np.int8).reshape(2, 3)
    save_dataset(folder, {"a": a}, {"z": {"x": np.ones(2), "y": 1.5}},
                 {"format": "f", "files": None, "after": 1})
    assert sorted(f.name for f in folder.iterdir()) == ["a.npy", "manifest.json", "z.npz"]
    m = json.loads((folder / "manifest.json").read_text())
    assert list(m) == ["format", "files", "after"]
    assert m["files"]["a.npy"]["shape"] == [2, 3] and m["files"]["a.npy"]["dtype"] == "int8"
    assert m["files"]["z.npz"]["sha256"] == sha256_file(folder / "z.npz")
    assert np.array_equal(np.load(folder / "a.npy"), a)
    assert list(np.load(folder / "z.npz").files) == ["x", "y"]
    assert not list(folder.parent.glob(".data.*"))


def test_save_dataset_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    folder = tmp_path / "run" / "data"
    # the manifest cannot be written (not JSON): nothing is left, not even the parent's temporary
    with pytest.raises(TypeError):
        save_dataset(folder, {"a": np.ones(3)}, {}, {"bad": object()})
    assert not folder.exists() and list(folder.parent.iterdir()) == []
    # an old data set survives an interrupted replacement unchanged
    save_dataset(folder, {"a": np.ones(3)}, {}, {})
    before = {f.name: f.read_bytes() for f in folder.iterdir()}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(folder, {"a": np.zeros(3)}, {"z": {"x": np.ones(1)}}, {})
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    assert sorted(f.name for f in folder.parent.iterdir()) == ["data"]


# --- the orchestration -------------------------------------------------------------------------


def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def test_build_dataset_is_the_composition_of_the_stages(tmp_path):
    p = params.validate("01_data", TINY)
    with one_thread():
        ds = build.build_dataset(p, tmp_path / "run", rebuild=True, show_progress=False)
        cfg = p.stage(DataConfig)
        seeds = spawn_seeds(p["seed"])
        anatomy = make_anatomy(cfg)
        models = make_torso_models(anatomy, cfg, seeds.torso)
        sims = simulate_all(anatomy, models.lead_basis, cfg, seeds, show_progress=False)
    win = make_windows(sims, cfg)
    bspm, bspm_examples = make_bspms(win, models)
    meas = measure(sims, anatomy, cfg)
    splits = assign_splits(win, cfg, seeds.split)
    expect = {"egm": win.egm, "label": win.label, "sim_id": win.sim_id, "start_s": win.start_s,
              "split": splits.split, "df_hz": meas.df_hz,
              "egm_500hz_examples": sims.egm[:, anatomy.example_sites],
              "bspm": bspm, "transfer": models.transfer, "torso_split": splits.torso_split,
              "bspm_examples": bspm_examples}
    assert set(expect) == set(store.ARRAYS)
    for name, arr in expect.items():
        assert _equal(getattr(ds, name), arr), name
    maps = ds.maps()
    assert _equal(maps["first_activation_ms"], meas.activation_ms)
    assert _equal(maps["snapshots"], sims.snapshots)
    m = ds.manifest
    assert m["simulations"] == json.loads(json.dumps(meas.simulations))
    assert m["params"] == build.cache_key(p) and m["replaced_terminated_af"] == sims.replaced_af
    assert m["lead_rank"] == models.lead_basis.shape[0]
    assert m["simulator_backend"] == sims.backend
    geom = np.load(ds.path / "geometry.npz")
    assert _equal(geom["site_vertex"], anatomy.sites.vertex)
    assert _equal(geom["heart_faces"], models.heart.faces)
    # the seeds can be used again: the same simulations (ids, parameters, signals)
    with one_thread():
        again = simulate_all(anatomy, models.lead_basis, cfg, seeds, show_progress=False)
    assert again.specs == sims.specs and _equal(again.egm, sims.egm)
    assert len(sims.specs) == 6 and biatrial_geometry(4.0).n_vertices == m["n_nodes"]
