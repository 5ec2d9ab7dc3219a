"""egmlib.core.training.fit, the one training loop, on hand-made losses whose every number is
known: early stopping, best-state restore, checkpoints, divergence, clipping, weighted totals,
sample-weighted means and the learning-rate record."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from egmlib.core.training import (
    FitResult,
    TrainingDivergedError,
    fit,
    loss_total,
    stopping_point,
)


def w_of(model: nn.Module) -> float:
    return float(model.w.detach())


class Scalar(nn.Module):
    """One weight ``w`` (starting at ``w0``)."""

    def __init__(self, w0: float = 1.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0))


def run(val_seq, *, patience=2, epochs=20, lr=0.1, clip_norm=None, nan_at=None,
        checkpoints=None, scheduler=None, total="total", w0=1.0, model=None, min_epochs=0):
    """SGD on ``loss = w^2`` (two batches of weight 1 per epoch); the validation value of epoch
    ``e`` is ``val_seq[e]`` (hand-made). Returns the model, the result and the weight seen by
    each epoch's validation. ``checkpoints``: a list that receives ``(best_epoch, epochs_run,
    finished, w)`` at every checkpoint call."""
    model = Scalar(w0) if model is None else model
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    seen: list[float] = []

    def checkpoint(res: FitResult) -> None:
        checkpoints.append((res.best_epoch, res.epochs_run, res.finished, w_of(model)))

    def step(batch, epoch):
        if nan_at is not None and (epoch, batch) == nan_at:
            return {"total": model.w * math.nan, "sq": model.w ** 2}
        return {"total": model.w ** 2, "sq": model.w ** 2, "lin": model.w}

    def val(batch, epoch):
        seen.append(w_of(model))
        return {"total": torch.tensor(val_seq[epoch]), "sq": model.w.detach() ** 2,
                "lin": model.w.detach()}

    sched = scheduler(opt) if scheduler else None
    result = fit(model, step, lambda e: [(0, 1), (1, 1)], lambda e: [(0, 1)], opt, sched,
                 epochs=epochs, patience=patience, min_epochs=min_epochs, clip_norm=clip_norm,
                 val_loss=val,
                 checkpoint=checkpoint if checkpoints is not None else None,
                 record=("total", "sq"), total=total)
    return model, result, seen


def test_stops_at_the_epoch_patience_implies_and_restores_the_best_weights():
    # best at epoch 3 (1.0); the tie at epoch 2 (2.0 == 2.0) is no improvement; epochs 4, 5
    # are not lower -> stop after epoch 5 with patience 2
    seq = [3.0, 2.0, 2.0, 1.0, 1.0, 1.5, 0.5, 0.1]
    model, result, seen = run(seq, patience=2)
    assert result.epochs_run == 6 and result.stopped_early
    assert result.best_epoch == 3 and result.best_val == 1.0
    assert result.val["total"] == seq[:6]
    # two SGD steps of w^2 per epoch: w *= (1 - 2 lr)^2 = 0.64
    assert seen == pytest.approx([0.64 ** (e + 1) for e in range(6)], rel=1e-6)
    assert w_of(model) == seen[3]          # the best epoch's weights, exactly
    assert not model.training
    # patience 3: epoch 6 improves (0.5), then 0.1 at epoch 7 improves again; epochs cap at 8
    _, result, _ = run(seq, patience=3, epochs=8)
    assert result.epochs_run == 8 and not result.stopped_early and result.best_epoch == 7


def test_no_early_stop_before_min_epochs():
    # a plateau from epoch 1 to 5, then learning: patience 2 alone stops after epoch 3; with
    # min_epochs 7 the loop runs on, finds the later best (epoch 6) and stops two epochs on
    seq = [3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 1.0, 1.2, 1.3, 1.4, 0.1]
    _, alone, _ = run(seq, patience=2)
    assert alone.epochs_run == 4 and alone.best_epoch == 1 and alone.stopped_early
    model, result, seen = run(seq, patience=2, min_epochs=7)
    assert result.epochs_run == 9 and result.best_epoch == 6 and result.stopped_early
    assert w_of(model) == seen[6]
    # min_epochs at or above epochs: never stops early
    _, result, _ = run(seq, patience=1, min_epochs=20, epochs=len(seq))
    assert result.epochs_run == len(seq) and not result.stopped_early and result.best_epoch == 10
    with pytest.raises(ValueError, match="min_epochs"):
        run(seq, min_epochs=-1)


def test_stopping_point_replays_fit_on_a_recorded_curve():
    """The replay of a rule on a whole curve stops where fit stops on the same values."""
    rng = np.random.default_rng(0)
    seqs = [[3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 1.0, 1.2, 1.3, 1.4, 0.1],
            *[list(np.round(rng.uniform(0, 1, 12), 1)) for _ in range(6)]]
    for seq in seqs:
        for patience, min_epochs in ((1, 0), (2, 0), (2, 7), (3, 4), (20, 0)):
            _, result, _ = run(seq, patience=patience, min_epochs=min_epochs, epochs=len(seq))
            assert stopping_point(seq, patience, min_epochs) == (result.epochs_run,
                                                                  result.best_epoch)
    assert stopping_point([3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 1.0], 2) == (4, 1)  # by hand
    with pytest.raises(ValueError, match="values"):
        stopping_point([], 2)


def test_train_means_are_sample_weighted_and_taken_before_each_step():
    model = Scalar(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.25)
    # batch weights 1 and 3; step 1 at w = 1 (loss 1), step 2 at w = 0.5 (loss 0.25)
    result = fit(model, lambda b, e: {"total": model.w ** 2},
                 lambda e: [("a", 1), ("b", 3)], lambda e: [("v", 2), ("w", 2)], opt,
                 epochs=1, patience=1, clip_norm=None)
    assert result.train["total"] == [pytest.approx((1.0 * 1 + 0.25 * 3) / 4)]
    assert result.n_train == 4
    assert result.val["total"] == [pytest.approx(0.25 ** 2)]   # w = 0.25 after two steps


def test_checkpoint_at_every_improvement_and_once_at_the_end():
    calls: list[tuple] = []
    _, _, seen = run([3.0, 2.0, 2.5, 1.0, 4.0, 4.0], patience=2, checkpoints=calls)
    assert [c[:3] for c in calls] == [(0, 1, False), (1, 2, False), (3, 4, False),
                                      (3, 6, True)]
    assert [c[3] for c in calls] == [seen[0], seen[1], seen[3], seen[3]]


def test_nan_training_loss_restores_the_best_weights_and_raises():
    model, calls = Scalar(1.0), []
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss \(nan\) at epoch 2, "
                                                    r"batch 1 \(non-finite parts: total\)") as ei:
        run([3.0, 2.0, 1.0, 0.5], nan_at=(2, 1), epochs=4, model=model, checkpoints=calls)
    res = ei.value.result
    assert isinstance(ei.value, RuntimeError)
    assert res.epochs_run == 2 and res.best_epoch == 1 and not res.finished
    assert res.val["total"] == [3.0, 2.0]
    # reset to epoch 1's weights (four steps of w *= 0.8), no step taken on the NaN, and no
    # checkpoint after the last improvement
    assert w_of(model) == pytest.approx(0.8 ** 4, rel=1e-6)
    assert [c[:3] for c in calls] == [(0, 1, False), (1, 2, False)]


def test_nan_validation_value_raises_with_that_epoch_recorded():
    with pytest.raises(TrainingDivergedError, match="non-finite validation loss") as ei:
        run([2.0, 1.0, math.nan, 0.5])
    assert ei.value.result.epochs_run == 3 and ei.value.result.best_epoch == 1


def test_clipping_weighted_total_and_the_learning_rate_record():
    # loss = 2 * w^2 + 0.5 * w at w = 1: gradient 4.5; one SGD step of lr 0.1
    def one_step(clip):
        model = Scalar(1.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        fit(model, lambda b, e: {"sq": model.w ** 2, "lin": model.w},
            lambda e: [(0, 1)], lambda e: [(0, 1)], opt, epochs=1, patience=1,
            clip_norm=clip, total={"sq": 2.0, "lin": 0.5}, monitor="sq")
        return w_of(model)

    assert one_step(None) == pytest.approx(1.0 - 0.45)
    assert one_step(1.0) == pytest.approx(1.0 - 0.1)      # the gradient norm clipped to 1
    parts = {"a": torch.tensor(3.0), "b": torch.tensor(2.0)}
    assert float(loss_total(parts, {"a": 1.0, "b": -0.5})) == 2.0
    assert loss_total(parts, "b") is parts["b"]
    with pytest.raises(KeyError, match="total"):
        loss_total(parts, "total")
    # the learning rate is recorded before the scheduler's step
    _, result, _ = run([3.0, 2.0, 1.0], epochs=3,
                       scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.5))
    assert result.lr == [0.1, 0.05, 0.025]


def test_monitor_function_and_bad_arguments():
    model = Scalar(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = fit(model, lambda b, e: {"total": model.w ** 2},
                 lambda e: [(0, 1)], lambda e: [(0, 1)], opt, epochs=3, patience=1,
                 monitor=lambda v, e: -float(e))
    assert result.val["monitor"] == [0.0, -1.0, -2.0] and result.best_epoch == 2
    with pytest.raises(ValueError, match="epochs"):
        fit(model, lambda b, e: {"total": model.w}, lambda e: [(0, 1)], lambda e: [(0, 1)],
            opt, epochs=0, patience=1)
    with pytest.raises(ValueError, match="no samples"):
        fit(model, lambda b, e: {"total": model.w}, lambda e: [], lambda e: [(0, 1)],
            opt, epochs=1, patience=1)
