"""Building the data set: one function per stage, with plain inputs and outputs, and
:func:`build_dataset`, which runs them in order and saves the result.

The stages, in order (each can be run and tested alone):

1. :func:`spawn_seeds`: the independent seed streams of a build, from the run's seed;
2. :func:`make_anatomy`: atrial geometry (``anatomy``: :mod:`egmlib.physics.anatomy`),
   recording sites, the EGM lead field;
3. :func:`make_torso_models`: torsos, their 64-electrode subsets, the compressed source-based
   lead field, the closed heart surface and the Barr-type transfer matrices;
4. :func:`simulate_all`: the SR and AF simulations (EGMs and lead-field coefficients at 500 Hz);
5. :func:`make_windows`: EGM and coefficient windows at ``fs`` with their labels;
6. :func:`make_bspms`: noise-free BSPM windows of every torso, and the two whole-torso examples;
7. :func:`measure`: per-simulation DF, physics summaries and activation maps;
8. :func:`assign_splits`: train/validation/test by simulation, train/test by torso;
9. :func:`~egmlib.data.store.save_dataset`: the atomic write with its manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from egmlib.core import metrics
from egmlib.core.params import DataConfig, ParameterError
from egmlib.core.runs import progress, provenance
from egmlib.data import store
from egmlib.data.analysis import formulation_agreement, sr_activation_map
from egmlib.data.store import FORMAT, LABELS, RECORD_FS, SPLIT_NAMES, Dataset
from egmlib.physics.anatomy import anatomy_digest, load_anatomy
from egmlib.physics.electrograms import EGM_SCALE, infinite_medium_lead_field
from egmlib.physics.forward import (
    compress_lead_field,
    heart_surface,
    interpolation_matrix,
    lead_rank,
    reference_mean,
    torso_lead_field,
    transfer_matrix,
)
from egmlib.physics.geometry import (
    AtrialGeometry,
    RecordingSites,
    TriMesh,
    recording_sites,
)
from egmlib.physics.remesh import wrap_surface
from egmlib.physics.simulate import (
    PRIORS,
    SimulationResult,
    SimulationSpec,
    Simulator,
    conduction_velocity,
    draw_specs,
    numba_available,
)
from egmlib.physics.torso import Torso, make_torsos

#: the parameters that determine the data set (a change means a rebuild): the run's seed and the
#: key fields of :class:`~egmlib.core.params.DataConfig` (``batch`` is among them: simulation
#: parameters are drawn batch by batch from the seed)
DATA_KEYS = ("seed", *DataConfig.key_names())

#: sites whose 500 Hz EGMs are kept for figures (``egm_500hz_examples.npy``)
N_EXAMPLE_SITES = 4
#: the fewest recording sites per atrium that span a closed heart surface
MIN_SITES_PER_ATRIUM = 4
#: first simulation id of each rhythm
FIRST_SIM_ID = {"SR": 0, "AF": 100_000}
#: batches one rhythm may take before the build gives up (terminated AF runs are redrawn)
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Seeds:
    """The independent seed streams of one build.

    ``sr`` and ``af`` seed the simulation parameters (spawned batch by batch; :func:`simulate_all`
    spawns from fresh copies, so a ``Seeds`` can be used again), ``split`` the split of the
    simulations, ``torso`` the torso variants.
    """

    sr: np.random.SeedSequence
    af: np.random.SeedSequence
    split: int
    torso: int


def spawn_seeds(seed: int) -> Seeds:
    """The four seed streams of a build from the run's ``seed``."""
    ss_sr, ss_af, ss_split, ss_torso = np.random.SeedSequence(seed).spawn(4)
    return Seeds(sr=ss_sr, af=ss_af, split=int(ss_split.generate_state(1)[0]),
                 torso=int(ss_torso.generate_state(1)[0]))


