"""The learned linear correction of Tikhonov (egmlib.augmentation.linear): a known map recovered,
the weighting and penalty chosen on validation only, a run on the small data set of test_augment
scored like 05, and the unseen real windows it can be augmented with
(egmlib.augmentation.augment.unseen_windows)."""

from __future__ import annotations

import numpy as np
import pytest
from test_augment import fake_dataset

from egmlib.augmentation import augment, linear
from egmlib.augmentation import baselines as bl
from egmlib.core import metrics
from egmlib.data import noisy_bspm
from egmlib.physics.forward import svd


def _pairs(rng, n, t=40, c=6, w=None, noise=0.0):
    x = rng.standard_normal((n, t, c))
    w = rng.standard_normal((c, c)) if w is None else w
    y = x @ w + 0.3 + noise * rng.standard_normal((n, t, c))
    return x.astype(np.float32), y.astype(np.float32), w


def test_a_known_linear_map_is_recovered():
    rng = np.random.default_rng(0)
    x, y, w = _pairs(rng, 20)
    xv, yv, _ = _pairs(rng, 5, w=w)
    fit = linear.fit_correction(x, y, xv, yv, alphas=(1e-9, 1e-3))
    np.testing.assert_allclose(fit.weight, w, atol=1e-4)
    np.testing.assert_allclose(fit.apply(xv), yv, atol=1e-4)
    assert fit.alpha == 1e-9                   # the smaller penalty fits exact data better
    assert set(fit.val_corr) == set(linear.WEIGHTINGS)
    assert all(len(v) == 2 for v in fit.val_corr.values())


def test_window_weights_give_every_window_the_same_say():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 50, 4))
    x[1] *= 10.0                               # a loud window (AF-like)
    x[2] = 0.0                                 # a flat one
    w = linear.window_weights(x)
    assert w[2] == 0 and w.mean() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(x[1].var(0).mean() / x[0].var(0).mean(), rel=1e-9)
    with pytest.raises(ValueError, match="flat"):
        linear.window_weights(np.zeros((2, 5, 3)))


def test_the_choice_reads_the_validation_pairs_only():
    """Two training sets that differ only in the loud windows: the weighting that ignores loudness
    must win where the validation windows are quiet, and the choice follows the validation
    pairs, whatever the training fit says."""
    rng = np.random.default_rng(2)
    c = 5
    w_quiet, w_loud = rng.standard_normal((c, c)), rng.standard_normal((c, c))
    xq, yq, _ = _pairs(rng, 30, c=c, w=w_quiet)
    xl, yl, _ = _pairs(rng, 10, c=c, w=w_loud)
    x = np.concatenate([xq, 30.0 * xl])        # loud windows follow another map
    y = np.concatenate([yq, 30.0 * (yl - 0.3) + 0.3])
    xv, yv, _ = _pairs(rng, 8, c=c, w=w_quiet)  # validation: quiet windows of the first map
    fit = linear.fit_correction(x, y, xv, yv, alphas=(1e-9,))
    assert fit.weighting == "window"
    assert fit.val_corr["window"][0] > fit.val_corr["none"][0]
    only_none = linear.fit_correction(x, y, xv, yv, alphas=(1e-9,), weightings=("none",))
    assert only_none.weighting == "none"


@pytest.mark.parametrize(("kw", "message"), [
    ({"alphas": ()}, "alphas"), ({"alphas": (-1.0,)}, "alphas"),
    ({"weightings": ("window", "rms")}, "weightings"),
])
def test_bad_settings_stop_before_any_fit(kw, message):
    rng = np.random.default_rng(3)
    x, y, _ = _pairs(rng, 4)
    with pytest.raises(ValueError, match=message):
        linear.fit_correction(x, y, x, y, **kw)
    with pytest.raises(ValueError, match="t_val"):
        linear.fit_correction(x, y, x[..., :3], y)


