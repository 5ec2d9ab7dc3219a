"""The data set on disk: its constants, windowing and splitting, loading and atomic saving.

The file layout is described in :mod:`egmlib.data`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly

from egmlib.core.runs import load_json, save_json, sha256_file
from egmlib.physics.geometry import AtrialGeometry, RecordingSites, TriMesh, recording_sites
from egmlib.physics.torso import Torso

LABELS = ("SR", "AF")
#: on-disk format; a data set of another format is rebuilt rather than loaded
FORMAT = "egmlib-dataset-3"  # 3: SVD lead-field compression cut in a gap, AF DF band 3-12 Hz
RECORD_FS = 500.0
SPLIT_NAMES = ("train", "val", "test")
#: the ``.npy`` arrays of a data set, in the order they are written
ARRAYS = ("egm", "label", "sim_id", "start_s", "split", "df_hz", "egm_500hz_examples", "bspm",
          "transfer", "torso_split", "bspm_examples")


class DataError(RuntimeError):
    """The data set on disk is missing, incomplete or corrupt."""


def windows(x: NDArray, fs_in: float, fs_out: float, T: int, hop_s: float
            ) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Resample (..., n_samples) signals from ``fs_in`` to ``fs_out`` (polyphase, anti-aliased)
    and cut windows of ``T`` samples every ``hop_s`` seconds.

    Returns (windows (n_windows, ..., T), start times in seconds).
    """
    ratio = fs_in / fs_out
    if abs(ratio - round(ratio)) > 1e-9:
        raise ValueError(f"fs_out = {fs_out} Hz must divide fs_in = {fs_in} Hz")
    y = resample_poly(x, 1, round(ratio), axis=-1) if round(ratio) > 1 else np.asarray(x)
    hop = round(hop_s * fs_out)
    if hop < 1:
        raise ValueError(f"hop_s = {hop_s} s is shorter than one sample at {fs_out} Hz")
    n = y.shape[-1]
    if n < T:
        raise ValueError(f"a window of {T} samples does not fit in {n} samples")
    starts = np.arange(0, n - T + 1, hop)
    w = np.stack([y[..., s:s + T] for s in starts]).astype(np.float32)
    return w, starts / fs_out


def split_by_simulation(sim_id: NDArray, label: NDArray, test_fraction: float,
                        val_fraction: float, seed: int) -> NDArray[np.int8]:
    """Assign each window to train (0), validation (1) or test (2) by its simulation.

    Simulations are shuffled per rhythm with ``seed`` and cut by the fractions (at least one
    simulation per non-empty part when there are three or more), so a simulation's windows never
    straddle two parts and both rhythms appear in every part.
    """
    sim_id = np.asarray(sim_id)
    label = np.asarray(label)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(sim_id), np.int8)
    for lab in np.unique(label):
        sims = np.unique(sim_id[label == lab])
        rng.shuffle(sims)
        n = len(sims)
        n_test = round(test_fraction * n)
        n_val = round(val_fraction * n)
        if n >= 3:
            n_test = max(n_test, 1) if test_fraction > 0 else 0
            n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = min(n_test, n - 1)
        n_val = min(n_val, max(n - 1 - n_test, 0))
        split[np.isin(sim_id, sims[:n_test])] = 2
        split[np.isin(sim_id, sims[n_test:n_test + n_val])] = 1
    return split


