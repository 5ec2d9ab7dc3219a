"""Measurements on the simulations and post-hoc analyses of a loaded data set.

:func:`sr_activation_map` and :func:`formulation_agreement` are used while building; the others
read a :class:`~egmlib.data.store.Dataset` (physics checks, counts, noisy BSPMs, the Tikhonov
baseline and :func:`inverse_reading`, its reading).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from egmlib.core import metrics
from egmlib.data.store import LABELS, SPLIT_NAMES, Dataset
from egmlib.physics.forward import (
    LAMBDA_RULES,
    add_noise,
    reference_mean,
    svd,
    tikhonov_solution,
    tikhonov_windows,
)


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


def physics_summary(ds: Dataset) -> dict[str, Any]:
    """The checks of the simulated physics, per rhythm, from the manifest's per-simulation data.

    SR: conduction velocity (median per simulation, m/s), fraction of tissue activated, and the
    fraction of simulations whose median site DF equals the pacing rate within 0.1 Hz.
    AF: DF (median over sites per simulation: its range and 10th / 50th / 90th percentiles over
    simulations), mean number of wavefronts, terminated runs that were replaced.
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
        p10, p50, p90 = np.percentile(df, [10, 50, 90])
        out["AF"] = {"n_sims": len(af), "df_min_hz": float(df.min()),
                     "df_max_hz": float(df.max()), "df_p10_hz": float(p10),
                     "df_p50_hz": float(p50), "df_p90_hz": float(p90),
                     "wavefronts_min": float(wf.min()),
                     "wavefronts_max": float(wf.max()),
                     "replaced_terminated": int(ds.manifest["replaced_terminated_af"])}
    return out


#: Literature ranges beside which 01 shows the AF measures of :func:`af_regularity` (keys of its
#: ``per_sim``): dominant frequency of clinical AF between patients and sites, roughly 3-9 Hz
#: (site means of 5.1-6.2 Hz, SD 0.6-0.8 Hz, in Lazar et al., Circulation 110:3181, 2004); the
#: organisation index of Everett et al. (IEEE TBME 48:969, 2001), 0.35-0.51 in canine bipolar
#: AF recordings (a rough guide for simulated unipolar EGMs).
AF_LITERATURE: dict[str, tuple[float, float]] = {"df_median_hz": (3.0, 9.0),
                                                 "oi_median": (0.35, 0.51)}


def af_regularity(egm: NDArray, fs: float, sim_id: NDArray,
                  df_hz: NDArray | None = None) -> dict[str, Any]:
    """How (ir)regular AF electrograms are, per simulation and over simulations.

    Args:
        egm: (n_windows, T, n_rec) AF EGM windows at ``fs`` Hz.
        fs: sampling rate (Hz).
        sim_id: (n_windows,) simulation of each window.
        df_hz: optional (n_sims, n_rec) site DFs, one row per simulation in ascending
            ``sim_id`` order (the data set's 500 Hz ``df_hz``); default: the AF DF of each
            window (:func:`egmlib.core.metrics.rhythm_df`), median over a simulation's windows.

    Per simulation (``per_sim``, in ascending ``sim_id``): ``df_median_hz`` (median site DF),
    ``df_iqr_hz`` and ``df_p90_p10_hz`` (the spread of site DF within the simulation),
    ``oi_median`` (median over windows and sites of the organisation index of
    :func:`egmlib.core.metrics.organisation_index` in the AF band, around each window's DF),
    ``cl_mean_ms``, ``cl_sd_ms`` and ``cl_cv`` (medians over windows and sites of
    :func:`egmlib.core.metrics.cycle_length_variability` with the window DFs; from unipolar EGMs
    the CV comes out about twice the true one, see there). ``summary``: over simulations, the
    10th / 50th / 90th percentiles of each of these (``<name>_p10`` ...) and ``n_sims``.
    """
    egm = np.asarray(egm, float)
    sim_id = np.asarray(sim_id)
    if egm.ndim != 3 or len(sim_id) != len(egm):
        raise ValueError(f"egm must be (n_windows, T, n_rec) with one sim_id per window; got "
                         f"egm {egm.shape} and sim_id {sim_id.shape}")
    sims = np.unique(sim_id)
    if df_hz is not None and np.shape(df_hz) != (len(sims), egm.shape[2]):
        raise ValueError(f"df_hz must be (n_sims, n_rec) = {(len(sims), egm.shape[2])}; got "
                         f"{np.shape(df_hz)}")
    win_df = metrics.rhythm_df(egm, fs, "AF")  # (n_windows, n_rec)
    oi = metrics.organisation_index(egm, fs, metrics.AF_BAND, df=win_df)
    cl = metrics.cycle_length_variability(egm, fs, df=win_df)
    names = ("df_median_hz", "df_iqr_hz", "df_p90_p10_hz", "oi_median", "cl_mean_ms",
             "cl_sd_ms", "cl_cv")
    per_sim: dict[str, list[float]] = {k: [] for k in names}
    for k, sid in enumerate(sims):
        sel = sim_id == sid
        site_df = (np.median(win_df[sel], axis=0) if df_hz is None
                   else np.asarray(df_hz, float)[k])
        p10, p25, p50, p75, p90 = np.nanpercentile(site_df, [10, 25, 50, 75, 90])
        per_sim["df_median_hz"].append(float(p50))
        per_sim["df_iqr_hz"].append(float(p75 - p25))
        per_sim["df_p90_p10_hz"].append(float(p90 - p10))
        per_sim["oi_median"].append(float(np.nanmedian(oi[sel])))
        for name, key in (("cl_mean_ms", "mean_ms"), ("cl_sd_ms", "sd_ms"), ("cl_cv", "cv")):
            v = cl[key][sel]
            per_sim[name].append(float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan)
    summary: dict[str, float] = {"n_sims": len(sims)}
    for name in names:
        v = np.asarray(per_sim[name])
        for q in (10, 50, 90):
            summary[f"{name}_p{q}"] = (float(np.nanpercentile(v, q)) if np.isfinite(v).any()
                                       else np.nan)
    return {"sim_id": sims, "per_sim": {k: np.asarray(v) for k, v in per_sim.items()},
            "summary": summary}


