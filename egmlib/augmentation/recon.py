"""The reconstruction network of the augmentation experiment: a dual-branch VAE, BSPM -> EGM.

The paper group's model: one encoder reads a BSPM window
``(T, 64)`` into a shared latent Gaussian (mean, log-variance); two decoders read the latent, one
back to the BSPM ``(T, 64)``, one to the EGM ``(T, n_rec)``. Both branches are trained jointly, so
the latent has to explain the torso signal (the BSPM branch, a regulariser) and the heart signal
(the EGM branch, the task).

Layers (a function of ``T``, ``n_electrodes`` and ``n_rec`` only; :class:`ReconConfig`):

* encoder: the electrodes are the channels of 1-D temporal convolutions. ``len(channels)``
  ``Conv1d`` layers (kernel ``kernel``, stride 2, ``padding = kernel // 2``, so each maps ``n`` to
  ``ceil(n / 2)``) with GELU, then a dense layer from the flattened map to ``2 * latent_dim``
  (mean and log-variance). ``T = 400`` and ``channels = (32, 32, 64)`` give a 64 x 50 map.
* each decoder: a dense layer from the latent to the encoder's last map, ``len(channels)`` stages of
  linear x2 up-sampling + ``Conv1d`` + GELU (widths mirrored), a crop to ``T`` samples and a
  1 x 1 convolution to the output channels (64 electrodes or ``n_rec`` sites): a learned
  spatial basis applied at every time step, which keeps the large EGM branch cheap.

Loss (:func:`recon_loss`), on normalised signals, means over time, channels and windows::

    total = w_egm * MSE(EGM) + w_bspm * MSE(BSPM) + beta * KL + w_corr * (1 - corr(EGM))

with ``KL`` the Gaussian KL to N(0, I) summed over latent dimensions and averaged over windows,
and ``corr`` the mean per-site Pearson correlation over time of the reconstructed EGM (the
experiment's headline metric). Defaults: ``w_egm = 1`` (the task), ``w_bspm = 0.5`` (the
auxiliary branch, half weight so it shapes but does not dominate the latent), ``beta = 1e-4``
and ``w_corr = 1``, chosen on the validation simulations by the reconstruction network's choice
study (:func:`egmlib.workflow.studies.recon_choice_study`, record
``results/default/recon_choices.json``, k = 0, 40 epochs, seeds 0 and 1) together with Adam's
learning rate 1e-3 and the stopping rule of :class:`egmlib.core.params.AugmentConfig`. The
weights used before (``beta = 1e-3``, ``w_corr = 0.1``) left the network on a plateau near
zero correlation for tens of epochs (validation correlation 0.29 and 0.09 after 40 epochs on the
two seeds, against 0.49 and 0.49 for the chosen row): a heavier KL kept the latent from carrying
the input, and a light correlation term gave little gradient towards the signal's shape.

Normalisation: BSPM and EGM are each divided by one number, the standard deviation over all
training values (:meth:`DualBranchVAE.fit_scales`, called by :func:`train_recon` when the model is
not fitted yet), kept as buffers in the ``state_dict`` and mirrored in the config;
:func:`predict` takes and returns data units (mV). The BSPM branch reconstructs its (noisy)
input.

Training (:func:`train_recon`, a thin user of :func:`egmlib.core.training.fit`): Adam, gradient
norm clipped to 1, mini-batches shuffled by a numpy Generator of ``seed``, early stopping on the
validation total loss (eval mode, z = mean), best weights restored. Deterministic for a seed on
one machine (same thread count); the seed, deterministic kernels and threads hold for the call
only (:func:`egmlib.core.process.torch_state`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn
from torch.nn import functional as F

from egmlib.core import runs
from egmlib.core.checks import check_ints
from egmlib.core.params import SPECS
from egmlib.core.process import torch_state
from egmlib.core.training import FitResult, evaluate, fit
from egmlib.generators.train import precision_context, resolve_precision, torch_device

__all__ = [
    "LOSS_KEYS",
    "SCHEDULES",
    "DualBranchVAE",
    "ReconConfig",
    "check_schedule",
    "load_recon",
    "predict",
    "recon_loss",
    "recon_loss_moments",
    "save_recon",
    "target_moments",
    "train_recon",
]

#: The parts of :func:`recon_loss`, recorded per epoch in the history.
LOSS_KEYS = ("total", "egm", "bspm", "kl", "corr_loss", "corr")
#: Learning-rate schedules of :func:`train_recon`: the choices of the ``recon_schedule``
#: parameter, whose one home is :mod:`egmlib.core.params`.
SCHEDULES: tuple[str, ...] = tuple(SPECS["recon_schedule"].choices or ())


def check_schedule(schedule: str) -> None:
    """Raise ``ValueError`` naming ``schedule`` unless it is one of :data:`SCHEDULES`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: got {schedule!r}; allowed: {', '.join(SCHEDULES)}")


