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

The pooled validation correlation can keep an epoch that is better for one rhythm and worse for
the other: on the default data the network lifts SR far and lowers AF (record
``results/default/recon_residual.json``). So each fit also keeps, for each rhythm, the epoch with
that rhythm's highest validation correlation (epoch 0 included, within the epochs the pooled
rule runs), and the *routed* network applies to each window the epoch of the rhythm a
:class:`RhythmRouter` calls it: a logistic regression on the share of the linear correction's
output power that lies between 3 and 12 Hz (:data:`ROUTER_BANDS_HZ`), fitted on the labelled
(real) training pairs only, so that neither
the routing nor the per-rhythm epochs read a test number. A rhythm whose validation correlation
the network never raises is left at the linear correction. Knowing the rhythm at reconstruction
time is the premise of a rhythm-conditioned generator (the paper's VAE-C) too; here it is
estimated from the input, never given.

Residual learning on top of a physics-based estimate follows the model-based deep learning of
inverse problems (for example Jin, McCann, Froustey and Unser, "Deep convolutional neural network
for inverse problems in imaging", IEEE Trans Image Process 26(9):4509-4522, 2017, which corrects
a classical reconstruction with a residual network); the form here is the repository's own.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.signal import periodogram
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from egmlib.augmentation import linear
from egmlib.core import metrics
from egmlib.data import LABELS, Dataset

__all__ = ["DTYPES", "ROUTER_BANDS_HZ", "ResidualConfig", "ResidualFit", "ResidualNet",
           "RhythmRouter", "fit_residual", "rounding_agrees", "rounding_check", "router_features",
           "run_residual"]

#: The arithmetic a residual network may train in (never bfloat16: see the module docstring).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


#: Edges (Hz) of the frequency bands whose share of the power the router reads: below 3 Hz lie
#: the SR beat rate and its first harmonics, between 3 and 12 Hz the AF dominant frequencies of
#: the simulations (01_data). Chosen on the validation pairs of the residual study's scarcest
#: arm (two simulations per rhythm), by the share of validation windows routed right, over a
#: finer spectrum (the log share of each 0.5 Hz band from 0.5 to 15 Hz, which over-fitted the
#: few training simulations and misrouted over a third of one run's windows) and the log shares of
#: these two bands (a few windows more misrouted than the plain share).
ROUTER_BANDS_HZ: tuple[float, ...] = (0.5, 3.0, 12.0)


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
    ``val_corr_by_rhythm`` (rhythm -> per epoch) and ``best_epoch_by_rhythm``; ``by_rhythm``
    holds the network at each rhythm's best epoch (empty without validation rhythms)."""

    net: ResidualNet
    lin: linear.LinearCorrection
    scale: float
    config: ResidualConfig
    history: dict[str, Any]
    by_rhythm: dict[str, ResidualNet] = field(default_factory=dict)

    def apply(self, t: ArrayLike, rhythms: ArrayLike | None = None, batch: int = 64
              ) -> NDArray[np.float64]:
        """The corrected EGMs ``(n, T, n_rec)`` of Tikhonov estimates ``t`` ``(n, T, n_rec)``:
        by the network of the pooled best epoch, or, given ``rhythms`` (one rhythm name per
        window, for example :meth:`RhythmRouter.predict`), each window by the network of its
        rhythm's best epoch."""
        return self.correct(self.lin.apply(t), rhythms, batch)

    def correct(self, y: NDArray, rhythms: ArrayLike | None = None, batch: int = 64
                ) -> NDArray[np.float64]:
        """As :meth:`apply`, from the linear correction's output ``y`` (``lin.apply(t)``)
        computed once by a caller that also needs it."""
        if rhythms is None:
            return _apply_net(self.net, y, self.scale, self.config.dtype, batch)
        names = np.asarray(rhythms).astype(str)
        if names.shape != (len(y),) or not set(names) <= set(self.by_rhythm):
            raise ValueError(f"rhythms: expected {len(y)} names among "
                             f"{sorted(self.by_rhythm)}; got {sorted(set(names.ravel()))} of "
                             f"shape {names.shape}")
        out = np.empty_like(y)
        for rhythm, net in self.by_rhythm.items():
            sel = names == rhythm
            if sel.any():
                out[sel] = _apply_net(net, y[sel], self.scale, self.config.dtype, batch)
        return out


def router_features(y: ArrayLike, fs: float) -> NDArray[np.float64]:
    """Per window of ``y`` ``(n, T, C)`` sampled at ``fs``: the share of the site-averaged power
    (Hann-windowed periodogram) between the outer edges of :data:`ROUTER_BANDS_HZ` that falls in
    each band but the first, ``(n, n_bands - 1)`` (the first band's share is one minus their
    sum); amplitude does not enter. A window without power there has shares 0."""
    edges = np.asarray(ROUTER_BANDS_HZ)
    if edges[-1] > fs / 2:
        raise ValueError(f"fs: got {fs}; allowed: at least {2 * edges[-1]} Hz (the router's "
                         "bands below the Nyquist frequency)")
    f, pxx = periodogram(np.asarray(y, np.float64), fs=fs, window="hann", axis=1)
    p = pxx.mean(-1)
    band = np.stack([p[:, (f >= lo) & (f < hi)].sum(-1)
                     for lo, hi in itertools.pairwise(edges)], axis=-1)
    total = band.sum(-1, keepdims=True)
    return band[:, 1:] / np.where(total > 0, total, 1.0)


@dataclass
class RhythmRouter:
    """Which rhythm a window of the linear correction's output is: a standardised logistic
    regression on :func:`router_features`, fitted once on labelled training windows (module
    docstring); with one rhythm in its training windows it calls every window that rhythm."""

    fs: float
    model: Pipeline | None
    rhythms: tuple[str, ...]

    @classmethod
    def fit(cls, y: ArrayLike, labels: ArrayLike, fs: float) -> RhythmRouter:
        """Fit on the windows ``y`` ``(n, T, C)`` and their rhythm names ``labels``."""
        names = np.asarray(labels).astype(str)
        y = np.asarray(y)
        if names.shape != (len(y),) or len(y) == 0:
            raise ValueError(f"labels: expected {len(y)} rhythm names for a non-empty y; got "
                             f"shape {names.shape}")
        rhythms = tuple(r for r in LABELS if np.any(names == r))
        if set(names) - set(rhythms):
            raise ValueError(f"labels: got {sorted(set(names) - set(rhythms))}; allowed: "
                             f"{', '.join(LABELS)}")
        if len(rhythms) == 1:
            return cls(fs=float(fs), model=None, rhythms=rhythms)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(router_features(y, fs), names)
        return cls(fs=float(fs), model=model, rhythms=rhythms)

    def predict(self, y: ArrayLike) -> NDArray[np.str_]:
        """The rhythm name of each window of ``y`` ``(n, T, C)``."""
        if self.model is None:
            return np.full(len(y), self.rhythms[0])
        return np.asarray(self.model.predict(router_features(y, self.fs))).astype(str)


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
    rhythm's validation correlation (``val_corr_by_rhythm``) and the fit keeps, per rhythm, the
    network of that rhythm's best epoch (``by_rhythm``, ``best_epoch_by_rhythm``; the first on
    ties, within the epochs run). The pooled choice and the stopping rule read the pooled
    correlation only, so the pooled fit is the same with or without ``val_labels``."""
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

    def state() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in net.state_dict().items()}

    validate()
    best, best_state, losses = 0, state(), []
    rhythm_best = {r: (0, best_state) for r in by_rhythm[0]}
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
            best, best_state = epoch, state()
        for r, (b, _) in rhythm_best.items():
            if by_rhythm[-1][r] > by_rhythm[b][r]:
                rhythm_best[r] = (epoch, best_state if best == epoch else state())
        if epoch - best >= config.patience:
            break
    nets = {}
    for r, (_, st) in rhythm_best.items():  # copies: no draw from torch's random state
        nets[r] = copy.deepcopy(net)
        nets[r].load_state_dict(st)
    net.load_state_dict(best_state)
    history = {"val_corr": val, "train_loss": losses, "best_epoch": best,
               "epochs_run": len(losses)}
    if labels is not None:
        history["val_corr_by_rhythm"] = {r: [b[r] for b in by_rhythm] for r in by_rhythm[0]}
        history["best_epoch_by_rhythm"] = {r: b for r, (b, _) in rhythm_best.items()}
    return ResidualFit(net=net, lin=lin, scale=scale, config=config, history=history,
                       by_rhythm=nets)


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
    "val_by_rhythm_chosen" (the same per rhythm), "val_by_rhythm_routed" (the routed network,
    routing the validation windows by the router), "router": its training windows and its
    accuracy on the validation and test inputs, "linear": the linear correction's test scores,
    "test": the residual network's (pooled best epoch), "routed": the routed network's}`` (each
    with ``per_simulation``). The router (:class:`RhythmRouter`) is fitted on the linear
    correction's output of the labelled training pairs."""
    x = linear.correction_inputs(ds, seed, n_real_sims, snr_db, baseline, synth_egm, k,
                                 extra_rows)
    lin = linear.fit_correction(x.t_train, x.e_train, x.t_val, x.e_val)
    fit = fit_residual(lin, x.t_train, x.e_train, x.t_val, x.e_val, config, seed, x.val_labels)
    h = fit.history
    by = h["val_corr_by_rhythm"]
    known = x.train_labels != ""
    router = RhythmRouter.fit(lin.apply(x.t_train[known]), x.train_labels[known], x.fs)
    y_val, y_test = lin.apply(x.t_val), lin.apply(x.t_test)
    route_val, route_test = router.predict(y_val), router.predict(y_test)
    test_names = np.asarray(LABELS)[np.asarray(x.labels)]
    routed_val = _val_corr(x.e_val, fit.correct(y_val, route_val), x.val_labels)[1]
    return {"seed": int(seed), "n_real_sims": int(n_real_sims), "k": int(k),
            "rel_lambda": x.rel, "n_train_pairs": len(x.e_train), "n_extra_pairs": x.n_extra,
            "config": asdict(config), "history": h, "val_corr_linear": h["val_corr"][0],
            "val_corr_chosen": h["val_corr"][h["best_epoch"]],
            "val_by_rhythm_linear": {r: v[0] for r, v in by.items()},
            "val_by_rhythm_chosen": {r: v[h["best_epoch"]] for r, v in by.items()},
            "val_by_rhythm_routed": routed_val,
            "router": {"n_train": int(known.sum()),
                       "val_accuracy": float(np.mean(route_val == x.val_labels)),
                       "test_accuracy": float(np.mean(route_test == test_names))},
            "linear": x.score(y_test), "test": x.score(fit.correct(y_test)),
            "routed": x.score(fit.correct(y_test, route_test))}


