"""The in-silico data set: build, save, load, window and split.

Layout of ``<run_dir>/data/`` (written into a temporary folder and renamed when complete):

``manifest.json``
    shapes, dtypes and SHA-256 of every array, label names, the parameters, per-simulation
    parameters and measured summaries, the split, and provenance.
``egm.npy``            (n_windows, T, n_rec) float32, EGM windows at ``fs`` (mV)
``label.npy``          (n_windows,) int8, 0 = SR, 1 = AF
``sim_id.npy``         (n_windows,) int32, the simulation each window comes from
``start_s.npy``        (n_windows,) float32, window start (s after the discarded transient)
``split.npy``          (n_windows,) int8, 0 train, 1 validation, 2 test (by simulation)
``df_hz.npy``          (n_sims, n_rec) float32, dominant frequency per site from the 500 Hz EGM
``egm_500hz_examples.npy``  (n_sims, 4, n_samples) float32, four sites at 500 Hz (figures)
``geometry.npz``       vertices, faces, region, links, pacing, site vertices, electrodes
``maps.npz``           per simulation: first activation time per node, voltage snapshots

Arrays are plain ``.npy`` files, so :func:`load_dataset` memory-maps them.
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

from . import metrics
from .electrograms import infinite_medium_lead_field
from .geometry import AtrialGeometry, RecordingSites, TriMesh, biatrial_geometry, recording_sites
from .runs import load_json, progress, provenance, save_json, sha256_file
from .simulate import SimulationResult, SimulationSpec, Simulator, conduction_velocity, draw_specs

__all__ = [
    "LABELS",
    "DataError",
    "Dataset",
    "build_egm_dataset",
    "load_dataset",
    "split_by_simulation",
    "windows",
]

LABELS = ("SR", "AF")
RECORD_FS = 500.0
SPLIT_NAMES = ("train", "val", "test")
#: the parameters that determine the data set (a change means a rebuild)
DATA_KEYS = ("seed", "mesh_edge_mm", "n_rec", "electrode_offset_mm", "n_sr", "n_af", "dt_ms",
             "transient_s", "record_s", "fs", "T", "hop_s", "test_fraction", "val_fraction")
#: DF search bands (Hz). SR unipolar EGMs carry most power on harmonics of the pacing rate, so SR
#: DF is searched where the pacing rate can lie, after Botteron-Smith preprocessing at 500 Hz
#: (shared/MEASURED.md); AF DF uses the plain Welch PSD in the physiological AF band.
DF_BAND = {"SR": (0.5, 3.0), "AF": (3.0, 15.0)}
DF_METHOD = {"SR": "botteron", "AF": "plain"}


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

    def maps(self) -> dict[str, NDArray]:
        """First activation times (n_sims, n_nodes) and voltage snapshots per simulation."""
        return dict(np.load(self.path / "maps.npz"))

    @property
    def simulations(self) -> list[dict[str, Any]]:
        return self.manifest["simulations"]


ARRAYS = ("egm", "label", "sim_id", "start_s", "split", "df_hz", "egm_500hz_examples")


def load_dataset(run_dir: str | Path, verify: bool = True) -> Dataset:
    """Load ``<run_dir>/data``; with ``verify`` every file's SHA-256 is checked.

    Raises DataError naming the file when one is missing or its checksum differs, and telling
    which notebook rebuilds the data.
    """
    path = Path(run_dir) / "data"
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise DataError(f"{mpath} is missing: run notebooks/01_data.ipynb for this profile first")
    manifest = load_json(mpath)
    for name, info in manifest["files"].items():
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


def _simulate_rhythm(sim: Simulator, rhythm: str, n: int, seed_seq: np.random.SeedSequence,
                     first_id: int, p: Mapping[str, Any], leads: dict[str, NDArray],
                     snapshot_ms: list[float], bar: Any) -> tuple[list[SimulationResult], int]:
    """Simulate ``n`` kept simulations of one rhythm in batches; AF runs that die are replaced by
    fresh draws. Returns the batch results (dead columns dropped) and the number replaced."""
    results, kept, replaced, next_id = [], 0, 0, first_id
    attempts = 0
    while kept < n:
        attempts += 1
        if attempts > 20:
            raise RuntimeError(f"could not obtain {n} sustained {rhythm} simulations")
        todo = min(p["batch"], n - kept)
        specs = draw_specs(rhythm, todo, seed_seq.spawn(1)[0], sim.geometry, first_id=next_id)
        next_id += todo
        res = sim.run(specs, p["record_s"] * 1000.0, transient_ms=p["transient_s"] * 1000.0,
                      leads=leads, snapshot_ms=snapshot_ms, show_progress=False)
        keep = res.alive if rhythm == "AF" else np.ones(len(specs), bool)
        replaced += int((~keep).sum())
        results.append(_select(res, keep))
        kept += int(keep.sum())
        bar.update(int(keep.sum()))
    return results, replaced


def _select(res: SimulationResult, keep: NDArray[np.bool_]) -> SimulationResult:
    idx = np.flatnonzero(keep)
    return SimulationResult(
        specs=[res.specs[i] for i in idx], t_ms=res.t_ms,
        traces={k: v[idx] for k, v in res.traces.items()},
        activation_count=res.activation_count[idx],
        first_activation_ms=res.first_activation_ms[idx], snapshots=res.snapshots[idx],
        snapshot_ms=res.snapshot_ms, wavefronts=res.wavefronts[idx], alive=res.alive[idx])


def _params_match(manifest: Mapping[str, Any], p: Mapping[str, Any]) -> bool:
    old = manifest.get("params", {})
    return all(old.get(k) == p[k] for k in DATA_KEYS)


def build_egm_dataset(p: Mapping[str, Any], run_dir: str | Path, *, rebuild: bool = False,
                      show_progress: bool = True) -> Dataset:
    """Simulate the SR and AF data set of parameters ``p`` (see :mod:`egmlib.params`, notebook
    01_data) into ``<run_dir>/data`` and return it loaded.

    An existing complete data set made with the same parameters is loaded instead, unless
    ``rebuild``. The folder is written under a temporary name and renamed when complete, so an
    interrupted build leaves no partial data set behind.
    """
    run_dir = Path(run_dir)
    target = run_dir / "data"
    if not rebuild and (target / "manifest.json").exists():
        try:
            ds = load_dataset(run_dir)
            if _params_match(ds.manifest, p):
                return ds
        except DataError:
            pass

    geom = biatrial_geometry(p["mesh_edge_mm"])
    sites = recording_sites(geom, p["n_rec"], p["electrode_offset_mm"])
    lead = infinite_medium_lead_field(sites.electrodes, geom.mesh.vertices)
    sim = Simulator(geom, dt=p["dt_ms"])
    ss_sr, ss_af, ss_split = np.random.SeedSequence(p["seed"]).spawn(3)
    snapshot_ms = [float(t) for t in np.linspace(0, min(400.0, p["record_s"] * 1000 - 2), 5)]

    results: list[SimulationResult] = []
    replaced = {}
    total = p["n_sr"] + p["n_af"]
    with progress(range(total), desc="simulations", total=total,
                  disable=not show_progress) as bar:
        for rhythm, n, ss, first in (("SR", p["n_sr"], ss_sr, 0),
                                     ("AF", p["n_af"], ss_af, 100_000)):
            res, replaced[rhythm] = _simulate_rhythm(sim, rhythm, n, ss, first, p,
                                                     {"egm": lead}, snapshot_ms, bar)
            results += res

    specs: list[SimulationSpec] = [s for r in results for s in r.specs]
    egm500 = np.concatenate([r.traces["egm"] for r in results])  # (S, n_rec, n)
    first_act = np.concatenate([r.first_activation_ms for r in results])
    snaps = np.concatenate([r.snapshots for r in results])
    fronts = [r.wavefronts for r in results]
    count = np.concatenate([r.activation_count for r in results])

    # windows at fs
    w, start = windows(egm500, RECORD_FS, p["fs"], p["T"], p["hop_s"])  # (n_w, S, n_rec, T)
    n_w, n_sims = w.shape[0], w.shape[1]
    egm = np.ascontiguousarray(w.transpose(1, 0, 3, 2).reshape(n_sims * n_w, p["T"],
                                                               p["n_rec"]))
    sim_ids = np.array([s.sim_id for s in specs], np.int32)
    labels = np.array([LABELS.index(s.rhythm) for s in specs], np.int8)
    win_sim = np.repeat(sim_ids, n_w)
    win_label = np.repeat(labels, n_w)
    win_start = np.tile(start, n_sims).astype(np.float32)
    split = split_by_simulation(win_sim, win_label, p["test_fraction"], p["val_fraction"],
                                int(ss_split.generate_state(1)[0]))

    # per-simulation measurements at 500 Hz
    df = np.zeros((n_sims, p["n_rec"]), np.float32)
    for rhythm in LABELS:
        sel = labels == LABELS.index(rhythm)
        if sel.any():
            df[sel] = metrics.dominant_frequency(egm500[sel].transpose(0, 2, 1), RECORD_FS,
                                                 band=DF_BAND[rhythm],
                                                 method=DF_METHOD[rhythm])
    sims_info = []
    offset = 0
    for r in results:
        for j, spec in enumerate(r.specs):
            k = offset + j
            info: dict[str, Any] = {"spec": spec.to_dict(),
                                    "df_median_hz": float(np.median(df[k])),
                                    "wavefronts_mean": float(r.wavefronts[j].mean())
                                    if r.wavefronts.shape[1] else 0.0,
                                    "activated_fraction": float((count[k] > 0).mean())}
            if spec.rhythm == "SR":
                cv = conduction_velocity(geom, first_act[k])
                info["cv_median_m_s"] = float(np.nanmedian(cv))
                info["pacing_hz"] = 1000.0 / spec.cycle_length_ms
            sims_info.append(info)
        offset += len(r.specs)
    del fronts

    example_sites = np.linspace(0, p["n_rec"] - 1, 4).round().astype(int)
    arrays = {
        "egm": egm, "label": win_label, "sim_id": win_sim, "start_s": win_start,
        "split": split, "df_hz": df,
        "egm_500hz_examples": np.ascontiguousarray(egm500[:, example_sites, :]),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".data.tmp-", dir=run_dir))
    try:
        files = {}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        np.savez(tmp / "geometry.npz", vertices=geom.mesh.vertices, faces=geom.mesh.faces,
                 region=geom.region, links=geom.links, pacing=geom.pacing,
                 site_vertex=sites.vertex, electrodes=sites.electrodes,
                 offset_mm=sites.offset_mm, example_sites=example_sites)
        np.savez(tmp / "maps.npz", first_activation_ms=first_act, snapshots=snaps,
                 snapshot_ms=np.asarray(snapshot_ms))
        for f in sorted(tmp.iterdir()):
            entry: dict[str, Any] = {"sha256": sha256_file(f)}
            if f.suffix == ".npy":
                a = np.load(f, mmap_mode="r")
                entry.update(shape=list(a.shape), dtype=str(a.dtype))
            files[f.name] = entry
        counts = {f"{part}_{rhythm}": int(((split == i) & (win_label == j)).sum())
                  for i, part in enumerate(SPLIT_NAMES) for j, rhythm in enumerate(LABELS)}
        manifest = {
            "format": "egmlib-dataset-1",
            "labels": list(LABELS),
            "split_names": list(SPLIT_NAMES),
            "record_fs": RECORD_FS,
            "fs": p["fs"],
            "T": p["T"],
            "n_rec": p["n_rec"],
            "units": "mV",
            "df_method": {k: {"method": DF_METHOD[k], "band_hz": DF_BAND[k]} for k in LABELS},
            "files": files,
            "counts": counts,
            "replaced_terminated_af": replaced.get("AF", 0),
            "n_nodes": geom.n_vertices,
            "simulations": sims_info,
            "params": {k: p[k] for k in DATA_KEYS},
            "provenance": provenance({k: p[k] for k in DATA_KEYS}, p["seed"]),
        }
        save_json(tmp / "manifest.json", manifest)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_dataset(run_dir, verify=False)


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, replacing an old one with two renames."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
