"""Training the generators on the data set and storing their synthetic EGM sets.

The glue between :mod:`egmlib.data` and :mod:`egmlib.generators.models` /
:mod:`egmlib.generators.train` /
:mod:`egmlib.generators.generate` that notebooks 02_vae_s and 03_vae_c call, and that 04 and 05
read back.

Artifacts, per generator ``kind`` (``vae_s`` or ``vae_c``) under ``<run_dir>/<kind>/``:

``checkpoint.pt``           weights, configuration, normaliser, history, provenance
``synthetic_<RHYTHM>.npz``  ``kept`` (M, T, C) float32 mV, the M best of N generated windows by
                            their smallest RMSE to any training window of that rhythm (the
                            paper's filter: 200 generated, 25 kept), ``scores`` of the kept,
                            ``all_scores`` (N,), ``idx`` (indices of the kept among the N),
                            ``generated`` (N, T, C)
``result.json``             the notebook's numbers, read back by the tests

VAE-S is trained on SR windows only; VAE-C on SR and AF with the rhythm label. Training windows
come from the data set's train split; early stopping watches the validation split (other
simulations), never the training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from egmlib.core import metrics
from egmlib.core.checks import check_int
from egmlib.core.process import seeded_torch
from egmlib.core.runs import MissingInputError, atomic_path, provenance, require
from egmlib.data import LABELS, Dataset
from egmlib.generators.generate import encode_means, generate, select_best
from egmlib.generators.models import ConvVAE, LossWeights, VAEConfig
from egmlib.generators.train import Normalizer, Recordings, load_checkpoint, train_vae

__all__ = [
    "GENERATORS",
    "draw",
    "example_windows",
    "filtered",
    "generator_dir",
    "kept_for_augmentation",
    "load_generator",
    "load_synthetic",
    "reconstruct",
    "reconstruction_metrics",
    "save_synthetic",
    "synthesize",
    "train_generator",
    "training_recordings",
    "training_windows",
]

#: generator kind -> (notebook that makes it, rhythms it generates)
GENERATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vae_s": ("02_vae_s", ("SR",)),
    "vae_c": ("03_vae_c", ("SR", "AF")),
}


def _kind(kind: str) -> None:
    if kind not in GENERATORS:
        raise ValueError(f"generator: got {kind!r}; allowed: {', '.join(GENERATORS)}")


def generator_dir(run_dir: str | Path, kind: str) -> Path:
    """``<run_dir>/<kind>``, created."""
    _kind(kind)
    path = Path(run_dir) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_windows(ds: Dataset, kind: str, part: str = "train",
                     columns: NDArray[np.int64] | None = None
                     ) -> tuple[NDArray[np.float32], NDArray[np.int64] | None]:
    """Windows (and labels for VAE-C; ``None`` for VAE-S) of a split part for a generator;
    ``columns`` reorders the sites (:meth:`egmlib.data.Dataset.site_permutation`)."""
    mask = _part_mask(ds, kind, part)
    x = np.asarray(ds.egm[mask])
    y = None if kind == "vae_s" else np.asarray(ds.label[mask], np.int64)
    return (x if columns is None else x[..., columns]), y


def _part_mask(ds: Dataset, kind: str, part: str) -> NDArray[np.bool_]:
    """The windows of a split part that a generator trains or is scored on (VAE-S: SR only)."""
    _kind(kind)
    return ds.part(part, "SR") if kind == "vae_s" else ds.part(part)


def training_recordings(ds: Dataset, kind: str, columns: NDArray[np.int64] | None = None
                        ) -> Recordings:
    """The training simulations' recordings rebuilt from their windows
    (:class:`egmlib.generators.train.Recordings`), in the order of :func:`training_windows`."""
    mask = _part_mask(ds, kind, "train")
    x, _ = training_windows(ds, kind, "train", columns)
    start = np.rint(np.asarray(ds.start_s, np.float64)[mask] * float(ds.manifest["fs"]))
    return Recordings.from_windows(x, np.asarray(ds.sim_id)[mask], start.astype(np.int64))


def train_generator(ds: Dataset, kind: str, p: Mapping[str, Any], run_dir: str | Path | None,
                    show_progress: bool = True, *, columns: NDArray[np.int64] | None = None,
                    init: str = "he", class_scales: bool = True, recut: bool = False
                    ) -> tuple[ConvVAE, Normalizer, dict[str, Any]]:
    """Build and train VAE-S or VAE-C with parameters ``p`` (notebook 02/03); the best model is
    checkpointed to ``<run_dir>/<kind>/checkpoint.pt`` (``run_dir=None``: not saved). Returns
    (model, normaliser, history).

    The keywords exist for the choice study (:mod:`egmlib.workflow.studies`): ``columns``
    trains on the sites in another order, ``init="torch"`` uses torch's default initialisation
    (:class:`egmlib.generators.models.VAEConfig`), ``class_scales=False`` scales VAE-C's
    rhythms by one number (:class:`egmlib.generators.train.Normalizer`), ``recut=True`` cuts
    the training windows afresh every epoch at random offsets from each simulation's recording
    (:func:`training_recordings`; the AF rate study of :mod:`egmlib.workflow.studies`). The
    model's layout comes from ``p`` (``latent``, ``latent_layout``, ``upsample``;
    :class:`egmlib.generators.models.VAEConfig`)."""
    x_tr, y_tr = training_windows(ds, kind, "train", columns)
    x_va, y_va = training_windows(ds, kind, "val", columns)
    if len(x_tr) == 0 or len(x_va) == 0:
        raise ValueError(f"the data set has no {'SR ' if kind == 'vae_s' else ''}windows in its "
                         "train or validation split; rebuild it with more simulations")
    n_classes = 0 if kind == "vae_s" else len(LABELS)
    with seeded_torch(p["seed"], p["device"]):  # the initial weights; no process state changed
        model = ConvVAE(VAEConfig(T=x_tr.shape[1], C=x_tr.shape[2], latent=p["latent"],
                                  n_classes=n_classes, init=init,
                                  upsample=p["upsample"], latent_layout=p["latent_layout"]))
    norm = Normalizer().fit(x_tr, y_tr if class_scales else None)  # VAE-C: a scale per rhythm
    ckpt = None if run_dir is None else generator_dir(run_dir, kind) / "checkpoint.pt"
    history = train_vae(model, x_tr, y_tr, x_va, y_va, epochs=p["epochs"],
                        batch_size=p["batch_size"], lr=p["lr"], lr_decay=p["lr_decay"],
                        beta_max=p["beta_max"],
                        warmup_epochs=p["warmup_epochs"], patience=p["patience"],
                        device=p["device"], precision=p["precision"],
                        seed=p["seed"], checkpoint_path=ckpt,
                        progress=show_progress, normalizer=norm,
                        weights=LossWeights(spec_avg=p.get("spec_avg", 0.0)),
                        recut=training_recordings(ds, kind, columns) if recut else None,
                        extra={"params": dict(p), "seed": p["seed"], "kind": kind})
    return model, norm, history


def load_generator(run_dir: str | Path, kind: str, device: str = "cpu"
                   ) -> tuple[ConvVAE, Normalizer, dict[str, Any]]:
    """The trained generator of ``kind``; a clear error names the notebook that trains it."""
    _kind(kind)
    path = require(Path(run_dir) / kind / "checkpoint.pt", GENERATORS[kind][0])
    model, norm, meta = load_checkpoint(path, device=device)
    return model, norm, meta


def example_windows(ds: Dataset, rhythm: str, n: int = 3, part: str = "test"
                    ) -> NDArray[np.int64]:
    """Indices of ``n`` windows of ``rhythm`` in ``part`` for figures: the first window of each of
    the first ``n`` simulations (in data set order), so that the examples are different
    realisations rather than overlapping windows of one simulation. Fewer when the part has
    fewer simulations of that rhythm."""
    check_int("n", n, 1)
    idx = np.flatnonzero(ds.part(part, rhythm))
    if len(idx) == 0:
        raise ValueError(f"rhythm: no {rhythm!r} windows in part {part!r}")
    sims = np.asarray(ds.sim_id)[idx]
    _, first = np.unique(sims, return_index=True)
    return idx[np.sort(first)][:n].astype(np.int64)


def reconstruct(model: ConvVAE, norm: Normalizer, x: NDArray, y: NDArray | None = None
                ) -> NDArray[np.float32]:
    """Encode and decode windows (z = encoder mean), in data units."""
    import torch

    lab = None if y is None else np.asarray(y, np.int64)
    scale_by = lab if norm.class_scales is not None else None
    xt = torch.from_numpy(norm.transform(np.asarray(x, np.float32), scale_by))
    yt = None if lab is None else torch.as_tensor(lab)
    model.eval()
    with torch.no_grad():
        mu, _ = model.encode(xt, yt)
        out = model.decode(mu, yt)
    return norm.inverse(out.cpu().numpy(), scale_by).astype(np.float32)


def draw(model: ConvVAE, norm: Normalizer, ds: Dataset, kind: str, rhythm: str, n: int,
         seed: int, mode: str = "prior", columns: NDArray[np.int64] | None = None
         ) -> NDArray[np.float32]:
    """``n`` windows of ``rhythm`` drawn in ``mode``
    (:func:`egmlib.generators.generate.generate`; ``"guided"`` fits its Gaussian to the encoder
    means of this generator's training windows, sites in ``columns`` order)."""
    label = None if kind == "vae_s" else LABELS.index(rhythm)
    kw: dict[str, Any] = {}
    if mode == "guided":
        x_tr, y_tr = training_windows(ds, kind, "train", columns)
        kw = {"train_latents": encode_means(model, norm, x_tr, y_tr), "train_labels": y_tr}
    return generate(model, norm, n, label=label, seed=seed, mode=mode, **kw)


def synthesize(model: ConvVAE, norm: Normalizer, ds: Dataset, kind: str, rhythm: str,
               n_generate: int, n_keep: int, seed: int, mode: str = "prior"
               ) -> dict[str, NDArray]:
    """Generate ``n_generate`` windows of ``rhythm`` and keep the ``n_keep`` nearest to the
    training windows of that rhythm (smallest RMSE to any of them)."""
    _kind(kind)
    if rhythm not in GENERATORS[kind][1]:
        raise ValueError(f"rhythm: {kind} generates {GENERATORS[kind][1]}; got {rhythm!r}")
    if not 1 <= n_keep <= n_generate:
        raise ValueError(f"n_keep: got {n_keep}; allowed: 1 <= n_keep <= n_generate = "
                         f"{n_generate}")
    ref = np.asarray(ds.egm[ds.part("train", rhythm)])
    gen = draw(model, norm, ds, kind, rhythm, n_generate, seed, mode)
    kept, all_scores, idx = select_best(gen, ref, n_keep)
    return {"kept": kept.astype(np.float32), "scores": all_scores[idx], "all_scores": all_scores,
            "idx": idx, "generated": gen}


def save_synthetic(run_dir: str | Path, kind: str, rhythm: str, synth: Mapping[str, NDArray],
                   params: Mapping[str, Any]) -> Path:
    """Write ``synthetic_<rhythm>.npz`` atomically (with the parameters as JSON text)."""
    import json

    path = generator_dir(run_dir, kind) / f"synthetic_{rhythm}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **synth,
                 provenance=np.array(json.dumps(provenance(params), default=str)))
    return path