@dataclass(frozen=True)
class Anatomy:
    """The atria and what records them.

    Attributes:
        geometry: the bi-atrial tissue mesh with regions, links and pacing sites.
        sites: the recording sites (tissue vertices) and their electrodes.
        egm_lead: (n_rec, n_nodes) infinite-medium lead field from tissue nodes to electrodes.
        example_sites: (4,) indices into the sites whose 500 Hz EGMs are kept for figures.
    """

    geometry: AtrialGeometry
    sites: RecordingSites
    egm_lead: NDArray[np.float64]
    example_sites: NDArray[np.int64]


def make_anatomy(cfg: DataConfig) -> Anatomy:
    """Geometry (``anatomy`` at ``mesh_edge_mm``), ``n_rec`` recording sites
    ``electrode_offset_mm`` above the tissue, and the EGM lead field.

    Raises :class:`~egmlib.core.params.ParameterError` naming ``n_rec`` when an atrium gets fewer
    than four sites (the heart surface of :func:`make_torso_models` could not be closed).
    """
    geom = load_anatomy(cfg.anatomy, cfg.mesh_edge_mm)
    sites = recording_sites(geom, cfg.n_rec, cfg.electrode_offset_mm, cfg.site_order)
    per_region = np.bincount(geom.region[sites.vertex], minlength=len(LABELS))
    if per_region.min() < MIN_SITES_PER_ATRIUM:
        raise ParameterError(f"parameter 'n_rec': got {cfg.n_rec}; each atrium needs at least "
                             f"{MIN_SITES_PER_ATRIUM} recording sites to span a closed heart "
                             f"surface (got {per_region.tolist()} for RA, LA): increase n_rec")
    lead = infinite_medium_lead_field(sites.electrodes, geom.mesh.vertices)
    example_sites = np.linspace(0, cfg.n_rec - 1, N_EXAMPLE_SITES).round().astype(int)
    return Anatomy(geometry=geom, sites=sites, egm_lead=lead, example_sites=example_sites)


@dataclass(frozen=True)
class TorsoModels:
    """The torsos and the two forward models to them.

    Attributes:
        torsos: the torso variants.
        subsets: per torso, the vertex indices of its 64 electrodes.
        lead_weights: per torso, W_t (n_vertices_t, r): the torso's rows of the compressed
            source-based lead field L ~ W R.
        lead_basis: R (r, n_nodes), orthonormal rows; the simulator records R q.
        lead_singular_values: all singular values of the stacked lead field (descending).
        heart: the closed heart surface of the Barr transfer (:func:`barr_heart`).
        transfer: (n_torsos, 64, n_rec) Barr-type transfer matrices, referenced to the mean
            over the 64 leads.
        heart_method: ``"hull"`` (the heart surface's vertices are the electrodes) or ``"wrap"``
            (a surface around the atria, electrode potentials interpolated onto it).
    """

    torsos: list[Torso]
    subsets: list[NDArray[np.int64]]
    lead_weights: list[NDArray[np.float64]]
    lead_basis: NDArray[np.float64]
    lead_singular_values: NDArray[np.float64]
    heart: TriMesh
    transfer: NDArray[np.float64]
    heart_method: str = "hull"


#: Edge (mm) of the wrapped heart surface, and its distance from the tissue beyond the electrodes
WRAP_EDGE_MM, WRAP_CLEARANCE_MM = 5.0, 2.5