@dataclass
class Dataset:
    """A loaded data set (arrays memory-mapped read-only)."""

    path: Path
    manifest: dict[str, Any]
    egm: NDArray[np.float32]
    label: NDArray[np.int8]
    sim_id: NDArray[np.int32]
    start_s: NDArray[np.float32]
    split: NDArray[np.int8]
    df_hz: NDArray[np.float32]
    egm_500hz_examples: NDArray[np.float32]
    bspm: NDArray[np.float32]
    transfer: NDArray[np.float64]
    torso_split: NDArray[np.int8]
    bspm_examples: NDArray[np.float32]

    def part(self, name: str, rhythm: str | None = None) -> NDArray[np.bool_]:
        """Boolean mask of the windows of a split part (``train``, ``val``, ``test``), optionally
        of one rhythm."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"part must be one of {SPLIT_NAMES}; got {name!r}")
        mask = self.split == SPLIT_NAMES.index(name)
        if rhythm is not None:
            mask &= self.label == LABELS.index(rhythm)
        return mask

    def geometry(self) -> tuple[AtrialGeometry, RecordingSites]:
        """The atrial geometry and recording sites the data were made on."""
        g = np.load(self.path / "geometry.npz")
        geom = AtrialGeometry(mesh=TriMesh(g["vertices"], g["faces"]), region=g["region"],
                              links=g["links"], pacing=g["pacing"])
        sites = RecordingSites(vertex=g["site_vertex"], electrodes=g["electrodes"],
                               offset_mm=float(g["offset_mm"]))
        return geom, sites

    def site_permutation(self, order: str) -> NDArray[np.int64]:
        """Column indices that put this data set's recording sites in ``order``
        (:func:`egmlib.physics.geometry.order_sites`): ``egm[..., perm]`` are the same windows
        with the same sites in that order. The sites are re-derived from the stored mesh
        (farthest-point sampling is deterministic), so any order can be compared on one data
        set without simulating again (the generators' site-order study)."""
        geom, sites = self.geometry()
        again = recording_sites(geom, len(sites.vertex), sites.offset_mm, order)
        column = {int(v): i for i, v in enumerate(sites.vertex)}
        if set(column) != {int(v) for v in again.vertex}:
            raise ValueError("the stored recording sites are not the farthest-point sample of "
                             "the stored mesh; cannot reorder them")
        return np.array([column[int(v)] for v in again.vertex], np.int64)

    def torsos(self) -> list[Torso]:
        """The torso variants (meshes with their 64-electrode subsets)."""
        z = np.load(self.path / "torsos.npz")
        out = []
        for i in range(len(self.torso_split)):
            mesh = TriMesh(z[f"vertices_{i}"], z[f"faces_{i}"])
            out.append(Torso(mesh=mesh, electrodes=np.arange(mesh.n_vertices),
                             subset64=z[f"subset_{i}"], name=f"torso{i:02d}"))
        return out

    def torso_subset(self, i: int) -> NDArray[np.int64]:
        """Vertex indices of torso ``i``'s 64 electrodes."""
        return np.load(self.path / "torsos.npz")[f"subset_{i}"]

    def maps(self) -> dict[str, NDArray]:
        """First activation times (n_sims, n_nodes) and voltage snapshots per simulation."""
        return dict(np.load(self.path / "maps.npz"))

    @property
    def simulations(self) -> list[dict[str, Any]]:
        return self.manifest["simulations"]


def load_dataset(run_dir: str | Path, verify: bool = True) -> Dataset:
    """Load ``<run_dir>/data``; with ``verify`` every file's SHA-256 is checked.

    Raises DataError naming the file when one is missing or its checksum differs, and telling
    which notebook rebuilds the data.
    """
    path = Path(run_dir) / "data"
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise DataError(f"{mpath} is missing: run notebooks/01_data.ipynb for this profile first")
    try:
        manifest = load_json(mpath)
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{mpath} is corrupt ({type(exc).__name__}): rerun "
                        "notebooks/01_data.ipynb with rebuild=True") from exc
    for name, info in files.items():
        f = path / name
        if not f.exists():
            raise DataError(f"{f} is missing; the data set is incomplete: rerun "
                            "notebooks/01_data.ipynb with rebuild=True")
        if verify and sha256_file(f) != info["sha256"]:
            raise DataError(f"{f} is corrupt (checksum mismatch): rerun notebooks/01_data.ipynb "
                            "with rebuild=True")
    arrays = {}
    for name in ARRAYS:
        try:
            arrays[name] = np.load(path / f"{name}.npy", mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DataError(f"{path / name}.npy cannot be read ({exc}); rerun "
                            "notebooks/01_data.ipynb with rebuild=True") from exc
        expect = manifest["files"][f"{name}.npy"]["shape"]
        if list(arrays[name].shape) != expect:
            raise DataError(f"{path / name}.npy has shape {arrays[name].shape}, manifest says "
                            f"{expect}")
    return Dataset(path=path, manifest=manifest, **arrays)


def save_dataset(folder: str | Path, arrays: Mapping[str, NDArray],
                 archives: Mapping[str, Mapping[str, Any]], manifest: Mapping[str, Any]) -> None:
    """Write a data set into ``folder`` atomically.

    ``arrays`` (name -> array) become ``<name>.npy``, ``archives`` (name -> {key: array}) become
    ``<name>.npz``, both in the given order, and ``manifest`` becomes ``manifest.json`` with its
    ``files`` entry set to ``{file name: {"sha256", and for .npy "shape", "dtype"}}`` of every
    file written (in place where ``manifest`` already has a ``files`` key, else last).

    Everything is written into a temporary sibling folder ``.<folder name>.tmp-*`` that replaces
    ``folder`` by renames once complete; on any error (an interrupt included) the temporary
    folder is removed and an existing ``folder`` is left as it was.
    """
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        for name, members in archives.items():
            np.savez(tmp / f"{name}.npz", **members)
        files = {}
        for f in sorted(tmp.iterdir()):
            entry: dict[str, Any] = {"sha256": sha256_file(f)}
            if f.suffix == ".npy":
                a = np.load(f, mmap_mode="r")
                entry.update(shape=list(a.shape), dtype=str(a.dtype))
            files[f.name] = entry
        save_json(tmp / "manifest.json", {**manifest, "files": files})
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, replacing an old one with two renames."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
