"""An independent evaluation space: one feature extractor that no generator shares.

The fidelity numbers of a generator depend on the space in which its windows are compared with
real ones. An encoder of one of the generators (the VAE-C encoder of
:mod:`egmlib.evaluation.fidelity`) is a space that this generator helped to shape; the
:class:`Evaluator` here is fitted once on the **real training windows only** (both rhythms),
frozen, stored next to the data set, and used to judge every generator and every reference set
alike. It has two halves, both standardised by their training mean and standard deviation so
that neither dominates the Euclidean distances of the distributional metrics:

* a learned half: the ``embed`` units of :class:`RhythmNet`, a small SR/AF classifier that does
  not depend on the order or number of recording sites (per-site 1-D convolutions along time,
  global average pooling over time, mean and standard deviation over sites). It is trained with
  the project's one training loop (:func:`egmlib.core.training.fit`), early-stopped on the
  validation split, and its accuracy there is recorded;
* a physiological half, :func:`physiological_features` (:data:`FEATURE_NAMES`): the
  rhythm-blind dominant frequency (its median and spread over sites), the organisation index,
  peak-to-peak amplitude and RMS, and the coherence of each site with its nearest other
  recording site (from the data set's electrode positions).

On top of it: :func:`distribution_row` (Frechet distance, MMD^2, coverage, precision and recall,
diversity, the share the classifier calls AF), :func:`physiology_row` (medians of the
physiological features), :func:`collapse_report` (posterior collapse of a VAE) and
:func:`nearest_train_predictor` (what memorising the training set scores);
:func:`periodicity_report` and :func:`decoder_periodicity` ask where a generator's AF gets a
rhythm that real AF does not have.

Sources
-------
* Frechet distance: Heusel et al., NeurIPS 2017; MMD: Gretton et al., JMLR 13:723-773, 2012;
  coverage: Naeem et al., ICML 2020 (all in :mod:`egmlib.core.metrics`).
* Precision and recall of k-NN manifolds: Kynkäänniemi et al., "Improved precision and recall
  metric for assessing generative models", NeurIPS 2019 (:func:`precision_recall`).
* Organisation index: Everett et al., IEEE Trans Biomed Eng 48:969-978, 2001; dominant
  frequency by autocorrelation over 0.5-12 Hz: :data:`egmlib.core.metrics.RHYTHM_BLIND_DF`.
* Active units: Burda et al., ICLR 2016 (:func:`egmlib.core.metrics.active_units`).
* The idea of judging generated signals in the space of a classifier trained on real data
  only is that of the Inception score / FID (Salimans et al. 2016; Heusel et al. 2017).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.distance import cdist, pdist
from torch import nn

from egmlib.core import metrics, runs
from egmlib.core.checks import check_int, check_ints
from egmlib.core.process import torch_state, torch_threads
from egmlib.core.training import fit
from egmlib.data import LABELS, SPLIT_NAMES, Dataset
from egmlib.generators import synthesis
from egmlib.generators.generate import encode_means, nearest_windows
from egmlib.generators.models import ConvVAE
from egmlib.generators.train import Normalizer, torch_device

__all__ = [
    "DEFAULT_EPOCHS",
    "EVALUATOR_FILE",
    "FEATURE_NAMES",
    "FORMAT",
    "Evaluator",
    "RhythmNet",
    "collapse_report",
    "data_sha256",
    "decoder_periodicity",
    "distribution_row",
    "fit_evaluator",
    "fit_evaluator_arrays",
    "load_or_fit_evaluator",
    "nearest_train_predictor",
    "periodicity_report",
    "physiological_features",
    "physiology_row",
    "precision_recall",
    "shared_variance",
    "site_neighbours",
]

#: Names of the columns of :func:`physiological_features`, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "df_hz",               # median over sites of the rhythm-blind DF (Hz)
    "df_spread_hz",        # p90 - p10 of that DF over sites (Hz)
    "organisation_index",  # median over sites of the organisation index
    "amplitude_mv",        # median over sites of the peak-to-peak amplitude (mV)
    "rms_mv",              # median over sites of the RMS (mV)
    "neighbour_coherence",  # mean over site pairs of the max normalised xcorr within +-50 ms
)
#: Format tag of the evaluator file.
FORMAT = "egmlib.evaluator/1"
#: File name of the cached evaluator, in ``<run_dir>/data/`` beside the data set it judges.
EVALUATOR_FILE = "evaluator.pt"
#: Default maximum number of classifier epochs (early stopping usually ends sooner).
DEFAULT_EPOCHS = 12

# Largest lag of the neighbour coherence (s), and elements of a block of windows processed at
# once by the features (float64: 32 MB).
_COHERENCE_LAG_S = 0.05
_BLOCK_ELEMENTS = 1 << 22
# Per-site sequences in one classifier forward pass at evaluation (bounds memory).
_SEQUENCES_PER_PASS = 4096
# A site is flat when its range is below this fraction of its largest absolute value
# (the convention of egmlib.core.metrics).
_FLAT_RTOL = 1e-12


# ----------------------------------------------------------------------------------------------
# Physiological features
# ----------------------------------------------------------------------------------------------


def _windows(x: Any, name: str = "x") -> np.ndarray:
    """Windows ``(n, T, C)`` as an array (a memmap stays one: blocks are converted later)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise ValueError(f"{name}: expected windows shaped (n, T, C) or (T, C); got {arr.shape}")
    return arr


def _neighbours(neighbours: ArrayLike | None, n_sites: int) -> NDArray[np.int64]:
    """Each site's neighbouring site: the given array, checked, or the next column (the last
    site paired with the one before it)."""
    if neighbours is None:
        if n_sites < 2:
            raise ValueError("x: the neighbour coherence needs at least 2 sites (or pass "
                             "neighbours)")
        nb = np.arange(1, n_sites + 1)
        nb[-1] = n_sites - 2
        return nb.astype(np.int64)
    nb = np.asarray(neighbours)
    if nb.shape != (n_sites,) or not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbours: expected {n_sites} integer site indices (one per site); "
                         f"got shape {nb.shape} of {nb.dtype}")
    if nb.size and (nb.min() < 0 or nb.max() >= n_sites):
        raise ValueError(f"neighbours: indices must lie in 0..{n_sites - 1}")
    return nb.astype(np.int64)


def site_neighbours(positions: ArrayLike) -> NDArray[np.int64]:
    """Each site's nearest other site (Euclidean) from site positions ``(C, 3)``, ``C >= 2``:
    the ``neighbours`` of :func:`physiological_features` for a data set whose columns are not
    stored in spatial order."""
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 2 or pos.shape[0] < 2 or not np.all(np.isfinite(pos)):
        raise ValueError(f"positions: expected finite site positions (C >= 2, d); got "
                         f"{pos.shape}")
    d = cdist(pos, pos)
    np.fill_diagonal(d, np.inf)
    return np.argmin(d, axis=1).astype(np.int64)


