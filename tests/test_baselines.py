"""The baselines of the augmentation experiment (egmlib.augmentation.baselines) on hand-worked
cases and on the small data set of test_augment: the closed-form validation search against the
direct one, a known solution recovered, the amplitude ratio, the floor, and the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_augment import fake_dataset

from egmlib.augmentation import augment
from egmlib.augmentation import baselines as bl
from egmlib.core import metrics
from egmlib.data import noisy_bspm
from egmlib.physics.forward import svd, tikhonov


@pytest.fixture
def ds(tmp_path):
    d = fake_dataset(tmp_path)
    d.manifest["files"] = {"egm.npy": {"sha256": "a"}, "bspm.npy": {"sha256": "b"}}
    return d


def test_amplitude_ratio_hand_worked():
    t = np.linspace(0, 1, 50)
    x = np.stack([np.sin(2 * np.pi * 3 * t), np.cos(2 * np.pi * 2 * t), np.ones(50)], -1)[None]
    r = metrics.amplitude_ratio(x, 2.0 * x + 5.0)  # a gain of 2 and an offset: ratio 2
    np.testing.assert_allclose(r[0, :2], 2.0)
    assert np.isnan(r[0, 2])                   # constant truth: no ratio
    with pytest.raises(ValueError, match="recon"):
        metrics.amplitude_ratio(x, x[..., :2])


def test_relative_tikhonov_is_tikhonov_at_r_times_smax():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((12, 30))
    b = rng.standard_normal((4, 20, 12))
    dec = svd(a)
    got = bl.relative_tikhonov(dec, b, 0.03)
    for j in range(4):
        np.testing.assert_allclose(got[j], tikhonov(a, b[j].T, 0.03 * dec.s.max()).T,
                                   rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="rel"):
        bl.relative_tikhonov(dec, b, -1.0)


def test_validation_search_equals_the_direct_one(ds):
    """The moment form of validation_lambdas gives the numbers of reconstructing every
    validation window at every grid point and scoring it with metrics.pearson / rmse."""
    grid = [1.0, 0.1, 0.01, 1e-3]
    v = bl.validation_lambdas(ds, 15.0, seed=4, grid=grid)
    idx = np.flatnonzero(ds.part("val"))
    truth = np.asarray(ds.egm[idx], float)
    labels = np.asarray(ds.label[idx])
    for i, r in enumerate(grid):
        c_all, c_af, e_all = [], [], []
        for t in (0, 1):  # the training torsos
            rec = bl.relative_tikhonov(svd(ds.transfer[t]), noisy_bspm(ds, idx, t, 15.0, 4), r)
            c = metrics.pearson(truth, rec)
            c_all.append(np.nanmean(c))
            c_af.append(np.nanmean(c[labels == 1]))
            e_all.append(metrics.rmse(truth, rec).mean())
        assert v["corr"]["all"][i] == pytest.approx(np.mean(c_all), rel=1e-9)
        assert v["corr"]["AF"][i] == pytest.approx(np.mean(c_af), rel=1e-9)
        assert v["rmse"]["all"][i] == pytest.approx(np.mean(e_all), rel=1e-9)
    best = {k: grid[int(np.argmax(c))] for k, c in v["corr"].items()}
    assert v["chosen"] == best
    assert v["torsos"] == [0, 1] and v["n_windows"] == len(idx)


def test_validation_lambda_recovers_a_known_solution(tmp_path):
    """Sources seen through an injective but ill-conditioned matrix (singular values 1 to 1e-3)
    with negligible noise: only a lambda well below the smallest singular value keeps the
    weak components, so that is what validation must choose, and the test windows then come
    back exactly."""
    d = fake_dataset(tmp_path)
    rng = np.random.default_rng(3)
    m = rng.standard_normal((64, 16))
    q, _ = np.linalg.qr(m - m.mean(0))  # orthonormal columns of zero lead mean
    r, _ = np.linalg.qr(rng.standard_normal((16, 16)))  # mixes the sites
    a = np.broadcast_to((q * np.logspace(0, -3, 16)) @ r, (3, 64, 16)).copy()
    d.transfer = a
    d.bspm = np.einsum("wtc,kec->wkte", d.egm.astype(float), a).astype(np.float32)
    d.manifest["files"] = {}
    v = bl.validation_lambdas(d, 200.0, grid=bl.RELATIVE_LAMBDAS)
    assert v["chosen"]["all"] <= 1e-4
    assert v["corr"]["all"][0] < 0.9  # lambda = s_max smooths the weak components away
    res = bl.baselines(d, 200.0, seed=1, methods=("val", "mean"), val_lambdas=v)
    assert res["val"]["all"]["corr_mean"] > 0.999
    assert res["val"]["AF"]["amp_ratio_median"] == pytest.approx(1.0, abs=0.01)
    # the floor ignores its input: the mean training window, correlation near zero
    assert abs(res["mean"]["all"]["corr_mean"]) < 0.2
    assert res["mean"]["all"]["rmse_mean"] > 0.5


def test_baselines_lcurve_is_the_evaluate_tikhonov_and_val_rhythm_uses_the_label(ds):
    res = bl.baselines(ds, 15.0, seed=3)
    ev = augment.evaluate(None, ds, 15.0, seed=3)  # computes its own L-curve Tikhonov
    assert ev["tikhonov"]["AF"] == res["lcurve"]["AF"]
    assert set(bl.BASELINES) <= set(res)
    assert res["lambdas"]["val"] == res["validation"]["chosen"]["all"]
    assert set(res["lambdas"]["val_rhythm"]) == {"SR", "AF"}
    n_test = int(ds.part("test").sum())
    for m in bl.BASELINES:
        assert res[m]["all"]["n"] == n_test  # one held-out torso
    # the validation-lambda rows equal relative_tikhonov at the chosen lambdas
    idx = np.flatnonzero(ds.part("test"))
    af = np.asarray(ds.label[idx]) == 1
    b = noisy_bspm(ds, idx, 2, 15.0, 3)[af]  # the noise of the whole test set, AF rows
    rec = bl.relative_tikhonov(svd(ds.transfer[2]), b, res["lambdas"]["val_rhythm"]["AF"])
    want = metrics.compare(np.asarray(ds.egm[idx[af]], float), rec)["corr_mean"]
    assert res["val_rhythm"]["AF"]["corr_mean"] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="methods"):
        bl.baselines(ds, 15.0, seed=3, methods=("ridge",))


def test_cached_baselines_reuse_and_invalidate(ds, tmp_path, monkeypatch):
    first = bl.cached_baselines(ds, 15.0, 3, tmp_path / "cache")
    f = tmp_path / "cache" / "baselines_snr15_seed3.json"
    assert json.loads(f.read_text())["baselines"] == first  # JSON-ready (no NaN)

    def boom(*a, **kw):
        raise AssertionError("recomputed")

    monkeypatch.setattr(bl, "baselines", boom)
    assert bl.cached_baselines(ds, 15.0, 3, tmp_path / "cache") == first  # read back
    ds.manifest["files"]["egm.npy"]["sha256"] = "changed"  # other data: recomputed
    with pytest.raises(AssertionError, match="recomputed"):
        bl.cached_baselines(ds, 15.0, 3, tmp_path / "cache")


def test_evaluate_takes_stored_baselines_and_checks_them(ds, monkeypatch):
    stored = bl.cached_baselines(ds, 15.0, 3, ds.path / "cache")

    def fake_predict(model, b):
        return np.zeros((len(b), *ds.egm.shape[1:]), np.float32) + 0.01 * np.arange(
            ds.egm.shape[1])[:, None]

    monkeypatch.setattr(augment, "predict", fake_predict)
    res = augment.evaluate(object(), ds, 15.0, seed=3, baseline=stored)
    assert res["baselines"]["val"] == stored["val"]
    assert res["tikhonov"]["lambda_median"] == stored["lambdas"]["lcurve"]
    with pytest.raises(ValueError, match="noise_seed"):
        augment.evaluate(object(), ds, 15.0, seed=4, baseline=stored)


def test_tikhonov_evaluation_reports_amplitude_and_signal_rms(ds):
    from egmlib import data
    tik = data.tikhonov_evaluation(ds, snr_db=60.0, seed=0)
    for rhythm in ("SR", "AF"):
        r = tik[rhythm]
        idx = np.flatnonzero(ds.part("test", rhythm))
        # the fake windows are unit sines plus 10% noise: RMS sqrt(1/2 + 0.01)
        assert r["truth_rms"] == pytest.approx(np.sqrt(np.mean(ds.egm[idx].astype(float) ** 2)))
        assert r["truth_rms"] == pytest.approx(np.sqrt(0.51), rel=0.1)
        assert 0 < r["amp_ratio_median"] < 10 and r["n"] == len(idx)  # one test torso


def test_inverse_reading_names_over_amplification_only_where_rmse_exceeds_the_signal():
    from egmlib import data
    agree = {"corr_median": 0.89, "corr_min": -0.46, "rel_error_median": 0.38,
             "rel_error_max": 1.28}
    tik = {"SR": {"corr_mean": 0.55, "rmse_mean": 0.27, "truth_rms": 0.40, "amp_ratio_median": 0.8},
           "AF": {"corr_mean": 0.15, "rmse_mean": 6.87, "truth_rms": 1.50, "amp_ratio_median": 5.2}}
    lines = data.inverse_reading(tik, agree)
    assert "median correlation 0.89" in lines[0] and "-0.46" in lines[0]
    assert lines[1].startswith("SR:") and "0.55" in lines[1] and "0.8x" in lines[1]
    assert lines[2].startswith("AF:") and "6.87 mV" in lines[2] and "5.2x" in lines[2]
    assert lines[3].startswith("In AF the RMSE exceeds")
    tik["AF"]["rmse_mean"] = 1.0  # below the signal's RMS: nothing to name
    assert len(data.inverse_reading(tik, agree)) == 3


def test_scores_compute_each_value_once_and_agree_with_compare(ds):
    """``all`` is metrics.compare over every window; a rhythm's row is compare over its windows;
    a given truth DF gives the same scores as the one computed inside."""
    idx = np.flatnonzero(ds.part("test"))
    truth = np.asarray(ds.egm[idx], float)
    lab = np.asarray(ds.label[idx])
    recon = truth[::-1].copy() + 0.1  # a wrong but non-constant reconstruction
    fs = float(ds.manifest["fs"])
    got = bl.scores(truth, recon, lab, fs)
    whole = metrics.compare(truth, recon)
    assert {k: got["all"][k] for k in whole} == whole
    af = lab == 1
    assert {k: got["AF"][k] for k in whole} == metrics.compare(truth[af], recon[af])
    df = bl.truth_df(truth, lab, fs)
    assert df.shape == (len(idx), truth.shape[2])
    np.testing.assert_array_equal(df[af], metrics.rhythm_df(truth[af], fs, "AF"))
    np.testing.assert_array_equal(df[~af], metrics.rhythm_df(truth[~af], fs, "SR"))
    assert bl.scores(truth, recon, lab, fs, df) == got
    want = np.abs(metrics.rhythm_df(recon[af], fs, "AF") - df[af])
    assert got["AF"]["df_err_median"] == pytest.approx(float(np.median(want)), rel=1e-12)
    with pytest.raises(ValueError, match="df_truth"):
        bl.scores(truth, recon, lab, fs, df[:1])


def test_the_cached_baselines_carry_the_truth_df(ds, tmp_path):
    stored = bl.cached_baselines(ds, 15.0, 3, tmp_path / "cache")
    idx = np.flatnonzero(ds.part("test"))
    want = bl.truth_df(np.asarray(ds.egm[idx], float), np.asarray(ds.label[idx]),
                       float(ds.manifest["fs"]))
    np.testing.assert_array_equal(np.asarray(stored["df_truth"], float), want)
