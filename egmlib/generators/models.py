"""VAE-S and VAE-C: convolutional VAEs over one EGM window seen as a (time x sites) image.

The layer plan follows the authors' public code for arXiv 2512.14537 (the paper's text gives no
more):

* encoder: three ``Conv2d`` layers over the ``(T, C)`` image -- 32 filters 5x15 stride 2x4,
  64 filters 5x15 stride 2x4, 10 filters 3x5 stride 2x2 -- each with LeakyReLU, then a dense layer
  (250 units) and two heads, the latent mean and log-variance;
* decoder: dense to a small ``(channels, t0, s0)`` map, four transposed convolutions with strides
  2x4, 2x4, 2x2, 2x4, each followed by a 5x1 temporal smoothing convolution; tanh output
  (``VAEConfig.upsample="resize"``: each transposed convolution replaced by nearest-neighbour
  upsampling and a convolution).
* ``VAEConfig.latent_layout="sequence"`` (not in the paper): the latent code is a short sequence
  in time instead of one vector. The encoder's dense layer becomes a convolution over its last
  map (all its sites, ``seq_kernel`` steps), averaged down to the decoder's first map length
  ``t0``; the heads give ``latent`` channels per step; the decoder's dense layer becomes a
  convolution of ``seq_kernel`` steps over that sequence. Nothing in the model then knows where
  in the window it is: a shift of the input by one step (``T / t0`` samples) shifts the code by
  one step and the output by one step, away from the edges. The vector layout's dense layers
  place every feature at a fixed time of the window, which lets a decoder lay out a period it
  learned from how the windows were cut (VAE-C's vector code laid out the data set's 0.5 s window
  hop: the AF studies of :mod:`egmlib.workflow.studies`). The code is still handed
  around flattened, ``(batch, code_size)`` with ``code_size = latent * t0``, channel-major
  (index ``channel * t0 + step``), so sampling, fitting and the KL see ordinary vectors; VAE-C's
  class priors are shared by the steps of a channel. Notebook 03's VAE-C uses it (3 values per
  step, resize-convolutions), chosen by the AF latent study of :mod:`egmlib.workflow.studies`.
* VAE-C (``n_classes > 0``): the one-hot rhythm label is joined after the encoder's dense layer
  (at every step, in the sequence layout) and at the decoder input, and each class has a learned
  Gaussian prior (a learnable mean and log-variance per latent dimension); the KL term is taken
  to the class's prior.

Arbitrary window sizes (the rule). One code path serves ``T x C`` = 100 x 32 (smoke), 400 x 256
(default) and 400 x 2048 (paper):

1. Strides shrink when an axis is short. Starting from the authors' strides, while the axis' size
   after all strides, ``ceil(n / prod(strides))``, is below a minimum (``min_time`` = 2 samples,
   ``min_sites`` = 4 sites), the largest stride is halved (the last of equal ones first). At the
   paper size nothing changes (encoder maps 400 x 2048 to 50 x 64, the decoder starts from
   25 x 16); at 400 x 256 the decoder's site strides become 4, 4, 2, 2 (start 25 x 4); at C = 32
   the encoder's site strides become 2, 2, 2 and the decoder's 2, 2, 2, 1; at C = 24 the encoder's
   become 2, 2, 1.
2. Convolutions use ``padding = kernel // 2`` (odd kernels), so each one maps ``n`` to
   ``ceil(n / stride)``. The input is zero-padded at the end of each axis to a multiple of the
   encoder's total stride, so every stage divides exactly.
3. Each transposed convolution has ``kernel = stride + 2 * pad`` with ``pad = max(1, stride // 2)``,
   which maps ``n`` to exactly ``n * stride``. The decoder starts from
   ``ceil(T / prod(time strides)) x ceil(C / prod(site strides))`` and its output is cropped back to
   ``T x C``.

Tensors: windows are ``(batch, T, C)`` float tensors scaled to [-1, 1] (see
:class:`egmlib.generators.train.Normalizer`); labels are integer class indices ``(batch,)`` or, for
soft
conditioning, float ``(batch, n_classes)`` rows.

Loss (:func:`vae_loss`): see its docstring for the exact definitions of every part.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egmlib.core.checks import check_int

__all__ = [
    "LATENT_LAYOUTS",
    "LOSS_PARTS",
    "UPSAMPLINGS",
    "ConvVAE",
    "LossWeights",
    "TemporalSmooth",
    "VAEConfig",
    "kl_divergence",
    "shrink_strides",
    "stft_logmag",
    "vae_loss",
]

#: Names of the loss parts that add up to ``total`` (each already multiplied by its weight).
LOSS_PARTS = ("mse", "deriv_l1", "spec_hf", "spec_spurious", "spec_avg", "kl", "corr")

LOGVAR_CLIP = 10.0
#: Values of :attr:`VAEConfig.upsample`.
UPSAMPLINGS = ("transposed", "resize")
#: Values of :attr:`VAEConfig.latent_layout`.
LATENT_LAYOUTS = ("vector", "sequence")


def shrink_strides(strides: tuple[int, ...], n: int, min_size: int) -> tuple[int, ...]:
    """Halve the largest stride (the last of equal ones first) until ``ceil(n / prod(strides))``
    is at least ``min_size`` or every stride is 1."""
    out = list(strides)
    while math.ceil(n / math.prod(out)) < min_size and max(out) > 1:
        top = max(out)
        i = len(out) - 1 - out[::-1].index(top)
        out[i] = max(1, top // 2)
    return tuple(out)


@dataclass(frozen=True)
class VAEConfig:
    """Everything that defines a :class:`ConvVAE` (stored in checkpoints).

    Attributes:
        T, C: window length in samples and number of recording sites (paper: 400 x 2048).
        latent: latent dimension (paper: 250; the default profile uses fewer); in the sequence
            layout, the latent channels per time step (the code has :attr:`code_size` values).
        n_classes: 0 for VAE-S (unconditional), 2 for VAE-C (0 = SR, 1 = AF).
        filters, kernels, enc_time_strides, enc_site_strides: the encoder's three convolutions.
        dense: width of the encoder's dense layer (paper 250).
        dec_map_channels: channels of the decoder's first map (paper 32).
        dec_filters: output channels of the four transposed convolutions (the last is 1).
        dec_time_strides, dec_site_strides: the authors' decoder strides, before shrinking.
        smooth_kernel: length of the temporal smoothing convolutions (5 x 1).
        negative_slope: LeakyReLU slope.
        min_time, min_sites: the smallest map an axis may be strided down to (see module doc).
        logvar_bias: initial log-variance of the posterior (the ``fc_logvar`` layer starts with
            zero weights and this bias; see :meth:`ConvVAE.reset_parameters`).
        init: ``"he"`` (:meth:`ConvVAE.reset_parameters`) or ``"torch"`` (torch's default
            initialisation, as before; kept for the comparison).
        upsample: how each decoder block enlarges its map: ``"transposed"`` (the authors'
            transposed convolutions) or ``"resize"`` (nearest-neighbour upsampling by the
            stride, then a convolution of kernel ``2 * stride + 1`` per axis, 3 where the
            stride is 1: the resize-convolution of Odena, Dumoulin & Olah, "Deconvolution and
            checkerboard artifacts", Distill 2016, whose output has no grid of the stride's
            period built in). The AF decoder study of :mod:`egmlib.workflow.studies` compares
            them.
        latent_layout: ``"vector"`` (the authors' dense layers) or ``"sequence"`` (a latent
            sequence of ``latent`` channels over the decoder's first map length ``t0``; see the
            module doc). The AF latent study of :mod:`egmlib.workflow.studies` compares them.
        seq_kernel: steps of the two convolutions that replace the dense layers in the sequence
            layout (odd; unused by the vector layout).
    """

    T: int = 400
    C: int = 256
    latent: int = 64
    n_classes: int = 0
    filters: tuple[int, int, int] = (32, 64, 10)
    kernels: tuple[tuple[int, int], ...] = ((5, 15), (5, 15), (3, 5))
    enc_time_strides: tuple[int, ...] = (2, 2, 2)
    enc_site_strides: tuple[int, ...] = (4, 4, 2)
    dense: int = 250
    dec_map_channels: int = 32
    dec_filters: tuple[int, ...] = (64, 32, 16, 1)
    dec_time_strides: tuple[int, ...] = (2, 2, 2, 2)
    dec_site_strides: tuple[int, ...] = (4, 4, 2, 4)
    smooth_kernel: int = 5
    negative_slope: float = 0.2
    min_time: int = 2
    min_sites: int = 4
    logvar_bias: float = -4.0
    init: str = "he"
    upsample: str = "transposed"
    latent_layout: str = "vector"
    seq_kernel: int = 5

    def __post_init__(self) -> None:
        for name in ("T", "C", "latent", "dense", "dec_map_channels", "smooth_kernel",
                     "seq_kernel"):
            value = getattr(self, name)
            check_int(f"VAEConfig.{name}", value, 1)
        if self.n_classes not in (0, *range(2, 65)):
            raise ValueError(f"VAEConfig.n_classes: got {self.n_classes!r}; allowed: 0 (VAE-S) "
                             "or the number of classes >= 2 (VAE-C)")
        if len(self.filters) != len(self.kernels) or len(self.filters) != len(
                self.enc_time_strides) or len(self.filters) != len(self.enc_site_strides):
            raise ValueError("VAEConfig: filters, kernels and encoder strides must have one entry "
                             "per encoder layer")
        if (any(k % 2 == 0 for kk in self.kernels for k in kk) or self.smooth_kernel % 2 == 0
                or self.seq_kernel % 2 == 0):
            raise ValueError("VAEConfig.kernels / smooth_kernel / seq_kernel: kernel sizes must "
                             "be odd")
        if not (len(self.dec_filters) == len(self.dec_time_strides) == len(self.dec_site_strides)):
            raise ValueError("VAEConfig: dec_filters and decoder strides must have one entry per "
                             "decoder layer")
        if self.init not in ("he", "torch"):
            raise ValueError(f"VAEConfig.init: got {self.init!r}; allowed: 'he' or 'torch'")
        if self.upsample not in UPSAMPLINGS:
            raise ValueError(f"VAEConfig.upsample: got {self.upsample!r}; allowed: "
                             f"{', '.join(map(repr, UPSAMPLINGS))}")
        if self.dec_filters[-1] != 1:
            raise ValueError("VAEConfig.dec_filters: the last decoder layer must have 1 filter")
        if self.latent_layout not in LATENT_LAYOUTS:
            raise ValueError(f"VAEConfig.latent_layout: got {self.latent_layout!r}; allowed: "
                             f"{', '.join(map(repr, LATENT_LAYOUTS))}")

    # -- derived geometry ---------------------------------------------------------------------
    @property
    def enc_strides(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Encoder (time, site) strides after shrinking for this (T, C)."""
        return (shrink_strides(self.enc_time_strides, self.T, self.min_time),
                shrink_strides(self.enc_site_strides, self.C, self.min_sites))

    @property
    def dec_strides(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Decoder (time, site) strides after shrinking for this (T, C)."""
        return (shrink_strides(self.dec_time_strides, self.T, self.min_time),
                shrink_strides(self.dec_site_strides, self.C, self.min_sites))

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Input size after zero padding to a multiple of the encoder's total strides."""
        st, ss = self.enc_strides
        pt, ps = math.prod(st), math.prod(ss)
        return math.ceil(self.T / pt) * pt, math.ceil(self.C / ps) * ps

    @property
    def enc_map_shape(self) -> tuple[int, int]:
        """(time, sites) of the encoder's last feature map."""
        st, ss = self.enc_strides
        tp, cp = self.padded_shape
        return tp // math.prod(st), cp // math.prod(ss)

    @property
    def dec_map_shape(self) -> tuple[int, int]:
        """(time, sites) of the decoder's first map."""
        st, ss = self.dec_strides
        return math.ceil(self.T / math.prod(st)), math.ceil(self.C / math.prod(ss))

    @property
    def latent_steps(self) -> int:
        """Time steps of the latent code: the decoder's first map length in the sequence
        layout, 1 in the vector layout."""
        return self.dec_map_shape[0] if self.latent_layout == "sequence" else 1

    @property
    def code_size(self) -> int:
        """Values in one window's latent code, ``latent * latent_steps`` (``latent`` in the
        vector layout): the length of the flattened codes that :meth:`ConvVAE.encode` returns
        and :meth:`ConvVAE.decode` takes."""
        return self.latent * self.latent_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"VAEConfig: unknown field {unknown[0]!r}")
        kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v)
                  if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


