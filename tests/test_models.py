"""ConvVAE shapes at every profile size, the loss parts, VAE-C labels and priors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from egmlib.generators.models import (
    LOSS_PARTS,
    ConvVAE,
    LossWeights,
    TemporalSmooth,
    VAEConfig,
    kl_divergence,
    shrink_strides,
    stft_logmag,
    vae_loss,
)


def smooth_windows(n: int, T: int, C: int, seed: int = 0) -> torch.Tensor:
    """Smooth multichannel test signals in [-1, 1]: travelling sinusoids plus a pulse."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[None, :, None] / 100.0
    c = np.arange(C)[None, None, :]
    f = rng.uniform(1.0, 4.0, (n, 1, 1))
    ph = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    x = 0.6 * np.sin(2 * np.pi * f * t + ph + 0.2 * c) + 0.3 * np.cos(2 * np.pi * 0.5 * t + 0.1 * c)
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("layout", ["vector", "sequence"])
@pytest.mark.parametrize("upsample", ["transposed", "resize"])
@pytest.mark.parametrize("T,C", [(100, 32), (100, 24), (37, 5), (400, 256)])
def test_shapes_and_loss_parts(T, C, upsample, layout):
    torch.manual_seed(0)
    cfg = VAEConfig(T=T, C=C, latent=8, upsample=upsample, latent_layout=layout)
    model = ConvVAE(cfg)
    x = smooth_windows(2, T, C)
    x_hat, mu, logvar = model(x)
    # the sequence layout: 8 values per step of the decoder's first map
    steps = cfg.dec_map_shape[0] if layout == "sequence" else 1
    assert cfg.code_size == 8 * steps
    assert x_hat.shape == (2, T, C) and mu.shape == (2, 8 * steps) == logvar.shape
    assert x_hat.abs().max() <= 1.0
    parts = vae_loss(x, x_hat, mu, logvar, beta=0.1)
    for k, v in parts.items():
        assert torch.isfinite(v), k
    total = sum(parts[k] for k in LOSS_PARTS)
    assert torch.allclose(total, parts["total"], rtol=1e-6, atol=1e-6)
    assert parts["kl_raw"] >= 0 and parts["kl_true"] >= 0
    parts["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the encoder's and decoder's maps divide exactly
    tp, cp = cfg.padded_shape
    assert tp % math.prod(cfg.enc_strides[0]) == 0 and cp % math.prod(cfg.enc_strides[1]) == 0
    assert tp >= T and cp >= C


def test_paper_size_forward():
    cfg = VAEConfig(T=400, C=2048, latent=250)
    assert cfg.enc_strides == ((2, 2, 2), (4, 4, 2))      # the authors' strides are kept
    assert cfg.dec_strides == ((2, 2, 2, 2), (4, 4, 2, 4))
    assert cfg.enc_map_shape == (50, 64) and cfg.dec_map_shape == (25, 16)
    model = ConvVAE(cfg).eval()
    with torch.no_grad():
        x_hat, mu, _ = model(torch.zeros(1, 400, 2048))
    assert x_hat.shape == (1, 400, 2048) and mu.shape == (1, 250)


def test_stride_rule():
    assert shrink_strides((4, 4, 2), 2048, 4) == (4, 4, 2)
    assert shrink_strides((4, 4, 2), 32, 4) == (2, 2, 2)
    assert shrink_strides((4, 4, 2), 24, 4) == (2, 2, 1)
    assert shrink_strides((4, 4, 2, 4), 256, 4) == (4, 4, 2, 2)
    assert shrink_strides((4, 4, 2), 3, 4) == (1, 1, 1)
    assert VAEConfig(T=400, C=256).dec_map_shape == (25, 4)


def test_kl_nonnegative_and_zero_at_prior():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)
    assert (kl_divergence(mu, logvar) >= -1e-6).all()
    prior = (torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g))
    assert (kl_divergence(mu, logvar, prior) >= -1e-6).all()
    assert kl_divergence(prior[0], prior[1], prior).abs().max() < 1e-5
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0
    # free bits: the KL term never drops below 0.5 nats per latent dimension
    x = smooth_windows(2, 50, 4)
    parts = vae_loss(x, x, torch.zeros(2, 6), torch.zeros(2, 6), beta=1.0)
    assert float(parts["kl_raw"]) == pytest.approx(3.0)
    assert float(parts["mse"]) == 0 and float(parts["corr"]) == pytest.approx(0, abs=1e-5)
    assert float(parts["spec_hf"]) == pytest.approx(0, abs=1e-5)
    assert float(parts["spec_spurious"]) == pytest.approx(0, abs=1e-5)


