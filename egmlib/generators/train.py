"""Training of VAE-S and VAE-C: normalisation, the loop's settings, checkpoints.

* :class:`Normalizer` scales windows to [-1, 1] by one robust max-abs (a high quantile of
  ``|x|``) fitted on training windows only, so relative amplitudes between sites are kept.
* :func:`train_vae` runs Adam with gradient-norm clipping (1.0), ``ExponentialLR(0.95)`` per epoch,
  a linear beta warm-up, and early stopping on the **validation** loss (the authors' code watched
  the training loss by mistake); the best weights are restored at the end. The loop itself is
  :func:`egmlib.core.training.fit`; the seed, deterministic kernels and threads hold for the call
  only (:func:`egmlib.core.process.torch_state`).
* :func:`save_checkpoint` / :func:`load_checkpoint` write and read one ``.pt`` file atomically with
  weights, model config, normaliser, history and provenance.
* :func:`prepare_model`: the optimised CPU path (channels-last weights, the smoothing convolution
  as a shifted sum). Its speed against the eager baseline, the FLOPs of a step and the machine's
  ceiling are measured by ``benchmarks/train.py`` (``make bench``, section ``train``).
* :func:`resolve_precision`: the arithmetic of the training step. ``"bfloat16"`` runs the model's
  forward and backward passes under ``torch.autocast`` (convolutions and dense layers in
  bfloat16, float32 master weights, Adam and the loss in float32: mixed precision as in
  Micikevicius et al., ICLR 2018, with bfloat16's float32 exponent range, so no loss scaling is
  needed); ``"auto"`` picks it where the processor has bfloat16 arithmetic (AMX or AVX512-BF16
  on x86, or a CUDA device that supports it) and float32 elsewhere. Evaluation, reconstruction
  and sampling always run in float32. Measured on a processor with AMX (the budget study,
  ``results/default/generator_budget.json``): VAE-S ran 110 epochs in 298 s in bfloat16 against
  60 in 281 s in float32; ``make bench`` (section ``train``) times the step side by side.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from egmlib.core import runs
from egmlib.core.checks import check_ints
from egmlib.core.process import torch_state
from egmlib.core.training import FitResult, TrainingDivergedError, fit
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
    "Recordings",
    "TrainingDivergedError",
    "load_checkpoint",
    "precision_context",
    "prepare_model",
    "resolve_precision",
    "save_checkpoint",
    "torch_device",
    "train_vae",
]

#: Values of ``precision`` (:func:`resolve_precision`).
PRECISIONS = ("auto", "float32", "bfloat16")

#: Keys of every loss dictionary recorded per epoch in the history.
HISTORY_KEYS = ("total", *LOSS_PARTS, "kl_raw", "kl_true", "recon", "pearson")


def torch_device(device: str) -> torch.device:
    """The torch device named by ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``). Asking for CUDA
    where it is not available is a ``ValueError``, before any work. Changes no setting."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked but CUDA is not available")
    return torch.device(device)


