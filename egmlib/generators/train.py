"""Training of VAE-S and VAE-C: normalisation, the loop, early stopping, checkpoints, speed.

* :class:`Normalizer` scales windows to [-1, 1] by one robust max-abs (a high quantile of
  ``|x|``) fitted on training windows only, so relative amplitudes between sites are kept.
* :func:`train_vae` runs Adam with gradient-norm clipping (1.0), ``ExponentialLR(0.95)`` per epoch,
  a linear beta warm-up, and early stopping on the **validation** loss (the authors' code watched
  the training loss by mistake); the best weights are restored at the end.
* :func:`save_checkpoint` / :func:`load_checkpoint` write and read one ``.pt`` file atomically with
  weights, model config, normaliser, history and provenance.
* :func:`training_throughput` measures windows per second of one training step for the plain eager
  baseline and for the optimised CPU path used by :func:`train_vae` (:func:`prepare_model`).

Measured on the project's 2-core CPU machine (torch 2.13.0, 2 threads, medians of 3 interleaved
runs; windows/s of forward + loss + backward + Adam):

==========  ======================  ======================  =====
size        eager (baseline)        optimized               ratio
==========  ======================  ======================  =====
400 x 256   10.4 (batch 32)         21.0 (batch 16)         2.0x
400 x 256   16.2 (batch 16)         21.0 (batch 16)         1.3x
400 x 256   10.4 (batch 32)         17.6 (batch 32)         1.7x
400 x 2048  1.24 (batch 8)          2.49 (batch 8)          2.0x
==========  ======================  ======================  =====

What helped: channels-last weights (the decoder's transposed and smoothing convolutions ~2x),
the single-channel smoothing convolution as a shifted sum, the loss's STFT as one matrix product
(the loss's share of a step fell from ~25% to ~10%), batch 16 rather than 32 (cache), 2 threads
rather than 1 (~1.5x). ``torch.compile`` of the model gave nothing on this CPU (16.2 vs 17.8
windows/s at batch 16, after ~20 s of compiling) and is not used. What remains is the encoder's
second convolution (32 -> 64 filters, 5 x 15), about a third of a step.

The ceiling (:func:`training_flops`, :func:`matmul_gflops`; ``make bench``, section ``train``,
2026-11-24): a step costs 2.94 GFLOP per 400 x 256 window and 18.9 per 400 x 2048 window; the
CPU does 161 GFLOP/s in a 1024 x 1024 float32 product; the optimised step reaches 57 GFLOP/s
(35% of it), eager 28. A rate of 70 windows/s at 400 x 256 would take 206 GFLOP/s.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from egmlib.core import runs
from egmlib.core.checks import check_ints
from egmlib.generators.models import (
    LOSS_PARTS,
    ConvVAE,
    LossWeights,
    TemporalSmooth,
    VAEConfig,
    vae_loss,
)

__all__ = [
    "Normalizer",
    "TrainingDivergedError",
    "configure_threads",
    "load_checkpoint",
    "matmul_gflops",
    "prepare_model",
    "save_checkpoint",
    "seed_everything",
    "train_vae",
    "training_flops",
    "training_throughput",
]

#: Keys of every loss dictionary recorded per epoch in the history.
HISTORY_KEYS = ("total", *LOSS_PARTS, "kl_raw", "kl_true", "recon", "pearson")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite. ``history`` holds the epochs before; the model holds the
    best weights seen so far, and the checkpoint file (if any) is the last good one."""

    def __init__(self, message: str, history: dict[str, Any]) -> None:
        super().__init__(message)
        self.history = history