def load_synthetic(run_dir: str | Path, kind: str, rhythm: str = "SR") -> dict[str, NDArray]:
    """The kept synthetic set of a generator (``kept``, ``scores``, ``all_scores``, ...)."""
    _kind(kind)
    path = Path(run_dir) / kind / f"synthetic_{rhythm}.npz"
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run notebooks/{GENERATORS[kind][0]}.ipynb "
                                "for this profile first")
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "provenance"}


def reconstruction_metrics(model: ConvVAE, norm: Normalizer, ds: Dataset, kind: str,
                           part: str = "test", columns: NDArray[np.int64] | None = None
                           ) -> dict[str, dict[str, float]]:
    """Correlation, RMSE and LSD (mean and std over sites and windows) of the reconstructions of
    ``part``'s windows, per rhythm the generator knows (``columns``: sites reordered as in
    training)."""
    out = {}
    for rhythm in GENERATORS[kind][1]:
        x = np.asarray(ds.egm[ds.part(part, rhythm)])
        x = x if columns is None else x[..., columns]
        y = None if kind == "vae_s" else np.full(len(x), LABELS.index(rhythm))
        out[rhythm] = metrics.compare(x, reconstruct(model, norm, x, y))
    return out


def filtered(synth: Mapping[str, NDArray], pool: int = 0) -> NDArray[np.float32]:
    """The windows of one saved synthetic set (:func:`synthesize`) that the filter keeps, best
    first, when it may choose only among the first ``pool`` generated windows.

    ``pool = 0``: the saved ``kept`` windows (the best ``n_keep`` of all ``n_generate``; paper:
    25 of 200). ``0 < pool``: the first ``pool`` generated windows (independent draws, so a
    random sample of the generator's output) sorted by their stored score (smallest RMSE to a
    training window, ties keep generation order), at most ``n_keep`` of them. Drawing k of them
    with ``pool = k`` is therefore no filter at all, and ``pool = n_generate`` is the paper's
    filter: the ablation of the filter is one integer.
    """
    check_int("pool", pool, 0)
    if pool == 0:
        return np.asarray(synth["kept"], np.float32)
    n_generated, n_keep = len(synth["generated"]), len(synth["kept"])
    if pool > n_generated:
        raise ValueError(f"filter_pool: got {pool}; allowed: 0 (the saved filter) or "
                         f"1..{n_generated}, the windows generated")
    order = np.argsort(np.asarray(synth["all_scores"])[:pool], kind="stable")[:n_keep]
    return np.asarray(synth["generated"], np.float32)[order]


def kept_for_augmentation(run_dir: str | Path, generator: str, pool: int = 0
                          ) -> NDArray[np.float32] | None:
    """The kept synthetic windows that notebook 05 draws its k from, best first.

    ``"none"``: ``None``. VAE-S: its kept SR windows. VAE-C: its kept SR and AF windows
    alternately (SR first), so any k mixes the rhythms about evenly, as the real data do.
    ``pool``: each rhythm's filter chooses among its first ``pool`` generated windows only
    (:func:`filtered`; 0: the saved kept windows).
    """
    if generator == "none":
        return None
    _kind(generator)
    sets = [filtered(load_synthetic(run_dir, generator, r), pool)
            for r in GENERATORS[generator][1]]
    n = min(len(s) for s in sets)
    inter = np.stack([s[:n] for s in sets], axis=1).reshape(-1, *sets[0].shape[1:])
    return np.concatenate([inter] + [s[n:] for s in sets]).astype(np.float32)
