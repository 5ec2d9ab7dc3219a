"""A network that starts from the physics: a residual convolutional correction of the learned
linear correction of Tikhonov.

The reconstruction network of :mod:`egmlib.augmentation.recon` maps the BSPM to the EGMs from
scratch: it has to learn the torso from three training torsos and is tested on two others. The
learned linear correction (:mod:`egmlib.augmentation.linear`) knows each torso through its
transfer matrix (zero-order Tikhonov) and adds a spatial prior learned from the training EGMs;
on the default data it beats every run of that network. This module adds a network on top of it:

    y = y_lin + f(y_lin),   y_lin = LinearCorrection(Tikhonov(BSPM on its own torso)),

``f`` a small convolutional network over time with the recording sites as channels
(:class:`ResidualNet`: a 1x1 convolution to ``hidden`` channels, one temporal convolution of
``kernel`` samples, GELU, a 1x1 convolution back to the sites), whose last layer starts at zero,
so that training starts exactly at the linear correction and the epoch kept by the validation
split can be epoch 0, the linear correction itself. It sees the same training pairs,
validation pairs and test inputs as the linear correction
(:func:`egmlib.augmentation.linear.correction_inputs`), so each fit pairs with the linear fit of
the same run, and with 05's network run of the same arm and seed.

Loss: ``1 - r + mse_weight * MSE`` on windows scaled by the standard deviation of the training
``y_lin`` (``r`` the mean per-site correlation over time, the experiment's headline metric; the
MSE term keeps the amplitude). Adam; the epoch kept is the one with the highest mean per-site
correlation on the validation pairs, and training stops ``patience`` epochs after it. Training
is in float32 or float64 (:class:`ResidualConfig`), never in bfloat16, so that two processors
differ only in float rounding (summation orders, fused multiply-adds), which training can grow;
:func:`rounding_check` measures how far (the residual study,
:func:`egmlib.workflow.studies.residual_study`, refits one run in float64 and records the
largest difference).

Residual learning on top of a physics-based estimate follows the model-based deep learning of
inverse problems (for example Jin, McCann, Froustey and Unser, "Deep convolutional neural network
for inverse problems in imaging", IEEE Trans Image Process 26(9):4509-4522, 2017, which corrects
a classical reconstruction with a residual network); the form here is the repository's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from egmlib.augmentation import linear
from egmlib.core import metrics
from egmlib.data import LABELS, Dataset

__all__ = ["DTYPES", "ResidualConfig", "ResidualFit", "ResidualNet", "fit_residual",
           "rounding_check", "run_residual"]

#: The arithmetic a residual network may train in (never bfloat16: see the module docstring).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ResidualConfig:
    """The residual network's settings (module docstring). ``lr`` is the one the residual study
    chooses on the validation pairs (:data:`egmlib.workflow.studies.RESIDUAL_LRS`); the rest are
    fixed: ``hidden`` and ``kernel`` (9 samples, 22.5 ms at 400 Hz) size the network,
    ``max_epochs`` and ``patience`` bound the training, ``batch`` is the minibatch of windows."""

    hidden: int = 64
    kernel: int = 9
    lr: float = 1e-2
    batch: int = 16
    max_epochs: int = 40
    patience: int = 8
    mse_weight: float = 0.1
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("hidden", "kernel", "batch", "max_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: got {value!r}; allowed: an integer >= 1")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel: got {self.kernel}; allowed: an odd integer (centred "
                             "convolution)")
        for name in ("lr", "mse_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0
                    and (value > 0 or name == "mse_weight")):
                raise ValueError(f"{name}: got {value!r}; allowed: a finite number "
                                 f"{'>= 0' if name == 'mse_weight' else '> 0'}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: got {self.dtype!r}; allowed: {', '.join(DTYPES)}")


class ResidualNet(torch.nn.Module):
    """``y + f(y)`` for windows ``y`` ``(n, n_rec, T)`` (sites as channels): ``f`` = 1x1
    convolution to ``hidden`` channels, a temporal convolution of ``kernel`` samples, GELU, 1x1
    convolution back to ``n_rec``; the last layer is zero at initialisation, so the network
    starts as the identity."""

    def __init__(self, n_rec: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.f = torch.nn.Sequential(
            torch.nn.Conv1d(n_rec, hidden, 1),
            torch.nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2),
            torch.nn.GELU(),
            torch.nn.Conv1d(hidden, n_rec, 1))
        torch.nn.init.zeros_(self.f[-1].weight)
        torch.nn.init.zeros_(self.f[-1].bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.f(y)


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean per-site Pearson correlation over time of ``(n, C, T)`` tensors (a site that is
    flat in either counts as 0, as :func:`egmlib.core.metrics.pearson` counts it)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-30), 0.0).mean()


@dataclass
class ResidualFit:
    """A trained :class:`ResidualNet` on the linear correction ``lin``: ``scale`` is the
    standard deviation of the training ``y_lin`` the network sees its inputs divided by;
    ``history``: ``val_corr`` per epoch (epoch 0: the linear correction), ``train_loss`` per
    epoch (from 1), ``best_epoch``, ``epochs_run`` and, given the validation rhythms,
    ``val_corr_by_rhythm`` (rhythm -> per epoch)."""

    net: ResidualNet
    lin: linear.LinearCorrection
    scale: float
    config: ResidualConfig
    history: dict[str, Any]

    def apply(self, t: ArrayLike, batch: int = 64) -> NDArray[np.float64]:
        """The corrected EGMs ``(n, T, n_rec)`` of Tikhonov estimates ``t`` ``(n, T, n_rec)``."""
        y = self.lin.apply(t)
        return _apply_net(self.net, y, self.scale, self.config.dtype, batch)


def _apply_net(net: ResidualNet, y: NDArray, scale: float, dtype: str, batch: int = 64
               ) -> NDArray[np.float64]:
    """``y + scale * f(y / scale)`` in float64 around the network's ``dtype``: where ``f`` is
    zero (epoch 0), exactly ``y``."""
    out = np.array(y, np.float64)
    with torch.no_grad():
        for s in range(0, len(y), batch):
            x = torch.as_tensor(y[s:s + batch] / scale, dtype=DTYPES[dtype]).transpose(1, 2)
            out[s:s + batch] += net.f(x).transpose(1, 2).double().numpy() * scale
    return out


def _val_corr(e: NDArray, rec: NDArray, labels: NDArray | None = None
              ) -> tuple[float, dict[str, float]]:
    """Mean per-site correlation of all windows, and of each rhythm's (``labels``) apart."""
    c = np.nanmean(metrics.pearson(e, rec), axis=-1)
    by = ({} if labels is None else
          {str(r): float(np.mean(c[labels == r])) for r in LABELS if np.any(labels == r)})
    return float(np.mean(c)), by


