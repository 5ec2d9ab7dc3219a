"""Fidelity of the generated electrograms (notebook 04_fidelity), next to reference generators.

Every number comes from :mod:`egmlib.core.metrics`. The generated sets are measured against
the
held-out *test* windows of their rhythm (simulations that neither VAE saw), and so are three
reference generators, so that a reader can tell what a number means:

``ceiling``
    Real windows of other simulations (the training windows of the rhythm, ``n_eval`` drawn
    without replacement while there are enough), measured exactly like a generated set. This is
    what a generator that reproduces the real distribution perfectly, without copying the test
    simulations, would score. (It is "held-out real windows against real windows of other
    simulations", with the roles arranged so that every row is compared against the *same*
    test windows: same reference pool, same nearest-neighbour advantage, same DF target.)
``noisy copies``
    Random training windows plus white Gaussian noise at a given SNR (per window and site:
    noise variance = mean square of that site's window / 10^(SNR/10)). At high SNR they score
    like the ceiling; their distance from it shows what noise of that size costs in each metric.
``phase-randomised``
    Fourier surrogates (Theiler et al., Physica D 58:77-94, 1992; multichannel form of Prichard &
    Theiler, PRL 73:951, 1994) of random training windows: ``rfft`` along time, the phase of every
    bin from DC+1 to below Nyquist replaced by ``phase + phi_f`` with ``phi_f ~ U(0, 2 pi)``
    drawn once per window and frequency and *shared by all sites*, then ``irfft``. The amplitude
    spectrum of every site is kept exactly (DC and Nyquist bins are untouched: they must stay
    real), and because all sites are rotated by the same phase the cross-spectra between sites,
    hence their lags and coherence, are kept too; what is destroyed is the timing of the
    waveform inside the window (sharp deflections become Gaussian-looking noise with the right
    spectrum). A surrogate therefore scores well on spectral metrics and badly on morphology:
    a generator that scores like it has learned spectra but not waveforms.
    ``shared=False`` draws one phase per site and frequency instead (keeps only the per-site
    spectra).

Protocol (:func:`fidelity_table`)
---------------------------------
(a) Morphology. A generated window has no real counterpart, so each one is paired with its
    nearest held-out test window of the same rhythm: the smallest RMSE over all samples and sites
    (:func:`egmlib.generators.generate.nearest_windows`). Correlation, RMSE and LSD per site are
    then computed on the pairs by :func:`egmlib.core.metrics.compare` (mean +- std over sites
    and windows), the paper's definitions. Nearest pairing flatters every row alike (a
    generated window is compared with the real window it resembles most), which is why the
    ceiling row is needed.
(b) Reconstruction fidelity of held-out windows,
    :func:`egmlib.generators.synthesis.reconstruction_metrics` (z = encoder mean), for VAE-S and
    VAE-C, with each model's collapse report per rhythm
    (:func:`egmlib.evaluation.evaluator.collapse_report`: active units of its own encoder, and
    how distinct the reconstructions of different windows are), beside what memorising the
    training set scores (:func:`egmlib.evaluation.evaluator.nearest_train_predictor`, each test
    window predicted by its nearest training window).
(c) Distributions in the independent evaluation space of
    :mod:`egmlib.evaluation.evaluator`: a small SR/AF classifier's embedding and physiological
    features (DF, its spread over sites, organisation index, amplitude, RMS, neighbour
    coherence), fitted once on the real training windows only and frozen (stored beside the
    data set), so no generator shapes the space it is judged in and rows compare across runs
    and generators. Frechet distance, MMD^2, precision and recall (Kynkäänniemi et al. 2019),
    coverage (Naeem et al. 2020), diversity, and ``called_af``: the share of the set that the
    real-trained classifier calls AF (:func:`egmlib.evaluation.evaluator.distribution_row`); the
    physiological features' medians against the held-out windows'
    (:func:`egmlib.evaluation.evaluator.physiology_row`). (Until 2026-12 the space was the VAE-C
    encoder, with a linear probe fed the label it was asked to predict; both are gone.)
(d) Spectra. Mean Welch PSD with 10-90 % bands over windows and sites; the mean absolute
    difference of the mean PSDs in dB; dominant frequency per site with
    :func:`egmlib.core.metrics.rhythm_df` at ``fs = ds.manifest["fs"]`` (at 100 Hz SR:
    autocorrelation in 0.5-3 Hz, since the plain PSD peaks on harmonics of the pacing rate; AF:
    plain Welch argmax in 3-12 Hz); ``df_abs_diff_hz`` is the mean over sites of
    ``|mean DF of the set at the site - mean DF of the test windows at the site|`` (sites keep
    their own rates, AF DF varies over the atria).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from egmlib.core import metrics
from egmlib.core.checks import check_int
from egmlib.core.runs import json_ready
from egmlib.data import LABELS, Dataset
from egmlib.evaluation.evaluator import (
    Evaluator,
    collapse_report,
    distribution_row,
    load_or_fit_evaluator,
    nearest_train_predictor,
    physiology_row,
)
from egmlib.generators import synthesis
from egmlib.generators.generate import encode_means, generate, nearest_windows
from egmlib.physics.forward import add_noise

__all__ = [
    "NOISY_SNR_DB",
    "PAPER",
    "ceiling",
    "df_figure",
    "evaluation_sets",
    "examples_figure",
    "fidelity_table",
    "format_table",
    "latent_figure",
    "noisy_copies",
    "phase_randomised",
    "psd_figure",
    "reading",
    "row",
    "surrogate",
]

#: SNRs (dB) of the noisy-copy reference rows.
NOISY_SNR_DB: tuple[float, ...] = (20.0, 5.0)
#: The paper's VAE-S fidelity figures (in-silico EGMs of another simulator and geometry).
PAPER: dict[str, float] = {"lsd_mean": 2.39, "corr_mean": 0.56}

_MODELS = ("vae_s", "vae_c")
_LABEL = {"vae_s": "VAE-S", "vae_c": "VAE-C", "ceiling": "ceiling (real, other sims)",
          "phase_randomised": "phase-randomised"}
_DF_BIN = {"SR": 0.05, "AF": 0.1}


def _label(name: str) -> str:
    if name.startswith("noisy_"):
        return f"noisy copies {name[6:-2]} dB"
    return _LABEL.get(name, name)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _rhythm(rhythm: str) -> str:
    if rhythm not in LABELS:
        raise ValueError(f"rhythm: got {rhythm!r}; allowed: {', '.join(LABELS)}")
    return rhythm


def _part(ds: Dataset, part: str, rhythm: str, at_least: int = 1) -> NDArray[np.float32]:
    x = np.asarray(ds.egm[ds.part(part, _rhythm(rhythm))])
    if len(x) < at_least:
        raise ValueError(f"ds: the {part} split holds {len(x)} {rhythm} window(s), fewer than "
                         f"{at_least}; rebuild the data set (notebook 01_data) with more "
                         "simulations")
    return x


def _draw(n_avail: int, n: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """``n`` indices into ``n_avail`` items: without replacement while possible."""
    return rng.choice(n_avail, size=n, replace=n > n_avail).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Reference generators
# ----------------------------------------------------------------------------------------------


def ceiling(ds: Dataset, rhythm: str, n: int | None = None, seed: int = 0
            ) -> NDArray[np.float32]:
    """Real windows of other simulations than the test ones: the training windows of
    ``rhythm`` (all of them, or ``n`` drawn without replacement while there are enough)."""
    x = _part(ds, "train", rhythm)
    if n is None:
        return x
    idx = _draw(len(x), check_int("n", n, 1), np.random.default_rng(seed))
    return x[idx]


def noisy_copies(ds: Dataset, rhythm: str, n: int, snr_db: float, seed: int
                 ) -> NDArray[np.float64]:
    """``n`` random training windows of ``rhythm`` plus white noise at ``snr_db`` per window and
    site (:func:`egmlib.physics.forward.add_noise` over time: noise variance = mean over time of
    ``x^2`` / 10^(snr_db / 10)); float64."""
    rng = np.random.default_rng(seed)
    x = _part(ds, "train", rhythm)
    idx = _draw(len(x), check_int("n", n, 1), rng)
    return add_noise(x[idx], snr_db, rng, axis=-2)


def surrogate(x: NDArray, rng: np.random.Generator, shared: bool = True) -> NDArray[np.float64]:
    """Phase-randomised surrogates of windows ``x`` ``(n, T, C)`` (module docstring)."""
    a = np.asarray(x, np.float64)
    if a.ndim != 3:
        raise ValueError(f"x: expected windows shaped (n, T, C); got {a.shape}")
    T = a.shape[1]
    spec = np.fft.rfft(a, axis=1)
    n_f = spec.shape[1]
    shape = (a.shape[0], n_f, 1) if shared else (a.shape[0], n_f, a.shape[2])
    phi = rng.uniform(0.0, 2.0 * np.pi, shape)
    phi[:, 0] = 0.0                       # DC stays real
    if T % 2 == 0:
        phi[:, -1] = 0.0                  # so does the Nyquist bin of an even length
    return np.fft.irfft(spec * np.exp(1j * phi), n=T, axis=1)


def phase_randomised(ds: Dataset, rhythm: str, n: int, seed: int, shared: bool = True
                     ) -> NDArray[np.float64]:
    """Phase-randomised surrogates of ``n`` random training windows of ``rhythm``: the same
    amplitude spectrum per site, random phases shared by all sites (``shared=False``: one
    phase per site)."""
    rng = np.random.default_rng(seed)
    x = _part(ds, "train", rhythm)
    idx = _draw(len(x), check_int("n", n, 1), rng)
    return surrogate(x[idx], rng, shared=shared)


# ----------------------------------------------------------------------------------------------
# The sets and their measurement
# ----------------------------------------------------------------------------------------------


def _load_models(run_dir: str | Path) -> dict[str, Any]:
    return {k: synthesis.load_generator(run_dir, k)[:2] for k in _MODELS}


def _generated(models: Mapping[str, Any], ds: Dataset, kind: str, rhythm: str, n: int,
               seed: int, mode: str) -> NDArray[np.float32]:
    model, norm = models[kind]
    label = None if kind == "vae_s" else LABELS.index(rhythm)
    kw: dict[str, Any] = {}
    if mode == "guided":
        x_tr, y_tr = synthesis.training_windows(ds, kind, "train")
        kw = {"train_latents": encode_means(model, norm, x_tr, y_tr), "train_labels": y_tr}
    return generate(model, norm, n, label=label, seed=seed, mode=mode, **kw)


def _check(ds: Dataset, n_eval: Any, seed: Any, gen_mode: Any) -> tuple[int, int, str]:
    if not isinstance(ds, Dataset) and not hasattr(ds, "part"):
        raise ValueError(f"ds: expected a Dataset (egmlib.data.load_dataset); got {type(ds)}")
    n = check_int("n_eval", n_eval, 2)
    s = check_int("seed", seed, 0)
    if gen_mode not in ("prior", "guided"):
        raise ValueError(f"gen_mode: got {gen_mode!r}; allowed: 'prior' or 'guided'")
    for rhythm in LABELS:
        _part(ds, "test", rhythm, at_least=2)
        _part(ds, "train", rhythm, at_least=2)
    return n, s, gen_mode


def evaluation_sets(ds: Dataset, run_dir: str | Path, n_eval: int, seed: int,
                    gen_mode: str = "prior", models: Mapping[str, Any] | None = None
                    ) -> dict[str, dict[str, NDArray]]:
    """``{rhythm: {set: windows (n_eval, T, C)}}``: the generated windows of VAE-S (SR) and
    VAE-C (SR, AF) drawn with ``gen_mode``, and the reference sets. Missing generators raise
    :class:`egmlib.core.runs.MissingInputError` naming the notebook that trains them."""
    n, s, mode = _check(ds, n_eval, seed, gen_mode)
    models = _load_models(run_dir) if models is None else models
    out: dict[str, dict[str, NDArray]] = {}
    for r_i, rhythm in enumerate(LABELS):
        sets: dict[str, NDArray] = {}
        for kind in _MODELS:
            if rhythm in synthesis.GENERATORS[kind][1]:
                sets[kind] = _generated(models, ds, kind, rhythm, n, s, mode)
        base = s * 1000 + 10 * r_i
        sets["ceiling"] = ceiling(ds, rhythm, n, base + 1)
        for j, snr in enumerate(NOISY_SNR_DB):
            sets[f"noisy_{snr:g}dB"] = noisy_copies(ds, rhythm, n, snr, base + 2 + j)
        sets["phase_randomised"] = phase_randomised(ds, rhythm, n, base + 9)
        out[rhythm] = sets
    return out


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _df_summary(df: NDArray) -> dict[str, float | None]:
    ok = df[np.isfinite(df)]
    if not ok.size:
        return {"df_mean_hz": None, "df_median_hz": None, "df_std_hz": None}
    return {"df_mean_hz": float(ok.mean()), "df_median_hz": float(np.median(ok)),
            "df_std_hz": float(ok.std())}


def _psd(x: NDArray, fs: float) -> tuple[NDArray, dict[str, list[float]]]:
    f, p = metrics.welch_psd(x, fs)
    flat = np.moveaxis(p, -2, 0).reshape(p.shape[-2], -1)      # (F, windows * sites)
    q = np.percentile(flat, [10, 25, 75, 90], axis=1)
    return f, {"mean": flat.mean(axis=1).tolist(), "p10": q[0].tolist(), "p25": q[1].tolist(),
               "p75": q[2].tolist(), "p90": q[3].tolist()}


def _db_diff(p: list[float], q: list[float]) -> float:
    a, b = np.asarray(p), np.asarray(q)
    floor = 1e-12 * max(a.max(), b.max(), 1e-300)
    return float(np.mean(np.abs(10 * np.log10(np.maximum(a, floor) / np.maximum(b, floor)))))


def row(windows: NDArray, real: NDArray, rhythm: str, fs: float,
        evaluator: Evaluator | None = None) -> dict[str, Any]:
    """The measurements of one set against the held-out windows ``real`` of its rhythm:
    ``morphology`` (nearest-pair :func:`egmlib.core.metrics.compare` plus the pairs' window
    RMSE), ``distribution`` and ``physiology`` in the evaluation space (when ``evaluator`` is
    given) and ``spectral``."""
    x = np.asarray(windows)
    ref = np.asarray(real)
    idx, pair_rmse = nearest_windows(x, ref)
    morph = metrics.compare(ref[idx], x)
    morph["pair_rmse_window_mean"] = float(pair_rmse.mean())
    morph["distinct_pairs"] = int(np.unique(idx).size)
    out: dict[str, Any] = {"n": len(x), "morphology": morph}
    if evaluator is not None:
        out["distribution"] = distribution_row(evaluator, x, ref)
        out["physiology"] = physiology_row(evaluator, x, ref)
    df, df_real = metrics.rhythm_df(x, fs, rhythm), metrics.rhythm_df(ref, fs, rhythm)
    with warnings.catch_warnings():  # all-NaN sites give NaN ('Mean of empty slice'), handled
        warnings.simplefilter("ignore", RuntimeWarning)
        per_site = np.abs(np.nanmean(df.reshape(-1, df.shape[-1]), axis=0)
                          - np.nanmean(df_real.reshape(-1, df_real.shape[-1]), axis=0))
    spectral = _df_summary(df)
    spectral["df_abs_diff_hz"] = (_finite(float(np.nanmean(per_site)))
                                  if np.isfinite(per_site).any() else None)
    out["spectral"] = spectral
    out["_df"] = df
    return out


def _pca2(real_feats: NDArray) -> tuple[NDArray, NDArray]:
    mean = real_feats.mean(axis=0)
    _, _, vt = np.linalg.svd(real_feats - mean, full_matrices=False)
    comp = np.zeros((2, real_feats.shape[1]))
    comp[:min(2, len(vt))] = vt[:2]
    return mean, comp


def fidelity_table(ds: Dataset, run_dir: str | Path, n_eval: int, seed: int,
                   gen_mode: str = "prior",
                   sets: Mapping[str, Mapping[str, NDArray]] | None = None,
                   evaluator: Evaluator | None = None) -> dict[str, Any]:
    """The fidelity section: every row of (a) morphology, (c) distribution and physiology and
    (d) spectra, the (b) reconstruction metrics with collapse reports and the memorising
    baseline, class separation and the classifier's calls, figure data (``curves``) and
    settings; a JSON-ready dict (non-finite values become ``None``). ``sets`` (from
    :func:`evaluation_sets` with the same arguments) avoids generating twice; ``evaluator``
    defaults to the data set's (:func:`egmlib.evaluation.evaluator.load_or_fit_evaluator`,
    fitted once on the training windows and cached beside the data set)."""
    n, s, mode = _check(ds, n_eval, seed, gen_mode)
    models = _load_models(run_dir)
    if sets is None:
        sets = evaluation_sets(ds, run_dir, n, s, mode, models=models)
    ev = load_or_fit_evaluator(ds, run_dir) if evaluator is None else evaluator
    fs = float(ds.manifest["fs"])

    rows: list[dict[str, Any]] = []
    real_stats: dict[str, Any] = {}
    psd: dict[str, Any] = {}
    df_hist: dict[str, Any] = {}
    latent: dict[str, Any] = {}
    feats: dict[tuple[str, str], NDArray] = {}
    for rhythm in LABELS:
        real = _part(ds, "test", rhythm, at_least=2)
        rf = ev.features(real)
        feats[("real", rhythm)] = rf
        f, real_psd = _psd(real, fs)
        df_real = metrics.rhythm_df(real, fs, rhythm)
        dfs = metrics.df_settings(rhythm, fs)
        calls = ev.rhythm_calls(real)
        real_stats[rhythm] = {"n": len(real), "diversity": metrics.diversity(rf),
                              "called_af": float(np.mean(calls == LABELS.index("AF"))),
                              **_df_summary(df_real)}
        psd[rhythm] = {"f": f.tolist(), "sets": {"real": real_psd}}
        lo, hi = dfs.band_hz
        edges = np.arange(lo, hi + _DF_BIN[rhythm] / 2, _DF_BIN[rhythm])
        df_hist[rhythm] = {"edges": edges.tolist(), "method": dfs.method,
                           "counts": {"real": np.histogram(df_real[np.isfinite(df_real)],
                                                           edges)[0].tolist()}}
        for name, x in sets[rhythm].items():
            if name in _MODELS:
                feats[(name, rhythm)] = ev.features(np.asarray(x, np.float32))
            r = row(x, real, rhythm, fs, ev)
            df = r.pop("_df")
            _, set_psd = _psd(x, fs)
            r["spectral"]["psd_db_diff"] = _db_diff(set_psd["mean"], real_psd["mean"])
            psd[rhythm]["sets"][name] = set_psd
            df_hist[rhythm]["counts"][name] = np.histogram(df[np.isfinite(df)], edges)[0].tolist()
            rows.append({"set": name, "label": _label(name), "rhythm": rhythm,
                         "kind": "model" if name in _MODELS else "reference", **r})
    # the picture: PCA of the held-out windows' evaluation features, every set projected
    mean, comp = _pca2(np.concatenate([feats[("real", r)] for r in LABELS]))
    for (name, rhythm), v in feats.items():
        latent.setdefault(name, {})[rhythm] = ((v - mean) @ comp.T).tolist()
    # (b) reconstructions, each model's collapse report per rhythm, and memorising as reference
    recon: dict[str, Any] = {}
    for kind in _MODELS:
        model, norm = models[kind]
        recon[kind] = {**synthesis.reconstruction_metrics(model, norm, ds, kind),
                       "latent": model.config.code_size, "collapse": {}}
        for rhythm in synthesis.GENERATORS[kind][1]:
            x = _part(ds, "test", rhythm, at_least=2)
            y = None if kind == "vae_s" else np.full(len(x), LABELS.index(rhythm))
            recon[kind]["collapse"][rhythm] = collapse_report(model, norm, x, y)
    recon["nearest_training_window"] = {r: nearest_train_predictor(ds, "test", r)
                                        for r in LABELS}
    # class separation in the evaluation space: real held-out and VAE-C's generated windows
    real_f = np.concatenate([feats[("real", r)] for r in LABELS])
    real_y = np.repeat(np.arange(len(LABELS)), [len(feats[("real", r)]) for r in LABELS])
    gen_f = np.concatenate([feats[("vae_c", r)] for r in LABELS])
    gen_y = np.repeat(np.arange(len(LABELS)), [len(feats[("vae_c", r)]) for r in LABELS])
    separation = {"real_test": {"silhouette": metrics.silhouette(real_f, real_y)},
                  "vae_c_generated": {"silhouette": metrics.silhouette(gen_f, gen_y)}}
    test_calls = np.concatenate([ev.rhythm_calls(_part(ds, "test", r)) for r in LABELS])
    test_y = np.concatenate([np.full(int(ds.part("test", r).sum()), LABELS.index(r))
                             for r in LABELS])
    table = {
        "settings": {
            "n_eval": n, "seed": s, "gen_mode": mode, "fs": fs,
            "pairing": "each generated window with its nearest held-out test window of the same "
                       "rhythm (smallest RMSE over samples and sites)",
            "features": "the independent evaluation space (egmlib.evaluation.evaluator), fitted "
                        "on the real training windows only",
            "evaluator": {**ev.describe(), "test_accuracy": float(np.mean(test_calls == test_y))},
            "df": {r: metrics.df_settings(r, fs).as_dict() for r in LABELS},
            "noisy_snr_db": list(NOISY_SNR_DB),
            "surrogate": "rfft, uniform random phase per window and frequency shared by all "
                         "sites (DC and Nyquist kept), irfft",
        },
        "real": real_stats,
        "rows": rows,
        "reconstruction": recon,
        "separation": separation,
        "paper": {"set": "vae_s", "rhythm": "SR", **PAPER},
        "curves": {"psd": psd, "df_hist": df_hist, "latent": latent},
    }
    return json_ready(table)


# ----------------------------------------------------------------------------------------------
# Printing
# ----------------------------------------------------------------------------------------------


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(table: Mapping[str, Any]) -> str:
    """The table in the paper's form (LSD, correlation) with RMSE, the distributional columns
    of the evaluation space and the DF columns, the paper's VAE-S figures as a separate row,
    then reconstructions (with the memorising baseline and collapse reports) and separation."""
    head = (f"{'rhythm':<6} {'set':<27} {'n':>4} {'corr':>13} {'LSD':>13} {'RMSE':>7} "
            f"{'FD':>7} {'MMD2':>6} {'prec':>5} {'recall':>6} {'cover':>5} {'AF?':>5} "
            f"{'|dDF|Hz':>7} {'PSD dB':>6}")
    lines = ["Generated windows vs held-out test windows (nearest-window pairs; mean +- std over "
             "sites and windows). FD ... AF?: in the evaluation space fitted on real training "
             "windows; AF?: share the real-trained classifier calls AF", head, "-" * len(head)]
    for r in table["rows"]:
        m, d, sp = r["morphology"], r.get("distribution", {}), r["spectral"]
        lines.append(
            f"{r['rhythm']:<6} {r['label']:<27} {r['n']:>4} "
            f"{_fmt(m['corr_mean'])+' +- '+_fmt(m['corr_std']):>13} "
            f"{_fmt(m['lsd_mean'])+' +- '+_fmt(m['lsd_std']):>13} {_fmt(m['rmse_mean'], '.3f'):>7} "
            f"{_fmt(d.get('frechet'), '.3g'):>7} {_fmt(d.get('mmd2'), '.3f'):>6} "
            f"{_fmt(d.get('precision')):>5} {_fmt(d.get('recall')):>6} "
            f"{_fmt(d.get('coverage')):>5} {_fmt(d.get('called_af')):>5} "
            f"{_fmt(sp['df_abs_diff_hz']):>7} {_fmt(sp['psd_db_diff'], '.1f'):>6}")
    p = table["paper"]
    lines.append(f"{p['rhythm']:<6} {'paper (different data)':<27} {'':>4} "
                 f"{_fmt(p['corr_mean']):>13} {_fmt(p['lsd_mean']):>13}")
    ev = table["settings"]["evaluator"]
    lines += ["", f"Evaluation space: {ev['embed']} classifier units + "
              f"{len(ev['feature_names'])} physiological features, fitted on "
              f"{ev['train_windows']} real training windows; classifier accuracy on real windows: "
              f"validation {_fmt(ev['val_accuracy'])}, test {_fmt(ev['test_accuracy'])}"]
    lines += ["Real held-out windows: " + "; ".join(
        f"{rh} n={v['n']}, called AF {_fmt(v['called_af'])}, median DF "
        f"{_fmt(v['df_median_hz'])} Hz" for rh, v in table["real"].items())]
    lines += ["", "Reconstruction of held-out test windows (z = encoder mean); collapse: active "
              "units of the model's encoder, distinctness of its reconstructions, the share of "
              "their variance common to all (shared) against the inputs'",
              f"{'model':<26} {'rhythm':<6} {'corr':>13} {'LSD':>13} {'RMSE':>7}  collapse"]
    rec = table["reconstruction"]
    for kind in _MODELS:
        for rh in LABELS:
            if rh in rec[kind]:
                v, c = rec[kind][rh], rec[kind]["collapse"][rh]
                lines.append(f"{_label(kind):<26} {rh:<6} "
                             f"{_fmt(v['corr_mean'])+' +- '+_fmt(v['corr_std']):>13} "
                             f"{_fmt(v['lsd_mean'])+' +- '+_fmt(v['lsd_std']):>13} "
                             f"{_fmt(v['rmse_mean'], '.3f'):>7}  {c['active_units']} of "
                             f"{c['latent']} active, distinctness {_fmt(c['distinctness'])}, "
                             f"shared {_fmt(c['shared_variance'])} (inputs "
                             f"{_fmt(c['shared_variance_input'])})"
                             f"{' COLLAPSED' if c['collapsed'] else ''}")
    for rh, v in rec["nearest_training_window"].items():
        lines.append(f"{'nearest training window':<26} {rh:<6} "
                     f"{_fmt(v['corr_mean'])+' +- '+_fmt(v['corr_std']):>13} "
                     f"{_fmt(v['lsd_mean'])+' +- '+_fmt(v['lsd_std']):>13} "
                     f"{_fmt(v['rmse_mean'], '.3f'):>7}  (memorising: no model)")
    sep = table["separation"]
    lines += ["", "Class separation (SR vs AF) in the evaluation space, silhouette: " + "; ".join(
        f"{name.replace('_', ' ')} {_fmt(v['silhouette'])}" for name, v in sep.items())]
    return "\n".join(lines)


def _find(table: Mapping[str, Any], name: str, rhythm: str) -> Mapping[str, Any] | None:
    return next((r for r in table["rows"] if r["set"] == name and r["rhythm"] == rhythm), None)


def _than(a: float, b: float, lower: str = "lower", higher: str = "higher") -> str:
    return lower if a < b else higher if a > b else "equal to"


def reading(table: Mapping[str, Any]) -> list[str]:
    """The table read, one sentence per generator row and rhythm, computed from its numbers:
    each generator against the ceiling (real windows of other simulations) and the
    phase-randomised surrogates on the metrics that separate them (PSD error in dB, coverage,
    ``|dDF|``, the real-trained classifier's call), then the paper's two metrics (LSD, correlation
    against the nearest held-out window) and whether they rank the generator below real data at
    all, and last the paper's figures with the statement that they come from other data."""
    lines: list[str] = []
    weak_paper_metrics: list[str] = []
    for r in (r for r in table["rows"] if r["kind"] == "model"):
        rh, name = r["rhythm"], r["label"]
        ceil, surr = _find(table, "ceiling", rh), _find(table, "phase_randomised", rh)
        if ceil is None:
            continue
        sp, d = r["spectral"], r.get("distribution", {})
        cd, csp = ceil.get("distribution", {}), ceil["spectral"]
        text = (f"{name}, {rh}: PSD error {sp['psd_db_diff']:.1f} dB against "
                f"{csp['psd_db_diff']:.1f} dB for real windows of other simulations")
        if surr is not None:
            text += f" and {surr['spectral']['psd_db_diff']:.1f} dB for phase-randomised surrogates"
        text += (f"; coverage {_fmt(d.get('coverage'))} against {_fmt(cd.get('coverage'))} and "
                 f"recall {_fmt(d.get('recall'))} against {_fmt(cd.get('recall'))} in the "
                 f"evaluation space; |dDF| {sp['df_abs_diff_hz']:.2f} Hz against "
                 f"{csp['df_abs_diff_hz']:.2f} Hz")
        if d.get("called_af") is not None and cd.get("called_af") is not None:
            text += (f"; the real-trained classifier calls {d['called_af']:.0%} of them AF "
                     f"({cd['called_af']:.0%} of the real ones)")
        lines.append(text + ".")
        m, cm = r["morphology"], ceil["morphology"]
        if m["lsd_mean"] <= cm["lsd_mean"] or m["corr_mean"] >= cm["corr_mean"] - 0.05:
            weak_paper_metrics.append(f"{name} {rh} (LSD {m['lsd_mean']:.2f} against "
                                      f"{cm['lsd_mean']:.2f}, correlation "
                                      f"{m['corr_mean']:.2f} against {cm['corr_mean']:.2f})")
    if weak_paper_metrics:
        lines.append("The paper's metrics barely separate generated from real windows here: "
                     "against its nearest held-out window, a generated window scores an LSD "
                     "lower than, or a correlation within 0.05 of, that of a real window of "
                     "another simulation for " + "; ".join(weak_paper_metrics)
                     + ". Nearest-window pairing rewards smooth, average-looking windows; the "
                     "distributional and spectral columns are the ones that rank the generators.")
    p, vs = table["paper"], _find(table, table["paper"]["set"], table["paper"]["rhythm"])
    if vs is not None:
        lines.append(f"The paper reports LSD {p['lsd_mean']:.2f} and correlation "
                     f"{p['corr_mean']:.2f} for {_label(p['set'])} {p['rhythm']} on its own "
                     f"simulations (other geometry, window size and simulator); this "
                     f"repository's counterparts (nearest held-out window pairs) give LSD "
                     f"{vs['morphology']['lsd_mean']:.2f} and "
                     f"correlation {vs['morphology']['corr_mean']:.2f}: the numbers describe "
                     "different data and are not a like-for-like comparison.")
    return lines


# ----------------------------------------------------------------------------------------------
# Figures (data from the table; windows from evaluation_sets)
# ----------------------------------------------------------------------------------------------

_STYLE = {"real": ("k", "-"), "vae_s": ("#2ca02c", "-"), "vae_c": ("#9467bd", "-"),
          "ceiling": ("0.5", ":"), "phase_randomised": ("#ff7f0e", "--")}


def _style(name: str) -> tuple[str, str]:
    return _STYLE.get(name, ("#8c564b", "-."))


def _rhythm_panels(curves: Mapping[str, Any], members: str, names: tuple[str, ...],
                   height: float, draw: Any, axis_labels: Any):
    """One panel per rhythm of ``curves``: ``draw(ax, curve, name, color, linestyle)`` for every
    one of ``names`` present in ``curve[members]``, then ``ax.set(**axis_labels(rhythm))``; one
    legend right of the panels."""
    import matplotlib.pyplot as plt

    from egmlib.evaluation.plots import legend_right

    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves) + 1.8, height),
                             squeeze=False)
    for ax, (rhythm, curve) in zip(axes[0], curves.items()):
        for name in (n for n in names if n in curve[members]):
            draw(ax, curve, name, *_style(name))
        ax.set(title=rhythm, **axis_labels(rhythm))
    legend_right(fig, axes)
    fig.tight_layout()
    return fig