def _dataset_neighbours(ds: Dataset, neighbours: Any) -> NDArray[np.int64] | None:
    """``neighbours`` for a data set: ``"geometry"`` -> :func:`site_neighbours` of its
    recording electrodes (``None``, i.e. the next column, when it has no geometry file);
    ``None`` -> the next column; an array -> itself, checked."""
    if isinstance(neighbours, str):
        if neighbours != "geometry":
            raise ValueError(f"neighbours: got {neighbours!r}; allowed: 'geometry', None or "
                             "an array of site indices")
        try:
            electrodes = ds.geometry()[1].electrodes
        except (OSError, KeyError, ValueError):  # a data set without geometry (in memory)
            return None
        if len(electrodes) != ds.egm.shape[2]:
            raise ValueError(f"ds: the geometry has {len(electrodes)} electrodes for "
                             f"{ds.egm.shape[2]} recording sites")
        return site_neighbours(electrodes)
    if neighbours is None:
        return None
    return _neighbours(neighbours, ds.egm.shape[2])


def _flat(a: np.ndarray) -> np.ndarray:
    """``(m, C)``: True where a site of ``(m, T, C)`` windows is constant in time."""
    return np.ptp(a, axis=1) <= _FLAT_RTOL * np.max(np.abs(a), axis=1)


def _coherence(a: np.ndarray, nb: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean over sites ``i`` of ``max_{|l| <= max_lag} r_i(l)``, ``r_i(l)`` the normalised
    cross-correlation of site ``i`` and site ``nb[i]`` at lag ``l`` over their overlap: with
    ``u``, ``v`` the mean-removed signals, ``r(l) = sum_t u[t] v[t+l] / sqrt(sum u[t]^2 sum
    v[t+l]^2)``, sums over the ``T - |l|`` samples where both exist (so an exact delayed copy
    gives 1). Pairs with a flat site give 0. ``a``: ``(m, T, C)`` float64; returns ``(m,)``."""
    n_time = a.shape[1]
    u = a - a.mean(axis=1, keepdims=True)
    v = u[:, :, nb]
    zero = np.zeros((u.shape[0], 1, u.shape[2]))
    cu = np.concatenate([zero, np.cumsum(u * u, axis=1)], axis=1)  # cu[:, k] = sum_{t<k} u^2
    cv = np.concatenate([zero, np.cumsum(v * v, axis=1)], axis=1)
    best = np.full(u.shape[::2], -np.inf)
    for lag in range(-max_lag, max_lag + 1):
        k = abs(lag)
        if lag >= 0:  # u[0:T-k] against v[k:T]
            num = np.einsum("mtc,mtc->mc", u[:, : n_time - k], v[:, k:])
            den = (cu[:, n_time - k] - cu[:, 0]) * (cv[:, n_time] - cv[:, k])
        else:         # u[k:T] against v[0:T-k]
            num = np.einsum("mtc,mtc->mc", u[:, k:], v[:, : n_time - k])
            den = (cu[:, n_time] - cu[:, k]) * (cv[:, n_time - k] - cv[:, 0])
        ok = den > 0
        r = np.where(ok, num / np.sqrt(np.where(ok, den, 1.0)), 0.0)
        best = np.maximum(best, r)
    flat = _flat(a)
    best = np.where(flat | flat[:, nb], 0.0, np.clip(best, -1.0, 1.0))
    return best.mean(axis=1)


def physiological_features(x: ArrayLike, fs: float,
                           neighbours: ArrayLike | None = None) -> NDArray[np.float64]:
    """Physiological features of EGM windows, one row per window, columns :data:`FEATURE_NAMES`.

    Per window ``(T, C)`` in mV sampled at ``fs`` Hz:

    ``df_hz``, ``df_spread_hz``
        the median and the 90th minus the 10th percentile over sites of the dominant frequency
        :data:`egmlib.core.metrics.RHYTHM_BLIND_DF` (autocorrelation peak over 0.5-12 Hz: SR
        and AF rates alike, without presupposing the rhythm);
    ``organisation_index``
        the median over sites of :func:`egmlib.core.metrics.organisation_index` (Everett et al.
        2001) in the same 0.5-12 Hz band, around that DF and its harmonics;
    ``amplitude_mv``, ``rms_mv``
        the median over sites of the peak-to-peak amplitude and of the RMS ``sqrt(mean x^2)``;
    ``neighbour_coherence``
        the mean over the site pairs ``(i, neighbours[i])`` of the largest normalised
        cross-correlation over lags within +-50 ms (``round(0.05 fs)`` samples, computed over
        the overlapping samples so that a delayed copy scores 1): how alike neighbouring sites
        are, whatever the conduction delay between them.

    NaN-safe: a flat (constant) site has no DF or OI (NaN, ignored by the medians) and gives 0
    coherence; a window whose sites are all flat gets NaN DF, spread and OI (the
    :class:`Evaluator` fills them with the training medians).

    Args:
        x: windows ``(n, T, C)`` (or one ``(T, C)``), ``T >= 4``, finite.
        fs: sampling rate (Hz), at least 24 (the DF band reaches 12 Hz).
        neighbours: ``(C,)`` int, each site's nearest other site (:func:`site_neighbours` of
            the electrode positions); default the next column (``i + 1``, the last site paired
            with the one before it), right only for sites stored in spatial order (in
            ``runs/default/data`` as built when this was written, adjacent columns lay a median
            46 mm apart and nearest electrodes 6.4 mm): :func:`fit_evaluator` therefore takes
            the pairs from the data set's electrode positions, whatever the column order.

    Returns:
        ``(n, len(FEATURE_NAMES))`` float64.
    """
    arr = _windows(x)
    rate = float(fs)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"fs: expected a positive sampling rate, got {fs!r}")
    n, n_time, n_sites = arr.shape
    nb = _neighbours(neighbours, n_sites)
    max_lag = max(0, min(round(_COHERENCE_LAG_S * rate), n_time - 2))
    band = metrics.RHYTHM_BLIND_DF.band_hz
    out = np.empty((n, len(FEATURE_NAMES)))
    step = max(1, _BLOCK_ELEMENTS // (n_time * n_sites))
    for s in range(0, n, step):
        a = np.asarray(arr[s:s + step], dtype=np.float64)
        df = metrics.RHYTHM_BLIND_DF(a, rate)                           # (m, C), NaN if flat
        oi = metrics.organisation_index(a, rate, band, df=df)           # (m, C)
        with warnings.catch_warnings():  # all-NaN windows (every site flat) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(df, [10.0, 90.0], axis=1)
            out[s:s + step, 0] = np.nanmedian(df, axis=1)
            out[s:s + step, 1] = hi - lo
            out[s:s + step, 2] = np.nanmedian(oi, axis=1)
        out[s:s + step, 3] = np.median(np.ptp(a, axis=1), axis=1)
        out[s:s + step, 4] = np.median(np.sqrt(np.mean(a * a, axis=1)), axis=1)
        out[s:s + step, 5] = _coherence(a, nb, max_lag)
    return out


# ----------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------


class RhythmNet(nn.Module):
    """SR/AF classifier of windows ``(B, T, C)`` that does not depend on site order or count.

    Every site is one sequence: ``len(channels)`` 1-D convolutions along time (kernel
    ``kernel``, stride 2, LeakyReLU), a global average over time, then the mean **and** the
    standard deviation over the sites of each channel (``2 * channels[-1]`` values, invariant
    to permuting, and defined for any number of sites), a linear layer to the ``embed``-unit
    embedding, LeakyReLU and a linear head to 2 logits (0 = SR, 1 = AF). All sites of a batch
    run as ``B * C`` sequences in one convolution call. Input is scaled (see
    :class:`egmlib.generators.train.Normalizer`).
    """

    def __init__(self, embed: int = 32, channels: tuple[int, ...] = (16, 32, 32),
                 kernel: int = 7, negative_slope: float = 0.2) -> None:
        super().__init__()
        check_ints(("embed", embed, 1), ("kernel", kernel, 1))
        if not channels:
            raise ValueError("channels: need at least one convolution")
        self.embed_size = int(embed)
        self.channels = tuple(int(c) for c in channels)
        self.kernel = int(kernel)
        self.negative_slope = float(negative_slope)
        layers: list[nn.Module] = []
        c_in = 1
        for c in self.channels:
            layers += [nn.Conv1d(c_in, c, kernel, stride=2, padding=kernel // 2),
                       nn.LeakyReLU(negative_slope)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.project = nn.Linear(2 * c_in, self.embed_size)
        self.act = nn.LeakyReLU(negative_slope)
        self.head = nn.Linear(self.embed_size, len(LABELS))

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (plain values)."""
        return {"embed": self.embed_size, "channels": list(self.channels),
                "kernel": self.kernel, "negative_slope": self.negative_slope}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``(B, embed)`` of scaled windows ``(B, T, C)``."""
        if x.ndim != 3:
            raise ValueError(f"x: expected windows shaped (B, T, C); got {tuple(x.shape)}")
        b, t, c = x.shape
        h = x.permute(0, 2, 1).reshape(b * c, 1, t)
        h = self.conv(h).mean(dim=-1).view(b, c, -1)           # (B, C, channels)
        pooled = torch.cat([h.mean(dim=1), h.std(dim=1, unbiased=False)], dim=1)
        return self.project(pooled)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 2)`` from embeddings ``(B, embed)``."""
        return self.head(self.act(emb))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 2)`` of scaled windows ``(B, T, C)``."""
        return self.logits(self.embed(x))


def _site_chunks(n: int, n_sites: int) -> Iterator[slice]:
    step = max(1, _SEQUENCES_PER_PASS // n_sites)
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


# ----------------------------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------------------------


def _safe_std(values: np.ndarray) -> np.ndarray:
    """Standard deviation over rows; 1 where it is 0 or not finite (a constant column)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(values, axis=0)
    return np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)