def test_loss_hand_values():
    x = smooth_windows(3, 64, 5)
    x_hat = 0.5 * x + 0.1
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    p = vae_loss(x, x_hat, mu, logvar, beta=0.0)
    assert float(p["mse"]) == pytest.approx(0.35 * float(((x_hat - x) ** 2).mean()), rel=1e-5)
    d = (torch.diff(x_hat, dim=1) - torch.diff(x, dim=1)).abs().mean()
    assert float(p["deriv_l1"]) == pytest.approx(0.30 * float(d), rel=1e-5)
    assert float(p["pearson"]) == pytest.approx(1.0, abs=1e-5)      # scale and shift invariant
    assert float(p["kl"]) == 0.0
    # more high-frequency energy in the reconstruction is penalised as spurious
    noisy = x + 0.2 * torch.sin(torch.arange(64.0) * 2.8)[None, :, None]
    q = vae_loss(x, noisy, mu, logvar, beta=0.0)
    assert float(q["spec_spurious"]) > 0 and float(q["spec_hf"]) > 0


def test_spec_avg_is_blind_to_timing_and_sees_frequency_and_scale():
    t = torch.arange(400.0) / 100.0  # 4 s at 100 Hz
    af = torch.sin(2 * math.pi * 6.0 * t)[None, :, None].repeat(2, 1, 3)
    shifted = torch.sin(2 * math.pi * 6.0 * t + 1.3)[None, :, None].repeat(2, 1, 3)
    sr_like = torch.sin(2 * math.pi * 1.5 * t)[None, :, None].repeat(2, 1, 3)
    z = torch.zeros(2, 2)
    w = LossWeights(spec_avg=1.0)

    def part(x_hat, weights=w):
        return float(vae_loss(af, x_hat, z, z, 0.0, weights=weights)["spec_avg"])

    assert part(af) == 0.0
    # the same rhythm at another phase: MSE and correlation punish it, spec_avg barely
    assert part(shifted) < 0.05
    assert float(vae_loss(af, shifted, z, z, 0.0)["corr"]) > 0.3
    assert part(sr_like) > 10 * part(shifted)
    # a scaled copy: |log(a m + eps) - log(m + eps)| = log(a) when eps is negligible
    assert part(2.0 * af, LossWeights(spec_avg=1.0, log_eps=1e-9)) == pytest.approx(
        math.log(2.0), abs=1e-4)
    # the weight multiplies the part, which joins the total; 0 (the paper's loss) leaves it out
    parts = vae_loss(af, sr_like, z, z, 0.1, weights=LossWeights(spec_avg=0.3))
    assert float(parts["spec_avg"]) == pytest.approx(0.3 * part(sr_like), rel=1e-5)
    assert float(parts["total"]) == pytest.approx(float(sum(parts[k] for k in LOSS_PARTS)),
                                                  rel=1e-6)
    assert float(vae_loss(af, sr_like, z, z, 0.1)["spec_avg"]) == 0.0