def af_regularity_summary(ds: Dataset) -> dict[str, Any]:
    """:func:`af_regularity` of a data set's AF windows, with its 500 Hz site DFs."""
    af = np.flatnonzero(ds.label == LABELS.index("AF"))
    if len(af) == 0:
        raise ValueError("the data set holds no AF windows")
    sims = [s["spec"]["sim_id"] for s in ds.simulations]
    sim_ids = np.unique(ds.sim_id[af])
    rows = [sims.index(int(i)) for i in sim_ids]
    return af_regularity(ds.egm[af], float(ds.manifest["fs"]), ds.sim_id[af],
                         df_hz=np.asarray(ds.df_hz)[rows])


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

    Returns ``{rhythm: {"corr_mean", "corr_std", "rmse_mean", ..., "lambda_median",
    "amp_ratio_median", "truth_rms", "n"}}`` (``amp_ratio_median``:
    :func:`egmlib.core.metrics.amplitude_ratio` over windows, torsos and sites; ``truth_rms``:
    RMS of the true EGMs in mV) and,
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
        truth_all, recon_all = np.concatenate([truth] * len(torsos)), np.concatenate(recon)
        res = metrics.compare(truth_all, recon_all)
        res.update(lambda_median=float(np.median(np.concatenate(lams))),
                   amp_ratio_median=float(np.nanmedian(metrics.amplitude_ratio(truth_all,
                                                                               recon_all))),
                   truth_rms=float(np.sqrt(np.mean(truth ** 2))),
                   n=len(torsos) * len(idx))
        out[rhythm] = res
    return out


def inverse_reading(tikhonov: dict[str, Any], agreement: dict[str, float]) -> list[str]:
    """01's reading of the forward model and the classical inverse, computed from the numbers.

    ``tikhonov``: :func:`tikhonov_evaluation` (per rhythm ``corr_mean``, ``rmse_mean``,
    ``amp_ratio_median``, ``truth_rms``); ``agreement``: :func:`formulation_agreement`. One
    sentence on the model error of the Barr-type transfer matrix (the matrix Tikhonov inverts
    and that pairs synthetic EGMs, against the source-based BSPMs the networks see), one per
    rhythm on Tikhonov's correlation and amplitude, and one that names over-amplification when
    the reconstruction's RMSE exceeds the signal's own RMS (a zero reconstruction would do
    better on RMSE)."""
    a = agreement
    lines = [
        f"The Barr-type transfer matrix reproduces the source-based BSPMs with median correlation "
        f"{a['corr_median']:.2f} (median relative error {a['rel_error_median']:.2f}); "
        f"its worst window reaches only {a['corr_min']:.2f} (relative error "
        f"{a['rel_error_max']:.2f}). Tikhonov inverts this matrix and synthetic EGMs are "
        "paired through it, so both carry a model error of that size on top of the noise (the "
        "inverse is not solved with the model that made the data, which avoids the inverse "
        "crime)."]
    over = []
    for rhythm in LABELS:
        r = tikhonov.get(rhythm)
        if not r:
            continue
        lines.append(
            f"{rhythm}: Tikhonov (L-curve lambda per window) reaches correlation "
            f"{r['corr_mean']:.2f}, RMSE {r['rmse_mean']:.2f} mV against a signal RMS of "
            f"{r['truth_rms']:.2f} mV, median amplitude {r['amp_ratio_median']:.1f}x the truth.")
        if r["rmse_mean"] > r["truth_rms"]:
            over.append(rhythm)
    if over:
        lines.append(
            f"In {' and '.join(over)} the RMSE exceeds the signal's RMS: the L-curve corner "
            "under-regularises these windows and over-amplifies them, so RMSE comparisons with "
            "this baseline say little; notebook 05 adds a lambda chosen on validation windows.")
    return lines