def barr_heart(anatomy: Anatomy) -> tuple[TriMesh, NDArray[np.float64] | None, str]:
    """The closed heart surface of the Barr transfer, the interpolation from the electrodes to
    its vertices (None when they are the electrodes) and the method's name.

    ``"hull"``: each atrium's electrodes closed by their convex hull
    (:func:`~egmlib.physics.forward.heart_surface`), possible when every electrode is a hull
    vertex and the two hulls are disjoint (the idealised atria). ``"wrap"`` otherwise (a real
    anatomy): one surface around both atria ``electrode_offset + WRAP_CLEARANCE_MM`` from the
    tissue (:func:`~egmlib.physics.remesh.wrap_surface`, edge ``WRAP_EDGE_MM``), its vertex
    potentials interpolated from the four nearest electrodes
    (:func:`~egmlib.physics.forward.interpolation_matrix`).
    """
    geom, sites = anatomy.geometry, anatomy.sites
    try:
        return heart_surface(sites.electrodes, geom.region[sites.vertex]), None, "hull"
    except ValueError:
        heart = wrap_surface(geom.mesh, sites.offset_mm + WRAP_CLEARANCE_MM, WRAP_EDGE_MM)
        return heart, interpolation_matrix(heart.vertices, sites.electrodes), "wrap"


def make_torso_models(anatomy: Anatomy, cfg: DataConfig, seed: int) -> TorsoModels:
    """``n_torsos`` torsos (mesh edge ``torso_edge_mm``) drawn from ``seed``, their source-based
    lead fields compressed together (:func:`egmlib.physics.forward.compress_lead_field`), and
    the Barr-type transfer matrices from the recording sites."""
    geom = anatomy.geometry
    torsos = make_torsos(cfg.n_torsos, seed, edge_mm=cfg.torso_edge_mm)
    torso_leads = [EGM_SCALE * torso_lead_field(t, geom.mesh.vertices) for t in torsos]
    w_all, basis, lead_sv = compress_lead_field(np.concatenate(torso_leads))
    del torso_leads
    bounds = np.cumsum([0] + [t.mesh.n_vertices for t in torsos])
    weights = [w_all[bounds[i]:bounds[i + 1]] for i in range(len(torsos))]
    subsets = [t.subset_vertices for t in torsos]
    heart, interp, method = barr_heart(anatomy)
    transfer = []
    for t, sub in zip(torsos, subsets):
        a = transfer_matrix(heart.vertices, heart.faces, t.mesh.vertices, t.mesh.faces)[sub]
        transfer.append(reference_mean(a if interp is None else a @ interp))
    return TorsoModels(torsos=torsos, subsets=subsets, lead_weights=weights, lead_basis=basis,
                       lead_singular_values=lead_sv, heart=heart, transfer=np.stack(transfer),
                       heart_method=method)


@dataclass(frozen=True)
class Simulations:
    """The kept simulations, SR first, at :data:`~egmlib.data.store.RECORD_FS`.

    Attributes:
        specs: the parameters of each simulation (S of them).
        egm: (S, n_rec, n_samples) EGMs (mV).
        lead_coef: (S, r, n_samples) compressed lead-field coefficients R q.
        first_activation_ms: (S, n_nodes) first activation in the recording (NaN: none).
        activation_count: (S, n_nodes) activations in the recording.
        wavefronts: (S, n_counts) wavefront counts over the recording.
        snapshots: (S, n_snapshots, n_nodes) voltage snapshots at ``snapshot_ms``.
        snapshot_ms: the snapshot times (ms after the transient).
        replaced_af: AF runs that terminated and were replaced by fresh draws.
        backend: the simulator backend (``"numba"`` or ``"torch"``).
    """

    specs: list[SimulationSpec]
    egm: NDArray[np.float32]
    lead_coef: NDArray[np.float32]
    first_activation_ms: NDArray[np.float64]
    activation_count: NDArray[np.int64]
    wavefronts: NDArray
    snapshots: NDArray[np.float32]
    snapshot_ms: tuple[float, ...]
    replaced_af: int
    backend: str

    @property
    def sim_id(self) -> NDArray[np.int32]:
        """(S,) simulation ids."""
        return np.array([s.sim_id for s in self.specs], np.int32)

    @property
    def label(self) -> NDArray[np.int8]:
        """(S,) rhythm labels (index into :data:`~egmlib.data.store.LABELS`)."""
        return np.array([LABELS.index(s.rhythm) for s in self.specs], np.int8)


