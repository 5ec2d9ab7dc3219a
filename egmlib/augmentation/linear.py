"""A learned linear correction of Tikhonov: how far a spatial prior alone goes, in closed form.

Zero-order Tikhonov (:mod:`egmlib.augmentation.baselines`) knows the physics, the torso's
transfer matrix, and nothing about atrial EGMs: it returns the smallest-norm sources that explain
the BSPM, which blurs and shrinks them. The reconstruction network of
:mod:`egmlib.augmentation.recon` knows the EGMs of its training set but not the test torso. This
module joins the two in the simplest way that can be learned from the same training pairs:

    y = (t - m_t) W + m_e,   t = Tikhonov(BSPM) on the BSPM's own torso,

one ``n_rec x n_rec`` matrix ``W`` applied at every time sample (a spatial map, the same for
every window and rhythm; it is never told the rhythm), fitted by ridge regression over every time
sample of the training pairs, with ``m_t``, ``m_e`` their means. It is a linear estimator with a
spatial prior learned from data, in the spirit of the statistical (Bayesian) inverse solutions
whose prior covariance comes from training signals (Serinagaoglu, Brooks and MacLeod, "Bayesian
solutions and performance analysis in bioelectric inverse problems", IEEE Trans Biomed Eng
52(6):1009-1020, 2005), in a plain form; it needs neither a network nor a GPU.

Everything is 05's (:mod:`egmlib.augmentation.augment`), so that the numbers compare with a run of
the network: the training pairs are those of a run of the same seed, number of real training
simulations and ``k`` (:func:`egmlib.augmentation.augment.build_training_set`; ``k = 0`` in the
linear study, unseen real windows in the unseen-window study of
:mod:`egmlib.workflow.studies`), each inverted on its own torso (:func:`training_inputs`), the
Tikhonov lambda is the ``val`` baseline's (one relative lambda chosen on the validation
simulations), the weighting and the ridge penalty are chosen on the validation pairs (validation
simulations on the training torsos, by the mean per-site correlation, the experiment's headline
metric), and the test scores come from exactly 05's test inputs (the held-out torsos, noise seed
:data:`egmlib.augmentation.augment.EVAL_NOISE_SEED`) through
:func:`egmlib.augmentation.baselines.scores`. No test number is read by a choice.

Weighting: unweighted least squares is ruled by the large AF deflections; weighting each window by
the inverse of its variance (:func:`window_weights`) gives every window the say the correlation
gives it. On the default profile's validation pairs the weighted fit won in every arm and seed
(record ``results/default/recon_linear.json``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from egmlib.augmentation import augment, baselines
from egmlib.core import metrics
from egmlib.data import LABELS, Dataset, noisy_bspm
from egmlib.physics.forward import svd

__all__ = ["ALPHAS", "WEIGHTINGS", "CorrectionInputs", "LinearCorrection", "check_pairs",
           "correction_inputs", "fit_correction", "run_correction", "tikhonov_inputs",
           "training_inputs", "window_weights"]

#: Ridge penalties searched on the validation pairs, relative to the mean diagonal of the
#: centred Gram matrix of the Tikhonov estimates (so that they do not depend on its scale).
ALPHAS: tuple[float, ...] = (1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
#: How the time samples of the training windows are weighted in the fit (:func:`fit_correction`).
WEIGHTINGS: tuple[str, ...] = ("window", "none")
#: Windows per block when the Gram matrices are accumulated (bounds the float64 temporaries).
_BLOCK = 64


@dataclass
class LinearCorrection:
    """``y = (t - mean_in) @ weight + mean_out`` for Tikhonov estimates ``t`` ``(..., n_rec)``,
    fitted by :func:`fit_correction`; ``alpha`` and ``weighting`` are the relative ridge penalty
    and the weighting it chose, ``val_corr`` the validation correlation of every fit it tried
    (weighting -> one value per penalty, in the order of the penalties)."""

    weight: NDArray[np.float64]
    mean_in: NDArray[np.float64]
    mean_out: NDArray[np.float64]
    alpha: float
    weighting: str
    val_corr: dict[str, list[float]]

    def apply(self, t: ArrayLike) -> NDArray[np.float64]:
        """The corrected EGMs of Tikhonov estimates ``t`` ``(..., n_rec)``."""
        x = np.asarray(t, np.float64)
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"t: expected (..., {self.weight.shape[0]}); got {x.shape}")
        return (x - self.mean_in) @ self.weight + self.mean_out


def tikhonov_inputs(ds: Dataset, bspm: ArrayLike, torsos: Sequence[int], rel: float
                    ) -> NDArray[np.float32]:
    """Zero-order Tikhonov (``lambda = rel * s_max`` of each torso) of BSPM windows ``(n, T,
    leads)`` stacked torso by torso in ``torsos``' order, as
    :func:`egmlib.augmentation.augment.build_training_set` stacks its pairs (``n`` a multiple of
    ``len(torsos)``): ``(n, T, n_rec)`` in float32."""
    b = np.asarray(bspm)
    if b.ndim != 3 or len(torsos) == 0 or len(b) % len(torsos):
        raise ValueError(f"bspm: expected (n, T, leads) with n a multiple of {len(torsos)} "
                         f"torsos; got {b.shape}")
    per = len(b) // len(torsos)
    out = np.empty((len(b), b.shape[1], ds.transfer.shape[-1]), np.float32)
    for i, t in enumerate(torsos):
        out[i * per:(i + 1) * per] = baselines.relative_tikhonov(
            svd(ds.transfer[int(t)]), b[i * per:(i + 1) * per], rel)
    return out


def training_inputs(ds: Dataset, tset: augment.TrainingSet, rel: float
                    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Tikhonov estimates (``lambda = rel * s_max``) of every training pair of ``tset``
    (:func:`egmlib.augmentation.augment.build_training_set`), each on its own torso, and the
    EGMs they pair with, in ``tset``'s order: the real pairs come torso by torso, the synthetic
    ones (last) window by window with every training torso in turn, as
    :func:`egmlib.augmentation.augment.pair_synthetic` makes them."""
    torsos = [int(t) for t in tset.torsos]
    real = tikhonov_inputs(ds, tset.bspm_train[:tset.n_real], torsos, rel)
    if tset.n_synth == 0:
        return real, tset.egm_train
    b = tset.bspm_train[tset.n_real:]
    syn = np.empty((len(b), b.shape[1], ds.transfer.shape[-1]), np.float32)
    for j, t in enumerate(torsos):  # pair i of the synthetic block is on torso i % n_torsos
        syn[j::len(torsos)] = baselines.relative_tikhonov(svd(ds.transfer[t]),
                                                          b[j::len(torsos)], rel)
    return np.concatenate([real, syn]), tset.egm_train