def _cpu_has_bf16() -> bool:
    """Whether this processor does bfloat16 arithmetic in hardware (x86 AMX or AVX512-BF16, as
    oneDNN uses them); ``False`` where that cannot be read (then float32 is the safe choice:
    emulated bfloat16 is slower than float32)."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (RuntimeError, AttributeError):
        return False
    return runs.has_bf16()


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"float32"`` or ``"bfloat16"``: the arithmetic of a training step on ``device``
    (module docstring). ``"auto"`` is bfloat16 where the hardware has it, float32 elsewhere;
    ``"bfloat16"`` asked where it has not is a ``ValueError`` naming the parameter."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: got {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if precision == "float32":
        return precision
    dev = torch.device(device)
    has = (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) if dev.type == "cuda" \
        else _cpu_has_bf16()
    if precision == "bfloat16" and not has:
        raise ValueError(f"precision: 'bfloat16' asked but {dev.type} has no bfloat16 "
                         "arithmetic; allowed here: 'float32' or 'auto'")
    return "bfloat16" if has else "float32"


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 for a resolved ``precision == "bfloat16"``, else
    nothing: wrap a model's forward pass in it, and compute the loss in float32 outside."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------------
@dataclass
class Normalizer:
    """Scale windows to [-1, 1]: ``x / scale`` clipped, with ``scale`` the ``quantile`` of
    ``|x|`` over the training windows (one number for all sites, so the spatial pattern of
    amplitudes survives). ``inverse`` multiplies back (clipped values stay clipped).

    Fitted with labels (VAE-C), each class gets its own scale (``class_scales``), and
    ``transform`` / ``inverse`` then need each window's label (an integer class, or a row of
    soft class weights that mixes the scales linearly). Why: AF windows are about four times
    larger than SR ones (0.999 quantile of ``|x|`` on the default data: SR 3.1 mV, AF 7.4 mV, and
    SR is silent between beats), so one scale for both squeezed SR into a small part of the
    range. The choice study (``results/default/generator_choices.json``, validation split, 8
    epochs) could not tell the two apart (correlation SR 0.29 and AF 0.01 either way); the scale
    per class is kept for the reason above, not for a measured gain.
    """

    quantile: float = 0.999
    scale: float | None = None
    max_values: int = 20_000_000
    class_scales: list[float] | None = None

    def _quantile(self, X: np.ndarray) -> float:
        flat = X.reshape(-1)
        step = max(1, math.ceil(flat.size / self.max_values))
        sub = np.abs(flat[::step].astype(np.float64))
        if not np.all(np.isfinite(sub)):
            raise ValueError("X: training windows contain NaN or infinite values")
        scale = float(np.quantile(sub, self.quantile))
        return scale if scale > 0 else (float(sub.max()) or 1.0)

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> Normalizer:
        """Fit on training windows ``(n, T, C)`` (a strided subsample above ``max_values``);
        with integer labels ``y`` also one scale per class ``0..max(y)``."""
        X = np.asarray(X)
        if X.ndim != 3 or X.size == 0:
            raise ValueError(f"X: expected training windows shaped (n, T, C); got {X.shape}")
        if not 0.5 <= self.quantile <= 1.0:
            raise ValueError(f"quantile: got {self.quantile!r}; allowed: [0.5, 1]")
        self.scale = self._quantile(X)
        self.class_scales = None
        if y is not None:
            y = np.asarray(y)
            if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
                raise ValueError(f"y: expected {len(X)} class indices >= 0; got {y.shape} "
                                 f"{y.dtype}")
            missing = [c for c in range(int(y.max()) + 1) if not np.any(y == c)]
            if missing:
                raise ValueError(f"y: class {missing[0]} has no training window")
            self.class_scales = [self._quantile(X[y == c]) for c in range(int(y.max()) + 1)]
        return self

    def _need_fit(self) -> float:
        if self.scale is None:
            raise RuntimeError("Normalizer: call fit(X_train) first")
        return self.scale

    def _scales(self, n: int, y: ArrayLike | None) -> np.ndarray | np.float32:
        """The scale of each of ``n`` windows, shaped to broadcast over ``(n, T, C)``."""
        s = self._need_fit()
        if self.class_scales is None:
            return np.float32(s)
        if y is None:
            raise ValueError("y: this normaliser has one scale per class; pass each window's "
                             "label")
        cs = np.asarray(self.class_scales, np.float64)
        lab = np.asarray(y)
        if lab.ndim == 0:
            lab = np.full(n, lab)
        if lab.ndim == 2 and np.issubdtype(lab.dtype, np.floating):
            per = lab @ cs                      # soft labels mix the scales
        else:
            per = cs[lab.astype(np.int64)]
        if per.shape != (n,):
            raise ValueError(f"y: expected {n} labels; got shape {np.asarray(y).shape}")
        return per.astype(np.float32)[:, None, None]

    def transform(self, X: ArrayLike, y: ArrayLike | None = None) -> NDArray[np.float32]:
        X = np.asarray(X, dtype=np.float32)
        return np.clip(X / self._scales(len(X), y), -1.0, 1.0)

    def inverse(self, Z: ArrayLike, y: ArrayLike | None = None) -> NDArray[np.float32]:
        Z = np.asarray(Z, dtype=np.float32)
        return Z * self._scales(len(Z), y)

    def to_dict(self) -> dict[str, Any]:
        return {"quantile": self.quantile, "scale": self.scale, "max_values": self.max_values,
                "class_scales": self.class_scales}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        cs = d.get("class_scales")
        return cls(quantile=float(d["quantile"]),
                   scale=None if d.get("scale") is None else float(d["scale"]),
                   max_values=int(d.get("max_values", 20_000_000)),
                   class_scales=None if cs is None else [float(v) for v in cs])


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
    without it, the plain eager baseline. Measured: ``benchmarks/train.py``. Numbers change
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
    yb = None if y is None else y[idx]
    xb = (normalizer.transform(xb, yb if normalizer.class_scales else None)
          if normalizer is not None else np.asarray(xb, np.float32))
    xt = torch.from_numpy(np.ascontiguousarray(xb)).to(device)
    yt = None if y is None else torch.from_numpy(y[idx]).to(device)
    return xt, yt


def _step_loss(model: ConvVAE, xb: torch.Tensor, yb: torch.Tensor | None, beta: float,
               weights: LossWeights | None, precision: str = "float32"
               ) -> dict[str, torch.Tensor]:
    """Forward pass and every loss part of one batch (train mode: z sampled; eval: z = mu).
    With ``precision="bfloat16"`` the model runs under autocast and the loss in float32."""
    with precision_context(precision, xb.device):
        x_hat, mu, logvar = model(xb, yb)
    prior = model.prior(yb, batch=xb.shape[0]) if model.conditional else None
    return vae_loss(xb, x_hat.float(), mu.float(), logvar.float(), beta, prior=prior,
                    weights=weights)


def _batches(X: np.ndarray, y: np.ndarray | None, order: np.ndarray, batch_size: int,
             normalizer: Normalizer | None, device: torch.device
             ) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor | None], int]]:
    """``((x, y), windows)`` of consecutive slices of ``order`` (:func:`fit`'s batches)."""
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield _batch(X, y, idx, normalizer, device), len(idx)


@dataclass(frozen=True)
class Recordings:
    """Each training simulation's recording, rebuilt from its overlapping windows, to cut fresh
    windows from at random offsets every epoch (:func:`train_vae`'s ``recut``).

    Why: the data set cuts each simulation into windows whose starts are a fixed hop apart
    (0.5 s at the default profile), so every window of a simulation is a copy of its
    neighbours shifted by a multiple of the hop. A decoder that cannot tell which of those
    shifts a code stands for is rewarded for their average, which repeats every hop: VAE-C's
    generated AF did (a 0.48 s period, laid out by its dense layer; notebook 03). Windows cut at
    any offset present no such lattice of shifts. They are exact: every sample is one the
    simulation recorded, and no window crosses a simulation's edges. Measured (the AF rate study,
    ``results/default/generator_af_rate.json``, validation split): they remove that period, but
    VAE-C then learns one AF template (validation AF correlation 0.007 against 0.098), so 03
    trains on the data set's windows.

    Attributes:
        signals: one ``(n_samples, C)`` recording per simulation.
        owner: per training window, the index of its simulation's recording.
        T: window length in samples.
    """

    signals: tuple[np.ndarray, ...]
    owner: NDArray[np.int64]
    T: int

    @classmethod
    def from_windows(cls, X: ArrayLike, sim_id: ArrayLike, start: ArrayLike) -> Recordings:
        """Rebuild the recordings from windows ``X`` ``(n, T, C)``, each window's simulation
        ``sim_id`` and its first sample ``start`` (integers, on the recording's own clock).

        Windows of one simulation must overlap or abut (no gap) and agree wherever they overlap;
        otherwise a ``ValueError`` names the simulation."""
        x = np.asarray(X)
        sims = np.asarray(sim_id)
        st = np.asarray(start)
        if x.ndim != 3 or sims.shape != (len(x),) or st.shape != (len(x),):
            raise ValueError(f"X, sim_id, start: expected (n, T, C), (n,), (n,); got {x.shape}, "
                             f"{sims.shape}, {st.shape}")
        if not np.issubdtype(st.dtype, np.integer):
            raise ValueError(f"start: expected integer sample indices; got {st.dtype}")
        T = x.shape[1]
        signals, owner = [], np.empty(len(x), np.int64)
        for k, s in enumerate(np.unique(sims)):
            idx = np.flatnonzero(sims == s)
            idx = idx[np.argsort(st[idx], kind="stable")]
            first = st[idx] - st[idx[0]]
            if np.any(np.diff(first) > T):
                raise ValueError(f"sim_id: the windows of simulation {s} leave a gap; "
                                 "recordings need windows that overlap or abut")
            rec = np.empty((int(first[-1]) + T, x.shape[2]), x.dtype)
            for i, o in zip(idx, first):
                rec[o:o + T] = x[i]
            for i, o in zip(idx, first):  # overlapping windows must agree sample for sample
                if not np.array_equal(rec[o:o + T], x[i]):
                    raise ValueError(f"X: the windows of simulation {s} disagree where they "
                                     "overlap; they are not cut from one recording")
            signals.append(rec)
            owner[idx] = k
        return cls(tuple(signals), owner, T)

    def cut(self, rng: np.random.Generator) -> np.ndarray:
        """One window per training window, from its simulation's recording at an offset drawn
        uniformly from every possible start (``rng``); same order as the windows."""
        room = np.array([len(sig) - self.T + 1 for sig in self.signals])[self.owner]
        offs = rng.integers(0, room)
        return np.stack([self.signals[k][o:o + self.T] for k, o in zip(self.owner, offs)])


def _history(result: FitResult, betas: list[float], settings: dict[str, Any]) -> dict[str, Any]:
    """:func:`train_vae`'s history (plain values) from the loop's result so far."""
    return {
        "train": {k: list(result.train.get(k, ())) for k in HISTORY_KEYS},
        "val": {k: list(result.val.get(k, ())) for k in (*HISTORY_KEYS, "monitor")},
        "beta": betas[:result.epochs_run], "lr": list(result.lr),
        "epoch_s": list(result.epoch_s), "best_epoch": result.best_epoch,
        "best_val": result.best_val, "stopped_early": result.stopped_early,
        "epochs_run": result.epochs_run,
        "windows_per_s": result.samples_per_s if result.finished else None,
        "settings": settings,
    }


def train_vae(model: ConvVAE, X_train: ArrayLike, y_train: ArrayLike | None,
              X_val: ArrayLike, y_val: ArrayLike | None, *, epochs: int = 50,
              batch_size: int = 16, lr: float = 1e-3, beta_max: float = 1e-3,
              warmup_epochs: int = 10, patience: int = 8, device: str = "cpu", seed: int = 0,
              checkpoint_path: str | Path | None = None, progress: bool = True,
              normalizer: Normalizer | None = None, weights: LossWeights | None = None,
              lr_decay: float = 0.95, clip_norm: float = 1.0, optimized: bool = True,
              precision: str = "float32", extra: Mapping[str, Any] | None = None,
              recut: Recordings | None = None) -> dict[str, Any]:
    """Train ``model`` in place and return its history (plain, JSON-serialisable values).

    Data: ``X_*`` are windows ``(n, T, C)`` (numpy or memmap), already scaled to [-1, 1] unless a
    fitted ``normalizer`` is given (then they are in data units and scaled batch by batch; the
    normaliser is also stored in checkpoints). Train and validation windows must come from
    different simulations. ``y_*``: integer labels for VAE-C, ``None`` for VAE-S. With
    ``recut`` (:class:`Recordings` of the training windows, in their order), every epoch trains
    on windows cut afresh from the recordings at random offsets (their own numpy ``Generator``,
    seeded by ``seed``; the batch order is the same as without), one per training window with
    its label; validation windows are used as they are.

    Schedule: Adam(``lr``); gradient norm clipped to ``clip_norm``; learning rate times
    ``lr_decay`` after every epoch (``ExponentialLR``); beta rises linearly from
    ``beta_max / warmup_epochs`` in the first epoch to ``beta_max`` at epoch ``warmup_epochs``
    (``warmup_epochs = 0``: ``beta_max`` from the start). ``precision`` (:func:`resolve_precision`)
    sets the arithmetic of the training and validation steps; the resolved value is recorded in
    ``history["settings"]["precision"]``.

    Early stopping watches the validation loss evaluated at ``beta_max`` (eval mode, z = mu)
    -- not the training loss -- and stops after ``patience`` epochs without improvement; the best
    weights are restored before returning. With ``checkpoint_path``, the best model so far is
    saved (atomically) at every improvement, so the file always holds the last good model.
    The loop is :func:`egmlib.core.training.fit`.

    Process state: the call runs with torch's generators seeded by ``seed``, deterministic
    kernels and ``EGMLIB_THREADS`` (or every core) CPU threads, and restores all three on return
    (:func:`egmlib.core.process.torch_state`); the mini-batch order comes from a numpy
    ``Generator`` of ``seed``.

    A NaN or infinite training loss (or validation loss) raises :class:`TrainingDivergedError`
    naming the epoch and batch, with ``history`` up to it; the model is reset to its best weights
    and the checkpoint file is left as it was.

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
    precision = resolve_precision(precision, dev)
    n = X_train.shape[0]
    if recut is not None and (len(recut.owner) != n or recut.T != X_train.shape[1]
                              or recut.signals[0].shape[1] != X_train.shape[2]):
        raise ValueError(f"recut: recordings of {len(recut.owner)} windows of {recut.T} samples x "
                         f"{recut.signals[0].shape[1]} sites; X_train holds {n} of "
                         f"{X_train.shape[1]} x {X_train.shape[2]}")
    betas = [beta_max * min(1.0, (e + 1) / warmup_epochs) if warmup_epochs else beta_max
             for e in range(epochs)]
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "beta_max": beta_max,
                "warmup_epochs": warmup_epochs, "patience": patience, "seed": seed,
                "lr_decay": lr_decay, "clip_norm": clip_norm, "device": device,
                "precision": precision,
                "n_train": int(n), "n_val": int(X_val.shape[0]), "recut": recut is not None}

    def checkpoint(result: FitResult) -> None:
        save_checkpoint(checkpoint_path, model, normalizer,  # type: ignore[arg-type]
                        _history(result, betas, settings), extra)

    rng = np.random.default_rng(seed)
    cut_rng = np.random.default_rng([seed, 1])  # the offsets' own stream

    def train_windows() -> np.ndarray:
        return X_train if recut is None else recut.cut(cut_rng)

    where = (f"; the last good checkpoint {checkpoint_path} is kept"
             if checkpoint_path is not None else "")
    with torch_state(seed, device=dev):
        prepare_model(model, dev, optimized=optimized)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        try:
            result = fit(
                model, lambda b, e: _step_loss(model, *b, betas[e], weights, precision),
                lambda e: _batches(train_windows(), y_train, rng.permutation(n), batch_size,
                                   normalizer, dev),
                lambda e: _batches(X_val, y_val, np.arange(X_val.shape[0]), batch_size,
                                   normalizer, dev),
                opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay),
                epochs=epochs, patience=patience, clip_norm=clip_norm, record=HISTORY_KEYS,
                # the monitored loss uses the target beta: epochs in the warm-up are comparable
                monitor=lambda v, e: v["total"] - v["kl"] + beta_max * v["kl_raw"],
                checkpoint=checkpoint if checkpoint_path is not None else None,
                progress=f"train {'VAE-C' if model.conditional else 'VAE-S'}" if progress
                else None, show={"corr": "pearson"},
                hint=f"{where}. Check the data for NaN, or try a lower lr or beta_max.")
        except TrainingDivergedError as err:
            if err.result is not None:
                err.history = _history(err.result, betas, settings)
            raise
    return _history(result, betas, settings)
