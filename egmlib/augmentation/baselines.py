"""Baselines of the augmentation experiment, scored on the noisy test BSPMs the network sees.

The reconstruction network of :mod:`egmlib.augmentation.recon` is only worth its training if it
beats what needs none. Every baseline here reconstructs the test EGMs from exactly the noisy BSPMs
of :func:`egmlib.augmentation.augment.evaluate` (same windows, held-out torsos, noise seed) and is
scored by the same per-rhythm metrics:

* ``lcurve``: zero-order Tikhonov, lambda at the L-curve corner of each window (Hansen 2000), the
  paper's classical reference;
* ``gcv``: the same with lambda by generalised cross-validation per window (Golub, Heath and
  Wahba 1979). Expect it to fail here, and why: with 64 leads and more sources than leads, the
  transfer matrix (after the mean reference) spans every referenced lead vector, so the residual
  of the GCV function vanishes as lambda goes to 0 while its denominator stays positive; GCV then
  picks the smallest lambda of its grid and the solution is amplified noise. It is reported,
  not dropped, because it is the textbook automatic rule;
* ``val``: one lambda for every window, chosen on the **validation** simulations (see below);
* ``val_rhythm``: one lambda per rhythm, chosen likewise; at test time it is told each window's
  rhythm, which the network is not, so it is an upper reference rather than a competitor;
* ``mean``: the mean training EGM window (every training simulation, both rhythms), the same
  prediction for every BSPM: the floor that a method which ignores its input reaches.

Validation lambdas (:func:`validation_lambdas`). Each training torso's transfer matrix ``A``
(the Barr-type matrix from the recording-site EGMs to the 64 leads) has its own scale, so
lambdas are searched relative to its largest singular value, ``lambda = r * s_max(A)``, on
:data:`RELATIVE_LAMBDAS`. The validation windows are reconstructed from the BSPMs of every
training torso, with noise at ``snr_db`` drawn from :data:`VALIDATION_NOISE_SEED`; the ``r``
that maximises the mean per-site correlation (the experiment's headline metric) is kept, and
applied at test time to the test torso's own ``s_max``. The test simulations and the test torso
are never read by the choice.

Amplitude: each method's scores add ``amp_ratio_median``, the median over windows and sites of
the standard deviation over time of the reconstruction divided by that of the truth
(:func:`egmlib.core.metrics.amplitude_ratio`): 1 is the right amplitude, Tikhonov's L-curve
overshoots on AF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from egmlib.core import metrics
from egmlib.core.runs import json_ready, load_json, save_json
from egmlib.data import LABELS, Dataset, noisy_bspm
from egmlib.physics.forward import SVD, svd, tikhonov_windows

__all__ = [
    "BASELINES",
    "RELATIVE_LAMBDAS",
    "VALIDATION_NOISE_SEED",
    "baselines",
    "cached_baselines",
    "relative_tikhonov",
    "scores",
    "truth_df",
    "validation_lambdas",
]

#: The baselines of :func:`baselines`, in the order tables show them.
BASELINES = ("lcurve", "gcv", "val", "val_rhythm", "mean")
#: Searched values of ``lambda / s_max`` for the validation lambdas (49 points, 8 decades).
RELATIVE_LAMBDAS = np.logspace(0.0, -8.0, 49)
#: Seed of the noise on the validation BSPMs of the lambda choice (fixed, independent of runs).
VALIDATION_NOISE_SEED = 20_251_217


def _summary(per_site: Mapping[str, NDArray], sel: NDArray | slice, df_err: NDArray
             ) -> dict[str, Any]:
    """The scores of the windows ``sel`` from per-window, per-site values (``corr``, ``rmse``,
    ``lsd``, ``amp``; :func:`scores`) and their DF errors: what
    :func:`egmlib.core.metrics.compare` and :func:`egmlib.core.metrics.amplitude_ratio` give on
    those windows alone."""
    out: dict[str, Any] = {}
    for key in ("corr", "rmse", "lsd"):
        s = metrics.summarize(per_site[key][sel])
        out[f"{key}_mean"], out[f"{key}_std"] = s["mean"], s["std"]
    finite = df_err[np.isfinite(df_err)]
    out["df_err_mean"] = float(finite.mean()) if finite.size else float("nan")
    out["df_err_std"] = float(finite.std()) if finite.size else float("nan")
    out["df_err_median"] = float(np.median(finite)) if finite.size else float("nan")
    amp = per_site["amp"][sel]
    out["amp_ratio_median"] = (float(np.nanmedian(amp)) if np.isfinite(amp).any()
                               else float("nan"))
    out["n"] = len(per_site["corr"][sel])
    return out


def truth_df(truth: ArrayLike, labels: ArrayLike, fs: float) -> NDArray[np.float64]:
    """The DF ``(n, C)`` of each window and site of ``truth`` ``(n, T, C)``, with the method of
    each window's rhythm (:func:`egmlib.core.metrics.rhythm_df`; ``labels``: class indices in
    :data:`egmlib.data.LABELS`): what :func:`scores` compares a reconstruction's DF with. Compute
    it once for truths that several methods are scored against."""
    x = np.asarray(truth, np.float64)
    lab = np.asarray(labels)
    if x.ndim != 3 or lab.shape != (len(x),):
        raise ValueError(f"labels: expected {len(x)} labels for truth windows (n, T, C); got "
                         f"{lab.shape} for {x.shape}")
    out = np.full((x.shape[0], x.shape[2]), np.nan)
    for j, rhythm in enumerate(LABELS):
        sel = lab == j
        if sel.any():
            out[sel] = metrics.rhythm_df(x[sel], fs, rhythm)
    return out


def scores(truth: ArrayLike, recon: ArrayLike, labels: ArrayLike, fs: float,
           df_truth: ArrayLike | None = None) -> dict[str, dict[str, Any]]:
    """The scores of a reconstruction method by rhythm (``"SR"``, ``"AF"``: those present) and
    over ``"all"`` windows: :func:`egmlib.core.metrics.compare` (per-site correlation, RMSE and
    LSD: mean and std over windows and sites), the DF error against the truth
    (``df_err_mean/std/median``, Hz; :func:`egmlib.core.metrics.rhythm_df` with each window's
    rhythm's method; NaN DFs of constant reconstructions are left out), ``amp_ratio_median``
    (:func:`egmlib.core.metrics.amplitude_ratio`) and ``n`` windows. ``labels``: each window's
    class index in :data:`egmlib.data.LABELS`. ``df_truth``: :func:`truth_df` of ``truth``
    (computed here when ``None``). Every per-site value is computed once and summarised per
    rhythm and over all windows."""
    x = np.asarray(truth, np.float64)
    y = np.asarray(recon, np.float64)
    lab = np.asarray(labels)
    if x.shape != y.shape or x.ndim != 3 or lab.shape != (len(x),):
        raise ValueError(f"recon, labels: expected {x.shape} windows and {len(x)} labels; got "
                         f"{y.shape} and {lab.shape}")
    d_true = truth_df(x, lab, fs) if df_truth is None else np.asarray(df_truth, np.float64)
    if d_true.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"df_truth: expected shape {(x.shape[0], x.shape[2])}; got "
                         f"{d_true.shape}")
    per_site = {"corr": metrics.pearson(x, y), "rmse": metrics.rmse(x, y),
                "lsd": metrics.lsd(x, y), "amp": metrics.amplitude_ratio(x, y)}
    out: dict[str, dict[str, Any]] = {}
    errs = []
    for j, rhythm in enumerate(LABELS):
        sel = lab == j
        if not sel.any():
            continue
        err = np.abs(metrics.rhythm_df(y[sel], fs, rhythm) - d_true[sel]).ravel()
        errs.append(err)
        out[rhythm] = _summary(per_site, sel, err)
    out["all"] = _summary(per_site, slice(None), np.concatenate(errs) if errs else np.array([]))
    return out


def relative_tikhonov(dec: SVD, bspm: ArrayLike, rel: float) -> NDArray[np.float64]:
    """Zero-order Tikhonov of BSPM windows ``(n, T, leads)`` with one ``lambda = rel * s_max``:
    sources ``(n, T, n_sources)``; ``dec`` the SVD of the transfer matrix."""
    if not (isinstance(rel, int | float) and math.isfinite(rel) and rel >= 0):
        raise ValueError(f"rel: got {rel!r}; allowed: a finite number >= 0")
    b = np.asarray(bspm, np.float64)
    if b.ndim != 3 or b.shape[-1] != dec.shape[0]:
        raise ValueError(f"bspm: expected (n, T, {dec.shape[0]}); got {b.shape}")
    lam = rel * float(dec.s.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        filt = np.where(dec.s > 0, dec.s / (dec.s ** 2 + lam ** 2), 0.0)
    return ((b @ dec.U) * filt) @ dec.Vt


def _torsos(ds: Dataset, split: int) -> NDArray[np.int64]:
    t = np.flatnonzero(np.asarray(ds.torso_split) == split)
    if split == 2 and len(t) == 0:  # no held-out torso: every torso (as augment.test_torsos)
        return np.arange(len(ds.torso_split))
    if len(t) == 0:
        raise ValueError("ds: has no training torso (torso_split == 0)")
    return t


def validation_lambdas(ds: Dataset, snr_db: float, seed: int = VALIDATION_NOISE_SEED,
                       grid: Sequence[float] | NDArray = RELATIVE_LAMBDAS) -> dict[str, Any]:
    """Mean per-site correlation and RMSE of Tikhonov at each relative lambda of ``grid`` on the
    validation simulations (every training torso), overall and per rhythm, and the relative
    lambda that maximises the correlation (module docstring).

    Returns ``{"grid", "corr": {group: [...]}, "rmse": {group: [...]}, "chosen": {group: r},
    "snr_db", "noise_seed", "n_windows"}`` with groups ``"all"`` and each rhythm present."""
    g = np.asarray(grid, np.float64)
    if g.ndim != 1 or len(g) < 2 or not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise ValueError("grid: expected at least two finite relative lambdas > 0")
    idx = np.flatnonzero(ds.part("val"))
    if len(idx) == 0:
        raise ValueError("ds: has no validation windows (split 1)")
    truth = np.asarray(ds.egm[idx], np.float64)
    labels = np.asarray(ds.label[idx])
    groups = {"all": np.ones(len(idx), bool)}
    groups.update({r: labels == j for j, r in enumerate(LABELS) if np.any(labels == j)})
    corr = {name: np.zeros(len(g)) for name in groups}
    rmse = {name: np.zeros(len(g)) for name in groups}
    torsos = _torsos(ds, 0)
    n_t = truth.shape[1]
    e_mean = truth.mean(axis=1)                                   # (n, C)
    e_c = truth - e_mean[:, None, :]
    e_css = (e_c * e_c).sum(axis=1)                               # (n, C)
    for t in torsos:
        dec = svd(ds.transfer[int(t)])
        beta = noisy_bspm(ds, idx, int(t), snr_db, seed) @ dec.U   # (n, T, k)
        b_mean = beta.mean(axis=1)                                # (n, k)
        b_c = beta - b_mean[:, None, :]
        cross = np.einsum("ntk,ntc->nkc", b_c, e_c)               # (n, k, C)
        gram = np.einsum("ntk,ntl->nkl", b_c, b_c)                # (n, k, k)
        s_max = float(dec.s.max())
        for i, rel in enumerate(g):
            lam = rel * s_max
            with np.errstate(divide="ignore", invalid="ignore"):
                filt = np.where(dec.s > 0, dec.s / (dec.s ** 2 + lam ** 2), 0.0)
            w = filt[:, None] * dec.Vt                            # (k, C): y = beta @ w
            s_ye = np.einsum("nkc,kc->nc", cross, w)
            s_yy = np.einsum("nkc,kc->nc", np.einsum("nkl,lc->nkc", gram, w), w)
            sq = s_yy - 2.0 * s_ye + e_css + n_t * (b_mean @ w - e_mean) ** 2
            with np.errstate(divide="ignore", invalid="ignore"):
                c = np.where((s_yy > 0) & (e_css > 0), s_ye / np.sqrt(s_yy * e_css), np.nan)
            e = np.sqrt(np.maximum(sq, 0.0) / n_t)
            for name, sel in groups.items():
                corr[name][i] += np.nanmean(c[sel]) / len(torsos)
                rmse[name][i] += float(e[sel].mean()) / len(torsos)
    chosen = {name: float(g[int(np.nanargmax(v))]) for name, v in corr.items()}
    return {"grid": g.tolist(), "corr": {k: v.tolist() for k, v in corr.items()},
            "rmse": {k: v.tolist() for k, v in rmse.items()}, "chosen": chosen,
            "snr_db": float(snr_db), "noise_seed": int(seed), "n_windows": len(idx),
            "torsos": [int(t) for t in torsos]}


def baselines(ds: Dataset, snr_db: float, seed: int, part: str = "test",
              methods: Sequence[str] = BASELINES,
              val_lambdas: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every method of ``methods`` (:data:`BASELINES`) on the windows of ``part`` from the BSPMs
    of the held-out torsos with noise at ``snr_db`` from ``seed``: exactly the inputs of
    :func:`egmlib.augmentation.augment.evaluate` for the same ``seed``.

    Returns ``{method: {rhythm: scores(...), "all": ...}, "lambdas": {...},
    "validation": validation_lambdas(...) or None, "df_truth": truth_df(...) of the windows of
    ``part`` (n_windows, sites; what every run's DF error compares with), "n_windows",
    "torsos", "noise_seed", "snr_db", "part"}``; ``lambdas`` holds the median lambda of
    ``lcurve`` / ``gcv`` and the relative lambdas of ``val`` / ``val_rhythm``.
    ``val_lambdas``: a stored :func:`validation_lambdas` result (computed here when ``None``
    and needed)."""
    unknown = [m for m in methods if m not in BASELINES]
    if unknown or not methods:
        raise ValueError(f"methods: got {list(methods)!r}; allowed: a non-empty list of "
                         f"{', '.join(BASELINES)}")
    if not (isinstance(snr_db, int | float) and math.isfinite(snr_db)):
        raise ValueError(f"snr_db: got {snr_db!r}; allowed: a finite number (dB)")
    idx = np.flatnonzero(ds.part(part))
    if len(idx) == 0:
        raise ValueError(f"part: {part!r} has no windows")
    fs = float(ds.manifest["fs"])
    truth = np.asarray(ds.egm[idx], np.float64)
    labels = np.asarray(ds.label[idx])
    torsos = _torsos(ds, 2)
    needs_val = any(m in ("val", "val_rhythm") for m in methods)
    val = (dict(val_lambdas) if val_lambdas is not None
           else validation_lambdas(ds, snr_db) if needs_val else None)
    recs: dict[str, list[NDArray]] = {m: [] for m in methods}
    lams: dict[str, list[float]] = {"lcurve": [], "gcv": []}
    mean_window = np.asarray(ds.egm[np.flatnonzero(ds.part("train"))], np.float64).mean(0)
    for t in torsos:
        b = noisy_bspm(ds, idx, int(t), snr_db, seed)
        dec = svd(ds.transfer[int(t)])
        for m in methods:
            if m in ("lcurve", "gcv"):
                sol, lam = tikhonov_windows(dec, b, m)
                recs[m].append(sol)
                lams[m].extend(lam.tolist())
            elif m == "val":
                recs[m].append(relative_tikhonov(dec, b, val["chosen"]["all"]))
            elif m == "val_rhythm":
                sol = np.empty((len(idx), *truth.shape[1:]))
                for j, rhythm in enumerate(LABELS):
                    sel = labels == j
                    if sel.any():
                        sol[sel] = relative_tikhonov(dec, b[sel], val["chosen"][rhythm])
                recs[m].append(sol)
            else:
                recs[m].append(np.broadcast_to(mean_window, truth.shape))
    truth_all = np.concatenate([truth] * len(torsos))
    lab_all = np.concatenate([labels] * len(torsos))
    df_truth = truth_df(truth, labels, fs)
    df_all = np.concatenate([df_truth] * len(torsos))
    out: dict[str, Any] = {m: scores(truth_all, np.concatenate(recs[m]), lab_all, fs, df_all)
                           for m in methods}
    out["lambdas"] = {**{m: float(np.median(v)) for m, v in lams.items() if v},
                      **({"val": val["chosen"]["all"]} if "val" in methods else {}),
                      **({"val_rhythm": {r: val["chosen"][r] for r in LABELS
                                         if r in val["chosen"]}}
                         if "val_rhythm" in methods else {})}
    out["validation"] = val
    out["df_truth"] = df_truth
    out.update({"n_windows": len(idx), "torsos": [int(t) for t in torsos],
                "noise_seed": int(seed), "snr_db": float(snr_db), "part": part})
    return out


def _data_key(ds: Dataset) -> dict[str, str]:
    """The SHA-256 of every file of the data set (from its manifest): what the baselines read."""
    return {name: str(info["sha256"]) for name, info in sorted(ds.manifest["files"].items())}


def cached_baselines(ds: Dataset, snr_db: float, seed: int, folder: str | Path) -> dict[str, Any]:
    """:func:`baselines` on the test split (every method), computed once per data set, noise
    level and noise seed and kept in ``folder/baselines_snr<snr_db>_seed<seed>.json`` (JSON-ready:
    non-finite numbers are ``None``). The file is reused only when it was made from the same data
    files (their SHA-256), settings and lambda grid; otherwise it is recomputed and replaced
    atomically. Every run of the augmentation experiment scores on the same noisy test BSPMs,
    so the baselines are the same for all of them: computing them once saves about 20 s a run
    (``make bench``, section ``baselines``)."""
    key = {"format": "egmlib.baselines/2", "data": _data_key(ds), "snr_db": float(snr_db),
           "seed": int(seed), "methods": list(BASELINES), "grid": RELATIVE_LAMBDAS.tolist()}
    path = Path(folder) / f"baselines_snr{float(snr_db):g}_seed{int(seed)}.json"
    if path.exists():
        try:
            stored = load_json(path)
        except ValueError:
            stored = None  # unreadable: recompute
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["baselines"]
    out = json_ready(baselines(ds, snr_db, seed))
    save_json(path, {"key": key, "baselines": out})
    return out
