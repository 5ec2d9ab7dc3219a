"""The learned linear correction of Tikhonov (egmlib.augmentation.linear): a known map recovered,
the weighting and penalty chosen on validation only, and a run on the small data set of
test_augment scored like 05."""

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
    assert set(run["test"]) == {"SR", "AF", "all"}
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
