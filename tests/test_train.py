"""VAE training (train_vae on the shared loop), normaliser, checkpoints, determinism, process
state, and the speed helpers of benchmarks/train.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.train import matmul_gflops, training_flops, training_throughput
from egmlib.core.process import seed_everything
from egmlib.generators import train as train_module
from egmlib.generators.models import ConvVAE, VAEConfig
from egmlib.generators.train import (
    HISTORY_KEYS,
    Normalizer,
    Recordings,
    TrainingDivergedError,
    load_checkpoint,
    resolve_precision,
    save_checkpoint,
    train_vae,
)

HAS_BF16 = train_module._cpu_has_bf16()
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this processor has no bfloat16 arithmetic")

T, C = 100, 32


def smooth_windows(n: int, T: int = T, C: int = C, seed: int = 0,
                   amplitude: float = 1.0) -> np.ndarray:
    """Smooth multichannel test signals: travelling sinusoids (data units: ``amplitude``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[None, :, None] / 100.0
    c = np.arange(C)[None, None, :]
    f = rng.uniform(1.0, 3.0, (n, 1, 1))
    ph = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    x = 0.6 * np.sin(2 * np.pi * f * t + ph + 0.15 * c) + 0.3 * np.cos(2 * np.pi * 0.7 * t
                                                                         + 0.1 * c)
    return (amplitude * x).astype(np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)
    return float(r.mean())


def small_model(seed: int = 0, **kw) -> ConvVAE:
    seed_everything(seed)
    return ConvVAE(VAEConfig(T=T, C=C, latent=8, **kw))


def test_normalizer_fit_transform_inverse():
    X = smooth_windows(6, amplitude=5.0)
    X[0, 0, 0] = 500.0                      # one outlier does not set the scale
    norm = Normalizer().fit(X)
    assert 3.0 < norm.scale < 6.0
    Z = norm.transform(X)
    assert Z.dtype == np.float32 and Z.min() >= -1 and Z.max() <= 1
    inside = np.abs(X) < norm.scale
    assert np.allclose(norm.inverse(Z)[inside], X[inside], rtol=1e-6)
    again = Normalizer.from_dict(norm.to_dict())
    assert again.scale == norm.scale and np.array_equal(again.transform(X), Z)
    with pytest.raises(RuntimeError, match="fit"):
        Normalizer().transform(X)
    with pytest.raises(ValueError, match="X:"):
        Normalizer().fit(X[0])


@pytest.mark.parametrize("precision,layout", [
    ("float32", "vector"), pytest.param("bfloat16", "vector", marks=needs_bf16),
    ("float32", "sequence")])
def test_overfit_tiny_set(precision, layout):
    """A few smooth windows are reconstructed with correlation > 0.9 after 80 steps, in float32
    and in mixed bfloat16 precision (evaluated here in float32), and with a latent sequence
    (:class:`egmlib.generators.models.VAEConfig`, ``latent_layout``)."""
    X = smooth_windows(8)
    model = small_model(latent_layout=layout)
    hist = train_vae(model, X, None, X, None, epochs=80, batch_size=8, lr=5e-3,
                     beta_max=1e-4, warmup_epochs=0, patience=80, lr_decay=1.0,
                     progress=False, precision=precision)
    assert hist["settings"]["precision"] == precision
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float32 master weights
    with torch.no_grad():
        x_hat = model(torch.from_numpy(X))[0].numpy()
    assert pearson(X, x_hat) > 0.9
    assert hist["val"]["pearson"][hist["best_epoch"]] > 0.9
    for k in HISTORY_KEYS:
        assert len(hist["train"][k]) == hist["epochs_run"] == len(hist["val"][k])
        assert np.all(np.isfinite(hist["train"][k]))


def test_schedule_early_stopping_on_validation_and_checkpoint(tmp_path):
    X = smooth_windows(12, seed=1, amplitude=3.0)
    Xv = smooth_windows(4, seed=2, amplitude=3.0)
    norm = Normalizer().fit(X)
    model = small_model()
    ckpt = tmp_path / "vae.pt"
    hist = train_vae(model, X, None, Xv, None, epochs=6, batch_size=4, lr=1e-3, beta_max=0.01,
                     warmup_epochs=4, patience=2, checkpoint_path=ckpt, progress=False,
                     normalizer=norm, extra={"params": {"profile": "smoke"}, "seed": 0})
    assert hist["beta"][:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert hist["lr"][:3] == pytest.approx([1e-3, 0.95e-3, 0.95**2 * 1e-3])
    monitor = hist["val"]["monitor"]
    assert hist["best_epoch"] == int(np.argmin(monitor))   # the validation loss, not training
    assert hist["best_val"] == pytest.approx(min(monitor))
    # monitor = validation loss at beta_max
    v = hist["val"]
    assert monitor[0] == pytest.approx(v["total"][0] - v["kl"][0] + 0.01 * v["kl_raw"][0])

    # round trip: identical outputs
    loaded, norm2, meta = load_checkpoint(ckpt)
    assert norm2.scale == norm.scale
    assert meta["provenance"]["params"] == {"profile": "smoke"}
    assert meta["history"]["epochs_run"] == hist["epochs_run"]
    x = torch.from_numpy(norm.transform(Xv))
    model.eval()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for u, w in zip(a, b):
        assert torch.equal(u, w)

    # a non-finite loss stops with a clear error and leaves the last good checkpoint alone
    before = ckpt.read_bytes()
    bad = X.copy()
    bad[:] = np.nan
    with pytest.raises(TrainingDivergedError, match="non-finite loss"):
        train_vae(model, bad, None, Xv, None, epochs=2, batch_size=4, lr=1e-3,
                  checkpoint_path=ckpt, progress=False)
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("precision", ["float32", pytest.param("bfloat16", marks=needs_bf16)])
def test_same_seed_same_weights(precision):
    X = smooth_windows(8, seed=3)
    Xv = smooth_windows(4, seed=4)
    states = []
    for _ in range(2):
        model = small_model(seed=7, n_classes=2)
        y = np.array([0, 1] * 4)
        train_vae(model, X, y, Xv, np.array([0, 1, 0, 1]), epochs=2, batch_size=4, seed=5,
                  progress=False, precision=precision)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


@needs_bf16
def test_bfloat16_changes_the_step_but_not_its_scale():
    """Mixed precision is a different computation (not silently float32) with the same loss to
    within bfloat16's 8-bit mantissa: one step's loss parts agree to 2%."""
    X = torch.from_numpy(smooth_windows(4, seed=2))
    model = small_model(seed=1).eval()
    with torch.no_grad():
        a = train_module._step_loss(model, X, None, 1e-3, None, "float32")
        b = train_module._step_loss(model, X, None, 1e-3, None, "bfloat16")
    assert a["total"].item() != b["total"].item()
    for k in ("total", "mse", "corr"):
        assert b[k].item() == pytest.approx(a[k].item(), rel=0.02), k


def test_resolve_precision(monkeypatch):
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") == ("bfloat16" if HAS_BF16 else "float32")
    with pytest.raises(ValueError, match="precision: got 'half'; allowed: auto, float32"):
        resolve_precision("half")
    monkeypatch.setattr(train_module, "_cpu_has_bf16", lambda: False)
    assert resolve_precision("auto") == "float32"
    with pytest.raises(ValueError, match="precision: 'bfloat16' asked but cpu has no bfloat16"):
        resolve_precision("bfloat16")
    X = smooth_windows(4)
    with pytest.raises(ValueError, match="precision"):  # before any training
        train_vae(small_model(), X, None, X, None, epochs=1, progress=False,
                  precision="bfloat16")


def test_save_checkpoint_atomic_and_bad_inputs(tmp_path):
    model = small_model()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, None, {}, {"note": "x"})
    _, norm, meta = load_checkpoint(path)
    assert norm is None and meta["extra"] == {"note": "x"}
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]   # no temporary file left
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")

    X = smooth_windows(4)
    with pytest.raises(ValueError, match="X_train: expected"):
        train_vae(model, X[:, :50], None, X, None, epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_vae(model, X, None, X, None, epochs=0, progress=False)
    with pytest.raises(ValueError, match="y_train: VAE-C needs labels"):
        train_vae(small_model(n_classes=2), X, None, X, None, epochs=1, progress=False)
    with pytest.raises(ValueError, match="y_val: unknown class label 3"):
        train_vae(small_model(n_classes=2), X, np.zeros(4, int), X, np.array([0, 1, 3, 0]),
                  epochs=1, progress=False)
    with pytest.raises(ValueError, match="normalizer"):
        train_vae(model, X, None, X, None, epochs=1, progress=False, normalizer=Normalizer())


def test_training_throughput_runs():
    cfg = VAEConfig(T=T, C=C, latent=8)
    for variant in ("eager", "optimized", *(("bfloat16",) if HAS_BF16 else ())):
        r = training_throughput(cfg, batch_size=4, n_batches=1, variant=variant)
        assert r["windows_per_s"] > 0 and r["variant"] == variant
    with pytest.raises(ValueError, match="variant"):
        training_throughput(cfg, variant="fast")


def test_spec_avg_weight_reaches_the_history_and_the_loss_plot():
    from egmlib.evaluation.plots import LOSS_PART_TITLES as T
    from egmlib.evaluation.plots import loss_curves
    from egmlib.generators.models import LossWeights

    X, Xv = smooth_windows(4, seed=5), smooth_windows(2, seed=6)
    titles = {}
    for w in (0.0, 0.5):
        hist = train_vae(small_model(), X, None, Xv, None, epochs=1, batch_size=4,
                         progress=False, weights=LossWeights(spec_avg=w))
        assert (hist["train"]["spec_avg"][0] > 0) == (w > 0)
        fig = loss_curves(hist)
        titles[w] = [ax.get_title(loc="left") for ax in fig.axes]
    assert T["spec_avg"] not in titles[0.0] and T["spec_avg"] in titles[0.5]
    assert titles[0.0][:3] == [T["total"], T["mse"], T["deriv_l1"]]


def test_training_flops_counts_the_first_convolution_by_hand():
    cfg = VAEConfig(T=T, C=C, latent=8)
    one, two = training_flops(cfg), training_flops(cfg, batch_size=2)
    assert one["flops_per_window"] == pytest.approx(two["flops_per_window"])
    assert one["flops_per_window"] == pytest.approx(sum(one["by_op"].values()))
    # by hand: a convolution's forward is 2 * outputs * (inputs per output); its backward
    # computes the weight gradient (as much again) and, except for the first layer, which
    # needs no gradient of its input, the input gradient (as much again)
    model = ConvVAE(cfg)
    x = torch.zeros(1, 1, *cfg.padded_shape)
    by_module = one["by_module"]
    for i, factor in ((0, 2), (2, 3)):
        conv = model.encoder_conv[i]
        x_out = conv(x)
        forward = 2 * x_out.numel() * conv.in_channels * math.prod(conv.kernel_size)
        assert by_module[f"ConvVAE.encoder_conv.{i}"] == factor * forward
        x = model.encoder_conv[i + 1](x_out)
    assert matmul_gflops(n=64, repeats=2, threads=1) > 0


def _process_state() -> tuple:
    return (torch.get_rng_state(), torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            torch.get_num_threads())


def test_train_vae_leaves_process_state_and_depends_only_on_its_seed(monkeypatch):
    """train_vae seeds, switches deterministic kernels on and sets threads for the call only:
    afterwards the global RNG, the flags and the thread count are as before, and the weights
    do not depend on what the caller drew from the global generator before."""
    X, Xv = smooth_windows(8, seed=3), smooth_windows(4, seed=4)
    monkeypatch.setenv("EGMLIB_THREADS", "2")
    before_flags = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled(),
                    torch.get_num_threads(), torch.backends.cudnn.deterministic,
                    torch.backends.cudnn.benchmark)
    states = []
    try:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(1)
        for draws in (0, 5):
            model = ConvVAE(VAEConfig(T=T, C=C, latent=8, n_classes=2))
            model.load_state_dict(small_model(seed=7, n_classes=2).state_dict())
            torch.use_deterministic_algorithms(False)
            # a caller's own cuDNN flags, set here rather than left by earlier tests
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            torch.manual_seed(99)
            torch.rand(draws)
            before = _process_state()
            train_vae(model, X, np.array([0, 1] * 4), Xv, np.array([0, 1, 0, 1]), epochs=2,
                      batch_size=4, seed=5, progress=False)
            after = _process_state()
            assert torch.equal(after[0], before[0])
            assert after[1:] == before[1:] == (False, True, False, 1)
            states.append(model.state_dict())
    finally:
        torch.use_deterministic_algorithms(before_flags[0], warn_only=before_flags[1])
        torch.set_num_threads(before_flags[2])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before_flags[3:]
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_divergence_carries_the_history_of_the_epochs_before(monkeypatch, tmp_path):
    from egmlib.generators import train as train_mod

    X = smooth_windows(8, seed=3)
    calls = {"n": 0}
    real = train_mod._step_loss

    def poisoned(model, xb, yb, beta, weights, precision):  # NaN from epoch 2's first batch
        parts = real(model, xb, yb, beta, weights, precision)
        calls["n"] += 1
        if model.training and calls["n"] > 3:
            parts = {**parts, "total": parts["total"] * float("nan")}
        return parts

    monkeypatch.setattr(train_mod, "_step_loss", poisoned)
    model = small_model()
    ckpt = tmp_path / "vae.pt"
    with pytest.raises(TrainingDivergedError, match="at epoch 1, batch 0") as ei:
        train_vae(model, X, None, X[:4], None, epochs=3, batch_size=4, progress=False,
                  checkpoint_path=ckpt)
    h = ei.value.history
    assert h["epochs_run"] == 1 and h["best_epoch"] == 0 and len(h["train"]["total"]) == 1
    assert h["windows_per_s"] is None
    # the model is back at epoch 0's weights: those of the last good checkpoint
    saved, _, meta = load_checkpoint(ckpt, optimized=True)
    assert meta["history"]["epochs_run"] == 1
    for k, v in saved.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def _recorded(n_sims: int = 2, hop: int = 25, n_windows: int = 4, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Windows of ``T`` samples cut every ``hop`` samples from ``n_sims`` random recordings:
    (windows, their simulation, their first sample, the recordings)."""
    rng = np.random.default_rng(seed)
    recs = [rng.normal(size=(T + hop * (n_windows - 1), C)).astype(np.float32)
            for _ in range(n_sims)]
    x, sims, starts = [], [], []
    for s, rec in enumerate(recs):
        for w in range(n_windows):
            x.append(rec[w * hop:w * hop + T])
            sims.append(10 + s)
            starts.append(1000 * s + w * hop)  # each recording on its own clock
    return np.stack(x), np.array(sims), np.array(starts), recs


def test_recordings_are_rebuilt_exactly_and_cut_at_every_offset():
    x, sims, starts, recs = _recorded()
    order = np.random.default_rng(1).permutation(len(x))  # the windows in any order
    r = Recordings.from_windows(x[order], sims[order], starts[order])
    assert r.T == T and len(r.signals) == 2
    for k, rec in enumerate(recs):
        np.testing.assert_array_equal(r.signals[k], rec)
    np.testing.assert_array_equal(r.owner, (sims[order] - 10))
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(60):
        cut = r.cut(rng)
        assert cut.shape == x.shape
        for i, w in enumerate(cut):  # every window is a slice of its own simulation's recording
            rec = recs[r.owner[i]]
            hits = [o for o in range(len(rec) - T + 1) if np.array_equal(rec[o:o + T], w)]
            assert len(hits) == 1
            offsets.add(hits[0])
    # every start from 0 to the last possible one is drawn, not only multiples of the hop
    assert offsets == set(range(len(recs[0]) - T + 1))


def test_recordings_refuse_windows_that_are_not_one_recording():
    x, sims, starts, _ = _recorded()
    bad = x.copy()
    bad[1, 0, 0] += 1.0  # window 1 disagrees with window 0 where they overlap
    with pytest.raises(ValueError, match="simulation 10 disagree"):
        Recordings.from_windows(bad, sims, starts)
    gap = starts.copy()
    gap[3] += T  # the last window of simulation 10 starts after the recording ends
    with pytest.raises(ValueError, match="simulation 10 leave a gap"):
        Recordings.from_windows(x, sims, gap)
    with pytest.raises(ValueError, match="start: expected integer"):
        Recordings.from_windows(x, sims, starts.astype(float))


def test_train_vae_with_recut_windows_is_seeded_and_keeps_the_batch_order():
    x, sims, starts, _ = _recorded(hop=10)
    xv = smooth_windows(2, seed=6)
    rec = Recordings.from_windows(x, sims, starts)

    def run(recut):
        return train_vae(small_model(), x, None, xv, None, epochs=2, batch_size=4,
                         progress=False, recut=recut)

    a, b, plain = run(rec), run(rec), run(None)
    assert a["train"]["total"] == b["train"]["total"]  # same seed, same offsets
    assert a["settings"]["recut"] is True and plain["settings"]["recut"] is False
    assert a["train"]["total"] != plain["train"]["total"]  # it trained on other windows
    with pytest.raises(ValueError, match="recut: recordings of 8 windows"):
        train_vae(small_model(), x[:4], None, xv, None, epochs=1, progress=False, recut=rec)
