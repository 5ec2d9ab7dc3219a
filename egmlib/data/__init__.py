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
``bspm.npy``           (n_windows, n_torsos, T, 64) float32, noise-free BSPM windows of every
                       torso on its 64-electrode subset, referenced to the mean over those leads
``transfer.npy``       (n_torsos, 64, n_rec) float64, potential-to-potential transfer matrices
                       from the recording sites to the 64 electrodes, with the same reference
``torso_split.npy``    (n_torsos,) int8, 0 train, 2 test (the last ``test_torsos`` torsos)
``bspm_examples.npy``  (2, T, n_vertices of torso 0) float32, the first SR and AF window on the
                       whole torso 0 surface (maps)
``geometry.npz``       vertices, faces, region, links, pacing, site vertices, electrodes
``torsos.npz``         per torso: vertices, faces, 64-electrode subset
``maps.npz``           per simulation: activation time per node (SR: since its stimulus; AF:
                       first activation in the recording), voltage snapshots

BSPMs come from the same membrane-current sources as the EGMs, through the torso-only BEM of
:func:`egmlib.physics.forward.torso_lead_field` (one per torso). To record every torso at every
time step cheaply, the stacked lead fields L (all torso vertices x tissue nodes) are compressed
once by a thin SVD of L, L ~ W R with R of rank r
(:func:`egmlib.physics.forward.compress_lead_field`: the cut lies in the widest gap of the
spectrum between 1e-8 and 1e-7 of the largest singular value, so the spectral-norm error is below
1e-7 of ||L|| and the rank does not move with rounding; the manifest stores ``lead_rank``, the
gap, its margin and the relative error): the simulator records R q (r values per step) and the
BSPM of torso t is W_t R q. The separate Barr-type matrices in ``transfer.npy`` (another
discretisation, :func:`egmlib.physics.forward.transfer_matrix`) map EGMs to BSPMs for the
Tikhonov inverse and for synthetic EGMs; their agreement with the source-based BSPMs is measured
at build time and stored in the manifest.

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

from egmlib.core import metrics
from egmlib.core.params import ParameterError
from egmlib.core.runs import load_json, progress, provenance, save_json, sha256_file
from egmlib.physics.electrograms import EGM_SCALE, infinite_medium_lead_field
from egmlib.physics.forward import (
    LAMBDA_RULES,
    add_noise,
    compress_lead_field,
    heart_surface,
    lead_rank,
    reference_mean,
    svd,
    tikhonov_solution,
    tikhonov_windows,
    torso_lead_field,
    transfer_matrix,
)
from egmlib.physics.geometry import (
    AtrialGeometry,
    RecordingSites,
    TriMesh,
    biatrial_geometry,
    recording_sites,
)
from egmlib.physics.simulate import (
    SimulationResult,
    SimulationSpec,
    Simulator,
    conduction_velocity,
    draw_specs,
)
from egmlib.physics.torso import Torso, make_torsos

__all__ = [
    "LABELS",
    "DataError",
    "Dataset",
    "build_dataset",
    "compress_lead_field",
    "count_table",
    "formulation_agreement",
    "load_dataset",
    "noisy_bspm",
    "physics_summary",
    "split_by_simulation",
    "sr_activation_map",
    "tikhonov_evaluation",
    "windows",
]

LABELS = ("SR", "AF")
#: on-disk format; a data set of another format is rebuilt rather than loaded
FORMAT = "egmlib-dataset-3"  # 3: SVD lead-field compression cut in a gap, AF DF band 3-12 Hz
RECORD_FS = 500.0
SPLIT_NAMES = ("train", "val", "test")
#: the parameters that determine the data set (a change means a rebuild)
#: (``batch`` is among them: simulation parameters are drawn batch by batch from the seed)
DATA_KEYS = ("seed", "mesh_edge_mm", "n_rec", "electrode_offset_mm", "n_sr", "n_af", "dt_ms",
             "transient_s", "record_s", "batch", "fs", "T", "hop_s", "n_torsos", "test_torsos",
             "torso_edge_mm", "test_fraction", "val_fraction")


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


