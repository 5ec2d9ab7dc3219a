"""Unit tests of egmlib.core.metrics against hand-computed and analytic cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from egmlib.core import metrics as M

RNG_SEED = 1234


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def pulse_train(rate: float, fs: float, seconds: float, sigma: float, phase: float = 0.1):
    """A unipolar-EGM-like train: a biphasic deflection (-d/dt of a Gaussian) every 1/rate s."""
    t = np.arange(round(seconds * fs)) / fs
    x = np.zeros_like(t)
    for tb in np.arange(phase, t[-1], 1.0 / rate):
        u = (t - tb) / sigma
        x += -u * np.exp(-0.5 * u * u)
    return x


# ---------------------------------------------------------------------------------------------
# Per-site similarity
# ---------------------------------------------------------------------------------------------


def test_identical_signals(rng):
    x = rng.standard_normal((3, 64, 5))
    np.testing.assert_allclose(M.pearson(x, x), np.ones((3, 5)), atol=1e-12)
    np.testing.assert_array_equal(M.rmse(x, x), np.zeros((3, 5)))
    np.testing.assert_array_equal(M.lsd(x, x), np.zeros((3, 5)))
    out = M.compare(x, x)
    assert out["corr_mean"] == pytest.approx(1.0, abs=1e-12)
    assert out["corr_std"] == pytest.approx(0.0, abs=1e-12)
    assert out["rmse_mean"] == 0.0 and out["lsd_mean"] == 0.0
    assert set(out) == {"corr_mean", "corr_std", "rmse_mean", "rmse_std", "lsd_mean", "lsd_std"}


def test_sign_flip_and_hand_correlation(rng):
    x = rng.standard_normal((2, 50, 4))
    np.testing.assert_allclose(M.pearson(x, -x), -np.ones((2, 4)), atol=1e-12)
    # invariant to offset and positive scale
    np.testing.assert_allclose(M.pearson(x, 3.0 * x + 7.0), np.ones((2, 4)), atol=1e-12)
    # hand case: centred (-1, 0, 1) and (-1, 1, 0): 1 / sqrt(2 * 2) = 0.5
    a = np.array([[1.0], [2.0], [3.0]])
    b = np.array([[1.0], [3.0], [2.0]])
    assert M.pearson(a, b)[0] == pytest.approx(0.5, abs=1e-14)


def test_pearson_constant_channel_is_zero_without_warning(rng):
    x = rng.standard_normal((40, 3))
    y = x.copy()
    y[:, 1] = 0.1  # constant, mean not exactly representable
    x[:, 2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = M.pearson(x, y)
    np.testing.assert_allclose(r, [1.0, 0.0, 0.0], atol=1e-12)


def test_rmse_hand_case():
    x = np.zeros((4, 2))
    y = np.array([[1.0, 2.0], [-1.0, 2.0], [3.0, -2.0], [1.0, 0.0]])
    # site 0: (1 + 1 + 9 + 1) / 4 = 3; site 1: (4 + 4 + 4 + 0) / 4 = 3
    np.testing.assert_allclose(M.rmse(x, y), [math.sqrt(3.0), math.sqrt(3.0)], rtol=1e-15)
    s = M.summarize(M.rmse(x, y))
    assert s == {"mean": pytest.approx(math.sqrt(3.0)), "std": pytest.approx(0.0, abs=1e-15)}


def test_lsd_scale_is_ln2(rng):
    x = rng.standard_normal((2, 128, 3))
    np.testing.assert_allclose(M.lsd(x, 2.0 * x), np.full((2, 3), math.log(2.0)), atol=1e-9)
    np.testing.assert_allclose(M.lsd(2.0 * x, x), np.full((2, 3), math.log(2.0)), atol=1e-9)


def test_lsd_hand_cases():
    impulse = np.zeros((16, 1))
    impulse[0] = 1.0  # flat magnitude spectrum 1
    assert M.lsd(impulse, 3.0 * impulse)[0] == pytest.approx(math.log(3.0), abs=1e-12)
    # floor: zero against an impulse gives ln(1 / floor) in every bin
    zero = np.zeros((16, 1))
    assert M.lsd(zero, impulse)[0] == pytest.approx(math.log(1e8), rel=1e-12)
    assert M.lsd(zero, impulse, floor=1e-4)[0] == pytest.approx(math.log(1e4), rel=1e-12)
    assert M.lsd(zero, zero)[0] == 0.0
    # half the bins differ by ln 4 -> sqrt(mean) over 5 bins of an 8-sample window (bins 0..4)
    x = np.zeros((8, 1))
    x[0] = 1.0
    y = np.fft.irfft(np.array([1.0, 4.0, 1.0, 4.0, 1.0]), n=8)[:, None]
    expected = math.sqrt(2.0 * math.log(4.0) ** 2 / 5.0)
    assert M.lsd(x, y)[0] == pytest.approx(expected, rel=1e-12)


def test_summarize():
    s = M.summarize(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert s["mean"] == pytest.approx(2.5) and s["std"] == pytest.approx(math.sqrt(1.25))
    with pytest.raises(ValueError, match="values"):
        M.summarize([1.0, np.nan])
    s = M.summarize([1.0, np.nan, 3.0], nan_policy="omit")
    assert s == {"mean": 2.0, "std": 1.0}
    with pytest.raises(ValueError, match="values"):
        M.summarize([])


# ---------------------------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------------------------


def test_welch_psd_integrates_to_variance():
    fs = 100.0
    t = np.arange(800) / fs
    x = np.stack([2.0 * np.sin(2 * np.pi * 5.0 * t), np.sin(2 * np.pi * 7.25 * t + 1.0)], -1)
    f, p = M.welch_psd(x[None], fs, resolution=0.05)
    assert p.shape == (1, f.size, 2)
    assert f[1] - f[0] == pytest.approx(0.05)
    power = p[0].sum(axis=0) * (f[1] - f[0])
    np.testing.assert_allclose(power, [2.0, 0.5], rtol=0.01)  # A^2 / 2
    assert f[np.argmax(p[0, :, 0])] == pytest.approx(5.0)


def test_dominant_frequency_of_tones():
    fs = 100.0
    t = np.arange(400) / fs
    tones = [4.0, 6.3, 9.15]
    x = np.stack([np.sin(2 * np.pi * f0 * t + k) for k, f0 in enumerate(tones)], -1)
    x = np.stack([x, 0.5 * x])  # two windows
    df = M.dominant_frequency(x, fs, M.AF_BAND)
    assert df.shape == (2, 3)
    np.testing.assert_allclose(df, [tones, tones], atol=0.05 + 1e-9)
    ac = M.dominant_frequency(x, fs, M.AF_BAND, method="autocorr")
    np.testing.assert_allclose(ac, [tones, tones], rtol=0.02)


def test_sinus_df_plain_finds_harmonic_botteron_finds_rate():
    fs = 500.0
    x = np.stack([pulse_train(1.5, fs, 8.0, 0.003), pulse_train(1.2, fs, 8.0, 0.003, 0.3)], -1)
    bott = M.dominant_frequency(x, fs, (0.5, 10.0), method="botteron")
    np.testing.assert_allclose(bott, [1.5, 1.2], atol=0.05 + 1e-9)
    plain = M.dominant_frequency(x, fs, (0.5, 10.0))
    ratio = plain / np.array([1.5, 1.2])
    assert np.all(ratio > 4.5)  # a high harmonic, not the rate
    np.testing.assert_allclose(ratio, np.round(ratio), atol=0.05)


def test_sinus_df_at_100hz_autocorr_and_botteron_refused():
    fs = 100.0
    rates = [1.5, 1.2, 0.8]
    x = np.stack([pulse_train(r, fs, 4.0, 0.01, 0.1 + 0.1 * k) for k, r in enumerate(rates)], -1)
    ac = M.dominant_frequency(x, fs, M.SR_BAND, method="autocorr")
    np.testing.assert_allclose(ac, rates, atol=0.02)
    plain = M.dominant_frequency(x, fs, M.SR_BAND)
    assert plain[0] == pytest.approx(3.0)  # the 2nd harmonic, inside the narrow band
    with pytest.raises(ValueError, match="fs"):
        M.dominant_frequency(x, fs, M.SR_BAND, method="botteron")


def test_df_settings_one_definition_per_rhythm_and_rate():
    assert M.df_settings("AF", 100.0) is M.df_settings("AF", 500.0) is M.AF_DF
    assert M.AF_DF == M.DFSettings("plain", (3.0, 12.0)) and M.AF_BAND == (3.0, 12.0)
    # SR: Botteron where its 40-250 Hz band-pass fits (fs >= 400 Hz), autocorrelation below
    assert M.df_settings("SR", 500.0) == M.SR_DF_RECORDING == M.DFSettings("botteron", (0.5, 3.0))
    assert M.df_settings("SR", 400.0) is M.SR_DF_RECORDING
    assert M.df_settings("SR", 100.0) == M.SR_DF_WINDOW == M.DFSettings("autocorr", (0.5, 3.0))
    assert M.SR_DF_WINDOW.as_dict() == {"method": "autocorr", "band_hz": [0.5, 3.0]}
    with pytest.raises(ValueError, match="rhythm"):
        M.df_settings("VF", 100.0)
    with pytest.raises(ValueError, match="fs"):
        M.df_settings("SR", 0.0)
    # rhythm_df is dominant_frequency with those settings: 1.2 Hz pacing, 6.3 Hz AF
    fs = 100.0
    sr = pulse_train(1.2, fs, 4.0, 0.01)[:, None]
    assert M.rhythm_df(sr, fs, "SR")[0] == pytest.approx(1.2, abs=0.02)
    assert M.rhythm_df(sr, fs, "SR") == M.dominant_frequency(sr, fs, M.SR_BAND, "autocorr")
    t = np.arange(400) / fs
    af = np.sin(2 * np.pi * 6.3 * t)[:, None]
    assert M.rhythm_df(af, fs, "AF")[0] == pytest.approx(6.3, abs=0.05)


def test_dominant_frequency_constant_channel_is_nan():
    fs = 100.0
    t = np.arange(400) / fs
    x = np.stack([np.sin(2 * np.pi * 5.0 * t), np.full_like(t, 0.3)], -1)
    df = M.dominant_frequency(x, fs, M.AF_BAND)
    assert df[0] == pytest.approx(5.0) and np.isnan(df[1])
    assert M.summarize(df, nan_policy="omit")["mean"] == pytest.approx(5.0)


def test_organisation_index():
    fs = 100.0
    t = np.arange(800) / fs
    s5 = np.sin(2 * np.pi * 5.0 * t)
    x = np.stack(
        [
            s5 + 0.5 * np.sin(2 * np.pi * 11.3 * t + 1.0),  # not a harmonic: OI = 0.5 / 0.625
            s5 + 0.5 * np.sin(2 * np.pi * 10.0 * t + 1.0),  # 2nd harmonic: OI = 1
            s5,
        ],
        -1,
    )
    oi = M.organisation_index(x, fs, (3.0, 15.0))
    np.testing.assert_allclose(oi, [0.8, 1.0, 1.0], atol=0.005)
    ri = M.organisation_index(x, fs, (3.0, 15.0), harmonics=0)  # Sanders' regularity index
    np.testing.assert_allclose(ri, [0.8, 0.8, 1.0], atol=0.005)
    # a given DF: centring the window on 11.3 Hz keeps only the weak tone's power
    oi_df = M.organisation_index(x[:, :1], fs, (3.0, 15.0), df=np.array([11.3]), harmonics=0)
    assert oi_df[0] == pytest.approx(0.2, abs=0.005)
    nan_df = M.organisation_index(x[:, :1], fs, (3.0, 15.0), df=np.array([np.nan]))
    assert np.isnan(nan_df[0])
    with pytest.raises(ValueError, match="df"):
        M.organisation_index(x, fs, (3.0, 15.0), df=np.array([5.0]))


# ---------------------------------------------------------------------------------------------
# Distributional metrics
# ---------------------------------------------------------------------------------------------


def test_frechet_distance_analytic(rng):
    a = rng.standard_normal((4000, 3))
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    m = np.array([1.0, 2.0, 0.0])
    assert M.frechet_distance(a, a + m) == pytest.approx(5.0, rel=1e-8)  # |m|^2 exactly
    b = rng.standard_normal((4000, 3)) + m  # independent sample of N(m, I)
    assert M.frechet_distance(a, b) == pytest.approx(5.0, abs=0.15)
    c = 2.0 * rng.standard_normal((4000, 3))  # N(0, 4 I): d (sigma_a - sigma_c)^2 = 3
    assert M.frechet_distance(a, c) == pytest.approx(3.0, abs=0.15)
    assert M.frechet_distance(a, c) == pytest.approx(M.frechet_distance(c, a), rel=1e-6)


def test_frechet_distance_singular_covariance(rng):
    a = rng.standard_normal((3, 6))  # rank-2 covariance in 6 dimensions
    b = rng.standard_normal((4, 6)) + 1.0
    fd = M.frechet_distance(a, b)
    assert math.isfinite(fd) and fd > 3.0  # at least most of the mean shift |1|^2 * 6


def test_mmd2_hand_case():
    a = np.array([[0.0], [1.0]])
    b = np.array([[3.0], [4.0]])
    # k(u, v) = exp(-(u - v)^2 / 2); cross distances 3, 4, 2, 3
    cross = (math.exp(-4.5) + math.exp(-8.0) + math.exp(-2.0) + math.exp(-4.5)) / 4.0
    expected = 2.0 * math.exp(-0.5) - 2.0 * cross
    assert M.mmd2(a, b, bandwidth=1.0) == pytest.approx(expected, rel=1e-12)
    # the median heuristic is the median pairwise distance of the pooled set
    med = float(np.median(pdist(np.vstack([a, b]))))
    assert M.mmd2(a, b) == pytest.approx(M.mmd2(a, b, bandwidth=med), rel=1e-12)


def test_mmd2_same_and_shifted(rng):
    a = rng.standard_normal((300, 2))
    b = rng.standard_normal((300, 2))
    assert abs(M.mmd2(a, b)) < 0.01
    assert abs(M.mmd2(a, a)) < 0.01
    shifted = M.mmd2(a, b + 2.0)
    assert shifted > 0.3
    assert shifted == pytest.approx(M.mmd2(b + 2.0, a), rel=1e-12)


def test_diversity_unit_square():
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert M.diversity(corners) == pytest.approx((4.0 + 2.0 * math.sqrt(2.0)) / 6.0)


def test_coverage_hand_cases():
    real = np.arange(10.0)[:, None]  # 1-NN radius of every real point is 1
    assert M.coverage(real, np.array([[0.5]]), k=1) == pytest.approx(0.2)  # balls of 0 and 1
    assert M.coverage(real, np.array([[100.0]]), k=1) == 0.0
    assert M.coverage(real, real, k=1) == 1.0
    # k = 2: radius 2 at the ends (0 and 9), 1 inside; a fake at 1.5 is in the balls of 0..3
    assert M.coverage(real, np.array([[1.5]]), k=2) == pytest.approx(0.3)


def test_active_units():
    s = np.array([1.0, -1.0, 1.0, -1.0])
    mu = np.stack([s, 0.01 * s, np.zeros(4), 0.2 * s], -1)  # variances 4/3, 1.3e-4, 0, 0.053
    assert M.active_units(mu) == 2
    assert M.active_units(mu, threshold=0.1) == 1
    assert M.active_units(mu, threshold=0.0) == 3


def test_silhouette_hand_case():
    x = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    b = (10.0 + math.sqrt(101.0)) / 2.0  # mean distance to the other cluster; a = 1
    assert M.silhouette(x, labels) == pytest.approx(1.0 - 1.0 / b, rel=1e-12)
    assert M.silhouette(x, np.array([0, 1, 0, 1])) < 0.0


def test_numpy_and_torch_agree(rng):
    x = rng.standard_normal((2, 200, 3)).astype(np.float32)
    y = x + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for fn in (M.pearson, M.rmse, M.lsd):
        np.testing.assert_array_equal(fn(x, y), fn(tx, ty))
    assert M.compare(x, y) == M.compare(tx, ty)
    np.testing.assert_array_equal(
        M.dominant_frequency(x, 50.0, (1.0, 20.0)), M.dominant_frequency(tx, 50.0, (1.0, 20.0))
    )
    np.testing.assert_array_equal(
        M.organisation_index(x, 50.0, (1.0, 20.0)), M.organisation_index(tx, 50.0, (1.0, 20.0))
    )
    a = rng.standard_normal((40, 3))
    b = rng.standard_normal((30, 3)) + 0.5
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert M.frechet_distance(a, b) == M.frechet_distance(ta, tb)
    assert M.mmd2(a, b) == M.mmd2(ta, tb)
    assert M.diversity(a) == M.diversity(ta)
    assert M.coverage(a, b) == M.coverage(ta, tb)
    assert M.active_units(a) == M.active_units(ta) == 3
    labels = np.repeat([0, 1], 20)
    assert M.silhouette(a, labels) == M.silhouette(ta, torch.from_numpy(labels))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: M.pearson(np.zeros((10, 3)), np.zeros((10, 4))), "y"),
        (lambda: M.rmse(np.full((10, 3), np.nan), np.zeros((10, 3))), "x"),
        (lambda: M.lsd(np.zeros((10, 3)), np.full((10, 3), np.inf)), "y"),
        (lambda: M.pearson(np.zeros(10), np.zeros(10)), "x"),
        (lambda: M.rmse(np.zeros((0, 3)), np.zeros((0, 3))), "x"),
        (lambda: M.lsd(np.zeros((10, 3)), np.zeros((10, 3)), floor=0.0), "floor"),
        (lambda: M.dominant_frequency(np.ones((50, 2)), 100.0, (20.0, 60.0)), "band"),
        (lambda: M.dominant_frequency(np.ones((50, 2)), 0.0, (1.0, 6.0)), "fs"),
        (lambda: M.dominant_frequency(np.ones((50, 2)), 100.0, (1.0, 6.0), "fft"), "method"),
        (lambda: M.welch_psd(np.ones((50, 2)), 100.0, nperseg=80), "nperseg"),
        (lambda: M.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4))), "b"),
        (lambda: M.frechet_distance(np.zeros((5, 3, 1)), np.zeros((5, 3))), "a"),
        (lambda: M.mmd2(np.zeros((0, 3)), np.zeros((5, 3))), "a"),
        (lambda: M.mmd2(np.zeros((5, 3)), np.zeros((5, 3)), bandwidth=-1.0), "bandwidth"),
        (lambda: M.diversity(np.zeros((1, 3))), "a"),
        (lambda: M.coverage(np.zeros((5, 2)), np.zeros((3, 2)), k=5), "real"),
        (lambda: M.coverage(np.zeros((9, 2)), np.zeros((3, 3))), "fake"),
        (lambda: M.active_units(np.array([[np.nan, 1.0], [0.0, 1.0]])), "mu"),
        (lambda: M.silhouette(np.zeros((4, 2)), np.array([0, 1, 1])), "labels"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


def test_rhythm_blind_df_finds_either_rhythms_rate():
    """One band for both rhythms: a 1.25 Hz pulse train (an SR-like rate) and a 6.25 Hz one
    (AF-like) at 100 Hz come out at their own rates, where AF's band would miss the first."""
    fs, n = 100.0, 1000
    for rate in (1.25, 6.25):
        x = np.zeros((n, 2))
        x[:: int(fs / rate)] = 1.0
        np.testing.assert_allclose(M.RHYTHM_BLIND_DF(x, fs), rate, rtol=1e-4)
    assert M.RHYTHM_BLIND_DF.band_hz == (M.SR_BAND[0], M.AF_BAND[1])