def _fresh(ss: np.random.SeedSequence) -> np.random.SeedSequence:
    """A copy of ``ss`` that has spawned no children yet."""
    return np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key, pool_size=ss.pool_size)


def simulate_all(anatomy: Anatomy, lead_basis: NDArray, cfg: DataConfig, seeds: Seeds,
                 show_progress: bool = True, *, scheduler: str | None = None,
                 workers: int | None = None) -> Simulations:
    """Run ``n_sr`` SR and ``n_af`` sustained AF simulations (``batch`` at a time, time step
    ``dt_ms``, ``record_s`` kept after ``transient_s``), recording the EGMs through
    ``anatomy.egm_lead`` and the torso coefficients through ``lead_basis``. AF runs that
    terminate are replaced by fresh draws.

    The batches run here one after the other (``scheduler`` and ``workers`` None), on a local
    Dask cluster of ``workers`` one-thread processes, or on the Dask cluster at the address
    ``scheduler``; the specs are drawn here in every case, and the result is the same to the
    bit (:mod:`egmlib.data.parallel`).
    """
    snapshot_ms = [float(t) for t in np.linspace(0, min(400.0, cfg.record_s * 1000 - 2), 5)]
    leads = {"egm": anatomy.egm_lead, "torso": lead_basis}
    results: list[SimulationResult] = []
    replaced = {}
    total = cfg.n_sr + cfg.n_af
    rhythms = (("SR", cfg.n_sr, seeds.sr), ("AF", cfg.n_af, seeds.af))
    with progress(range(total), desc="simulations", total=total,
                  disable=not show_progress) as bar:
        if scheduler is None and workers is None:
            sim = Simulator(anatomy.geometry, dt=cfg.dt_ms)
            backend = sim.backend
            for rhythm, n, ss in rhythms:
                res, replaced[rhythm] = _simulate_rhythm(
                    sim, rhythm, n, _fresh(ss), FIRST_SIM_ID[rhythm], cfg, leads, snapshot_ms,
                    bar)
                results += res
        else:
            backend, per_rhythm = _simulate_on_cluster(anatomy, leads, cfg, rhythms,
                                                       snapshot_ms, bar, scheduler, workers)
            for (rhythm, _, _), attempts in zip(rhythms, per_rhythm):
                results += [_select(res, keep) for res, keep in attempts]
                replaced[rhythm] = sum(int((~keep).sum()) for _, keep in attempts)
    return Simulations(
        specs=[s for r in results for s in r.specs],
        egm=np.concatenate([r.traces["egm"] for r in results]),
        lead_coef=np.concatenate([r.traces["torso"] for r in results]),
        first_activation_ms=np.concatenate([r.first_activation_ms for r in results]),
        activation_count=np.concatenate([r.activation_count for r in results]),
        wavefronts=np.concatenate([r.wavefronts for r in results]),
        snapshots=np.concatenate([r.snapshots for r in results]),
        snapshot_ms=tuple(snapshot_ms), replaced_af=replaced["AF"], backend=backend)


def _simulate_on_cluster(anatomy: Anatomy, leads: dict[str, NDArray], cfg: DataConfig,
                         rhythms: tuple[tuple[str, int, np.random.SeedSequence], ...],
                         snapshot_ms: list[float], bar: Any, scheduler: str | None,
                         workers: int | None) -> tuple[str, list[list[Any]]]:
    """The batches of :func:`simulate_all` on a Dask cluster: (backend, per rhythm its attempts
    as (batch result, kept columns))."""
    from egmlib.data import parallel

    backend = "numba" if numba_available() else "torch"  # what Simulator's "auto" takes
    run = parallel.BatchRun(dt_ms=cfg.dt_ms, record_ms=cfg.record_s * 1000.0,
                            transient_ms=cfg.transient_s * 1000.0,
                            snapshot_ms=tuple(snapshot_ms), backend=backend)
    tasks = [parallel.RhythmTask(rhythm=rhythm, n=n, seed_seq=_fresh(ss),
                                 first_id=FIRST_SIM_ID[rhythm]) for rhythm, n, ss in rhythms]
    return backend, parallel.simulate_rhythms(
        tasks, anatomy.geometry, leads, run, cfg.batch, MAX_ATTEMPTS, _kept_columns, bar,
        scheduler, workers)