@dataclass
class ReconConfig:
    """Sizes, loss weights and (once fitted) normalisation scales of :class:`DualBranchVAE`."""

    T: int = 400
    n_electrodes: int = 64
    n_rec: int = 256
    latent_dim: int = 64
    channels: tuple[int, ...] = (32, 32, 64)
    kernel: int = 5
    w_egm: float = 1.0
    w_bspm: float = 0.5
    beta: float = 1e-4
    w_corr: float = 1.0
    bspm_scale: float | None = None
    egm_scale: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("T", "n_electrodes", "n_rec", "latent_dim", "kernel"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: got {v!r}; allowed: an int >= 1")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel: got {self.kernel}; allowed: an odd int")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels: got {self.channels!r}; allowed: a non-empty tuple of "
                             "ints >= 1")
        for name in ("w_egm", "w_bspm", "beta", "w_corr"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: got {v!r}; allowed: a finite number >= 0")

    @property
    def latent_length(self) -> int:
        """Time length of the encoder's last map: ``ceil`` halving per layer."""
        n = self.T
        for _ in self.channels:
            n = (n + 1) // 2
        return n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReconConfig:
        return cls(**{k: (tuple(v) if k == "channels" else v) for k, v in d.items()})


class _Decoder(nn.Module):
    def __init__(self, cfg: ReconConfig, out_channels: int) -> None:
        super().__init__()
        self.T = cfg.T
        self.start = (cfg.channels[-1], cfg.latent_length)
        self.fc = nn.Linear(cfg.latent_dim, cfg.channels[-1] * cfg.latent_length)
        widths = [*reversed(cfg.channels), cfg.channels[0]]
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[i], widths[i + 1], cfg.kernel, padding=cfg.kernel // 2)
            for i in range(len(cfg.channels)))
        self.head = nn.Conv1d(widths[-1], out_channels, 1)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, d)`` -> the map the 1 x 1 head reads, ``(B, channels[0], T)``."""
        h = F.gelu(self.fc(z)).view(z.shape[0], *self.start)
        for conv in self.convs:
            h = F.interpolate(h, scale_factor=2.0, mode="linear", align_corners=False)
            h = F.gelu(conv(h))
        return h[..., :self.T]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, d)`` -> channels-first output ``(B, out, T)``."""
        return self.head(self.features(z))


def _std(a: NDArray, block: int = 1 << 20) -> float:
    """Population standard deviation of every value of ``a``, in float64 by blocks of ``block``
    values (two passes: mean, then centred squares): ``float(np.asarray(a, np.float64).std())``
    without a float64 copy of a training set (``make bench``, section ``scores``: 3.2x faster
    for 984 pairs, ``results/bench/bench_scores.json``)."""
    flat = a.reshape(-1)
    n = flat.size
    if n == 0:
        return float("nan")
    mean = sum(float(flat[s:s + block].sum(dtype=np.float64)) for s in range(0, n, block)) / n
    css = 0.0
    for s in range(0, n, block):
        d = flat[s:s + block].astype(np.float64) - mean
        css += float(d @ d)
    return math.sqrt(css / n)


