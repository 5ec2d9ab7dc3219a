"""The independent evaluation space (:mod:`egmlib.evaluation.evaluator`).

Physiological features on hand-made windows with known answers; the evaluator fitted on a small
synthetic SR/AF data set built in memory (sparse biphasic beats at 1-1.5 Hz with per-site delays
against irregular 5-9 Hz oscillations with noise, split by simulation); precision and recall on
hand-worked point sets; the posterior-collapse detector on a decoder that ignores z and on an
identity stand-in; storage, the cache and determinism.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from egmlib.core import metrics
from egmlib.data import SPLIT_NAMES, Dataset
from egmlib.evaluation import evaluator as ev_mod
from egmlib.evaluation.evaluator import (
    FEATURE_NAMES,
    Evaluator,
    RhythmNet,
    collapse_report,
    distribution_row,
    fit_evaluator,
    load_or_fit_evaluator,
    nearest_train_predictor,
    physiological_features,
    physiology_row,
    precision_recall,
    shared_variance,
)
from egmlib.generators import synthesis
from egmlib.generators.models import ConvVAE, VAEConfig
from egmlib.generators.train import Normalizer

FS = 100.0
T, C = 100, 16
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
FIT = {"epochs": 6, "embed": 8, "patience": 3, "batch_size": 8, "sites_per_batch": 8}


# ----------------------------------------------------------------------------------------------
# Physiological features on hand-made windows
# ----------------------------------------------------------------------------------------------


def test_sinusoid_df_spread_oi_coherence() -> None:
    t = np.arange(400) / FS
    x = np.repeat((1.5 * np.sin(2 * np.pi * 6.0 * t))[None, :, None], 8, axis=2)
    f = physiological_features(x, FS)
    assert f.shape == (1, len(FEATURE_NAMES))
    assert abs(f[0, COL["df_hz"]] - 6.0) < 0.2
    assert f[0, COL["df_spread_hz"]] < 0.05
    assert f[0, COL["organisation_index"]] > 0.95
    assert f[0, COL["neighbour_coherence"]] == pytest.approx(1.0, abs=1e-9)  # identical columns


def test_amplitude_and_rms_known() -> None:
    """A 5 Hz cosine sampled at 100 Hz hits +-A exactly; 400 samples are 20 whole periods."""
    t = np.arange(400) / FS
    x = np.repeat((0.7 * np.cos(2 * np.pi * 5.0 * t))[None, :, None], 4, axis=2)
    x[..., 1] *= 3.0  # one site three times larger: the median over sites ignores it
    f = physiological_features(x, FS)[0]
    assert f[COL["amplitude_mv"]] == pytest.approx(1.4, abs=1e-12)
    assert f[COL["rms_mv"]] == pytest.approx(0.7 / np.sqrt(2.0), abs=1e-12)


def test_coherence_delay_noise_and_flat_site() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 400, 2))
    a[:, :, 1] = np.roll(a[:, :, 0], 2, axis=1)  # site 1 = site 0 delayed by 20 ms
    assert physiological_features(a, FS)[:, COL["neighbour_coherence"]] == pytest.approx(
        1.0, abs=1e-9)
    # at lag 0 the two white-noise sites are uncorrelated: the lag search is what finds them
    assert abs(metrics.pearson(a[:, :, :1], a[:, :, 1:]).mean()) < 0.2
    noise = physiological_features(rng.standard_normal((3, 400, 8)), FS)
    assert np.all(noise[:, COL["neighbour_coherence"]] < 0.3)
    # a flat site: coherence 0 for its two pairs, DF/OI of the others kept
    t = np.arange(400) / FS
    x = np.repeat(np.sin(2 * np.pi * 6.0 * t)[None, :, None], 4, axis=2)
    x[..., 0] = 0.25
    f = physiological_features(x, FS)[0]
    # pairs (0,1) (1,2) (2,3) (3,2): the first involves the flat site
    assert f[COL["neighbour_coherence"]] == pytest.approx(0.75, abs=1e-9)
    assert abs(f[COL["df_hz"]] - 6.0) < 0.2
    # explicit neighbours: site i paired with site i itself gives 1
    assert physiological_features(a, FS, neighbours=np.array([0, 1]))[0, -1] == pytest.approx(
        1.0)
    with pytest.raises(ValueError, match="neighbours"):
        physiological_features(a, FS, neighbours=np.array([0, 5]))


def test_site_neighbours_from_positions() -> None:
    pos = np.array([[0.0, 0, 0], [10, 0, 0], [1, 0, 0], [9, 0, 0], [20, 0, 0]])
    assert ev_mod.site_neighbours(pos).tolist() == [2, 3, 0, 1, 1]
    ds_like = SimpleNamespace(egm=np.zeros((1, 2, 5)),
                              geometry=lambda: (None, SimpleNamespace(electrodes=pos)))
    assert ev_mod._dataset_neighbours(ds_like, "geometry").tolist() == [2, 3, 0, 1, 1]
    assert ev_mod._dataset_neighbours(ds_like, None) is None


def test_all_flat_window_nan_then_filled(fitted: Evaluator) -> None:
    z = np.zeros((1, T, C), np.float32)
    raw = physiological_features(z, FS)[0]
    assert np.isnan(raw[COL["df_hz"]]) and np.isnan(raw[COL["organisation_index"]])
    assert raw[COL["neighbour_coherence"]] == 0.0
    feats = fitted.features(z)
    assert np.all(np.isfinite(feats))
    # the NaN columns were replaced by the training medians before standardisation
    j = COL["df_hz"]
    expect = (fitted.feat_median[j] - fitted.feat_mean[j]) / fitted.feat_std[j]
    assert feats[0, fitted.net.embed_size + j] == pytest.approx(expect)


# ----------------------------------------------------------------------------------------------
# A synthetic data set and the fitted evaluator
# ----------------------------------------------------------------------------------------------


def rhythm_windows(n: int, cls: int, rng: np.random.Generator) -> np.ndarray:
    """SR: biphasic deflections at a rate of 1-1.5 Hz, spreading over the sites with a delay
    per site; AF: irregular oscillations at 5-9 Hz (a random walk of the phase) plus noise."""
    t = np.arange(T) / FS
    out = np.zeros((n, T, C))
    for i in range(n):
        if cls == 0:
            rate = rng.uniform(1.0, 1.5)
            delay = rng.uniform(0.005, 0.02) * np.arange(C)
            tt = t[:, None] - delay[None] - rng.uniform(0.0, 1.0 / rate)
            for b in (-1, 0, 1, 2):
                u = (tt - b / rate) / 0.02
                out[i] += -u * np.exp(-0.5 * u * u)
            out[i] += 0.02 * rng.standard_normal((T, C))
        else:
            f0 = rng.uniform(5.0, 9.0, C)
            dphi = 2 * np.pi * (f0[None] + 2.0 * rng.standard_normal((T, C))) / FS
            phase = np.cumsum(dphi, axis=0) + rng.uniform(0, 2 * np.pi, C)
            out[i] = np.sin(phase) + 0.3 * rng.standard_normal((T, C))
    return out.astype(np.float32)


def make_dataset(path: Path, per_part: tuple[int, int, int] = (20, 8, 12)) -> Dataset:
    rng = np.random.default_rng(7)
    egm, label, split = [], [], []
    for part, n in enumerate(per_part):
        for cls in (0, 1):
            egm.append(rhythm_windows(n, cls, rng))
            label += [cls] * n
            split += [part] * n
    egm_a = np.concatenate(egm)
    n = len(egm_a)
    empty = np.zeros((0,), np.float32)
    return Dataset(path=path, manifest={"fs": FS}, egm=egm_a, label=np.array(label, np.int8),
                   sim_id=np.array(split, np.int32), start_s=np.zeros(n, np.float32),
                   split=np.array(split, np.int8), df_hz=empty, egm_500hz_examples=empty,
                   bspm=empty, transfer=np.zeros((0,)), torso_split=np.zeros(0, np.int8),
                   bspm_examples=empty)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("evaluator_data"))


@pytest.fixture(scope="module")
def fitted(ds: Dataset) -> Evaluator:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EGMLIB_THREADS", "1")
        return fit_evaluator(ds, seed=0, **FIT)


def test_fitted_on_training_windows_only(ds: Dataset, fitted: Evaluator) -> None:
    train = np.flatnonzero(ds.split == SPLIT_NAMES.index("train"))
    assert np.array_equal(np.sort(fitted.train_index), train)  # all of them, nothing else
    assert set(np.unique(ds.label[fitted.train_index])) == {0, 1}
    assert fitted.data_sha256 is not None and fitted.data_sha256.startswith("array:")
    outside = np.concatenate([train[:3], np.flatnonzero(ds.part("val"))[:1]])
    with pytest.raises(ValueError, match="not in the train split"):
        fit_evaluator(ds, train_index=outside, **FIT)
    with pytest.raises(ValueError, match="not in the train split"):
        fit_evaluator(ds, train_index=np.flatnonzero(ds.part("test")), **FIT)


def test_classifier_calls_held_out_windows(ds: Dataset, fitted: Evaluator) -> None:
    test = ds.part("test")
    calls = fitted.rhythm_calls(ds.egm[test])
    assert np.mean(calls == ds.label[test]) >= 0.95
    proba = fitted.predict_proba(ds.egm[test])
    assert proba.shape == (test.sum(), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba.argmax(axis=1), calls)
    assert fitted.val_accuracy >= 0.9
    d = fitted.describe()
    json.dumps(d)
    assert d["feature_names"] == list(FEATURE_NAMES)
    assert d["train_windows"] == ds.part("train").sum()
    assert d["embed"] == FIT["embed"]


def test_features_standardised_on_training_windows(ds: Dataset, fitted: Evaluator) -> None:
    f = fitted.features(ds.egm[fitted.train_index])
    assert f.shape == (len(fitted.train_index), FIT["embed"] + len(FEATURE_NAMES))
    assert np.allclose(f.mean(axis=0), 0.0, atol=1e-6)
    sd = f.std(axis=0)
    assert np.all((np.abs(sd - 1.0) < 1e-6) | (sd < 1e-9))  # constant columns stay 0


def test_net_independent_of_site_order_and_count() -> None:
    torch.manual_seed(0)
    net = RhythmNet(embed=4).eval()
    x = torch.randn(3, 50, 6)
    with torch.no_grad():
        a = net(x)
        b = net(x[:, :, torch.randperm(6)])
        c = net(torch.cat([x, x], dim=2))  # every site twice: same mean and std over sites
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_save_load_and_determinism(ds: Dataset, fitted: Evaluator, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    x = ds.egm[ds.part("test")]
    path = fitted.save(tmp_path / "ev.pt")
    back = Evaluator.load(path)
    assert np.array_equal(back.features(x), fitted.features(x))
    assert np.array_equal(back.train_index, fitted.train_index)
    assert back.describe() == fitted.describe()
    monkeypatch.setenv("EGMLIB_THREADS", "1")
    again = fit_evaluator(ds, seed=0, **FIT)
    assert np.array_equal(again.features(x), fitted.features(x))
    assert again.history["val"] == fitted.history["val"]


def test_cache_reuses_and_refits(ds: Dataset, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGMLIB_THREADS", "1")
    first = load_or_fit_evaluator(ds, tmp_path, seed=0, **FIT)
    path = tmp_path / "data" / "evaluator.pt"
    assert path.exists()
    calls = []
    real_fit = ev_mod.fit_evaluator
    monkeypatch.setattr(ev_mod, "fit_evaluator",
                        lambda *a, **k: calls.append(k) or real_fit(*a, **k))
    x = ds.egm[:4]
    assert np.array_equal(load_or_fit_evaluator(ds, tmp_path, seed=0, **FIT).features(x),
                          first.features(x))
    assert calls == []  # reused
    other = dataclasses.replace(ds, manifest={"fs": FS, "files": {"egm.npy": {"sha256": "x"}}})
    refit = load_or_fit_evaluator(other, tmp_path, seed=0, **FIT)
    assert len(calls) == 1 and refit.data_sha256 == "x"
    assert Evaluator.load(path).data_sha256 == "x"  # overwritten
    load_or_fit_evaluator(other, tmp_path, seed=0, **{**FIT, "epochs": 5})
    assert len(calls) == 2  # other settings: refit


# ----------------------------------------------------------------------------------------------
# Distributional metrics
# ----------------------------------------------------------------------------------------------


def test_precision_recall_hand_worked() -> None:
    real = np.arange(6.0)[:, None]  # 0..5 on a line; k=1: every radius is 1
    assert precision_recall(real, real, k_real=1) == {"precision": 1.0, "recall": 1.0}
    rng = np.random.default_rng(0)
    cloud = rng.standard_normal((20, 3))
    assert precision_recall(cloud, cloud.copy()) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(cloud, cloud + 100.0) == {"precision": 0.0, "recall": 0.0}
    # fake {0.5, 10}: 0.5 lies in the ball of 0 (radius 1), 10 in none -> precision 1/2;
    # the fake radii are |10 - 0.5| = 9.5, which reach every real point -> recall 1
    fake = np.array([[0.5], [10.0]])
    assert precision_recall(real, fake, k_real=1, k_fake=1) == {"precision": 0.5, "recall": 1.0}
    # k_real=2: radii 2 (ends: 2 as well), 10 still outside; fake {0.5, 1.5}: radii 1 -> recall:
    # reals within 1 of 0.5 or 1.5 are 0, 1, 2 -> 3/6
    fake = np.array([[0.5], [1.5]])
    assert precision_recall(real, fake, k_real=2, k_fake=1)["recall"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:2], fake, k_real=2)


def test_distribution_and_physiology_rows(ds: Dataset, fitted: Evaluator) -> None:
    real = ds.egm[ds.part("test")]
    same = distribution_row(fitted, real, real)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["frechet"] < 1e-3
    assert same["called_af"] == pytest.approx(np.mean(fitted.rhythm_calls(real) == 1))
    sr, af = ds.egm[ds.part("test", "SR")], ds.egm[ds.part("test", "AF")]
    wrong = distribution_row(fitted, sr, af)
    assert wrong["called_af"] <= 0.05 and wrong["frechet"] > same["frechet"] + 1.0
    assert wrong["precision"] < 0.5
    assert json.dumps(wrong)
    phys = physiology_row(fitted, real, real)
    assert set(phys) == {f"{n}_{s}" for n in FEATURE_NAMES
                         for s in ("generated", "real", "abs_diff")}
    assert all(phys[f"{n}_abs_diff"] == 0.0 for n in FEATURE_NAMES)
    rates = physiology_row(fitted, af, sr)
    assert rates["df_hz_generated"] > 4.0 > 2.0 > rates["df_hz_real"]
    assert rates["df_hz_abs_diff"] == pytest.approx(rates["df_hz_generated"]
                                                    - rates["df_hz_real"])


def test_nearest_train_predictor(ds: Dataset) -> None:
    own = nearest_train_predictor(ds, "train", "AF")  # memorised: its own nearest neighbour
    assert own["rmse_mean"] == 0.0 and own["corr_mean"] == pytest.approx(1.0)
    held = nearest_train_predictor(ds, "test", "AF")
    assert held["n"] == ds.part("test", "AF").sum()
    assert held["rmse_mean"] > 0.5 and held["corr_mean"] < 0.5  # chaotic AF is not memorable
    with pytest.raises(ValueError, match="rhythm"):
        nearest_train_predictor(ds, "test", "VF")


# ----------------------------------------------------------------------------------------------
# Posterior collapse
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae(ds: Dataset) -> tuple[ConvVAE, Normalizer, np.ndarray]:
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(T=T, C=C, latent=4)).eval()
    x = np.asarray(ds.egm[:30])
    return model, Normalizer().fit(x), x


def test_collapse_flags_decoder_that_ignores_z(vae) -> None:
    model, norm, x = vae
    dead = ConvVAE(model.config).eval()
    dead.load_state_dict(model.state_dict())
    with torch.no_grad():
        dead.decoder_dense[0].weight.zero_()  # the decoder no longer sees z
        dead.decoder_dense[0].bias.normal_(generator=torch.Generator().manual_seed(0))  # a template
    rep = collapse_report(dead, norm, x)
    assert rep["distinctness"] < 1e-6 and rep["collapsed"] is True
    # one reconstruction for every window: all of its variance is shared
    assert rep["shared_variance"] == pytest.approx(1.0)
    assert rep["n_windows"] == 30 and rep["latent"] == 4
    json.dumps(rep)


def test_collapse_passes_a_faithful_decoder(vae, monkeypatch: pytest.MonkeyPatch) -> None:
    model, norm, x = vae
    # an encoder whose means do not move (fc_mu weights zeroed) has 0 active units; a copy
    # with its means spread out is the live encoder
    quiet, live = ConvVAE(model.config).eval(), ConvVAE(model.config).eval()
    quiet.load_state_dict(model.state_dict())
    live.load_state_dict(model.state_dict())
    with torch.no_grad():
        quiet.fc_mu.weight.zero_()
        live.fc_mu.weight.mul_(100.0)
    assert collapse_report(quiet, norm, x)["active_units"] == 0
    assert collapse_report(quiet, norm, x)["collapsed"] is True
    model = live
    monkeypatch.setattr(synthesis, "reconstruct", lambda m, n, xx, y=None: np.array(xx))
    rep = collapse_report(model, norm, x)
    assert rep["distinctness"] == pytest.approx(1.0)
    assert rep["shared_variance"] == pytest.approx(rep["shared_variance_input"])
    assert rep["active_units"] > 0 and rep["collapsed"] is False
    assert collapse_report(model, norm, x, threshold=1.5)["collapsed"] is True
    # a collapsed encoder (constant means) is flagged even with a faithful decoder
    monkeypatch.setattr(ev_mod, "encode_means",
                        lambda m, n, xx, y=None: np.zeros((len(xx), 4), np.float32))
    assert collapse_report(model, norm, x)["collapsed"] is True


def test_shared_variance_on_hand_made_sets() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(1, 50, 3))
    assert shared_variance(np.repeat(w, 4, axis=0)) == pytest.approx(1.0)  # one template
    assert shared_variance(np.concatenate([w, -w])) == pytest.approx(0.0, abs=1e-12)  # cancel
    # a constant offset per window and site is not variance: removed before the share
    assert shared_variance(np.concatenate([w, w + 5.0])) == pytest.approx(1.0)
    # n independent windows share about 1/n of their variance
    assert shared_variance(rng.normal(size=(200, 400, 4))) == pytest.approx(1 / 200, rel=0.1)
    # template plus independent parts of equal power: about a half
    mix = np.repeat(w, 400, axis=0) + rng.normal(size=(400, 50, 3))
    assert shared_variance(mix) == pytest.approx(0.5, abs=0.05)
    assert np.isnan(shared_variance(np.zeros((3, 10, 2))))
    with pytest.raises(ValueError, match="at least 2"):
        shared_variance(w)