def seed_everything(seed: int, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, numpy and torch (:func:`egmlib.core.runs.seed_everything`) and, where cheap, ask
    torch for deterministic kernels. Returns a fresh numpy Generator."""
    rng = runs.seed_everything(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        # warn_only: a kernel without a deterministic version warns instead of failing.
        torch.use_deterministic_algorithms(True, warn_only=True)
    return rng


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default: ``EGMLIB_THREADS`` or every available
    core; measured best on the 2-core machines, see :func:`training_throughput`)."""
    if n is None:
        n = int(os.environ.get("EGMLIB_THREADS", 0)) or available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def torch_device(device: str, threads: int | None = None) -> torch.device:
    """The torch device named by ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``); on the CPU,
    torch's intra-op threads are set by :func:`configure_threads`. Asking for CUDA where it is not
    available is a ``ValueError``, before any work."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked but CUDA is not available")
    dev = torch.device(device)
    if dev.type == "cpu":
        configure_threads(threads)
    return dev


# ------------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------------
@dataclass
class Normalizer:
    """Scale windows to [-1, 1]: ``x / scale`` clipped, with ``scale`` the ``quantile`` of
    ``|x|`` over the training windows (one number for all sites, so the spatial pattern of
    amplitudes survives). ``inverse`` multiplies back (clipped values stay clipped)."""

    quantile: float = 0.999
    scale: float | None = None
    max_values: int = 20_000_000

    def fit(self, X: ArrayLike) -> Normalizer:
        """Fit on training windows ``(n, T, C)`` (a strided subsample above ``max_values``)."""
        X = np.asarray(X)
        if X.ndim != 3 or X.size == 0:
            raise ValueError(f"X: expected training windows shaped (n, T, C); got {X.shape}")
        if not 0.5 <= self.quantile <= 1.0:
            raise ValueError(f"quantile: got {self.quantile!r}; allowed: [0.5, 1]")
        flat = X.reshape(-1)
        step = max(1, math.ceil(flat.size / self.max_values))
        sub = np.abs(flat[::step].astype(np.float64))
        if not np.all(np.isfinite(sub)):
            raise ValueError("X: training windows contain NaN or infinite values")
        scale = float(np.quantile(sub, self.quantile))
        if scale <= 0:
            scale = float(sub.max()) or 1.0
        self.scale = scale
        return self

    def _need_fit(self) -> float:
        if self.scale is None:
            raise RuntimeError("Normalizer: call fit(X_train) first")
        return self.scale

    def transform(self, X: ArrayLike) -> NDArray[np.float32]:
        s = self._need_fit()
        return np.clip(np.asarray(X, dtype=np.float32) / np.float32(s), -1.0, 1.0)

    def inverse(self, Z: ArrayLike) -> NDArray[np.float32]:
        s = self._need_fit()
        return np.asarray(Z, dtype=np.float32) * np.float32(s)

    def to_dict(self) -> dict[str, Any]:
        return {"quantile": self.quantile, "scale": self.scale, "max_values": self.max_values}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        return cls(quantile=float(d["quantile"]),
                   scale=None if d.get("scale") is None else float(d["scale"]),
                   max_values=int(d.get("max_values", 20_000_000)))


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: ConvVAE, normalizer: Normalizer | None,
                    history: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write weights, model config, normaliser, history, ``extra`` and provenance to ``path``
    atomically (:func:`egmlib.core.runs.atomic_path`). ``extra`` should hold plain values; its
    ``params`` and ``seed`` entries, if present, go into the provenance."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return runs.save_torch_checkpoint(path, {
        "format": "egmlib.vae/1",
        "config": model.config.to_dict(),
        "state_dict": state,
        "normalizer": normalizer.to_dict() if normalizer is not None else None,
        "history": dict(history or {}),
    }, extra)


def load_checkpoint(path: str | Path, device: str = "cpu", optimized: bool = True
                    ) -> tuple[ConvVAE, Normalizer | None, dict[str, Any]]:
    """Rebuild the model (in eval mode) and normaliser from :func:`save_checkpoint`'s file.
    ``meta`` holds ``config``, ``history``, ``extra`` and ``provenance``. The model is prepared
    like :func:`train_vae`'s (:func:`prepare_model` with ``optimized``), so it gives bit-identical
    outputs to the trained model on the same machine."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != "egmlib.vae/1":
        raise ValueError(f"{path}: not an egmlib VAE checkpoint")
    config = VAEConfig.from_dict(payload["config"])
    model = ConvVAE(config)
    model.load_state_dict(payload["state_dict"])
    prepare_model(model, device, optimized=optimized).eval()
    norm = payload["normalizer"]
    normalizer = Normalizer.from_dict(norm) if norm is not None else None
    meta = {k: payload[k] for k in ("config", "history", "extra", "provenance")}
    return model, normalizer, meta


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def prepare_model(model: ConvVAE, device: str | torch.device = "cpu",
                  optimized: bool = True) -> ConvVAE:
    """Move the model to ``device``; with ``optimized``, store its 4-D weights channels-last
    (NHWC), which oneDNN's CPU convolutions (and cuDNN's) run faster, and let the decoder's
    single-channel smoothing convolution use its shifted-sum path (:class:`TemporalSmooth`);
    without it, the plain eager baseline. Measured: :func:`training_throughput`. Numbers change
    only by float rounding."""
    model.to(device)
    for m in model.modules():
        if isinstance(m, TemporalSmooth):
            m.fast = optimized
    model.to(memory_format=torch.channels_last if optimized else torch.contiguous_format)
    return model


def _check_data(name: str, X: Any, y: Any, model: ConvVAE) -> tuple[np.ndarray, np.ndarray | None]:
    cfg = model.config
    X = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if X.ndim != 3 or X.shape[1:] != (cfg.T, cfg.C):
        raise ValueError(f"{name}: expected windows shaped (n, T={cfg.T}, C={cfg.C}); got "
                         f"{X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: no windows")
    yname = "y" + name[1:]
    if not cfg.n_classes:
        return X, None
    if y is None:
        raise ValueError(f"{yname}: VAE-C needs labels")
    y = np.asarray(y)
    if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{yname}: expected {X.shape[0]} integer labels; got {y.shape} {y.dtype}")
    bad = np.setdiff1d(np.unique(y), np.arange(cfg.n_classes))
    if bad.size:
        raise ValueError(f"{yname}: unknown class label {bad[0]}; allowed: "
                         f"0..{cfg.n_classes - 1}")
    return X, y.astype(np.int64)


def _batch(X: np.ndarray, y: np.ndarray | None, idx: np.ndarray, normalizer: Normalizer | None,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    xb = X[np.sort(idx)] if isinstance(X, np.memmap) else X[idx]
    if isinstance(X, np.memmap):  # keep the shuffled order after a sorted (fast) memmap read
        xb = xb[np.argsort(np.argsort(idx))]
    xb = normalizer.transform(xb) if normalizer is not None else np.asarray(xb, np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(xb)).to(device)
    yt = None if y is None else torch.from_numpy(y[idx]).to(device)
    return xt, yt


def _step_loss(model: ConvVAE, xb: torch.Tensor, yb: torch.Tensor | None, beta: float,
               weights: LossWeights | None, net: Any = None) -> dict[str, torch.Tensor]:
    """Forward pass and every loss part of one batch. ``net``: the callable to run instead
    of ``model`` (a ``torch.compile`` of it); the prior always comes from ``model``."""
    x_hat, mu, logvar = (model if net is None else net)(xb, yb)
    prior = model.prior(yb, batch=xb.shape[0]) if model.conditional else None
    return vae_loss(xb, x_hat, mu, logvar, beta, prior=prior, weights=weights)


@torch.no_grad()
def _evaluate(model: ConvVAE, X: np.ndarray, y: np.ndarray | None, batch_size: int,
              beta: float, beta_monitor: float, normalizer: Normalizer | None,
              device: torch.device, weights: LossWeights | None) -> dict[str, float]:
    """Window-weighted mean of every loss part (eval mode: z = mu) and the monitored value."""
    model.eval()
    sums: dict[str, float] = {}
    n = X.shape[0]
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        xb, yb = _batch(X, y, idx, normalizer, device)
        parts = _step_loss(model, xb, yb, beta, weights)
        for k in HISTORY_KEYS:
            sums[k] = sums.get(k, 0.0) + float(parts[k]) * len(idx)
    out = {k: v / n for k, v in sums.items()}
    # The monitored loss uses the target beta, so epochs during the warm-up are comparable.
    out["monitor"] = out["total"] - out["kl"] + beta_monitor * out["kl_raw"]
    return out


def train_vae(model: ConvVAE, X_train: ArrayLike, y_train: ArrayLike | None,
              X_val: ArrayLike, y_val: ArrayLike | None, *, epochs: int = 50,
              batch_size: int = 16, lr: float = 1e-3, beta_max: float = 1e-3,
              warmup_epochs: int = 10, patience: int = 8, device: str = "cpu", seed: int = 0,
              checkpoint_path: str | Path | None = None, progress: bool = True,
              normalizer: Normalizer | None = None, weights: LossWeights | None = None,
              lr_decay: float = 0.95, clip_norm: float = 1.0, optimized: bool = True,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` in place and return its history (plain, JSON-serialisable values).

    Data: ``X_*`` are windows ``(n, T, C)`` (numpy or memmap), already scaled to [-1, 1] unless a
    fitted ``normalizer`` is given (then they are in data units and scaled batch by batch; the
    normaliser is also stored in checkpoints). Train and validation windows must come from
    different simulations. ``y_*``: integer labels for VAE-C, ``None`` for VAE-S.

    Schedule: Adam(``lr``); gradient norm clipped to ``clip_norm``; learning rate times
    ``lr_decay`` after every epoch (``ExponentialLR``); beta rises linearly from
    ``beta_max / warmup_epochs`` in the first epoch to ``beta_max`` at epoch ``warmup_epochs``
    (``warmup_epochs = 0``: ``beta_max`` from the start).

    Early stopping watches the validation loss evaluated at ``beta_max`` (eval mode, z = mu)
    -- not the training loss -- and stops after ``patience`` epochs without improvement; the best
    weights are restored before returning. With ``checkpoint_path``, the best model so far is
    saved (atomically) at every improvement, so the file always holds the last good model.

    A NaN or infinite training loss raises :class:`TrainingDivergedError` naming the epoch and
    batch; the model is reset to its best weights and the checkpoint file is left as it was.

    History: ``train`` and ``val`` map every loss part (see :data:`HISTORY_KEYS`) to per-epoch
    values (train: means over the epoch's batches, in train mode); ``val['monitor']`` is the
    early-stopping value; also ``beta``, ``lr``, ``epoch_s``, ``best_epoch`` (0-based),
    ``best_val``, ``stopped_early``, ``epochs_run``, ``windows_per_s``.
    """
    check_ints(("epochs", epochs, 1), ("batch_size", batch_size, 1),
               ("warmup_epochs", warmup_epochs, 0), ("patience", patience, 1))
    for name, value in (("lr", lr), ("beta_max", beta_max), ("lr_decay", lr_decay)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: got {value!r}; allowed: a finite number >= 0")
    if normalizer is not None and normalizer.scale is None:
        raise ValueError("normalizer: not fitted; call normalizer.fit(X_train) first")
    X_train, y_train = _check_data("X_train", X_train, y_train, model)
    X_val, y_val = _check_data("X_val", X_val, y_val, model)
    dev = torch_device(device)

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    prepare_model(model, dev, optimized=optimized)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay)

    history: dict[str, Any] = {
        "train": {k: [] for k in HISTORY_KEYS},
        "val": {k: [] for k in (*HISTORY_KEYS, "monitor")},
        "beta": [], "lr": [], "epoch_s": [], "best_epoch": None, "best_val": None,
        "stopped_early": False, "epochs_run": 0, "windows_per_s": None,
        "settings": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "beta_max": beta_max,
                     "warmup_epochs": warmup_epochs, "patience": patience, "seed": seed,
                     "lr_decay": lr_decay, "clip_norm": clip_norm, "device": device,
                     "n_train": int(X_train.shape[0]), "n_val": int(X_val.shape[0])},
    }
    best_state = copy.deepcopy(model.state_dict())
    best_val = math.inf
    since_best = 0
    n = X_train.shape[0]
    n_batches = math.ceil(n / batch_size)
    total_time = 0.0

    name = "VAE-C" if model.conditional else "VAE-S"
    bar = runs.progress(range(epochs), desc=f"train {name}") if progress else range(epochs)
    for epoch in bar:
        beta = beta_max * min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else beta_max
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(n)
        sums = dict.fromkeys(HISTORY_KEYS, 0.0)
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = _batch(X_train, y_train, idx, normalizer, dev)
            parts = _step_loss(model, xb, yb, beta, weights)
            loss = parts["total"]
            if not torch.isfinite(loss):
                model.load_state_dict(best_state)
                where = (f"; the last good checkpoint {checkpoint_path} is kept"
                         if checkpoint_path is not None else "")
                bad = [k for k in LOSS_PARTS if not torch.isfinite(parts[k])]
                raise TrainingDivergedError(
                    f"training diverged: non-finite loss ({float(loss.detach())}) at epoch "
                    f"{epoch}, batch {b} (non-finite parts: {', '.join(bad) or 'total'}); the "
                    f"model was reset to the best weights (epoch {history['best_epoch']}){where}. "
                    "Check the data for NaN, or try a lower lr or beta_max.", history)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            for k in HISTORY_KEYS:
                sums[k] += float(parts[k].detach()) * len(idx)
        train_time = time.perf_counter() - t0
        total_time += train_time
        val = _evaluate(model, X_val, y_val, batch_size, beta, beta_max, normalizer, dev, weights)
        for k in HISTORY_KEYS:
            history["train"][k].append(sums[k] / n)
        for k, v in val.items():
            history["val"][k].append(v)
        history["beta"].append(beta)
        history["lr"].append(opt.param_groups[0]["lr"])
        history["epoch_s"].append(time.perf_counter() - t0)
        history["epochs_run"] = epoch + 1
        sched.step()

        if not math.isfinite(val["monitor"]):
            model.load_state_dict(best_state)
            raise TrainingDivergedError(
                f"training diverged: non-finite validation loss at epoch {epoch}; the model was "
                f"reset to the best weights (epoch {history['best_epoch']})", history)
        if val["monitor"] < best_val:
            best_val = val["monitor"]
            best_state = copy.deepcopy(model.state_dict())
            history["best_epoch"], history["best_val"] = epoch, best_val
            since_best = 0
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, model, normalizer, history, extra)
        else:
            since_best += 1
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(train=f"{history['train']['total'][-1]:.3f}",
                            val=f"{val['monitor']:.3f}", corr=f"{val['pearson']:.2f}")
        if since_best >= patience:
            history["stopped_early"] = True
            break

    model.load_state_dict(best_state)
    model.eval()
    history["windows_per_s"] = n * history["epochs_run"] / total_time if total_time else None
    if checkpoint_path is not None:  # final file: best weights with the complete history
        save_checkpoint(checkpoint_path, model, normalizer, history, extra)
    return history


# ------------------------------------------------------------------------------------------------
# Speed
# ------------------------------------------------------------------------------------------------
VARIANTS = ("eager", "optimized", "compiled")


def training_flops(config: VAEConfig, batch_size: int = 1,
                   weights: LossWeights | None = None) -> dict[str, Any]:
    """Floating-point operations of one training step per window: forward, loss and backward
    (Adam's elementwise update is left out), counted by ``torch.utils.flop_counter`` on random
    windows. Returns ``{"flops_per_window", "by_op": {aten op: flops per window},
    "by_module": {module name: flops per window}}``.

    It bounds the throughput any implementation can reach on a machine: windows/s times
    FLOPs per window cannot exceed what the processor sustains (:func:`matmul_gflops` measures
    that for a dense float32 product, the best case for convolutions).
    """
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = ConvVAE(config)
    x = torch.rand(batch_size, config.T, config.C) * 2 - 1
    y = torch.zeros(batch_size, dtype=torch.long) if config.n_classes else None
    counter = FlopCounterMode(display=False)
    with counter:
        _step_loss(model, x, y, 1e-3, weights)["total"].backward()
    counts = counter.get_flop_counts()
    per = 1.0 / batch_size
    return {"flops_per_window": counter.get_total_flops() * per,
            "by_op": {str(op): n * per for op, n in counts.get("Global", {}).items()},
            "by_module": {name: sum(ops.values()) * per for name, ops in counts.items()
                          if name != "Global"}}


def matmul_gflops(n: int = 1024, repeats: int = 20, threads: int | None = None) -> float:
    """GFLOP/s of ``n x n`` float32 matrix products on the CPU (best of three timings of
    ``repeats`` products): the dense-arithmetic rate this machine sustains, a ceiling for
    convolution-bound training."""
    old = torch.get_num_threads()
    configure_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
        for _ in range(2):
            a @ b
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2.0 * n**3 * repeats / best / 1e9


def training_throughput(config: VAEConfig, batch_size: int = 32, n_batches: int = 4,
                        variant: str = "optimized", threads: int | None = None,
                        device: str = "cpu", warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """Windows per second of training steps (forward, loss, backward, clipping, Adam).

    Variants: ``eager`` -- the plain baseline (contiguous NCHW weights, plain ``Conv2d``
    smoothing, the loss's STFT through ``torch.stft``); ``optimized`` -- what :func:`train_vae`
    uses (channels-last weights and the fast paths of :func:`prepare_model`, the loss's STFT as
    one matrix product);
    ``compiled`` -- ``optimized`` plus ``torch.compile`` of the model (slow to start).
    ``threads``: torch intra-op threads (default :func:`configure_threads`). Random windows;
    ``warmup`` steps are run and not timed.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: got {variant!r}; allowed: one of {', '.join(VARIANTS)}")
    old_threads = torch.get_num_threads()
    n_threads = configure_threads(threads) if device == "cpu" else old_threads
    try:
        torch.manual_seed(seed)
        dev = torch.device(device)
        model = ConvVAE(config)
        prepare_model(model, dev, optimized=variant != "eager")
        net: Any = torch.compile(model) if variant == "compiled" else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(batch_size, config.T, config.C, generator=g) * 2 - 1).to(dev)
        y = (torch.randint(0, config.n_classes, (batch_size,), generator=g).to(dev)
             if config.n_classes else None)
        model.train()
        weights = LossWeights(stft="torch" if variant == "eager" else "matmul")

        def step() -> None:
            loss = _step_loss(model, x, y, 1e-3, weights, net=net)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        t_start = time.perf_counter()
        for _ in range(warmup):
            step()
        t_warm = time.perf_counter() - t_start
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_batches):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)
    return {"variant": variant, "T": config.T, "C": config.C, "batch_size": batch_size,
            "n_batches": n_batches, "threads": n_threads, "device": device,
            "windows_per_s": batch_size * n_batches / dt, "seconds": dt, "warmup_s": t_warm}
