"""Monodomain reaction-diffusion with the Mitchell-Schaeffer model on an atrial surface.

Model (Mitchell & Schaeffer, Bull. Math. Biol. 65:767, 2003), dimensionless voltage v in [0, 1]
(transmembrane voltage V_m = 100 v - 80 mV), time in ms::

    dv/dt = h v^2 (1 - v) / tau_in - v / tau_out + J_stim + div(D grad v)
    dh/dt = (1 - h) / tau_open   if v < v_gate
            -h / tau_close       otherwise

Discretisation: P1 finite elements on the triangle surface, cotangent stiffness ``K`` (plus the
inter-atrial links as extra stiffness between paired nodes), lumped mass ``M``; the diffusion term
of node i is ``-D_i (M^-1 K v)_i``. A per-node D (fibrosis, heterogeneity) therefore scales the
node's lumped Laplacian instead of entering the element integrals; this keeps one stiffness matrix
shared by every simulation of a batch (block-diagonal matrices were 2x slower in a prototype of
this engine on 2 CPU cores)
and is exact wherever D is locally constant. Forward Euler for v, Rush-Larsen (exact exponential
update at frozen v) for the gate.

Batching: ``S`` simulations are the columns of one (n_nodes, S) state in torch float32, advanced by
one sparse matrix product per step. :func:`simulate_reference` is a plain scipy float64 version of
the same equations for one simulation, used to cross-check the batched engine and as the speed
baseline in ``make bench``.

Protocols (parameter ranges: Mitchell & Schaeffer, Bull Math Biol 65:767-793, 2003, for the
ionic constants; the SR ranges were chosen in a prototype of this engine so that SR conducts at
0.6-1.2 m/s; the AF ranges below were widened in 2026-12 so that AF is as irregular and as
spatially varied as this model allows, see "AF priors"):

* **SR**: the sinus-node patch is paced (2 ms stimulus) at a cycle length of 600-1000 ms,
  D 0.5-1.0 mm^2/ms, tau_close 130-150 ms, tau_open 120 ms (the published value). Conduction
  velocity comes out 0.6-1.2 m/s.

  Mesh convergence (where D is chosen): on a flat strip at D = 0.75 mm^2/ms the simulator's CV
  is 0.841 m/s at 2 mm edges, 0.887 at 1 mm, 0.917 at 0.5 mm and 0.934 at 0.125 mm (lumped
  mass; an independent FEM code agreed within 1 % at each size): the default 2 mm surface
  conducts about 10 % slower than converged tissue, and the D ranges (SR and AF) are chosen so
  that the CV at the edge length actually used (2 mm) is physiological (0.6-1.2 m/s in SR).
* **AF**: remodelled tissue drawn per simulation (a "patient") from wide ranges, regional and
  smooth tau_close heterogeneity, fibrosis of several patterns, started from a broken-wavefront
  "phase field": each atrium gets a rotating wave whose phase is the longitude about a random
  axis, the state of each node taken from a single cell's action potential at that phase (two
  phase singularities per atrium). Runs whose activity dies (max v < 0.1) are flagged.

AF priors
---------
In this model the action potential duration is set by tau_close (approximately
APD_max = tau_close ln(tau_out / (4 tau_in)) = 1.6 tau_close, as derived by Mitchell & Schaeffer
2003), and the recovery of excitability after repolarisation by tau_open: below the gate voltage
the gate recovers as h = 1 - (1 - h_0) exp(-t / tau_open), and the cell fires again only once h
has recovered past about 4 tau_in / tau_out = 0.2 (more in tissue, where an upstroke must drive
its neighbours). Mitchell & Schaeffer (Bull Math Biol 65:767, 2003) derive the model's
restitution curve (APD against the diastolic interval) from tau_open and tau_close together:
tau_open is the model's post-repolarisation refractoriness. AF remodelling shortens atrial
refractoriness, so AF draws tau_open per simulation; SR keeps the published 120 ms.

Why tau_open is drawn: with it fixed at 120 ms no tau_close gave local rates above about 6.8 Hz
(measured: tau_close 20-45 ms, 6.1-6.8 Hz), and the DF per simulation of the default AF set was
3.3-6.2 Hz (p10 3.8, p90 6.0). A grid on the default surface (2 mm edges, 1 s transient, 6 s
recorded, the other fields as drawn) shows that fast AF needs both constants short: LA tau_close
25 ms gives 9.7-10.7 Hz with tau_open 30 ms, 7.9-8.4 with 50 and 6.8-7.9 with 80; tau_close
35 ms 7.5-8.2, 7.5-7.7 and 6.5-7.1 Hz; tau_close 70 ms 6.4, 4.6-5.1 and 4.9-5.3 Hz (D 0.15 and
0.35).

* **Between-patient remodelling**: LA tau_close 18-100 ms (APD_max about 29-160 ms: from
  strongly to mildly remodelled atria), RA tau_close 1.1-1.7 times the LA one, tau_open
  15-120 ms (drawn independently of tau_close, after every other AF draw so that those kept
  their values), D 0.12-0.45 mm^2/ms (CV about 0.33-0.64 m/s at the 2 mm edges, with
  CV ~ 0.95 sqrt(D), see :func:`_rotation_period_ms` and the mesh note above). The tau_close
  and tau_open ranges are modelling choices tuned to a target of this project (DF per
  simulation over the default AF set spanning at least 3-9 Hz, its p10 and p90 at least 3 Hz
  apart), not fitted to a study: the tau_open range ends at the published 120 ms (mildly
  remodelled atria), and its short end (tens of ms) is what rates near 9 Hz need in this
  two-variable model. At the short end the APDs are far below human atrial ones (APD_max about
  15 ms with tau_close 18 ms at a vein centre): the two constants are tuned to the activation
  rate and the refractoriness, not to the action potential's shape or duration. The time step
  is unchanged: tau_open enters only the Rush-Larsen gate update (an exact exponential, stable
  for any step; exp(-dt / tau_open) is 0.993 at dt 0.1 ms and tau_open 15 ms), and the
  forward-Euler limit of :meth:`Simulator.max_stable_dt` depends on D and the mesh only.
* **Regional APD**: the LA shorter than the RA and the pulmonary-vein (PV) region shortest
  (tau_close x 0.5-0.85 at the vein centres, blending into the LA over a Gaussian of sigma
  12 mm), after the left-to-right DF gradient of human AF: Lazar et al. (Circulation
  110:3181-3186, 2004) measured DF 6.2 +- 0.8 Hz at the PV/LA junction, 5.5 +- 0.7 Hz in the
  coronary sinus and 5.1 +- 0.6 Hz in the RA in paroxysmal AF (6.1, 5.8 and 5.8 Hz, no
  significant gradient, in persistent AF).
* **Smooth heterogeneity**: tau_close x (1 + h f) with h 0.1-0.3 and f a unit-variance random
  field of wavelength 15-40 mm (before: h 0-0.15, wavelength 40 mm).
* **Fibrosis**: in 60 % of the runs 1-6 patches of radius 5-12 mm, each either compact or
  patchy-interstitial (a random 40-100 % of its nodes fibrotic), plus diffuse interstitial
  fibrosis of 0-10 % of all nodes; fibrotic nodes have D x 0.05-0.3 (conduction slowing and,
  at the low end, block). These ranges are a modelling choice, not fitted to a study.

What they give (the 48 runs of the default data build, seed 0: both batches of 24 drawn from the
build's AF seed stream exactly as the build draws them, ``DataConfig()`` defaults, 1 s transient,
6 s recorded; DF per site from the 500 Hz EGMs with :func:`egmlib.core.metrics.rhythm_df`): median
DF per simulation 3.35-9.6 Hz (p10 3.9, p50 5.8, p90 7.8 Hz; with tau_open fixed at 120 ms and LA
tau_close 35-100 ms before: 3.3-6.2 Hz, p10 3.8, p50 5.2, p90 6.0), within-simulation p90 - p10
of site DF median 1.55 Hz (before 1.0), LA minus RA DF median +0.76 Hz, cycle-length coefficient
of variation from the simulated activations at the recording sites median 9.3 % (before 5.7 %),
organisation index (:func:`egmlib.core.metrics.organisation_index`, AF band) median 0.78 (before
0.89); every run sustained (none of the 144 runs of seeds 0-2 terminated, so none is redrawn).
Seeds 1 and 2 give DF p10 4.5 and 4.1, p50 5.7 and 5.55, p90 8.5 and 7.5 Hz, 3.05-9.8 and
3.6-8.8 Hz: the 3-9 Hz span is met on seeds 0 and 1 and nearly (8.8 Hz) on seed 2. The batch
time is unchanged (42 s of simulation for the 48 runs on one thread, 45 s before). The numbers
come from a measurement script outside the package (simulate the two batches with
``Simulator(geometry, dt=cfg.dt_ms).run(specs, 6000, transient_ms=1000, leads={"egm": ...},
log_activations=True)`` and take the per-site ``rhythm_df``, ``organisation_index`` and the
cycle lengths of the activations at the site vertices).
Everett et al. (IEEE Trans Biomed Eng 48:969-978, 2001), who defined the OI on the whole spectrum
of bipolar canine AF electrograms, report 0.35-0.51 (means over 4 s windows), so the simulated AF
is still more organised than real AF by that measure.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse import csgraph

from egmlib.core.process import torch_threads
from egmlib.core.runs import progress
from egmlib.physics.geometry import LA, RA, AtrialGeometry

__all__ = [
    "MS_FIXED",
    "PRIORS",
    "RhythmPriors",
    "SimulationResult",
    "SimulationSpec",
    "Simulator",
    "conduction_velocity",
    "draw_specs",
    "node_fields",
    "pv_weight",
    "simulate_reference",
    "single_cell_ap",
]

#: Mitchell-Schaeffer constants (ms): the published values of Mitchell & Schaeffer (Bull Math
#: Biol 65:767-793, 2003). tau_in, tau_out and v_gate are shared by every simulation; tau_close is
#: drawn per protocol, and "tau_open" here is only the default of :attr:`SimulationSpec.tau_open`
#: (kept by SR; drawn per simulation in AF, see "AF priors" in the module docstring).
MS_FIXED = {"tau_in": 0.3, "tau_out": 6.0, "tau_open": 120.0, "v_gate": 0.13}
#: Threshold of an activation (upward crossing of v).
V_ACTIVATION = 0.5
#: Below this maximum voltage a simulation without pacing is dead (it has no automaticity).
V_DEAD = 0.1
#: Stimulus: current (1/ms) and duration (ms) applied to the pacing patch.
STIM_AMPLITUDE, STIM_DURATION = 0.5, 2.0
#: Voltage of the membrane model in mV: V_m = V_SCALE * v + V_REST.
V_SCALE, V_REST = 100.0, -80.0


@dataclass(frozen=True)
class SimulationSpec:
    """The parameters of one simulation, drawn by :func:`draw_specs` and stored with the data.

    Attributes:
        sim_id: identifier, unique within a data set.
        rhythm: ``"SR"`` or ``"AF"``.
        seed: seed of this simulation's own random fields (heterogeneity, fibrosis).
        D: base diffusivity (mm^2/ms).
        tau_close_ra, tau_close_la: gate closing time constant per atrium (ms).
        cycle_length_ms: SR pacing cycle length (0 for AF).
        heterogeneity: relative amplitude of the smooth tau_close field (0 = uniform).
        fibrosis: patches as (centre vertex, radius mm); D is multiplied by ``fibrosis_factor``
            inside them.
        fibrosis_factor: D multiplier in fibrotic patches.
        start_axes: AF only, the rotation axis (unit 3-vector) of the initial wave in RA and LA.
        link_strength: inter-atrial link stiffness relative to the mean mesh edge stiffness
            (one value per batch: it enters the shared stiffness matrix).
        pacing_shift: index into the geometry's pacing patch ordering used as the patch centre
            (a small jitter of the sinus-node position between SR simulations).
        heterogeneity_mm: wavelength (mm) of the smooth tau_close field.
        pv_tau_factor: tau_close multiplier at the pulmonary-vein ostia (1 = none), blended
            smoothly into the LA over :data:`PV_SIGMA_MM` (geometries with PV landmarks only).
        fibrosis_density: fraction of the nodes inside a fibrotic patch that are fibrotic (1 =
            the whole patch, a compact scar; below 1 a patchy-interstitial mix of fibrotic and
            healthy nodes, whose zig-zag coupling slows and breaks wavefronts).
        diffuse_fibrosis: fraction of all nodes, anywhere, made fibrotic (interstitial fibrosis).
        tau_open: gate opening time constant (ms), the recovery of excitability after
            repolarisation; one value for the whole simulation (default 120 ms, the published
            value of :data:`MS_FIXED`).

    The last five default to the behaviour before they existed (SR draws leave them there).
    """

    sim_id: int
    rhythm: str
    seed: int
    D: float
    tau_close_ra: float
    tau_close_la: float
    cycle_length_ms: float = 0.0
    heterogeneity: float = 0.0
    fibrosis: tuple[tuple[int, float], ...] = ()
    fibrosis_factor: float = 0.2
    start_axes: tuple[tuple[float, float, float], ...] = ()
    link_strength: float = 1.0
    pacing_shift: int = 0
    heterogeneity_mm: float = 40.0
    pv_tau_factor: float = 1.0
    fibrosis_density: float = 1.0
    diffuse_fibrosis: float = 0.0
    tau_open: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SimulationSpec:
        d = dict(d)
        d["fibrosis"] = tuple(tuple(p) for p in d.get("fibrosis", ()))
        d["start_axes"] = tuple(tuple(a) for a in d.get("start_axes", ()))
        return cls(**d)


def _random_unit(rng: np.random.Generator) -> tuple[float, float, float]:
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    return (float(u[0]), float(u[1]), float(u[2]))


@dataclass(frozen=True)
class RhythmPriors:
    """The ranges from which :func:`draw_specs` draws the simulations of one rhythm.

    Each ``(low, high)`` pair is a uniform distribution; ``fibrosis_patches`` is an inclusive
    integer range, used with probability ``fibrosis_probability`` (else no patch). The defaults of
    :data:`PRIORS` and their sources are in the module docstring.

    The AF-only ranges below default to ``None`` (the :class:`SimulationSpec` default is then
    kept, as for SR):

    * ``ra_over_la``: when set, the RA tau_close is the LA one times a ratio drawn from it (the
      LA-to-RA refractoriness gradient); ``tau_close_ra`` is then only the envelope that this
      product spans (``tau_close_la`` times ``ra_over_la``, for the record);
    * ``pv_tau_factor``, ``heterogeneity_mm``, ``fibrosis_density``, ``diffuse_fibrosis``: the
      :class:`SimulationSpec` fields of those names;
    * ``fibrosis_factor``: the D multiplier of fibrotic nodes (spec default 0.2);
    * ``tau_open``: the gate opening time constant (ms) of the simulation (spec default 120),
      drawn last so that adding it left every earlier draw of a seed unchanged.
    """

    D: tuple[float, float]
    tau_close_ra: tuple[float, float]
    tau_close_la: tuple[float, float]
    heterogeneity: tuple[float, float]
    cycle_length_ms: tuple[float, float] | None = None
    fibrosis_probability: float = 0.0
    fibrosis_patches: tuple[int, int] = (1, 5)
    fibrosis_radius_mm: tuple[float, float] = (5, 10)
    ra_over_la: tuple[float, float] | None = None
    pv_tau_factor: tuple[float, float] | None = None
    heterogeneity_mm: tuple[float, float] | None = None
    fibrosis_factor: tuple[float, float] | None = None
    fibrosis_density: tuple[float, float] | None = None
    diffuse_fibrosis: tuple[float, float] | None = None
    tau_open: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and not 0 <= value[0] <= value[1]:
                raise ValueError(f"{f.name}: got {value!r}; allowed: (low, high) with "
                                 "0 <= low <= high")
        if not 0.0 <= self.fibrosis_probability <= 1.0:
            raise ValueError(f"fibrosis_probability: got {self.fibrosis_probability!r}; "
                             "allowed: a probability in [0, 1]")
        for name in ("fibrosis_density", "diffuse_fibrosis", "fibrosis_factor"):
            value = getattr(self, name)
            if value is not None and value[1] > 1.0:
                raise ValueError(f"{name}: got {value!r}; allowed: (low, high) within [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """The ranges as plain lists (for the data set's manifest)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


#: The default priors. SR: D 0.5-1.0 mm^2/ms (CV 0.67-1.0 m/s on these meshes), tau_close
#: 130-150 ms, sinus cycle length 600-1000 ms, heterogeneity up to 5 %. AF: see "AF priors" in
#: the module docstring for each range and its source.
PRIORS: dict[str, RhythmPriors] = {
    "SR": RhythmPriors(D=(0.5, 1.0), tau_close_ra=(130, 150), tau_close_la=(130, 150),
                       heterogeneity=(0.0, 0.05), cycle_length_ms=(600, 1000)),
    "AF": RhythmPriors(D=(0.12, 0.45), tau_close_la=(18, 100), tau_close_ra=(19.8, 170),
                       ra_over_la=(1.1, 1.7), pv_tau_factor=(0.5, 0.85),
                       heterogeneity=(0.1, 0.3), heterogeneity_mm=(15, 40),
                       fibrosis_probability=0.6, fibrosis_patches=(1, 6),
                       fibrosis_radius_mm=(5, 12), fibrosis_factor=(0.05, 0.3),
                       fibrosis_density=(0.4, 1.0), diffuse_fibrosis=(0.0, 0.1),
                       tau_open=(15, 120)),
}


def _draw_tissue(rng: np.random.Generator, pr: RhythmPriors) -> dict[str, float]:
    """D and the two atria's tau_close, drawn in this order."""
    D = float(rng.uniform(*pr.D))
    tau_ra = float(rng.uniform(*pr.tau_close_ra))
    return {"D": D, "tau_close_ra": tau_ra, "tau_close_la": float(rng.uniform(*pr.tau_close_la))}


def draw_specs(rhythm: str, n: int, seed: int | np.random.SeedSequence, geometry: AtrialGeometry,
               first_id: int = 0, priors: RhythmPriors | None = None) -> list[SimulationSpec]:
    """Draw ``n`` simulation parameter sets of one rhythm from a seeded generator, from
    ``priors`` (default :data:`PRIORS` of the rhythm). The same ``seed`` gives the same list."""
    if rhythm not in ("SR", "AF"):
        raise ValueError(f"rhythm must be 'SR' or 'AF'; got {rhythm!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    pr = PRIORS[rhythm] if priors is None else priors
    if rhythm == "SR" and pr.cycle_length_ms is None:
        raise ValueError("priors: SR needs cycle_length_ms (the sinus pacing range)")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    specs = []
    for k, child in enumerate(ss.spawn(n)):
        rng = np.random.default_rng(child)
        sim_seed = int(rng.integers(2**31 - 1))
        # the order of the draws is part of the data set's identity: keep it
        if rhythm == "SR":
            tissue = _draw_tissue(rng, pr)
            specs.append(SimulationSpec(
                sim_id=first_id + k, rhythm="SR", seed=sim_seed, **tissue,
                cycle_length_ms=float(rng.uniform(*pr.cycle_length_ms)),
                heterogeneity=float(rng.uniform(*pr.heterogeneity)),
                pacing_shift=int(rng.integers(0, max(1, len(geometry.pacing) // 2)))))
        else:
            lo, hi = pr.fibrosis_patches
            n_fib = int(rng.integers(lo, hi + 1)) if rng.random() < pr.fibrosis_probability else 0
            fib = tuple((int(rng.integers(geometry.n_vertices)),
                         float(rng.uniform(*pr.fibrosis_radius_mm))) for _ in range(n_fib))
            tissue = _draw_tissue(rng, pr)
            heterogeneity = float(rng.uniform(*pr.heterogeneity))
            axes = (_random_unit(rng), _random_unit(rng))
            # the AF-only ranges, drawn after the others (None: the spec's default)
            extra: dict[str, float] = {}
            if pr.ra_over_la is not None:
                tissue["tau_close_ra"] = tissue["tau_close_la"] * float(
                    rng.uniform(*pr.ra_over_la))
            for name in ("pv_tau_factor", "heterogeneity_mm", "fibrosis_factor",
                         "fibrosis_density", "diffuse_fibrosis"):
                rng_range = getattr(pr, name)
                if rng_range is not None:
                    extra[name] = float(rng.uniform(*rng_range))
            if pr.tau_open is not None:
                extra["tau_open"] = float(rng.uniform(*pr.tau_open))
            specs.append(SimulationSpec(
                sim_id=first_id + k, rhythm="AF", seed=sim_seed, **tissue,
                heterogeneity=heterogeneity, fibrosis=fib, start_axes=axes, **extra))
    return specs


def _smooth_field(points: NDArray[np.float64], rng: np.random.Generator,
                  n_modes: int = 12, wavelength_mm: float = 40.0) -> NDArray[np.float64]:
    """A smooth random field with zero mean and unit standard deviation over ``points``:
    a sum of random plane waves of wavelength around ``wavelength_mm``."""
    k = rng.normal(size=(n_modes, 3))
    k *= (2 * np.pi / wavelength_mm) / np.linalg.norm(k, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, n_modes)
    f = np.cos(points @ k.T + phase).sum(axis=1)
    return (f - f.mean()) / (f.std() + 1e-12)


#: the pulmonary-vein landmarks of :func:`~egmlib.physics.geometry.biatrial_geometry`; on a
#: geometry from two surfaces (:meth:`~egmlib.physics.geometry.AtrialGeometry.from_atria`) the
#: centres of the LA's holes other than the mitral valve, ``LA_vein_<i>``, take their place
PV_LANDMARKS = ("LA_LSPV", "LA_LIPV", "LA_RSPV", "LA_RIPV")
PV_LANDMARK_PREFIX = "LA_vein_"
#: width (mm, Gaussian sigma from the vein's centre) of the PV region of ``pv_tau_factor``
PV_SIGMA_MM = 12.0


def pv_weight(geometry: AtrialGeometry) -> NDArray[np.float64]:
    """Per node, 1 at a pulmonary-vein centre falling smoothly to 0 over the LA (Gaussian of
    the distance to the nearest vein, sigma :data:`PV_SIGMA_MM`); 0 in the RA and everywhere on
    a geometry without vein landmarks (:data:`PV_LANDMARKS`, or names starting with
    :data:`PV_LANDMARK_PREFIX`: on a real anatomy every LA hole but the largest, which may
    include a cut appendage)."""
    v = geometry.mesh.vertices
    w = np.zeros(len(v))
    points = [p for k, p in geometry.landmarks.items()
              if k in PV_LANDMARKS or k.startswith(PV_LANDMARK_PREFIX)]
    if not points:
        return w
    d = np.min([np.linalg.norm(v - np.asarray(p), axis=1) for p in points], axis=0)
    la = geometry.region == LA
    w[la] = np.exp(-0.5 * (d[la] / PV_SIGMA_MM) ** 2)
    return w


def node_fields(spec: SimulationSpec, geometry: AtrialGeometry
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-node diffusivity D (mm^2/ms) and tau_close (ms) of one simulation.

    tau_close: the atrium's value, times ``1 - (1 - pv_tau_factor) * pv_weight`` near the
    pulmonary veins, times ``1 + heterogeneity * f`` with ``f`` a smooth unit-variance random
    field of wavelength ``heterogeneity_mm`` (clipped to +-2.5). D: ``spec.D`` times
    ``fibrosis_factor`` at fibrotic nodes (inside each patch, all nodes or a random
    ``fibrosis_density`` share of them; anywhere, a random ``diffuse_fibrosis`` share).
    """
    v = geometry.mesh.vertices
    rng = np.random.default_rng(spec.seed)
    tau = np.where(geometry.region == LA, spec.tau_close_la, spec.tau_close_ra).astype(float)
    if spec.pv_tau_factor != 1.0:
        tau *= 1.0 - (1.0 - spec.pv_tau_factor) * pv_weight(geometry)
    if spec.heterogeneity > 0:
        tau *= 1.0 + spec.heterogeneity * np.clip(
            _smooth_field(v, rng, wavelength_mm=spec.heterogeneity_mm), -2.5, 2.5)
    d = np.full(len(v), spec.D)
    for centre, radius in spec.fibrosis:
        inside = np.linalg.norm(v - v[centre], axis=1) <= radius
        if spec.fibrosis_density < 1.0:
            inside &= rng.random(len(v)) < spec.fibrosis_density
        d[inside] *= spec.fibrosis_factor
    if spec.diffuse_fibrosis > 0:
        d[rng.random(len(v)) < spec.diffuse_fibrosis] *= spec.fibrosis_factor
    return d, tau


def single_cell_ap(tau_close: float, duration_ms: float, dt: float = 0.05,
                   v0: float = 0.3, tau_open: float = MS_FIXED["tau_open"]
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(v, h) of an isolated Mitchell-Schaeffer cell excited at t = 0 to ``v0``, sampled every
    ``dt`` ms for ``duration_ms`` (rows: time)."""
    c = MS_FIXED
    n = round(duration_ms / dt) + 1
    out = np.empty((n, 2))
    vv, hh = v0, 1.0
    a_open, a_close = math.exp(-dt / tau_open), math.exp(-dt / tau_close)
    for i in range(n):
        out[i] = vv, hh
        dv = hh * vv * vv * (1 - vv) / c["tau_in"] - vv / c["tau_out"]
        hh = 1 - (1 - hh) * a_open if vv < c["v_gate"] else hh * a_close
        vv += dt * dv
    return out[:, 0], out[:, 1]


def _rotation_period_ms(radius_mm: float, D: float) -> float:
    """Period of one rotation of the phase-field wave: the circumference over the conduction
    velocity, CV ~ 0.95 sqrt(D) (m/s, D in mm^2/ms; measured with a prototype of this engine on
    the idealised atria: 0.67-0.70 m/s at D 0.5, 0.97-1.02 at D 1.0)."""
    return 2 * np.pi * radius_mm / (0.95 * math.sqrt(D))


def phase_field_state(spec: SimulationSpec, geometry: AtrialGeometry, tau_close: NDArray
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Initial (v, h) of an AF simulation: one rotating broken wavefront per atrium."""
    v0 = np.zeros(geometry.n_vertices)
    h0 = np.ones(geometry.n_vertices)
    x = geometry.mesh.vertices
    for reg, axis in zip((RA, LA), spec.start_axes):
        idx = np.flatnonzero(geometry.region == reg)
        if len(idx) == 0:
            continue
        c = x[idx].mean(axis=0)
        radius = float(np.linalg.norm(x[idx] - c, axis=1).mean())
        a = np.asarray(axis, float)
        # an orthonormal frame (e1, e2) perpendicular to the axis
        e1 = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(a, e1)
        rel = x[idx] - c
        theta = np.mod(np.arctan2(rel @ e2, rel @ e1), 2 * np.pi)
        period = _rotation_period_ms(radius, spec.D)
        ap_v, ap_h = single_cell_ap(float(np.median(tau_close[idx])), period, dt=0.1,
                                    tau_open=spec.tau_open)
        k = np.minimum((theta / (2 * np.pi) * period / 0.1).astype(int), len(ap_v) - 1)
        v0[idx], h0[idx] = ap_v[k], ap_h[k]
    return v0, h0


def _laplacian(geometry: AtrialGeometry, link_strength: float = 1.0
               ) -> tuple[sparse.csr_matrix, NDArray[np.float64]]:
    """Stiffness with inter-atrial links (link stiffness = ``link_strength`` times the mean
    |off-diagonal| stiffness of the mesh) and the lumped mass."""
    k = geometry.stiffness()
    if len(geometry.links):
        off = -k.data[k.data < 0]
        w = link_strength * float(off.mean())
        i, j = geometry.links[:, 0], geometry.links[:, 1]
        n = geometry.n_vertices
        kl = sparse.coo_matrix((np.full(len(i), -w), (i, j)), shape=(n, n))
        kl = kl + kl.T
        k = (k + kl - sparse.diags(np.asarray(kl.sum(axis=1)).ravel())).tocsr()
    return k, geometry.mesh.vertex_areas()


@dataclass
class SimulationResult:
    """What a batch of simulations recorded (after the discarded transient).

    Attributes:
        specs: the simulations, one per column.
        t_ms: recording times (ms from the end of the transient).
        traces: per lead, float32 array (S, n_out, n_samples) of lead @ sources.
        activation_count: (S, n_nodes) activations during the recording.
        first_activation_ms: (S, n_nodes) first activation time in the recording (nan: none).
        snapshots: (S, n_snapshots, n_nodes) float32 voltages (dimensionless v) at
            ``snapshot_ms``.
        snapshot_ms: times of the snapshots (ms from the end of the transient).
        wavefronts: (S, n_checks) number of separate wavefronts (connected sets of nodes that
            activated in the last ``WAVEFRONT_WINDOW_MS``) at regular checks.
        alive: (S,) True when the maximum voltage stayed above ``V_DEAD`` at every check.
        activations: per simulation, the (node, time ms) of every activation, if asked for.
    """

    specs: list[SimulationSpec]
    t_ms: NDArray[np.float64]
    traces: dict[str, NDArray[np.float32]]
    activation_count: NDArray[np.int32]
    first_activation_ms: NDArray[np.float32]
    snapshots: NDArray[np.float32]
    snapshot_ms: NDArray[np.float64]
    wavefronts: NDArray[np.int32]
    alive: NDArray[np.bool_]
    activations: list[NDArray[np.float64]] | None = field(default=None)


WAVEFRONT_WINDOW_MS = 10.0
#: most steps in one call of the numba kernel (about 5-10 ms of work at batch 24)
MAX_CHUNK = 50


# ------------------------------------------------------------------------------------------
# the time-stepping kernel of Simulator.run
#
# Profiling the first version (one allocating torch expression per term) on a 2-core AMD EPYC
# virtual machine,
# 3,500 nodes x 32 simulations: each step ran about 30 full passes over (n, S) arrays (each
# allocating its result) for about 27 us each, against 80-100 us for the sparse product; the
# per-step activation bookkeeping (interpolated crossing time, t_last, t_first, count over the
# whole array) was a third of them. The kernel below keeps the sparse product and does:
#   * 5 in-place passes (addcmul) for v, with the gate stored as y = 1 - h:
#     a = v - v*v;  a -= a*y;  a -= tau_in/tau_out;  v' = v + (dt/tau_in) v*a;  v' -= (dt D) Lv
#     (v' = v + dt (h v^2 (1-v) / tau_in - v / tau_out - D Lv) with the constants folded);
#   * 4 for the Rush-Larsen gate written as y' = y A + B:  m = v < v_gate;
#     A = where(m, a_open, a_close);  B = where(m, 0, 1 - a_close);  y' = B + y*A;
#   * 2 for the activations, only while recording: above' = v' >= 0.5 (kept for the next step,
#     so v < 0.5 need not be recomputed) and up = above' > above, then one nonzero(); the
#     crossing time is interpolated only at those few entries (numpy, float32, the same
#     formula), and count / first / last activation are folded from the event lists at each
#     check (every ``check_every_ms``) instead of every step;
#   * pacing from a schedule computed once (no numpy work per step), the stimulus array rebuilt
#     only when the set of stimulated columns changes;
#   * every buffer preallocated (ping-pong v / v'), the sparse product written with ``out=``.
# The reordered float32 arithmetic differs from the plain expression by rounding only (a few
# ulp per step). ``torch.compile`` of the elementwise part was tried (torch 2.13, gcc,
# inductor's vectorised C++): it compiled in 3-6 s but ran the fused step 3-4x slower than
# these eager passes on this machine, so it is not used.
# ------------------------------------------------------------------------------------------
class _StepBuffers:
    """State and preallocated work arrays of one batch, advanced in place (see above).

    The gate is stored as its complement y = 1 - h: recovery (v < v_gate) is then the exact
    multiplication y' = y a_open, as precise as the plain 1 - (1 - h) a_open. (Storing h and
    updating h' = h a + b lost enough precision during recovery to make the second beat of a
    paced run arrive 0.002-0.003 ms early after 100 ms of conduction, three times the
    float32-vs-float64 difference of the plain expression.)
    """

    def __init__(self, v: torch.Tensor, y: torch.Tensor, dd: torch.Tensor,
                 a_close: torch.Tensor, a_open: torch.Tensor, dt: float) -> None:
        c = MS_FIXED
        self.v, self.y, self.dd, self.a_close = v.contiguous(), y.contiguous(), dd, a_close
        # y' = y a_close + (1 - a_close) above the gate voltage; b_close from the float32
        # a_close so that the fixed point is exactly y = 1
        self.b_close = 1.0 - a_close
        self.v_new = torch.empty_like(self.v)
        self.lv = torch.zeros_like(self.v)
        self.tmp = torch.empty_like(self.v)
        self.gate_a = torch.empty_like(self.v)
        self.gate_b = torch.empty_like(self.v)
        self.below_gate = torch.empty(self.v.shape, dtype=torch.bool, device=v.device)
        self.above = torch.empty_like(self.below_gate)
        self.above_new = torch.empty_like(self.below_gate)
        self.up = torch.empty_like(self.below_gate)
        self.g_scale = dt / c["tau_in"]
        self.leak = (dt / c["tau_out"]) / self.g_scale  # tau_in / tau_out
        self.v_gate = c["v_gate"]
        # (S,) exp(-dt / tau_open) per column, broadcast against the (n, S) state
        self.a_open = a_open.to(dtype=v.dtype, device=v.device)
        self.zero = torch.zeros((), dtype=v.dtype, device=v.device)

    def laplacian(self, lap: torch.Tensor) -> None:
        """lv = (M^-1 K) v."""
        torch.mm(lap, self.v, out=self.lv)

    def advance(self, stim_dt: torch.Tensor | None) -> None:
        """v_new from v (and lv), and the gate in place; v itself is not modified."""
        v, a = self.v, self.tmp
        torch.addcmul(v, v, v, value=-1.0, out=a)  # v (1 - v)
        a.addcmul_(a, self.y, value=-1.0)  # h v (1 - v), h = 1 - y
        a.sub_(self.leak)
        # v' = v + (dt / tau_in) v (h v (1 - v) - tau_in / tau_out) - dt D Lv
        torch.addcmul(v, v, a, value=self.g_scale, out=self.v_new)
        self.v_new.addcmul_(self.dd, self.lv, value=-1.0)
        if stim_dt is not None:
            self.v_new.add_(stim_dt)
        # Rush-Larsen: y' = y a_open below the gate voltage, y a_close + (1 - a_close) above
        torch.lt(v, self.v_gate, out=self.below_gate)
        torch.where(self.below_gate, self.a_open, self.a_close, out=self.gate_a)
        torch.where(self.below_gate, self.zero, self.b_close, out=self.gate_b)
        torch.addcmul(self.gate_b, self.y, self.gate_a, out=self.y)

    def start_detection(self) -> None:
        torch.ge(self.v, V_ACTIVATION, out=self.above)

    def up_crossings(self) -> torch.Tensor:
        """Flat indices of the entries with v < V_ACTIVATION <= v_new."""
        torch.ge(self.v_new, V_ACTIVATION, out=self.above_new)
        torch.gt(self.above_new, self.above, out=self.up)
        self.above, self.above_new = self.above_new, self.above
        return torch.nonzero(self.up.view(-1)).view(-1)

    def swap(self) -> None:
        self.v, self.v_new = self.v_new, self.v


class _StimulusSchedule:
    """Which columns are stimulated at each step, as one small integer per step (-1: none)."""

    def __init__(self, cl_steps: NDArray[np.int64], stim_steps: int, n_steps: int) -> None:
        paced = np.flatnonzero(cl_steps > 0)
        self._patterns: list[NDArray[np.bool_]] = []
        self._keys = [-1] * n_steps
        if not len(paced) or n_steps == 0:
            return
        steps = np.arange(n_steps)[:, None]
        on = np.zeros((n_steps, len(cl_steps)), bool)
        on[:, paced] = steps % cl_steps[paced] < stim_steps
        rows = np.flatnonzero(on.any(axis=1))
        if not len(rows):
            return
        uniq, inverse = np.unique(on[rows], axis=0, return_inverse=True)
        self._patterns = list(uniq)
        keys = np.full(n_steps, -1, np.int64)
        keys[rows] = inverse.ravel()
        self._keys = keys.tolist()

    def __getitem__(self, step: int) -> int:
        return self._keys[step]

    def columns(self, key: int) -> NDArray[np.bool_]:
        return self._patterns[key]


def _stimulus_schedule(cl_steps: NDArray[np.int64], stim_steps: int, n_steps: int
                       ) -> _StimulusSchedule:
    return _StimulusSchedule(cl_steps, stim_steps, n_steps)


class _ActivationLog:
    """Activation events (flat index node * S + column, crossing time) gathered per step and
    folded into count / first / last activation time at checks and at the end (torch path);
    the numba kernel writes count / first / last into this object's arrays directly."""

    def __init__(self, n: int, s: int, transient_ms: float, dt: float, keep_all: bool) -> None:
        self.s, self.transient_ms, self.dt = s, transient_ms, dt
        self.t_last = np.full(n * s, -1e9, np.float32)
        self.t_first = np.full(n * s, np.nan, np.float32)
        self.count = np.zeros(n * s, np.int32)
        self._idx: list[NDArray[np.int64]] = []
        self._tc: list[NDArray[np.float32]] = []
        self._all: list[tuple[NDArray[np.int64], NDArray[np.float32]]] | None = (
            [] if keep_all else None)

    def add(self, t: float, idx: torch.Tensor, v: torch.Tensor, v_new: torch.Tensor) -> None:
        """Crossings at flat indices ``idx`` in the step starting at ``t``: linear
        interpolation of the crossing time within the step (float32, as the dense formula
        (t - transient) + dt (0.5 - v) / (v_new - v + 1e-12))."""
        if idx.device.type == "cpu":
            i = idx.numpy()
            v0, v1 = v.numpy()[i], v_new.numpy()[i]
        else:
            i = idx.cpu().numpy()
            v0, v1 = v[idx].cpu().numpy(), v_new[idx].cpu().numpy()
        one = np.float32
        frac = (one(V_ACTIVATION) - v0) / (v1 - v0 + one(1e-12))
        tc = one(t - self.transient_ms) + one(self.dt) * frac
        self._idx.append(i)
        self._tc.append(tc)
        if self._all is not None:
            self._all.append((i, tc))

    @property
    def keeps_all(self) -> bool:
        """Whether every event is kept for :meth:`events`."""
        return self._all is not None

    def record(self, idx: NDArray[np.int64], tc: NDArray[np.float32]) -> None:
        """Keep the events of one step for :meth:`events` only: the numba kernel updates
        count / first / last activation itself."""
        if self._all is not None:
            self._all.append((idx, tc.copy()))

    def fold(self) -> None:
        if not self._idx:
            return
        idx, tc = np.concatenate(self._idx), np.concatenate(self._tc)
        self._idx, self._tc = [], []
        self.count += np.bincount(idx, minlength=len(self.count)).astype(np.int32)
        self.t_last[idx] = tc  # repeated indices: the last (latest) assignment wins
        uniq, first = np.unique(idx, return_index=True)
        new = np.isnan(self.t_first[uniq])
        self.t_first[uniq[new]] = tc[first[new]]

    def events(self) -> list[NDArray[np.float64]]:
        """Per column, the (node, time) of every activation in time order (nodes ascending
        within a step)."""
        if not self._all:
            return [np.zeros((0, 2)) for _ in range(self.s)]
        idx = np.concatenate([a[0] for a in self._all])
        tc = np.concatenate([a[1] for a in self._all])
        col = idx % self.s
        order = np.argsort(col, kind="stable")
        bounds = np.searchsorted(col[order], np.arange(self.s + 1))
        out = []
        for j in range(self.s):
            sel = order[bounds[j]:bounds[j + 1]]
            out.append(np.column_stack([idx[sel] // self.s, tc[sel]]) if len(sel)
                       else np.zeros((0, 2)))
        return out


#: accepted values of ``Simulator(backend=...)``
BACKENDS = ("auto", "numba", "torch")


def numba_available() -> bool:
    """Whether the fused CPU kernel (``backend="numba"``) can be used here."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class _Setup:
    """What both time-stepping loops of :meth:`Simulator.run` start from (numpy, float64 unless
    said): per-node-and-column fields, the operators, pacing and the step bookkeeping."""

    n: int
    s: int
    lap: sparse.csr_matrix  # M^-1 K
    d_nodes: NDArray  # (n, s) D
    tau_close: NDArray  # (n, s)
    a_open: NDArray[np.float32]  # (s,) exp(-dt / tau_open) per column
    v0: NDArray
    h0: NDArray
    src: NDArray  # (n, s) -V_SCALE D M: the sources are src * (M^-1 K v)
    pace_dt: NDArray[np.float32]  # (n, s) dt * stimulus current
    cl_steps: NDArray[np.int64]  # (s,) pacing cycle in steps, 0: not paced
    stim_steps: int
    n_steps: int
    n_steps_tr: int
    rec_every: int
    n_rec: int
    check_every: int
    snap_steps: dict[int, int]  # step -> snapshot index (v before that step)
    leads: dict[str, NDArray[np.float32]]
    af_cols: NDArray[np.bool_]


class _ThreadChooser:
    """The thread count of the numba kernel, chosen by the step rate measured while running.

    The kernel has one barrier per step (its rows are split over the threads). On a 2-core AMD EPYC
    virtual machine
    machine with nothing else running, 2 threads ran a step of 3,500 nodes x 24 simulations in
    about half the time of one; with two other CPU-bound processes running, 2 threads took 8 ms a
    step against 0.25-0.3 ms for one (a thread that waits at the barrier for a descheduled
    partner). The results do not depend on the thread count (every entry is computed by one
    thread in a fixed order), so the choice is free: each candidate (1 first, then
    ``max_threads``) is timed over a short window, the faster one runs for ``period`` steps,
    then the other is tried again; the period doubles (up to ``max_period``) while the choice
    holds. A probe stops early when it is already 1.5x slower than the best rate known, so a
    bad candidate costs about 40 steps.
    """

    def __init__(self, max_threads: int, window: int = 200, period: int = 4000,
                 max_period: int = 64000) -> None:
        self.candidates = [1, max_threads] if max_threads > 1 else [1]
        self.window, self.period0, self.max_period = window, period, max_period
        self.period = period
        self.rate: dict[int, float] = {}  # seconds per step of each candidate, last window
        self._probing = list(self.candidates)  # candidates still to time, the current first
        self.current = self._probing[0]
        self._incumbent: int | None = None
        self._acc_s, self._acc_steps, self._since = 0.0, 0, 0
        #: (threads, seconds per step) of every finished window, for tests and benchmarks
        self.history: list[tuple[int, float]] = []

    def update(self, seconds: float, steps: int) -> int:
        """Account a kernel call of ``steps`` steps that took ``seconds``; returns the thread
        count for the next call."""
        self._acc_s += seconds
        self._acc_steps += steps
        self._since += steps
        per_step = self._acc_s / self._acc_steps
        if self._probing:
            best = min(self.rate.values(), default=math.inf)
            if self._acc_steps >= self.window or (self._acc_steps >= 40
                                                   and per_step > 1.5 * best):
                self._finish(per_step)
                self._probing.pop(0)
                if self._probing:
                    self.current = self._probing[0]
                else:
                    self._choose()
        elif self._acc_steps >= self.window:
            self._finish(per_step)
            if self._since >= self.period and len(self.candidates) > 1:
                self._probing = [c for c in self.candidates if c != self.current]
                self.current = self._probing[0]
        return self.current

    def _finish(self, per_step: float) -> None:
        self.rate[self.current] = per_step
        self.history.append((self.current, per_step))
        self._acc_s, self._acc_steps = 0.0, 0

    def _choose(self) -> None:
        winner = min(self.rate, key=self.rate.__getitem__)
        if self._incumbent is not None:
            self.period = (min(2 * self.period, self.max_period) if winner == self._incumbent
                           else self.period0)
        self.current = self._incumbent = winner
        self._since = 0


class Simulator:
    """Batched monodomain Mitchell-Schaeffer solver on one atrial geometry.

    Two implementations of the same time step (:meth:`run`):

    * ``"numba"``: the fused CPU kernel of :mod:`egmlib.physics._simulate_numba`, one parallel pass
    per
      step over the stiffness rows doing the diffusion product, reaction, stimulus, gate and
      activation detection; the activation count / first / last times are kept inside it.
      Measured on a 2-core AMD EPYC virtual machine (README speed section): about 3x the torch path
      per step
      at 24 simulations per batch. Its float32 arithmetic has no reductions across columns and
      no fused multiply-adds, so its results do not depend on the thread count.
    * ``"torch"``: the float32 torch tensors of ``_StepBuffers`` (a sparse CSR product and
      about a dozen in-place elementwise passes per step); runs on CUDA too, and is the
      reference the numba kernel is tested against.

    The two agree to float32 rounding (a few ulp per step); chaotic AF runs amplify that, so a
    data set is reproducible bit for bit only with the same backend (recorded in the data-set
    manifest).

    Args:
        geometry: the tissue surface.
        dt: time step (ms); must divide the recording interval.
        device: torch device (``"cpu"`` or ``"cuda"``).
        threads: torch intra-op threads during :meth:`run`, set for the call and restored
            after it (default ``None``: the process's setting, e.g. from
            :func:`egmlib.core.process.setup_process`). The numba kernel uses as many threads
            as torch is set to during :meth:`run` (at most numba's own limit), so one setting
            governs both. Constructing or running a simulator changes no process-wide
            setting.
        backend: ``"auto"`` (numba on the CPU when it is installed, else torch), ``"numba"``
            or ``"torch"``.
    """

    def __init__(self, geometry: AtrialGeometry, dt: float = 0.1, device: str = "cpu",
                 threads: int | None = None, backend: str = "auto") -> None:
        if not 0 < dt <= 0.2:
            raise ValueError(f"dt must lie in (0, 0.2] ms; got {dt}")
        if backend not in BACKENDS:
            raise ValueError(f"parameter 'backend' must be one of "
                             f"{', '.join(repr(b) for b in BACKENDS)}; got {backend!r}")
        self.geometry = geometry
        self.dt = float(dt)
        self.device = torch.device(device)
        if backend == "numba":
            if self.device.type != "cpu":
                raise ValueError(f"parameter 'backend': 'numba' runs on the CPU only; got "
                                 f"device {device!r} (use backend='torch' or 'auto')")
            if not numba_available():
                raise ImportError("parameter 'backend': 'numba' needs the numba package "
                                  "(pip install numba==0.68.1), or use backend='torch'")
        if backend == "auto":
            backend = "numba" if self.device.type == "cpu" and numba_available() else "torch"
        #: the backend :meth:`run` uses (``"numba"`` or ``"torch"``)
        self.backend = backend
        #: numba backend: (threads, seconds per step) of each timing window of the last run
        self.last_thread_history: list[tuple[int, float]] = []
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads: got {threads!r}; allowed: an int >= 1 or None")
        #: torch (and numba) threads during :meth:`run`; ``None``: the process's setting
        self.threads = threads
        self._adjacency = self._graph()

    def _graph(self) -> sparse.csr_matrix:
        a = self.geometry.mesh.adjacency().tolil()
        for i, j in self.geometry.links:
            a[i, j] = a[j, i] = 1
        return a.tocsr()

    def operators(self, link_strength: float) -> tuple[sparse.csr_matrix, NDArray]:
        """(stiffness with links, lumped mass) for a link strength."""
        return _laplacian(self.geometry, link_strength)

    def max_stable_dt(self, d_max: float, link_strength: float = 1.0) -> float:
        """Largest forward-Euler-stable step for the diffusion term: 2 / (D_max lambda_max)."""
        from scipy.sparse.linalg import eigsh

        k, m = self.operators(link_strength)
        lam = eigsh(k, k=1, M=sparse.diags(m), which="LA", return_eigenvectors=False,
                    tol=1e-3)[0]
        return 2.0 / (d_max * float(lam))

    def run(self, specs: Sequence[SimulationSpec], duration_ms: float, *,
            transient_ms: float = 0.0, leads: Mapping[str, NDArray] | None = None,
            record_dt_ms: float = 2.0, snapshot_ms: Sequence[float] = (),
            check_every_ms: float = 50.0, log_activations: bool = False,
            show_progress: bool = True) -> SimulationResult:
        """Advance the simulations ``specs`` together for ``transient_ms + duration_ms``.

        Args:
            specs: one simulation per column; they may mix rhythms.
            duration_ms: recorded time after the transient.
            transient_ms: initial time simulated and discarded.
            leads: named dense matrices (n_out, n_nodes); each records ``lead @ q`` every
                ``record_dt_ms``, with q the membrane current sources of
                :func:`egmlib.physics.electrograms.current_sources` (mV units, 1/r convention).
            snapshot_ms: times (after the transient) at which v of every node is kept.
            check_every_ms: interval of the liveness and wavefront checks.
            log_activations: keep every activation (node, time) (tests, CV measurement).
        """
        with (torch_threads(self.threads) if self.threads is not None
              else contextlib.nullcontext()):
            su = self._setup(specs, duration_ms, transient_ms, leads, record_dt_ms, snapshot_ms,
                             check_every_ms)
            acts = _ActivationLog(su.n, su.s, transient_ms, self.dt, keep_all=log_activations)
            loop = self._loop_numba if self.backend == "numba" else self._loop_torch
            traces, snaps, wavefronts, alive = loop(su, acts, transient_ms, show_progress)
        n, s = su.n, su.s
        return SimulationResult(
            specs=list(specs),
            t_ms=np.arange(su.n_rec) * record_dt_ms,
            traces={name: np.ascontiguousarray(tr.transpose(2, 1, 0))
                    for name, tr in traces.items()},
            activation_count=acts.count.reshape(n, s).T.copy(),
            first_activation_ms=acts.t_first.reshape(n, s).T.copy(),
            snapshots=np.ascontiguousarray(snaps.transpose(2, 0, 1)),
            snapshot_ms=np.asarray(snapshot_ms, float),
            wavefronts=(np.stack(wavefronts, axis=1).astype(np.int32) if wavefronts
                        else np.zeros((s, 0), np.int32)),
            alive=alive,
            activations=acts.events() if log_activations else None,
        )

    def _setup(self, specs: Sequence[SimulationSpec], duration_ms: float, transient_ms: float,
               leads: Mapping[str, NDArray] | None, record_dt_ms: float,
               snapshot_ms: Sequence[float], check_every_ms: float) -> _Setup:
        """Check the arguments and compute what both loops need."""
        if not specs:
            raise ValueError("specs must hold at least one simulation")
        dt, n = self.dt, self.geometry.n_vertices
        rec_every = round(record_dt_ms / dt)
        if rec_every < 1 or abs(rec_every * dt - record_dt_ms) > 1e-9:
            raise ValueError(f"dt = {dt} ms must divide record_dt_ms = {record_dt_ms} ms")
        link = {s.link_strength for s in specs}
        if len(link) != 1:
            raise ValueError("simulations of one batch must share link_strength")
        k, mass = self.operators(link.pop())
        n_steps_tr = round(transient_ms / dt)
        n_rec = round(duration_ms / record_dt_ms)
        n_steps = n_steps_tr + n_rec * rec_every
        s = len(specs)
        bad = [sp.tau_open for sp in specs if not sp.tau_open > 0]
        if bad:
            raise ValueError(f"tau_open: got {bad[0]!r}; allowed: a time constant > 0 ms")

        # per-node, per-simulation fields
        d_nodes = np.empty((n, s))
        tau_close = np.empty((n, s))
        v0 = np.zeros((n, s))
        h0 = np.ones((n, s))
        for j, spec in enumerate(specs):
            d_nodes[:, j], tau_close[:, j] = node_fields(spec, self.geometry)
            if spec.rhythm == "AF":
                v0[:, j], h0[:, j] = phase_field_state(spec, self.geometry, tau_close[:, j])
        # the stability limit needs the largest eigenvalue of M^-1 K (eigsh, about 0.4 s on the
        # default geometry): computed once per link strength and kept on the simulator
        cache = self.__dict__.setdefault("_stable_dt_at_unit_d", {})
        link_s = specs[0].link_strength
        if link_s not in cache:
            cache[link_s] = self.max_stable_dt(1.0, link_s)
        lam_dt = cache[link_s] / float(d_nodes.max())
        if dt > 0.9 * lam_dt:
            raise ValueError(f"dt = {dt} ms is unstable for D_max = {d_nodes.max():.3g}; "
                             f"use dt <= {0.9 * lam_dt:.3g} ms")
        lap = (sparse.diags(1.0 / mass) @ k).tocsr()

        # pacing: dt * the stimulus of each column and its cycle in steps
        pace_dt = np.zeros((n, s), dtype=np.float32)
        cl_steps = np.zeros(s, dtype=np.int64)
        for j, spec in enumerate(specs):
            if spec.rhythm == "SR":
                centre = self.geometry.pacing[spec.pacing_shift % len(self.geometry.pacing)]
                x = self.geometry.mesh.vertices
                r_patch = max(np.linalg.norm(x[self.geometry.pacing] - x[
                    self.geometry.pacing[0]], axis=1).max(), 1e-9)
                patch = np.flatnonzero(np.linalg.norm(x - x[centre], axis=1) <= r_patch)
                pace_dt[patch, j] = dt * STIM_AMPLITUDE
                cl_steps[j] = round(spec.cycle_length_ms / dt)

        for name, m in (leads or {}).items():
            if m.ndim != 2 or m.shape[1] != n:
                raise ValueError(f"lead {name!r} must have shape (n_out, {n}); got {m.shape}")
        return _Setup(
            n=n, s=s, lap=lap, d_nodes=d_nodes, tau_close=tau_close, v0=v0, h0=h0,
            # computed per column exactly as the scalar before: float32(exp(-dt / tau_open))
            a_open=np.array([math.exp(-dt / sp.tau_open) for sp in specs], dtype=np.float32),
            # sources q = -V_SCALE * (D/D_ref) * (K v) = -V_SCALE * D * M * (M^-1 K v), D_ref 1
            src=-V_SCALE * d_nodes * mass[:, None], pace_dt=pace_dt, cl_steps=cl_steps,
            stim_steps=round(STIM_DURATION / dt), n_steps=n_steps, n_steps_tr=n_steps_tr,
            rec_every=rec_every, n_rec=n_rec, check_every=max(1, round(check_every_ms / dt)),
            snap_steps={n_steps_tr + round(t / dt): i for i, t in enumerate(snapshot_ms)},
            leads={name: np.ascontiguousarray(m, dtype=np.float32)
                   for name, m in (leads or {}).items()},
            af_cols=np.array([sp.rhythm == "AF" for sp in specs]))

    def _check(self, su: _Setup, acts: _ActivationLog, step: int, transient_ms: float,
               v: NDArray[np.float32], alive: NDArray[np.bool_], wavefronts: list[NDArray]
               ) -> None:
        """Liveness (AF columns) and wavefront count after ``step``; ``v`` is the state."""
        vmax = v.max(axis=0)
        alive &= ~(su.af_cols & (vmax < V_DEAD))
        acts.fold()
        recent = ((step * self.dt - transient_ms) - acts.t_last < WAVEFRONT_WINDOW_MS)
        wavefronts.append(self._count_fronts(recent.reshape(su.n, su.s)))

    def _is_check_step(self, su: _Setup, step: int) -> bool:
        return step > su.n_steps_tr and (step - su.n_steps_tr) % su.check_every == 0

    def _loop_torch(self, su: _Setup, acts: _ActivationLog, transient_ms: float,
                    show_progress: bool
                    ) -> tuple[dict[str, NDArray], NDArray, list[NDArray], NDArray]:
        """The time loop on torch tensors (``backend="torch"``; see ``_StepBuffers``).

        Returns (traces per lead (n_rec, n_out, S), snapshots (n_snap, n, S), wavefront
        counts per check, alive per column)."""
        dt, n, s, n_steps_tr = self.dt, su.n, su.s, su.n_steps_tr
        dev, f32 = self.device, torch.float32
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            lap_t = torch.sparse_csr_tensor(
                torch.from_numpy(su.lap.indptr), torch.from_numpy(su.lap.indices),
                torch.from_numpy(su.lap.data.astype(np.float32)), size=(n, n), device=dev,
                check_invariants=False)
        src_t = torch.from_numpy(su.src).to(dev, f32)
        buf = _StepBuffers(
            v=torch.from_numpy(su.v0).to(dev, f32),
            y=1.0 - torch.from_numpy(su.h0).to(dev, f32),
            dd=torch.from_numpy(dt * su.d_nodes).to(dev, f32),
            a_close=torch.from_numpy(np.exp(-dt / su.tau_close)).to(dev, f32),
            a_open=torch.from_numpy(su.a_open).to(dev), dt=dt)
        # a per-step schedule of which columns are stimulated (computed once, so the loop
        # does no numpy work per step)
        schedule = _stimulus_schedule(su.cl_steps, su.stim_steps, su.n_steps)
        pace_t = torch.from_numpy(su.pace_dt).to(dev)
        stim = torch.zeros((n, s), dtype=f32, device=dev)
        stim_key = -1
        lead_t = {name: torch.from_numpy(m).to(dev) for name, m in su.leads.items()}
        traces = {name: torch.empty((su.n_rec, m.shape[0], s), dtype=f32, device=dev)
                  for name, m in lead_t.items()}
        q = torch.empty((n, s), dtype=f32, device=dev)
        snaps = torch.zeros((len(su.snap_steps), n, s), dtype=f32)
        wavefronts: list[NDArray] = []
        alive = np.ones(s, bool)

        with torch.inference_mode():
            for step in progress(range(su.n_steps), desc="simulate", total=su.n_steps,
                                 disable=not show_progress, mininterval=1.0, leave=False):
                t = step * dt
                if step in su.snap_steps:  # v at time t, before this step's update
                    snaps[su.snap_steps[step]] = buf.v.cpu()
                buf.laplacian(lap_t)
                recording = step >= n_steps_tr
                if recording and (step - n_steps_tr) % su.rec_every == 0:
                    torch.mul(src_t, buf.lv, out=q)
                    r = (step - n_steps_tr) // su.rec_every
                    for name, m in lead_t.items():
                        torch.mm(m, q, out=traces[name][r])
                key = schedule[step]
                if key >= 0 and key != stim_key:
                    stim.zero_()
                    on = torch.from_numpy(schedule.columns(key)).to(dev)
                    stim[:, on] = pace_t[:, on]
                    stim_key = key
                buf.advance(stim if key >= 0 else None)
                if recording:
                    if step == n_steps_tr:
                        buf.start_detection()
                    idx = buf.up_crossings()
                    if idx.numel():
                        acts.add(t, idx, buf.v.view(-1), buf.v_new.view(-1))
                buf.swap()
                if recording and self._is_check_step(su, step):
                    self._check(su, acts, step, transient_ms, buf.v.cpu().numpy(), alive,
                                wavefronts)
                if step % 1000 == 0 and not bool(torch.isfinite(buf.v).all()):
                    raise FloatingPointError(f"non-finite voltage at t = {t:.1f} ms")
        acts.fold()
        return ({name: tr.cpu().numpy() for name, tr in traces.items()}, snaps.numpy(),
                wavefronts, alive)

    def _loop_numba(self, su: _Setup, acts: _ActivationLog, transient_ms: float,
                    show_progress: bool
                    ) -> tuple[dict[str, NDArray], NDArray, list[NDArray], NDArray]:
        """The time loop on the fused numba kernel (``backend="numba"``), same returns as
        :meth:`_loop_torch`.

        The kernel runs the steps between two points where Python has to act (a recording
        step, whose diffusion term gives the sources; a check; the step before a snapshot; a
        finiteness check every 1000 steps; every recording step when all activations are
        logged), so a 7 s run makes a few thousand calls. The lead products stay dense torch
        matrix products (BLAS), each over the sources of up to 25 recordings at once.
        """
        import numba

        from egmlib.physics import _simulate_numba as kernel

        dt, n, s, n_tr, n_steps = self.dt, su.n, su.s, su.n_steps_tr, su.n_steps
        f32 = np.float32
        c = MS_FIXED
        v = np.ascontiguousarray(su.v0, dtype=f32)
        v_new = np.empty_like(v)
        y = f32(1.0) - su.h0.astype(f32)
        dd = (dt * su.d_nodes).astype(f32)
        a_close = np.exp(-dt / su.tau_close).astype(f32)
        lv = np.zeros((n, s), f32)
        up = np.zeros((n, s), np.uint8)
        src = su.src.astype(f32)
        # sources of up to ``per_flush`` recordings side by side, then one product per lead:
        # a (n_out, n) lead times (n, 24) sources per recording read the whole lead matrix
        # for little arithmetic (2.8 ms per product measured on the shared machine, a third
        # of the kernel's time); 25 recordings at once make it one compute-bound product
        per_flush = max(1, min(25, su.n_rec))
        q_buf = np.empty((n, per_flush * s), f32)
        pending, first_rec = 0, 0
        indptr = su.lap.indptr.astype(np.int32)
        indices = su.lap.indices.astype(np.int32)
        data = su.lap.data.astype(f32)
        count = acts.count.reshape(n, s)
        t_first = acts.t_first.reshape(n, s)
        t_last = acts.t_last.reshape(n, s)
        consts = (f32(dt / c["tau_in"]), f32(c["tau_in"] / c["tau_out"]), f32(c["v_gate"]),
                  su.a_open, f32(V_ACTIVATION))
        lead_t = {name: torch.from_numpy(m) for name, m in su.leads.items()}
        traces = {name: np.empty((su.n_rec, m.shape[0], s), f32) for name, m in su.leads.items()}
        snaps = np.zeros((len(su.snap_steps), n, s), f32)
        wavefronts: list[NDArray] = []
        alive = np.ones(s, bool)
        keep_all = acts.keeps_all

        def flush(r0: int, k: int) -> None:
            q_t = torch.from_numpy(q_buf[:, :k * s])
            for name, m in lead_t.items():
                out = torch.mm(m, q_t).numpy().reshape(m.shape[0], k, s)
                traces[name][r0:r0 + k] = out.transpose(1, 0, 2)

        # the steps after which Python acts
        marks = np.zeros(n_steps, bool)
        if n_steps:
            marks[n_steps - 1] = True
            marks[n_tr::su.rec_every] = True
            marks[n_tr + su.check_every::su.check_every] = True
            marks[::1000] = True
            marks[MAX_CHUNK - 1::MAX_CHUNK] = True  # short calls: the thread choice can react
            if keep_all:
                marks[n_tr:] = True
            for step in su.snap_steps:
                if 1 <= step <= n_steps:
                    marks[step - 1] = True
        stops = np.flatnonzero(marks).tolist()

        chooser = _ThreadChooser(max(1, min(torch.get_num_threads(),
                                            numba.config.NUMBA_NUM_THREADS)))
        self.last_thread_history = chooser.history
        before = numba.get_num_threads()
        cur = 0
        try:
            with progress(None, desc="simulate", total=n_steps, disable=not show_progress,
                          mininterval=1.0, leave=False) as bar:
                for stop in stops:
                    if cur in su.snap_steps:  # v before step cur
                        snaps[su.snap_steps[cur]] = v
                    rec = stop >= n_tr and (stop - n_tr) % su.rec_every == 0
                    keep_up = keep_all and stop >= n_tr
                    numba.set_num_threads(chooser.current)
                    t0 = time.perf_counter()
                    kernel.advance(cur, stop - cur + 1, n_tr, transient_ms, dt, indptr,
                                   indices, data, v, v_new, y, lv, dd, a_close, su.pace_dt,
                                   su.cl_steps, su.stim_steps, *consts, count, t_first,
                                   t_last, up, rec, keep_up, kernel.BLOCK)
                    chooser.update(time.perf_counter() - t0, stop - cur + 1)
                    if (stop - cur + 1) % 2:
                        v, v_new = v_new, v
                    if rec:
                        if not pending:
                            first_rec = (stop - n_tr) // su.rec_every
                        np.multiply(src, lv, out=q_buf[:, pending * s:(pending + 1) * s])
                        pending += 1
                        if pending == per_flush:
                            flush(first_rec, pending)
                            pending = 0
                    if keep_up:
                        idx = np.flatnonzero(up)
                        if len(idx):
                            acts.record(idx, acts.t_last[idx])
                    if stop >= n_tr and self._is_check_step(su, stop):
                        self._check(su, acts, stop, transient_ms, v, alive, wavefronts)
                    if stop % 1000 == 0 and not np.isfinite(v).all():
                        raise FloatingPointError(
                            f"non-finite voltage at t = {stop * dt:.1f} ms")
                    bar.update(stop + 1 - cur)
                    cur = stop + 1
                if pending:
                    flush(first_rec, pending)
        finally:
            numba.set_num_threads(before)
        return traces, snaps, wavefronts, alive

    def _count_fronts(self, recent: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Connected components of recently activated nodes, per column."""
        out = np.zeros(recent.shape[1], np.int64)
        for j in range(recent.shape[1]):
            idx = np.flatnonzero(recent[:, j])
            if len(idx):
                sub = self._adjacency[idx][:, idx]
                out[j] = csgraph.connected_components(sub, directed=False)[0]
        return out


def conduction_velocity(geometry: AtrialGeometry, activation_ms: NDArray) -> NDArray:
    """Conduction velocity (m/s, equal to mm/ms) per triangle from nodal activation times.

    The activation time is interpolated linearly on each triangle; its surface gradient g gives
    the local velocity ``1 / |g|``. Triangles with a missing (nan) time or a vanishing gradient
    (collision of wavefronts) give nan.
    """
    v, f = geometry.mesh.vertices, geometry.mesh.faces
    t = np.asarray(activation_ms, float)
    e = np.stack([v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]], axis=1)  # (m, 2, 3)
    dt_ = np.stack([t[f[:, 1]] - t[f[:, 0]], t[f[:, 2]] - t[f[:, 0]]], axis=1)
    gram = np.einsum("mij,mkj->mik", e, e)
    coef = np.linalg.solve(gram, np.nan_to_num(dt_)[..., None])[..., 0]
    speed = np.linalg.norm(np.einsum("mi,mij->mj", coef, e), axis=1)
    with np.errstate(divide="ignore"):
        cv = np.where(speed > 1e-9, 1.0 / speed, np.nan)
    cv[~np.isfinite(dt_).all(axis=1)] = np.nan
    return cv


def simulate_reference(geometry: AtrialGeometry, spec: SimulationSpec, duration_ms: float,
                       dt: float = 0.1, record_every: int = 20,
                       lead: NDArray | None = None) -> dict[str, NDArray]:
    """One simulation with plain scipy.sparse float64, step by step (readable; the baseline).

    Returns ``{"v": (n_samples, n_nodes) voltages, "trace": (n_samples, n_out)}`` sampled every
    ``record_every`` steps. Same equations as :class:`Simulator` (no transient, no checks).
    """
    k, mass = _laplacian(geometry, spec.link_strength)
    lap = (sparse.diags(1.0 / mass) @ k).tocsr()
    d, tau = node_fields(spec, geometry)
    n = geometry.n_vertices
    if spec.rhythm == "AF":
        v, h = phase_field_state(spec, geometry, tau)
    else:
        v, h = np.zeros(n), np.ones(n)
    c = MS_FIXED
    a_close, a_open = np.exp(-dt / tau), math.exp(-dt / spec.tau_open)
    stim = np.zeros(n)
    if spec.rhythm == "SR":
        x = geometry.mesh.vertices
        centre = geometry.pacing[spec.pacing_shift % len(geometry.pacing)]
        r_patch = max(np.linalg.norm(x[geometry.pacing] - x[geometry.pacing[0]], axis=1).max(),
                      1e-9)
        stim[np.linalg.norm(x - x[centre], axis=1) <= r_patch] = STIM_AMPLITUDE
    cl = round(spec.cycle_length_ms / dt) if spec.rhythm == "SR" else 0
    n_steps = round(duration_ms / dt)
    vs, trs = [], []
    for step in range(n_steps):
        lv = lap @ v
        if step % record_every == 0:
            vs.append(v.copy())
            if lead is not None:
                trs.append(lead @ (-V_SCALE * d * mass * lv))
        dv = h * v * v * (1 - v) / c["tau_in"] - v / c["tau_out"] - d * lv
        if cl and step % cl < round(STIM_DURATION / dt):
            dv = dv + stim
        h = np.where(v < c["v_gate"], 1 - (1 - h) * a_open, h * a_close)
        v = v + dt * dv
    return {"v": np.array(vs), "trace": np.array(trs) if trs else np.zeros((0, 0))}