def test_stft_matches_torch_stft():
    x = smooth_windows(2, 100, 3) + 0.05 * torch.randn(2, 100, 3)
    for k0 in (0, 8):
        a, la = stft_logmag(x, 32, 8, k_start=k0)
        b, lb = stft_logmag(x, 32, 8, k_start=k0, method="torch")
        assert a.shape == b.shape == (2, 13, 3, 17 - k0)
        assert torch.allclose(a, b, atol=1e-4) and torch.allclose(la, lb, atol=1e-3)
    w_fast, w_ref = LossWeights(), LossWeights(stft="torch")
    y = x.flip(1)
    pf = vae_loss(x, y, torch.zeros(2, 2), torch.zeros(2, 2), 0.1, weights=w_fast)
    pr = vae_loss(x, y, torch.zeros(2, 2), torch.zeros(2, 2), 0.1, weights=w_ref)
    assert float(pf["total"]) == pytest.approx(float(pr["total"]), rel=1e-5)


def test_temporal_smooth_fast_path_equals_conv():
    m = TemporalSmooth(1, 5)
    x = torch.randn(2, 1, 30, 7)
    fast = m(x)
    m.fast = False
    assert torch.allclose(fast, m(x), atol=1e-6)


def test_vae_c_labels_and_prior():
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(T=100, C=32, latent=6, n_classes=2))
    x = smooth_windows(3, 100, 32)
    y = torch.tensor([0, 1, 1])
    x_hat, mu, logvar = model(x, y)
    pm, plv = model.prior(y)
    assert pm.shape == (3, 6) and torch.equal(pm[1], model.prior_mu[1])
    parts = vae_loss(x, x_hat, mu, logvar, 1.0, prior=(pm, plv))
    parts["total"].backward()
    assert model.prior_mu.grad is not None and model.prior_logvar.grad is not None
    # the label reaches the decoder
    z = torch.zeros(1, 6)
    out0, out1 = model.decode(z, torch.tensor([0])), model.decode(z, torch.tensor([1]))
    assert not torch.allclose(out0, out1)
    soft = model.decode(z, torch.tensor([[0.5, 0.5]]))
    assert soft.shape == (1, 100, 32)
    assert model.sample(4, 1, generator=torch.Generator().manual_seed(0)).shape == (4, 100, 32)


def test_bad_inputs():
    vae_s = ConvVAE(VAEConfig(T=100, C=32, latent=4))
    vae_c = ConvVAE(VAEConfig(T=100, C=32, latent=4, n_classes=2))
    x = torch.zeros(2, 100, 32)
    with pytest.raises(ValueError, match="x: expected"):
        vae_s(torch.zeros(2, 100, 31))
    with pytest.raises(ValueError, match="y: VAE-S"):
        vae_s(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="y: VAE-C needs"):
        vae_c(x)
    with pytest.raises(ValueError, match="unknown class label 2"):
        vae_c(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="z: expected"):
        vae_s.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="n_classes"):
        VAEConfig(n_classes=1)
    with pytest.raises(ValueError, match=r"VAEConfig\.T"):
        VAEConfig(T=0)
    with pytest.raises(ValueError, match="x_hat"):
        vae_loss(x, torch.zeros(2, 100, 30), torch.zeros(2, 4), torch.zeros(2, 4), 0.1)
    with pytest.raises(ValueError, match="n:"):
        vae_s.sample(0)


def test_resize_decoder_has_no_grid_of_its_own():
    """A first map that is the same at every time step: transposed convolutions turn it into a
    pattern that repeats every 16 samples (their combined stride); resize-convolutions leave it
    the same at every time, away from the window's edges."""
    for upsample in ("transposed", "resize"):
        torch.manual_seed(0)
        model = ConvVAE(VAEConfig(T=400, C=8, latent=4, upsample=upsample)).eval()
        t0, s0 = model.config.dec_map_shape
        ch = model.config.dec_map_channels
        flat = torch.randn(ch, 1, s0).repeat(1, t0, 1)
        with torch.no_grad():
            model.decoder_dense[0].weight.zero_()
            model.decoder_dense[0].bias.copy_(flat.reshape(-1))
            mid = model.decode(torch.zeros(1, 4))[0, 60:340]
        assert mid.abs().mean() > 0.01  # not a dead decoder
        torch.testing.assert_close(mid[16:], mid[:-16], rtol=0, atol=1e-6)  # period 16
        if upsample == "transposed":
            assert mid.std(dim=0).max() > 0.1  # a grid inside each period
        else:
            assert mid.std(dim=0).max() < 1e-6  # constant in time
    with pytest.raises(ValueError, match=r"VAEConfig\.upsample: got 'bilinear'"):
        VAEConfig(upsample="bilinear")


