"""The dual-branch reconstruction VAE (egmlib.augmentation.recon) on tiny random data (one torch
thread)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from egmlib.augmentation.recon import (
    LOSS_KEYS,
    DualBranchVAE,
    ReconConfig,
    _evaluate,
    _std,
    _to_tensor,
    load_recon,
    predict,
    recon_loss,
    recon_loss_moments,
    save_recon,
    train_recon,
)
from egmlib.core import metrics
from egmlib.generators.train import resolve_precision

T, N_REC, N_EL = 64, 16, 64
TINY = {"channels": (8, 16, 16), "latent_dim": 16}


# One torch thread: the test machines have 2 shared cores (conftest.torch_single_thread).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def smooth_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random EGM windows (n, T, N_REC), a random transfer (N_EL, N_REC) and the
    mean-referenced BSPMs (n, T, N_EL)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 100.0
    f = rng.uniform(1.0, 4.0, (n, 1, N_REC))
    ph = rng.uniform(0, 2 * np.pi, (n, 1, N_REC))
    egm = np.sin(2 * np.pi * f * t[None, :, None] + ph) * rng.uniform(0.5, 2.0, (n, 1, N_REC))
    a = rng.standard_normal((N_EL, N_REC)) * 0.05
    a -= a.mean(axis=0)
    bspm = egm @ a.T
    bspm -= bspm.mean(axis=-1, keepdims=True)
    return egm.astype(np.float32), a, bspm.astype(np.float32)


def tiny_model(seed: int = 0, **kw) -> DualBranchVAE:
    torch.manual_seed(seed)
    return DualBranchVAE(ReconConfig(T=T, n_electrodes=N_EL, n_rec=N_REC, **{**TINY, **kw}))


@pytest.mark.parametrize("t_len", [64, 100, 37])
def test_shapes_for_any_window_length(t_len):
    cfg = ReconConfig(T=t_len, n_electrodes=N_EL, n_rec=N_REC, **TINY)
    m = DualBranchVAE(cfg).eval()
    x = torch.randn(3, t_len, N_EL)
    out = m(x)
    assert out["egm"].shape == (3, t_len, N_REC)
    assert out["bspm"].shape == (3, t_len, N_EL)
    assert out["mu"].shape == out["logvar"].shape == (3, 16)
    mu, _ = m.encode(x)
    assert torch.equal(mu, out["mu"])  # eval mode: z = mu
    assert m.decode_egm(mu).shape == (3, t_len, N_REC)
    assert m.decode_bspm(mu).shape == (3, t_len, N_EL)
    cf = m(x.transpose(1, 2).contiguous(), channels_first=True)
    assert torch.allclose(cf["egm"].transpose(1, 2), out["egm"], atol=1e-6)


def test_loss_parts_and_weights():
    cfg = ReconConfig(T=T, n_electrodes=N_EL, n_rec=N_REC, w_egm=2.0, w_bspm=0.3, beta=0.01,
                      w_corr=0.5, **TINY)
    m = DualBranchVAE(cfg).train()
    b, e = torch.randn(4, T, N_EL), torch.randn(4, T, N_REC)
    p = recon_loss(m(b), b, e, cfg)
    assert set(p) == set(LOSS_KEYS)
    want = 2.0 * p["egm"] + 0.3 * p["bspm"] + 0.01 * p["kl"] + 0.5 * p["corr_loss"]
    assert torch.allclose(p["total"], want)
    # a perfect reconstruction: zero MSE, correlation one; KL of the standard normal is zero
    perfect = {"egm": e, "bspm": b, "mu": torch.zeros(4, 16), "logvar": torch.zeros(4, 16)}
    q = recon_loss(perfect, b, e, cfg)
    assert float(q["egm"]) == 0 and float(q["bspm"]) == 0 and abs(float(q["kl"])) < 1e-7
    assert abs(float(q["corr"]) - 1.0) < 1e-4
    # the moment formula equals numpy's per-site Pearson correlation
    y = e + torch.randn_like(e)
    r = recon_loss({**perfect, "egm": y}, b, e, cfg)["corr"]
    assert abs(float(r) - metrics.pearson(e.numpy(), y.numpy()).mean()) < 1e-5


def test_moment_loss_equals_the_direct_loss_and_its_gradients():
    """recon_loss_moments (training's fast path) gives recon_loss's numbers and gradients: both
    in float32 against recon_loss in float64 (the reference without rounding)."""
    torch.manual_seed(3)
    cfg = ReconConfig(T=T, n_electrodes=N_EL, n_rec=N_REC, w_egm=1.5, w_bspm=0.4, beta=0.02,
                      w_corr=0.7, bspm_scale=1.0, egm_scale=1.0, **TINY)
    m = DualBranchVAE(cfg).eval()  # z = mean: every path sees the same latent
    m64 = copy.deepcopy(m).double()
    b = torch.randn(5, N_EL, T)
    with torch.no_grad():  # a target partly explained by the model, so correlations are not ~0
        y = m(b, True)["egm"]
        e = (y - y.mean(-1, keepdim=True)) / y.std(-1, keepdim=True) + torch.randn(5, N_REC, T)
    ref = recon_loss(m64(b.double(), True), b.double(), e.double(), cfg, channels_first=True)
    fast = recon_loss_moments(m, b, e)
    assert float(ref["corr"]) > 0.5
    for k in LOSS_KEYS:
        r, f = float(ref[k].detach()), float(fast[k].detach())
        assert abs(r - f) < 1e-5 * max(1.0, abs(r)), k
    grads = []
    for model, parts in ((m64, ref), (m, fast)):
        model.zero_grad()
        parts["total"].backward()
        grads.append(torch.cat([p.grad.flatten().double() for p in model.parameters()]))
    scale = float(grads[0].abs().max())
    assert torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-5 * scale)


@pytest.mark.parametrize("precision", [
    "float32", pytest.param("bfloat16", marks=pytest.mark.skipif(
        resolve_precision("auto") != "bfloat16", reason="no bfloat16 arithmetic here"))])
def test_overfits_a_tiny_set(precision):
    egm, _, bspm = smooth_pairs(8)
    m = tiny_model(beta=1e-4, channels=(16, 16, 32))
    h = train_recon(m, bspm, egm, bspm, egm, epochs=150, batch_size=8, lr=5e-3, seed=0,
                    patience=150, progress=False, precision=precision)
    assert h["settings"]["precision"] == precision
    rec = predict(m, bspm)
    corr = metrics.pearson(egm, rec).mean()
    assert corr > 0.9, (corr, h["best_epoch"])
    assert rec.dtype == np.float32 and rec.shape == egm.shape
    # predict works in data units: the scales were fitted and stored
    assert m.fitted and m.config.egm_scale == pytest.approx(float(egm.std()), rel=1e-6)


def test_same_seed_same_numbers_and_best_weights_restored():
    egm, _, bspm = smooth_pairs(12)
    runs = []
    for _ in range(2):
        m = tiny_model(seed=3)
        h = train_recon(m, bspm[:8], egm[:8], bspm[8:], egm[8:], epochs=6, batch_size=4, seed=5,
                        patience=2, progress=False)
        runs.append((h, predict(m, bspm[8:]), m))
    (h1, p1, m1), (h2, p2, _) = runs
    assert h1["train"]["total"] == h2["train"]["total"]
    assert h1["val"]["total"] == h2["val"]["total"]
    np.testing.assert_array_equal(p1, p2)
    # the restored weights are the best epoch's: re-evaluating gives the recorded best value
    sb, se = m1._scales()
    val = _evaluate(m1, _to_tensor(bspm[8:], sb, torch.device("cpu"), True),
                    _to_tensor(egm[8:], se, torch.device("cpu"), True), 64)
    assert val["total"] == pytest.approx(h1["best_val"], rel=1e-5)
    assert h1["best_val"] == min(h1["val"]["total"])


def test_bad_input_is_named():
    egm, _, bspm = smooth_pairs(4)
    m = tiny_model()
    with pytest.raises(ValueError, match="bspm_train"):
        train_recon(m, bspm[:, :, :10], egm, bspm, egm, epochs=1, progress=False)
    with pytest.raises(ValueError, match="egm_val"):
        train_recon(m, bspm, egm, bspm, egm[:3], epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_recon(m, bspm, egm, bspm, egm, epochs=0, progress=False)
    with pytest.raises(ValueError, match="precision"):
        train_recon(m, bspm, egm, bspm, egm, epochs=1, progress=False, precision="half")
    with pytest.raises(ValueError, match="kernel"):
        ReconConfig(kernel=4)
    with pytest.raises(RuntimeError, match="fit"):
        predict(m, bspm)
    m.fit_scales(bspm, egm)
    with pytest.raises(ValueError, match="bspm"):
        predict(m, bspm[:, :10])


def test_checkpoint_round_trip(tmp_path):
    egm, _, bspm = smooth_pairs(6)
    m = tiny_model()
    train_recon(m, bspm, egm, bspm, egm, epochs=2, progress=False)
    path = save_recon(tmp_path / "recon.pt", m, extra={"seed": 0})
    m2, meta = load_recon(path)
    assert meta["config"]["egm_scale"] == m.config.egm_scale
    np.testing.assert_array_equal(predict(m, bspm), predict(m2, bspm))
    np.testing.assert_allclose(predict(m, bspm[0]), predict(m, bspm)[0], rtol=1e-4, atol=1e-6)


def test_train_recon_leaves_process_state_unchanged():
    """Seed, deterministic kernels and ``threads`` hold for the call only; the recorded thread
    count is the one used inside."""
    egm, _, bspm = smooth_pairs(6)
    model = tiny_model()
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.use_deterministic_algorithms(False)
        torch.manual_seed(42)
        rng = torch.get_rng_state()
        threads = torch.get_num_threads()
        h = train_recon(model, bspm[:4], egm[:4], bspm[4:], egm[4:], epochs=2,
                        batch_size=2, progress=False, threads=threads + 1)
        assert h["settings"]["threads"] == threads + 1
        assert torch.get_num_threads() == threads
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.equal(torch.get_rng_state(), rng)
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])


def test_cosine_schedule_anneals_to_zero_and_bad_schedule_is_named():
    egm, _, bspm = smooth_pairs(8)
    h = train_recon(tiny_model(), bspm[:6], egm[:6], bspm[6:], egm[6:], epochs=4, batch_size=4,
                    lr=2e-3, seed=0, patience=4, progress=False, schedule="cosine")
    # CosineAnnealingLR with T_max = epochs: lr_e = lr (1 + cos(pi e / E)) / 2
    want = [2e-3 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]
    np.testing.assert_allclose(h["lr"], want, rtol=1e-12)
    assert h["settings"]["schedule"] == "cosine"
    flat = train_recon(tiny_model(), bspm[:6], egm[:6], bspm[6:], egm[6:], epochs=2,
                       batch_size=4, lr=2e-3, seed=0, patience=4, progress=False)
    assert flat["lr"] == [2e-3, 2e-3]
    with pytest.raises(ValueError, match="schedule: got 'linear'; allowed: constant, cosine"):
        train_recon(tiny_model(), bspm, egm, bspm, egm, epochs=1, progress=False,
                    schedule="linear")


def test_training_scale_is_the_float64_std_without_a_copy():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((7, 33, 5)) * 3.0 + 100.0).astype(np.float32)
    # small blocks: several partial sums, one ragged
    assert _std(x, block=64) == pytest.approx(float(np.asarray(x, np.float64).std()), rel=1e-12)
    assert _std(np.full((3, 4), 2.5, np.float32)) == 0.0
    m = tiny_model()
    with pytest.raises(ValueError, match="no spread"):
        m.fit_scales(np.ones((2, T, N_EL), np.float32), np.ones((2, T, N_REC)))
