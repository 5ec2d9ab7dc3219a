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
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from egmlib.core import metrics
from egmlib.core import params as _params
from egmlib.core.process import setup_process
from egmlib.core.runs import provenance, repo_root, resolve_run_dir, save_record, shown
from egmlib.data import LABELS, Dataset, load_dataset
from egmlib.generators import synthesis
from egmlib.generators.generate import generate

__all__ = ["CHOICES", "STUDY_EPOCHS", "choice_row", "choice_study", "main"]

#: Epochs per row, per generator (equal budget inside a generator's rows).
STUDY_EPOCHS: dict[str, int] = {"vae_s": 12, "vae_c": 8}

#: The rows: (generator, label, changes against the defaults). Keys of ``changes``: parameters of
#: :class:`egmlib.core.params.GeneratorConfig`, or ``site_order``, ``init``, ``class_scales``.
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

_MODEL_KEYS = ("site_order", "init", "class_scales")
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
    from egmlib.evaluation.evaluator import collapse_report

    _check_changes(changes)
    p = {**base, **{k: v for k, v in changes.items() if k not in _MODEL_KEYS},
         "epochs": epochs or STUDY_EPOCHS[kind]}
    _params.GeneratorConfig.from_values(p)  # the changed settings are checked like any other
    order = changes.get("site_order", ds.manifest["params"].get("site_order", "fps"))
    columns = ds.site_permutation(order)
    t0 = time.perf_counter()
    model, norm, hist = synthesis.train_generator(
        ds, kind, p, None, show_progress=False, columns=columns,
        init=changes.get("init", "he"), class_scales=changes.get("class_scales", True))
    seconds = time.perf_counter() - t0
    geom_sites = ds.geometry()[1].electrodes[columns]
    row: dict[str, Any] = {
        "generator": kind, "label": label, "changes": dict(changes), "epochs": p["epochs"],
        "site_order": order, "column_step_mm": float(np.linalg.norm(
            np.diff(geom_sites, axis=0), axis=1).mean()),
        "best_epoch": hist["best_epoch"], "seconds": seconds,
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
    return row


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m egmlib.workflow.studies --profile default``: run the choice study on the
    profile's data set and write its record."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default", choices=_params.PROFILES)
    ap.add_argument("--only", choices=tuple(synthesis.GENERATORS), default=None,
                    help="run the rows of one generator only")
    ap.add_argument("--run-dir", default=None,
                    help="run directory holding the data set (default: the profile's)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per row for every generator (default: STUDY_EPOCHS)")
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
    rows = [r for r in CHOICES if a.only is None or r[0] == a.only]
    epochs = None if a.epochs is None else dict.fromkeys(synthesis.GENERATORS, a.epochs)
    study = choice_study(ds, values, rows, log=sys.stdout, epochs=epochs)
    study["provenance"] = provenance(base)
    path = save_record("generator_choices", study, base["profile"], run)
    print(f"wrote {shown(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