def psd_figure(table: Mapping[str, Any], names: tuple[str, ...] = ("real", "vae_s", "vae_c"),
               decades: float = 5.0):
    """Mean Welch PSD (log scale) with the interquartile band over windows and sites (where the
    table has it; else the 10-90 % band), real held-out windows against the generated sets, one
    panel per rhythm. The y axis spans ``decades`` below the highest mean, so that the bands of
    near-silent sites do not squash the means."""
    def draw(ax: Any, c: Mapping[str, Any], name: str, color: str, ls: str) -> None:
        f, v = np.asarray(c["f"])[1:], c["sets"][name]
        lo, hi = ("p25", "p75") if "p25" in v else ("p10", "p90")
        mean = np.asarray(v["mean"])[1:]
        ax.semilogy(f, mean, color=color, ls=ls, lw=1.2, label=_label(name))
        ax.fill_between(f, np.asarray(v[lo])[1:], np.asarray(v[hi])[1:], color=color,
                        alpha=0.15, lw=0)
        top = 2.0 * max(float(np.max(np.asarray(c["sets"][n]["mean"])[1:]))
                        for n in names if n in c["sets"])
        ax.set_ylim(top / 10 ** decades, top)

    return _rhythm_panels(table["curves"]["psd"], "sets", names, 3.2, draw,
                          lambda rhythm: {"xlabel": "frequency (Hz)",
                                          "ylabel": "PSD (mV$^2$/Hz); band: quartiles"})


