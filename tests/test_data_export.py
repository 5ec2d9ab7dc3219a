"""egmlib.data.export: the data set as one NetCDF4 file, read back with xarray alone.

One tiny data set (4 mm mesh, 3 SR + 3 AF simulations of 0.5 s, 16 sites, two coarse torsos,
every split part present) is built and exported once per module (about 3 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import one_thread

from egmlib.core import params
from egmlib.data import ARRAYS, LABELS, SPLIT_NAMES, DataError, build_dataset
from egmlib.data import export as ex

TINY = {"mesh_edge_mm": 4.0, "n_rec": 16, "n_sr": 3, "n_af": 3, "transient_s": 0.0,
        "record_s": 0.5, "batch": 6, "fs": 100.0, "T": 20, "hop_s": 0.1, "n_torsos": 2,
        "test_torsos": 1, "torso_edge_mm": 60.0, "dt_ms": 0.1, "seed": 3}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    p = params.validate("01_data", TINY)
    with one_thread():
        return build_dataset(p, tmp_path_factory.mktemp("run"), show_progress=False)


@pytest.fixture(scope="module")
def exported(ds, tmp_path_factory) -> Path:
    return ex.export_dataset(ds, tmp_path_factory.mktemp("export") / "dataset.nc")


@pytest.fixture
def x(exported):
    with xr.open_dataset(exported, engine="h5netcdf") as opened:  # plain xarray, no egmlib
        yield opened.load()


def test_the_tiny_data_set_has_every_part(ds):
    assert set(np.unique(ds.split)) == {0, 1, 2}
    assert set(np.unique(ds.torso_split)) == {0, 2}


def test_arrays_round_trip_exactly_with_their_dtypes(ds, x):
    back = ex.dataset_arrays(x)
    assert list(back) == list(ARRAYS)
    for name in ARRAYS:
        orig = np.asarray(getattr(ds, name))
        assert back[name].dtype == orig.dtype, name
        assert back[name].shape == orig.shape, name
        np.testing.assert_array_equal(back[name], orig, err_msg=name)
    assert x["egm"].dims == ("window", "time", "site")
    assert x["bspm"].dims == ("window", "torso", "time", "lead")
    assert x["transfer"].dims == ("torso", "lead", "site")
    assert x["df_hz"].dims == ("simulation", "site")


def test_the_in_memory_dataset_matches_the_file(ds, x):
    mem = ex.to_xarray(ds)
    xr.testing.assert_identical(mem.load(), x)


def test_coordinates_and_labels(ds, x):
    m = ds.manifest
    np.testing.assert_array_equal(x["time"].values, np.arange(m["T"]) / m["fs"])
    assert x["time"].dtype == np.float64 and x["time"].attrs["units"] == "s"
    assert list(x["rhythm"].values) == [LABELS[i] for i in ds.label]
    assert list(x["split"].values) == [SPLIT_NAMES[i] for i in ds.split]
    np.testing.assert_array_equal(x["sim_id"].values, ds.sim_id)
    np.testing.assert_array_equal(x["start_s"].values, ds.start_s)
    geo = np.load(ds.path / "geometry.npz")
    xyz = np.stack([x[f"site_{c}"].values for c in "xyz"], axis=1)
    np.testing.assert_array_equal(xyz, geo["electrodes"])
    np.testing.assert_array_equal(x["site_vertex"].values, geo["site_vertex"])
    assert all(x[f"site_{c}"].attrs["units"] == "mm" for c in "xyz")
    assert list(x["torso"].values) == [t["name"] for t in m["torsos"]]
    assert list(x["torso_split"].values) == [t["split"] for t in m["torsos"]]
    for i in range(len(m["torsos"])):
        np.testing.assert_array_equal(x["lead_vertex"].values[i], ds.torso_subset(i))
    # simulations: the rows of df_hz, SR first, and every window's simulation among them
    ids = [s["spec"]["sim_id"] for s in m["simulations"]]
    assert list(x["simulation"].values) == ids
    assert list(x["simulation_rhythm"].values) == [s["spec"]["rhythm"] for s in m["simulations"]]
    assert set(ds.sim_id.tolist()) <= set(ids)
    for w in range(len(ds.label)):  # a window's rhythm is its simulation's
        sim_rhythm = x["simulation_rhythm"].sel(simulation=int(ds.sim_id[w])).item()
        assert sim_rhythm == LABELS[ds.label[w]]
    np.testing.assert_array_equal(x["record_time"].values,
                                  np.arange(ds.egm_500hz_examples.shape[-1]) / m["record_fs"])
    np.testing.assert_array_equal(x["example_site"].values, geo["example_sites"])
    # selection by label works on the file: the SR windows are the rows with label 0
    sr = x["egm"].where(x["rhythm"] == "SR", drop=True)
    np.testing.assert_array_equal(sr.values, ds.egm[ds.label == 0])


def test_units_and_long_names_on_every_variable(x):
    for name, var in x.data_vars.items():
        assert var.attrs.get("units"), name
        assert var.attrs.get("long_name"), name
    for name in ("egm", "bspm", "egm_500hz_examples", "bspm_examples"):
        assert x[name].attrs["units"] == "mV"
    assert x["df_hz"].attrs["units"] == "Hz"
    for name, var in x.coords.items():
        assert var.attrs.get("long_name"), name
    assert x["label"].attrs["flag_meanings"] == " ".join(LABELS)
    assert x["split_code"].attrs["flag_meanings"] == " ".join(SPLIT_NAMES)


def test_manifest_recoverable_from_the_attributes(ds, x):
    assert json.loads(x.attrs["manifest_json"]) == ds.manifest
    assert ex.exported_manifest(x) == ds.manifest
    for key in ("format", "units", "simulator_backend"):
        assert x.attrs[key] == ds.manifest[key]
    for key in ("fs", "record_fs", "T", "n_rec", "lead_rank"):
        assert x.attrs[key] == ds.manifest[key]
    assert x.attrs["egmlib_export"] == ex.EXPORT_VERSION
    for value in x.attrs.values():  # netCDF attributes: numbers, strings, 1-D arrays only
        assert isinstance(value, (str, int, float, np.number, np.ndarray)), value


def test_read_exported_is_plain_open_dataset(exported, x):
    with ex.read_exported(exported) as y:
        xr.testing.assert_identical(y.load(), x)


def test_export_from_a_run_folder_and_overwrite(ds, tmp_path):
    target = tmp_path / "d.nc"
    target.write_bytes(b"old")
    assert ex.export_dataset(ds.path.parent, target, complevel=0) == target
    with ex.read_exported(target) as y:
        np.testing.assert_array_equal(y["bspm"].values, ds.bspm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.nc"]


def test_an_interrupted_write_leaves_no_file(ds, tmp_path, monkeypatch):
    def broken(self, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(KeyboardInterrupt):
        ex.export_dataset(ds, tmp_path / "new.nc")
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old.nc"
    old.write_bytes(b"kept")
    with pytest.raises(KeyboardInterrupt):
        ex.export_dataset(ds, old)
    assert old.read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.nc"]


def test_clear_errors(ds, tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "d.nc"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ex.export_dataset(ds, missing)
    assert not (tmp_path / "no").exists()
    with pytest.raises(IsADirectoryError):
        ex.export_dataset(ds, tmp_path)
    with pytest.raises(ValueError, match="engine"):
        ex.export_dataset(ds, tmp_path / "d.nc", engine="scipy")
    with pytest.raises(FileNotFoundError, match="export_dataset"):
        ex.read_exported(tmp_path / "absent.nc")
    with pytest.raises(DataError):
        ex.export_dataset(tmp_path, tmp_path / "d.nc")
    assert list(tmp_path.iterdir()) == []
