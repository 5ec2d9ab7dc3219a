"""The augmentation experiment (notebooks 05_augment and 06_sweep).

One run, for a number ``k`` of synthetic windows and a ``seed`` (:func:`run_augmentation`):

1. Training pairs (:func:`build_training_set`). Real: every training window (split 0) with the
   BSPM of every training torso (``torso_split == 0``), white noise at ``snr_db`` per window
   (:func:`egmlib.data.noisy_bspm`); with ``n_real_sims > 0`` only the windows of that many
   training simulations per rhythm (:func:`real_subset`, the data-scarce arm). Validation: every
   validation window (split 1) with every training torso, noise likewise. Synthetic: the first
   ``k`` windows of the kept synthetic set (sorted best score first,
   :func:`egmlib.generators.generate.select_best`; the filter's pool:
   :func:`egmlib.generators.synthesis.filtered`) with every training torso
   (:func:`pair_synthetic`): ``k * n_train_torsos`` more training pairs.
2. The dual-branch VAE (:mod:`egmlib.augmentation.recon`) is trained on them, early stopping on
validation.
3. Evaluation (:func:`evaluate`) on the test simulations (split 2) with the test torsos (every
   torso when none is held out): per rhythm, correlation, RMSE and LSD
   (:func:`egmlib.core.metrics.compare`) and the DF error, and the same numbers for zero-order
   Tikhonov (lambda at the L-curve corner per window) on exactly the same noisy BSPMs.

Noise. Seeds are derived from ``(seed, purpose)`` through ``numpy.random.SeedSequence``, so the
training, validation and synthetic noise of one seed are independent draws. The test noise uses
``eval_seed`` (default :data:`EVAL_NOISE_SEED`, the same for every ``k`` and ``seed``), so all runs
of a sweep -- and the Tikhonov baseline -- are scored on identical noisy test BSPMs, and a paired
comparison with ``k = 0`` isolates the effect of the training set.

Synthetic BSPMs go through the Barr-type transfer matrices (``ds.transfer``) while real BSPMs come
from the source-based forward model (``ds.bspm``); the two formulations agree to a median
correlation stored in the data manifest (``formulation_agreement``), as in the paper, where the
synthetic EGMs also had only a transfer matrix to reach the torso.

DF error: ``|DF(reconstruction) - DF(truth)|`` per site and window, with
:func:`egmlib.core.metrics.rhythm_df` at the windows' ``fs`` (at 100 Hz: autocorrelation in
``SR_BAND``, 0.5-3 Hz, for SR; plain Welch argmax in ``AF_BAND``, 3-12 Hz, for AF; DF of a window
that is constant in time is NaN and left out of the mean).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from egmlib.augmentation import baselines
from egmlib.augmentation.recon import (
    DualBranchVAE,
    ReconConfig,
    check_schedule,
    predict,
    train_recon,
)
from egmlib.core import metrics
from egmlib.core.checks import check_int, check_ints
from egmlib.core.process import seeded_torch
from egmlib.data import LABELS, Dataset, noisy_bspm
from egmlib.generators.train import resolve_precision
from egmlib.physics.forward import (
    add_noise,
    reference_mean,
    svd,
    tikhonov_solution,
)

__all__ = [
    "EVAL_NOISE_SEED",
    "GENERATORS",
    "METHOD_NAMES",
    "TrainingSet",
    "build_training_set",
    "check_augment_args",
    "check_real_sims",
    "comparison_table",
    "evaluate",
    "examples",
    "pair_synthetic",
    "per_simulation",
    "reading",
    "real_pairs",
    "real_subset",
    "result_record",
    "run_augmentation",
    "simulation_order",
    "test_torsos",
    "train_torsos",
    "training_simulations",
    "unseen_indices",
    "unseen_windows",
]

#: Names of the sources of synthetic windows ("none": no augmentation, k must be 0).
GENERATORS = ("none", "vae_s", "vae_c")
#: Seed of the noise on the test BSPMs (shared by every run, see the module docstring).
EVAL_NOISE_SEED = 20_251_216

_TRAIN, _VAL, _SYNTH, _SUBSET, _UNSEEN, _UNSEEN_NOISE = range(6)  # purposes of derived seeds

#: Names of the reconstruction methods in tables and readings (the network, then
#: :data:`egmlib.augmentation.baselines.BASELINES`).
METHOD_NAMES = {"network": "network", "lcurve": "Tikhonov, L-curve lambda",
                "gcv": "Tikhonov, GCV lambda", "val": "Tikhonov, validation lambda",
                "val_rhythm": "Tikhonov, lambda per rhythm (told the rhythm)",
                "mean": "mean training window"}


def _derived_seed(seed: int, purpose: int) -> int:
    return int(np.random.SeedSequence([int(seed), purpose]).generate_state(1)[0])


def check_augment_args(k: int, generator: str, n_kept: int) -> None:
    """Raise ValueError naming the parameter when ``generator`` is not one of
    :data:`GENERATORS`, ``k`` is not an int in ``0..n_kept``, or ``generator == "none"`` with
    ``k != 0``."""
    if generator not in GENERATORS:
        raise ValueError(f"generator: got {generator!r}; allowed: one of "
                         f"{', '.join(repr(g) for g in GENERATORS)}")
    n_kept = check_int("n_kept", n_kept, 0)
    check_int("k", k, 0)
    if generator == "none" and k != 0:
        raise ValueError(f"k: got {k} with generator 'none'; allowed: 0 (no synthetic windows "
                         "without a generator)")
    if k > n_kept:
        raise ValueError(f"k: got {k}; allowed: at most {n_kept}, the size of the kept "
                         "synthetic set")


def training_simulations(ds: Dataset) -> dict[str, NDArray[np.int64]]:
    """The training simulations' ids per rhythm (``{"SR": ids, "AF": ids}``, ascending; a
    rhythm without training windows is left out)."""
    train = ds.part("train")
    out = {}
    for j, rhythm in enumerate(LABELS):
        ids = np.unique(np.asarray(ds.sim_id)[train & (np.asarray(ds.label) == j)])
        if len(ids):
            out[rhythm] = ids.astype(np.int64)
    return out


def check_real_sims(ds: Dataset, n_real_sims: int) -> None:
    """Raise ValueError naming ``n_real_sims`` unless it is 0 (every training simulation) or at most
    the training simulations of the rhythm that has fewest."""
    check_int("n_real_sims", n_real_sims, 0)
    sims = training_simulations(ds)
    most = min((len(v) for v in sims.values()), default=0)
    if n_real_sims > most:
        counts = ", ".join(f"{r} {len(v)}" for r, v in sims.items())
        raise ValueError(f"n_real_sims: got {n_real_sims}; allowed: 0 (every training "
                         f"simulation) or 1..{most}, the training simulations per rhythm "
                         f"({counts})")


def real_subset(ds: Dataset, n_real_sims: int, seed: int) -> NDArray[np.int64]:
    """Indices of the training windows of ``n_real_sims`` training simulations per rhythm (all
    training windows for ``n_real_sims = 0``), ascending.

    Each rhythm's training simulations are put in one random order drawn from ``seed`` (through
    ``numpy.random.SeedSequence([seed, 3])``, independent of the noise draws) and the first
    ``n_real_sims`` are taken, so for one seed the subsets are nested (2 simulations are inside
    the 4) and split by simulation (a simulation's windows are all in or all out);
    different seeds draw different subsets, so a study over seeds averages over which
    simulations a scarce network sees.
    """
    check_real_sims(ds, n_real_sims)
    check_int("seed", seed, 0)
    train = np.flatnonzero(ds.part("train"))
    if n_real_sims == 0:
        return train
    chosen = [ids[:n_real_sims] for ids in simulation_order(ds, seed).values()]
    keep = np.isin(np.asarray(ds.sim_id)[train], np.concatenate(chosen))
    return train[keep]


def simulation_order(ds: Dataset, seed: int) -> dict[str, NDArray[np.int64]]:
    """Each rhythm's training simulations in the random order of ``seed`` that
    :func:`real_subset` takes its first ``n_real_sims`` from (``{"SR": ids, "AF": ids}``)."""
    check_int("seed", seed, 0)
    rng = np.random.default_rng(_derived_seed(seed, _SUBSET))
    return {rhythm: rng.permutation(ids) for rhythm, ids in training_simulations(ds).items()}


def unseen_indices(ds: Dataset, n_real_sims: int, seed: int, k: int,
                   rhythms: Sequence[str] = ("SR",)) -> NDArray[np.int64]:
    """The data set rows of ``k`` real training windows of simulations that the run with
    ``n_real_sims`` and ``seed`` does not train on: what an ideal generator, one that draws from
    the data's own distribution, would add to that run (:func:`unseen_windows`). A reference for
    the augmentation study: a generator's gain can at best approach the gain of these windows.

    The unseen simulations of a rhythm are those after the first ``n_real_sims`` in
    :func:`simulation_order` (so none of the run's real simulations, and for one seed the same
    ones a larger arm would add first). Windows are taken one simulation at a time in that
    order, each simulation's windows in a random order of ``seed``, so the ``k`` windows spread
    over as many simulations as they can. With several ``rhythms`` the windows alternate between
    them in the given order, as VAE-C's kept set does
    (:func:`egmlib.generators.synthesis.kept_for_augmentation`).

    Raises ValueError naming the parameter: ``n_real_sims`` of 0 (every training simulation is
    seen), a rhythm without training simulations, or ``k`` larger than the unseen windows."""
    check_real_sims(ds, n_real_sims)
    check_int("k", k, 0)
    if n_real_sims == 0:
        raise ValueError("n_real_sims: got 0 (every training simulation); allowed: 1 or more, so "
                         "that some training simulations are unseen")
    order = simulation_order(ds, seed)
    if not rhythms or any(r not in order for r in rhythms):
        raise ValueError(f"rhythms: got {list(rhythms)!r}; allowed: a non-empty list of "
                         f"{', '.join(order)}")
    train = np.flatnonzero(ds.part("train"))
    sims = np.asarray(ds.sim_id)[train]
    rng = np.random.default_rng(_derived_seed(seed, _UNSEEN))
    per_rhythm = []
    for rhythm in rhythms:
        lists = [train[sims == sim][rng.permutation(int(np.sum(sims == sim)))]
                 for sim in order[rhythm][n_real_sims:]]
        depth = max((len(x) for x in lists), default=0)
        per_rhythm.append([x[i] for i in range(depth) for x in lists if i < len(x)])
    picked = [w[i] for i in range(max(len(w) for w in per_rhythm)) for w in per_rhythm
              if i < len(w)]
    if k > len(picked):
        raise ValueError(f"k: got {k}; allowed: at most {len(picked)}, the unseen training "
                         f"windows of {', '.join(rhythms)} at n_real_sims = {n_real_sims}")
    return np.asarray(picked[:k], np.int64)


def unseen_windows(ds: Dataset, n_real_sims: int, seed: int, k: int,
                   rhythms: Sequence[str] = ("SR",)) -> NDArray[np.float32]:
    """The EGM windows ``(k, T, n_rec)`` of :func:`unseen_indices`, ready to stand in for a
    generator's kept set (:func:`build_training_set` pairs them through the transfer matrices,
    as it pairs synthetic windows)."""
    return np.asarray(ds.egm[unseen_indices(ds, n_real_sims, seed, k, rhythms)], np.float32)


def real_pairs(ds: Dataset, rows: ArrayLike, snr_db: float, seed: int
               ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Training pairs of the data set windows ``rows`` as real pairs, that is with their own
    BSPMs (the source-based forward model, ``ds.bspm``) on every training torso, noise at
    ``snr_db`` drawn from ``seed`` (a stream of its own, independent of the run's real and
    synthetic noise), stacked torso by torso as :func:`build_training_set` stacks its real
    pairs: ``(bspm, egm)``, each ``(len(rows) * n_train_torsos, T, .)`` float32. With
    :func:`unseen_indices` they pair an ideal generator's windows as the real data are paired,
    which isolates what synthetic pairing through the transfer matrix costs."""
    idx = np.asarray(rows, np.int64)
    if idx.ndim != 1 or len(idx) == 0:
        raise ValueError(f"rows: expected a non-empty list of window indices; got shape "
                         f"{idx.shape}")
    torsos = train_torsos(ds)
    s = _derived_seed(seed, _UNSEEN_NOISE)
    bspm = np.concatenate([noisy_bspm(ds, idx, int(t), snr_db, s) for t in torsos])
    egm = np.concatenate([np.asarray(ds.egm[idx], np.float32)] * len(torsos))
    return bspm.astype(np.float32), egm