def df_figure(table: Mapping[str, Any],
              names: tuple[str, ...] = ("real", "vae_s", "vae_c", "ceiling", "phase_randomised")):
    """Dominant-frequency distributions (per site and window) as cumulative distributions, one
    line per set, per rhythm: overlaid CDFs stay readable where overlaid histograms do not."""
    def draw(ax: Any, h: Mapping[str, Any], name: str, color: str, ls: str) -> None:
        edges, cnt = np.asarray(h["edges"]), np.asarray(h["counts"][name], float)
        cdf = np.concatenate([[0.0], np.cumsum(cnt) / max(cnt.sum(), 1.0)])
        ax.plot(edges, cdf, color=color, ls=ls, lw=1.3, label=_label(name))

    def axis_labels(rhythm: str) -> dict[str, Any]:
        band = table["settings"]["df"][rhythm]
        return {"xlabel": f"DF (Hz; {band['method']}, {band['band_hz'][0]:g}-"
                          f"{band['band_hz'][1]:g} Hz)",
                "ylabel": "fraction of sites x windows\nwith a lower DF", "ylim": (0, 1.02)}

    return _rhythm_panels(table["curves"]["df_hist"], "counts", names, 3.0, draw, axis_labels)


def latent_figure(table: Mapping[str, Any]):
    """Held-out windows (filled) and generated windows (open: VAE-C circles, VAE-S crosses) in
    the first two principal components of the held-out windows' evaluation features."""
    import matplotlib.pyplot as plt

    from egmlib.evaluation.plots import RHYTHM_COLORS

    lat = table["curves"]["latent"]
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    marks = {"real": dict(marker="o"), "vae_c": dict(marker="o", facecolors="none"),
             "vae_s": dict(marker="x")}
    for name, by_rhythm in lat.items():
        for rhythm, pts in by_rhythm.items():
            p = np.asarray(pts).reshape(-1, 2)
            ax.scatter(p[:, 0], p[:, 1], s=14, color=RHYTHM_COLORS[rhythm], lw=0.8,
                       label=f"{_label(name)} {rhythm}", **marks[name])
    ax.set(xlabel="PC 1", ylabel="PC 2", title="evaluation space (real-trained)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def examples_figure(ds: Dataset, sets: Mapping[str, Mapping[str, NDArray]], n_sites: int = 3,
                    fs: float | None = None):
    """One generated window per model and rhythm (colour) over its nearest held-out window
    (black) at ``n_sites`` sites spread over the site index."""
    import matplotlib.pyplot as plt

    from egmlib.evaluation.plots import legend_right

    fs = float(ds.manifest["fs"]) if fs is None else fs
    panels = [(kind, rh) for rh in LABELS for kind in _MODELS if kind in sets.get(rh, {})]
    fig, axes = plt.subplots(len(panels), n_sites, figsize=(3.0 * n_sites + 1.8,
                                                            1.7 * len(panels)),
                             squeeze=False, sharex=True, sharey="row")
    for i, (kind, rhythm) in enumerate(panels):
        real = _part(ds, "test", rhythm)
        gen = np.asarray(sets[rhythm][kind][:1])
        j, _ = nearest_windows(gen, real)
        t = np.arange(gen.shape[1]) / fs
        sites = np.linspace(0, gen.shape[2] - 1, n_sites).round().astype(int)
        for a, c in zip(axes[i], sites):
            a.plot(t, real[j[0], :, c], color="k", lw=0.9, label="held-out (nearest)")
            a.plot(t, gen[0, :, c], color=_style(kind)[0], lw=0.9, label=_label(kind))
            a.set_title(f"{_label(kind)} {rhythm}, site {c}", fontsize=8, loc="left")
        axes[i, 0].set_ylabel("EGM (mV)")
    for a in axes[-1]:
        a.set_xlabel("time (s)")
    legend_right(fig, axes)
    fig.tight_layout()
    return fig
