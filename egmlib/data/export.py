"""Export of the data set to one self-describing NetCDF4 (HDF5) file, readable with xarray alone.

The ``.npy`` folder of :mod:`egmlib.data.store` stays the working format (memory-mapped, with
checksums); this file is the exchange format for other tools and languages: one file, named
dimensions, coordinates, units, and the whole manifest. It needs no egmlib to be read::

    import xarray
    x = xarray.open_dataset("dataset.nc", engine="h5netcdf")   # or read_exported(path)

Layout of the file (:func:`to_xarray` builds it, :func:`export_dataset` writes it):

dimensions
    ``window`` (n_windows), ``time`` (T samples at ``fs``), ``site`` (n_rec recording sites),
    ``torso`` (n_torsos), ``lead`` (64 torso electrodes), ``simulation`` (n_sims, SR first),
    ``example_site`` (4 sites kept at 500 Hz), ``record_time`` (samples at ``record_fs``),
    ``example`` (the first SR and the first AF window) and ``torso0_vertex`` (vertices of torso 0).
coordinates
    ``time`` (s, ``arange(T) / fs``); ``site`` (index), ``site_x``, ``site_y``, ``site_z`` (mm,
    electrode positions) and ``site_vertex`` (the tissue vertex under each site); per window
    ``rhythm`` (``"SR"``/``"AF"``), ``label`` (int8 code of the rhythm), ``sim_id`` (int32, a
    value of the ``simulation`` coordinate), ``start_s`` (float32, s after the transient),
    ``split`` (``"train"``/``"val"``/``"test"``) and ``split_code`` (int8); ``simulation`` (int32
    ids) and ``simulation_rhythm``; ``torso`` (names), ``torso_split`` and ``torso_split_code``;
    ``lead`` (index) and ``lead_vertex`` (torso, lead: the torso vertex of each electrode);
    ``record_time`` (s at ``record_fs``); ``example_site`` (site indices); ``example_rhythm`` and
    ``example_window`` (the window each example is).
data variables (all with ``units`` and ``long_name``)
    ``egm`` (window, time, site) float32 mV; ``bspm`` (window, torso, time, lead) float32 mV;
    ``transfer`` (torso, lead, site) float64, potential to potential (``"1"``); ``df_hz``
    (simulation, site) float32 Hz; ``egm_500hz_examples`` (simulation, example_site,
    record_time) float32 mV; ``bspm_examples`` (example, time, torso0_vertex) float32 mV.
attributes
    ``manifest_json``: the whole ``manifest.json`` of the data set as a JSON string
    (``json.loads`` gives it back unchanged, its ``files`` entry included: the checksums of the
    ``.npy`` folder the file was exported from); the manifest's simple scalars (``format``,
    ``fs``, ``T``, ``n_rec``, ``record_fs``, ``units``, ``lead_rank``, ...) also directly, for
    quick inspection; ``title``, ``egmlib_export`` (the version of this layout) and
    ``source`` (the folder exported, relative to the repository root when it lies inside it).
    Nested parts (``params``, ``priors``, ``torsos``, ``simulations``, ``provenance``, ...) are
    only in ``manifest_json``: netCDF attributes
    hold numbers, strings and 1-D arrays, not nested records.

The integer codes index :data:`~egmlib.data.store.LABELS` and
:data:`~egmlib.data.store.SPLIT_NAMES` (CF ``flag_values``/``flag_meanings`` say so in the file);
:func:`dataset_arrays` gives back the arrays of :data:`~egmlib.data.store.ARRAYS` bit for bit.
The file is written under a temporary name beside its target and renamed when complete.

xarray, h5netcdf and h5py are imported inside the functions, so ``egmlib.data`` does not
depend on them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from egmlib.core.runs import atomic_path, shown
from egmlib.data.store import ARRAYS, LABELS, SPLIT_NAMES, Dataset, load_dataset

if TYPE_CHECKING:
    import xarray

#: version of the layout described in the module docstring
EXPORT_VERSION = 1
#: engines that write NetCDF4 (HDF5); ``netcdf4`` needs the optional netCDF4 package
ENGINES = ("h5netcdf", "netcdf4")
#: gzip level of the signal arrays (lossless; 0 for none)
COMPLEVEL = 4

_MV = "mV"


def _attrs(long_name: str, units: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"long_name": long_name}
    if units is not None:
        out["units"] = units
    out.update(extra)
    return out


def _flags(names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """CF flag attributes of an integer code indexing ``names``."""
    return {"flag_values": np.arange(len(names), dtype=np.int8),
            "flag_meanings": " ".join(names)}


def _scalar_attrs(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's entries that are plain numbers or strings (booleans as 0/1)."""
    out: dict[str, Any] = {}
    for key, value in manifest.items():
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, (int, float, str)):
            out[key] = value
    return out


