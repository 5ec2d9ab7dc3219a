"""The generators' choice study: each training setting of VAE-S and VAE-C, chosen on the
validation split.

``python -m egmlib.workflow.studies --profile default`` trains VAE-S and VAE-C once per row of
:data:`CHOICES` on the profile's data set (notebook 01 must have built it), every row at the same
budget (:data:`STUDY_EPOCHS` epochs, the profile's other settings) and the same seed, and scores
each on the **validation** simulations only: reconstruction correlation, LSD and RMSE per rhythm
(z = encoder mean), the best epoch, the wall time; for VAE-C also the dominant frequency of
generated windows of each rhythm (from the prior) against the validation windows of that
rhythm and the collapse detector
(:func:`egmlib.evaluation.evaluator.collapse_report`) on validation AF windows. The test split is
never read. The record is ``results/<profile>/generator_choices.json`` (committed for the default
profile); the defaults of :class:`egmlib.core.params.GeneratorConfig` and of the data set's
``site_order`` cite it.

A row changes one thing against the defaults (``changes``): the site order (the data set's
columns permuted by :meth:`egmlib.data.Dataset.site_permutation`, so every order is measured on
the same simulations), a training setting, the initialisation, VAE-C's per-rhythm scaling, or
the spectral loss weight. The budget is short (about a minute a row on 2 cores) so the study
fits in a quarter of an hour; the full-budget training curve of the chosen settings is notebook
02's and 03's validation history.

The budget study (:func:`budget_study`, record ``results/<profile>/generator_budget.json``,
``--study budget``) asks whether VAE-S converges: each row of :data:`BUDGET_ROWS` trains VAE-S
at a full budget (tens of epochs, with the notebook's early stopping) and keeps the whole
validation curve (total loss per epoch), the epoch whose weights were kept and
:func:`plateau_gain`, the relative gain of the curve's last quarter over the best before it. A
row has converged when that gain is below :data:`PLATEAU_TOL` (a plateau). The rows and the
tolerance were fixed before the study ran; the test split is never read.

The precision study (``--study precision``, record ``results/<profile>/generator_precision.json``)
trains VAE-C at its notebook's budget once per row of :data:`PRECISION_ROWS`, float32 against
mixed bfloat16 precision, and scores each like a choice row (:func:`choice_row`).

The AF rate study (``--study af_rate``, record ``results/<profile>/generator_af_rate.json``)
trains VAE-C at its notebook's budget once per row of :data:`AF_RATE_ROWS`, on the data set's
windows and on windows cut afresh every epoch at random offsets from each training
simulation's recording, scores each like a choice row, adds the periodicity report of AF drawn
the notebook's way against validation AF (:func:`egmlib.evaluation.evaluator.periodicity_report`)
and reads the rows by :func:`choose_af_rate`, fixed before it ran. The AF decoder study
(``--study af_decoder``, record ``results/<profile>/generator_af_decoder.json``) does the same
for the rows of :data:`AF_DECODER_ROWS`: a decoder of resize-convolutions, on the data set's
windows and on re-cut ones, against 03 as it is; the AF latent study (``--study af_latent``,
record ``results/<profile>/generator_af_latent.json``) for those of :data:`AF_LATENT_ROWS`: a
latent code that is a sequence in time, with no layer tied to a time of the window.

The reconstruction network's choice study (:func:`recon_choice_study`, record
``results/<profile>/recon_choices.json``) does the same for the BSPM -> EGM network of notebook
05: each row of :data:`RECON_CHOICES` (loss weights, learning rate) trains the network on the
real pairs only (k = 0) for :data:`RECON_STUDY_EPOCHS` epochs **without** early stopping, for
each seed of :data:`RECON_STUDY_SEEDS`, and keeps the whole validation curve (correlation and
total loss per epoch). Every early-stopping rule of :data:`STOPPING_RULES` is then replayed on
each curve (:func:`egmlib.core.training.stopping_point`: the epochs it would run and the epoch
whose weights it would restore), so rules are compared on the same trainings. The choice, fixed
before the study ran: the row with the highest validation correlation at the restored epoch
under the longest rule (mean over seeds), then the rule with the fewest epochs whose restored
correlation is within 0.01 of that longest rule's, for that row, on every seed. The test split is
never read.

The linear-correction study (:func:`linear_study`, ``--study linear``, record
``results/<profile>/recon_linear.json``) asks how far the spatial prior of the training EGMs goes
without a network: :mod:`egmlib.augmentation.linear` fits one matrix that maps zero-order
Tikhonov's estimate to the EGMs (its weighting and ridge penalty chosen on the validation pairs)
on the real pairs of each ``k = 0`` run of the sweep's grid (every arm of ``sweep_n_real_sims``,
every seed of ``sweep_seeds``), and scores it on 05's test inputs, so each row pairs with the
sweep's run of the same arm and seed. No network is trained: the record's numbers depend on the
processor only through float rounding, like the data set's, and its provenance says so
(``kind_independent``, which :func:`egmlib.workflow.records.machine_differences` respects).

The unseen-window study (:func:`unseen_study`, ``--study unseen``, record
``results/<profile>/recon_linear_unseen.json``) bounds what augmentation can give that
correction: at the scarcest arm it adds ``k`` real windows of training simulations the arm does
not use (:func:`egmlib.augmentation.augment.unseen_indices`: what an ideal generator, one that
draws from the data's own distribution, would add), SR windows only as VAE-S adds, or SR and AF
alternately as VAE-C adds, each paired as 05 pairs a generator's windows (through the transfer
matrices) and, as a control, as the real pairs are made (their own BSPMs), for a small ``k`` and
the primary hypothesis's, and every seed of ``sweep_seeds``. It reports each gain over the
``k = 0`` fit of the same seed with the sweep's statistics
(:func:`egmlib.workflow.results.gain_row`: t interval over seeds, two-level bootstrap over seeds
and test simulations; Holm's correction over the rows). Also closed-form and
``kind_independent``.

The residual study (:func:`residual_study`, ``--study residual``, record
``results/<profile>/recon_residual.json``) asks the same of a network that starts from the
physics: :mod:`egmlib.augmentation.residual` trains a small convolutional network on top of the
linear correction (it starts exactly there, and the validation split may keep it there), at the
scarcest arm, for the first :data:`RESIDUAL_SEEDS` seeds, without augmentation and with the
largest ``range_k`` of unseen real windows added as VAE-S and VAE-C add theirs. Its learning
rate is chosen on the validation pairs; it reports the network against the linear correction of
the same fit and every gain over ``k = 0`` with the sweep's statistics. The network trains in
float32; one fit made again in float64 measures how far rounding moves it, and the record is
``kind_independent`` only when that is below :data:`RESIDUAL_ROUNDING_TOLERANCE`. Each fit is
also scored *routed* (each rhythm's best validation epoch, the rhythm estimated from the input;
:mod:`egmlib.augmentation.residual`). The same network with every training simulation, without
augmentation, is :func:`residual_full_study` (``--study residual_full``, record
``results/<profile>/recon_residual_full.json``, ``kind_independent`` below
:data:`RESIDUAL_FULL_ROUNDING_TOLERANCE`). The same network with the trained generators' own
windows is :func:`residual_vae_study` (``--study residual_vae``); its one exploratory hint is
tested again on new seeds by :func:`residual_confirm_study` (``--study residual_confirm``,
record ``results/<profile>/recon_residual_confirm.json``), whose hypothesis, number of seeds
and decision rule (:data:`CONFIRM_HYPOTHESIS`, :func:`confirmation_design`) come from the
exploratory record alone and were committed before any of its fits ran;
:func:`residual_ideal_study` (``--study residual_ideal``) then fits ideal windows on the
confirmation's seeds, reusing its fits, to describe where the confirmed gain comes from.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from egmlib.augmentation import linear, residual
from egmlib.augmentation.augment import EVAL_NOISE_SEED, build_training_set, unseen_indices
from egmlib.augmentation.baselines import cached_baselines
from egmlib.augmentation.recon import DualBranchVAE, ReconConfig, train_recon
from egmlib.core import metrics
from egmlib.core import params as _params
from egmlib.core.process import seeded_torch, setup_process
from egmlib.core.runs import (
    load_json,
    provenance,
    repo_root,
    resolve_run_dir,
    results_dir,
    save_record,
    shown,
)
from egmlib.core.training import stopping_point
from egmlib.data import LABELS, Dataset, load_dataset
from egmlib.generators import synthesis
from egmlib.generators.generate import encode_means, generate
from egmlib.workflow import results
from egmlib.workflow.records import input_fingerprint

__all__ = [
    "AF_DECODER_ROWS",
    "AF_LATENT_ROWS",
    "AF_RATE_MIN_GAIN_HZ",
    "AF_RATE_ROWS",
    "AF_RATE_TOLERANCE",
    "BUDGET_ROWS",
    "CHOICES",
    "CONFIRM_ALPHA",
    "CONFIRM_FRACTION",
    "CONFIRM_HYPOTHESIS",
    "CONFIRM_POWER",
    "GEN_MODES",
    "IDEAL_SOURCE",
    "MODE_STUDY_N",
    "PLATEAU_TOL",
    "PRECISION_ROWS",
    "RECON_CHOICES",
    "RECON_PRECISION_ROWS",
    "RECON_SPEED_ARMS",
    "RECON_SPEED_ROWS",
    "RECON_STUDY_EPOCHS",
    "RECON_STUDY_SEEDS",
    "RESIDUAL_FORMS",
    "SPEED_RULE",
    "STOPPING_RULES",
    "STUDY_EPOCHS",
    "UNSEEN_SOURCES",
    "VECTOR_VAE_C",
    "budget_row",
    "budget_study",
    "choice_row",
    "choice_study",
    "choose_af_rate",
    "choose_mode",
    "choose_recon",
    "choose_speed",
    "confirmation_design",
    "linear_study",
    "main",
    "mode_study",
    "plateau_gain",
    "recon_choice_study",
    "recon_row",
    "residual_confirm_study",
    "residual_ideal_study",
    "rule_cost",
    "unseen_study",
]

#: Epochs per row, per generator (equal budget inside a generator's rows).
STUDY_EPOCHS: dict[str, int] = {"vae_s": 12, "vae_c": 8}

#: The rows: (generator, label, changes against the defaults). Keys of ``changes``: parameters of
#: :class:`egmlib.core.params.GeneratorConfig`, or one of ``_MODEL_KEYS`` (``site_order``, ``init``,
#: ``class_scales``, ``recut``).
CHOICES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("vae_s", "defaults (chain order, He init, batch 4, lr 2e-3, x0.98)", {}),
    ("vae_s", "site order: farthest-point sampling (before)", {"site_order": "fps"}),
    ("vae_s", "site order: spectral", {"site_order": "spectral"}),
    ("vae_s", "init: torch default (before)", {"init": "torch"}),
    ("vae_s", "batch 8, lr 3e-3, x0.95 (before)",
     {"batch_size": 8, "lr": 3e-3, "lr_decay": 0.95}),
    ("vae_s", "batch 4, lr 5e-3", {"lr": 5e-3}),
    ("vae_c", "defaults (scale per rhythm, spec_avg 0.15)", {}),
    ("vae_c", "one scale for both rhythms (before)", {"class_scales": False}),
    ("vae_c", "init: torch default (before)", {"init": "torch"}),
    ("vae_c", "spec_avg 0 (the paper's loss)", {"spec_avg": 0.0}),
    ("vae_c", "spec_avg 0.5", {"spec_avg": 0.5}),
)

#: Epochs of every row of the reconstruction study (no early stopping: the whole curve is kept).
RECON_STUDY_EPOCHS = 40
#: Seeds of every row of the reconstruction study (a seed fixes the training noise and weights).
RECON_STUDY_SEEDS: tuple[int, ...] = (0, 1)
#: The reconstruction study's rows: (label, settings). Settings: the loss weights ``w_corr`` and
#: ``beta`` of :class:`egmlib.augmentation.recon.ReconConfig` and the learning rate ``lr``
#: (default 2e-3); every row names both weights, so a label keeps its meaning when the defaults
#: move.
RECON_CHOICES: tuple[tuple[str, dict[str, float]], ...] = (
    ("w_corr 0.1, beta 1e-3 (before)", {"w_corr": 0.1, "beta": 1e-3}),
    ("w_corr 0.1, beta 1e-4", {"w_corr": 0.1, "beta": 1e-4}),
    ("w_corr 0.5, beta 1e-3", {"w_corr": 0.5, "beta": 1e-3}),
    ("w_corr 0.5, beta 1e-4", {"w_corr": 0.5, "beta": 1e-4}),
    ("w_corr 1, beta 1e-4", {"w_corr": 1.0, "beta": 1e-4}),
    ("w_corr 1, beta 1e-4, lr 1e-3", {"w_corr": 1.0, "beta": 1e-4, "lr": 1e-3}),
)
#: Early-stopping rules replayed on every curve of the reconstruction study:
#: ``(min_epochs, patience)``; the last is the longest.
STOPPING_RULES: tuple[tuple[int, int], ...] = ((0, 5), (0, 8), (10, 5), (10, 8), (15, 8),
                                               (RECON_STUDY_EPOCHS, 1))
#: The row of :data:`RECON_CHOICES` that the reconstruction study chose (the defaults of
#: :class:`egmlib.augmentation.recon.ReconConfig` and ``AugmentConfig.recon_lr``).
_RECON_CHOSEN: dict[str, float] = dict(RECON_CHOICES)["w_corr 1, beta 1e-4, lr 1e-3"]
#: The reconstruction network's precision study (``--study recon_precision``, record
#: ``results/<profile>/recon_precision.json``): the chosen row of :data:`RECON_CHOICES` in
#: float32 and in ``precision="auto"`` (bfloat16 where the processor has it), same seeds and
#: epochs, each row's wall time recorded. Fixed before it ran: mixed precision becomes the
#: default only if its validation correlation under every stopping rule, averaged over the
#: seeds, is within 0.01 of float32's.
RECON_PRECISION_ROWS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("float32", {**_RECON_CHOSEN, "precision": "float32"}),
    ("auto precision", {**_RECON_CHOSEN, "precision": "auto"}),
)
_RECON_KEYS = ("w_corr", "beta", "lr", "precision", "schedule", "epochs", "batch_size",
               "n_real_sims")
#: The reconstruction network's speed study (``--study recon_speed``, record
#: ``results/<profile>/recon_speed.json``): 05's training as it is (constant learning rate
#: 1e-3, up to 40 epochs, patience 8) against shorter budgets that anneal the learning rate to 0
#: (cosine), each on all real training simulations and on 16 per rhythm (the primary arm of the
#: last sweep), seeds :data:`RECON_STUDY_SEEDS`, validation split only. Fixed before it ran
#: (:func:`choose_speed`): 05 adopts the row with the least training time, summed over both arms
#: under 05's stopping rule (patience 8), whose validation correlation at the restored epoch,
#: averaged over the seeds, is within 0.01 of the first row's in both arms.
_SPEED_BASE: dict[str, Any] = {**_RECON_CHOSEN, "precision": "auto"}
RECON_SPEED_ARMS: tuple[int, ...] = (0, 16)
RECON_SPEED_ROWS: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    (f"{label}; real simulations per rhythm: {arm or 'all'}",
     {**_SPEED_BASE, **changes, "n_real_sims": arm})
    for arm in RECON_SPEED_ARMS
    for label, changes in (
        ("constant lr 1e-3, 40 epochs (05 now)", {}),
        ("cosine from lr 1e-3, 20 epochs", {"schedule": "cosine", "epochs": 20}),
        ("cosine from lr 2e-3, 20 epochs", {"schedule": "cosine", "epochs": 20, "lr": 2e-3}),
        ("cosine from lr 2e-3, 15 epochs", {"schedule": "cosine", "epochs": 15, "lr": 2e-3}),
        ("cosine from lr 3e-3, 15 epochs", {"schedule": "cosine", "epochs": 15, "lr": 3e-3}),
    ))
#: 05's stopping rule, under which the speed study compares its rows: (min_epochs, patience).
SPEED_RULE = (0, 8)

#: The budget study's rows (VAE-S; changes against the notebook's settings, which stop after 10
#: epochs without validation gain). The first is 02 as it was before mixed precision: float32,
#: 60 epochs, learning rate x0.98 per epoch. The others train in ``precision="auto"`` (bfloat16
#: where the processor has it; :func:`egmlib.generators.train.resolve_precision`), whose step
#: took about half the time on a processor with AMX, so about twice the epochs fit the same
#: 5 minutes: 110 epochs at the notebook's decay, and at a faster one (x0.96, which ends the
#: schedule at 1% of the initial rate instead of 11%). Each row's wall time and resolved
#: precision are in the record; a row that needs more than 5 minutes does not meet the budget.
BUDGET_ROWS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("float32, 60 epochs (02 before)", {"precision": "float32"}),
    ("auto precision, 110 epochs", {"precision": "auto", "epochs": 110}),
    ("auto precision, 110 epochs, lr x0.96 per epoch",
     {"precision": "auto", "epochs": 110, "lr_decay": 0.96}),
)
#: The precision study's rows (VAE-C at its notebook's budget, :func:`choice_study`): float32
#: against ``precision="auto"`` (bfloat16 where the processor has it), scored on the validation
#: split like every choice row, with AF's collapse report and generated dominant frequency.
#: VAE-S's precision is settled by the budget study, at equal wall time.
PRECISION_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("vae_c", "float32", {"precision": "float32"}),
    ("vae_c", "auto precision", {"precision": "auto"}),
)

#: VAE-C's code before the AF latent study, which the AF studies' rows name explicitly so that
#: they repeat their records now that notebook 03 uses a latent sequence: one vector of 64, decoded
#: by transposed convolutions.
VECTOR_VAE_C: dict[str, Any] = {"latent": 64, "latent_layout": "vector", "upsample": "transposed"}

#: The AF rate study's rows (``--study af_rate``, record
#: ``results/<profile>/generator_af_rate.json``; VAE-C at its notebook's budget, scored like a
#: choice row on the validation split): the data set's windows, whose starts in a simulation are
#: a fixed hop apart, against windows cut afresh every epoch at random offsets from each training
#: simulation's recording (:class:`egmlib.generators.train.Recordings`). Why: VAE-C's generated
#: AF repeats every 0.48 s, about the hop (0.5 s), a period its dense layer lays out (notebook
#: 03), as a decoder does that averages copies of a simulation shifted by multiples of the hop.
#: The rule that reads it (:func:`choose_af_rate`) was fixed before the study ran.
AF_RATE_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("vae_c", "the data set's windows (03's vector code)", VECTOR_VAE_C),
    ("vae_c", "windows re-cut at random offsets every epoch", {**VECTOR_VAE_C, "recut": True}),
)
#: The AF decoder study's rows (``--study af_decoder``, record
#: ``results/<profile>/generator_af_decoder.json``; like the AF rate study, read by the same
#: rule): with the data set's windows gone, VAE-C's AF kept a 0.32 s period, two steps of the
#: dense map, that its transposed convolutions make (the AF rate study). A decoder of
#: resize-convolutions (:class:`egmlib.generators.models.VAEConfig`, ``upsample="resize"``) has
#: no such grid built in; it is trained on the data set's windows and on re-cut ones. Measured
#: (the default record): the rule picks the resize decoder on the data set's windows (generated
#: AF nearer AF's rate at equal validation correlation, still far from it); 03 did not adopt it,
#: for the reasons the README's "VAE-C's AF rate and the window hop" gives.
AF_DECODER_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    AF_RATE_ROWS[0],
    ("vae_c", "resize-convolution decoder", {**VECTOR_VAE_C, "upsample": "resize"}),
    ("vae_c", "resize-convolution decoder, windows re-cut every epoch",
     {**VECTOR_VAE_C, "upsample": "resize", "recut": True}),
)
#: The AF latent study's rows (``--study af_latent``, record
#: ``results/<profile>/generator_af_latent.json``; like the AF rate study, read by the same rule,
#: :func:`choose_af_rate`, against the first row): with resize-convolutions, VAE-C's generated AF
#: still repeats every 0.5 s, the window hop, a period its dense layer lays out (the AF decoder
#: study). In the sequence layout of :class:`egmlib.generators.models.VAEConfig` no layer knows
#: where in the window it is, so none can lay out a period tied to the window; the latent code is a
#: sequence of 3 (75 values at the default size, about the vector's 64) or 6 values per step of the
#: decoder's first map (16 samples). Both use resize-convolutions: at 100 Hz the transposed
#: convolutions' 16-sample grid beats at 6.25 Hz, inside the AF band, and could pass for AF's rate.
#: Fixed before the study ran: the row the rule chooses, if any, becomes VAE-C's setting in notebook
#: 03, and everything that reads VAE-C's windows is remade from it. Measured (the default record):
#: the rule picks 3 per step, now notebook 03's default
#: (:data:`egmlib.core.params.NOTEBOOK_DEFAULTS`).
AF_LATENT_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    AF_RATE_ROWS[0],
    ("vae_c", "latent sequence, 3 per step, resize decoder",
     {"latent_layout": "sequence", "latent": 3, "upsample": "resize"}),
    ("vae_c", "latent sequence, 6 per step, resize decoder",
     {"latent_layout": "sequence", "latent": 6, "upsample": "resize"}),
)
#: The most validation correlation (SR and AF each) a row of the AF rate study may lose against
#: the first row and still be chosen.
AF_RATE_TOLERANCE = 0.02
#: How much nearer the validation AF's rhythm-blind DF a row's generated AF must come than the
#: first row's to be chosen (Hz; the generators' target for ``|dDF|`` itself).
AF_RATE_MIN_GAIN_HZ = 0.5

#: Largest relative gain of the validation curve's last quarter over the best before it that
#: still counts as a plateau (:func:`plateau_gain`).
PLATEAU_TOL = 0.01

_MODEL_KEYS = ("site_order", "init", "class_scales", "recut")
_N_GENERATED = 50


def _window_df(x: np.ndarray, fs: float) -> np.ndarray:
    """Median over sites of the rhythm-blind dominant frequency, per window."""
    return np.nanmedian(metrics.RHYTHM_BLIND_DF(x, fs), axis=-1)


def _check_changes(changes: Mapping[str, Any]) -> None:
    """A ``ValueError`` naming the first key of ``changes`` that is no setting of a row."""
    unknown = sorted(set(changes) - set(_MODEL_KEYS) - set(_params.GeneratorConfig.specs()))
    if unknown:
        raise ValueError(f"changes: unknown setting {unknown[0]!r}; allowed: "
                         f"{', '.join(_MODEL_KEYS)} or a GeneratorConfig parameter")


def choice_row(ds: Dataset, kind: str, base: Mapping[str, Any], changes: Mapping[str, Any],
               label: str = "", epochs: int | None = None) -> dict[str, Any]:
    """Train ``kind`` with ``base`` parameters changed by ``changes`` for ``epochs`` epochs
    (default :data:`STUDY_EPOCHS`) and score it on the validation split (module docstring)."""
    from egmlib.evaluation.evaluator import collapse_report, periodicity_report

    _check_changes(changes)
    p = {**base, **{k: v for k, v in changes.items() if k not in _MODEL_KEYS},
         "epochs": epochs or STUDY_EPOCHS[kind]}
    _params.GeneratorConfig.from_values(p)  # the changed settings are checked like any other
    order = changes.get("site_order", ds.manifest["params"].get("site_order", "fps"))
    columns = ds.site_permutation(order)
    t0 = time.perf_counter()
    model, norm, hist = synthesis.train_generator(
        ds, kind, p, None, show_progress=False, columns=columns,
        init=changes.get("init", "he"), class_scales=changes.get("class_scales", True),
        recut=changes.get("recut", False))
    seconds = time.perf_counter() - t0
    geom_sites = ds.geometry()[1].electrodes[columns]
    row: dict[str, Any] = {
        "generator": kind, "label": label, "changes": dict(changes), "epochs": p["epochs"],
        "site_order": order, "column_step_mm": float(np.linalg.norm(
            np.diff(geom_sites, axis=0), axis=1).mean()),
        "best_epoch": hist["best_epoch"], "seconds": seconds,
        "precision": hist["settings"]["precision"],
        "val": synthesis.reconstruction_metrics(model, norm, ds, kind, "val", columns),
    }
    if kind == "vae_c":
        fs = float(ds.manifest["fs"])
        row["df_hz"] = {}
        for rhythm in LABELS:
            x_val = np.asarray(ds.egm[ds.part("val", rhythm)])[..., columns]
            gen = generate(model, norm, _N_GENERATED, label=LABELS.index(rhythm),
                           seed=int(p["seed"]))
            df_gen, df_val = np.nanmedian(_window_df(gen, fs)), np.nanmedian(_window_df(x_val, fs))
            row["df_hz"][rhythm] = {"generated_median": float(df_gen),
                                    "val_median": float(df_val),
                                    "abs_diff": float(abs(df_gen - df_val))}
        af = LABELS.index("AF")
        x_af = np.asarray(ds.egm[ds.part("val", "AF")])[..., columns]
        row["af_collapse"] = collapse_report(model, norm, x_af, np.full(len(x_af), af))
        # AF drawn the notebook's way (p["gen_mode"]), against validation AF
        drawn = synthesis.draw(model, norm, ds, kind, "AF", _N_GENERATED, int(p["seed"]),
                               p["gen_mode"], columns)
        row["af_periodicity"] = periodicity_report(model, norm, drawn, x_af, af, fs)
        row["af_periodicity"]["gen_mode"] = p["gen_mode"]
    return row


def choose_af_rate(rows: Sequence[Mapping[str, Any]], tolerance: float = AF_RATE_TOLERANCE,
                   min_gain_hz: float = AF_RATE_MIN_GAIN_HZ) -> dict[str, Any]:
    """The AF rate study's rule, fixed before it ran: against the first row (03 as it is), a row
    qualifies when its generated AF's rhythm-blind DF (drawn the notebook's way) is at least
    ``min_gain_hz`` nearer the validation AF's, and its validation correlation of SR and of AF
    are each at least the first row's minus ``tolerance``; of those, the nearest DF wins.
    ``chosen`` is that row's label, or the first row's when none qualifies.

    Each row needs ``label``, ``val`` (``{rhythm: {"corr_mean": ...}}``) and ``af_periodicity``
    (:func:`egmlib.evaluation.evaluator.periodicity_report`, whose ``df_hz`` holds the
    generated and the real medians)."""
    if not rows:
        raise ValueError("rows: the AF rate study has no rows")

    def gap(row: Mapping[str, Any]) -> float:
        d = row["af_periodicity"]["df_hz"]
        return abs(d["generated"] - d["real"])

    base = rows[0]
    verdicts = []
    for row in rows[1:]:
        lost = {r: base["val"][r]["corr_mean"] - row["val"][r]["corr_mean"] for r in LABELS}
        verdicts.append({"label": row["label"], "df_gap_hz": gap(row),
                         "corr_lost": lost,
                         "qualifies": gap(row) <= gap(base) - min_gain_hz
                         and all(v <= tolerance for v in lost.values())})
    ok = [v for v in verdicts if v["qualifies"]]
    chosen = min(ok, key=lambda v: v["df_gap_hz"])["label"] if ok else base["label"]
    return {"chosen": chosen, "baseline": base["label"], "baseline_df_gap_hz": gap(base),
            "tolerance": float(tolerance), "min_gain_hz": float(min_gain_hz), "rows": verdicts}


def plateau_gain(curve: Sequence[float]) -> float:
    """Relative gain of a validation-loss curve in its last quarter: ``(b - q) / |b|`` with
    ``q`` the minimum over the last ``max(1, n // 4)`` epochs and ``b`` the minimum before them.
    Positive while the curve still falls, at most 0 on a plateau or when it rises again.

    >>> plateau_gain([4.0, 3.0, 2.0, 1.0])
    0.5
    >>> plateau_gain([4.0, 1.0, 1.5, 1.2])
    -0.2
    """
    c = np.asarray(curve, np.float64)
    if c.ndim != 1 or len(c) < 2 or not np.all(np.isfinite(c)):
        raise ValueError(f"curve: expected a list of at least 2 finite values; got shape "
                         f"{c.shape}")
    q = max(1, len(c) // 4)
    before, last = float(c[:-q].min()), float(c[-q:].min())
    return (before - last) / abs(before)


def budget_row(ds: Dataset, base: Mapping[str, Any], changes: Mapping[str, Any],
               label: str = "") -> dict[str, Any]:
    """Train VAE-S with ``base`` changed by ``changes`` and keep its validation curve (module
    docstring): ``epochs_run``, ``best_epoch`` (counted from 1), ``stopped_early``,
    ``val_total`` (per epoch), ``plateau_gain``, ``converged`` (gain below
    :data:`PLATEAU_TOL`), ``seconds``, the resolved ``precision`` and the kept model's
    validation reconstruction metrics."""
    _check_changes(changes)
    p = {**base, **changes}
    _params.GeneratorConfig.from_values(p)
    columns = ds.site_permutation(ds.manifest["params"].get("site_order", "fps"))
    t0 = time.perf_counter()
    model, norm, hist = synthesis.train_generator(ds, "vae_s", p, None, show_progress=False,
                                                  columns=columns)
    seconds = time.perf_counter() - t0
    curve = [float(v) for v in hist["val"]["total"]]
    gain = plateau_gain(curve)
    return {"label": label, "changes": dict(changes), "epochs": int(p["epochs"]),
            "epochs_run": int(hist["epochs_run"]), "best_epoch": int(hist["best_epoch"]) + 1,
            "stopped_early": bool(hist["stopped_early"]), "seconds": seconds,
            "precision": hist["settings"]["precision"],
            "val_total": [round(v, 6) for v in curve], "plateau_gain": gain,
            "converged": gain < PLATEAU_TOL,
            "val": synthesis.reconstruction_metrics(model, norm, ds, "vae_s", "val", columns)}


def budget_study(ds: Dataset, values: Mapping[str, Any],
                 rows: Sequence[tuple[str, Mapping[str, Any]]] = BUDGET_ROWS,
                 log: Any = None, epochs: int | None = None) -> dict[str, Any]:
    """Every row of ``rows`` (:func:`budget_row`) on VAE-S's parameters for the profile
    ``values``; the rows are checked before the first trains. ``epochs`` replaces every row's
    budget (the tests run a few epochs)."""
    base = _base("vae_s", values)
    if epochs is not None:
        rows = [(label, {**changes, "epochs": epochs}) for label, changes in rows]
    for _, changes in rows:
        _check_changes(changes)
        _params.GeneratorConfig.from_values({**base, **changes})
    out = []
    for label, changes in rows:
        row = budget_row(ds, base, changes, label)
        out.append(row)
        if log is not None:
            print(f"vae_s {label}: best epoch {row['best_epoch']} of {row['epochs_run']}, "
                  f"last-quarter gain {row['plateau_gain']:+.3f}, validation correlation "
                  f"{row['val']['SR']['corr_mean']:.3f}, {row['seconds']:.0f} s", file=log,
                  flush=True)
    return {"split": "val", "generator": "vae_s", "plateau_tol": PLATEAU_TOL, "base": base,
            "rows": out}


def _base(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The generator notebook's parameters for a profile's ``values`` (its own defaults first:
    VAE-C's differ, :data:`egmlib.core.params.NOTEBOOK_DEFAULTS`)."""
    return dict(_params.validate(synthesis.GENERATORS[kind][0], values))


def choice_study(ds: Dataset, values: Mapping[str, Any],
                 rows: Sequence[tuple[str, str, Mapping[str, Any]]] = CHOICES,
                 log: Any = None, epochs: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Every row of ``rows`` (:func:`choice_row`) on top of each generator's parameters for the
    profile ``values``, with the settings they share. ``epochs`` overrides
    :data:`STUDY_EPOCHS` per generator (the tests run one epoch)."""
    budget = {**STUDY_EPOCHS, **(epochs or {})}
    for kind, label, changes in rows:  # every row is checked before the first one trains
        if kind not in synthesis.GENERATORS:
            raise ValueError(f"rows: unknown generator {kind!r} in row {label!r}; allowed: "
                             f"{', '.join(synthesis.GENERATORS)}")
        _check_changes(changes)
    out = []
    for kind, label, changes in rows:
        row = choice_row(ds, kind, _base(kind, values), changes, label, budget[kind])
        out.append(row)
        if log is not None:
            corr = {r: round(v["corr_mean"], 3) for r, v in row["val"].items()}
            print(f"{kind} {label}: validation correlation {corr}, {row['seconds']:.0f} s",
                  file=log, flush=True)
    kinds = sorted({r[0] for r in rows})
    return {"split": "val", "epochs": {k: budget[k] for k in kinds},
            "base": {k: _base(k, values) for k in kinds}, "rows": out}


def recon_row(ds: Dataset, label: str, settings: Mapping[str, float], seed: int,
              epochs: int = RECON_STUDY_EPOCHS, snr_db: float = 20.0) -> dict[str, Any]:
    """Train the reconstruction network on the real training pairs of ``seed`` (k = 0,
    :func:`egmlib.augmentation.augment.build_training_set`) with ``settings`` for ``epochs``
    epochs without early stopping; return its validation curve and every rule of
    :data:`STOPPING_RULES` replayed on it."""
    unknown = sorted(set(settings) - set(_RECON_KEYS))
    if unknown:
        raise ValueError(f"settings: unknown key {unknown[0]!r}; allowed: "
                         f"{', '.join(_RECON_KEYS)}")
    n_real_sims = int(settings.get("n_real_sims", 0))
    epochs = int(settings.get("epochs", epochs))
    tset = build_training_set(ds, None, 0, snr_db, seed, n_real_sims)
    T, n_rec = ds.egm.shape[1:]
    cfg = ReconConfig(T=int(T), n_electrodes=int(ds.bspm.shape[-1]), n_rec=int(n_rec),
                      **{k: v for k, v in settings.items() if k in ("w_corr", "beta")})
    with seeded_torch(seed, "cpu"):
        model = DualBranchVAE(cfg)
    t0 = time.perf_counter()
    hist = train_recon(model, tset.bspm_train, tset.egm_train, tset.bspm_val, tset.egm_val,
                       epochs=epochs, lr=float(settings.get("lr", 2e-3)), seed=seed,
                       batch_size=int(settings.get("batch_size", 32)),
                       patience=epochs, progress=False,
                       precision=str(settings.get("precision", "float32")),
                       schedule=str(settings.get("schedule", "constant")))
    corr, total = hist["val"]["corr"], hist["val"]["total"]
    rules = []
    for min_epochs, patience in STOPPING_RULES:
        run, best = stopping_point(total, patience, min_epochs)
        rules.append({"min_epochs": min_epochs, "patience": patience, "epochs_run": run,
                      "best_epoch": best, "val_corr": corr[best]})
    return {"label": label, "settings": dict(settings), "seed": seed, "epochs": epochs,
            "n_real_sims": n_real_sims, "precision": hist["settings"]["precision"],
            "seconds": time.perf_counter() - t0, "epoch_s": hist["epoch_s"],
            "val_corr": corr, "val_total": total, "max_val_corr": max(corr), "rules": rules}


def rule_cost(row: Mapping[str, Any], rule: tuple[int, int] = SPEED_RULE
              ) -> tuple[float, float]:
    """``(validation correlation at the restored epoch, seconds of the epochs run)`` of a
    :func:`recon_row` under the stopping rule ``(min_epochs, patience)``, replayed on its curve
    (:func:`egmlib.core.training.stopping_point`): what the row would give and cost in 05."""
    run, best = stopping_point(row["val_total"], rule[1], rule[0])
    return float(row["val_corr"][best]), float(sum(row["epoch_s"][:run]))


def choose_speed(rows: Sequence[Mapping[str, Any]], tolerance: float = 0.01,
                 rule: tuple[int, int] = SPEED_RULE) -> dict[str, Any]:
    """The speed study's choice (:data:`RECON_SPEED_ROWS`) from :func:`recon_row` rows: per
    setting (the rows' settings without ``n_real_sims``) and arm, the mean over seeds of
    :func:`rule_cost`; the reference is the first setting; a setting qualifies when its mean
    correlation is at least the reference's minus ``tolerance`` in every arm; the qualifying
    setting with the least seconds summed over arms (mean over seeds) is chosen. Returns
    ``{"settings", "table": [{"settings", "label", "arms": {str(arm): {"val_corr", "seconds"}},
    "seconds", "qualifies"}], "reference", "tolerance", "rule"}``."""
    def key(settings: Mapping[str, Any]) -> str:
        return repr(sorted((k, v) for k, v in settings.items() if k != "n_real_sims"))

    groups: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
    order: list[str] = []
    for r in rows:
        k = key(r["settings"])
        if k not in groups:
            order.append(k)
        groups.setdefault(k, {}).setdefault(int(r["n_real_sims"]), []).append(r)
    if not order:
        raise ValueError("rows: no row to choose from")
    table = []
    for k in order:
        arms = {}
        for arm, rs in groups[k].items():
            cost = [rule_cost(r, rule) for r in rs]
            arms[str(arm)] = {"val_corr": float(np.mean([c[0] for c in cost])),
                         "seconds": float(np.mean([c[1] for c in cost])), "n_seeds": len(rs)}
        first = groups[k][next(iter(groups[k]))][0]
        table.append({"label": first["label"].split(";")[0],
                      "settings": {a: b for a, b in first["settings"].items()
                                   if a != "n_real_sims"},
                      "arms": arms, "seconds": sum(a["seconds"] for a in arms.values())})
    ref = table[0]["arms"]
    for row in table:
        row["qualifies"] = (set(row["arms"]) == set(ref) and all(
            row["arms"][a]["val_corr"] >= ref[a]["val_corr"] - tolerance for a in ref))
    chosen = min((r for r in table if r["qualifies"]), key=lambda r: r["seconds"])
    return {"label": chosen["label"], "settings": chosen["settings"], "table": table,
            "reference": table[0]["label"], "tolerance": tolerance, "rule": list(rule)}


def choose_recon(rows: Sequence[Mapping[str, Any]], tolerance: float = 0.01
                 ) -> dict[str, Any]:
    """The choice of the reconstruction study (module docstring) from :func:`recon_row` rows:
    ``{"label", "settings", "rule": {"min_epochs", "patience"}, "val_corr" (mean over seeds at
    the restored epoch under that rule), "longest_val_corr", "epochs_run" (per seed)}``."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    if not by:
        raise ValueError("rows: no row to choose from")
    longest = {label: float(np.mean([r["rules"][-1]["val_corr"] for r in rs]))
               for label, rs in by.items()}
    label = max(longest, key=lambda k: longest[k])
    rs = by[label]
    ok = [i for i in range(len(STOPPING_RULES))
          if all(r["rules"][i]["val_corr"] >= r["rules"][-1]["val_corr"] - tolerance
                 for r in rs)]
    i = min(ok, key=lambda j: (max(r["rules"][j]["epochs_run"] for r in rs), j))
    min_epochs, patience = STOPPING_RULES[i]
    return {"label": label, "settings": dict(rs[0]["settings"]),
            "rule": {"min_epochs": min_epochs, "patience": patience},
            "val_corr": float(np.mean([r["rules"][i]["val_corr"] for r in rs])),
            "longest_val_corr": longest[label],
            "epochs_run": [r["rules"][i]["epochs_run"] for r in rs]}


def recon_choice_study(ds: Dataset, values: Mapping[str, Any],
                       rows: Sequence[tuple[str, Mapping[str, float]]] = RECON_CHOICES,
                       seeds: Sequence[int] = RECON_STUDY_SEEDS,
                       epochs: int = RECON_STUDY_EPOCHS, log: Any = None,
                       choose: Any = None) -> dict[str, Any]:
    """Every row of ``rows`` for every seed of ``seeds`` (:func:`recon_row`) at the profile's
    noise level, and the choice of ``choose`` (default :func:`choose_recon`) from them. Rows
    are checked before any trains."""
    for label, settings in rows:
        unknown = sorted(set(settings) - set(_RECON_KEYS))
        if unknown:
            raise ValueError(f"rows: unknown setting {unknown[0]!r} in row {label!r}; allowed: "
                             f"{', '.join(_RECON_KEYS)}")
    snr_db = float(_params.validate("05_augment", values)["snr_db"])
    out = []
    for label, settings in rows:
        for seed in seeds:
            row = recon_row(ds, label, settings, int(seed), epochs, snr_db)
            out.append(row)
            if log is not None:
                print(f"recon {label}, seed {seed}: validation correlation max "
                      f"{row['max_val_corr']:.3f}, {row['seconds']:.0f} s", file=log, flush=True)
    return {"split": "val", "epochs": epochs, "seeds": list(seeds), "snr_db": snr_db,
            "stopping_rules": [list(r) for r in STOPPING_RULES], "rows": out,
            "choice": (choose or choose_recon)(out)}


def linear_study(ds: Dataset, values: Mapping[str, Any], run_dir: Any,
                 arms: Sequence[int] | None = None, seeds: Sequence[int] | None = None,
                 log: Any = None) -> dict[str, Any]:
    """:func:`egmlib.augmentation.linear.run_correction` for every arm and seed (default: the
    profile's ``sweep_n_real_sims`` and ``sweep_seeds``, :class:`egmlib.core.params.SweepConfig`)
    at the profile's noise level, with the baselines 05 caches in ``run_dir``; and per arm the
    mean and standard deviation over seeds of the test correlation, RMSE and amplitude ratio per
    rhythm. Returns ``{"split", "snr_db", "arms", "seeds", "rows", "by_arm", "tikhonov_val"}``:
    ``split`` names the split every choice reads, ``"val"`` as in the other study records (here
    the scores are on the test split, as 05's; no choice reads them); ``tikhonov_val`` holds the
    ``val`` baseline's test scores, the Tikhonov the correction starts from."""
    sweep = _params.SweepConfig.from_values(dict(values))
    arms = [int(a) for a in (sweep.sweep_n_real_sims if arms is None else arms)]
    seeds = [int(x) for x in (sweep.sweep_seeds if seeds is None else seeds)]
    snr_db = float(_params.validate("05_augment", values)["snr_db"])
    base = cached_baselines(ds, snr_db, EVAL_NOISE_SEED, Path(run_dir) / "05_augment")
    rows = []
    for arm in arms:
        for seed in seeds:
            t0 = time.perf_counter()
            row = linear.run_correction(ds, seed, arm, snr_db, base)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if log is not None:
                print(f"linear correction, real simulations per rhythm {arm or 'all'}, seed "
                      f"{seed}: validation correlation {row['val_corr_chosen']:.3f}, test SR "
                      f"{row['test']['SR']['corr_mean']:.3f}, AF "
                      f"{row['test']['AF']['corr_mean']:.3f}", file=log, flush=True)
    by_arm: dict[str, Any] = {}
    for arm in arms:
        mine = [r for r in rows if r["n_real_sims"] == arm]
        by_arm[str(arm)] = {
            rhythm: {f"{m}_{stat}": float(fn([r["test"][rhythm][m] for r in mine]))
                     for m in ("corr_mean", "rmse_mean", "amp_ratio_median")
                     for stat, fn in (("mean", np.mean), ("sd", np.std))}
            for rhythm in (*LABELS, "all") if rhythm in mine[0]["test"]}
        by_arm[str(arm)]["n_seeds"] = len(mine)
        by_arm[str(arm)]["weightings"] = sorted({r["weighting"] for r in mine})
    return {"split": "val", "snr_db": snr_db, "arms": arms, "seeds": seeds, "rows": rows,
            "by_arm": by_arm, "tikhonov_val": base["val"]}


#: The ideal generators of the unseen-window study (:func:`unseen_study`): name -> the rhythms
#: of the unseen windows, as VAE-S (SR) and VAE-C (SR and AF alternately) generate them, and
#: their pairing: ``"transfer"``, through the training torsos' transfer matrices as 05 pairs a
#: generator's windows; ``"source"``, with the windows' own BSPMs, as the real pairs are made.
UNSEEN_SOURCES: dict[str, tuple[tuple[str, ...], str]] = {
    "unseen_sr": (("SR",), "transfer"),
    "unseen_sr_af": (("SR", "AF"), "transfer"),
    "unseen_sr_source": (("SR",), "source"),
    "unseen_sr_af_source": (("SR", "AF"), "source"),
}


def unseen_study(ds: Dataset, values: Mapping[str, Any], run_dir: Any,
                 arms: Sequence[int] | None = None, ks: Sequence[int] | None = None,
                 seeds: Sequence[int] | None = None, log: Any = None) -> dict[str, Any]:
    """The learned linear correction (:func:`egmlib.augmentation.linear.run_correction`) of each
    seed at each arm, without augmentation and with ``k`` unseen real windows of each source of
    :data:`UNSEEN_SOURCES` (:func:`egmlib.augmentation.augment.unseen_indices`), and the gain
    of each (arm, source, k, rhythm) over ``k = 0``, paired by seed
    (:func:`egmlib.workflow.results.gain_row`), with Holm's correction over all rows.

    Defaults from the profile (:class:`egmlib.core.params.SweepConfig`): ``arms``, the scarcest
    non-zero arm of ``sweep_n_real_sims``; ``ks``, the smallest non-zero ``sweep_k`` and the
    primary hypothesis's ``range_k``; ``seeds``, ``sweep_seeds``. Returns ``{"split", "snr_db",
    "arms", "ks", "seeds", "sources", "rows", "gains"}`` (``split``: ``"val"``, what every
    choice of a fit reads; the scores are on the test split, as 05's)."""
    sweep = _params.SweepConfig.from_values(dict(values))
    arms = [int(a) for a in (arms if arms is not None
                             else sorted(a for a in sweep.sweep_n_real_sims if a)[:1])]
    if ks is None:
        ks = sorted({min(k for k in sweep.sweep_k if k), *sweep.range_k})
    ks = [int(k) for k in ks]
    seeds = [int(x) for x in (sweep.sweep_seeds if seeds is None else seeds)]
    if not arms or 0 in arms:
        raise ValueError(f"arms: got {arms}; allowed: a non-empty list of numbers of real "
                         "training simulations >= 1 (0, every simulation, leaves none unseen)")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: got {ks}; allowed: a non-empty list of integers >= 1")
    # every arm, seed and source has its windows before the first fit; a smaller k takes the
    # first k of them (unseen_indices draws one order per seed and cuts it)
    windows = {(arm, seed, name): unseen_indices(ds, arm, seed, max(ks), rhythms)
               for arm in arms for seed in seeds
               for name, (rhythms, _) in UNSEEN_SOURCES.items()}
    snr_db = float(_params.validate("05_augment", values)["snr_db"])
    base = cached_baselines(ds, snr_db, EVAL_NOISE_SEED, Path(run_dir) / "05_augment")
    rows = []
    for arm in arms:
        for seed in seeds:
            plan = [("none", 0)] + [(name, k) for name in UNSEEN_SOURCES for k in ks]
            for name, k in plan:
                t0 = time.perf_counter()
                kw: dict[str, Any] = {}
                if name != "none":
                    pairing = UNSEEN_SOURCES[name][1]
                    picked = windows[(arm, seed, name)][:k]
                    kw = ({"synth_egm": np.asarray(ds.egm[picked], np.float32), "k": k}
                          if pairing == "transfer" else {"extra_rows": picked})
                row = linear.run_correction(ds, seed, arm, snr_db, base, **kw)
                row.update(generator=name, k=k, seconds=time.perf_counter() - t0)
                rows.append(row)
                if log is not None:
                    print(f"linear correction, {arm} real simulations per rhythm, {name}, k = "
                          f"{k}, seed {seed}: test SR {row['test']['SR']['corr_mean']:.3f}, AF "
                          f"{row['test']['AF']['corr_mean']:.3f}", file=log, flush=True)
    gains = []
    for arm in arms:
        k0 = [r for r in rows if r["n_real_sims"] == arm and r["k"] == 0]
        for name in UNSEEN_SOURCES:
            for k in ks:
                mine = [r for r in rows
                        if r["n_real_sims"] == arm and r["generator"] == name and r["k"] == k]
                for rhythm in LABELS:
                    g = results.gain_row(k0 + mine, [k], rhythm)
                    if g is not None:
                        gains.append({"n_real_sims": arm, "generator": name, "k": k,
                                      "rhythm": rhythm, **g})
    for row, p in zip(gains, results.holm([g["p_t"] for g in gains])):
        row["p_holm"] = float(p)
    return {"split": "val", "snr_db": snr_db, "arms": arms, "ks": ks, "seeds": seeds,
            "sources": {name: {"rhythms": list(rhythms), "pairing": pairing}
                        for name, (rhythms, pairing) in UNSEEN_SOURCES.items()}, "rows": rows,
            "gains": gains}


#: Learning rates of the residual network (:mod:`egmlib.augmentation.residual`) that the
#: residual study tries on the validation pairs of its first :data:`RESIDUAL_CHOICE_SEEDS` seeds.
RESIDUAL_LRS: tuple[float, ...] = (3e-3, 1e-2)
RESIDUAL_CHOICE_SEEDS = 2
#: Seeds of the residual study (the first of ``sweep_seeds``): a fit takes about a minute on
#: 2 cores at 2 real simulations per rhythm, three fits per seed.
RESIDUAL_SEEDS = 10
#: The residual study's record is marked ``kind_independent`` (readable on any processor kind)
#: only when its float64 refit keeps the best epoch and moves no test correlation by more than
#: this: half the last digit the README quotes.
RESIDUAL_ROUNDING_TOLERANCE = 5e-4
#: The same for the record of :func:`residual_full_study`, whose numbers the README quotes to
#: two decimals: a fit there takes about 15 times the optimizer steps of one at the scarcest arm,
#: and rounding moves it further (set after its first float64 refit moved a test correlation by
#: 3.0e-3, on the same rule: half the last digit quoted).
RESIDUAL_FULL_ROUNDING_TOLERANCE = 5e-3
#: The ideal generators the residual study adds (paired as 05 pairs VAE-S's and VAE-C's).
RESIDUAL_SOURCES = ("unseen_sr", "unseen_sr_af")


def residual_study(ds: Dataset, values: Mapping[str, Any], run_dir: Any,
                   arm: int | None = None, k: int | None = None,
                   seeds: Sequence[int] | None = None,
                   lrs: Sequence[float] = RESIDUAL_LRS,
                   config: residual.ResidualConfig | None = None,
                   log: Any = None) -> dict[str, Any]:
    """The residual network on the linear correction (:func:`egmlib.augmentation.residual.
    run_residual`) at one arm, without augmentation and with ``k`` unseen real windows of each
    source of :data:`RESIDUAL_SOURCES` (as :func:`unseen_study` adds them, through the transfer
    matrices), for each seed.

    First the learning rate: every one of ``lrs`` is fitted without augmentation on the first
    :data:`RESIDUAL_CHOICE_SEEDS` seeds, and the one with the highest mean validation
    correlation is used everywhere (its fits are kept as those seeds' ``k = 0`` rows). Then, paired
    by seed (:func:`egmlib.workflow.results.gain_row`): the network and the routed network
    against the linear correction they start from, without augmentation
    (``residual_vs_linear``, ``routed_vs_linear``), and the gain of each source's ``k`` windows
    over ``k = 0``, for the network (``gains``), the routed network (``routed_gains``; Holm's
    correction within each of the two) and for the linear correction refitted on the same pairs
    (``linear_gains``).
    Last, :func:`egmlib.augmentation.residual.rounding_check` refits the first seed's ``k = 0``
    run in float64 (``rounding``).

    Defaults from the profile (:class:`egmlib.core.params.SweepConfig`): ``arm``, the scarcest
    non-zero arm of ``sweep_n_real_sims``; ``k``, the largest ``k`` of the primary hypothesis's
    ``range_k``; ``seeds``, the first :data:`RESIDUAL_SEEDS` of ``sweep_seeds``; ``config``, the
    network's other settings (default :class:`egmlib.augmentation.residual.ResidualConfig`)."""
    config = residual.ResidualConfig() if config is None else config
    sweep = _params.SweepConfig.from_values(dict(values))
    arm = int(arm if arm is not None else sorted(a for a in sweep.sweep_n_real_sims if a)[0])
    k = int(k if k is not None else max(sweep.range_k))
    seeds = [int(x) for x in (sweep.sweep_seeds[:RESIDUAL_SEEDS] if seeds is None else seeds)]
    if arm < 1:
        raise ValueError(f"arm: got {arm}; allowed: a number of real training simulations >= 1 "
                         "(0, every simulation, leaves none unseen)")
    if k < 1:
        raise ValueError(f"k: got {k}; allowed: an integer >= 1")
    if not seeds:
        raise ValueError("seeds: got none; allowed: a non-empty list of integers")
    _check_lrs(lrs)
    windows = {(seed, name): unseen_indices(ds, arm, seed, k, UNSEEN_SOURCES[name][0])
               for seed in seeds for name in RESIDUAL_SOURCES}  # every seed's, before any fit
    snr_db = float(_params.validate("05_augment", values)["snr_db"])
    base = cached_baselines(ds, snr_db, EVAL_NOISE_SEED, Path(run_dir) / "05_augment")

    def fit(seed: int, name: str, cfg: residual.ResidualConfig) -> dict[str, Any]:
        t0 = time.perf_counter()
        kw: dict[str, Any] = {}
        if name != "none":
            kw = {"synth_egm": np.asarray(ds.egm[windows[(seed, name)]], np.float32), "k": k}
        row = residual.run_residual(ds, seed, arm, snr_db, base, cfg, **kw)
        row.update(generator=name, seconds=time.perf_counter() - t0)
        if log is not None:
            print(f"residual network, {arm} real simulations per rhythm, {name}, k = "
                  f"{row['k']}, lr {cfg.lr:g}, seed {seed}: best epoch "
                  f"{row['history']['best_epoch']}, test SR {row['test']['SR']['corr_mean']:.3f} "
                  f"(linear {row['linear']['SR']['corr_mean']:.3f}), AF "
                  f"{row['test']['AF']['corr_mean']:.3f} "
                  f"(linear {row['linear']['AF']['corr_mean']:.3f}); routed: best epochs "
                  f"{row['history']['best_epoch_by_rhythm']}, SR "
                  f"{row['routed']['SR']['corr_mean']:.3f}, AF "
                  f"{row['routed']['AF']['corr_mean']:.3f}", file=log, flush=True)
        return row

    chosen, lr_choice, tried = _choose_residual_lr(lambda seed, cfg: fit(seed, "none", cfg),
                                                   seeds, lrs, config)
    rows = []
    for seed in seeds:
        rows.append(tried.get((chosen.lr, seed)) or fit(seed, "none", chosen))
        rows.extend(fit(seed, name, chosen) for name in RESIDUAL_SOURCES)
    k0 = [r for r in rows if r["k"] == 0]
    residual_vs_linear = {rhythm: results.gain_row(_versus(k0, "linear", "test"), [1], rhythm)
                          for rhythm in LABELS}
    routed_vs_linear = {rhythm: results.gain_row(_versus(k0, "linear", "routed"), [1], rhythm)
                        for rhythm in LABELS}
    gains, linear_gains, routed_gains = _augmentation_gains(rows, RESIDUAL_SOURCES, k)
    first = next(r for r in k0 if r["seed"] == seeds[0])
    rounding = residual.rounding_check(ds, first, snr_db, base)
    return {"split": "val", "snr_db": snr_db, "n_real_sims": arm, "k": k, "seeds": seeds,
            "sources": {name: {"rhythms": list(UNSEEN_SOURCES[name][0]),
                               "pairing": UNSEEN_SOURCES[name][1]} for name in RESIDUAL_SOURCES},
            "lr_choice": lr_choice,
            "config": asdict(chosen), "rows": rows, "residual_vs_linear": residual_vs_linear,
            "routed_vs_linear": routed_vs_linear, "gains": gains, "linear_gains": linear_gains,
            "routed_gains": routed_gains, "rounding": rounding, "tikhonov_val": base["val"]}


def _augmentation_gains(rows: Sequence[Mapping[str, Any]], names: Sequence[str], k: int
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                   list[dict[str, Any]]]:
    """The gain of each source's (``names``) fits with ``k`` windows over the ``k = 0`` fit of the
    same seed, per rhythm (:func:`egmlib.workflow.results.gain_row`), for the residual network
    (``test``), the linear correction of the same fit (``linear``) and the routed network
    (``routed``); Holm's correction within the network's and the routed network's families
    (``p_holm``)."""
    k0 = [r for r in rows if r["k"] == 0]
    gains: list[dict[str, Any]] = []
    linear_gains: list[dict[str, Any]] = []
    routed_gains: list[dict[str, Any]] = []
    for name in names:
        mine = [r for r in rows if r["generator"] == name]
        for rhythm in LABELS:
            for out, key in ((gains, "test"), (linear_gains, "linear"), (routed_gains, "routed")):
                g = results.gain_row([{**r, "test": r[key]} for r in k0 + mine], [k], rhythm)
                if g is not None:
                    out.append({"generator": name, "k": k, "rhythm": rhythm, **g})
    for family in (gains, routed_gains):
        for row, p in zip(family, results.holm([g["p_t"] for g in family])):
            row["p_holm"] = float(p)
    return gains, linear_gains, routed_gains


def _residual_fit(ds: Dataset, seed: int, arm: int, snr_db: float, base: Mapping[str, Any],
                  cfg: residual.ResidualConfig, name: str, synth_egm: np.ndarray | None, k: int,
                  log: Any = None) -> dict[str, Any]:
    """One fit of :func:`egmlib.augmentation.residual.run_residual`, with the first ``k`` of
    ``synth_egm`` added (``None``: ``k = 0``), as a record row named ``name`` with its wall
    time, and a log line of its test scores."""
    t0 = time.perf_counter()
    kw = {} if synth_egm is None else {"synth_egm": synth_egm, "k": k}
    row = residual.run_residual(ds, seed, arm, snr_db, base, cfg, **kw)
    row.update(generator=name, seconds=time.perf_counter() - t0)
    if log is not None:
        print(f"residual network, {arm} real simulations per rhythm, {name}, k = {row['k']}, "
              f"seed {seed}: " + _scores_text(row), file=log, flush=True)
    return row


def _scores_text(row: Mapping[str, Any]) -> str:
    """A residual fit's test correlations for a log line: network, routed, linear, per rhythm."""
    return ", ".join(f"{r} {row['test'][r]['corr_mean']:.3f} routed "
                     f"{row['routed'][r]['corr_mean']:.3f} linear "
                     f"{row['linear'][r]['corr_mean']:.3f}" for r in LABELS)


def _check_lrs(lrs: Sequence[float]) -> None:
    if not lrs or any(not (isinstance(x, int | float) and x > 0) for x in lrs):
        raise ValueError(f"lrs: got {list(lrs)!r}; allowed: a non-empty list of numbers > 0")


def _versus(rows: Sequence[Mapping[str, Any]], before: str, after: str) -> list[dict[str, Any]]:
    """Rows for :func:`egmlib.workflow.results.gain_row` that pair, seed by seed, each row's
    ``after`` test scores (as ``k = 1``) with its ``before`` ones (as ``k = 0``)."""
    return ([{"k": 0, "seed": r["seed"], "test": r[before]} for r in rows]
            + [{"k": 1, "seed": r["seed"], "test": r[after]} for r in rows])


def _choose_residual_lr(fit: Any, seeds: Sequence[int], lrs: Sequence[float],
                        config: residual.ResidualConfig
                        ) -> tuple[residual.ResidualConfig, dict[str, Any], dict]:
    """Fit ``fit(seed, config)`` for every learning rate of ``lrs`` on the first
    :data:`RESIDUAL_CHOICE_SEEDS` of ``seeds`` and keep the rate with the highest mean pooled
    validation correlation (the first on ties). Returns the chosen config, the record's
    ``lr_choice`` and the fits by ``(lr, seed)``. ``lrs``: checked by the caller
    (:func:`_check_lrs`) before it does any work."""
    choice_seeds = list(seeds[:RESIDUAL_CHOICE_SEEDS])
    tried = {(lr, seed): fit(seed, replace(config, lr=float(lr)))
             for lr in lrs for seed in choice_seeds}
    val = {f"{lr:g}": [tried[(lr, s)]["val_corr_chosen"] for s in choice_seeds] for lr in lrs}
    lr = max(lrs, key=lambda x: (float(np.mean(val[f"{x:g}"])), -list(lrs).index(x)))
    return (replace(config, lr=float(lr)),
            {"lrs": [float(x) for x in lrs], "seeds": choice_seeds, "val_corr": val,
             "chosen": float(lr)}, {(float(a), s): r for (a, s), r in tried.items() if a == lr})


#: Seeds of the residual study's arm with every training simulation (the first of
#: ``sweep_seeds``): each fit there sees about 15 times the pairs of the scarcest arm.
RESIDUAL_FULL_SEEDS = 3


def residual_full_study(ds: Dataset, values: Mapping[str, Any], run_dir: Any,
                        seeds: Sequence[int] | None = None,
                        lrs: Sequence[float] = RESIDUAL_LRS,
                        config: residual.ResidualConfig | None = None,
                        log: Any = None) -> dict[str, Any]:
    """The residual network with every real training simulation (``n_real_sims = 0``) and no
    augmentation (``--study residual_full``, record
    ``results/<profile>/recon_residual_full.json``): the setting where a reconstruction network
    should be competitive with Tikhonov on SR and better on AF. The learning rate is chosen on the
    validation pairs as in :func:`residual_study`; per seed, the linear correction, the network
    and the routed network on 05's test inputs, each paired with the linear correction
    (``residual_vs_linear``, ``routed_vs_linear``); Tikhonov (validation lambda) on the same
    inputs (``tikhonov_val``); the first seed refitted in float64 (``rounding``).
    ``seeds``: default the first :data:`RESIDUAL_FULL_SEEDS` of the profile's ``sweep_seeds``."""
    config = residual.ResidualConfig() if config is None else config
    sweep = _params.SweepConfig.from_values(dict(values))
    seeds = [int(x) for x in (sweep.sweep_seeds[:RESIDUAL_FULL_SEEDS] if seeds is None
                              else seeds)]
    if not seeds:
        raise ValueError("seeds: got none; allowed: a non-empty list of integers")
    _check_lrs(lrs)
    snr_db = float(_params.validate("05_augment", values)["snr_db"])
    base = cached_baselines(ds, snr_db, EVAL_NOISE_SEED, Path(run_dir) / "05_augment")

    def fit(seed: int, cfg: residual.ResidualConfig) -> dict[str, Any]:
        t0 = time.perf_counter()
        row = residual.run_residual(ds, seed, 0, snr_db, base, cfg)
        row.update(generator="none", seconds=time.perf_counter() - t0)
        if log is not None:
            print(f"residual network, every training simulation, lr {cfg.lr:g}, seed {seed}: "
                  f"best epoch {row['history']['best_epoch']} "
                  f"{row['history']['best_epoch_by_rhythm']}, "
                  + _scores_text(row),
                  file=log, flush=True)
        return row

    chosen, lr_choice, tried = _choose_residual_lr(fit, seeds, lrs, config)
    rows = [tried.get((chosen.lr, seed)) or fit(seed, chosen) for seed in seeds]
    rounding = residual.rounding_check(ds, rows[0], snr_db, base)
    return {"split": "val", "snr_db": snr_db, "n_real_sims": 0, "k": 0, "seeds": seeds,
            "lr_choice": lr_choice, "config": asdict(chosen), "rows": rows,
            "residual_vs_linear": {r: results.gain_row(_versus(rows, "linear", "test"), [1], r)
                                   for r in LABELS},
            "routed_vs_linear": {r: results.gain_row(_versus(rows, "linear", "routed"), [1], r)
                                 for r in LABELS},
            "rounding": rounding, "tikhonov_val": base["val"]}


#: The trained generators whose kept windows :func:`residual_vae_study` adds.
RESIDUAL_VAE_GENERATORS = ("vae_s", "vae_c")


def residual_vae_study(ds: Dataset, values: Mapping[str, Any], run_dir: Any, lr: float,
                       arm: int | None = None, k: int | None = None,
                       seeds: Sequence[int] | None = None,
                       generators: Sequence[str] = RESIDUAL_VAE_GENERATORS,
                       config: residual.ResidualConfig | None = None,
                       log: Any = None) -> dict[str, Any]:
    """The paper's question asked of the residual network (``--study residual_vae``, record
    ``results/<profile>/recon_residual_vae.json``): at the residual study's arm, ``k`` and seeds,
    the network fitted without augmentation and with the first ``k`` kept windows of each
    trained generator (:func:`egmlib.generators.synthesis.kept_for_augmentation`, as 05 takes
    them, paired as 05 pairs them), per seed. Gains over ``k = 0`` of the network
    (``gains``), of the routed network (``routed_gains``; Holm's correction within each) and of
    the linear correction refitted on the same pairs (``linear_gains``), with the sweep's
    statistics (:func:`egmlib.workflow.results.gain_row`).

    ``lr``: the learning rate :func:`residual_study` chose on the validation pairs (the CLI reads
    it from that study's record); nothing is chosen here, so the test split decides nothing.
    ``arm``, ``k``, ``seeds``: the residual study's defaults. The record names the generators'
    windows by digest (``generator_windows``, :func:`egmlib.workflow.records.input_fingerprint`),
    so it is tied to the generators that made them."""
    config = residual.ResidualConfig() if config is None else config
    sweep = _params.SweepConfig.from_values(dict(values))
    arm = int(arm if arm is not None else sorted(a for a in sweep.sweep_n_real_sims if a)[0])
    k = int(k if k is not None else max(sweep.range_k))
    seeds = [int(x) for x in (sweep.sweep_seeds[:RESIDUAL_SEEDS] if seeds is None else seeds)]
    if not seeds:
        raise ValueError("seeds: got none; allowed: a non-empty list of integers")
    _check_lrs([lr])
    if k < 1:
        raise ValueError(f"k: got {k}; allowed: an integer >= 1")
    unknown = sorted(set(generators) - set(RESIDUAL_VAE_GENERATORS))
    if not generators or unknown:
        raise ValueError(f"generators: got {list(generators)!r}; allowed: a non-empty subset of "
                         f"{list(RESIDUAL_VAE_GENERATORS)}")
    synth = {}
    for gen in generators:   # every generator's windows, before any fit
        kept = synthesis.kept_for_augmentation(run_dir, gen)
        if k > len(kept):
            raise ValueError(f"k: got {k}; allowed: at most {len(kept)}, the windows {gen} kept")
        synth[gen] = kept
    snr_db = float(_params.validate("05_augment", values)["snr_db"])
    base = cached_baselines(ds, snr_db, EVAL_NOISE_SEED, Path(run_dir) / "05_augment")
    chosen = replace(config, lr=float(lr))

    rows = [_residual_fit(ds, seed, arm, snr_db, base, chosen, gen, synth.get(gen), k, log)
            for seed in seeds for gen in ("none", *generators)]
    gains, linear_gains, routed_gains = _augmentation_gains(rows, generators, k)
    return {"split": "val", "snr_db": snr_db, "n_real_sims": arm, "k": k, "seeds": seeds,
            "generators": list(generators),
            "generator_windows": input_fingerprint(run_dir, list(generators)),
            "config": asdict(chosen), "rows": rows, "gains": gains,
            "linear_gains": linear_gains, "routed_gains": routed_gains,
            "tikhonov_val": base["val"]}


#: The residual-network families of :func:`residual_vae_study`'s record: the form of the network
#: (``pooled``: the network's test scores; ``routed``: each rhythm's best validation epoch; the
#: linear correction refitted on the same pairs) -> (record key of its gains, row key of its
#: scores).
RESIDUAL_FORMS: dict[str, tuple[str, str]] = {
    "pooled": ("gains", "test"), "routed": ("routed_gains", "routed"),
    "linear": ("linear_gains", "linear")}
#: The confirmatory test of :func:`residual_confirm_study`, fixed before any of its fits ran:
#: the one exploratory hint of ``recon_residual_vae.json`` (seeds 0-9; not pre-registered, not
#: significant after Holm's correction over its 4 comparisons): VAE-C's windows raise the
#: routed residual network's AF test correlation at the residual study's arm and ``k``.
CONFIRM_HYPOTHESIS = {"generator": "vae_c", "form": "routed", "rhythm": "AF"}
#: The confirmation's size: the fewest new seeds with :data:`CONFIRM_POWER` power (two-sided
#: paired t at :data:`CONFIRM_ALPHA`, the exploratory spread over seeds) to find
#: :data:`CONFIRM_FRACTION` of the exploratory gain: an effect picked as the largest of several
#: is biased upwards (the winner's curse), so the design plans for less than was seen.
CONFIRM_FRACTION = 0.75
CONFIRM_POWER = 0.8
CONFIRM_ALPHA = 0.05


def confirmation_design(exploratory: Mapping[str, Any],
                        hypothesis: Mapping[str, str] = CONFIRM_HYPOTHESIS,
                        fraction: float = CONFIRM_FRACTION, power: float = CONFIRM_POWER,
                        alpha: float = CONFIRM_ALPHA, n_max: int = 200) -> dict[str, Any]:
    """The design of a confirmatory replication of one row of a :func:`residual_vae_study`
    record (``exploratory``), from that record alone: the row's gain and spread over seeds,
    the effect planned for (``fraction`` of the gain), the fewest new seeds giving ``power`` to
    find it (:func:`egmlib.workflow.results.paired_t_power`), those seeds (the integers after
    the exploratory ones, so no seed is reused), the power at the whole and at half the
    exploratory gain, and the decision rule (:func:`egmlib.workflow.results.decide`)."""
    gen, form, rhythm = hypothesis["generator"], hypothesis["form"], hypothesis["rhythm"]
    if form not in RESIDUAL_FORMS:
        raise ValueError(f"form: got {form!r}; allowed: {', '.join(RESIDUAL_FORMS)}")
    if not 0 < fraction <= 1 or not 0 < power < 1 or not 0 < alpha < 1:
        raise ValueError(f"fraction, power, alpha: got {fraction}, {power}, {alpha}; allowed: "
                         "0 < fraction <= 1, 0 < power < 1, 0 < alpha < 1")
    family = exploratory[RESIDUAL_FORMS[form][0]]
    row = next((g for g in family if (g["generator"], g["rhythm"]) == (gen, rhythm)), None)
    if row is None:
        raise ValueError(f"hypothesis: no {form} row for {gen}, {rhythm} in the exploratory "
                         f"record; it has {[(g['generator'], g['rhythm']) for g in family]}")
    effect, sd = float(row["mean_gain"]), float(row["sd_seeds"])
    planned = fraction * effect
    n = next((n for n in range(2, n_max + 1)
              if results.paired_t_power(planned, sd, n, alpha) >= power), None)
    if n is None:
        raise ValueError(f"n_max: {n_max} seeds give less than {power:.0%} power for "
                         f"{planned:+.3f} at a spread of {sd:.3f}")
    first = max(int(x) for x in exploratory["seeds"]) + 1
    return {**dict(hypothesis), "n_real_sims": int(exploratory["n_real_sims"]),
            "k": int(exploratory["k"]),
            "exploratory": {"seeds": list(exploratory["seeds"]), "mean_gain": effect,
                            "sd_seeds": sd, "boot_lo": row["boot_lo"],
                            "boot_hi": row["boot_hi"], "p_t": row["p_t"],
                            "p_holm": row.get("p_holm"), "n_comparisons": len(family)},
            "fraction": fraction, "planned_effect": planned, "alpha": alpha,
            "power_target": power, "seeds": list(range(first, first + n)),
            "power": {"planned": results.paired_t_power(planned, sd, n, alpha),
                      "exploratory": results.paired_t_power(effect, sd, n, alpha),
                      "half": results.paired_t_power(effect / 2, sd, n, alpha)},
            "decision_rule": (f"a gain (or a loss) when the two-sided paired t-test over the "
                              f"new seeds gives p < {alpha} and the 95% two-level bootstrap "
                              "interval over seeds and test simulations excludes zero; the "
                              "exploratory seeds take no part")}


def residual_confirm_study(ds: Dataset, values: Mapping[str, Any], run_dir: Any,
                           exploratory: Mapping[str, Any],
                           config: residual.ResidualConfig | None = None,
                           log: Any = None) -> dict[str, Any]:
    """The confirmatory replication of the exploratory hint of ``exploratory`` (the
    :func:`residual_vae_study` record; ``--study residual_confirm``, record
    ``results/<profile>/recon_residual_confirm.json``): :func:`confirmation_design` fixes the
    hypothesis (:data:`CONFIRM_HYPOTHESIS`), the seeds and the rule from the exploratory
    record alone; the same generator's kept windows (checked by digest against the record's
    ``generator_windows``), arm, ``k`` and network settings (``config``: the record's unless
    given) are then fitted on the new seeds only, ``k = 0`` and the generator's per seed.

    ``primary``: the hypothesis's gain row with its decision
    (:func:`egmlib.workflow.results.decide`) and the power the design had at the measured
    spread; ``secondary``: every other form and rhythm of the same fits, Holm-corrected among
    themselves; ``combined``: the hypothesis's row over the exploratory and the new seeds
    together, a description (its first seeds chose the hypothesis), not a test."""
    design = confirmation_design(exploratory)
    gen, form, rhythm = design["generator"], design["form"], design["rhythm"]
    windows = input_fingerprint(run_dir, [gen])
    before = {k: v for k, v in exploratory["generator_windows"].items() if k in windows}
    if windows != before:
        raise ValueError(f"generator_windows: {gen}'s kept windows in {run_dir} differ from "
                         f"those of the exploratory record ({before} against {windows}); a "
                         "confirmation must read the same windows")
    if config is None:
        config = residual.ResidualConfig(**exploratory["config"])
    study = residual_vae_study(ds, values, run_dir, float(exploratory["config"]["lr"]),
                               arm=design["n_real_sims"], k=design["k"],
                               seeds=design["seeds"], generators=(gen,), config=config,
                               log=log)
    rows = []
    for name, (key, _) in RESIDUAL_FORMS.items():
        rows += [{"form": name, **{k: v for k, v in g.items() if k != "p_holm"}}
                 for g in study[key]]
    primary = next(r for r in rows if (r["form"], r["generator"], r["rhythm"])
                   == (form, gen, rhythm))
    primary = {**primary, "decision": results.decide(primary, design["alpha"]),
               "power_planned": results.paired_t_power(
                   design["planned_effect"], primary["sd_seeds"], primary["n_seeds"],
                   design["alpha"])}
    secondary = [r for r in rows
                 if (r["form"], r["generator"], r["rhythm"]) != (form, gen, rhythm)]
    for r, p in zip(secondary, results.holm([r["p_t"] for r in secondary])):
        r["p_holm"] = float(p)
    score_key = RESIDUAL_FORMS[form][1]
    both = [r for r in [*exploratory["rows"], *study["rows"]] if r["generator"] in ("none", gen)]
    combined = results.gain_row([{**r, "test": r[score_key]} for r in both], [design["k"]],
                                rhythm)
    return {**study, "design": design, "primary": primary, "secondary": secondary,
            "combined": {"seeds": sorted({int(r["seed"]) for r in both}), **(combined or {})}}


#: The ideal source :func:`residual_ideal_study` fits beside the confirmation's generator: real
#: windows of both rhythms, alternately, from training simulations the arm does not use, paired
#: through the transfer matrices as VAE-C's windows are (:data:`UNSEEN_SOURCES`).
IDEAL_SOURCE = "unseen_sr_af"


def residual_ideal_study(ds: Dataset, values: Mapping[str, Any], run_dir: Any,
                         confirmation: Mapping[str, Any],
                         config: residual.ResidualConfig | None = None,
                         log: Any = None) -> dict[str, Any]:
    """An exploratory follow-up of :func:`residual_confirm_study` (``--study residual_ideal``,
    record ``results/<profile>/recon_residual_ideal.json``; not pre-registered): does an ideal
    generator (:data:`IDEAL_SOURCE`) do what the confirmed generator's windows did? On the
    confirmation's seeds, arm, ``k`` and network (``config``: the record's unless given), each
    seed is fitted with ``k`` ideal windows; the ``k = 0`` and generator fits are the
    confirmation record's own. They can be reused only on the machine kind that made them, so
    the first seed's ``k = 0`` fit is made again here first and must give the record's test
    scores exactly (``reuse_check``), else nothing more runs.

    ``gains``: ideal windows against ``k = 0``, per form of the network (:data:`RESIDUAL_FORMS`)
    and rhythm; ``generator_vs_ideal``: the generator's fits against the ideal ones, paired by
    seed. Intervals and p-values as :func:`egmlib.workflow.results.gain_row` gives them, with no
    multiplicity correction: a description of where the confirmed gain comes from, not a
    test."""
    design = confirmation["design"]
    gen, arm, k, seeds = design["generator"], design["n_real_sims"], design["k"], design["seeds"]
    cfg = residual.ResidualConfig(**confirmation["config"]) if config is None else config
    windows = {seed: unseen_indices(ds, arm, seed, k, UNSEEN_SOURCES[IDEAL_SOURCE][0])
               for seed in seeds}  # every seed's, before any fit
    snr_db = float(confirmation["snr_db"])
    base = cached_baselines(ds, snr_db, EVAL_NOISE_SEED, Path(run_dir) / "05_augment")
    fits = {(r["generator"], r["seed"]): r for r in confirmation["rows"]}

    def fit(seed: int, name: str) -> dict[str, Any]:
        ideal = (None if name == "none" else np.asarray(ds.egm[windows[seed]], np.float32))
        return _residual_fit(ds, seed, arm, snr_db, base, cfg, name, ideal, k, log)

    again = fit(seeds[0], "none")
    recorded = fits[("none", seeds[0])]
    check = {form: {r: [recorded[key][r]["corr_mean"], again[key][r]["corr_mean"]]
                    for r in LABELS} for form, (_, key) in RESIDUAL_FORMS.items()}
    if any(a != b for form in check.values() for a, b in form.values()):
        raise ValueError(f"confirmation: seed {seeds[0]}'s k = 0 fit made again here differs "
                         f"from the record's ({check}); its fits can be reused only on the "
                         "machine kind that made them")
    rows = [fit(seed, IDEAL_SOURCE) for seed in seeds]
    gains, versus = [], []
    for form, (_, key) in RESIDUAL_FORMS.items():
        ideal = [{**r, "test": r[key]} for r in rows]
        k0 = [{**fits[("none", s)], "test": fits[("none", s)][key]} for s in seeds]
        mine = [{**fits[(gen, s)], "test": fits[(gen, s)][key]} for s in seeds]
        for rhythm in LABELS:
            g = results.gain_row(k0 + ideal, [k], rhythm)
            v = results.gain_row([{**r, "k": k} for r in mine] + [{**r, "k": 0} for r in ideal],
                                 [k], rhythm)
            gains.append({"form": form, "rhythm": rhythm, **(g or {})})
            versus.append({"form": form, "rhythm": rhythm, **(v or {})})
    return {"split": "val", "snr_db": snr_db, "n_real_sims": arm, "k": k, "seeds": seeds,
            "generator": gen, "source": {"name": IDEAL_SOURCE,
                                         "rhythms": list(UNSEEN_SOURCES[IDEAL_SOURCE][0]),
                                         "pairing": UNSEEN_SOURCES[IDEAL_SOURCE][1]},
            "config": asdict(cfg), "reuse_check": {"seed": seeds[0], "corr_mean": check},
            "rows": rows, "gains": gains, "generator_vs_ideal": versus}


#: The generation modes of the mode study (:func:`egmlib.generators.generate.generate`).
GEN_MODES = ("prior", "guided")
#: Windows each generator draws per rhythm and mode in the mode study.
MODE_STUDY_N = 200


def mode_study(ds: Dataset, run_dir: Any, n: int = MODE_STUDY_N, seed: int = 0,
               evaluator: Any = None, log: Any = None) -> dict[str, Any]:
    """The generation-mode study (``--study gen_mode``, record
    ``results/<profile>/generator_modes.json``): does drawing the latent codes from a Gaussian
    fitted to the training windows' encoder means (``"guided"``) give windows nearer the data
    than the prior (``"prior"``, the paper's)?

    Each trained generator of ``run_dir`` (notebooks 02 and 03) draws ``n`` windows per rhythm
    in each mode of :data:`GEN_MODES` (same seed), and each set is measured against the
    **validation** windows of its rhythm with :func:`egmlib.evaluation.fidelity.row`:
    nearest-pair morphology, the independent evaluation space (fitted on training windows only,
    :func:`egmlib.evaluation.evaluator.load_or_fit_evaluator`: Frechet distance, coverage, the
    share the real-trained classifier calls AF) and the dominant frequency; the training windows
    themselves (``"real (training)"``) are the reference row. The test split is never read.
    The rule, fixed before the study ran (:func:`choose_mode`): per generator, the mode with the
    lower Frechet distance averaged over its rhythms; the prior on a tie."""
    from egmlib.evaluation import fidelity
    from egmlib.evaluation.evaluator import load_or_fit_evaluator

    ev = load_or_fit_evaluator(ds, run_dir) if evaluator is None else evaluator
    fs = float(ds.manifest["fs"])
    val = {rhythm: np.asarray(ds.egm[ds.part("val", rhythm)]) for rhythm in LABELS}
    rows: list[dict[str, Any]] = []

    def add(name: str, mode: str, rhythm: str, x: np.ndarray, ref: np.ndarray) -> None:
        r = fidelity.row(x, ref, rhythm, fs, ev)
        r.pop("_df", None)
        rows.append({"generator": name, "mode": mode, "rhythm": rhythm, **r})
        if log is not None:
            print(f"{name:<16}{mode:<8}{rhythm:<4} Frechet {r['distribution']['frechet']:8.2f}"
                  f"  coverage {r['distribution']['coverage']:.2f}  DF median "
                  f"{r['spectral']['df_median_hz']:.2f} Hz  called AF "
                  f"{r['distribution']['called_af']:.2f}", file=log, flush=True)

    for kind, (_, rhythms) in synthesis.GENERATORS.items():
        model, norm = synthesis.load_generator(run_dir, kind)[:2]
        x_tr, y_tr = synthesis.training_windows(ds, kind, "train")
        latents = encode_means(model, norm, x_tr, y_tr)
        for rhythm in rhythms:
            label = None if kind == "vae_s" else LABELS.index(rhythm)
            for mode in GEN_MODES:
                kw = ({"train_latents": latents, "train_labels": y_tr} if mode == "guided"
                      else {})
                add(kind, mode, rhythm, generate(model, norm, n, label=label, seed=seed,
                                                 mode=mode, **kw), val[rhythm])
    for rhythm in LABELS:
        add("real (training)", "-", rhythm, np.asarray(ds.egm[ds.part("train", rhythm)]),
            val[rhythm])
    return {"split": "val", "n_per_set": n, "seed": seed, "rows": rows,
            "choice": choose_mode(rows)}


def choose_mode(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mode study's rule: per generator, the mode of :data:`GEN_MODES` with the lower
    Frechet distance (evaluation space, against validation windows) averaged over the
    generator's rhythms; the first mode (the prior) on a tie. ``{generator: {"mode",
    "frechet": {mode: mean}}}``."""
    out: dict[str, Any] = {}
    for gen in dict.fromkeys(r["generator"] for r in rows if r["mode"] in GEN_MODES):
        mean = {m: float(np.mean([r["distribution"]["frechet"] for r in rows
                                  if r["generator"] == gen and r["mode"] == m]))
                for m in GEN_MODES}
        best = min(GEN_MODES, key=lambda m: (mean[m], GEN_MODES.index(m)))
        out[gen] = {"mode": best, "frechet": mean}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m egmlib.workflow.studies --profile default``: run the choice study on the
    profile's data set and write its record."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default", choices=_params.PROFILES)
    ap.add_argument("--study", choices=("all", "generators", "recon", "budget", "precision",
                                        "recon_precision", "recon_speed", "gen_mode",
                                        "linear", "unseen", "residual", "residual_full",
                                        "residual_vae", "residual_confirm",
                                        "residual_ideal", "af_rate", "af_decoder",
                                        "af_latent"),
                    default="all",
                    help="which study: the generators', the reconstruction network's, both "
                         "(all), VAE-S's budget study, VAE-C's or the reconstruction network's "
                         "precision study, the reconstruction network's speed study, the "
                         "generation-mode study of the trained generators, the learned linear "
                         "correction of Tikhonov, that correction augmented with unseen real "
                         "windows, a residual network on it, with and without them, that "
                         "network with every training simulation, that network with the "
                         "trained generators' windows, the confirmation of that study's "
                         "exploratory hint on new seeds, ideal windows on those seeds, "
                         "VAE-C trained on windows re-cut at random offsets, VAE-C with a "
                         "resize-convolution decoder, and VAE-C with a latent sequence "
                         "(these fifteen are not part of all)")
    ap.add_argument("--only", choices=tuple(synthesis.GENERATORS), default=None,
                    help="run the rows of one generator only (the generators' studies and "
                         "residual_vae)")
    ap.add_argument("--run-dir", default=None,
                    help="run directory holding the data set (default: the profile's)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per row for every generator and the reconstruction network "
                         "(default: STUDY_EPOCHS, RECON_STUDY_EPOCHS; the budget study: each "
                         "row's own; the residual study: the most epochs of its network, "
                         "default ResidualConfig.max_epochs)")
    a = ap.parse_args(argv)
    if a.epochs is not None and a.epochs < 1:
        ap.error(f"--epochs: got {a.epochs}; allowed: an integer >= 1")
    values: dict[str, Any] = {"profile": a.profile}
    if a.profile != "default":
        values.update(_params.load_profile(repo_root() / "params" / f"{a.profile}.yaml"))
    if a.run_dir is not None:
        values["run_dir"] = a.run_dir
    base = _base("vae_s", values)
    setup_process(base["seed"])
    run = resolve_run_dir(base["profile"], base["run_dir"])
    ds = load_dataset(run)

    def write(name: str, study: dict[str, Any], **facts: str) -> None:
        """Stamp ``study`` with its provenance (and ``facts``), save it as record ``name``."""
        study["provenance"] = {**provenance(base), **facts}
        print(f"wrote {shown(save_record(name, study, base['profile'], run))}")

    if a.study in ("all", "generators"):
        rows = [r for r in CHOICES if a.only is None or r[0] == a.only]
        epochs = None if a.epochs is None else dict.fromkeys(synthesis.GENERATORS, a.epochs)
        study = choice_study(ds, values, rows, log=sys.stdout, epochs=epochs)
        write("generator_choices", study)
    if a.study == "budget":
        budget = budget_study(ds, values, log=sys.stdout, epochs=a.epochs)
        write("generator_budget", budget)
    if a.study == "precision":
        kinds = sorted({r[0] for r in PRECISION_ROWS})
        epochs = {k: a.epochs or _base(k, values)["epochs"] for k in kinds}
        study = choice_study(ds, values, PRECISION_ROWS, log=sys.stdout, epochs=epochs)
        write("generator_precision", study)
    if a.study in ("af_rate", "af_decoder", "af_latent"):
        epochs = {"vae_c": a.epochs or _base("vae_c", values)["epochs"]}
        rows = {"af_rate": AF_RATE_ROWS, "af_decoder": AF_DECODER_ROWS,
                "af_latent": AF_LATENT_ROWS}[a.study]
        study = choice_study(ds, values, rows, log=sys.stdout, epochs=epochs)
        study["choice"] = choose_af_rate(study["rows"])
        print(f"chosen: {study['choice']['chosen']}")
        write(f"generator_{a.study}", study)
    if a.study == "recon_speed":
        speed = recon_choice_study(ds, values, RECON_SPEED_ROWS,
                                   epochs=a.epochs or RECON_STUDY_EPOCHS, log=sys.stdout,
                                   choose=choose_speed)
        write("recon_speed", speed)
    if a.study == "recon_precision":
        recon = recon_choice_study(ds, values, RECON_PRECISION_ROWS,
                                   epochs=a.epochs or RECON_STUDY_EPOCHS, log=sys.stdout)
        write("recon_precision", recon)
    if a.study == "gen_mode":
        modes = mode_study(ds, run, n=MODE_STUDY_N, seed=int(base["seed"]), log=sys.stdout)
        write("generator_modes", modes)
    # the closed-form studies train no network: their records say any processor kind may read
    # them (egmlib.workflow.records.machine_differences checks their package versions only)
    closed_form = {"linear": ("recon_linear", linear_study),
                   "unseen": ("recon_linear_unseen", unseen_study)}
    if a.study in closed_form:
        name, run_study = closed_form[a.study]
        study = run_study(ds, values, run, log=sys.stdout)
        write(name, study, kind_independent=(
            "no network is trained: closed-form linear algebra on the data set, whose numbers "
            "agree across processors within float rounding"))
    if a.study in ("residual", "residual_full"):
        config = residual.ResidualConfig(**({} if a.epochs is None else {"max_epochs": a.epochs}))
        run_study, name, tolerance = (
            (residual_study, "recon_residual", RESIDUAL_ROUNDING_TOLERANCE)
            if a.study == "residual" else
            (residual_full_study, "recon_residual_full", RESIDUAL_FULL_ROUNDING_TOLERANCE))
        study = run_study(ds, values, run, config=config, log=sys.stdout)
        rounding = study["rounding"]
        facts = {}
        if residual.rounding_agrees(rounding, tolerance):
            facts["kind_independent"] = (
                "the network trains in float32, never in bfloat16; refitted in float64, its "
                "first k = 0 run keeps its best epochs (pooled and per rhythm) and moves its "
                f"test correlations by {rounding['max_abs_test_corr']:.1e} at most (record key "
                f"rounding; tolerance {tolerance:g}, half the last digit quoted); float64 "
                "changes the rounding of every operation, at least as much as a change of "
                "processor does")
        write(name, study, **facts)
    def earlier(record: str, study: str, needs: str) -> tuple[Path, dict[str, Any]]:
        """The record ``--study a.study`` builds on, or the CLI's error naming ``study``."""
        source = results_dir(base["profile"], run) / f"{record}.json"
        if not source.is_file():
            ap.error(f"--study {a.study} {needs} {shown(source)}; run --study {study} first")
        return source, load_json(source)

    def epochs_of(config: Mapping[str, Any]) -> residual.ResidualConfig | None:
        """A record's network settings with ``--epochs``; None (the record's own) without."""
        return (None if a.epochs is None else
                residual.ResidualConfig(**{**config, "max_epochs": a.epochs}))

    if a.study == "residual_vae":
        source, chosen = earlier("recon_residual", "residual",
                                 "reads the learning rate chosen on validation from")
        chosen_lr = chosen["lr_choice"]["chosen"]
        config = residual.ResidualConfig(**({} if a.epochs is None else {"max_epochs": a.epochs}))
        generators = (a.only,) if a.only else RESIDUAL_VAE_GENERATORS
        study = residual_vae_study(ds, values, run, chosen_lr, generators=generators,
                                   config=config, log=sys.stdout)
        study["lr_from"] = shown(source)
        write("recon_residual_vae", study)
    if a.study == "residual_confirm":
        source, exploratory = earlier("recon_residual_vae", "residual_vae",
                                      "replicates the exploratory record")
        config = epochs_of(exploratory["config"])
        design = confirmation_design(exploratory)
        print(f"confirmation of {design['generator']}, {design['form']}, {design['rhythm']} "
              f"(exploratory {design['exploratory']['mean_gain']:+.3f}): seeds "
              f"{design['seeds'][0]}-{design['seeds'][-1]}, power "
              f"{design['power']['planned']:.0%} for {design['planned_effect']:+.3f}")
        study = residual_confirm_study(ds, values, run, exploratory, config=config,
                                       log=sys.stdout)
        study["exploratory_from"] = shown(source)
        write("recon_residual_confirm", study)
    if a.study == "residual_ideal":
        source, confirmation = earlier("recon_residual_confirm", "residual_confirm",
                                       "reuses the fits of")
        config = epochs_of(confirmation["config"])
        study = residual_ideal_study(ds, values, run, confirmation, config=config,
                                     log=sys.stdout)
        study["confirmation_from"] = shown(source)
        write("recon_residual_ideal", study)
    if a.study in ("all", "recon"):
        recon = recon_choice_study(ds, values, epochs=a.epochs or RECON_STUDY_EPOCHS,
                                   log=sys.stdout)
        write("recon_choices", recon)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