def test_pair_metrics_by_blocks_equal_one_window_at_a_time(rng, monkeypatch):
    # blocks of two windows over a (3, 5) leading shape: every window is computed on its own
    monkeypatch.setattr(M, "_PAIR_BLOCK_ELEMENTS", 2 * 40 * 6)
    x = rng.standard_normal((3, 5, 40, 6))
    y = x + rng.standard_normal(x.shape)
    y[1, 2, :, 4] = 1.5  # a constant channel inside a block
    r, d = M.pearson(x, y), M.lsd(x, y)
    assert r.shape == d.shape == (3, 5, 6) and r[1, 2, 4] == 0.0
    for i in range(3):
        for j in range(5):
            np.testing.assert_array_equal(r[i, j], M.pearson(x[i, j], y[i, j]))
            np.testing.assert_array_equal(d[i, j], M.lsd(x[i, j], y[i, j]))


def test_cycles_per_repeat_counts_the_cycles_a_site_takes_to_repeat():
    fs = 100.0
    t = np.arange(400) / fs
    tone = np.sin(2 * np.pi * 6.0 * t)
    # the same 6 Hz activity, every other cycle larger (repeats after 2 cycles), or every third
    # cycle larger (repeats after 3): the AF-band DF stays 6 Hz, the rhythm-blind DF drops to
    # a sub-harmonic, 3 Hz or 2 Hz
    every_2nd = tone * (1 + 0.6 * np.sign(np.sin(np.pi * 6.0 * t)))
    every_3rd = tone * (1 + 0.8 * (np.floor(6.0 * t) % 3 == 0))
    x = np.stack([tone, every_2nd, every_3rd, np.zeros_like(t)], axis=-1)
    got = M.cycles_per_repeat(x, fs)
    assert got[:3] == pytest.approx([1.0, 2.0, 3.0], abs=0.02)
    assert np.isnan(got[3])  # a constant channel has no DF
    assert M.cycles_per_repeat(x[None].repeat(2, axis=0), fs).shape == (2, 4)