@dataclass(eq=False)
class Evaluator:
    """The frozen evaluation space (see the module docstring). Build it with
    :func:`fit_evaluator`; read it back with :meth:`load`.

    Attributes:
        net: the trained :class:`RhythmNet` (eval mode, CPU).
        norm: the scale of the classifier's input (robust max-abs of the training windows).
        emb_mean, emb_std: ``(embed,)`` mean and std of the embedding over the training windows.
        feat_mean, feat_std, feat_median: ``(F,)`` mean, std and median of
            :func:`physiological_features` over the training windows (NaN ignored).
        fs: sampling rate (Hz) of the windows.
        neighbours: ``(C,)`` neighbour of each site for the coherence, ``None`` for the default.
        train_index: indices into the data set of the windows it was fitted on (all in the
            train split), or into ``x_train`` for :func:`fit_evaluator_arrays`.
        data_sha256: SHA-256 of the data set's ``egm.npy`` (manifest), ``None`` if unknown.
        history: the classifier's training history (per-epoch lists).
        val_accuracy: the classifier's accuracy on the validation windows, all sites.
        settings: the fitting settings (seed, epochs, ...), compared by the cache.
    """

    net: RhythmNet
    norm: Normalizer
    emb_mean: NDArray[np.float64]
    emb_std: NDArray[np.float64]
    feat_mean: NDArray[np.float64]
    feat_std: NDArray[np.float64]
    feat_median: NDArray[np.float64]
    fs: float
    neighbours: NDArray[np.int64] | None
    train_index: NDArray[np.int64]
    data_sha256: str | None
    history: dict[str, Any] = field(default_factory=dict)
    val_accuracy: float = math.nan
    settings: dict[str, Any] = field(default_factory=dict)

    # -- the two halves ---------------------------------------------------------------------
    def _forward(self, x: Any, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw embeddings ``(n, embed)`` and logits ``(n, 2)`` of windows in mV, all sites, with
        :func:`egmlib.core.process.default_threads` ``(threads)`` torch threads."""
        arr = _windows(x)
        emb, logit = [], []
        self.net.eval()
        dev = next(self.net.parameters()).device
        with torch_threads(threads), torch.no_grad():
            for sl in _site_chunks(arr.shape[0], arr.shape[2]):
                xb = torch.from_numpy(np.ascontiguousarray(self.norm.transform(arr[sl])))
                e = self.net.embed(xb.to(dev))
                emb.append(e.double().cpu().numpy())
                logit.append(self.net.logits(e).double().cpu().numpy())
        return np.concatenate(emb), np.concatenate(logit)

    def physiology(self, x: ArrayLike) -> NDArray[np.float64]:
        """Standardised physiological features ``(n, F)``: NaN entries (a window with no DF)
        replaced by the training medians, then ``(value - mean) / std`` of the training set."""
        raw = physiological_features(x, self.fs, self.neighbours)
        filled = np.where(np.isfinite(raw), raw, self.feat_median)
        return (filled - self.feat_mean) / self.feat_std

    def features(self, x: ArrayLike) -> NDArray[np.float64]:
        """The evaluation features ``(n, embed + F)`` of windows ``(n, T, C)`` in mV.

        The classifier embedding (all sites) concatenated with the physiological features;
        **both halves are standardised** by their training mean and standard deviation (the
        physiological half after filling NaN with training medians), so each unit has about
        unit spread on real data and neither half dominates the Euclidean distances of
        :func:`distribution_row`."""
        return self._features_and_calls(x)[0]

    def _features_and_calls(self, x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`features` and :meth:`rhythm_calls` from one pass of the classifier."""
        emb, logit = self._forward(x)
        feats = np.hstack([(emb - self.emb_mean) / self.emb_std, self.physiology(x)])
        return feats, np.argmax(logit, axis=1).astype(np.int64)

    def predict_proba(self, x: ArrayLike) -> NDArray[np.float64]:
        """Classifier probabilities ``(n, 2)`` of SR and AF (columns in :data:`LABELS` order)."""
        _, logit = self._forward(x)
        z = logit - logit.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def rhythm_calls(self, x: ArrayLike) -> NDArray[np.int64]:
        """The classifier's call per window ``(n,)``: 0 = SR, 1 = AF."""
        _, logit = self._forward(x)
        return np.argmax(logit, axis=1).astype(np.int64)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the columns of :meth:`features`."""
        return (*(f"embed_{i}" for i in range(self.net.embed_size)), *FEATURE_NAMES)

    def describe(self) -> dict[str, Any]:
        """Plain JSON summary: feature names, sizes, training windows, validation accuracy,
        data checksum, settings and the classifier's best epoch."""
        best = self.history.get("best_epoch")
        return {
            "format": FORMAT,
            "feature_names": list(FEATURE_NAMES),
            "embed": int(self.net.embed_size),
            "n_features": int(self.net.embed_size + len(FEATURE_NAMES)),
            "train_windows": int(self.train_index.size),
            "val_accuracy": float(self.val_accuracy),
            "data_sha256": self.data_sha256,
            "fs": float(self.fs),
            "epochs_run": int(self.history.get("epochs_run", 0)),
            "best_epoch": None if best is None else int(best),
            "settings": dict(self.settings),
            "net": self.net.config(),
        }

    # -- storage ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the evaluator to ``path`` atomically (one torch file with provenance)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        t = torch.from_numpy
        payload = {
            "format": FORMAT,
            "net": self.net.config(),
            "state_dict": state,
            "normalizer": self.norm.to_dict(),
            "emb_mean": t(np.asarray(self.emb_mean, np.float64)),
            "emb_std": t(np.asarray(self.emb_std, np.float64)),
            "feat_mean": t(np.asarray(self.feat_mean, np.float64)),
            "feat_std": t(np.asarray(self.feat_std, np.float64)),
            "feat_median": t(np.asarray(self.feat_median, np.float64)),
            "fs": float(self.fs),
            "neighbours": None if self.neighbours is None else t(np.asarray(self.neighbours,
                                                                            np.int64)),
            "train_index": t(np.asarray(self.train_index, np.int64)),
            "data_sha256": self.data_sha256,
            "history": self.history,
            "val_accuracy": float(self.val_accuracy),
            "settings": dict(self.settings),
            "feature_names": list(FEATURE_NAMES),
        }
        return runs.save_torch_checkpoint(path, payload, {"params": dict(self.settings),
                                                          "seed": self.settings.get("seed")})

    @classmethod
    def load(cls, path: str | Path) -> Evaluator:
        """Read an evaluator written by :meth:`save` (on the CPU)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"evaluator {path} does not exist")
        p = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(p, dict) or p.get("format") != FORMAT:
            raise ValueError(f"{path}: not an egmlib evaluator ({FORMAT})")
        if tuple(p["feature_names"]) != FEATURE_NAMES:
            raise ValueError(f"{path}: written with other physiological features; refit it")
        cfg = p["net"]
        net = RhythmNet(embed=cfg["embed"], channels=tuple(cfg["channels"]),
                        kernel=cfg["kernel"], negative_slope=cfg["negative_slope"])
        net.load_state_dict(p["state_dict"])
        net.eval()

        def a(key: str) -> np.ndarray:
            return p[key].numpy()

        return cls(net=net, norm=Normalizer.from_dict(p["normalizer"]), emb_mean=a("emb_mean"),
                   emb_std=a("emb_std"), feat_mean=a("feat_mean"), feat_std=a("feat_std"),
                   feat_median=a("feat_median"), fs=float(p["fs"]),
                   neighbours=None if p["neighbours"] is None else a("neighbours"),
                   train_index=a("train_index"), data_sha256=p["data_sha256"],
                   history=dict(p["history"]), val_accuracy=float(p["val_accuracy"]),
                   settings=dict(p["settings"]))


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------


def _labels01(y: Any, n: int, name: str) -> np.ndarray:
    lab = np.asarray(y)
    if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{name}: expected {n} integer labels; got shape {lab.shape} of "
                         f"{lab.dtype}")
    if lab.size and not np.isin(lab, np.arange(len(LABELS))).all():
        raise ValueError(f"{name}: labels must be 0 (SR) or 1 (AF)")
    return lab.astype(np.int64)


#: Settings of :func:`fit_evaluator_arrays` besides seed, epochs and embed that the cache compares.
_TUNING = ("patience", "batch_size", "lr", "sites_per_batch")


def _settings(seed: int, epochs: int, embed: int, patience: int = 3, batch_size: int = 16,
              lr: float = 3e-3, sites_per_batch: int = 64) -> dict[str, Any]:
    """The fitting settings as stored in an evaluator (and compared by the cache)."""
    return {"format": FORMAT, "seed": int(seed), "epochs": int(epochs), "embed": int(embed),
            "patience": int(patience), "batch_size": int(batch_size), "lr": float(lr),
            "sites_per_batch": int(sites_per_batch)}


def fit_evaluator_arrays(x_train: ArrayLike, y_train: ArrayLike, x_val: ArrayLike,
                         y_val: ArrayLike, fs: float, *, seed: int = 0,
                         epochs: int = DEFAULT_EPOCHS, embed: int = 32, device: str = "cpu",
                         patience: int = 3, batch_size: int = 16, lr: float = 3e-3,
                         sites_per_batch: int = 64, neighbours: ArrayLike | None = None,
                         train_index: ArrayLike | None = None, data_sha256: str | None = None,
                         threads: int | None = None) -> Evaluator:
    """Fit an :class:`Evaluator` on training windows ``x_train`` ``(n, T, C)`` in mV with
    rhythm labels ``y_train`` (0 SR, 1 AF; both rhythms needed), early-stopping its classifier
    on ``x_val`` / ``y_val``.

    Steps: the scale (:class:`~egmlib.generators.train.Normalizer`, a high quantile of
    ``|x_train|``); :class:`RhythmNet` trained by :func:`egmlib.core.training.fit` (Adam ``lr``,
    cross-entropy, gradient norm clipped to 1, early stopping on the validation cross-entropy
    with ``patience``, best weights restored) inside :func:`egmlib.core.process.torch_state`
    (seeded by ``seed``, deterministic kernels, ``threads``); each training batch sees a random
    subset of ``sites_per_batch`` sites (the net does not depend on the site count; drawn from
    ``numpy.random.default_rng(seed)``), validation and evaluation use all sites. Then the
    standardisation of both feature halves over the training windows and the validation
    accuracy.

    ``train_index`` (default ``arange(n)``) and ``data_sha256`` are recorded as given.
    """
    xtr = _windows(x_train, "x_train")
    xva = _windows(x_val, "x_val")
    if xva.shape[1:] != xtr.shape[1:]:
        raise ValueError(f"x_val: windows shaped {xva.shape[1:]}, x_train's are {xtr.shape[1:]}")
    ytr = _labels01(y_train, xtr.shape[0], "y_train")
    yva = _labels01(y_val, xva.shape[0], "y_val")
    if np.unique(ytr).size < len(LABELS):
        raise ValueError("y_train: the evaluator needs training windows of both rhythms")
    check_ints(("seed", seed, 0), ("epochs", epochs, 1), ("embed", embed, 1),
               ("patience", patience, 1), ("batch_size", batch_size, 1),
               ("sites_per_batch", sites_per_batch, 1))
    rate = float(fs)
    n, _, n_sites = xtr.shape
    nb = None if neighbours is None else _neighbours(neighbours, n_sites)
    index = (np.arange(n, dtype=np.int64) if train_index is None
             else np.asarray(train_index, np.int64))
    if index.shape != (n,):
        raise ValueError(f"train_index: expected {n} indices, got shape {index.shape}")
    dev = torch_device(device)
    settings = _settings(seed, epochs, embed, patience=patience, batch_size=batch_size, lr=lr,
                         sites_per_batch=sites_per_batch)

    norm = Normalizer().fit(xtr)
    xs_tr = norm.transform(xtr)
    xs_va = norm.transform(xva)
    k_sites = min(n_sites, int(sites_per_batch))
    with torch_state(seed=seed, threads=threads, deterministic=True, device=dev):
        net = RhythmNet(embed=embed).to(dev)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        rng = np.random.default_rng(seed)

        def train_batches(epoch: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], int]]:
            order = rng.permutation(n)
            for s in range(0, n, batch_size):
                idx = np.sort(order[s:s + batch_size])
                sites = np.sort(rng.choice(n_sites, size=k_sites, replace=False))
                xb = torch.from_numpy(np.ascontiguousarray(xs_tr[idx][:, :, sites]))
                yield (xb.to(dev), torch.from_numpy(ytr[idx]).to(dev)), len(idx)

        def val_batches(epoch: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], int]]:
            for sl in _site_chunks(xs_va.shape[0], n_sites):
                xb = torch.from_numpy(np.ascontiguousarray(xs_va[sl]))
                yield (xb.to(dev), torch.from_numpy(yva[sl]).to(dev)), sl.stop - sl.start

        def step_loss(batch: tuple[torch.Tensor, torch.Tensor], epoch: int
                      ) -> dict[str, torch.Tensor]:
            xb, yb = batch
            logits = net(xb)
            return {"total": F.cross_entropy(logits, yb),
                    "accuracy": (logits.argmax(dim=1) == yb).float().mean()}

        result = fit(net, step_loss, train_batches, val_batches, optimizer, epochs=epochs,
                     patience=patience, clip_norm=1.0, total="total", monitor="total",
                     hint=" (evaluator classifier)")
    net = net.cpu().eval()
    history = {"train": result.train, "val": result.val, "lr": result.lr,
               "epoch_s": result.epoch_s, "best_epoch": result.best_epoch,
               "best_val": result.best_val, "epochs_run": result.epochs_run,
               "stopped_early": result.stopped_early}

    feats = physiological_features(xtr, rate, nb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(feats, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(np.isfinite(feats), feats, median)
    ev = Evaluator(net=net, norm=norm, emb_mean=np.zeros(embed), emb_std=np.ones(embed),
                   feat_mean=filled.mean(axis=0), feat_std=_safe_std(filled),
                   feat_median=median, fs=rate, neighbours=nb, train_index=index,
                   data_sha256=data_sha256, history=history, settings=settings)
    emb, _ = ev._forward(xtr, threads)
    ev.emb_mean, ev.emb_std = emb.mean(axis=0), _safe_std(emb)
    _, logit = ev._forward(xva, threads)
    ev.val_accuracy = float(np.mean(np.argmax(logit, axis=1) == yva))
    return ev


def data_sha256(ds: Dataset) -> str:
    """SHA-256 of the data set's EGM windows: ``egm.npy``'s from the manifest; for a data set
    without that entry (built in memory) ``"array:"`` + the SHA-256 of the array's bytes."""
    sha = ds.manifest.get("files", {}).get("egm.npy", {}).get("sha256")
    if sha:
        return str(sha)
    h = hashlib.sha256()
    egm = np.asarray(ds.egm)
    h.update(str((egm.shape, egm.dtype.str)).encode())
    for s in range(0, egm.shape[0], 64):
        h.update(np.ascontiguousarray(egm[s:s + 64]).tobytes())
    return "array:" + h.hexdigest()


def _train_index(ds: Dataset, train_index: ArrayLike | None) -> NDArray[np.int64]:
    """The training windows of both rhythms (default: all of the train split), checked."""
    train = ds.split == SPLIT_NAMES.index("train")
    if train_index is None:
        idx = np.flatnonzero(train & np.isin(ds.label, np.arange(len(LABELS))))
    else:
        idx = np.asarray(train_index)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"train_index: expected 1-D integer indices; got {idx.shape} of "
                             f"{idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= train.size):
            raise ValueError(f"train_index: indices must lie in 0..{train.size - 1}")
    bad = idx[~train[idx]]
    if bad.size:  # the evaluator sees real training windows only, never validation or test
        raise ValueError(f"train_index: {bad.size} window(s) are not in the train split "
                         f"(first: {int(bad[0])}, split {SPLIT_NAMES[int(ds.split[bad[0]])]})")
    if idx.size == 0:
        raise ValueError("ds: no training windows")
    return idx.astype(np.int64)


def fit_evaluator(ds: Dataset, seed: int = 0, epochs: int = DEFAULT_EPOCHS, embed: int = 32,
                  device: str = "cpu", train_index: ArrayLike | None = None,
                  neighbours: ArrayLike | str | None = "geometry", **kwargs: Any) -> Evaluator:
    """Fit the :class:`Evaluator` on the data set's **training** windows of both rhythms
    (``train_index``, default all of them; any index outside the train split is a
    ``ValueError``), early-stopping its classifier on the validation split; see
    :func:`fit_evaluator_arrays` for the steps and ``kwargs``. Records ``train_index`` and
    :func:`data_sha256`. The default budget is small (at most ``epochs`` passes over the
    training windows, 64 sites per batch).

    ``neighbours`` (of the coherence feature): ``"geometry"`` (default) pairs each site with
    its nearest other recording electrode, from the data set's ``geometry.npz``
    (:func:`site_neighbours`), or with the next column when the data set has none; ``None``:
    the next column; or an explicit ``(C,)`` array. Measured on ``runs/default/data`` as built
    when this was written (columns not in spatial order: adjacent columns a median 46 mm
    apart, nearest electrodes 6.4 mm), on 20 test windows: coherence with the nearest electrode
    0.87 (SR) and 0.81 (AF), with the next column 0.60 and 0.53, no more than with random
    pairs (0.61, 0.53)."""
    idx = _train_index(ds, train_index)
    assert np.all(ds.split[idx] == SPLIT_NAMES.index("train"))
    val = np.flatnonzero(ds.part("val"))
    if val.size == 0:
        raise ValueError("ds: no validation windows to early-stop the evaluator's classifier")
    return fit_evaluator_arrays(
        np.asarray(ds.egm[idx]), np.asarray(ds.label[idx], np.int64),
        np.asarray(ds.egm[val]), np.asarray(ds.label[val], np.int64), float(ds.manifest["fs"]),
        seed=seed, epochs=epochs, embed=embed, device=device, train_index=idx,
        data_sha256=data_sha256(ds), neighbours=_dataset_neighbours(ds, neighbours), **kwargs)


def load_or_fit_evaluator(ds: Dataset, run_dir: str | Path, seed: int = 0,
                          epochs: int = DEFAULT_EPOCHS, embed: int = 32, device: str = "cpu",
                          **kwargs: Any) -> Evaluator:
    """The evaluator of ``ds``, cached at ``<run_dir>/data/evaluator.pt`` (beside the data set,
    which :func:`egmlib.data.load_dataset` reads from ``<run_dir>/data``).

    The cached file is used only when its data checksum, training windows, sampling rate,
    site neighbours and settings (seed, epochs, embed, the ``kwargs`` of :func:`fit_evaluator`
    and :func:`fit_evaluator_arrays`) all match; otherwise (or when it is missing or
    unreadable) the evaluator is refitted with :func:`fit_evaluator` and the file overwritten
    atomically."""
    path = Path(run_dir) / "data" / EVALUATOR_FILE
    tuning = {k: kwargs[k] for k in _TUNING if k in kwargs}
    expect = _settings(seed, epochs, embed, **tuning)
    if path.exists():
        try:
            cached: Evaluator | None = Evaluator.load(path)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError):
            cached = None  # unreadable or of another format: refit
        nb = _dataset_neighbours(ds, kwargs.get("neighbours", "geometry"))
        if cached is not None and _matches(cached, ds, expect, nb, kwargs.get("train_index")):
            return cached
    ev = fit_evaluator(ds, seed=seed, epochs=epochs, embed=embed, device=device, **kwargs)
    ev.save(path)
    return ev