class TemporalSmooth(nn.Conv2d):
    """The decoder's ``k x 1`` temporal smoothing convolution (an ordinary ``Conv2d``).

    With one input and one output channel (the decoder's last layer) it computes the same
    numbers as a weighted sum of ``k`` shifted copies, which is an order of magnitude faster on
    CPU than oneDNN's single-channel convolution; the parameters are the ``Conv2d``'s own.
    """

    def __init__(self, channels: int, k: int) -> None:
        super().__init__(channels, channels, (k, 1), padding=(k // 2, 0))
        self.fast = True  # False: always the plain Conv2d (the eager baseline of the benchmarks)

    def forward(self, x: Tensor) -> Tensor:
        if self.in_channels != 1 or not self.fast:
            return super().forward(x)
        k = self.kernel_size[0]
        t = x.shape[2]
        xp = F.pad(x, (0, 0, k // 2, k // 2))
        w = self.weight.view(k)
        out = xp[:, :, 0:t] * w[0]
        for i in range(1, k):
            out = out + xp[:, :, i:i + t] * w[i]
        return out + self.bias.view(1, 1, 1, 1)


def _resize_conv(c_in: int, c_out: int, s_t: int, s_s: int) -> nn.Sequential:
    """Nearest-neighbour upsampling by ``(s_t, s_s)``, then a same-size convolution of kernel
    ``2 s + 1`` per axis (3 where ``s`` is 1)."""
    k_t, k_s = (2 * s + 1 if s > 1 else 3 for s in (s_t, s_s))
    return nn.Sequential(nn.Upsample(scale_factor=(s_t, s_s), mode="nearest"),
                         nn.Conv2d(c_in, c_out, (k_t, k_s), padding=(k_t // 2, k_s // 2)))


def _label_channels(h: Tensor, onehot: Tensor | None) -> Tensor:
    """A sequence ``(B, channels, steps)`` with the one-hot label rows ``(B, n_classes)`` joined
    as constant channels at every step (the sequence layout's way of conditioning); ``h`` itself
    when there is no label (VAE-S)."""
    if onehot is None:
        return h
    return torch.cat([h, onehot.to(h.dtype)[:, :, None].expand(-1, -1, h.shape[2])], dim=1)


def _tconv_geometry(stride: int) -> tuple[int, int]:
    """(kernel, padding) of a transposed convolution that maps n to exactly n * stride."""
    pad = max(1, stride // 2)
    return stride + 2 * pad, pad


class ConvVAE(nn.Module):
    """VAE-S (``config.n_classes == 0``) or VAE-C (``n_classes >= 2``); see the module doc."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = cfg = config
        act = cfg.negative_slope
        st, ss = cfg.enc_strides
        layers: list[nn.Module] = []
        c_in = 1
        for f, k, s_t, s_s in zip(cfg.filters, cfg.kernels, st, ss):
            layers += [nn.Conv2d(c_in, f, k, stride=(s_t, s_s), padding=(k[0] // 2, k[1] // 2)),
                       nn.LeakyReLU(act)]
            c_in = f
        self.encoder_conv = nn.Sequential(*layers)
        te, se = cfg.enc_map_shape
        t0, s0 = cfg.dec_map_shape
        k = cfg.seq_kernel
        if cfg.latent_layout == "vector":
            self.encoder_dense = nn.Sequential(
                nn.Flatten(), nn.Linear(c_in * te * se, cfg.dense), nn.LeakyReLU(act))
            self.fc_mu = nn.Linear(cfg.dense + cfg.n_classes, cfg.latent)
            self.fc_logvar = nn.Linear(cfg.dense + cfg.n_classes, cfg.latent)
            self.decoder_dense = nn.Sequential(
                nn.Linear(cfg.latent + cfg.n_classes, cfg.dec_map_channels * t0 * s0),
                nn.LeakyReLU(act))
        else:  # the same roles, as convolutions along time (module doc)
            d = cfg.latent
            self.encoder_dense = nn.Sequential(
                nn.Conv2d(c_in, cfg.dense, (k, se), padding=(k // 2, 0)), nn.LeakyReLU(act))
            self.fc_mu = nn.Conv1d(cfg.dense + cfg.n_classes, d, 1)
            self.fc_logvar = nn.Conv1d(cfg.dense + cfg.n_classes, d, 1)
            self.decoder_dense = nn.Sequential(
                nn.Conv1d(d + cfg.n_classes, cfg.dec_map_channels * s0, k, padding=k // 2),
                nn.LeakyReLU(act))
        dt, ds = cfg.dec_strides
        blocks: list[nn.Module] = []
        c_in = cfg.dec_map_channels
        n_dec = len(cfg.dec_filters)
        for i, (f, s_t, s_s) in enumerate(zip(cfg.dec_filters, dt, ds)):
            (k_t, p_t), (k_s, p_s) = _tconv_geometry(s_t), _tconv_geometry(s_s)
            last = i == n_dec - 1
            up = (nn.ConvTranspose2d(c_in, f, (k_t, k_s), stride=(s_t, s_s), padding=(p_t, p_s))
                  if cfg.upsample == "transposed" else _resize_conv(c_in, f, s_t, s_s))
            blocks += [up,
                       nn.Identity() if last else nn.LeakyReLU(act),
                       TemporalSmooth(f, cfg.smooth_kernel),
                       nn.Identity() if last else nn.LeakyReLU(act)]
            c_in = f
        self.decoder_conv = nn.Sequential(*blocks)

        if cfg.init == "he":
            self.reset_parameters()
        if cfg.n_classes:
            # Learned Gaussian prior per class. Means start slightly apart so the classes do not
            # start from one symmetric point; log-variances start at 0 (unit variance).
            # In the sequence layout the steps of a channel share its prior.
            g = torch.Generator().manual_seed(1234)
            d = cfg.latent
            self.prior_mu = nn.Parameter(0.1 * torch.randn(cfg.n_classes, d, generator=g))
            self.prior_logvar = nn.Parameter(torch.zeros(cfg.n_classes, d))
        else:
            self.register_parameter("prior_mu", None)
            self.register_parameter("prior_logvar", None)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """He initialisation for LeakyReLU networks (He et al., ICCV 2015): every convolution,
        transposed convolution and dense layer gets normal weights of variance
        ``2 / ((1 + slope^2) fan_in)`` and zero biases, where a transposed convolution's fan-in
        is ``in_channels * kernel area / stride area`` (the taps that reach one output); the
        single-channel smoothing convolution keeps torch's default weights (a zero bias). The
        posterior log-variance head starts at zero weights and bias ``config.logvar_bias``
        (-4: standard deviation 0.14), so the encoder's means carry information through the
        sampled ``z`` from the first step.

        Why not torch's defaults (uniform with variance ``1 / (3 fan_in)``): activations shrink
        by about 5x through the decoder, the output starts as a near-constant with an offset of
        0.4 (the last smoothing bias), and both VAEs spent their first epochs at zero
        correlation (VAE-C six epochs, measured on the default data; the choice study in
        ``results/<profile>/generator_choices.json`` compares the two).
        """
        slope = self.config.negative_slope
        gain2 = 2.0 / (1.0 + slope ** 2)
        for m in self.modules():
            if isinstance(m, TemporalSmooth) and m.in_channels == 1:
                nn.init.zeros_(m.bias)
                continue
            if isinstance(m, nn.ConvTranspose2d):
                fan_in = m.in_channels * math.prod(m.kernel_size) / math.prod(m.stride)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
            else:
                continue
            nn.init.normal_(m.weight, 0.0, math.sqrt(gain2 / fan_in))
            nn.init.zeros_(m.bias)
        nn.init.zeros_(self.fc_logvar.weight)
        nn.init.constant_(self.fc_logvar.bias, self.config.logvar_bias)

    # -- labels -------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return self.config.n_classes > 0

    def _onehot(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """Labels as float rows ``(batch, n_classes)``; ``None`` for VAE-S. Checks them."""
        k = self.config.n_classes
        if not k:
            if y is not None:
                raise ValueError("y: VAE-S (n_classes = 0) takes no label; pass y=None")
            return None
        if y is None:
            raise ValueError(f"y: VAE-C needs a label per window (class index in 0..{k - 1})")
        y = torch.as_tensor(y, device=device)
        if y.ndim == 0:
            y = y.expand(batch)
        if y.is_floating_point() and y.ndim == 2:
            if y.shape != (batch, k):
                raise ValueError(f"y: soft labels must be shaped ({batch}, {k}); got "
                                 f"{tuple(y.shape)}")
            return y.to(torch.get_default_dtype())
        if y.is_floating_point() or y.ndim != 1 or y.shape[0] != batch:
            raise ValueError(f"y: expected {batch} integer class indices; got shape "
                             f"{tuple(y.shape)} of {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = sorted({int(v) for v in y.tolist() if not 0 <= v < k})
            raise ValueError(f"y: unknown class label {bad[0]}; allowed: 0..{k - 1}")
        return F.one_hot(y.long(), k).to(torch.get_default_dtype())

    def _check_x(self, x: Tensor) -> Tensor:
        cfg = self.config
        if x.ndim != 3 or x.shape[1:] != (cfg.T, cfg.C):
            raise ValueError(f"x: expected windows shaped (batch, T={cfg.T}, C={cfg.C}); got "
                             f"{tuple(x.shape)}")
        return x

    # -- the model ------------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent mean and log-variance (clipped to [-10, 10]) of windows ``(B, T, C)``, each
        ``(B, code_size)``."""
        x = self._check_x(x)
        cfg = self.config
        onehot = self._onehot(y, x.shape[0], x.device)
        tp, cp = cfg.padded_shape
        h = F.pad(x.unsqueeze(1), (0, cp - cfg.C, 0, tp - cfg.T))
        h = self.encoder_dense(self.encoder_conv(h))
        if cfg.latent_layout == "sequence":  # (B, dense, te, 1) -> (B, dense, t0)
            h = _label_channels(F.adaptive_avg_pool1d(h.squeeze(3), cfg.latent_steps), onehot)
            return (self.fc_mu(h).flatten(1),
                    self.fc_logvar(h).flatten(1).clamp(-LOGVAR_CLIP, LOGVAR_CLIP))
        if onehot is not None:
            h = torch.cat([h, onehot.to(h.dtype)], dim=1)
        return self.fc_mu(h), self.fc_logvar(h).clamp(-LOGVAR_CLIP, LOGVAR_CLIP)

    def decoder_map(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The decoder's first map ``(B, dec_map_channels, t0, s0)`` from latents
        ``(B, code_size)``: the dense layer's output (vector layout) or the convolution's over the
        latent sequence (sequence layout)."""
        cfg = self.config
        if z.ndim != 2 or z.shape[1] != cfg.code_size:
            raise ValueError(f"z: expected (batch, code_size={cfg.code_size}); got "
                             f"{tuple(z.shape)}")
        onehot = self._onehot(y, z.shape[0], z.device)
        t0, s0 = cfg.dec_map_shape
        b = z.shape[0]
        if cfg.latent_layout == "sequence":
            h = _label_channels(z.view(b, cfg.latent, t0), onehot)
            # channel index c * s0 + s of the convolution's output -> (B, ch, t0, s0)
            return (self.decoder_dense(h).view(b, cfg.dec_map_channels, s0, t0)
                    .transpose(2, 3))
        if onehot is not None:
            z = torch.cat([z, onehot.to(z.dtype)], dim=1)
        return self.decoder_dense(z).view(b, cfg.dec_map_channels, t0, s0)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Windows ``(B, T, C)`` in [-1, 1] from latents ``(B, code_size)``."""
        cfg = self.config
        h = self.decoder_conv(self.decoder_map(z, y))
        return torch.tanh(h[:, 0, : cfg.T, : cfg.C])

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """``mu + sigma * eps`` in training mode; ``mu`` in eval mode (deterministic)."""
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_hat, mu, logvar)``."""
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar)
        return self.decode(z, y), mu, logvar

    def prior(self, y: Tensor | None = None, batch: int | None = None
              ) -> tuple[Tensor, Tensor] | None:
        """Per-window prior ``(mean, log-variance)`` rows for VAE-C; ``None`` (standard normal)
        for VAE-S. Soft labels mix the class priors' parameters linearly."""
        if not self.conditional:
            if y is not None:
                raise ValueError("y: VAE-S (n_classes = 0) takes no label; pass y=None")
            return None
        n = batch if batch is not None else (torch.as_tensor(y).shape[0]
                                             if torch.as_tensor(y).ndim else 1)
        onehot = self._onehot(y, n, self.prior_mu.device)
        logvar = (onehot @ self.prior_logvar).clamp(-LOGVAR_CLIP, LOGVAR_CLIP)
        steps = self.config.latent_steps  # the sequence layout: each channel's steps share it
        return ((onehot @ self.prior_mu).repeat_interleave(steps, dim=1),
                logvar.repeat_interleave(steps, dim=1))

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` windows decoded from prior draws (the class prior for VAE-C), in [-1, 1]."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: got {n!r}; allowed: an int >= 1")
        device = next(self.parameters()).device
        eps = torch.randn(n, self.config.code_size, generator=generator,
                          device=generator.device if generator is not None else device).to(device)
        prior = self.prior(y, batch=n)
        z = eps if prior is None else prior[0] + torch.exp(0.5 * prior[1]) * eps
        return self.decode(z, y)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------------------------
# Loss
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeights:
    """Weights of :func:`vae_loss` (the authors' values) and its spectral settings.

    Attributes:
        mse, deriv_l1, spec_hf, spec_spurious: weights inside the reconstruction term.
        spec_avg: weight of the full-band, time-averaged log-spectrum term (not in the paper:
            0 by default; see :func:`vae_loss`).
        corr: weight of ``1 - Pearson correlation``.
        free_bits: floor of the KL per latent dimension (nats, batch-averaged).
        n_fft: STFT length; ``None`` picks ``min(64, largest power of 2 <= T // 2)``.
        hop: STFT hop; ``None`` means ``n_fft // 4``.
        log_eps: added to STFT magnitudes before the log.
        spurious_rel: a target STFT bin counts as "little energy" when its magnitude is below
            this fraction of the largest magnitude of that site's STFT.
        stft: ``"matmul"`` (fast) or ``"torch"`` (``torch.stft``; same numbers, the baseline).
    """

    mse: float = 0.35
    deriv_l1: float = 0.30
    spec_hf: float = 0.25
    spec_spurious: float = 0.10
    spec_avg: float = 0.0
    corr: float = 0.5
    free_bits: float = 0.5
    n_fft: int | None = None
    hop: int | None = None
    log_eps: float = 1e-2
    spurious_rel: float = 0.1
    stft: str = "matmul"


def _stft_sizes(T: int, w: LossWeights) -> tuple[int, int]:
    n_fft = w.n_fft or min(64, 2 ** max(2, math.floor(math.log2(max(T // 2, 4)))))
    return n_fft, w.hop or max(1, n_fft // 4)


def _dft_basis(n_fft: int, k_start: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Hann-windowed real DFT basis ``(n_fft, 2 * n_bins)`` for bins ``k_start..n_fft // 2``:
    the first half of the columns gives the real parts, the second half the imaginary parts."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(k_start, n_fft // 2 + 1, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    phase = 2 * math.pi * torch.outer(n, k) / n_fft
    basis = torch.cat([torch.cos(phase), -torch.sin(phase)], dim=1) * window[:, None]
    return basis.to(device=device, dtype=dtype)


def stft_logmag(x: Tensor, n_fft: int, hop: int, eps: float = 1e-2,
                k_start: int = 0, method: str = "matmul") -> tuple[Tensor, Tensor]:
    """STFT along time of every site at once, bins ``k_start..n_fft // 2`` only.

    ``x`` ``(B, T, C)`` -> (magnitude, ``log(magnitude + eps)``), each
    ``(B, frames, C, n_bins)``. Periodic Hann window, frames centred on ``0, hop, 2 hop, ...``
    with reflect padding at both ends: the same numbers as ``torch.stft(..., center=True)``, but
    computed as one matrix product of the frames with the DFT basis of the wanted bins, without
    transposing the windows (several times faster on CPU than ``torch.stft`` with its complex
    ``abs``). The magnitude is ``sqrt(re^2 + im^2 + 1e-12)``, smooth at zero.
    ``method="torch"`` computes the same through ``torch.stft`` (the reference, and the
    benchmarks' baseline).
    """
    b, t, c = x.shape
    p = n_fft // 2
    if method == "torch":
        window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
        spec = torch.stft(x.transpose(1, 2).reshape(b * c, t), n_fft, hop_length=hop,
                          window=window, center=True,
                          pad_mode="reflect" if t > p else "constant", return_complex=True)
        spec = spec[:, k_start:].reshape(b, c, -1, spec.shape[-1]).permute(0, 3, 1, 2)
        mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-12)
        return mag, torch.log(mag + eps)
    if method != "matmul":
        raise ValueError(f"method: got {method!r}; allowed: 'matmul' or 'torch'")
    if t > p:
        xp = torch.cat([x[:, 1:p + 1].flip(1), x, x[:, t - p - 1:t - 1].flip(1)], dim=1)
    else:  # too short to reflect: zero padding
        xp = F.pad(x.transpose(1, 2), (p, p)).transpose(1, 2)
    frames = xp.unfold(1, n_fft, hop)  # (B, frames, C, n_fft), a view
    spec = frames @ _dft_basis(n_fft, k_start, x.device, x.dtype)
    nb = spec.shape[-1] // 2
    mag = torch.sqrt(spec[..., :nb].pow(2) + spec[..., nb:].pow(2) + 1e-12)
    return mag, torch.log(mag + eps)


def _interior_frames(T: int, n_fft: int, hop: int, n_frames: int) -> slice:
    """The STFT frames (centred at ``0, hop, ...``) that lie inside the window, away from the
    reflect padding, whose kinks leak broadband energy that depends on the signal's phase at the
    ends; all frames when the window is too short to have any."""
    p = n_fft // 2
    first, last = -(-p // hop), (T - p) // hop
    return slice(first, last + 1) if first <= last else slice(0, n_frames)


def kl_divergence(mu: Tensor, logvar: Tensor,
                  prior: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """KL(N(mu, exp(logvar)) || prior) per window and latent dimension, ``(B, code_size)``.
    ``prior`` is ``(mean, log-variance)`` rows; ``None`` is the standard normal."""
    logvar = logvar.clamp(-LOGVAR_CLIP, LOGVAR_CLIP)
    if prior is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    pm, plv = prior
    plv = plv.clamp(-LOGVAR_CLIP, LOGVAR_CLIP)
    return 0.5 * (plv - logvar + (logvar.exp() + (mu - pm).pow(2)) * torch.exp(-plv) - 1.0)


def vae_loss(x: Tensor, x_hat: Tensor, mu: Tensor, logvar: Tensor, beta: float,
             prior: tuple[Tensor, Tensor] | None = None,
             weights: LossWeights | None = None) -> dict[str, Tensor]:
    """The authors' VAE objective, by parts. ``x``, ``x_hat``: ``(B, T, C)`` in [-1, 1].

    Returned parts (scalar tensors, averaged over the batch); the first six are *weighted
    contributions*, so ``total == mse + deriv_l1 + spec_hf + spec_spurious + spec_avg + kl + corr``
    exactly:

    * ``mse`` = 0.35 * mean over windows, samples and sites of ``(x_hat - x)^2``;
    * ``deriv_l1`` = 0.30 * mean of ``|diff_t x_hat - diff_t x|`` (first difference along time);
    * ``spec_hf`` = 0.25 * mean over the high-frequency STFT bins of
      ``|log(|X_hat| + eps) - log(|X| + eps)|``. The STFT runs along time, per site, with a Hann
      window of ``n_fft`` samples (64 for T >= 128; ``min(64, 2^floor(log2(T/2)))`` otherwise),
      hop ``n_fft / 4``, eps 0.01. **High frequency** means the upper half of the one-sided bins,
      ``k >= (n_fft // 2 + 1) // 2``, i.e. from about fs/4 up to fs/2 (25-50 Hz at fs = 100 Hz);
    * ``spec_spurious`` = 0.10 * mean over the same high-frequency bins of
      ``relu(log|X_hat| - log|X|) * [|X| < 0.1 * max |X| of that site's STFT]``: energy the
      reconstruction puts where the target has little (below -20 dB of its own peak);
    * ``spec_avg`` = ``weights.spec_avg`` (0 in the paper's loss) * mean over sites and all bins
      ``0..n_fft // 2`` of ``|log(mean_t |X_hat| + eps) - log(mean_t |X| + eps)|``, the STFT
      magnitudes averaged over the frames inside the window first (a Welch-type spectrum; the
      frames over the reflect padding are left out, as their leakage depends on phase). Averaging
      over time makes it blind to phase and timing, so it rewards the right spectral content
      where MSE and correlation cannot: for fibrillatory windows, whose waves are not predictable
      from the latent code, those terms favour a low-amplitude blur, and the paper's spectral
      terms only look above fs/4 (our measurement: VAE-C's AF reconstructions had a third of the
      real amplitude and generated AF windows an SR-like dominant frequency; notebook 03);
    * ``kl`` = beta * sum over latent dimensions of ``max(KL_d, free_bits)``, where ``KL_d`` is the
      batch mean of the KL of dimension d to the prior (standard normal for VAE-S, the class
      prior for VAE-C) and ``free_bits`` = 0.5 nats; log-variances are clipped to [-10, 10];
    * ``corr`` = 0.5 * (1 - mean Pearson correlation over time), the mean taken over windows and
      sites (a constant site gives correlation 0 rather than NaN).

    Diagnostics, not part of the sum: ``kl_raw`` (the KL with free bits, before beta),
    ``kl_true`` (without free bits), ``recon`` (the five reconstruction contributions),
    ``pearson`` (the mean correlation).
    """
    w = weights or LossWeights()
    if x.shape != x_hat.shape or x.ndim != 3:
        raise ValueError(f"x_hat: shape {tuple(x_hat.shape)} does not match x {tuple(x.shape)} "
                         "(expected (batch, T, C))")
    x = x.to(x_hat.dtype)
    mse = (x_hat - x).pow(2).mean()
    deriv = (torch.diff(x_hat, dim=1) - torch.diff(x, dim=1)).abs().mean()

    n_fft, hop = _stft_sizes(x.shape[1], w)
    k0 = (n_fft // 2 + 1) // 2
    with torch.no_grad():  # the target's spectrum (all bins, for each site's peak)
        mag_t, log_t = stft_logmag(x, n_fft, hop, w.log_eps, method=w.stft)
        peak = mag_t.amax(dim=(1, 3), keepdim=True)
        quiet_bins = (mag_t[..., k0:] < w.spurious_rel * peak).to(x.dtype)
        log_t = log_t[..., k0:]
    if w.spec_avg:
        mag_h, log_h = stft_logmag(x_hat, n_fft, hop, w.log_eps, method=w.stft)
        log_h = log_h[..., k0:]
        inner = _interior_frames(x.shape[1], n_fft, hop, mag_h.shape[1])
        spec_avg = (torch.log(mag_h[:, inner].mean(dim=1) + w.log_eps)
                    - torch.log(mag_t[:, inner].mean(dim=1) + w.log_eps)).abs().mean()
    else:  # the paper's loss: only the high bins of the reconstruction are needed
        _, log_h = stft_logmag(x_hat, n_fft, hop, w.log_eps, k_start=k0, method=w.stft)
        spec_avg = x_hat.new_zeros(())
    d_hf = log_h - log_t
    spec_hf = d_hf.abs().mean()
    spurious = (F.relu(d_hf) * quiet_bins).mean()

    kl_d = kl_divergence(mu, logvar, prior).mean(dim=0)
    kl_true = kl_d.sum()
    kl_raw = torch.clamp(kl_d, min=w.free_bits).sum()

    xc = x - x.mean(dim=1, keepdim=True)
    hc = x_hat - x_hat.mean(dim=1, keepdim=True)
    num = (xc * hc).sum(dim=1)
    den = torch.sqrt(xc.pow(2).sum(dim=1) * hc.pow(2).sum(dim=1) + 1e-12)
    pearson = (num / den).mean()

    parts = {
        "mse": w.mse * mse,
        "deriv_l1": w.deriv_l1 * deriv,
        "spec_hf": w.spec_hf * spec_hf,
        "spec_spurious": w.spec_spurious * spurious,
        "spec_avg": w.spec_avg * spec_avg,
        "kl": beta * kl_raw,
        "corr": w.corr * (1.0 - pearson),
    }
    total = parts["mse"]
    for name in LOSS_PARTS[1:]:
        total = total + parts[name]
    recon = (parts["mse"] + parts["deriv_l1"] + parts["spec_hf"] + parts["spec_spurious"]
             + parts["spec_avg"])
    return {"total": total, **parts, "kl_raw": kl_raw.detach(), "kl_true": kl_true.detach(),
            "recon": recon.detach(), "pearson": pearson.detach()}
