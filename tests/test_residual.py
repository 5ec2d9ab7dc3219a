"""The residual network on the linear correction of Tikhonov (egmlib.augmentation.residual): it
starts as the linear correction, keeps it when it cannot do better, learns a known non-linear
map, gives the same numbers for the same seed, moves by rounding only between float32 and
float64, keeps each rhythm's best epoch apart (a rhythm the network cannot help stays at the
linear correction), routes windows by their spectrum, and a run on the small data set of
test_augment is scored like 05 and like the linear correction it starts from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_augment import fake_dataset

from egmlib.augmentation import augment, linear, residual
from egmlib.augmentation import baselines as bl
from egmlib.core import metrics

SMALL = residual.ResidualConfig(hidden=16, kernel=3, batch=4, max_epochs=30, patience=30,
                                lr=1e-2)


def _identity(c: int) -> linear.LinearCorrection:
    return linear.LinearCorrection(weight=np.eye(c), mean_in=np.zeros(c), mean_out=np.zeros(c),
                                   alpha=1e-9, weighting="none", val_corr={})


def _signals(rng: np.random.Generator, n: int, t: int = 48, c: int = 5) -> np.ndarray:
    """Smooth random windows (n, t, c): cumulative sums, centred per window and site."""
    x = np.cumsum(rng.standard_normal((n, t, c)), axis=1)
    x -= x.mean(axis=1, keepdims=True)
    return (x / x.std()).astype(np.float32)


def test_bad_settings_are_refused_naming_the_parameter():
    for kw, name in (({"hidden": 0}, "hidden"), ({"kernel": 4}, "kernel"),
                     ({"lr": 0.0}, "lr"), ({"mse_weight": -1.0}, "mse_weight"),
                     ({"dtype": "bfloat16"}, "dtype"), ({"max_epochs": 2.5}, "max_epochs")):
        with pytest.raises(ValueError, match=f"^{name}: got"):
            residual.ResidualConfig(**kw)


def test_the_network_starts_as_the_identity():
    net = residual.ResidualNet(5, 8, 3)
    y = torch.randn(2, 5, 30)
    assert torch.equal(net(y), y)


def test_a_correction_that_is_already_right_is_kept():
    """The EGMs are the linear correction's output: no epoch beats epoch 0 on validation, so the
    fit returns the linear correction itself."""
    rng = np.random.default_rng(0)
    x, xv = _signals(rng, 12), _signals(rng, 4)
    fit = residual.fit_residual(_identity(5), x, x, xv, xv, SMALL, seed=0)
    assert fit.history["best_epoch"] == 0
    assert fit.history["val_corr"][0] == pytest.approx(1.0)
    np.testing.assert_array_equal(fit.apply(xv), xv.astype(np.float64))


def test_a_known_nonlinear_map_is_learnt_and_the_best_epoch_is_kept():
    """EGMs = t ** 2: a map no matrix makes (even in t, so uncorrelated with it); the network
    raises the validation correlation far above the linear correction's, the model it returns
    scores the best epoch's value, and the same seed gives the same numbers."""
    rng = np.random.default_rng(1)
    x, xv = _signals(rng, 24), _signals(rng, 8)
    e, ev = x ** 2, xv ** 2
    lin = linear.fit_correction(x, e, xv, ev, alphas=(1e-6,), weightings=("none",))
    fit = residual.fit_residual(lin, x, e, xv, ev, SMALL, seed=0)
    h = fit.history
    assert len(h["val_corr"]) == h["epochs_run"] + 1 == len(h["train_loss"]) + 1
    assert h["best_epoch"] == int(np.argmax(h["val_corr"]))
    assert h["val_corr"][h["best_epoch"]] > h["val_corr"][0] + 0.25
    assert float(metrics.pearson(ev, fit.apply(xv)).mean()) == pytest.approx(
        h["val_corr"][h["best_epoch"]], abs=1e-6)
    assert h["train_loss"][-1] < h["train_loss"][0]
    again = residual.fit_residual(lin, x, e, xv, ev, SMALL, seed=0)
    assert again.history == h
    other = residual.fit_residual(lin, x, e, xv, ev, SMALL, seed=1)
    assert other.history["val_corr"][1:] != h["val_corr"][1:]
    # float64 instead of float32: the same training up to rounding, which training grows (here
    # from about 1e-7 to at most 3e-4 in 30 epochs; the residual study measures its own)
    wide = residual.fit_residual(lin, x, e, xv, ev,
                                 residual.ResidualConfig(**{**SMALL.__dict__,
                                                            "dtype": "float64"}), seed=0)
    np.testing.assert_allclose(wide.history["val_corr"], h["val_corr"], atol=1e-3)
    with pytest.raises(ValueError, match="t_val, e_val"):
        residual.fit_residual(lin, x, e, xv[:, :, :3], ev, SMALL)
    with pytest.raises(ValueError, match="val_labels: expected 8"):
        residual.fit_residual(lin, x, e, xv, ev, SMALL, val_labels=["SR"] * 3)