def fit_residual(lin: linear.LinearCorrection, t_train: ArrayLike, e_train: ArrayLike,
                 t_val: ArrayLike, e_val: ArrayLike, config: ResidualConfig = ResidualConfig(),
                 seed: int = 0, val_labels: ArrayLike | None = None) -> ResidualFit:
    """Train a :class:`ResidualNet` on the linear correction ``lin`` of the training Tikhonov
    estimates ``t_train`` towards the EGMs ``e_train`` (``(n, T, n_rec)``), keep the epoch with
    the highest mean per-site correlation of the validation pairs (epoch 0, the linear
    correction, included; the first on ties) and stop ``config.patience`` epochs after it.
    ``seed`` draws the initial weights and the minibatch order; same seed, same numbers.
    ``val_labels`` (the rhythm name of each validation window): the history also follows each
    rhythm's validation correlation (``val_corr_by_rhythm``); the choice reads the pooled one."""
    t_tr, e_tr, t_va, e_va = linear.check_pairs(t_train, e_train, t_val, e_val)
    dtype = DTYPES[config.dtype]
    y_tr, y_va = lin.apply(t_tr), lin.apply(t_va)
    scale = float(y_tr.std()) or 1.0
    x = torch.as_tensor(y_tr / scale, dtype=dtype).transpose(1, 2)
    target = torch.as_tensor(np.asarray(e_tr, np.float64) / scale, dtype=dtype).transpose(1, 2)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = ResidualNet(x.shape[1], config.hidden, config.kernel).to(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    labels = None if val_labels is None else np.asarray(val_labels).astype(str)
    if labels is not None and labels.shape != (len(e_va),):
        raise ValueError(f"val_labels: expected {len(e_va)} rhythm names; got {labels.shape}")
    val, by_rhythm = [], []

    def validate() -> None:
        pooled, by = _val_corr(e_va, _apply_net(net, y_va, scale, config.dtype), labels)
        val.append(pooled)
        by_rhythm.append(by)

    validate()
    best, best_state, losses = 0, {k: v.clone() for k, v in net.state_dict().items()}, []
    for epoch in range(1, config.max_epochs + 1):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(order), config.batch):
            b = order[s:s + config.batch]
            out = net(x[b])
            loss = 1 - _corr(out, target[b]) + config.mse_weight * ((out - target[b]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        net.eval()
        losses.append(total / len(x))
        validate()
        if val[-1] > val[best]:
            best, best_state = epoch, {k: v.clone() for k, v in net.state_dict().items()}
        if epoch - best >= config.patience:
            break
    net.load_state_dict(best_state)
    history = {"val_corr": val, "train_loss": losses, "best_epoch": best,
               "epochs_run": len(losses)}
    if labels is not None:
        history["val_corr_by_rhythm"] = {r: [b[r] for b in by_rhythm] for r in by_rhythm[0]}
    return ResidualFit(net=net, lin=lin, scale=scale, config=config, history=history)


def run_residual(ds: Dataset, seed: int, n_real_sims: int = 0, snr_db: float = 20.0,
                 baseline: Mapping[str, Any] | None = None,
                 config: ResidualConfig = ResidualConfig(),
                 synth_egm: ArrayLike | None = None, k: int = 0,
                 extra_rows: ArrayLike | None = None) -> dict[str, Any]:
    """The linear correction and the residual network on it, fitted on the training pairs of the
    run of 05 with ``seed``, ``n_real_sims`` and ``k`` of ``synth_egm`` (or ``extra_rows``; as
    :func:`egmlib.augmentation.linear.correction_inputs` takes them) and scored on 05's test
    inputs. Returns ``{"seed", "n_real_sims", "k", "rel_lambda", "n_train_pairs",
    "n_extra_pairs", "config", "history", "val_corr_linear", "val_corr_chosen" (pooled over the
    validation windows at epoch 0 and at the epoch kept), "val_by_rhythm_linear",
    "val_by_rhythm_chosen" (the same per rhythm), "linear": the linear correction's test scores,
    "test": the residual network's}`` (both with ``per_simulation``)."""
    x = linear.correction_inputs(ds, seed, n_real_sims, snr_db, baseline, synth_egm, k,
                                 extra_rows)
    lin = linear.fit_correction(x.t_train, x.e_train, x.t_val, x.e_val)
    fit = fit_residual(lin, x.t_train, x.e_train, x.t_val, x.e_val, config, seed, x.val_labels)
    h = fit.history
    by = h["val_corr_by_rhythm"]
    return {"seed": int(seed), "n_real_sims": int(n_real_sims), "k": int(k),
            "rel_lambda": x.rel, "n_train_pairs": len(x.e_train), "n_extra_pairs": x.n_extra,
            "config": asdict(config), "history": h, "val_corr_linear": h["val_corr"][0],
            "val_corr_chosen": h["val_corr"][h["best_epoch"]],
            "val_by_rhythm_linear": {r: v[0] for r, v in by.items()},
            "val_by_rhythm_chosen": {r: v[h["best_epoch"]] for r, v in by.items()},
            "linear": x.score(lin.apply(x.t_test)), "test": x.score(fit.apply(x.t_test))}


def rounding_check(ds: Dataset, row: Mapping[str, Any], snr_db: float,
                   baseline: Mapping[str, Any] | None = None, dtype: str = "float64",
                   **inputs: Any) -> dict[str, Any]:
    """How far a fit of :func:`run_residual` (its ``row``) moves when it is made again in
    ``dtype``: float64 changes the rounding of every operation of a float32 fit, at least as
    much as a change of processor does (other summation orders, fused multiply-adds).
    ``inputs``: the ``synth_egm``/``k``/``extra_rows`` the row was fitted with.
    Returns the dtype, both best epochs and the largest absolute difference of the validation
    correlation and of each rhythm's test correlation."""
    config = replace(ResidualConfig(**row["config"]), dtype=dtype)
    again = run_residual(ds, row["seed"], row["n_real_sims"], snr_db, baseline, config,
                         **inputs)
    rhythms = [r for r in LABELS if r in row["test"]]
    return {"dtype": dtype, "best_epoch": [row["history"]["best_epoch"],
                                           again["history"]["best_epoch"]],
            "max_abs_val_corr": float(np.max(np.abs(
                np.subtract(row["history"]["val_corr"][:len(again["history"]["val_corr"])],
                            again["history"]["val_corr"][:len(row["history"]["val_corr"])])))),
            "max_abs_test_corr": float(max(abs(row["test"][r]["corr_mean"]
                                               - again["test"][r]["corr_mean"])
                                           for r in rhythms))}