def _matches(ev: Evaluator, ds: Dataset, settings: Mapping[str, Any],
             neighbours: ArrayLike | None, train_index: ArrayLike | None) -> bool:
    """Whether a cached evaluator was fitted on this data set with these settings."""
    if ev.data_sha256 != data_sha256(ds) or float(ev.fs) != float(ds.manifest["fs"]):
        return False
    if not np.array_equal(ev.train_index, _train_index(ds, train_index)):
        return False
    if ev.settings != dict(settings):
        return False
    if neighbours is None or ev.neighbours is None:
        return neighbours is None and ev.neighbours is None
    return np.array_equal(ev.neighbours, np.asarray(neighbours))


# ----------------------------------------------------------------------------------------------
# Distributional rows
# ----------------------------------------------------------------------------------------------


def precision_recall(real: ArrayLike, fake: ArrayLike, k_real: int = 5,
                     k_fake: int | None = None) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019).

    The manifold of a set is the union of closed balls around its samples, each with radius
    the distance to the sample's k-th nearest other sample of the same set (as the authors'
    code, ``distance <= radius``). Precision: the fraction of ``fake`` samples inside the real
    manifold (``k_real``); recall: the fraction of ``real`` samples inside the fake manifold
    (``k_fake``, default ``k_real``).

    Args:
        real: ``(n_real, d)``, ``n_real > k_real``.
        fake: ``(n_fake, d)``, ``n_fake > k_fake``.

    Returns:
        ``{"precision": ..., "recall": ...}``, floats in ``[0, 1]``.
    """
    kr = check_int("k_real", k_real, 1)
    kf = kr if k_fake is None else check_int("k_fake", k_fake, 1)
    fr = np.asarray(real, np.float64)
    ff = np.asarray(fake, np.float64)
    for name, arr, k in (("real", fr, kr), ("fake", ff, kf)):
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise ValueError(f"{name}: expected a feature set shaped (n, d); got {arr.shape}")
        if arr.shape[0] <= k:
            raise ValueError(f"{name}: needs more than k={k} samples, got {arr.shape[0]}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: must be finite")
    if fr.shape[1] != ff.shape[1]:
        raise ValueError(f"fake: has {ff.shape[1]} features, real has {fr.shape[1]}")
    r_real = np.partition(cdist(fr, fr), kr, axis=1)[:, kr]  # column 0: the self-distance
    r_fake = np.partition(cdist(ff, ff), kf, axis=1)[:, kf]
    d = cdist(fr, ff)  # (n_real, n_fake)
    precision = float(np.mean((d <= r_real[:, None]).any(axis=0)))
    recall = float(np.mean((d <= r_fake[None, :]).any(axis=1)))
    return {"precision": precision, "recall": recall}


def distribution_row(ev: Evaluator, generated: ArrayLike, real: ArrayLike) -> dict[str, float]:
    """A set of windows against real ones in the evaluator's space (:meth:`Evaluator.features`).

    Frechet distance and MMD^2 (RBF, median heuristic) between the sets; coverage of the real
    windows by the generated ones (Naeem et al., ``k = min(5, n_real - 1)``); precision and
    recall (:func:`precision_recall`, ``k = min(5, n - 1)`` per set); diversity (mean pairwise
    distance) of both sets; and ``called_af``, the fraction of generated windows the
    classifier calls AF. Both sets need at least 2 windows.
    """
    g = _windows(generated, "generated")
    r = _windows(real, "real")
    if g.shape[0] < 2 or r.shape[0] < 2:
        raise ValueError("generated, real: need at least 2 windows each")
    fg, calls = ev._features_and_calls(g)
    fr = ev.features(r)
    pr = precision_recall(fr, fg, k_real=min(5, len(fr) - 1), k_fake=min(5, len(fg) - 1))
    return {
        "frechet": metrics.frechet_distance(fr, fg),
        "mmd2": metrics.mmd2(fr, fg),
        "coverage": metrics.coverage(fr, fg, k=min(5, len(fr) - 1)),
        "precision": pr["precision"],
        "recall": pr["recall"],
        "diversity": metrics.diversity(fg),
        "diversity_real": metrics.diversity(fr),
        "called_af": float(np.mean(calls == LABELS.index("AF"))),
        "n_generated": int(g.shape[0]),
        "n_real": int(r.shape[0]),
    }


def physiology_row(ev: Evaluator, generated: ArrayLike, real: ArrayLike) -> dict[str, float]:
    """Per physiological feature (:data:`FEATURE_NAMES`, in physical units): the median over the
    generated windows (``<name>_generated``), over the real windows (``<name>_real``) and
    their absolute difference (``<name>_abs_diff``). NaN features (flat windows) are ignored;
    a feature NaN in every window gives NaN."""
    fg = physiological_features(generated, ev.fs, ev.neighbours)
    fr = physiological_features(real, ev.fs, ev.neighbours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mg, mr = np.nanmedian(fg, axis=0), np.nanmedian(fr, axis=0)
    out: dict[str, float] = {}
    for i, name in enumerate(FEATURE_NAMES):
        out[f"{name}_generated"] = float(mg[i])
        out[f"{name}_real"] = float(mr[i])
        out[f"{name}_abs_diff"] = float(abs(mg[i] - mr[i]))
    return out


# ----------------------------------------------------------------------------------------------
# Posterior collapse and the memorising reference
# ----------------------------------------------------------------------------------------------


def shared_variance(x: ArrayLike) -> float:
    """The share of a set of windows' variance that all of them have in common.

    Each window ``(T, C)`` is centred per site (its mean over time removed); with ``m`` the mean
    of the centred windows over the set, the result is ``||m||^2 / mean_n ||x_n||^2``: 1 when
    every window is the same, 0 when they cancel, about ``1 / n`` for ``n`` independent windows.
    A decoder that emits one template for every input whatever its code scores near 1 on its
    reconstructions while real windows of a chaotic rhythm score near ``1 / n``.

    Args:
        x: ``(n, T, C)`` windows, ``n >= 2``.
    """
    arr = np.asarray(_windows(x), np.float64)
    if arr.shape[0] < 2:
        raise ValueError("x: needs at least 2 windows")
    c = arr - arr.mean(axis=1, keepdims=True)
    total = float(np.mean(np.sum(c * c, axis=(1, 2))))
    if total == 0.0:
        return math.nan
    m = c.mean(axis=0)
    return float(np.sum(m * m)) / total


def collapse_report(model: ConvVAE, norm: Normalizer, x: ArrayLike, y: ArrayLike | None = None,
                    threshold: float = 0.1, max_windows: int = 50) -> dict[str, Any]:
    """Does a VAE ignore its latent code (posterior collapse)?

    On the first ``max_windows`` (default 50) windows of ``x`` (mV; VAE-C needs their labels
    ``y``):

    * ``active_units``: :func:`egmlib.core.metrics.active_units` (Burda et al. 2016: variance
      over windows of the encoder mean above 0.01) of
      :func:`egmlib.generators.generate.encode_means`;
    * ``distinctness``: over all pairs ``i < j``, the mean of ``RMS(x̂_i - x̂_j)`` divided by
      the mean of ``RMS(x_i - x_j)``, with ``x̂`` the reconstructions
      (:func:`egmlib.generators.synthesis.reconstruct`, z = encoder mean). A decoder that
      ignores z makes every reconstruction alike (0); a faithful one keeps the windows apart as
      much as they are (about 1);
    * ``shared_variance``: :func:`shared_variance` of the reconstructions, beside
      ``shared_variance_input`` of the windows themselves: a decoder that adds one template to
      every reconstruction has the first far above the second (a partial collapse that
      ``distinctness`` sees only as a lower ratio).

    ``collapsed``: ``active_units == 0`` or ``distinctness < threshold``.
    """
    arr = _windows(x)
    m = check_int("max_windows", max_windows, 2)
    arr = np.asarray(arr[:m], np.float32)
    if arr.shape[0] < 2:
        raise ValueError("x: needs at least 2 windows")
    lab = None if y is None else np.asarray(y)[: arr.shape[0]]
    mu = encode_means(model, norm, arr, lab)
    au = metrics.active_units(mu)
    x_hat = np.asarray(synthesis.reconstruct(model, norm, arr, lab), np.float64)
    scale = math.sqrt(arr.shape[1] * arr.shape[2])  # Euclidean distance -> RMS over samples
    d_real = pdist(arr.reshape(arr.shape[0], -1).astype(np.float64)) / scale
    d_hat = pdist(x_hat.reshape(x_hat.shape[0], -1)) / scale
    denom = float(np.mean(d_real))
    distinct = float(np.mean(d_hat)) / denom if denom > 0 else math.nan
    return {"active_units": int(au), "latent": int(mu.shape[1]),
            "distinctness": float(distinct), "threshold": float(threshold),
            "shared_variance": shared_variance(x_hat),
            "shared_variance_input": shared_variance(arr),
            "n_windows": int(arr.shape[0]),
            "collapsed": bool(au == 0 or not distinct >= threshold)}


def _time_autocorr(h: np.ndarray) -> np.ndarray:
    """Mean normalised autocorrelation along axis 2 of ``(B, channels, time, sites)`` maps:
    each series centred, its autocorrelation (biased, as in the rhythm-blind DF) divided by its
    value at lag 0, then averaged over every series that is not constant."""
    a = np.asarray(h, np.float64)
    a = a - a.mean(axis=2, keepdims=True)
    n = a.shape[2]
    spec = np.fft.rfft(a, n=2 * n, axis=2)
    acf = np.fft.irfft(spec.real ** 2 + spec.imag ** 2, n=2 * n, axis=2)[:, :, :n]
    zero = acf[:, :, :1]
    live = np.broadcast_to(zero > 1e-12 * max(float(zero.max()), 1e-300), acf.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(live, acf / zero, 0.0).sum(axis=(0, 1, 3))
        return total / live.sum(axis=(0, 1, 3))  # NaN at every lag when no series lives


def decoder_periodicity(model: ConvVAE, z: ArrayLike, y: ArrayLike | None, fs: float,
                        seed: int = 0) -> dict[str, Any]:
    """At which stage of the decoder a repeating time pattern appears.

    The latents ``z`` ``(n, code_size)`` (with their class labels ``y`` for VAE-C) are decoded
    once; after the dense layer (the first map; in the sequence layout of
    :class:`egmlib.generators.models.VAEConfig`, the convolution over the latent sequence,
    stage ``"sequence map"``) and after each transposed-convolution block,
    :func:`_time_autocorr` of the feature maps along time is searched for its highest peak at
    the lags of :data:`egmlib.core.metrics.RHYTHM_BLIND_DF` (1/12 to 2 s), in output samples
    (a map step covers ``T / map length`` samples). A period that the dense layer already
    imposes shows at its lag in every row; one that only the convolutions build appears late.

    The test of where it is written: the dense map's time steps are shuffled (one permutation,
    from ``seed``, for every window) and decoded again. The convolutions are the same, so a
    period that they make (a ringing kernel) survives; one laid out by the dense layer, step by
    step, does not.

    Returns:
        ``stages``: one row per stage: ``stage``, ``samples_per_step``, ``lag_samples``,
        ``lag_s``, ``acf`` (the mean normalised autocorrelation at that lag); ``shuffled``: the
        output's row after the shuffle, with ``acf_at_output_lag``, its autocorrelation at the
        intact output's lag; ``first_stage``: the first stage whose peak lag is less than one of
        its steps from the output's; ``laid_out_by_dense_layer``: whether the shuffle takes the
        output's autocorrelation at that lag below half of what it was.
    """
    lo_hz, hi_hz = metrics.RHYTHM_BLIND_DF.band_hz
    cfg = model.config
    zt = torch.as_tensor(np.asarray(z, np.float32))
    if zt.ndim != 2 or zt.shape[1] != cfg.code_size:
        raise ValueError(f"z: expected (n, code_size={cfg.code_size}); got {tuple(zt.shape)}")
    yt = None if y is None else torch.as_tensor(np.asarray(y))
    blocks = list(model.decoder_conv)
    if len(blocks) % 4:
        raise ValueError("model: expected decoder blocks of (transposed conv, activation, "
                         "smoothing, activation)")
    t0 = cfg.dec_map_shape[0]
    model.eval()
    with torch.no_grad():
        h = model.decoder_map(zt, yt)
        first_map = "dense map" if cfg.latent_layout == "vector" else "sequence map"
        maps = [(first_map, h)]
        for i in range(0, len(blocks), 4):
            for layer in blocks[i:i + 4]:
                h = layer(h)
            maps.append((f"block {i // 4 + 1}", h))
        perm = torch.randperm(t0, generator=torch.Generator().manual_seed(int(seed)))
        shuffled = model.decoder_conv(maps[0][1][:, :, perm])
    t_out = maps[-1][1].shape[2]

    def peak(stage: str, m: torch.Tensor) -> tuple[dict[str, Any], np.ndarray] | None:
        step = t_out // m.shape[2]
        acf = _time_autocorr(m.cpu().numpy())
        first = max(1, math.ceil(fs / hi_hz / step - 1e-9))
        last = min(m.shape[2] - 1, math.floor(fs / lo_hz / step + 1e-9))
        if last < first or not np.isfinite(acf[first:last + 1]).any():
            return None  # the map is too short to hold these lags, or constant in time
        k = first + int(np.nanargmax(acf[first:last + 1]))
        return {"stage": stage, "samples_per_step": int(step), "lag_samples": int(k * step),
                "lag_s": float(k * step / fs), "acf": float(acf[k])}, acf

    found = [p for stage, m in maps if (p := peak(stage, m)) is not None]
    after = peak(f"output, {first_map} shuffled in time", shuffled)
    if not found or found[-1][0]["stage"] != maps[-1][0] or after is None:
        raise ValueError("model: the decoder's output is constant in time or too short for the "
                         "rhythm-blind lags")
    out_row = found[-1][0]
    row, acf = after
    at_lag = float(acf[out_row["lag_samples"]])
    first = next(r for r, _ in found
                 if abs(r["lag_samples"] - out_row["lag_samples"]) < r["samples_per_step"])
    return {"stages": [r for r, _ in found],
            "shuffled": {**row, "acf_at_output_lag": at_lag},
            "first_stage": first["stage"],
            "laid_out_by_dense_layer": bool(at_lag < 0.5 * out_row["acf"])}


def periodicity_report(model: ConvVAE, norm: Normalizer, generated: ArrayLike, real: ArrayLike,
                       label: int | None, fs: float, min_cycles: float = 1.5,
                       max_windows: int = 50) -> dict[str, Any]:
    """Where generated AF's rhythm-blind DF comes from, beside real AF windows.

    * ``df_hz``: the median (over windows of the median over sites) rhythm-blind DF of the
      generated windows, of the same windows with their common template removed (each window
      centred per site, then the mean of the centred windows subtracted: what is left once the
      pattern that :func:`shared_variance` measures is gone), and of the real windows;
    * ``cycles_per_repeat``: per site :func:`egmlib.core.metrics.cycles_per_repeat`, its median
      and the share of sites at or above ``min_cycles`` (their signal repeats only every second
      or third AF-band cycle), for the generated and the real windows;
    * ``decoder``: :func:`decoder_periodicity` of the encoder means of the first
      ``max_windows`` real windows, decoded with ``label``.

    Measured on the default data set (notebook 03, record ``03_vae_c.json``): VAE-C's generated
    AF beats at a rhythm-blind DF of about 2 Hz against 6.7 Hz for real AF; removing their common
    template leaves it there; more than half of their sites repeat only every second or third
    AF-band cycle (a tenth of real AF's), and the 0.48 s period is laid out by the decoder's
    dense layer (shuffling its map in time removes it).
    """
    gen = np.asarray(_windows(generated, "generated"), np.float64)
    ref = np.asarray(_windows(real, "real"), np.float64)

    def df_median(blind: np.ndarray) -> float:
        return float(np.nanmedian(np.nanmedian(blind, axis=-1)))

    centred = gen - gen.mean(axis=1, keepdims=True)
    blind = {name: metrics.RHYTHM_BLIND_DF(x, fs) for name, x in (("generated", gen),
                                                                   ("real", ref))}
    cycles = {}
    for name, x in (("generated", gen), ("real", ref)):
        c = metrics.cycles_per_repeat(x, fs, blind[name])
        c = c[np.isfinite(c)]
        cycles[name] = {"median": float(np.median(c)),
                        "share_at_least": float(np.mean(c >= min_cycles))}
    m = check_int("max_windows", max_windows, 2)
    lab = None if label is None else np.full(min(m, len(ref)), int(label))
    z = encode_means(model, norm, ref[:m].astype(np.float32), lab)
    without = metrics.RHYTHM_BLIND_DF(centred - centred.mean(axis=0), fs)
    return {"df_hz": {"generated": df_median(blind["generated"]),
                      "generated_without_template": df_median(without),
                      "real": df_median(blind["real"])},
            "cycles_per_repeat": cycles, "min_cycles": float(min_cycles),
            "decoder": decoder_periodicity(model, z, lab, fs)}


def nearest_train_predictor(ds: Dataset, part: str, rhythm: str) -> dict[str, float]:
    """What memorising the training set scores: each window of ``part`` / ``rhythm`` predicted
    by its nearest **training** window of the same rhythm (smallest RMSE,
    :func:`egmlib.generators.generate.nearest_windows`), scored by
    :func:`egmlib.core.metrics.compare` (correlation, RMSE and LSD, mean and std over sites and
    windows), plus ``n`` and the mean nearest RMSE. For chaotic AF this is the reference a
    generator's morphology numbers should be read against."""
    if rhythm not in LABELS:
        raise ValueError(f"rhythm: got {rhythm!r}; allowed: {', '.join(LABELS)}")
    target = np.asarray(ds.egm[ds.part(part, rhythm)])
    train = np.asarray(ds.egm[ds.part("train", rhythm)])
    if len(target) == 0 or len(train) == 0:
        raise ValueError(f"ds: no {rhythm} windows in the {part!r} or train split")
    idx, rmse = nearest_windows(target, train)
    out: dict[str, float] = dict(metrics.compare(target, train[idx]))
    out["nearest_rmse_mean"] = float(np.mean(rmse))
    out["n"] = len(target)
    return out
