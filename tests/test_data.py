"""egmlib.data: windows, splits, building, loading, checksums and atomic writes of the data set.

The data set tests build a tiny data set (4 mm mesh, 3 SR + 3 AF simulations of 0.5 s, 16 sites,
one coarse torso) once per module and a few more copies where a test needs a fresh build.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import one_thread

from egmlib import data
from egmlib.core import params
from egmlib.core.runs import sha256_file
from egmlib.data import DataError, load_dataset, split_by_simulation, store, windows
from egmlib.physics import simulate
from egmlib.physics.geometry import biatrial_geometry
from egmlib.physics.simulate import SimulationSpec

build = data.build_dataset

TINY = {"mesh_edge_mm": 4.0, "n_rec": 16, "n_sr": 3, "n_af": 3, "transient_s": 0.0,
        "record_s": 0.5, "batch": 6, "fs": 100.0, "T": 20, "hop_s": 0.1, "n_torsos": 1,
        "test_torsos": 0, "torso_edge_mm": 60.0, "dt_ms": 0.1, "seed": 3}
N_WIN = 4  # (0.5 s * 100 Hz - 20) / 10 + 1


def _params(**over):
    return params.validate("01_data", {**TINY, **over})


def _build(run_dir, **over):
    with one_thread():
        return build(_params(**over), run_dir, rebuild=True, show_progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny")
    return _build(run_dir)


# --- windows ---------------------------------------------------------------------------------


def test_windows_shapes_and_start_times():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 1000)).astype(np.float32)  # 2 s at 500 Hz
    w, start = windows(x, 500.0, 100.0, 50, 0.25)
    # 200 samples at 100 Hz, windows of 50 every 25 samples: starts 0, 25, ..., 150
    assert w.shape == (7, 3, 5, 50) and w.dtype == np.float32
    assert np.allclose(start, np.arange(7) * 0.25)
    # without resampling the windows are plain slices
    w1, s1 = windows(x, 500.0, 500.0, 100, 0.5)
    assert w1.shape == (4, 3, 5, 100) and np.allclose(s1, [0.0, 0.5, 1.0, 1.5])
    assert np.array_equal(w1[3], x[..., 750:850])
    # consecutive resampled windows overlap consistently
    assert np.allclose(w[1][..., :25], w[0][..., 25:])
    # a window that fills the signal exactly gives one window
    w2, s2 = windows(x, 500.0, 100.0, 200, 0.1)
    assert w2.shape == (1, 3, 5, 200) and s2.tolist() == [0.0]


def test_windows_resample_without_aliasing():
    fs = 500.0
    t = np.arange(0, 4.0, 1 / fs)
    slow = np.sin(2 * np.pi * 5.0 * t)  # kept
    fast = np.sin(2 * np.pi * 120.0 * t)  # above the new Nyquist (50 Hz): must be removed
    w, start = windows(slow + fast, fs, 100.0, 100, 1.0)
    t_out = start[:, None] + np.arange(100)[None, :] / 100.0
    inner = slice(10, 90)  # away from the ends of the whole signal
    assert np.abs(w[1:3, inner] - np.sin(2 * np.pi * 5.0 * t_out[1:3, inner])).max() < 0.02
    # naive decimation would alias 120 Hz onto 20 Hz with full amplitude
    naive = (slow + fast)[::5]
    assert np.abs(naive - np.sin(2 * np.pi * 5.0 * t[::5])).max() > 0.5


def test_windows_reject_bad_arguments():
    x = np.zeros((2, 1000))
    with pytest.raises(ValueError, match="must divide"):
        windows(x, 500.0, 300.0, 10, 0.1)
    with pytest.raises(ValueError, match="hop_s"):
        windows(x, 500.0, 100.0, 10, 0.001)
    with pytest.raises(ValueError, match="does not fit"):
        windows(x, 500.0, 100.0, 201, 0.1)


# --- splits ----------------------------------------------------------------------------------


def _windows_of(n_sr, n_af, per=5):
    sims = np.concatenate([np.arange(n_sr), 1000 + np.arange(n_af)])
    labels = np.concatenate([np.zeros(n_sr, int), np.ones(n_af, int)])
    return np.repeat(sims, per), np.repeat(labels, per)


@pytest.mark.parametrize(("n_sr", "n_af"), [(20, 20), (3, 3), (10, 4), (50, 7)])
def test_split_never_shares_a_simulation_and_has_both_rhythms_everywhere(n_sr, n_af):
    sim_id, label = _windows_of(n_sr, n_af)
    split = split_by_simulation(sim_id, label, 0.2, 0.15, seed=1)
    assert split.dtype == np.int8 and set(np.unique(split)) == {0, 1, 2}
    for s in np.unique(sim_id):
        assert len(np.unique(split[sim_id == s])) == 1
    for part in (0, 1, 2):
        assert set(np.unique(label[split == part])) == {0, 1}
    # the fractions are respected per rhythm (rounded, at least one)
    for lab, n in ((0, n_sr), (1, n_af)):
        sims_test = np.unique(sim_id[(split == 2) & (label == lab)])
        sims_val = np.unique(sim_id[(split == 1) & (label == lab)])
        assert len(sims_test) == max(1, round(0.2 * n))
        assert len(sims_val) == max(1, round(0.15 * n))


def test_split_is_seeded_and_handles_zero_fractions():
    sim_id, label = _windows_of(20, 20)
    a = split_by_simulation(sim_id, label, 0.2, 0.15, seed=1)
    assert np.array_equal(a, split_by_simulation(sim_id, label, 0.2, 0.15, seed=1))
    assert not np.array_equal(a, split_by_simulation(sim_id, label, 0.2, 0.15, seed=2))
    no_val = split_by_simulation(sim_id, label, 0.2, 0.0, seed=1)
    assert not (no_val == 1).any() and (no_val == 2).any()
    # one simulation per rhythm: everything trains
    one = split_by_simulation(*_windows_of(1, 1), 0.2, 0.15, seed=1)
    assert np.all(one == 0)


# --- building and loading --------------------------------------------------------------------


def test_built_dataset_shapes_labels_and_windows(tiny):
    ds = tiny
    n_sims = 6
    assert ds.egm.shape == (n_sims * N_WIN, 20, 16) and ds.egm.dtype == np.float32
    assert np.isfinite(ds.egm).all() and np.abs(ds.egm).max() > 0.01
    assert ds.label.tolist() == [0] * 3 * N_WIN + [1] * 3 * N_WIN
    assert ds.sim_id.dtype == np.int32 and len(np.unique(ds.sim_id)) == n_sims
    for s in np.unique(ds.sim_id):
        sel = ds.sim_id == s
        assert sel.sum() == N_WIN and len(np.unique(ds.label[sel])) == 1
        assert np.allclose(ds.start_s[sel], np.arange(N_WIN) * 0.1)
        assert len(np.unique(ds.split[sel])) == 1  # by simulation
    for part in ("train", "val", "test"):
        for rhythm in ("SR", "AF"):
            assert ds.part(part, rhythm).sum() == N_WIN  # 3 simulations: one in each part
    assert ds.df_hz.shape == (n_sims, 16)
    # windows are the 500 Hz traces resampled to fs and cut: check on the stored example sites
    sites = np.load(ds.path / "geometry.npz")["example_sites"]
    for j in range(n_sims):
        w, start = windows(ds.egm_500hz_examples[j], 500.0, 100.0, 20, 0.1)
        assert np.allclose(start, np.arange(N_WIN) * 0.1)
        got = ds.egm[ds.sim_id == np.unique(ds.sim_id)[j]][..., sites]  # (n_w, T, 4)
        assert np.allclose(got, w.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)


def test_load_dataset_memory_maps_read_only(tiny):
    ds = load_dataset(tiny.path.parent)
    for name in data.ARRAYS:
        arr = getattr(ds, name)
        assert isinstance(arr, np.memmap), name
        assert not arr.flags.writeable
    assert np.array_equal(ds.egm, tiny.egm)
    geom, sites = ds.geometry()
    ref = biatrial_geometry(4.0)
    assert np.array_equal(geom.mesh.faces, ref.mesh.faces)
    assert np.allclose(geom.mesh.vertices, ref.mesh.vertices)
    assert sites.electrodes.shape == (16, 3) and sites.offset_mm == 1.5


def test_manifest_holds_checksums_shapes_specs_and_provenance(tiny):
    ds = tiny
    m = ds.manifest
    on_disk = {f.name for f in ds.path.iterdir()} - {"manifest.json"}
    assert set(m["files"]) == on_disk
    for name, info in m["files"].items():
        assert info["sha256"] == sha256_file(ds.path / name)
        if name.endswith(".npy"):
            arr = np.load(ds.path / name, mmap_mode="r")
            assert info["shape"] == list(arr.shape) and info["dtype"] == str(arr.dtype)
    sims = m["simulations"]
    assert len(sims) == 6
    specs = [SimulationSpec.from_dict(s["spec"]) for s in sims]
    assert [s.rhythm for s in specs] == ["SR"] * 3 + ["AF"] * 3
    assert sorted(s.sim_id for s in specs) == sorted(np.unique(ds.sim_id).tolist())
    for s in specs:
        if s.rhythm == "SR":
            assert 0.5 <= s.D <= 1.0 and 600 <= s.cycle_length_ms <= 1000
        else:
            lo, hi = simulate.PRIORS["AF"].D
            assert lo <= s.D <= hi and len(s.start_axes) == 2
    for s in sims[:3]:
        assert s["activated_fraction"] == 1.0 and 0.5 < s["cv_median_m_s"] < 1.3
    prov = m["provenance"]
    assert prov["params"] == m["params"] and prov["seed"] == 3
    assert m["params"]["n_rec"] == 16 and m["params"]["mesh_edge_mm"] == 4.0
    assert {"git_commit", "versions", "created_utc"} <= set(prov)
    assert prov["versions"]["numpy"] == np.__version__
    assert sum(m["counts"].values()) == len(ds.egm)
    assert m["n_nodes"] == biatrial_geometry(4.0).n_vertices
    # one DF definition (egmlib.core.metrics): SR Botteron at 500 Hz, AF plain in 3-12 Hz
    assert m["df_method"] == {"SR": {"method": "botteron", "band_hz": [0.5, 3.0]},
                              "AF": {"method": "plain", "band_hz": [3.0, 12.0]}}
    # the lead-field compression: cut in a gap with a margin far above rounding, error <= 1e-7
    assert m["lead_rank"] > 10 and m["lead_rank_margin_decades"] > 1e-4
    assert 0 < m["lead_relative_error"] <= 1e-7 and m["lead_rank_gap_decades"] > 0
    assert m["simulator_backend"] == ("numba" if simulate.numba_available() else "torch")


def _copy(ds, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(ds.path, run_dir / "data")
    return run_dir


def test_corrupt_egm_is_detected(tiny, tmp_path):
    run_dir = _copy(tiny, tmp_path)
    f = run_dir / "data" / "egm.npy"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF  # one byte of the data
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"egm\.npy is corrupt"):
        load_dataset(run_dir)
    # a truncated file is caught even without checksums
    f.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match=r"egm\.npy"):
        load_dataset(run_dir, verify=False)


def test_missing_files_are_named(tiny, tmp_path):
    run_dir = _copy(tiny, tmp_path)
    (run_dir / "data" / "label.npy").unlink()
    with pytest.raises(DataError, match=r"label\.npy is missing"):
        load_dataset(run_dir)
    (run_dir / "data" / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"manifest\.json is missing.*01_data"):
        load_dataset(run_dir)
    with pytest.raises(DataError, match=r"manifest\.json"):
        load_dataset(tmp_path / "nowhere")


def test_same_seed_same_files_other_seed_other_arrays(tiny, tmp_path):
    again = _build(tmp_path / "again")
    for name in ("egm.npy", "label.npy", "sim_id.npy", "split.npy", "df_hz.npy", "maps.npz"):
        assert (again.path / name).read_bytes() == (tiny.path / name).read_bytes(), name
    assert again.manifest["simulations"] == tiny.manifest["simulations"]
    other = _build(tmp_path / "other", seed=4)
    assert other.egm.shape == tiny.egm.shape
    assert not np.array_equal(other.egm, tiny.egm)
    assert other.manifest["simulations"] != tiny.manifest["simulations"]


def test_existing_dataset_with_same_parameters_is_reused(tiny, tmp_path, monkeypatch):
    run_dir = _copy(tiny, tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("simulated although an identical data set exists")

    monkeypatch.setattr(simulate.Simulator, "run", boom)
    ds = build(_params(), run_dir, rebuild=False, show_progress=False)
    assert np.array_equal(ds.egm, tiny.egm)
    # other data parameters: rebuilt (here: the patched simulator is reached)
    with pytest.raises(AssertionError, match="simulated"):
        build(_params(seed=5), run_dir, rebuild=False, show_progress=False)
    # other simulation priors: rebuilt too (the manifest stores them beside the parameters)
    af = simulate.PRIORS["AF"]
    wider = simulate.RhythmPriors(**{**af.__dict__, "D": (0.1, 0.3)})
    monkeypatch.setitem(simulate.PRIORS, "AF", wider)
    with pytest.raises(AssertionError, match="simulated"):
        build(_params(), run_dir, rebuild=False, show_progress=False)
    monkeypatch.setitem(simulate.PRIORS, "AF", af)
    assert ds.manifest["priors"]["AF"]["D"] == list(af.D)
    # a corrupt data set is rebuilt, not loaded
    f = run_dir / "data" / "egm.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(AssertionError, match="simulated"):
        build(_params(), run_dir, rebuild=False, show_progress=False)


class Interrupted(Exception):
    pass


def _no_partial_files(run_dir: Path) -> None:
    assert not list(run_dir.glob(".data.tmp-*"))
    assert not list(run_dir.glob(".data.old-*"))


def test_interrupted_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise Interrupted("killed while writing the manifest")

    monkeypatch.setattr(store, "save_json", interrupt)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        _build(run_dir)
    assert not (run_dir / "data").exists()
    _no_partial_files(run_dir)
    with pytest.raises(DataError):
        load_dataset(run_dir)


def test_interrupted_rebuild_keeps_the_old_dataset(tiny, tmp_path, monkeypatch):
    run_dir = _copy(tiny, tmp_path)
    before = sorted((f.name, sha256_file(f)) for f in (run_dir / "data").iterdir())
    real_save = np.save
    calls = []

    def save_then_interrupt(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise Interrupted("killed midway through the arrays")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", save_then_interrupt)
    with pytest.raises(Interrupted):
        _build(run_dir, seed=9)
    monkeypatch.undo()
    assert len(calls) == 3 and ".data.tmp-" in str(calls[0])
    after = sorted((f.name, sha256_file(f)) for f in (run_dir / "data").iterdir())
    assert after == before
    _no_partial_files(run_dir)
    assert np.array_equal(load_dataset(run_dir).egm, tiny.egm)


def test_corrupt_manifest_is_a_data_error(tiny, tmp_path):
    run_dir = _copy(tiny, tmp_path)
    m = run_dir / "data" / "manifest.json"
    m.write_bytes(m.read_bytes()[:100])  # cut short, as by a crash or a bad copy
    with pytest.raises(DataError, match=r"manifest\.json"):
        load_dataset(run_dir)


def test_smallest_accepted_n_rec_builds_or_is_refused_by_name(tmp_path):
    with pytest.raises(params.ParameterError, match="'n_rec'"):
        _params(n_rec=4)
    p = _params(n_rec=16)  # the smallest the schema accepts
    try:
        with one_thread():
            ds = build(p, tmp_path / "run", rebuild=True, show_progress=False)
    except params.ParameterError as exc:
        assert "'n_rec'" in str(exc)
    else:
        assert ds.egm.shape[-1] == 16