class DualBranchVAE(nn.Module):
    """BSPM encoder -> shared latent -> BSPM decoder and EGM decoder (see the module docstring).

    Tensors are normalised windows shaped ``(batch, T, channels)`` (or ``(batch, channels, T)``
    with ``channels_first=True``, the layout training uses: elementwise work on the transposed
    views was ~10x slower on the CPU); :func:`predict` works in data units.
    """

    def __init__(self, config: ReconConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        layers: list[nn.Module] = []
        c_in = cfg.n_electrodes
        for c in cfg.channels:
            layers += [nn.Conv1d(c_in, c, cfg.kernel, stride=2, padding=cfg.kernel // 2),
                       nn.GELU()]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.to_latent = nn.Linear(cfg.channels[-1] * cfg.latent_length, 2 * cfg.latent_dim)
        self.dec_bspm = _Decoder(cfg, cfg.n_electrodes)
        self.dec_egm = _Decoder(cfg, cfg.n_rec)
        self.register_buffer("bspm_scale", torch.tensor(cfg.bspm_scale or 0.0,
                                                        dtype=torch.float64))
        self.register_buffer("egm_scale", torch.tensor(cfg.egm_scale or 0.0,
                                                       dtype=torch.float64))

    # --- normalisation ---------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return float(self.bspm_scale) > 0 and float(self.egm_scale) > 0

    def fit_scales(self, bspm: ArrayLike, egm: ArrayLike) -> DualBranchVAE:
        """Set the BSPM and EGM scales to the standard deviation of all training values."""
        scales = []
        for name, x in (("bspm", bspm), ("egm", egm)):
            s = _std(np.asarray(x))
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"{name}: training values have no spread (std {s}); cannot "
                                 "normalise")
            scales.append(s)
        self.bspm_scale.fill_(scales[0])
        self.egm_scale.fill_(scales[1])
        self.config.bspm_scale, self.config.egm_scale = scales
        return self

    def _scales(self) -> tuple[float, float]:
        if not self.fitted:
            raise RuntimeError("DualBranchVAE: scales not fitted; call fit_scales or train_recon")
        return float(self.bspm_scale), float(self.egm_scale)

    # --- the network -----------------------------------------------------------------------
    def encode(self, bspm: torch.Tensor, channels_first: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised BSPM ``(B, T, n_electrodes)`` -> latent mean and log-variance ``(B, d)``."""
        h = self.encoder(bspm if channels_first else bspm.transpose(1, 2))
        mu, logvar = self.to_latent(h.flatten(1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-20.0, 10.0)

    def decode_egm(self, z: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        """Latent ``(B, d)`` -> normalised EGM ``(B, T, n_rec)``."""
        y = self.dec_egm(z)
        return y if channels_first else y.transpose(1, 2)

    def decode_bspm(self, z: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        """Latent ``(B, d)`` -> normalised BSPM ``(B, T, n_electrodes)``."""
        y = self.dec_bspm(z)
        return y if channels_first else y.transpose(1, 2)

    def forward(self, bspm: torch.Tensor, channels_first: bool = False
                ) -> dict[str, torch.Tensor]:
        """``egm``, ``bspm`` (reconstructions), ``mu``, ``logvar``, ``z``; z is sampled in
        training mode and equals ``mu`` in eval mode."""
        mu, logvar = self.encode(bspm, channels_first)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return {"egm": self.decode_egm(z, channels_first),
                "bspm": self.decode_bspm(z, channels_first), "mu": mu, "logvar": logvar, "z": z}


def _pearson_sites(x: torch.Tensor, y: torch.Tensor, dim: int, eps: float = 1e-8
                   ) -> torch.Tensor:
    """Mean over windows and sites of the Pearson correlation over time (axis ``dim``).

    From moments (``E[xy] - E[x] E[y]``), which makes fewer full-size temporaries than centring
    first (elementwise work on the big EGM tensors is a large share of a CPU step); fine in
    float32 for normalised windows."""
    mx, my = x.mean(dim), y.mean(dim)
    sxy = (x * y).mean(dim) - mx * my
    sxx = (x * x).mean(dim) - mx * mx
    syy = (y * y).mean(dim) - my * my
    return (sxy / torch.sqrt(sxx.clamp_min(0) * syy.clamp_min(0) + eps)).mean()


def recon_loss(out: Mapping[str, torch.Tensor], bspm: torch.Tensor, egm: torch.Tensor,
               config: ReconConfig, channels_first: bool = False) -> dict[str, torch.Tensor]:
    """The loss parts on normalised windows (module docstring): ``total``, ``egm`` and ``bspm``
    (MSEs), ``kl`` (summed over latent dimensions, mean over windows), ``corr_loss``
    (``1 - corr``) and ``corr`` (mean per-site EGM correlation, a monitor). ``out`` is
    :meth:`DualBranchVAE.forward`'s output in the same layout as the targets."""
    mse_egm = F.mse_loss(out["egm"], egm)
    corr = _pearson_sites(out["egm"], egm, dim=2 if channels_first else 1)
    return _loss_parts(config, mse_egm, F.mse_loss(out["bspm"], bspm), out["mu"], out["logvar"],
                       corr)


def _loss_parts(config: ReconConfig, mse_egm: torch.Tensor, mse_bspm: torch.Tensor,
                mu: torch.Tensor, logvar: torch.Tensor, corr: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """The weighted total and the parts of :data:`LOSS_KEYS` from the EGM and BSPM MSEs, the
    latent Gaussian and the mean EGM correlation (shared by both ways of computing them)."""
    kl = (-0.5 * (1.0 + logvar - mu * mu - logvar.exp()).sum(-1)).mean()
    corr_loss = 1.0 - corr
    total = (config.w_egm * mse_egm + config.w_bspm * mse_bspm + config.beta * kl
             + config.w_corr * corr_loss)
    return {"total": total, "egm": mse_egm, "bspm": mse_bspm, "kl": kl, "corr_loss": corr_loss,
            "corr": corr.detach()}


def target_moments(egm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window, per-site time statistics of a channels-first target ``(B, C, T)``: the mean
    and the centred sum of squares ``sum_t (e - mean)^2``, each ``(B, C)`` (what
    :func:`recon_loss_moments` needs; they do not depend on the weights)."""
    mean = egm.mean(-1)
    return mean, (egm - mean.unsqueeze(-1)).pow(2).sum(-1)


def recon_loss_moments(model: DualBranchVAE, bspm: torch.Tensor, egm: torch.Tensor,
                       e_mean: torch.Tensor | None = None, e_css: torch.Tensor | None = None,
                       precision: str = "float32") -> dict[str, torch.Tensor]:
    """:func:`recon_loss` of ``model(bspm)`` against ``egm`` (channels-first, normalised), without
    ever forming the reconstructed EGM -- the same numbers up to float rounding.

    The EGM head is a 1 x 1 convolution, ``y[c, t] = W[c] . h[:, t] + b[c]`` with ``h`` the
    decoder's last map ``(K, T)``, K = ``channels[0]`` (32) much smaller than the sites (256).
    With ``hc = h - mean_t h`` (centred in time), ``P = hc e^T`` ``(K, C)`` and
    ``G = hc hc^T`` ``(K, K)``, every sum over time the loss needs per window and site follows:

    * mean: ``m_y[c] = W[c] . mean_t h + b[c]``;
    * centred cross and square sums: ``sum_t (y - m_y)(e - m_e) = W[c] . P[:, c]`` and
      ``sum_t (y - m_y)^2 = W[c]^T G W[c]``;
    * squared error: ``sum_t (y - e)^2 = W^T G W - 2 W . P + sum_t (e - m_e)^2 + T (m_y - m_e)^2``,

    so the MSE and the per-site Pearson correlation come from one batched matrix product with the
    target instead of a dozen passes over ``(B, 256, 400)`` tensors, which were ~90% of a CPU
    training step (memory-bound elementwise work). Centring ``h`` first keeps the variances free
    of the cancellation that ``E[y^2] - E[y]^2`` suffers when a site's mean dominates.
    ``e_mean``, ``e_css``: :func:`target_moments` of ``egm`` (computed here when not given).
    ``precision`` (resolved, :func:`egmlib.generators.train.resolve_precision`): ``"bfloat16"``
    runs the encoder and both decoders under autocast; the moments and the loss stay float32.
    """
    cfg = model.config
    with precision_context(precision, bspm.device):
        mu, logvar = model.encode(bspm, channels_first=True)
        mu, logvar = mu.float(), logvar.float()
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if model.training else mu
        bspm_hat = model.dec_bspm(z).float()
        h = model.dec_egm.features(z).float()                    # (B, K, T)
    if e_mean is None or e_css is None:
        e_mean, e_css = target_moments(egm)
    head = model.dec_egm.head
    w = head.weight.view(head.out_channels, -1)                  # (C, K)
    n_t = h.shape[-1]
    h_mean = h.mean(-1)                                          # (B, K)
    hc = h - h_mean.unsqueeze(-1)
    p = torch.bmm(hc, egm.transpose(1, 2))                      # (B, K, C)
    g = torch.bmm(hc, hc.transpose(1, 2))                       # (B, K, K)
    s_ye = (p * w.T).sum(1)                                      # (B, C) centred cross sum
    s_yy = ((g @ w.T) * w.T).sum(1)                              # (B, C) centred square sum
    m_y = h_mean @ w.T + head.bias
    sq_err = s_yy - 2 * s_ye + e_css + n_t * (m_y - e_mean).pow(2)
    mse_egm = sq_err.sum() / sq_err.numel() / n_t
    corr = (s_ye / torch.sqrt(s_yy.clamp_min(0) * e_css.clamp_min(0) + 1e-8 * n_t * n_t)).mean()
    return _loss_parts(cfg, mse_egm, F.mse_loss(bspm_hat, bspm), mu, logvar, corr)


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def _check_pairs(name: str, bspm: ArrayLike, egm: ArrayLike, cfg: ReconConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(bspm)
    e = np.asarray(egm)
    if b.ndim != 3 or b.shape[1:] != (cfg.T, cfg.n_electrodes):
        raise ValueError(f"bspm_{name}: expected (n, T={cfg.T}, {cfg.n_electrodes}); got "
                         f"{b.shape}")
    if e.ndim != 3 or e.shape[1:] != (cfg.T, cfg.n_rec):
        raise ValueError(f"egm_{name}: expected (n, T={cfg.T}, n_rec={cfg.n_rec}); got {e.shape}")
    if b.shape[0] != e.shape[0] or b.shape[0] == 0:
        raise ValueError(f"egm_{name}: {e.shape[0]} windows for {b.shape[0]} BSPM windows "
                         "(need the same number, at least one)")
    for what, a in (("bspm", b), ("egm", e)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{what}_{name}: contains NaN or infinite values")
    return b, e


def _to_tensor(x: np.ndarray, scale: float, device: torch.device,
               channels_first: bool = False) -> torch.Tensor:
    """Normalised float32 tensor, ``(n, T, C)`` or contiguous ``(n, C, T)``."""
    y = np.asarray(x, np.float32) / np.float32(scale)
    if channels_first:
        y = y.transpose(0, 2, 1)
    return torch.from_numpy(np.ascontiguousarray(y)).to(device)


def _slices(tensors: tuple[torch.Tensor, ...], batch_size: int, order: torch.Tensor | None = None
            ) -> Iterator[tuple[tuple[torch.Tensor, ...], int]]:
    """``(batch tensors, windows)`` of consecutive slices of the rows (in ``order`` when given,
    else as stored): :func:`egmlib.core.training.fit`'s batches."""
    n = tensors[0].shape[0]
    for s in range(0, n, batch_size):
        if order is None:
            yield tuple(t[s:s + batch_size] for t in tensors), min(batch_size, n - s)
        else:
            idx = order[s:s + batch_size]
            yield tuple(t[idx] for t in tensors), len(idx)


def _evaluate(model: DualBranchVAE, b: torch.Tensor, e: torch.Tensor, batch_size: int
              ) -> dict[str, float]:
    """Window-weighted means of :data:`LOSS_KEYS` over normalised channels-first pairs (eval
    mode, z = mean): the validation of :func:`train_recon`."""
    return evaluate(model, _slices((b, e), batch_size),
                    lambda be: recon_loss_moments(model, *be), LOSS_KEYS)


def _history(result: FitResult, settings: dict[str, Any], t_start: float) -> dict[str, Any]:
    """:func:`train_recon`'s history (plain values) from the loop's result."""
    return {
        "train": {k: list(result.train.get(k, ())) for k in LOSS_KEYS},
        "val": {k: list(result.val.get(k, ())) for k in LOSS_KEYS},
        "epoch_s": list(result.epoch_s), "lr": list(result.lr), "best_epoch": result.best_epoch,
        "best_val": result.best_val, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "seconds": time.perf_counter() - t_start,
        "pairs_per_s": result.samples_per_s, "settings": settings,
    }


def train_recon(model: DualBranchVAE, bspm_train: ArrayLike, egm_train: ArrayLike,
                bspm_val: ArrayLike, egm_val: ArrayLike, epochs: int = 40, batch_size: int = 32,
                lr: float = 1e-3, seed: int = 0, patience: int = 8, device: str = "cpu",
                progress: bool = True, clip_norm: float = 1.0, threads: int | None = None,
                min_epochs: int = 0, precision: str = "float32",
                schedule: str = "constant") -> dict[str, Any]:
    """Train ``model`` in place on pairs (BSPM ``(n, T, 64)``, EGM ``(n, T, n_rec)``, data units)
    and return its history (plain values).

    Scales are fitted on the training pairs when the model has none. Adam(``lr``), gradient norm
    clipped to ``clip_norm``, ``batch_size`` windows per step, shuffled by ``seed``; early
    stopping after ``patience`` epochs without a lower validation ``total`` (eval mode), never
    before ``min_epochs`` epochs; the best
    weights are restored (the loop: :func:`egmlib.core.training.fit`). Training and validation
    pairs must come from different simulations. A NaN or infinite loss raises
    :class:`egmlib.core.training.TrainingDivergedError` (a ``RuntimeError``) with the best weights
    restored. The loss is computed by :func:`recon_loss_moments` (the numbers of
    :func:`recon_loss` without forming the reconstructed EGM; 2.4x more pairs/s at batch 32,
    measured side by side). ``precision`` (:func:`egmlib.generators.train.resolve_precision`):
    ``"bfloat16"`` trains and validates the network's layers in mixed precision (float32
    weights, Adam, moments and loss); the resolved value is in ``settings``. Prediction
    (:func:`predict`) is always float32. ``schedule`` (:data:`SCHEDULES`): ``"constant"``
    keeps ``lr``; ``"cosine"`` anneals it per epoch from ``lr`` towards 0 at ``epochs``
    (``torch.optim.lr_scheduler.CosineAnnealingLR``, Loshchilov and Hutter, ICLR 2017), so a
    short budget ends on small steps instead of the noise of a large constant rate.

    Process state: the call runs with torch's generators seeded by ``seed``, deterministic
    kernels and ``threads`` torch CPU threads (``None``, the default: the ``EGMLIB_THREADS``
    variable or every core, :func:`egmlib.core.process.default_threads`), and restores all three
    on return. With the moment loss, two threads train 1.6x faster than one on a
    2-core AMD EPYC virtual machine (630 against 389 pairs/s, ``make bench``); before it, when
    elementwise passes
    dominated, one thread was faster.

    History: ``train`` / ``val`` map each of :data:`LOSS_KEYS` to per-epoch values; also
    ``epoch_s``, ``lr`` (each epoch's learning rate), ``best_epoch`` (0-based), ``best_val``,
    ``epochs_run``, ``stopped_early``,
    ``seconds`` (the whole call), ``pairs_per_s`` (training steps only) and ``settings``.
    """
    t_start = time.perf_counter()
    check_ints(("epochs", epochs, 1), ("batch_size", batch_size, 1), ("patience", patience, 1),
               ("min_epochs", min_epochs, 0))
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: got {lr!r}; allowed: a finite number > 0")
    check_schedule(schedule)
    cfg = model.config
    b_tr, e_tr = _check_pairs("train", bspm_train, egm_train, cfg)
    b_va, e_va = _check_pairs("val", bspm_val, egm_val, cfg)
    dev = torch_device(device)
    precision = resolve_precision(precision, dev)
    if not model.fitted:
        model.fit_scales(b_tr, e_tr)
    sb, se = model._scales()

    rng = np.random.default_rng(seed)
    with torch_state(seed, threads, device=dev) as n_threads:
        model.to(dev)
        xb_tr, xe_tr = _to_tensor(b_tr, sb, dev, True), _to_tensor(e_tr, se, dev, True)
        xb_va, xe_va = _to_tensor(b_va, sb, dev, True), _to_tensor(e_va, se, dev, True)
        train = (xb_tr, xe_tr, *target_moments(xe_tr))
        settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                    "patience": patience, "min_epochs": min_epochs, "clip_norm": clip_norm,
                    "device": device, "precision": precision, "schedule": schedule,
                    "threads": n_threads, "n_train": int(b_tr.shape[0]),
                    "n_val": int(b_va.shape[0]), "config": cfg.to_dict()}
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                     if schedule == "cosine" else None)
        result = fit(
            model, lambda batch, e: recon_loss_moments(model, *batch, precision=precision),
            lambda e: _slices(train, batch_size, torch.from_numpy(rng.permutation(len(b_tr)))),
            lambda e: _slices((xb_va, xe_va), max(batch_size, 64)),
            optimizer, scheduler, epochs=epochs, patience=patience,
            min_epochs=min_epochs, clip_norm=clip_norm, record=LOSS_KEYS,
            progress="train recon" if progress else None, show={"corr": "corr"},
            hint="; try a lower lr")
    return _history(result, settings, t_start)


@torch.no_grad()
def predict(model: DualBranchVAE, bspm: ArrayLike, batch_size: int = 64) -> NDArray[np.float32]:
    """EGM windows ``(n, T, n_rec)`` (mV) reconstructed from BSPM windows ``(n, T, 64)`` or one
    ``(T, 64)`` window (mV), through the latent mean (eval mode)."""
    cfg = model.config
    b = np.asarray(bspm)
    single = b.ndim == 2
    if single:
        b = b[None]
    if b.ndim != 3 or b.shape[1:] != (cfg.T, cfg.n_electrodes):
        raise ValueError(f"bspm: expected (n, T={cfg.T}, {cfg.n_electrodes}) or (T, "
                         f"{cfg.n_electrodes}); got {np.shape(bspm)}")
    sb, se = model._scales()
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, b.shape[0], batch_size):
        x = _to_tensor(b[s:s + batch_size], sb, dev)
        mu, _ = model.encode(x)
        out.append(model.decode_egm(mu).cpu().numpy())
    model.train(was_training)
    y = (np.concatenate(out) * np.float32(se)).astype(np.float32)
    return y[0] if single else y


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
def save_recon(path: str | Path, model: DualBranchVAE,
               history: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> Path:
    """Write config, weights (with the scales), history and ``extra`` atomically."""
    return runs.save_torch_checkpoint(path, {
        "format": "egmlib.augmentation.recon/1",
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": dict(history or {}),
    }, extra)


def load_recon(path: str | Path, device: str = "cpu") -> tuple[DualBranchVAE, dict[str, Any]]:
    """Rebuild :func:`save_recon`'s model (eval mode) and return it with the rest of the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no reconstruction checkpoint here")
    payload = torch.load(path, map_location=device, weights_only=True)  # no pickled code
    if payload.get("format") != "egmlib.augmentation.recon/1":
        raise ValueError(f"{path}: not an egmlib.augmentation.recon/1 checkpoint")
    model = DualBranchVAE(ReconConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}