def _kept_columns(rhythm: str, res: SimulationResult) -> NDArray[np.bool_]:
    """The columns of a batch that count: every SR run, the AF runs that did not terminate."""
    return res.alive if rhythm == "AF" else np.ones(len(res.specs), bool)


def _simulate_rhythm(sim: Simulator, rhythm: str, n: int, seed_seq: np.random.SeedSequence,
                     first_id: int, cfg: DataConfig, leads: dict[str, NDArray],
                     snapshot_ms: list[float], bar: Any) -> tuple[list[SimulationResult], int]:
    """Simulate ``n`` kept simulations of one rhythm in batches; AF runs that die are replaced by
    fresh draws. Returns the batch results (dead columns dropped) and the number replaced."""
    results, kept, replaced, next_id = [], 0, 0, first_id
    attempts = 0
    while kept < n:
        attempts += 1
        if attempts > MAX_ATTEMPTS:
            raise RuntimeError(f"could not obtain {n} sustained {rhythm} simulations")
        todo = min(cfg.batch, n - kept)
        specs = draw_specs(rhythm, todo, seed_seq.spawn(1)[0], sim.geometry, first_id=next_id)
        next_id += todo
        res = sim.run(specs, cfg.record_s * 1000.0, transient_ms=cfg.transient_s * 1000.0,
                      leads=leads, snapshot_ms=snapshot_ms, show_progress=False)
        keep = _kept_columns(rhythm, res)
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


@dataclass(frozen=True)
class Windows:
    """Windows of ``T`` samples at ``fs``, simulation by simulation (each simulation gives
    ``per_sim`` consecutive windows).

    Attributes:
        egm: (n_windows, T, n_rec) float32 EGM windows.
        lead_coef: (n_windows, T, r) float64 lead-field coefficient windows.
        per_sim: windows per simulation.
        label: (n_windows,) int8 rhythm labels.
        sim_id: (n_windows,) int32 simulation ids.
        start_s: (n_windows,) float32 start times (s after the transient).
    """

    egm: NDArray[np.float32]
    lead_coef: NDArray[np.float64]
    per_sim: int
    label: NDArray[np.int8]
    sim_id: NDArray[np.int32]
    start_s: NDArray[np.float32]


def make_windows(sims: Simulations, cfg: DataConfig) -> Windows:
    """Resample the 500 Hz EGMs and coefficients to ``fs`` and cut windows of ``T`` samples
    every ``hop_s`` seconds (:func:`~egmlib.data.store.windows`)."""
    w, start = store.windows(sims.egm, RECORD_FS, cfg.fs, cfg.T, cfg.hop_s)  # (n_w, S, n_rec, T)
    wc, _ = store.windows(sims.lead_coef, RECORD_FS, cfg.fs, cfg.T, cfg.hop_s)  # (n_w, S, r, T)
    n_w, n_sims = w.shape[0], w.shape[1]
    egm = np.ascontiguousarray(w.transpose(1, 0, 3, 2).reshape(n_sims * n_w, cfg.T, -1))
    coef = wc.transpose(1, 0, 3, 2).reshape(n_sims * n_w, cfg.T, -1).astype(np.float64)
    return Windows(egm=egm, lead_coef=coef, label=np.repeat(sims.label, n_w),
                   sim_id=np.repeat(sims.sim_id, n_w),
                   start_s=np.tile(start, n_sims).astype(np.float32), per_sim=n_w)