def to_xarray(ds: Dataset) -> xarray.Dataset:
    """The data set ``ds`` as an :class:`xarray.Dataset` with named dimensions, coordinates,
    units and the manifest in its attributes (layout: the module docstring).

    The arrays are those of ``ds`` (memory-mapped ones are read when written or computed on).
    """
    import xarray as xr

    m = ds.manifest
    fs, record_fs = float(m["fs"]), float(m["record_fs"])
    n_win, T, n_rec = ds.egm.shape
    n_torsos = ds.transfer.shape[0]
    geo = np.load(ds.path / "geometry.npz")
    electrodes = np.asarray(geo["electrodes"], np.float64)
    example_sites = np.asarray(geo["example_sites"])
    sims = m.get("simulations") or []
    if len(sims) == ds.df_hz.shape[0]:
        sim_ids = np.array([s["spec"]["sim_id"] for s in sims], np.int32)
        sim_rhythm = np.array([s["spec"]["rhythm"] for s in sims])
    else:  # a manifest without per-simulation records: ids from the windows, in order
        sim_ids = np.asarray(ds.sim_id)[np.sort(np.unique(ds.sim_id, return_index=True)[1])]
        first = [int(np.flatnonzero(ds.sim_id == s)[0]) for s in sim_ids]
        sim_rhythm = np.array(LABELS)[np.asarray(ds.label)[first]]
    torsos = m.get("torsos") or []
    torso_names = np.array([t["name"] for t in torsos] if len(torsos) == n_torsos
                           else [f"torso{i:02d}" for i in range(n_torsos)])
    lead_vertex = np.stack([np.asarray(ds.torso_subset(i), np.int64) for i in range(n_torsos)])
    label = np.asarray(ds.label)
    split = np.asarray(ds.split)
    torso_split = np.asarray(ds.torso_split)
    example_window = np.array([int(np.flatnonzero(label == j)[0]) if (label == j).any() else -1
                               for j in range(len(LABELS))], np.int64)

    coords = {
        "window": ("window", np.arange(n_win, dtype=np.int64),
                   _attrs("window index (row of egm.npy)")),
        "time": ("time", np.arange(T) / fs,
                 _attrs("time from the window start", "s", sampling_rate_hz=fs)),
        "site": ("site", np.arange(n_rec, dtype=np.int64), _attrs("recording site index")),
        "site_x": ("site", electrodes[:, 0], _attrs("recording electrode x", "mm")),
        "site_y": ("site", electrodes[:, 1], _attrs("recording electrode y", "mm")),
        "site_z": ("site", electrodes[:, 2], _attrs("recording electrode z", "mm")),
        "site_vertex": ("site", np.asarray(geo["site_vertex"]),
                        _attrs("atrial mesh vertex under the recording site")),
        "rhythm": ("window", np.array(LABELS)[label], _attrs("rhythm of the window")),
        "label": ("window", label, _attrs("rhythm code of the window", "1", **_flags(LABELS))),
        "sim_id": ("window", np.asarray(ds.sim_id),
                   _attrs("simulation the window comes from (a value of 'simulation')")),
        "start_s": ("window", np.asarray(ds.start_s),
                    _attrs("window start after the discarded transient", "s")),
        "split": ("window", np.array(SPLIT_NAMES)[split],
                  _attrs("split part of the window (by simulation)")),
        "split_code": ("window", split,
                       _attrs("split code of the window", "1", **_flags(SPLIT_NAMES))),
        "simulation": ("simulation", sim_ids, _attrs("simulation id")),
        "simulation_rhythm": ("simulation", sim_rhythm, _attrs("rhythm of the simulation")),
        "torso": ("torso", torso_names, _attrs("torso variant")),
        "torso_split": ("torso", np.array(SPLIT_NAMES)[torso_split],
                        _attrs("split part of the torso")),
        "torso_split_code": ("torso", torso_split,
                             _attrs("split code of the torso", "1", **_flags(SPLIT_NAMES))),
        "lead": ("lead", np.arange(ds.bspm.shape[-1], dtype=np.int64),
                 _attrs("torso electrode index")),
        "lead_vertex": (("torso", "lead"), lead_vertex,
                        _attrs("torso mesh vertex of the electrode")),
        "record_time": ("record_time", np.arange(ds.egm_500hz_examples.shape[-1]) / record_fs,
                        _attrs("time after the discarded transient", "s",
                               sampling_rate_hz=record_fs)),
        "example_site": ("example_site", example_sites,
                         _attrs("recording site kept at the recording rate")),
        "example_rhythm": ("example", np.array(LABELS), _attrs("rhythm of the example")),
        "example_window": ("example", example_window,
                           _attrs("window of the example (-1: none)")),
    }
    data_vars = {
        "egm": (("window", "time", "site"), ds.egm,
                _attrs("unipolar atrial electrogram windows at the recording sites", _MV)),
        "bspm": (("window", "torso", "time", "lead"), ds.bspm,
                 _attrs("noise-free body-surface potential windows on each torso's electrodes, "
                        "referenced to their mean", _MV)),
        "transfer": (("torso", "lead", "site"), ds.transfer,
                     _attrs("Barr-type potential-to-potential transfer matrix from the recording "
                            "sites to the torso electrodes, referenced to their mean", "1")),
        "df_hz": (("simulation", "site"), ds.df_hz,
                  _attrs("dominant frequency per site from the 500 Hz electrogram", "Hz")),
        "egm_500hz_examples": (("simulation", "example_site", "record_time"),
                               ds.egm_500hz_examples,
                               _attrs("electrograms of the example sites at the recording rate",
                                      _MV)),
        "bspm_examples": (("example", "time", "torso0_vertex"), ds.bspm_examples,
                          _attrs("first SR and AF window on the whole torso 0 surface, "
                                 "referenced to the mean over its vertices", _MV)),
    }
    attrs = {
        "title": "egmlib synthetic atrial electrograms and body-surface potentials",
        "egmlib_export": EXPORT_VERSION,
        "source": shown(ds.path),  # relative to the repository when inside it
        **_scalar_attrs(m),
        "manifest_json": json.dumps(m, allow_nan=False),
    }
    return xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)