def train_torsos(ds: Dataset) -> NDArray[np.int64]:
    """Indices of the training torsos (``torso_split == 0``)."""
    t = np.flatnonzero(np.asarray(ds.torso_split) == 0)
    if len(t) == 0:
        raise ValueError("ds: has no training torso (torso_split == 0)")
    return t


def test_torsos(ds: Dataset) -> NDArray[np.int64]:
    """Indices of the held-out torsos (``torso_split == 2``), or every torso when none is."""
    t = np.flatnonzero(np.asarray(ds.torso_split) == 2)
    return t if len(t) else np.arange(len(ds.torso_split))


# ------------------------------------------------------------------------------------------------
# Pairs
# ------------------------------------------------------------------------------------------------
def pair_synthetic(egm_synth: ArrayLike, transfer: ArrayLike, snr_db: float | None,
                   rng: np.random.Generator) -> NDArray[np.float64]:
    """BSPMs ``(k, n_torsos, T, 64)`` of synthetic EGMs ``(k, T, n_rec)`` through every transfer
    matrix ``(n_torsos, 64, n_rec)`` (already on the 64-electrode subset): ``EGM @ A.T``,
    referenced to the mean over the 64 leads, white noise at ``snr_db`` per window and torso
    (:func:`egmlib.physics.forward.add_noise`; ``None``: no noise), re-referenced -- as the real
    pairs."""
    e = np.asarray(egm_synth, np.float64)
    a = np.asarray(transfer, np.float64)
    if e.ndim != 3:
        raise ValueError(f"egm_synth: expected (k, T, n_rec); got shape {e.shape}")
    if a.ndim != 3 or a.shape[2] != e.shape[2]:
        raise ValueError(f"transfer: expected (n_torsos, n_electrodes, n_rec={e.shape[2]}); got "
                         f"shape {a.shape}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(a))):
        raise ValueError("egm_synth: synthetic windows or transfer matrices are not finite")
    clean = reference_mean(np.einsum("ktc,nec->knte", e, a), axis=-1)
    if snr_db is None or e.shape[0] == 0:
        return clean
    return reference_mean(add_noise(clean, snr_db, rng, axis=(-2, -1)), axis=-1)


@dataclass
class TrainingSet:
    """Training and validation pairs of one run (float32, data units) and their bookkeeping.

    ``is_synth`` marks the synthetic training pairs (they come last); ``train_windows`` /
    ``val_windows`` are the data set's window indices used, ``torsos`` the training torsos.
    """

    bspm_train: NDArray[np.float32]
    egm_train: NDArray[np.float32]
    bspm_val: NDArray[np.float32]
    egm_val: NDArray[np.float32]
    is_synth: NDArray[np.bool_]
    n_real: int
    n_synth: int
    n_val: int
    n_train_sims: int
    train_windows: NDArray[np.int64]
    val_windows: NDArray[np.int64]
    torsos: NDArray[np.int64]

    def counts(self) -> dict[str, int]:
        return {"n_real": self.n_real, "n_synth": self.n_synth, "n_val": self.n_val,
                "n_train_sims": self.n_train_sims,
                "n_train_windows": len(self.train_windows), "n_torsos": len(self.torsos)}


def _check_synth(synth_egm: ArrayLike | None, ds: Dataset) -> NDArray | None:
    if synth_egm is None:
        return None
    s = np.asarray(synth_egm)
    want = tuple(ds.egm.shape[1:])
    if s.ndim != 3 or s.shape[1:] != want:
        raise ValueError(f"synth_egm: expected (n_kept, T, n_rec) = (n, {want[0]}, {want[1]}); "
                         f"got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("synth_egm: contains NaN or infinite values")
    return s


def build_training_set(ds: Dataset, synth_egm: ArrayLike | None, k: int, snr_db: float,
                       seed: int, n_real_sims: int = 0) -> TrainingSet:
    """Real, validation and ``k`` synthetic pairs per training torso (module docstring); the
    real pairs of ``n_real_sims`` training simulations per rhythm (:func:`real_subset`; 0:
    all)."""
    synth = _check_synth(synth_egm, ds)
    n_kept = 0 if synth is None else len(synth)
    check_int("k", k, 0)
    if k > n_kept:
        raise ValueError(f"k: got {k}; allowed: at most {n_kept}, the size of the kept "
                         "synthetic set" + (" (synth_egm is None)" if synth is None else ""))
    if not (isinstance(snr_db, int | float) and math.isfinite(snr_db)):
        raise ValueError(f"snr_db: got {snr_db!r}; allowed: a finite number (dB)")
    torsos = train_torsos(ds)
    tr = real_subset(ds, n_real_sims, seed)
    va = np.flatnonzero(ds.part("val"))
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"ds: needs training and validation windows; has {len(tr)} and "
                         f"{len(va)}")
    s_tr, s_va = _derived_seed(seed, _TRAIN), _derived_seed(seed, _VAL)
    egm_tr = np.asarray(ds.egm[tr], np.float32)
    egm_va = np.asarray(ds.egm[va], np.float32)
    b_tr = [noisy_bspm(ds, tr, int(t), snr_db, s_tr).astype(np.float32) for t in torsos]
    b_va = [noisy_bspm(ds, va, int(t), snr_db, s_va).astype(np.float32) for t in torsos]
    e_tr = [egm_tr] * len(torsos)
    n_real = len(tr) * len(torsos)
    n_synth = k * len(torsos)
    if k > 0:
        rng = np.random.default_rng(_derived_seed(seed, _SYNTH))
        sel = np.asarray(synth[:k], np.float64)
        b_syn = pair_synthetic(sel, np.asarray(ds.transfer)[torsos], snr_db, rng)
        b_tr.append(b_syn.reshape(-1, *b_syn.shape[2:]).astype(np.float32))
        e_tr.append(np.repeat(sel.astype(np.float32), len(torsos), axis=0))
    is_synth = np.zeros(n_real + n_synth, bool)
    is_synth[n_real:] = True
    return TrainingSet(bspm_train=np.concatenate(b_tr), egm_train=np.concatenate(e_tr),
                       bspm_val=np.concatenate(b_va),
                       egm_val=np.concatenate([egm_va] * len(torsos)),
                       is_synth=is_synth, n_real=n_real, n_synth=n_synth,
                       n_val=len(va) * len(torsos),
                       n_train_sims=len(np.unique(np.asarray(ds.sim_id)[tr])),
                       train_windows=tr, val_windows=va,
                       torsos=torsos)


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------
def evaluate(model: DualBranchVAE | None, ds: Dataset, snr_db: float,
             seed: int = EVAL_NOISE_SEED, tikhonov_baseline: bool = True,
             part: str = "test", baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Score the network (``model``; ``None`` skips it) and the baselines on ``part``.

    Every window of ``part`` (default the test simulations) is reconstructed from the BSPM of
    every test torso (:func:`test_torsos`) with noise at ``snr_db`` drawn from ``seed``
    (:func:`egmlib.data.noisy_bspm`); every method sees the same noisy BSPMs.

    Baselines: ``baseline``, a :func:`egmlib.augmentation.baselines.baselines` result for the
    same data, ``snr_db``, ``seed`` and ``part`` (checked; e.g. the cached one of
    :func:`egmlib.augmentation.baselines.cached_baselines`), or, when it is ``None`` and
    ``tikhonov_baseline`` holds, zero-order Tikhonov with lambda at the L-curve corner per
    window computed here. The truth's DF, which every run's DF error compares with, is read from
    ``baseline["df_truth"]`` when there (:func:`egmlib.augmentation.baselines.truth_df`).

    Returns ``{"network": {...}, "tikhonov": {...}, "baselines": {...}, "n_windows", "torsos",
    "noise_seed", "snr_db"}`` where ``network`` and ``tikhonov`` (the L-curve baseline) map
    ``"SR"``, ``"AF"`` (rhythms present) and ``"all"`` to
    :func:`egmlib.augmentation.baselines.scores` (``corr_mean/std``, ``rmse_mean/std``,
    ``lsd_mean/std``, ``df_err_mean/std/median`` in Hz, ``amp_ratio_median``, ``n``); Tikhonov
    adds ``lambda_median``; ``baselines`` holds every baseline given (empty without one). With a
    model, ``per_simulation`` (:func:`per_simulation`) holds the network's mean correlation and
    RMSE per test simulation, what a bootstrap over test simulations resamples.
    """
    if not (isinstance(snr_db, int | float) and math.isfinite(snr_db)):
        raise ValueError(f"snr_db: got {snr_db!r}; allowed: a finite number (dB)")
    idx = np.flatnonzero(ds.part(part))
    if len(idx) == 0:
        raise ValueError(f"part: {part!r} has no windows")
    if baseline is not None:
        for key, want in (("snr_db", float(snr_db)), ("noise_seed", int(seed)), ("part", part),
                          ("n_windows", len(idx))):
            if baseline.get(key) != want:
                raise ValueError(f"baseline: made with {key} = {baseline.get(key)!r}; this "
                                 f"evaluation uses {want!r}")
    elif tikhonov_baseline:
        baseline = baselines.baselines(ds, snr_db, seed, part, methods=("lcurve",))
    torsos = test_torsos(ds)
    fs = float(ds.manifest["fs"])
    truth = np.asarray(ds.egm[idx], np.float64)
    labels = np.asarray(ds.label[idx])
    out: dict[str, Any] = {"n_windows": len(idx), "torsos": [int(t) for t in torsos],
                           "noise_seed": int(seed), "snr_db": float(snr_db), "baselines": {}}
    if model is not None:
        df_truth = (np.asarray(baseline["df_truth"], np.float64)
                    if baseline is not None and "df_truth" in baseline
                    else baselines.truth_df(truth, labels, fs))
        rec = np.concatenate([predict(model, noisy_bspm(ds, idx, int(t), snr_db, seed)
                                      .astype(np.float32)).astype(np.float64) for t in torsos])
        truth_all = np.concatenate([truth] * len(torsos))
        out["network"] = baselines.scores(
            truth_all, rec, np.concatenate([labels] * len(torsos)), fs,
            np.concatenate([df_truth] * len(torsos)))
        out["per_simulation"] = per_simulation(
            truth_all, rec, np.tile(np.asarray(ds.sim_id)[idx], len(torsos)),
            np.tile(labels, len(torsos)))
    if baseline is not None:
        out["baselines"] = {m: baseline[m] for m in baselines.BASELINES if m in baseline}
        out["baseline_lambdas"] = baseline.get("lambdas", {})
        if "lcurve" in baseline:
            out["tikhonov"] = {**baseline["lcurve"],
                               "lambda_median": baseline["lambdas"]["lcurve"]}
    return out


def per_simulation(truth: ArrayLike, recon: ArrayLike, sim_id: ArrayLike, labels: ArrayLike
                   ) -> dict[str, list]:
    """Mean correlation and RMSE (over sites, windows and torsos) of each simulation's windows.

    ``truth``, ``recon``: ``(n, T, C)``; ``sim_id``, ``labels``: ``(n,)``. Returns
    ``{"sim_id", "rhythm", "n_windows", "corr", "rmse"}``, lists in ascending ``sim_id``, floats
    rounded to 6 decimals. The mean over simulations weighted by ``n_windows`` is the
    ``corr_mean`` of :func:`egmlib.augmentation.baselines.scores` (same windows): windows of one
    simulation overlap and share its rhythm's realisation, so the simulation, not the window,
    is the unit a bootstrap over the test set resamples.
    """
    corr = metrics.pearson(truth, recon).mean(-1)
    err = metrics.rmse(truth, recon).mean(-1)
    sims = np.asarray(sim_id)
    lab = np.asarray(labels)
    if not (len(sims) == len(lab) == len(corr)):
        raise ValueError(f"sim_id, labels: expected {len(corr)} entries each; got {len(sims)} and "
                         f"{len(lab)}")
    out: dict[str, list] = {"sim_id": [], "rhythm": [], "n_windows": [], "corr": [], "rmse": []}
    for sim in np.unique(sims):
        sel = sims == sim
        rhythms = np.unique(lab[sel])
        if len(rhythms) != 1:
            raise ValueError(f"labels: simulation {sim} has windows of several rhythms")
        out["sim_id"].append(int(sim))
        out["rhythm"].append(LABELS[int(rhythms[0])])
        out["n_windows"].append(int(sel.sum()))
        out["corr"].append(round(float(corr[sel].mean()), 6))
        out["rmse"].append(round(float(err[sel].mean()), 6))
    return out


# ------------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------------
def _history_summary(h: dict[str, Any]) -> dict[str, Any]:
    best = h["best_epoch"]
    return {"epochs_run": h["epochs_run"], "best_epoch": best, "best_val": h["best_val"],
            "stopped_early": h["stopped_early"], "train_s": h["seconds"],
            "pairs_per_s": h["pairs_per_s"], "val_corr_best": h["val"]["corr"][best],
            "train_total": h["train"]["total"], "val_total": h["val"]["total"],
            "val_corr": h["val"]["corr"], "settings": {k: v for k, v in h["settings"].items()
                                                       if k != "config"}}


def run_augmentation(ds: Dataset, synth_egm: ArrayLike | None, k: int, seed: int,
                     snr_db: float = 20.0, epochs: int = 40, batch_size: int = 32,
                     lr: float = 1e-3, patience: int = 8, generator: str | None = None,
                     config: dict[str, Any] | None = None, device: str = "cpu",
                     progress: bool = False, eval_seed: int = EVAL_NOISE_SEED,
                     tikhonov_baseline: bool = True, threads: int | None = None,
                     return_model: bool = False, min_epochs: int = 0,
                     baseline: Mapping[str, Any] | None = None,
                     n_real_sims: int = 0, precision: str = "float32",
                     schedule: str = "constant") -> dict[str, Any]:
    """The whole experiment for one ``(k, seed)``: pairs, training, evaluation.

    ``synth_egm``: the kept synthetic windows ``(n_kept, T, n_rec)`` in mV, best first, or
    ``None``. ``generator`` names their source (:data:`GENERATORS`); by default ``"none"`` when
    ``synth_egm`` is ``None`` (then ``k`` must be 0), and it must be given otherwise. ``config``
    overrides :class:`egmlib.augmentation.recon.ReconConfig` fields (sizes come from the data).
    Everything is
    validated before any pair is built or any weight trained. ``threads``: torch threads for
    training (:func:`egmlib.augmentation.recon.train_recon`); ``None`` (default):
    ``EGMLIB_THREADS`` or every
    core. Measured (``make bench``, section ``recon``): 630 training pairs/s on two threads
    against 389 on one. ``min_epochs``: no early stop before it
    (:func:`egmlib.augmentation.recon.train_recon`). ``baseline``: the baselines of the test
    BSPMs, computed once for every run (:func:`egmlib.augmentation.baselines.cached_baselines`);
    without it, the L-curve Tikhonov baseline is computed here (``tikhonov_baseline``).
    ``n_real_sims``: train on that many real training simulations per rhythm
    (:func:`real_subset`; 0, the default: all of them); validation and test are unchanged.
    ``precision``: the network's training arithmetic
    (:func:`egmlib.generators.train.resolve_precision`; checked before any work).
    ``schedule``: the learning-rate schedule (:data:`egmlib.augmentation.recon.SCHEDULES`;
    checked before any work).

    Returns a JSON-ready dict: ``k``, ``seed``, ``generator``, ``snr_db``, ``counts``
    (``n_real``, ``n_synth``, ``n_val``, ...), ``test`` (:func:`evaluate`: network and Tikhonov
    metrics by rhythm), ``history`` (summary), ``config``, ``wall_s``; with ``return_model`` also
    ``model`` (not JSON).
    """
    t0 = time.perf_counter()
    synth = _check_synth(synth_egm, ds)
    if generator is None:
        if synth is not None:
            raise ValueError("generator: name the source of synth_egm, one of 'vae_s', 'vae_c'")
        generator = "none"
    if generator != "none" and synth is None:
        raise ValueError(f"synth_egm: generator {generator!r} needs the kept synthetic windows; "
                         "got None")
    check_augment_args(k, generator, 0 if synth is None else len(synth))
    check_int("seed", seed, 0)
    check_ints(("epochs", epochs, 1), ("batch_size", batch_size, 1), ("patience", patience, 1),
               ("min_epochs", min_epochs, 0))
    check_real_sims(ds, n_real_sims)
    resolve_precision(precision, device)
    check_schedule(schedule)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: got {lr!r}; allowed: a finite number > 0")
    if not (isinstance(snr_db, int | float) and math.isfinite(snr_db)):
        raise ValueError(f"snr_db: got {snr_db!r}; allowed: a finite number (dB)")
    T, n_rec = ds.egm.shape[1:]
    overrides = dict(config or {})
    for key in ("T", "n_electrodes", "n_rec", "bspm_scale", "egm_scale"):
        if key in overrides:
            raise ValueError(f"config: {key!r} is set from the data; remove it")
    cfg = ReconConfig(T=int(T), n_electrodes=int(ds.bspm.shape[-1]), n_rec=int(n_rec),
                      **overrides)

    tset = build_training_set(ds, synth if generator != "none" else None, k, snr_db, seed,
                              n_real_sims)
    with seeded_torch(seed, device):  # the initial weights; no process state changed
        model = DualBranchVAE(cfg)
    hist = train_recon(model, tset.bspm_train, tset.egm_train, tset.bspm_val, tset.egm_val,
                       epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       patience=patience, device=device, progress=progress, threads=threads,
                       min_epochs=min_epochs, precision=precision, schedule=schedule)
    test = evaluate(model, ds, snr_db, seed=eval_seed, tikhonov_baseline=tikhonov_baseline,
                    baseline=baseline)
    out: dict[str, Any] = {"k": int(k), "seed": int(seed), "generator": generator,
                           "n_real_sims": int(n_real_sims),
                           "snr_db": float(snr_db), "counts": tset.counts(), "test": test,
                           "history": _history_summary(hist), "config": cfg.to_dict(),
                           "wall_s": time.perf_counter() - t0}
    if return_model:
        out["model"] = model
    return out


def examples(model: DualBranchVAE, ds: Dataset, snr_db: float, seed: int = EVAL_NOISE_SEED,
             rel_lambda: float | None = None) -> dict[str, dict[str, Any]]:
    """For the first test window of each rhythm on the first test torso: the true EGM, the
    network's and the Tikhonov reconstruction (lambda at the L-curve corner), from the same noisy
    BSPM that :func:`evaluate` uses; with ``rel_lambda`` also ``"tikhonov_val"``, Tikhonov at
    that relative lambda (:func:`egmlib.augmentation.baselines.relative_tikhonov`, e.g. the one
    chosen on validation windows)."""
    torso = int(test_torsos(ds)[0])
    dec = svd(ds.transfer[torso])
    out = {}
    for rhythm in LABELS:
        idx = np.flatnonzero(ds.part("test", rhythm))
        if len(idx) == 0:
            continue
        b = noisy_bspm(ds, idx[:1], torso, snr_db, seed)
        out[rhythm] = {"window": int(idx[0]), "torso": torso,
                       "truth": np.asarray(ds.egm[idx[0]], float),
                       "network": predict(model, b.astype(np.float32))[0],
                       "tikhonov": tikhonov_solution(dec, b[0].T, "lcurve").x.T}
        if rel_lambda is not None:
            out[rhythm]["tikhonov_val"] = baselines.relative_tikhonov(dec, b, rel_lambda)[0]
    return out


def result_record(run: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of one 05 run, in the form :mod:`egmlib.workflow.results` aggregates: ``k``,
    ``seed``,
    ``generator``, per-rhythm ``network`` and ``tikhonov`` metrics at the top level, plus the
    counts, history, configuration, wall time and the notebook's parameters."""
    test = run["test"]
    return {"k": run["k"], "seed": run["seed"], "generator": run["generator"],
            "n_real_sims": run.get("n_real_sims", 0),
            "filter_pool": int(params.get("filter_pool", 0)),
            "network": {r: v for r, v in test["network"].items() if isinstance(v, dict)},
            "tikhonov": {r: v for r, v in test["tikhonov"].items() if isinstance(v, dict)},
            "tikhonov_lambda_median": test["tikhonov"].get("lambda_median"),
            "test": {k: v for k, v in test.items() if k not in ("network", "tikhonov")},
            "counts": run["counts"], "history": run["history"], "config": run["config"],
            "wall_s": run["wall_s"], "params": dict(params)}


def _methods(test: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The network's and every baseline's scores of an :func:`evaluate` result, in table order."""
    out = {"network": test["network"]} if "network" in test else {}
    out.update(test.get("baselines", {}))
    return out


def comparison_table(test: Mapping[str, Any]) -> str:
    """A text table of an :func:`evaluate` result: per method (:data:`METHOD_NAMES`) and rhythm,
    mean correlation, RMSE (mV) and the median amplitude ratio."""
    head = f"{'method':<46}{'rhythm':<7}{'corr':>7}{'RMSE mV':>9}{'amplitude':>11}"
    lines = [head, "-" * len(head)]
    for name, res in _methods(test).items():
        for rhythm in (*LABELS, "all"):
            r = res.get(rhythm)
            if not r:
                continue
            amp = r.get("amp_ratio_median")
            amp_s = f"{amp:>11.2f}" if amp is not None and math.isfinite(amp) else f"{'':>11}"
            lines.append(f"{METHOD_NAMES.get(name, name):<46}{rhythm:<7}{r['corr_mean']:>7.3f}"
                         f"{r['rmse_mean']:>9.3f}{amp_s}")
    return "\n".join(lines)


def reading(run: Mapping[str, Any], paper: Mapping[str, Any] | None = None) -> list[str]:
    """Sentences that read one run (:func:`run_augmentation`'s result, or its stored
    :func:`result_record` with the same keys under ``test``) from its numbers: how training
    ended, the network against the fairest baseline (Tikhonov at the validation lambda) and
    the classical one (L-curve) per rhythm, and the floor. ``paper``: the paper's numbers
    (:data:`egmlib.workflow.results.PAPER`) for context."""
    test, hist = run["test"], run["history"]
    methods = _methods(test)
    out = [f"Training ran {hist['epochs_run']} epochs and kept epoch {hist['best_epoch'] + 1} "
           f"(validation correlation {hist['val_corr_best']:.3f})."]
    net = methods.get("network", {})
    for rhythm in LABELS:
        if rhythm not in net:
            continue
        parts = [f"{rhythm}: network {net[rhythm]['corr_mean']:.3f}"]
        for m in ("val", "lcurve"):
            if rhythm in methods.get(m, {}):
                d = net[rhythm]["corr_mean"] - methods[m][rhythm]["corr_mean"]
                parts.append(f"{METHOD_NAMES[m]} {methods[m][rhythm]['corr_mean']:.3f} "
                             f"({'+' if d >= 0 else '-'}{abs(d):.3f} for the network)")
        out.append("Test correlation, " + ", ".join(parts) + ".")
    if "mean" in methods and "lcurve" in methods:
        for rhythm in LABELS:
            if rhythm in methods["mean"]:
                out.append(f"{rhythm} RMSE: the mean training window (which ignores the BSPM) "
                           f"{methods['mean'][rhythm]['rmse_mean']:.2f} mV, the network "
                           f"{net.get(rhythm, {}).get('rmse_mean', float('nan')):.2f} mV, "
                           f"Tikhonov at the L-curve lambda "
                           f"{methods['lcurve'][rhythm]['rmse_mean']:.2f} mV (amplitude ratio "
                           f"{methods['lcurve'][rhythm]['amp_ratio_median']:.2f}).")
    if paper is not None:
        out.append(f"For context, the paper reports {paper['rhythm']} correlation "
                   f"{paper['corr_without']:.3f} without augmentation and "
                   f"{paper['corr_with_vae_s']:.3f} with VAE-S (k = {paper['best_k'][0]}-"
                   f"{paper['best_k'][1]}), on its own data and network.")
    return out