def make_bspms(win: Windows, torso_models: TorsoModels
               ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Noise-free BSPMs W_t R q from the coefficient windows.

    Returns (bspm (n_windows, n_torsos, T, 64) on each torso's 64 electrodes, and bspm_examples
    (2, T, n_vertices of torso 0): the first SR and the first AF window on the whole torso 0),
    both float32 and referenced to the mean over their leads.
    """
    coef = win.lead_coef
    # one 2-D product per torso: numpy's stacked (windows, T, r) @ (r, 64) took 0.3-1.7 s a
    # torso on a 2-core AMD EPYC virtual machine, the same product on (windows * T, r) 0.2-0.4 s
    flat = coef.reshape(-1, coef.shape[-1])
    bspm = np.stack([reference_mean((flat @ wt[sub].T).reshape(*coef.shape[:2], -1), axis=-1)
                     for wt, sub in zip(torso_models.lead_weights, torso_models.subsets)],
                    axis=1).astype(np.float32)
    examples = [int(np.flatnonzero(win.label == j)[0]) for j in range(len(LABELS))]
    bspm_examples = np.stack([reference_mean(coef[i] @ torso_models.lead_weights[0].T, axis=-1)
                              for i in examples]).astype(np.float32)
    return bspm, bspm_examples


@dataclass(frozen=True)
class Measurements:
    """Per-simulation measurements.

    Attributes:
        df_hz: (S, n_rec) float32 dominant frequency per site from the 500 Hz EGM
            (:func:`egmlib.core.metrics.rhythm_df`).
        simulations: per simulation, its spec and measured summaries (the manifest's
            ``simulations``): ``df_median_hz``, ``wavefronts_mean``, ``activated_fraction``, and
            for SR ``cv_median_m_s`` and ``pacing_hz``.
        activation_ms: (S, n_nodes) activation maps: SR since its own stimulus
            (:func:`~egmlib.data.analysis.sr_activation_map`), AF first activation in the
            recording.
    """

    df_hz: NDArray[np.float32]
    simulations: list[dict[str, Any]]
    activation_ms: NDArray[np.float64]


def measure(sims: Simulations, anatomy: Anatomy, cfg: DataConfig) -> Measurements:
    """DF per site, activation maps, conduction velocity (SR) and wavefront and activation
    summaries of every simulation."""
    n_sims = len(sims.specs)
    labels = sims.label
    df = np.zeros((n_sims, sims.egm.shape[1]), np.float32)
    for rhythm in LABELS:
        sel = labels == LABELS.index(rhythm)
        if sel.any():
            df[sel] = metrics.rhythm_df(sims.egm[sel].transpose(0, 2, 1), RECORD_FS, rhythm)
    act = sims.first_activation_ms.copy()
    info_all = []
    for k, spec in enumerate(sims.specs):
        info: dict[str, Any] = {"spec": spec.to_dict(),
                                "df_median_hz": float(np.median(df[k])),
                                "wavefronts_mean": float(sims.wavefronts[k].mean())
                                if sims.wavefronts.shape[1] else 0.0,
                                "activated_fraction": float((sims.activation_count[k] > 0).mean())}
        if spec.rhythm == "SR":
            act[k] = sr_activation_map(act[k], spec.cycle_length_ms, cfg.transient_s * 1000.0)
            cv = conduction_velocity(anatomy.geometry, act[k])
            info["cv_median_m_s"] = float(np.nanmedian(cv))
            info["pacing_hz"] = 1000.0 / spec.cycle_length_ms
        info_all.append(info)
    return Measurements(df_hz=df, simulations=info_all, activation_ms=act)


@dataclass(frozen=True)
class Splits:
    """``split`` (n_windows,) int8: 0 train, 1 validation, 2 test, by simulation;
    ``torso_split`` (n_torsos,) int8: 0 train, 2 test (the last ``test_torsos``)."""

    split: NDArray[np.int8]
    torso_split: NDArray[np.int8]


def assign_splits(win: Windows, cfg: DataConfig, seed: int) -> Splits:
    """Split the windows by simulation (``test_fraction``, ``val_fraction``, shuffled with
    ``seed``; :func:`~egmlib.data.store.split_by_simulation`) and hold out the last
    ``test_torsos`` of the ``n_torsos`` torsos."""
    split = store.split_by_simulation(win.sim_id, win.label, cfg.test_fraction,
                                      cfg.val_fraction, seed)
    torso_split = np.zeros(cfg.n_torsos, np.int8)
    torso_split[cfg.n_torsos - cfg.test_torsos:] = 2
    return Splits(split=split, torso_split=torso_split)


def cache_key(p: Mapping[str, Any]) -> dict[str, Any]:
    """The values of :data:`DATA_KEYS` in ``p`` (the manifest's ``params``)."""
    return {k: p[k] for k in DATA_KEYS}


def priors_record() -> dict[str, dict[str, Any]]:
    """The simulation priors of each rhythm (:data:`egmlib.physics.simulate.PRIORS`) as the
    manifest stores them: part of what a data set is, beside :data:`DATA_KEYS`."""
    return {rhythm: PRIORS[rhythm].to_dict() for rhythm in LABELS}


def _params_match(manifest: Mapping[str, Any], p: Mapping[str, Any]) -> bool:
    old = manifest.get("params", {})
    return (manifest.get("format") == FORMAT and all(old.get(k) == p[k] for k in DATA_KEYS)
            and manifest.get("priors") == priors_record()
            and manifest.get("anatomy_digest") == anatomy_digest(p["anatomy"]))


def build_dataset(p: Mapping[str, Any], run_dir: str | Path, *, rebuild: bool = False,
                  show_progress: bool = True, scheduler: str | None = None,
                  workers: int | None = None) -> Dataset:
    """Simulate the SR and AF data set of parameters ``p`` (see :mod:`egmlib.core.params`, notebook
    01_data), EGMs and BSPMs, into ``<run_dir>/data`` and return it loaded.

    An existing complete data set made with the same parameters (:data:`DATA_KEYS`) is loaded
    instead, unless ``rebuild``. The folder is written under a temporary name and renamed when
    complete, so an interrupted build leaves no partial data set behind.

    ``scheduler`` (the address of a Dask cluster) or ``workers`` (the size of a local cluster
    made and closed here) sends the simulation batches to a cluster, with the same data set to
    the bit (:func:`simulate_all`); by default they run in this process.
    """
    run_dir = Path(run_dir)
    if not rebuild and (run_dir / "data" / "manifest.json").exists():
        try:
            ds = store.load_dataset(run_dir)
            if _params_match(ds.manifest, p):
                return ds
        except store.DataError:
            pass

    cfg = DataConfig.from_values(p)
    seeds = spawn_seeds(p["seed"])
    anatomy = make_anatomy(cfg)
    torso_models = make_torso_models(anatomy, cfg, seeds.torso)
    sims = simulate_all(anatomy, torso_models.lead_basis, cfg, seeds, show_progress,
                        scheduler=scheduler, workers=workers)
    win = make_windows(sims, cfg)
    bspm, bspm_examples = make_bspms(win, torso_models)
    meas = measure(sims, anatomy, cfg)
    splits = assign_splits(win, cfg, seeds.split)
    arrays = {
        "egm": win.egm, "label": win.label, "sim_id": win.sim_id, "start_s": win.start_s,
        "split": splits.split, "df_hz": meas.df_hz,
        "egm_500hz_examples": np.ascontiguousarray(sims.egm[:, anatomy.example_sites, :]),
        "bspm": bspm, "transfer": torso_models.transfer, "torso_split": splits.torso_split,
        "bspm_examples": bspm_examples,
    }
    agreement = formulation_agreement(win.egm, bspm, torso_models.transfer)
    store.save_dataset(run_dir / "data", arrays,
                       dataset_archives(anatomy, torso_models, sims, meas),
                       dataset_manifest(p, cfg, anatomy, torso_models, sims, win, meas, splits,
                                        agreement))
    return store.load_dataset(run_dir, verify=False)


def dataset_archives(anatomy: Anatomy, torso_models: TorsoModels, sims: Simulations,
                     meas: Measurements) -> dict[str, dict[str, Any]]:
    """The ``.npz`` files of a data set: ``geometry``, ``torsos`` and ``maps`` (name -> members,
    in the order written)."""
    geom, sites, heart = anatomy.geometry, anatomy.sites, torso_models.heart
    return {
        "geometry": dict(vertices=geom.mesh.vertices, faces=geom.mesh.faces, region=geom.region,
                         links=geom.links, pacing=geom.pacing, site_vertex=sites.vertex,
                         electrodes=sites.electrodes, offset_mm=sites.offset_mm,
                         example_sites=anatomy.example_sites, heart_vertices=heart.vertices,
                         heart_faces=heart.faces),
        "torsos": {f"{k}_{i}": v for i, t in enumerate(torso_models.torsos)
                   for k, v in (("vertices", t.mesh.vertices), ("faces", t.mesh.faces),
                                ("subset", torso_models.subsets[i]))},
        "maps": dict(first_activation_ms=meas.activation_ms, snapshots=sims.snapshots,
                     snapshot_ms=np.asarray(sims.snapshot_ms)),
    }


def dataset_manifest(p: Mapping[str, Any], cfg: DataConfig, anatomy: Anatomy,
                     torso_models: TorsoModels, sims: Simulations, win: Windows,
                     meas: Measurements, splits: Splits, agreement: dict[str, float]
                     ) -> dict[str, Any]:
    """The manifest of a data set, but for the ``files`` entry that
    :func:`~egmlib.data.store.save_dataset` fills in (its place is kept here)."""
    basis, lead_sv = torso_models.lead_basis, torso_models.lead_singular_values
    _, gap, margin = lead_rank(lead_sv)
    counts = {f"{part}_{rhythm}": int(((splits.split == i) & (win.label == j)).sum())
              for i, part in enumerate(SPLIT_NAMES) for j, rhythm in enumerate(LABELS)}
    key = cache_key(p)
    return {
        "format": FORMAT,
        "labels": list(LABELS),
        "split_names": list(SPLIT_NAMES),
        "record_fs": RECORD_FS,
        "fs": cfg.fs,
        "T": cfg.T,
        "n_rec": cfg.n_rec,
        "units": "mV",
        "df_method": {k: metrics.df_settings(k, RECORD_FS).as_dict() for k in LABELS},
        "files": None,
        "counts": counts,
        "replaced_terminated_af": sims.replaced_af,
        "n_nodes": anatomy.geometry.n_vertices,
        "anatomy_digest": anatomy_digest(cfg.anatomy),
        "barr_heart": {"method": torso_models.heart_method,
                       "n_vertices": torso_models.heart.n_vertices},
        "torsos": [{"name": t.name, "n_vertices": t.mesh.n_vertices,
                    "split": SPLIT_NAMES[int(splits.torso_split[i])], "parameters": t.parameters}
                   for i, t in enumerate(torso_models.torsos)],
        "lead_rank": int(basis.shape[0]),
        "lead_rank_gap_decades": gap,
        "lead_rank_margin_decades": margin,
        "lead_relative_error": float(lead_sv[basis.shape[0]] / lead_sv[0])
        if basis.shape[0] < len(lead_sv) else 0.0,
        # the numba and torch simulators agree to float32 rounding, which chaotic AF amplifies:
        # the same parameters give the same arrays with the same backend
        "simulator_backend": sims.backend,
        "formulation_agreement": agreement,
        "simulations": meas.simulations,
        "params": key,
        "priors": priors_record(),
        "provenance": provenance(dict(key), p["seed"]),
    }