def window_weights(e: ArrayLike) -> NDArray[np.float64]:
    """One weight per window ``(n, T, C)``: the inverse of its mean (over sites) variance over
    time, normalised to mean 1; a flat window gets weight 0. Unweighted least squares is ruled by
    the large AF deflections (AF windows carry several times SR's variance), while the
    experiment's metric, the per-site correlation, is blind to amplitude; these weights give
    every window the same say, as the correlation does."""
    x = np.asarray(e)
    var = np.array([float(x[i].astype(np.float64).var(axis=0).mean()) for i in range(len(x))])
    w = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
    if not np.any(w > 0):
        raise ValueError("e: every window is flat; nothing to fit")
    return w / w.mean()


def _moments(t: NDArray, e: NDArray, w: NDArray[np.float64]
             ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Weighted means of ``t`` and ``e`` over windows and time (window ``i`` weighs ``w[i]``),
    and the weighted centred ``t^T t`` and ``t^T e``, accumulated in float64 over blocks."""
    c_in, c_out = t.shape[-1], e.shape[-1]
    total = float(w.sum()) * t.shape[1]
    m_t = np.zeros(c_in)
    m_e = np.zeros(c_out)
    for s in range(0, len(t), _BLOCK):
        ws = w[s:s + _BLOCK, None, None]
        m_t += (t[s:s + _BLOCK] * ws).reshape(-1, c_in).sum(0, dtype=np.float64)
        m_e += (e[s:s + _BLOCK] * ws).reshape(-1, c_out).sum(0, dtype=np.float64)
    m_t /= total
    m_e /= total
    gram = np.zeros((c_in, c_in))
    cross = np.zeros((c_in, c_out))
    for s in range(0, len(t), _BLOCK):
        ws = np.repeat(w[s:s + _BLOCK], t.shape[1])[:, None]
        x = t[s:s + _BLOCK].reshape(-1, c_in).astype(np.float64) - m_t
        y = e[s:s + _BLOCK].reshape(-1, c_out).astype(np.float64) - m_e
        gram += x.T @ (x * ws)
        cross += (x * ws).T @ y
    return m_t, m_e, gram, cross


def check_pairs(t_train: ArrayLike, e_train: ArrayLike, t_val: ArrayLike, e_val: ArrayLike
                ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """The training and validation pairs of a correction as arrays, each pair of one shape
    ``(n, T, n_rec)`` with ``n >= 1``; a ``ValueError`` naming the pair otherwise."""
    t_tr, e_tr = np.asarray(t_train), np.asarray(e_train)
    t_va, e_va = np.asarray(t_val), np.asarray(e_val)
    for name, (a, b) in (("train", (t_tr, e_tr)), ("val", (t_va, e_va))):
        if a.ndim != 3 or a.shape != b.shape or len(a) == 0:
            raise ValueError(f"t_{name}, e_{name}: expected two non-empty (n, T, n_rec) arrays "
                             f"of one shape; got {a.shape} and {b.shape}")
    return t_tr, e_tr, t_va, e_va


def fit_correction(t_train: ArrayLike, e_train: ArrayLike, t_val: ArrayLike, e_val: ArrayLike,
                   alphas: Sequence[float] = ALPHAS,
                   weightings: Sequence[str] = WEIGHTINGS) -> LinearCorrection:
    """Ridge regression of the EGMs ``e`` on the Tikhonov estimates ``t`` (windows ``(n, T,
    n_rec)``; every time sample of every window is one observation), one fit per weighting of
    ``weightings`` (:data:`WEIGHTINGS`: ``"window"``, :func:`window_weights`; ``"none"``) and
    relative penalty of ``alphas`` (times the mean diagonal of the weighted centred Gram matrix),
    and the fit whose prediction of the validation windows has the highest mean per-site
    correlation (:func:`egmlib.core.metrics.pearson`; the first on ties)."""
    t_tr, e_tr, t_va, e_va = check_pairs(t_train, e_train, t_val, e_val)
    a = np.asarray(alphas, np.float64)
    if a.ndim != 1 or len(a) == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"alphas: got {list(alphas)!r}; allowed: finite numbers > 0")
    if not weightings or any(w not in WEIGHTINGS for w in weightings):
        raise ValueError(f"weightings: got {list(weightings)!r}; allowed: a non-empty list of "
                         f"{', '.join(WEIGHTINGS)}")
    t_va64 = t_va.astype(np.float64)
    fits: list[tuple[float, str, float, NDArray, NDArray, NDArray]] = []
    table: dict[str, list[float]] = {}
    for weighting in weightings:
        w_win = (window_weights(e_tr) if weighting == "window" else np.ones(len(e_tr)))
        m_t, m_e, gram, cross = _moments(t_tr, e_tr, w_win)
        evals, evecs = np.linalg.eigh(gram)
        scale = max(float(np.trace(gram)) / len(gram), np.finfo(float).tiny)
        proj = evecs.T @ cross
        table[weighting] = []
        for alpha in a:
            w = evecs @ (proj / (np.maximum(evals, 0.0) + alpha * scale)[:, None])
            corr = float(np.nanmean(metrics.pearson(e_va, (t_va64 - m_t) @ w + m_e)))
            table[weighting].append(corr)
            fits.append((corr, weighting, float(alpha), w, m_t, m_e))
    best = max(range(len(fits)), key=lambda i: (fits[i][0], -i))
    corr, weighting, alpha, w, m_t, m_e = fits[best]
    return LinearCorrection(weight=w, mean_in=m_t, mean_out=m_e, alpha=alpha,
                            weighting=weighting, val_corr=table)


@dataclass
class CorrectionInputs:
    """What a correction of Tikhonov learns from and is scored on, for one run of 05
    (:func:`correction_inputs`): Tikhonov estimates ``t_*`` and the EGMs ``e_*`` they pair with,
    ``(n, T, n_rec)``, of the training pairs (real, then synthetic, then ``extra_rows``) and of
    the validation pairs, with the rhythm names of the training pairs ``train_labels`` (``""``
    for a synthetic pair, whose rhythm the inputs are not told) and of the validation pairs
    ``val_labels``; the test
    inputs ``t_test`` of 05's test BSPMs on every held-out torso
    in turn, with their truth ``e_test``, rhythm names ``labels``, simulations ``sim_id`` and the
    truth's DFs ``df_truth``; the relative lambda ``rel`` and the counts of pairs."""

    t_train: NDArray[np.float32]
    e_train: NDArray[np.float32]
    t_val: NDArray[np.float32]
    e_val: NDArray[np.float32]
    train_labels: NDArray[np.str_]
    val_labels: NDArray[np.str_]
    t_test: NDArray[np.float64]
    e_test: NDArray[np.float64]
    labels: NDArray
    sim_id: NDArray
    df_truth: NDArray[np.float64]
    fs: float
    rel: float
    n_extra: int

    def score(self, rec: ArrayLike) -> dict[str, Any]:
        """05's test scores of the reconstructions ``rec`` of ``t_test``
        (:func:`egmlib.augmentation.baselines.scores`: by rhythm and ``"all"``) and their
        ``"per_simulation"`` scores (:func:`egmlib.augmentation.augment.per_simulation`)."""
        r = np.asarray(rec)
        if r.shape != self.e_test.shape:
            raise ValueError(f"rec: expected {self.e_test.shape}; got {r.shape}")
        test = baselines.scores(self.e_test, r, self.labels, self.fs, self.df_truth)
        test["per_simulation"] = augment.per_simulation(self.e_test, r, self.sim_id,
                                                        self.labels)
        return test


def correction_inputs(ds: Dataset, seed: int, n_real_sims: int = 0, snr_db: float = 20.0,
                      baseline: Mapping[str, Any] | None = None,
                      synth_egm: ArrayLike | None = None, k: int = 0,
                      extra_rows: ArrayLike | None = None) -> CorrectionInputs:
    """The inputs of a correction of Tikhonov for the run of 05 with ``seed``, ``n_real_sims``
    and ``k`` of the windows ``synth_egm`` (module docstring).

    ``baseline``: :func:`egmlib.augmentation.baselines.cached_baselines` of the data set at
    ``snr_db`` (its validation lambda and truth DFs are reused; computed when ``None``).
    ``synth_egm``, ``k``: as :func:`egmlib.augmentation.augment.build_training_set` takes them
    (the first ``k`` windows, paired through every training torso's transfer matrix with
    noise). ``extra_rows``: data set windows added as real pairs instead, with their own BSPMs
    (:func:`egmlib.augmentation.augment.real_pairs`, noise from ``seed``)."""
    if not (isinstance(snr_db, int | float) and math.isfinite(snr_db)):
        raise ValueError(f"snr_db: got {snr_db!r}; allowed: a finite number (dB)")
    augment.check_real_sims(ds, n_real_sims)
    if baseline is None:
        baseline = baselines.baselines(ds, snr_db, augment.EVAL_NOISE_SEED, "test",
                                       methods=("val",))
    rel = float(baseline["lambdas"]["val"])
    tset = augment.build_training_set(ds, synth_egm, k, snr_db, seed, n_real_sims)
    torsos = [int(t) for t in tset.torsos]
    t_train, e_train = training_inputs(ds, tset, rel)
    names = np.asarray(LABELS)
    train_labels = np.concatenate([np.tile(names[np.asarray(ds.label)[tset.train_windows]],
                                           len(torsos)), np.full(tset.n_synth, "")])
    n_extra = 0
    if extra_rows is not None:
        b_extra, e_extra = augment.real_pairs(ds, extra_rows, snr_db, seed)
        t_train = np.concatenate([t_train, tikhonov_inputs(ds, b_extra, torsos, rel)])
        e_train = np.concatenate([e_train, e_extra])
        n_extra = len(e_extra)
        train_labels = np.concatenate([train_labels, np.tile(
            names[np.asarray(ds.label)[np.asarray(extra_rows)]], len(torsos))])
    idx = np.flatnonzero(ds.part("test"))
    test_t = augment.test_torsos(ds)
    t_test = np.concatenate([baselines.relative_tikhonov(
        svd(ds.transfer[int(t)]), noisy_bspm(ds, idx, int(t), snr_db, augment.EVAL_NOISE_SEED),
        rel) for t in test_t]).astype(np.float64)
    truth = np.asarray(ds.egm[idx], np.float64)
    labels = np.asarray(ds.label[idx])
    fs = float(ds.manifest["fs"])
    df_truth = (np.asarray(baseline["df_truth"], np.float64) if "df_truth" in baseline
                else baselines.truth_df(truth, labels, fs))
    n = len(test_t)
    return CorrectionInputs(
        t_train=t_train, e_train=e_train, t_val=tikhonov_inputs(ds, tset.bspm_val, torsos, rel),
        e_val=tset.egm_val, train_labels=train_labels,
        val_labels=np.tile(names[np.asarray(ds.label)[tset.val_windows]], len(torsos)),
        t_test=t_test,
        e_test=np.concatenate([truth] * n),
        labels=np.concatenate([labels] * n),
        sim_id=np.concatenate([np.asarray(ds.sim_id)[idx]] * n),
        df_truth=np.concatenate([df_truth] * n), fs=fs, rel=rel, n_extra=n_extra)


def run_correction(ds: Dataset, seed: int, n_real_sims: int = 0, snr_db: float = 20.0,
                   baseline: Mapping[str, Any] | None = None,
                   alphas: Sequence[float] = ALPHAS,
                   weightings: Sequence[str] = WEIGHTINGS,
                   synth_egm: ArrayLike | None = None, k: int = 0,
                   extra_rows: ArrayLike | None = None) -> dict[str, Any]:
    """Fit the correction on the training pairs of a run of 05 with ``seed``, ``n_real_sims``
    and ``k`` of the windows ``synth_egm`` (``k = 0``: the real pairs only; module docstring)
    and score it on 05's test inputs (:func:`correction_inputs` takes every argument but
    ``alphas`` and ``weightings``, which :func:`fit_correction` searches).
    Returns ``{"seed", "n_real_sims", "k", "rel_lambda", "alpha", "weighting", "alphas",
    "val_corr": {weighting: [corr per alpha]}, "val_corr_chosen", "n_train_pairs" (all of them),
    "n_extra_pairs" (those of ``extra_rows``), "test": scores by rhythm and "all", and
    "per_simulation" (:func:`egmlib.augmentation.augment.per_simulation`)}``."""
    x = correction_inputs(ds, seed, n_real_sims, snr_db, baseline, synth_egm, k, extra_rows)
    fit = fit_correction(x.t_train, x.e_train, x.t_val, x.e_val, alphas, weightings)
    return {"seed": int(seed), "n_real_sims": int(n_real_sims), "k": int(k), "rel_lambda": x.rel,
            "alpha": fit.alpha, "weighting": fit.weighting, "alphas": [float(a) for a in alphas],
            "val_corr": fit.val_corr,
            "val_corr_chosen": fit.val_corr[fit.weighting][list(alphas).index(fit.alpha)],
            "n_train_pairs": len(x.e_train), "n_extra_pairs": x.n_extra,
            "test": x.score(fit.apply(x.t_test))}