def test_each_rhythm_keeps_its_own_best_epoch_and_one_the_network_cannot_help_stays_linear():
    """Training pairs of one rhythm only, EGMs = t ** 2; validation windows of that rhythm
    (same map) and of another whose EGMs are the input itself (the linear correction, the
    identity here, is already right). Learning the map lifts the first and lowers the second:
    the second rhythm keeps epoch 0 and, routed, gets exactly the linear correction; the first
    gets its own best epoch; the pooled fit is the one made without rhythms."""
    rng = np.random.default_rng(1)
    x, xv = _signals(rng, 24), _signals(rng, 8)
    ev = np.concatenate([xv[:4] ** 2, xv[4:]])
    labels = np.array(["SR"] * 4 + ["AF"] * 4)
    fit = residual.fit_residual(_identity(5), x, x ** 2, xv, ev, SMALL, seed=0,
                                val_labels=labels)
    h = fit.history
    by, best = h["val_corr_by_rhythm"], h["best_epoch_by_rhythm"]
    assert best == {r: int(np.argmax(by[r])) for r in ("SR", "AF")}
    assert best["AF"] == 0 and by["AF"][0] == pytest.approx(1.0) and min(by["AF"]) < 0.9
    assert by["SR"][best["SR"]] > by["SR"][0] + 0.25
    routed = fit.apply(xv, labels)
    np.testing.assert_array_equal(routed[4:], xv[4:].astype(np.float64))
    assert float(metrics.pearson(ev[:4], routed[:4]).mean()) == pytest.approx(
        by["SR"][best["SR"]], abs=1e-6)
    pooled = residual.fit_residual(_identity(5), x, x ** 2, xv, ev, SMALL, seed=0)
    assert pooled.history["val_corr"] == h["val_corr"]
    np.testing.assert_array_equal(pooled.apply(xv), fit.apply(xv))
    with pytest.raises(ValueError, match="rhythms: expected 8 names"):
        fit.apply(xv, ["SR"] * 8 + ["AF"])
    with pytest.raises(ValueError, match="rhythms: expected 8 names"):
        fit.apply(xv, ["VT"] * 8)


def _beats(rng: np.random.Generator, n: int, hz: tuple[float, float], fs: float = 100.0,
           t: int = 400, c: int = 4) -> np.ndarray:
    """Windows (n, t, c) of a sinusoid at a frequency drawn from ``hz`` with a random phase per
    site, plus white noise at a tenth of its amplitude."""
    time = np.arange(t) / fs
    f = rng.uniform(*hz, size=(n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, c))
    return np.sin(2 * np.pi * f * time[None, :, None] + phase) + 0.1 * rng.standard_normal(
        (n, t, c))


def test_router_features_are_the_share_of_power_in_the_af_band():
    """A 1 Hz sinusoid puts its power below 3 Hz (share about 0), a 6 Hz one between 3 and
    12 Hz (about 1); equal amplitudes of both give about a half; the amplitude does not
    enter; a flat window has share 0."""
    fs, time = 100.0, np.arange(400) / 100.0
    one, six = np.sin(2 * np.pi * 1.0 * time), np.sin(2 * np.pi * 6.0 * time)
    y = np.stack([one, six, one + six, 50 * six, np.zeros_like(one)])[:, :, None]
    share = residual.router_features(y, fs)
    assert share.shape == (5, 1)
    np.testing.assert_allclose(share[:, 0], [0.0, 1.0, 0.5, 1.0, 0.0], atol=1e-3)
    with pytest.raises(ValueError, match="fs: got 20"):
        residual.router_features(y, 20.0)