def test_a_run_on_the_small_data_set_is_scored_like_05(tmp_path):
    ds = fake_dataset(tmp_path)
    ds.manifest["files"] = {"egm.npy": {"sha256": "a"}}
    base = bl.baselines(ds, 20.0, augment.EVAL_NOISE_SEED, "test", methods=("val",))
    run = linear.run_correction(ds, 0, 0, 20.0, base, alphas=(1e-9, 1e-3))
    assert run["rel_lambda"] == base["lambdas"]["val"]
    tset = augment.build_training_set(ds, None, 0, 20.0, 0, 0)
    assert run["n_train_pairs"] == len(tset.egm_train)
    assert set(run["test"]) == {"SR", "AF", "all", "per_simulation"} and run["k"] == 0
    assert run["val_corr_chosen"] == max(max(v) for v in run["val_corr"].values())
    # the test scores are those of the fitted map on 05's test inputs, by hand
    t_tr = linear.tikhonov_inputs(ds, tset.bspm_train, list(tset.torsos), run["rel_lambda"])
    t_va = linear.tikhonov_inputs(ds, tset.bspm_val, list(tset.torsos), run["rel_lambda"])
    fit = linear.fit_correction(t_tr, tset.egm_train, t_va, tset.egm_val, (1e-9, 1e-3))
    idx = np.flatnonzero(ds.part("test"))
    torso = int(augment.test_torsos(ds)[0])
    b = noisy_bspm(ds, idx, torso, 20.0, augment.EVAL_NOISE_SEED)
    rec = fit.apply(bl.relative_tikhonov(svd(ds.transfer[torso]), b, run["rel_lambda"]))
    corr = metrics.pearson(np.asarray(ds.egm[idx], float), rec).mean()
    assert run["test"]["all"]["corr_mean"] == pytest.approx(corr, rel=1e-9)
    # the same seed gives the same numbers
    assert linear.run_correction(ds, 0, 0, 20.0, base, alphas=(1e-9, 1e-3)) == run
    with pytest.raises(ValueError, match="n_real_sims"):
        linear.run_correction(ds, 0, 99, 20.0, base)


def test_tikhonov_inputs_need_whole_torso_blocks(tmp_path):
    ds = fake_dataset(tmp_path)
    with pytest.raises(ValueError, match="multiple of 2 torsos"):
        linear.tikhonov_inputs(ds, np.zeros((3, 10, 64)), [0, 1], 0.1)


def _rows_of(ds, windows):
    """The data set row of each window (exact match)."""
    egm = np.asarray(ds.egm)
    return [int(np.flatnonzero((egm == w).all(axis=(1, 2)))[0]) for w in windows]


def test_unseen_windows_come_from_simulations_the_run_does_not_see(tmp_path):
    ds = fake_dataset(tmp_path, n_sims=9)
    sims, labels = np.asarray(ds.sim_id), np.asarray(ds.label)
    train = set(np.flatnonzero(ds.part("train")).tolist())
    for seed in (0, 1):
        order = augment.simulation_order(ds, seed)
        seen = set(sims[augment.real_subset(ds, 1, seed)].tolist())
        assert seen == {int(order["SR"][0]), int(order["AF"][0])}
        n_unseen = len(order["SR"]) - 1
        w = augment.unseen_windows(ds, 1, seed, 2 * n_unseen)
        rows = _rows_of(ds, w)
        assert w.dtype == np.float32 and set(rows) <= train and len(set(rows)) == len(rows)
        assert not seen & set(sims[rows].tolist()) and set(labels[rows].tolist()) == {0}
        # one window per unseen simulation, in the order a larger arm would add them, then again
        assert sims[rows][:n_unseen].tolist() == order["SR"][1:].tolist()
        assert sims[rows][n_unseen:].tolist() == order["SR"][1:].tolist()
        both = augment.unseen_windows(ds, 1, seed, 6, ("SR", "AF"))
        assert labels[_rows_of(ds, both)].tolist() == [0, 1, 0, 1, 0, 1]
        np.testing.assert_array_equal(both, augment.unseen_windows(ds, 1, seed, 6, ("SR", "AF")))
    with pytest.raises(ValueError, match="n_real_sims: got 0"):
        augment.unseen_windows(ds, 0, 0, 2)
    with pytest.raises(ValueError, match="k: got 99; allowed: at most"):
        augment.unseen_windows(ds, 1, 0, 99)
    with pytest.raises(ValueError, match="rhythms"):
        augment.unseen_windows(ds, 1, 0, 2, ("VT",))