def rounding_check(ds: Dataset, row: Mapping[str, Any], snr_db: float,
                   baseline: Mapping[str, Any] | None = None, dtype: str = "float64",
                   **inputs: Any) -> dict[str, Any]:
    """How far a fit of :func:`run_residual` (its ``row``) moves when it is made again in
    ``dtype``: float64 changes the rounding of every operation of a float32 fit, at least as
    much as a change of processor does (other summation orders, fused multiply-adds).
    ``inputs``: the ``synth_egm``/``k``/``extra_rows`` the row was fitted with.
    Returns the dtype, both best epochs (pooled, and per rhythm), and the largest absolute
    difference of the validation correlation and of each rhythm's test correlation of the
    network and of the routed network (``max_abs_test_corr`` covers both)."""
    config = replace(ResidualConfig(**row["config"]), dtype=dtype)
    again = run_residual(ds, row["seed"], row["n_real_sims"], snr_db, baseline, config,
                         **inputs)
    rhythms = [r for r in LABELS if r in row["test"]]
    n = min(len(row["history"]["val_corr"]), len(again["history"]["val_corr"]))
    return {"dtype": dtype, "best_epoch": [row["history"]["best_epoch"],
                                           again["history"]["best_epoch"]],
            "best_epoch_by_rhythm": [row["history"]["best_epoch_by_rhythm"],
                                     again["history"]["best_epoch_by_rhythm"]],
            "max_abs_val_corr": float(np.max(np.abs(np.subtract(
                row["history"]["val_corr"][:n], again["history"]["val_corr"][:n])))),
            "max_abs_test_corr": float(max(abs(row[key][r]["corr_mean"]
                                               - again[key][r]["corr_mean"])
                                           for r in rhythms for key in ("test", "routed")))}


def rounding_agrees(rounding: Mapping[str, Any], tolerance: float) -> bool:
    """Whether a :func:`rounding_check` result kept every best epoch and moved no test
    correlation by more than ``tolerance``."""
    return (rounding["max_abs_test_corr"] <= tolerance
            and rounding["best_epoch"][0] == rounding["best_epoch"][1]
            and rounding["best_epoch_by_rhythm"][0] == rounding["best_epoch_by_rhythm"][1])