def test_sequence_layout_is_shift_equivariant():
    """In the sequence layout no layer knows where in the window it is: shifting the input by
    one step of the code (16 samples) shifts the code by one step, and shifting the code by one
    step shifts the output by 16 samples, exactly, away from the edges (6 steps, the reach of
    the zero padding)."""
    y = torch.tensor([1])
    for upsample in ("transposed", "resize"):
        torch.manual_seed(0)
        cfg = VAEConfig(T=512, C=16, latent=3, n_classes=2, latent_layout="sequence",
                        upsample=upsample)
        model = ConvVAE(cfg).eval()
        assert cfg.latent_steps == 32 and cfg.code_size == 96
        x = smooth_windows(1, 512 + 16, 16)
        z = torch.randn(1, 3, 33)
        with torch.no_grad():
            mu_a, _ = model.encode(x[:, 16:], y)
            mu_b, _ = model.encode(x[:, :-16], y)
            out_a = model.decode(z[..., 1:].reshape(1, -1), y)
            out_b = model.decode(z[..., :-1].reshape(1, -1), y)
        mu_a, mu_b = mu_a.view(1, 3, 32), mu_b.view(1, 3, 32)
        assert mu_a.abs().mean() > 1e-2
        torch.testing.assert_close(mu_a[..., 6:25], mu_b[..., 7:26], rtol=0, atol=1e-6)
        assert (mu_a[..., 6:25] - mu_a[..., 7:26]).abs().max() > 1e-2  # not constant in time
        assert out_a.abs().mean() > 1e-2
        torch.testing.assert_close(out_a[:, 96:400], out_b[:, 112:416], rtol=0, atol=1e-6)


def test_sequence_layout_prior_is_shared_by_the_steps():
    model = ConvVAE(VAEConfig(T=400, C=8, latent=3, n_classes=2, latent_layout="sequence"))
    assert model.prior_mu.shape == (2, 3) == model.prior_logvar.shape
    with torch.no_grad():
        model.prior_logvar.copy_(torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]))
    pm, plv = model.prior(torch.tensor([1, 0]))
    assert pm.shape == (2, 75) == plv.shape
    # channel-major: values c * 25 .. c * 25 + 24 belong to channel c
    torch.testing.assert_close(plv[0].view(3, 25), torch.tensor([0.4, 0.5, 0.6])[:, None]
                               .expand(3, 25))
    torch.testing.assert_close(pm[1].view(3, 25), model.prior_mu[0][:, None].expand(3, 25))
    # the KL of a posterior equal to the prior is zero, and samples have the code's size
    assert kl_divergence(pm, plv, (pm, plv)).abs().max() < 1e-6
    assert model.sample(2, 1, generator=torch.Generator().manual_seed(0)).shape == (2, 400, 8)
    with pytest.raises(ValueError, match=r"z: expected \(batch, code_size=75\)"):
        model.decode(torch.zeros(1, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"VAEConfig\.latent_layout: got 'grid'"):
        VAEConfig(latent_layout="grid")
    with pytest.raises(ValueError, match="seq_kernel"):
        VAEConfig(seq_kernel=4)


def test_config_round_trip():
    cfg = VAEConfig(T=100, C=24, latent=5, n_classes=2, upsample="resize",
                    latent_layout="sequence")
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    assert VAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        VAEConfig.from_dict({"T": 10, "bogus": 1})
