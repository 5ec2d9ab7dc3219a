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
from torch import nn

from egmlib.core import metrics
from egmlib.data import SPLIT_NAMES, Dataset
from egmlib.evaluation import evaluator as ev_mod
from egmlib.evaluation.evaluator import (
    FEATURE_NAMES,
    Evaluator,
    RhythmNet,
    collapse_report,
    decoder_periodicity,
    distribution_row,
    fit_evaluator,
    load_or_fit_evaluator,
    nearest_train_predictor,
    periodicity_report,
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


# ----------------------------------------------------------------------------------------------
# Where a generated rhythm comes from
# ----------------------------------------------------------------------------------------------


class _ZeroStuff(nn.Module):
    """2x upsampling in time that puts a zero after every sample."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = h.new_zeros(h.shape[0], h.shape[1], 2 * h.shape[2], h.shape[3])
        out[:, :, ::2] = h
        return out


def _decoder(period_cells: int, comb: bool = False) -> ConvVAE:
    """A 4-second decoder (100 Hz) whose dense layer ignores z and lays out one map of 25 time
    steps (16 samples each): a random motif that repeats every ``period_cells`` steps (none for
    0) plus a random pattern of half its amplitude that does not repeat. Its convolution
    blocks are replaced by 2x upsampling in time by inserting zeros, which adds no rhythm of its
    own; with ``comb`` the last block adds each sample's neighbours 48 samples away on either
    side (a ringing kernel: the convolutions make a 0.48 s period whatever the map)."""
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(T=400, C=8, latent=4)).eval()
    cfg = model.config
    t0, s0 = cfg.dec_map_shape
    ch = cfg.dec_map_channels
    assert (t0, cfg.T // t0) == (25, 16)
    g = torch.Generator().manual_seed(1)
    bias = torch.randn(ch, t0, s0, generator=g) * (0.5 if period_cells else 1.0)
    if period_cells:
        motif = torch.randn(ch, period_cells, s0, generator=g)
        bias = bias + motif.repeat(1, -(-t0 // period_cells), 1)[:, :t0]
    with torch.no_grad():
        model.decoder_dense[0].weight.zero_()
        model.decoder_dense[0].bias.copy_(bias.reshape(-1))
    last: nn.Module = nn.Identity()
    if comb:
        last = nn.Conv2d(ch, ch, (97, 1), padding=(48, 0), groups=ch, bias=False)
        with torch.no_grad():
            last.weight.zero_()
            last.weight[:, 0, [0, 48, 96], 0] = 1.0
    blocks: list[nn.Module] = []
    for i in range(4):
        blocks += [_ZeroStuff(), last if i == 3 else nn.Identity(),
                   nn.Identity(), nn.Identity()]
    model.decoder_conv = nn.Sequential(*blocks)
    return model


def test_decoder_periodicity_tells_the_dense_layer_from_the_convolutions() -> None:
    z = np.random.default_rng(0).normal(size=(6, 4))
    for cells in (5, 6):
        rep = decoder_periodicity(_decoder(cells), z, None, FS)
        dense, out = rep["stages"][0], rep["stages"][-1]
        assert dense["stage"] == "dense map" and dense["samples_per_step"] == 16
        # most of the map's power repeats every `cells` steps: the autocorrelation peaks at
        # that lag at every stage
        assert dense["lag_samples"] == out["lag_samples"] == 16 * cells
        assert dense["acf"] > 0.3 and out["acf"] > 0.3
        assert [r["stage"] for r in rep["stages"]] == ["dense map"] + [
            f"block {i}" for i in range(1, 5)]
        assert [r["samples_per_step"] for r in rep["stages"]] == [16, 8, 4, 2, 1]
        assert rep["first_stage"] == "dense map"
        # shuffling the map's time steps takes the period away
        assert rep["shuffled"]["acf_at_output_lag"] < 0.5 * out["acf"]
        assert rep["laid_out_by_dense_layer"] is True
        json.dumps(rep)
    # a map without a period, a ringing last block: the period appears there and survives
    rep = decoder_periodicity(_decoder(0, comb=True), z, None, FS)
    assert rep["stages"][-1]["lag_samples"] == 48 and rep["first_stage"] == "block 4"
    assert rep["stages"][-1]["acf"] == pytest.approx(2 / 3, abs=0.1)
    assert rep["shuffled"]["acf_at_output_lag"] == pytest.approx(2 / 3, abs=0.1)
    assert rep["laid_out_by_dense_layer"] is False
    with pytest.raises(ValueError, match="z: expected"):
        decoder_periodicity(_decoder(3), z[:, :3], None, FS)


def test_decoder_periodicity_follows_a_latent_sequence() -> None:
    """In the sequence layout the first map is a convolution of the code along time: a code that
    repeats every 5 or 6 steps gives every stage that period, and shuffling the map removes it
    (the code, not the convolutions, holds it)."""
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(T=400, C=8, latent=4, latent_layout="sequence")).eval()
    rng = np.random.default_rng(0)
    for cells in (5, 6):
        motif = rng.normal(size=(6, 4, cells))
        z = np.tile(motif, (1, 1, -(-25 // cells)))[..., :25].reshape(6, 100)
        rep = decoder_periodicity(model, z, None, FS)
        assert [r["stage"] for r in rep["stages"]] == ["sequence map"] + [
            f"block {i}" for i in range(1, 5)]
        assert {r["lag_samples"] for r in rep["stages"]} == {16 * cells}
        assert min(r["acf"] for r in rep["stages"]) > 0.5
        assert rep["first_stage"] == "sequence map" and rep["laid_out_by_dense_layer"] is True
        assert rep["shuffled"]["stage"] == "output, sequence map shuffled in time"
    with pytest.raises(ValueError, match="z: expected"):
        decoder_periodicity(model, z[:, :4], None, FS)


def test_periodicity_report_tells_a_sub_harmonic_from_a_slower_rhythm() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(400) / FS

    def windows(alternate: bool, n: int = 12) -> np.ndarray:
        out = np.empty((n, 400, 8))
        for i in range(n):
            for c in range(8):
                ph = rng.uniform(0, 2 * np.pi)
                tone = np.sin(2 * np.pi * 6.0 * t + ph)
                gain = 1 + 0.6 * np.sign(np.sin(np.pi * 6.0 * t + ph / 2)) if alternate else 1
                out[i, :, c] = tone * gain
        return out

    generated, real = windows(True), windows(False)
    model = _decoder(3)
    norm = Normalizer().fit(real.astype(np.float32))
    rep = periodicity_report(model, norm, generated, real, None, FS)
    # every generated site repeats after 2 of its 6 Hz cycles: a 3 Hz rhythm-blind DF, which
    # the windows keep when their (small, random-phase) common template is removed
    assert rep["df_hz"]["generated"] == pytest.approx(3.0, abs=0.05)
    assert rep["df_hz"]["generated_without_template"] == pytest.approx(3.0, abs=0.05)
    assert rep["df_hz"]["real"] == pytest.approx(6.0, abs=0.05)
    assert rep["cycles_per_repeat"]["generated"] == {"median": pytest.approx(2.0, abs=0.02),
                                                      "share_at_least": 1.0}
    assert rep["cycles_per_repeat"]["real"] == {"median": pytest.approx(1.0, abs=0.02),
                                                 "share_at_least": 0.0}
    assert rep["decoder"]["stages"][0]["lag_samples"] == 48
    json.dumps(rep)
