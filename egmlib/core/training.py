"""One training loop for every network of the project: :func:`fit`.

:func:`egmlib.generators.train.train_vae` (VAE-S, VAE-C) and
:func:`egmlib.augmentation.recon.train_recon` (the reconstruction network) are thin users: they
check their data, build the batches and the loss of one step, and turn :class:`FitResult` into
their history. Everything else exists once, here:

* **the step**: the loss of a batch comes as named parts (a dict of tensors); the optimised value
  is one of them (``total="total"``) or their weighted sum (``total={"mse": 1.0, "kl": 0.1}``);
  ``zero_grad``, ``backward``, gradient-norm clipping to ``clip_norm``, ``optimizer.step()``;
* **the history**: per epoch, the sample-weighted mean of every recorded part over the training
  batches (train mode) and over the validation batches (eval mode, no gradients), the learning
  rate before the scheduler's step, the wall time;
* **early stopping** on a validation value (a part, or a function of the validation means):
  training stops after ``patience`` epochs without a strictly lower value, and not before
  ``min_epochs``;
* **the best state**: the weights of the best epoch are kept (a deep copy of the ``state_dict``)
  and restored at the end, on divergence too;
* **checkpointing the best**: ``checkpoint(result)`` is called at every improvement (the model
  then holds the new best weights) and once more at the end, after the best weights are restored
  (``result.finished`` is then true);
* **divergence**: a NaN or infinite training loss, or validation value, restores the best weights
  and raises :class:`TrainingDivergedError` (which names the epoch, the batch and the non-finite
  parts, and carries the partial :class:`FitResult`), before any optimiser step on that loss and
  before any checkpoint of it.

The loop draws no random numbers and changes no process-wide state: seeding (and threads,
determinism) is the caller's business (:func:`egmlib.core.process.torch_state`). Torch only.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from egmlib.core import runs
from egmlib.core.checks import check_ints

__all__ = ["FitResult", "Parts", "TrainingDivergedError", "evaluate", "fit", "loss_total",
           "stopping_point"]

B = TypeVar("B")
#: A loss by named parts: scalar tensors (those recorded must convert with ``float``).
Parts = Mapping[str, torch.Tensor]


@dataclass
class FitResult:
    """What :func:`fit` measured. Per-epoch lists have ``epochs_run`` entries.

    ``train[k]`` / ``val[k]``: sample-weighted means of part ``k`` over the epoch's training
    batches (train mode, before each step) and over the validation batches (eval mode, after the
    epoch); ``val`` also holds ``"monitor"`` when the monitored value is a function. ``lr``: the
    first parameter group's learning rate during the epoch; ``epoch_s``: wall seconds of each
    epoch (training and validation); ``train_s``: seconds in training batches only, all epochs;
    ``n_train``: training samples per epoch (the sum of the batch weights). ``best_epoch``
    (0-based) and ``best_val``: the epoch with the lowest monitored value (``None`` before one
    is finite); ``finished``: the loop has ended and the best weights are back in the model.
    """

    train: dict[str, list[float]] = field(default_factory=dict)
    val: dict[str, list[float]] = field(default_factory=dict)
    lr: list[float] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)
    train_s: float = 0.0
    n_train: int = 0
    best_epoch: int | None = None
    best_val: float | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    finished: bool = False

    @property
    def samples_per_s(self) -> float | None:
        """Training samples per second of training-batch time (``None`` before any)."""
        return self.n_train * self.epochs_run / self.train_s if self.train_s else None


class TrainingDivergedError(RuntimeError):
    """A training loss or the validation value became NaN or infinite.

    ``result``: the :class:`FitResult` up to the failure (for a training loss, the epochs before
    it; for a validation value, that epoch included); ``history``: a caller's history built from
    it (``None`` unless a caller sets it). The model holds the best weights seen so far, and no
    checkpoint was written for the failing step."""

    def __init__(self, message: str, history: dict[str, Any] | None = None,
                 result: FitResult | None = None) -> None:
        super().__init__(message)
        self.history = history
        self.result = result


def loss_total(parts: Parts, total: str | Mapping[str, float]) -> torch.Tensor:
    """The optimised value of a step: ``parts[total]`` for a name, ``sum(w * parts[k])`` (in the
    mapping's order) for a mapping of weights."""
    if isinstance(total, str):
        if total not in parts:
            raise KeyError(f"total: the step's parts have no {total!r}; got {', '.join(parts)}")
        return parts[total]
    if not total:
        raise ValueError("total: an empty mapping of weights")
    out: torch.Tensor | None = None
    for k, w in total.items():
        term = w * parts[k]
        out = term if out is None else out + term
    assert out is not None
    return out


def _weighted_means(batches: Iterable[tuple[B, int]], loss: Callable[[B], Parts],
                    keys: Sequence[str] | None, on_parts: Callable[[int, Parts], None] | None
                    = None) -> tuple[dict[str, float], int]:
    """Sample-weighted means of ``keys`` (``None``: every part of the first batch) of
    ``loss(batch)`` over ``(batch, weight)`` pairs, accumulated as Python floats in batch
    order; ``on_parts(i, parts)`` runs before a batch's parts are added. Returns the means and
    the total weight."""
    sums: dict[str, float] = {}
    n = 0
    for i, (batch, weight) in enumerate(batches):
        parts = loss(batch)
        if on_parts is not None:
            on_parts(i, parts)
        for k in parts if keys is None else keys:
            sums[k] = sums.get(k, 0.0) + float(parts[k].detach()) * weight
        if keys is None:
            keys = tuple(parts)
        n += weight
    if n <= 0:
        raise ValueError("batches: no samples (an epoch needs at least one batch of weight >= 1)")
    return {k: v / n for k, v in sums.items()}, n


def stopping_point(values: Sequence[float], patience: int, min_epochs: int = 0
                   ) -> tuple[int, int]:
    """Replay :func:`fit`'s early stopping on a recorded sequence of monitored values (one per
    epoch, e.g. a run trained without early stopping): ``(epochs_run, best_epoch)``, the number
    of epochs the rule would have run and the 0-based epoch whose weights it would restore (the
    first strict minimum so far). Lets a study compare stopping rules on one training curve."""
    check_ints(("patience", patience, 1), ("min_epochs", min_epochs, 0))
    if len(values) == 0:
        raise ValueError("values: need at least one epoch")
    best, best_epoch, since = math.inf, 0, 0
    for epoch, v in enumerate(values):
        if v < best:
            best, best_epoch, since = v, epoch, 0
        else:
            since += 1
        if since >= patience and epoch + 1 >= min_epochs:
            return epoch + 1, best_epoch
    return len(values), best_epoch


def evaluate(model: torch.nn.Module, batches: Iterable[tuple[B, int]],
             loss: Callable[[B], Parts], keys: Sequence[str] | None = None) -> dict[str, float]:
    """Sample-weighted means of the parts ``keys`` (``None``: all) of ``loss(batch)`` over
    ``(batch, weight)`` pairs, with the model in eval mode and without gradients (the model is
    left in eval mode): the validation of :func:`fit`."""
    model.eval()
    with torch.no_grad():
        return _weighted_means(batches, loss, keys)[0]


def fit(model: torch.nn.Module, step_loss: Callable[[B, int], Parts],
        train_batches: Callable[[int], Iterable[tuple[B, int]]],
        val_batches: Callable[[int], Iterable[tuple[Any, int]]],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
        epochs: int, patience: int, min_epochs: int = 0, clip_norm: float | None = 1.0,
        total: str | Mapping[str, float] = "total",
        val_loss: Callable[[Any, int], Parts] | None = None,
        monitor: str | Callable[[Mapping[str, float], int], float] = "total",
        record: Sequence[str] | None = None,
        checkpoint: Callable[[FitResult], None] | None = None,
        progress: str | None = None, show: Mapping[str, str] | None = None,
        hint: str = "") -> FitResult:
    """Train ``model`` in place, with early stopping on a validation value; return the history.

    Per epoch ``e`` (0-based): ``model.train()``; for each ``(batch, weight)`` of
    ``train_batches(e)`` (``weight``: the samples in the batch, for the means), the parts
    ``step_loss(batch, e)``, the optimised value :func:`loss_total` ``(parts, total)``
    (non-finite: see below), ``optimizer.zero_grad(set_to_none=True)``, ``backward``, the
    gradient norm clipped to ``clip_norm`` (``None``: no clipping), ``optimizer.step()``; then
    ``model.eval()`` and, without gradients, the parts ``val_loss(batch, e)`` (default:
    ``step_loss``) over ``val_batches(e)``; the learning rate is recorded and
    ``scheduler.step()`` runs (when given).

    Early stopping: the monitored value is ``val[monitor]`` for a name, or
    ``monitor(val_means, e)`` for a function (then recorded as ``val["monitor"]``). A strictly
    lower value than every earlier one makes the epoch the best: its weights are copied and
    ``checkpoint(result)`` is called. After ``patience`` epochs in a row without one, training
    stops (``stopped_early``), but never before ``min_epochs`` epochs have run: a network that
    sits on a plateau before it starts to learn is not stopped there. At the end the best
    weights are restored, the model is left in eval mode and ``checkpoint(result)`` is called
    once more with ``result.finished`` true.

    Divergence: a non-finite optimised value (checked before the step) or a non-finite
    monitored value restores the best weights (the initial ones before any best epoch) and
    raises :class:`TrainingDivergedError`; its message names the epoch, the batch and the
    non-finite parts, then ``hint``.

    ``record``: the parts kept in the history (``None``: all parts of the first batch).
    ``progress``: the description of a progress bar (``None``: none); ``show``: more values on
    it, label -> validation key.
    """
    check_ints(("epochs", epochs, 1), ("patience", patience, 1), ("min_epochs", min_epochs, 0))
    val_loss = step_loss if val_loss is None else val_loss
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    best_val = math.inf
    since_best = 0

    def diverged(message: str) -> TrainingDivergedError:
        model.load_state_dict(best_state)
        return TrainingDivergedError(
            f"training diverged: {message}; the model was reset to the best weights (epoch "
            f"{result.best_epoch}){hint}", result=result)

    bar: Iterable[int] = (runs.progress(range(epochs), desc=progress) if progress is not None
                          else range(epochs))
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()

        def step(i: int, parts: Parts, epoch: int = epoch) -> None:
            loss = loss_total(parts, total)
            if not torch.isfinite(loss):
                bad = [k for k, v in parts.items() if v.numel() == 1 and not torch.isfinite(v)]
                raise diverged(f"non-finite loss ({float(loss.detach())}) at epoch {epoch}, "
                               f"batch {i} (non-finite parts: {', '.join(bad) or 'total'})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            optimizer.step()

        train, n = _weighted_means(train_batches(epoch), lambda b, e=epoch: step_loss(b, e),
                                   record, step)
        result.train_s += time.perf_counter() - t0
        val = evaluate(model, val_batches(epoch), lambda b, e=epoch: val_loss(b, e),
                       record if record is not None else tuple(train))
        if callable(monitor):
            val["monitor"] = value = monitor(val, epoch)
        else:
            value = val[monitor]
        for part, means in (("train", train), ("val", val)):
            hist = getattr(result, part)
            for k, v in means.items():
                hist.setdefault(k, []).append(v)
        result.lr.append(optimizer.param_groups[0]["lr"])
        result.epoch_s.append(time.perf_counter() - t0)
        result.n_train = n
        result.epochs_run = epoch + 1
        if scheduler is not None:
            scheduler.step()

        if not math.isfinite(value):
            raise diverged(f"non-finite validation loss ({value}) at epoch {epoch}")
        if value < best_val:
            best_val = value
            best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_val = epoch, value
            since_best = 0
            if checkpoint is not None:
                checkpoint(result)
        else:
            since_best += 1
        if hasattr(bar, "set_postfix"):
            shown = train.get(total if isinstance(total, str) else "total", math.nan)
            bar.set_postfix(train=f"{shown:.3f}", val=f"{value:.3f}",
                            **{label: f"{val[k]:.2f}" for label, k in (show or {}).items()})
        if since_best >= patience and epoch + 1 >= min_epochs:
            result.stopped_early = True
            break

    model.load_state_dict(best_state)
    model.eval()
    result.finished = True
    if checkpoint is not None:
        checkpoint(result)
    return result