def test_the_router_calls_held_out_windows_by_their_spectrum():
    """Fitted on slow (0.8-1.5 Hz) 'SR' and fast (4-9 Hz) 'AF' windows, it calls new ones of
    each right; with one rhythm it calls every window that rhythm; unknown names are
    refused."""
    rng = np.random.default_rng(0)
    y = np.concatenate([_beats(rng, 20, (0.8, 1.5)), _beats(rng, 20, (4.0, 9.0))])
    labels = ["SR"] * 20 + ["AF"] * 20
    router = residual.RhythmRouter.fit(y, labels, 100.0)
    new = np.concatenate([_beats(rng, 30, (0.8, 1.5)), _beats(rng, 30, (4.0, 9.0))])
    assert list(router.predict(new)) == ["SR"] * 30 + ["AF"] * 30
    alone = residual.RhythmRouter.fit(y[:20], labels[:20], 100.0)
    assert list(alone.predict(new)) == ["SR"] * 60
    with pytest.raises(ValueError, match="labels: got"):
        residual.RhythmRouter.fit(y, ["SR"] * 20 + ["VT"] * 20, 100.0)
    with pytest.raises(ValueError, match="labels: expected 40"):
        residual.RhythmRouter.fit(y, labels[:5], 100.0)


def test_a_run_on_the_small_data_set_is_scored_like_05_and_the_linear_fit(tmp_path):
    ds = fake_dataset(tmp_path)
    ds.manifest["files"] = {"egm.npy": {"sha256": "a"}}
    base = bl.baselines(ds, 20.0, augment.EVAL_NOISE_SEED, "test", methods=("val",))
    cfg = residual.ResidualConfig(hidden=4, kernel=3, max_epochs=3)
    run = residual.run_residual(ds, 0, 0, 20.0, base, cfg)
    lin = linear.run_correction(ds, 0, 0, 20.0, base)
    assert run["linear"] == lin["test"]          # the linear correction it starts from
    assert run["val_corr_linear"] == pytest.approx(lin["val_corr_chosen"], abs=1e-6)
    assert set(run["test"]) == {"SR", "AF", "all", "per_simulation"}
    assert run["n_train_pairs"] == lin["n_train_pairs"] and run["config"]["max_epochs"] == 3
    assert run["val_corr_chosen"] == max(run["history"]["val_corr"])
    for when in ("linear", "chosen"):  # each rhythm's validation windows apart, pooled between
        by = run[f"val_by_rhythm_{when}"]
        assert set(by) == {"SR", "AF"}
        assert min(by.values()) - 1e-12 <= run[f"val_corr_{when}"] <= max(by.values()) + 1e-12
    assert len(run["history"]["val_corr_by_rhythm"]["AF"]) == len(run["history"]["val_corr"])
    if run["history"]["best_epoch"] == 0:        # the network kept: the linear scores
        assert run["test"] == run["linear"]
    assert set(run["routed"]) == set(run["test"]) and set(run["val_by_rhythm_routed"]) == {
        "SR", "AF"}
    # the router: fitted on the linear correction's output of the real training pairs only,
    # scored against the validation and test rhythms
    x = linear.correction_inputs(ds, 0, 0, 20.0, base)
    fitted = linear.fit_correction(x.t_train, x.e_train, x.t_val, x.e_val)
    router = residual.RhythmRouter.fit(fitted.apply(x.t_train), x.train_labels, x.fs)
    assert run["router"] == {
        "n_train": len(augment.real_subset(ds, 0, 0)) * len(augment.train_torsos(ds)),
        "val_accuracy": float(np.mean(router.predict(fitted.apply(x.t_val)) == x.val_labels)),
        "test_accuracy": float(np.mean(router.predict(fitted.apply(x.t_test))
                                       == np.asarray(["SR", "AF"])[x.labels]))}
    if set(run["history"]["best_epoch_by_rhythm"].values()) == {0}:  # routed: linear everywhere
        assert run["routed"] == run["linear"]
    assert residual.run_residual(ds, 0, 0, 20.0, base, cfg) == run
    check = residual.rounding_check(ds, run, 20.0, base)
    assert check["dtype"] == "float64" and check["max_abs_test_corr"] < 1e-4
    with pytest.raises(ValueError, match="n_real_sims"):
        residual.run_residual(ds, 0, 99, 20.0, base, cfg)