def test_every_training_pair_is_inverted_on_its_own_torso(tmp_path):
    """Real pairs come torso by torso, synthetic ones window by window over the torsos: each
    Tikhonov estimate must use its own pair's torso (noise-free BSPMs, where a wrong torso
    shows)."""
    ds = fake_dataset(tmp_path, n_sims=9)
    w = augment.unseen_windows(ds, 1, 0, 4, ("SR", "AF"))
    tset = augment.build_training_set(ds, w, 4, 300.0, 0, 1)
    torsos = [int(t) for t in tset.torsos]
    t_in, e = linear.training_inputs(ds, tset, 0.1)
    assert len(t_in) == len(e) == tset.n_real + tset.n_synth and tset.n_synth == 4 * len(torsos)
    np.testing.assert_array_equal(e, tset.egm_train)
    per = tset.n_real // len(torsos)
    pair_torso = [torsos[i // per] for i in range(tset.n_real)] + [
        torsos[i % len(torsos)] for i in range(tset.n_synth)]
    for i in (0, per, tset.n_real - 1, tset.n_real, tset.n_real + 1, len(e) - 1):
        want = bl.relative_tikhonov(svd(ds.transfer[pair_torso[i]]), tset.bspm_train[i:i + 1],
                                    0.1)
        np.testing.assert_allclose(t_in[i:i + 1], want, rtol=1e-5, atol=1e-7, err_msg=str(i))
        wrong = bl.relative_tikhonov(svd(ds.transfer[pair_torso[i] ^ 1]),
                                     tset.bspm_train[i:i + 1], 0.1)
        assert not np.allclose(t_in[i:i + 1], wrong, rtol=1e-3), i


def test_unseen_windows_as_synthetic_or_as_real_pairs(tmp_path):
    ds = fake_dataset(tmp_path, n_sims=9)
    base = bl.baselines(ds, 20.0, augment.EVAL_NOISE_SEED, "test", methods=("val",))
    k0 = linear.run_correction(ds, 0, 1, 20.0, base, alphas=(1e-9,))
    rows = augment.unseen_indices(ds, 1, 0, 4, ("SR", "AF"))
    n_torsos = len(augment.train_torsos(ds))
    synth = linear.run_correction(ds, 0, 1, 20.0, base, alphas=(1e-9,),
                                  synth_egm=np.asarray(ds.egm[rows]), k=4)
    assert synth["k"] == 4 and synth["n_extra_pairs"] == 0
    assert synth["n_train_pairs"] == k0["n_train_pairs"] + 4 * n_torsos
    real = linear.run_correction(ds, 0, 1, 20.0, base, alphas=(1e-9,), extra_rows=rows)
    assert real["k"] == 0 and real["n_extra_pairs"] == 4 * n_torsos
    assert real["n_train_pairs"] == synth["n_train_pairs"]
    # the real pairs carry the windows' own BSPMs with noise of the seed's own stream
    b, e = augment.real_pairs(ds, rows, 20.0, 0)
    np.testing.assert_array_equal(e[:4], np.asarray(ds.egm[rows]))
    clean = np.asarray(ds.bspm[rows, int(augment.train_torsos(ds)[0])])
    assert 0.8 < metrics.pearson(clean, b[:4]).mean() < 1.0
    np.testing.assert_array_equal(b, augment.real_pairs(ds, rows, 20.0, 0)[0])
    assert real["test"]["all"]["corr_mean"] != synth["test"]["all"]["corr_mean"]
    # per simulation: their mean weighted by windows is the run's mean correlation
    ps = real["test"]["per_simulation"]
    n_test = int(ds.part("test").sum()) * len(augment.test_torsos(ds))
    assert sum(ps["n_windows"]) == n_test and len(ps["sim_id"]) == len(set(ps["sim_id"]))
    weighted = np.average(ps["corr"], weights=ps["n_windows"])
    assert weighted == pytest.approx(real["test"]["all"]["corr_mean"], abs=1e-6)
    with pytest.raises(ValueError, match="rows"):
        augment.real_pairs(ds, [], 20.0, 0)


def test_the_inputs_name_the_rhythm_of_every_real_training_pair(tmp_path):
    """Real pairs (torso by torso) and extra rows carry their windows' rhythms; synthetic pairs,
    whose rhythm the inputs are not told, carry ""."""
    ds = fake_dataset(tmp_path, n_sims=9)
    base = bl.baselines(ds, 20.0, augment.EVAL_NOISE_SEED, "test", methods=("val",))
    rows = augment.unseen_indices(ds, 1, 0, 4, ("SR", "AF"))
    x = linear.correction_inputs(ds, 0, 1, 20.0, base, synth_egm=np.asarray(ds.egm[rows]),
                                 k=3, extra_rows=rows[:2])
    tset = augment.build_training_set(ds, np.asarray(ds.egm[rows]), 3, 20.0, 0, 1)
    n_torsos = len(tset.torsos)
    names = np.asarray(["SR", "AF"])
    assert x.train_labels.shape == (len(x.e_train),)
    np.testing.assert_array_equal(x.train_labels[:tset.n_real], np.tile(
        names[np.asarray(ds.label)[tset.train_windows]], n_torsos))
    assert set(x.train_labels[tset.n_real:tset.n_real + 3 * n_torsos]) == {""}
    np.testing.assert_array_equal(x.train_labels[tset.n_real + 3 * n_torsos:],
                                  np.tile(names[np.asarray(ds.label)[rows[:2]]], n_torsos))
    assert set(x.train_labels[:tset.n_real]) == {"SR", "AF"}