def dataset_arrays(x: xarray.Dataset) -> dict[str, NDArray]:
    """The arrays of :data:`~egmlib.data.store.ARRAYS` (name -> array, dtypes as in the
    ``.npy`` files) from a :func:`to_xarray` or :func:`read_exported` data set."""
    names = {"label": "label", "sim_id": "sim_id", "start_s": "start_s", "split": "split_code",
             "torso_split": "torso_split_code"}
    return {name: np.asarray(x[names.get(name, name)].values) for name in ARRAYS}


def exported_manifest(x: xarray.Dataset) -> dict[str, Any]:
    """The data set's manifest, from the ``manifest_json`` attribute."""
    return json.loads(x.attrs["manifest_json"])


def _encoding(x: xarray.Dataset, complevel: int) -> dict[str, dict[str, Any]]:
    """No fill values (the arrays hold no missing data); gzip on the float data variables."""
    enc: dict[str, dict[str, Any]] = {}
    for name, var in x.variables.items():
        if var.dtype.kind in "fiu":
            enc[name] = {"_FillValue": None}
            if complevel and name in x.data_vars:
                enc[name].update(zlib=True, complevel=complevel)
    return enc


def export_dataset(ds_or_run_dir: Dataset | str | Path, path: str | Path,
                   engine: str = "h5netcdf", complevel: int = COMPLEVEL) -> Path:
    """Write a data set (a :class:`~egmlib.data.store.Dataset`, or a run folder whose
    ``data/`` is loaded and checked) to the NetCDF4 file ``path``; returns ``path``.

    The file (layout: the module docstring) is written under a temporary name beside ``path``
    and renamed onto it when complete, so an interrupted write leaves no file and an existing
    ``path`` as it was. ``engine`` is an xarray engine writing NetCDF4 (:data:`ENGINES`),
    ``complevel`` the lossless gzip level of the data variables (0: none).

    Raises FileNotFoundError when the folder of ``path`` does not exist, ValueError for another
    engine, :class:`~egmlib.data.store.DataError` for a missing or corrupt data set.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES} (NetCDF4 writers); got {engine!r}")
    if not 0 <= complevel <= 9:
        raise ValueError(f"complevel must be 0-9; got {complevel!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist; "
                                "create it first")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name")
    ds = ds_or_run_dir if isinstance(ds_or_run_dir, Dataset) else load_dataset(ds_or_run_dir)
    x = to_xarray(ds)
    with atomic_path(path) as tmp:
        x.to_netcdf(tmp, mode="w", format="NETCDF4", engine=engine,
                    encoding=_encoding(x, complevel))
    return path


def read_exported(path: str | Path) -> xarray.Dataset:
    """Open a file written by :func:`export_dataset` (lazily; close it, or use it in a ``with``
    block, when done).

    This is only ``xarray.open_dataset(path, engine="h5netcdf")``: other tools read the file
    with xarray alone (or any NetCDF4/HDF5 reader). Raises FileNotFoundError naming ``path``
    when it does not exist.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write it with export_dataset first")
    return xr.open_dataset(path, engine="h5netcdf")
