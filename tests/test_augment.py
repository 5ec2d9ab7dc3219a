"""The augmentation experiment (egmlib.augmentation.augment) on a small in-memory Dataset: random
smooth SR
and AF windows (T = 64, 16 sites), three random torsos (the last held out), BSPMs made with the
transfer matrices so the pairing can be checked exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from egmlib.augmentation import augment
from egmlib.data import Dataset, noisy_bspm, split_by_simulation
from egmlib.physics.forward import reference_mean

T, N_REC, FS = 64, 16, 100.0
TINY = {"channels": (8, 8, 16), "latent_dim": 8}


# One torch thread: the test machines have 2 shared cores (conftest.torch_single_thread).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def fake_dataset(tmp_path, n_sims: int = 6, per_sim: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    t = np.arange(T) / FS
    sims = [*range(n_sims), *range(100, 100 + n_sims)]
    egm, label, sim_id = [], [], []
    for s in sims:
        af = s >= 100
        f0 = rng.uniform(5.0, 8.0) if af else rng.uniform(1.6, 2.5)
        for _ in range(per_sim):
            ph = rng.uniform(0, 2 * np.pi, N_REC)
            w = np.sin(2 * np.pi * f0 * t[:, None] + ph) + 0.1 * rng.standard_normal((T, N_REC))
            egm.append(w)
            label.append(int(af))
            sim_id.append(s)
    egm = np.asarray(egm, np.float32)
    label = np.asarray(label, np.int8)
    sim_id = np.asarray(sim_id, np.int32)
    transfer = reference_mean(rng.standard_normal((3, 64, N_REC)) * 0.05, axis=1)
    bspm = reference_mean(np.einsum("wtc,kec->wkte", egm.astype(float), transfer), axis=-1)
    split = split_by_simulation(sim_id, label, 0.34, 0.34, seed)
    z = np.zeros(1, np.float32)
    return Dataset(path=tmp_path, manifest={"fs": FS}, egm=egm, label=label, sim_id=sim_id,
                   start_s=np.zeros(len(egm), np.float32), split=split, df_hz=z,
                   egm_500hz_examples=z, bspm=bspm.astype(np.float32), transfer=transfer,
                   torso_split=np.array([0, 0, 2], np.int8), bspm_examples=z)


@pytest.fixture
def ds(tmp_path):
    return fake_dataset(tmp_path)


def test_pairing_goes_through_the_transfer_matrix(ds):
    idx = np.flatnonzero(ds.part("train"))[:4]
    rng = np.random.default_rng(0)
    clean = augment.pair_synthetic(ds.egm[idx], ds.transfer, None, rng)
    assert clean.shape == (4, 3, T, 64)
    # what the matrix predicts, referenced to the mean over the 64 leads, as the real pairs
    want = np.einsum("ktc,nec->knte", ds.egm[idx].astype(float), ds.transfer)
    np.testing.assert_allclose(clean, want - want.mean(-1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(clean, np.asarray(ds.bspm[idx]), atol=1e-5)
    np.testing.assert_allclose(clean.mean(-1), 0.0, atol=1e-12)
    # with noise: re-referenced, at the requested SNR per window and torso
    noisy = augment.pair_synthetic(ds.egm[idx], ds.transfer, 10.0, rng)
    np.testing.assert_allclose(noisy.mean(-1), 0.0, atol=1e-12)
    noise = noisy - clean
    snr = 10 * np.log10((clean**2).mean(axis=(-2, -1)) / (noise**2).mean(axis=(-2, -1)))
    assert np.all(np.abs(snr - 10.0) < 1.0), snr
    # very high SNR: the matrix's prediction
    np.testing.assert_allclose(augment.pair_synthetic(ds.egm[idx], ds.transfer, 200.0, rng),
                               clean, atol=1e-8)


def test_k0_trains_on_real_pairs_only(ds):
    ts = augment.build_training_set(ds, None, 0, 20.0, seed=1)
    tr = np.flatnonzero(ds.part("train"))
    assert ts.n_synth == 0 and not ts.is_synth.any()
    assert ts.n_real == len(tr) * 2 == len(ts.bspm_train) == len(ts.egm_train)
    assert list(ts.torsos) == [0, 1]
    assert ts.n_val == np.sum(ds.part("val")) * 2 == len(ts.bspm_val)
    np.testing.assert_array_equal(ts.egm_train, np.concatenate([ds.egm[tr]] * 2))
    # the real BSPMs are data.noisy_bspm's (noisy, re-referenced), torso by torso
    b0 = noisy_bspm(ds, tr, 0, 20.0, augment._derived_seed(1, 0)).astype(np.float32)
    np.testing.assert_array_equal(ts.bspm_train[:len(tr)], b0)
    assert not np.allclose(ts.bspm_train[:len(tr)], ds.bspm[tr, 0])


def test_k_synthetic_pairs_per_torso(ds):
    rng = np.random.default_rng(5)
    synth = rng.standard_normal((6, T, N_REC)).astype(np.float32)
    base = augment.build_training_set(ds, synth, 0, 20.0, seed=1)
    ts = augment.build_training_set(ds, synth, 4, 20.0, seed=1)
    assert ts.n_real == base.n_real and ts.n_synth == 4 * 2
    assert len(ts.bspm_train) == ts.n_real + ts.n_synth == ts.is_synth.size
    assert ts.is_synth.sum() == 8 and ts.is_synth[-8:].all()
    np.testing.assert_array_equal(ts.bspm_train[:ts.n_real], base.bspm_train)
    # the first k (best-scored) windows, each with every training torso
    np.testing.assert_array_equal(ts.egm_train[ts.n_real:], np.repeat(synth[:4], 2, axis=0))
    clean = augment.pair_synthetic(synth[:4], ds.transfer[[0, 1]], None, rng)
    got = ts.bspm_train[ts.n_real:].reshape(4, 2, T, 64)
    corr = [np.corrcoef(got[i, j].ravel(), clean[i, j].ravel())[0, 1]
            for i in range(4) for j in range(2)]
    assert min(corr) > 0.9  # 20 dB noise: correlation ~0.995


def test_test_split_shares_no_simulation_with_training(ds):
    ts = augment.build_training_set(ds, None, 0, 20.0, seed=0)
    test_sims = set(ds.sim_id[ds.part("test")])
    assert test_sims
    assert not test_sims & set(ds.sim_id[ts.train_windows])
    assert not test_sims & set(ds.sim_id[ts.val_windows])
    assert not set(ds.sim_id[ts.val_windows]) & set(ds.sim_id[ts.train_windows])
    assert list(augment.test_torsos(ds)) == [2] and 2 not in ts.torsos


@pytest.mark.parametrize(("k", "gen", "n_kept", "match"), [
    (-1, "vae_s", 5, "k:"), (6, "vae_s", 5, "k:"), (2, "none", 0, "k:"),
    (1.5, "vae_s", 5, "k:"), (0, "vae_x", 5, "generator:"), (0, None, 5, "generator:")])
def test_check_augment_args(k, gen, n_kept, match):
    with pytest.raises(ValueError, match=match):
        augment.check_augment_args(k, gen, n_kept)
    augment.check_augment_args(0, "none", 0)
    augment.check_augment_args(5, "vae_c", 5)


def test_bad_input_raises_before_training(ds, monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(augment, "train_recon", boom)
    synth = np.zeros((3, T, N_REC), np.float32)
    cases = [((ds, synth, 4, 0), {"generator": "vae_s"}, "k:"),
             ((ds, synth, -1, 0), {"generator": "vae_s"}, "k:"),
             ((ds, synth, 1, 0), {"generator": "gan"}, "generator:"),
             ((ds, None, 1, 0), {}, "k:"),
             ((ds, None, 0, 0), {"generator": "vae_s"}, "synth_egm:"),
             ((ds, synth, 1, 0), {}, "generator:"),
             ((ds, synth[:, :10], 1, 0), {"generator": "vae_s"}, "synth_egm:"),
             ((ds, None, 0, 0), {"epochs": 0}, "epochs:"),
             ((ds, None, 0, 0), {"config": {"T": 10}}, "config:"),
             ((ds, None, 0, 0), {"precision": "half"}, "precision:")]
    for args, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            augment.run_augmentation(*args, **kw)


def test_run_augmentation_result_and_determinism(ds):
    synth = np.asarray(ds.egm[np.flatnonzero(ds.part("train"))[:3]])
    kw = {"epochs": 3, "batch_size": 8, "config": TINY, "generator": "vae_s"}
    r1 = augment.run_augmentation(ds, synth, 2, 7, **kw)
    r2 = augment.run_augmentation(ds, synth, 2, 7, **kw)
    json.dumps(r1)  # JSON-ready
    assert r1["counts"]["n_synth"] == 4 and r1["counts"]["n_real"] == np.sum(
        ds.part("train")) * 2
    assert r1["test"]["network"] == r2["test"]["network"]
    assert r1["history"]["train_total"] == r2["history"]["train_total"]
    test = r1["test"]
    n_test = int(np.sum(ds.part("test")))
    for method in ("network", "tikhonov"):
        for rhythm in ("SR", "AF", "all"):
            m = test[method][rhythm]
            assert {"corr_mean", "rmse_mean", "lsd_mean", "df_err_mean", "n"} <= set(m)
            assert -1 <= m["corr_mean"] <= 1 and m["rmse_mean"] > 0
        assert test[method]["all"]["n"] == n_test  # one test torso
    assert test["tikhonov"]["lambda_median"] > 0
    assert test["torsos"] == [2]
    # another seed: other training noise and weights, the same test noise and Tikhonov numbers
    r3 = augment.run_augmentation(ds, synth, 2, 8, **kw)
    assert r3["test"]["tikhonov"] == r1["test"]["tikhonov"]
    assert r3["test"]["network"] != r1["test"]["network"]


def test_k0_does_not_depend_on_the_generator(ds):
    """What lets the sweep run k = 0 once per seed for every generator (sweep.shared_baseline)."""
    synth = np.asarray(ds.egm[np.flatnonzero(ds.part("train"))[:3]])
    kw = {"epochs": 2, "batch_size": 8, "config": TINY}
    runs = [augment.run_augmentation(ds, None, 0, 3, **kw),
            augment.run_augmentation(ds, synth, 0, 3, generator="vae_s", **kw),
            augment.run_augmentation(ds, synth[::-1].copy(), 0, 3, generator="vae_c", **kw)]
    assert [r["generator"] for r in runs] == ["none", "vae_s", "vae_c"]
    for r in runs[1:]:
        assert r["test"] == runs[0]["test"]
        assert r["history"]["train_total"] == runs[0]["history"]["train_total"]


def test_evaluate_same_noise_for_both_methods(ds, monkeypatch):
    """The network sees exactly the noisy BSPMs Tikhonov sees."""
    seen = []

    def fake_predict(model, b):
        seen.append(np.array(b))
        return np.zeros((len(b), T, N_REC), np.float32) + 0.01 * np.arange(T)[:, None]

    monkeypatch.setattr(augment, "predict", fake_predict)
    res = augment.evaluate(object(), ds, 15.0, seed=3)
    idx = np.flatnonzero(ds.part("test"))
    np.testing.assert_allclose(seen[0], noisy_bspm(ds, idx, 2, 15.0, 3), rtol=1e-6, atol=1e-7)
    assert res["network"]["all"]["n"] == res["tikhonov"]["all"]["n"] == len(idx)
    # DF error: the true AF windows are 5-8 Hz sinusoids; Tikhonov at 15 dB keeps the rate
    assert res["tikhonov"]["AF"]["df_err_median"] < 1.0


# ------------------------------------------------------------------------------------------------
# The data-scarce arm: nested subsets of real training simulations
# ------------------------------------------------------------------------------------------------
def test_real_subsets_are_nested_and_split_by_simulation(tmp_path):
    ds = fake_dataset(tmp_path, n_sims=12)
    sims = augment.training_simulations(ds)
    n_min = min(len(v) for v in sims.values())
    assert n_min >= 3
    sim_id = np.asarray(ds.sim_id)
    for seed in (0, 5):
        prev = set()
        for n in range(1, n_min + 1):
            idx = augment.real_subset(ds, n, seed)
            assert ds.part("train")[idx].all()
            chosen = set(sim_id[idx].tolist())
            # n simulations per rhythm, every window of each chosen simulation
            for rhythm, ids in sims.items():
                assert len(chosen & set(ids.tolist())) == n, rhythm
            assert set(idx.tolist()) == set(np.flatnonzero(
                ds.part("train") & np.isin(sim_id, list(chosen))).tolist())
            assert prev <= chosen  # nested
            prev = chosen
    # 0 is every training window; another seed draws another subset
    np.testing.assert_array_equal(augment.real_subset(ds, 0, 1), np.flatnonzero(ds.part("train")))
    draws = {tuple(augment.real_subset(ds, 1, seed).tolist()) for seed in range(10)}
    assert len(draws) > 1


def test_too_many_real_simulations_fail_before_training(ds, monkeypatch):
    most = min(len(v) for v in augment.training_simulations(ds).values())

    def no_training(*a, **k):
        raise AssertionError("trained despite bad input")

    monkeypatch.setattr(augment, "train_recon", no_training)
    with pytest.raises(ValueError, match=rf"n_real_sims: got {most + 1}; allowed: .*1\.\.{most}"):
        augment.run_augmentation(ds, None, 0, 0, epochs=1, config=TINY, n_real_sims=most + 1)
    with pytest.raises(ValueError, match="n_real_sims"):
        augment.check_real_sims(ds, -1)


def test_scarce_run_trains_on_its_subset_only(ds):
    r = augment.run_augmentation(ds, None, 0, 3, epochs=1, batch_size=8, config=TINY,
                                 n_real_sims=1)
    idx = augment.real_subset(ds, 1, 3)
    assert r["n_real_sims"] == 1 and r["counts"]["n_train_sims"] == 2
    assert r["counts"]["n_real"] == len(idx) * 2  # two training torsos


def test_per_simulation_means_reproduce_the_overall_mean(ds):
    rng = np.random.default_rng(1)
    idx = np.flatnonzero(ds.part("test"))
    truth = np.asarray(ds.egm[idx], float)
    recon = truth + 0.8 * rng.standard_normal(truth.shape)
    ps = augment.per_simulation(truth, recon, ds.sim_id[idx], ds.label[idx])
    assert ps["sim_id"] == sorted(set(ds.sim_id[idx].tolist()))
    overall = augment.baselines.scores(truth, recon, ds.label[idx], FS)["all"]["corr_mean"]
    weighted = np.average(ps["corr"], weights=ps["n_windows"])
    assert weighted == pytest.approx(overall, abs=1e-5)
    assert {r for r in ps["rhythm"]} == {"SR", "AF"}
    with pytest.raises(ValueError, match="several rhythms"):
        augment.per_simulation(truth[:2], recon[:2], [7, 7], [0, 1])