ARRAYS = ("egm", "label", "sim_id", "start_s", "split", "df_hz", "egm_500hz_examples", "bspm",
          "transfer", "torso_split", "bspm_examples")


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
    return manifest.get("format") == FORMAT and all(old.get(k) == p[k] for k in DATA_KEYS)


def build_dataset(p: Mapping[str, Any], run_dir: str | Path, *, rebuild: bool = False,
                  show_progress: bool = True) -> Dataset:
    """Simulate the SR and AF data set of parameters ``p`` (see :mod:`egmlib.core.params`, notebook
    01_data), EGMs and BSPMs, into ``<run_dir>/data`` and return it loaded.

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

    ss_sr, ss_af, ss_split, ss_torso = np.random.SeedSequence(p["seed"]).spawn(4)
    geom = biatrial_geometry(p["mesh_edge_mm"])
    sites = recording_sites(geom, p["n_rec"], p["electrode_offset_mm"])
    per_region = np.bincount(geom.region[sites.vertex], minlength=len(LABELS))
    if per_region.min() < 4:
        raise ParameterError(f"parameter 'n_rec': got {p['n_rec']}; each atrium needs at least 4 "
                             f"recording sites to span a closed heart surface (got "
                             f"{per_region.tolist()} for RA, LA): increase n_rec")
    lead = infinite_medium_lead_field(sites.electrodes, geom.mesh.vertices)

    # torsos: source-based lead fields (compressed) and the Barr-type transfer matrices
    torsos = make_torsos(p["n_torsos"], int(ss_torso.generate_state(1)[0]),
                         edge_mm=p["torso_edge_mm"])
    torso_leads = [EGM_SCALE * torso_lead_field(t, geom.mesh.vertices) for t in torsos]
    w_all, basis, lead_sv = compress_lead_field(np.concatenate(torso_leads))
    del torso_leads
    bounds = np.cumsum([0] + [t.mesh.n_vertices for t in torsos])
    w_torso = [w_all[bounds[i]:bounds[i + 1]] for i in range(len(torsos))]
    subsets = [t.subset_vertices for t in torsos]
    heart = heart_surface(sites.electrodes, geom.region[sites.vertex])
    transfer = np.stack([
        reference_mean(transfer_matrix(heart.vertices, heart.faces, t.mesh.vertices,
                                       t.mesh.faces)[sub])
        for t, sub in zip(torsos, subsets)])

    sim = Simulator(geom, dt=p["dt_ms"])
    snapshot_ms = [float(t) for t in np.linspace(0, min(400.0, p["record_s"] * 1000 - 2), 5)]
    results: list[SimulationResult] = []
    replaced = {}
    total = p["n_sr"] + p["n_af"]
    with progress(range(total), desc="simulations", total=total,
                  disable=not show_progress) as bar:
        for rhythm, n, ss, first in (("SR", p["n_sr"], ss_sr, 0),
                                     ("AF", p["n_af"], ss_af, 100_000)):
            res, replaced[rhythm] = _simulate_rhythm(
                sim, rhythm, n, ss, first, p, {"egm": lead, "torso": basis}, snapshot_ms, bar)
            results += res

    specs: list[SimulationSpec] = [s for r in results for s in r.specs]
    egm500 = np.concatenate([r.traces["egm"] for r in results])  # (S, n_rec, n)
    coef500 = np.concatenate([r.traces["torso"] for r in results])  # (S, r, n)
    first_act = np.concatenate([r.first_activation_ms for r in results])
    snaps = np.concatenate([r.snapshots for r in results])
    count = np.concatenate([r.activation_count for r in results])

    # windows at fs
    w, start = windows(egm500, RECORD_FS, p["fs"], p["T"], p["hop_s"])  # (n_w, S, n_rec, T)
    wc, _ = windows(coef500, RECORD_FS, p["fs"], p["T"], p["hop_s"])  # (n_w, S, r, T)
    n_w, n_sims = w.shape[0], w.shape[1]
    egm = np.ascontiguousarray(w.transpose(1, 0, 3, 2).reshape(n_sims * n_w, p["T"],
                                                               p["n_rec"]))
    coef = wc.transpose(1, 0, 3, 2).reshape(n_sims * n_w, p["T"], -1).astype(np.float64)
    # one 2-D product per torso: numpy's stacked (windows, T, r) @ (r, 64) took 0.3-1.7 s a
    # torso on the 2-core machine, the same product on (windows * T, r) 0.2-0.4 s
    flat = coef.reshape(-1, coef.shape[-1])
    bspm = np.stack([reference_mean((flat @ wt[sub].T).reshape(*coef.shape[:2], -1), axis=-1)
                     for wt, sub in zip(w_torso, subsets)], axis=1).astype(np.float32)
    sim_ids = np.array([s.sim_id for s in specs], np.int32)
    labels = np.array([LABELS.index(s.rhythm) for s in specs], np.int8)
    win_sim = np.repeat(sim_ids, n_w)
    win_label = np.repeat(labels, n_w)
    win_start = np.tile(start, n_sims).astype(np.float32)
    split = split_by_simulation(win_sim, win_label, p["test_fraction"], p["val_fraction"],
                                int(ss_split.generate_state(1)[0]))
    torso_split = np.zeros(len(torsos), np.int8)
    torso_split[len(torsos) - p["test_torsos"]:] = 2
    examples = [int(np.flatnonzero(win_label == j)[0]) for j in range(len(LABELS))]
    bspm_examples = np.stack([reference_mean(coef[i] @ w_torso[0].T, axis=-1)
                              for i in examples]).astype(np.float32)

    # per-simulation measurements at 500 Hz
    df = np.zeros((n_sims, p["n_rec"]), np.float32)
    for rhythm in LABELS:
        sel = labels == LABELS.index(rhythm)
        if sel.any():
            df[sel] = metrics.rhythm_df(egm500[sel].transpose(0, 2, 1), RECORD_FS, rhythm)
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
                first_act[k] = sr_activation_map(first_act[k], spec.cycle_length_ms,
                                                 p["transient_s"] * 1000.0)
                cv = conduction_velocity(geom, first_act[k])
                info["cv_median_m_s"] = float(np.nanmedian(cv))
                info["pacing_hz"] = 1000.0 / spec.cycle_length_ms
            sims_info.append(info)
        offset += len(r.specs)

    example_sites = np.linspace(0, p["n_rec"] - 1, 4).round().astype(int)
    arrays = {
        "egm": egm, "label": win_label, "sim_id": win_sim, "start_s": win_start,
        "split": split, "df_hz": df,
        "egm_500hz_examples": np.ascontiguousarray(egm500[:, example_sites, :]),
        "bspm": bspm, "transfer": transfer, "torso_split": torso_split,
        "bspm_examples": bspm_examples,
    }
    agreement = formulation_agreement(egm, bspm, transfer)
    _, gap, margin = lead_rank(lead_sv)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".data.tmp-", dir=run_dir))
    try:
        files = {}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        np.savez(tmp / "geometry.npz", vertices=geom.mesh.vertices, faces=geom.mesh.faces,
                 region=geom.region, links=geom.links, pacing=geom.pacing,
                 site_vertex=sites.vertex, electrodes=sites.electrodes,
                 offset_mm=sites.offset_mm, example_sites=example_sites,
                 heart_vertices=heart.vertices, heart_faces=heart.faces)
        np.savez(tmp / "torsos.npz", **{f"{k}_{i}": v for i, t in enumerate(torsos)
                                        for k, v in (("vertices", t.mesh.vertices),
                                                     ("faces", t.mesh.faces),
                                                     ("subset", subsets[i]))})
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
            "format": FORMAT,
            "labels": list(LABELS),
            "split_names": list(SPLIT_NAMES),
            "record_fs": RECORD_FS,
            "fs": p["fs"],
            "T": p["T"],
            "n_rec": p["n_rec"],
            "units": "mV",
            "df_method": {k: metrics.df_settings(k, RECORD_FS).as_dict() for k in LABELS},
            "files": files,
            "counts": counts,
            "replaced_terminated_af": replaced.get("AF", 0),
            "n_nodes": geom.n_vertices,
            "torsos": [{"name": t.name, "n_vertices": t.mesh.n_vertices,
                        "split": SPLIT_NAMES[int(torso_split[i])], "parameters": t.parameters}
                       for i, t in enumerate(torsos)],
            "lead_rank": int(basis.shape[0]),
            "lead_rank_gap_decades": gap,
            "lead_rank_margin_decades": margin,
            "lead_relative_error": float(lead_sv[basis.shape[0]] / lead_sv[0])
            if basis.shape[0] < len(lead_sv) else 0.0,
            # the numba and torch simulators agree to float32 rounding, which chaotic AF
            # amplifies: the same parameters give the same arrays with the same backend
            "simulator_backend": sim.backend,
            "formulation_agreement": agreement,
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


def sr_activation_map(first_activation_ms: NDArray, cycle_length_ms: float,
                      transient_ms: float) -> NDArray:
    """SR activation times relative to the stimulus that caused them.

    The simulator keeps each node's first activation after the transient; nodes still reached by
    the beat paced before the transient ended come first. Stimuli fall at multiples of the cycle
    length, so taking the time since the first stimulus after the transient modulo the cycle
    length gives every node's delay from its own stimulus (valid while a beat activates the
    atria in less than one cycle length, as it does here: about 100-160 ms).
    """
    t_stim = np.ceil(transient_ms / cycle_length_ms - 1e-9) * cycle_length_ms - transient_ms
    return np.mod(np.asarray(first_activation_ms) - t_stim, cycle_length_ms)


def formulation_agreement(egm: NDArray, bspm: NDArray, transfer: NDArray,
                          n_windows: int = 64) -> dict[str, float]:
    """How well the Barr-type transfer matrices reproduce the source-based BSPMs.

    For up to ``n_windows`` windows spread over the data set and every torso: the correlation
    over (time, leads) between ``EGM @ A.T`` and the stored BSPM, and the relative error
    ||difference|| / ||BSPM||; medians and worst cases are returned.
    """
    idx = np.unique(np.linspace(0, len(egm) - 1, min(n_windows, len(egm))).round().astype(int))
    pred = np.einsum("wtc,kec->wkte", np.asarray(egm[idx], float), transfer)
    ref = np.asarray(bspm[idx], float)
    a = (pred - pred.mean(axis=(2, 3), keepdims=True)).reshape(len(idx), len(transfer), -1)
    b = (ref - ref.mean(axis=(2, 3), keepdims=True)).reshape(len(idx), len(transfer), -1)
    corr = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    rel = np.linalg.norm((pred - ref).reshape(*corr.shape, -1), axis=-1) / np.linalg.norm(
        ref.reshape(*corr.shape, -1), axis=-1)
    return {"corr_median": float(np.median(corr)), "corr_min": float(corr.min()),
            "rel_error_median": float(np.median(rel)), "rel_error_max": float(rel.max())}


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, replacing an old one with two renames."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def physics_summary(ds: Dataset) -> dict[str, Any]:
    """The checks of the simulated physics, per rhythm, from the manifest's per-simulation data.

    SR: conduction velocity (median per simulation, m/s), fraction of tissue activated, and the
    fraction of simulations whose median site DF equals the pacing rate within 0.1 Hz.
    AF: DF (median over sites per simulation), mean number of wavefronts, terminated runs that
    were replaced.
    """
    sims = ds.simulations
    sr = [s for s in sims if s["spec"]["rhythm"] == "SR"]
    af = [s for s in sims if s["spec"]["rhythm"] == "AF"]
    out: dict[str, Any] = {}
    if sr:
        cv = np.array([s["cv_median_m_s"] for s in sr])
        df_err = np.array([abs(s["df_median_hz"] - s["pacing_hz"]) for s in sr])
        out["SR"] = {"n_sims": len(sr), "cv_min_m_s": float(cv.min()),
                     "cv_max_m_s": float(cv.max()),
                     "activated_min": float(min(s["activated_fraction"] for s in sr)),
                     "df_equals_pacing": float((df_err <= 0.1).mean())}
    if af:
        df = np.array([s["df_median_hz"] for s in af])
        wf = np.array([s["wavefronts_mean"] for s in af])
        out["AF"] = {"n_sims": len(af), "df_min_hz": float(df.min()),
                     "df_max_hz": float(df.max()), "wavefronts_min": float(wf.min()),
                     "wavefronts_max": float(wf.max()),
                     "replaced_terminated": int(ds.manifest["replaced_terminated_af"])}
    return out


def count_table(ds: Dataset) -> str:
    """Windows per split part and rhythm, and simulations per rhythm, as a text table."""
    c = ds.manifest["counts"]
    lines = [f"{'part':<8}" + "".join(f"{r:>8}" for r in LABELS)]
    for part in SPLIT_NAMES:
        lines.append(f"{part:<8}" + "".join(f"{c[f'{part}_{r}']:>8}" for r in LABELS))
    n_sims = [sum(s["spec"]["rhythm"] == r for s in ds.simulations) for r in LABELS]
    lines.append(f"{'sims':<8}" + "".join(f"{n:>8}" for n in n_sims))
    return "\n".join(lines)


def noisy_bspm(ds: Dataset, windows_idx: NDArray, torso: int, snr_db: float,
               seed: int) -> NDArray[np.float64]:
    """BSPM windows (n, T, 64) of torso ``torso`` with white Gaussian noise at ``snr_db`` per
    window (same seed, same noise), re-referenced to the mean over the 64 leads."""
    rng = np.random.default_rng([seed, torso])
    b = np.asarray(ds.bspm[np.asarray(windows_idx), torso], float)
    return reference_mean(add_noise(b, snr_db, rng, axis=(1, 2)), axis=-1)


def tikhonov_evaluation(ds: Dataset, snr_db: float, seed: int, part: str = "test",
                        max_windows: int = 40, method: str = "lcurve") -> dict[str, Any]:
    """Zero-order Tikhonov reconstruction of the EGMs of ``part`` from noisy BSPMs, per rhythm.

    Every window of the part (at most ``max_windows`` per rhythm, evenly spread) is reconstructed
    from the BSPM of every test torso (every torso when none is held out), with lambda chosen per
    window at the L-curve corner (or by GCV). Metrics come from
    :func:`egmlib.core.metrics.compare`
    (per site, then mean and std).

    Returns ``{rhythm: {"corr_mean", "corr_std", "rmse_mean", ..., "lambda_median", "n"}}`` and,
    under ``"example"``, one reconstructed window per rhythm with its truth and L-curve.
    """
    if method not in LAMBDA_RULES:
        raise ValueError(f"method must be 'lcurve' or 'gcv'; got {method!r}")
    torsos = np.flatnonzero(ds.torso_split == 2)
    if len(torsos) == 0:
        torsos = np.arange(len(ds.torso_split))
    out: dict[str, Any] = {"example": {}}
    for rhythm in LABELS:
        idx = np.flatnonzero(ds.part(part, rhythm))
        if len(idx) == 0:
            continue
        idx = idx[np.unique(np.linspace(0, len(idx) - 1, min(max_windows, len(idx))
                                        ).round().astype(int))]
        truth = np.asarray(ds.egm[idx], float)
        recon, lams = [], []
        for t in torsos:
            dec = svd(ds.transfer[t])
            b = noisy_bspm(ds, idx, int(t), snr_db, seed)
            rec, lam = tikhonov_windows(dec, b, method)
            recon.append(rec)
            lams.append(lam)
            if t == torsos[0]:
                sol = tikhonov_solution(dec, b[0].T, method)
                out["example"][rhythm] = {"window": int(idx[0]), "torso": int(t),
                                          "truth": truth[0], "recon": sol.x.T,
                                          "lambda": sol.lam, "curve": sol.curve}
        res = metrics.compare(np.concatenate([truth] * len(torsos)), np.concatenate(recon))
        res.update(lambda_median=float(np.median(np.concatenate(lams))),
                   n=len(torsos) * len(idx))
        out[rhythm] = res
    return out
