"""The filter ablation: does choosing the generated windows nearest to the training data matter?

The paper generates 200 windows, keeps the 25 with the smallest RMSE to a training window and
augments with k of them, and asks as its open question 4 whether that filter matters. Notebook 05
takes the filter as one integer, ``filter_pool``
(:func:`egmlib.generators.synthesis.filtered`): the k best among the first ``pool`` windows the
generator drew, so ``pool = k`` keeps every window it draws (no filter), ``pool = 4k`` the best
quarter, and ``pool = 0`` the paper's filter (the best k of all ``n_generate``, 9% at k = 18 of
200).

The study runs notebook 05, like the sweep (:func:`egmlib.workflow.sweep.run_sweep`), over
``ablation_k x (ablation_filter_pools + [k]) x sweep_seeds`` for ``ablation_generator`` in the
arm of ``ablation_n_real_sims`` real training simulations per rhythm, plus the ``k = 0`` run of
each seed (every parameter lives in :class:`egmlib.core.params.SweepConfig`; the defaults were
fixed before it ran), into ``<run_dir>/filter_ablation/``: its own runs and its own family of
comparisons, apart from the sweep's. The comparisons (:func:`filter_table`), each per rhythm on
the test split, paired by seed, with the sweep's statistics
(:func:`egmlib.workflow.results.bootstrap_interval` over seeds and test simulations, paired
t-test) and Holm's correction over the whole family:

* every filter against ``k = 0``: the gain of augmentation with that filter;
* every filter against no filter, same k and seed: what the filter itself adds.

Notebook 07_filter reads the runs, draws the comparisons and writes the record
``results/<profile>/07_filter.json`` (committed for the default profile), as 06_sweep does for
the sweep.

CLI: ``python -m egmlib.workflow.ablation --profile default [--run-dir DIR] [--workers N]
[--scheduler ADDRESS] [--dry-run]``: the runs (finished ones are skipped; serial by default, or on
local worker processes or a Dask cluster, as in the sweep), then notebook 07_filter
(:func:`egmlib.workflow.sweep.aggregate_notebook`: in place for the default profile in its own
run directory, into ``<run_dir>/notebooks/`` otherwise).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from egmlib.core import params as _params
from egmlib.core.runs import COMMITTED_PROFILES, load_json, repo_root, resolve_run_dir, shown
from egmlib.generators import synthesis
from egmlib.workflow import results
from egmlib.workflow.pipeline import NotebookError
from egmlib.workflow.records import BASELINE_GENERATOR, input_fingerprint, note_other_machine
from egmlib.workflow.sweep import (
    SWEEP_NOTEBOOK,
    add_execution_options,
    aggregate_notebook,
    run_sweep,
)

__all__ = [
    "ABLATION_DIR",
    "NOTEBOOK",
    "ablation_points",
    "drawn_and_kept",
    "filter_reading",
    "filter_table",
    "format_filter_table",
    "format_sweep_check",
    "fraction_kept",
    "main",
    "pools_of",
    "same_as_sweep",
    "study_record",
    "sweep_check",
    "validation_by_pool",
]

#: Folder of the ablation's runs below the profile's run directory.
ABLATION_DIR = "filter_ablation"
#: The notebook that reads the runs and writes the record (``results/<profile>/07_filter.json``).
NOTEBOOK = "07_filter"

_RHYTHMS = ("SR", "AF")


def pools_of(k: int, pools: Iterable[int]) -> list[int]:
    """The filter pools run at ``k``: the configured ones (0 first, then ascending) and ``k``
    itself (no filter), each once.

    >>> pools_of(18, [72, 0])
    [0, 72, 18]
    """
    out = sorted({int(p) for p in pools} - {k}, key=lambda p: (p != 0, p))
    return [*out, k]


def fraction_kept(k: int, pool: int, n_generated: int) -> float:
    """The fraction of drawn windows the filter lets through: ``k / pool``, with pool 0 meaning
    all ``n_generated``.

    >>> fraction_kept(18, 0, 200), fraction_kept(18, 72, 200), fraction_kept(18, 18, 200)
    (0.09, 0.25, 1.0)
    """
    return k / (n_generated if pool == 0 else pool)


def ablation_points(config: _params.SweepConfig) -> list[dict[str, Any]]:
    """The ablation's runs of notebook 05: per seed, the ``k = 0`` run (generator ``"none"``,
    shared by every filter) and ``ablation_generator`` at every ``ablation_k`` with every pool of
    :func:`pools_of`, all in the arm of ``ablation_n_real_sims``."""
    arm = int(config.ablation_n_real_sims)
    out = []
    for seed in config.sweep_seeds:
        out.append({"generator": BASELINE_GENERATOR, "n_real_sims": arm, "filter_pool": 0,
                    "k": 0, "seed": int(seed)})
        for k in config.ablation_k:
            out += [{"generator": config.ablation_generator, "n_real_sims": arm,
                     "filter_pool": pool, "k": int(k), "seed": int(seed)}
                    for pool in pools_of(int(k), config.ablation_filter_pools)]
    return out


def _as_baseline(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "k": 0} for r in runs]


def filter_table(results_: list[Mapping[str, Any]], generator: str, n_real_sims: int,
                 ks: Sequence[int], pools: Sequence[int], metric: str = "corr",
                 n_boot: int = results.N_BOOT) -> list[dict[str, Any]]:
    """The ablation's comparisons, one row per (k, pool, reference, rhythm), Holm-adjusted over
    all rows (``p_holm``).

    ``reference`` ``"k = 0"``: the runs with filter ``pool`` against the same seed's ``k = 0``
    run. ``reference`` ``"no filter"`` (only for pools other than k): the same runs against the
    same seed's unfiltered run (``pool = k``). Rows carry the columns of the sweep's comparisons
    (mean gain, t interval over seeds, bootstrap interval over seeds and test simulations, t and
    Wilcoxon p).
    """
    base = [r for r in results_ if r["k"] == 0 and int(r.get("n_real_sims", 0)) == n_real_sims]
    rows: list[dict[str, Any]] = []
    for k in ks:
        own = {p: [r for r in results_ if r["generator"] == generator and r["k"] == k
                   and int(r.get("n_real_sims", 0)) == n_real_sims
                   and int(r.get("filter_pool", 0)) == p] for p in pools_of(k, pools)}
        for pool, runs in own.items():
            refs = [("k = 0", base)]
            if pool != k:
                refs.append(("no filter", _as_baseline(own[k])))
            for name, ref in refs:
                for rhythm in _RHYTHMS:
                    row = results.gain_row(list(ref) + runs, [k], rhythm, metric, n_boot)
                    if row is not None:
                        rows.append({"generator": generator, "n_real_sims": n_real_sims,
                                     "k": k, "filter_pool": pool, "reference": name,
                                     "rhythm": rhythm, **row})
    for row, p in zip(rows, results.holm([r["p_t"] for r in rows])):
        row["p_holm"] = float(p)
    return rows


def validation_by_pool(results_: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean validation correlation (``history.val_corr_best``) of each (k, pool) cell's runs:
    ``{"k=0": ..., "k=18 pool=0": ...}``."""
    cells: dict[str, list[float]] = {}
    for r in results_:
        v = r.get("history", {}).get("val_corr_best")
        if v is None:
            continue
        key = "k=0" if r["k"] == 0 else f"k={r['k']} pool={int(r.get('filter_pool', 0))}"
        cells.setdefault(key, []).append(float(v))
    return {key: float(np.mean(v)) for key, v in cells.items()}


def _pool_name(k: int, pool: int, n_generated: int | None) -> str:
    """A filter in words: ``"paper's: best 18 of 200 (9%)"``, ``"best 18 of 72 (25%)"``,
    ``"none (first 18 drawn)"``."""
    if pool == k:
        return f"none (first {k} drawn)"
    of = pool or n_generated
    share = f" ({100 * fraction_kept(k, pool, n_generated):.0f}%)" if of else ""
    return (f"paper's: best {k} of {of or 'all'}{share}" if pool == 0
            else f"best {k} of {pool}{share}")


def _gain_text(r: Mapping[str, Any], sep: str = ",") -> str:
    """One comparison in words: mean gain, bootstrap interval and Holm's p."""
    return (f"{r['mean_gain']:+.3f} ({r['boot_lo']:+.3f} to {r['boot_hi']:+.3f}{sep} "
            f"p_Holm {r['p_holm']:.2g})")


def filter_reading(rows: Sequence[Mapping[str, Any]], n_generated: int | None = None,
                   alpha: float = 0.05) -> list[str]:
    """Sentences that read :func:`filter_table`'s rows: per k and rhythm, the gain over k = 0
    of each filter, then what each filter adds over no filter, with intervals and Holm's p."""
    out = []
    for k in sorted({r["k"] for r in rows}):
        for rhythm in _RHYTHMS:
            sel = [r for r in rows if r["k"] == k and r["rhythm"] == rhythm]
            if not sel:
                continue
            gains = "; ".join(f"{_pool_name(k, r['filter_pool'], n_generated)} {_gain_text(r)}"
                              for r in sel if r["reference"] == "k = 0")
            out.append(f"{rhythm}, k = {k}, against k = 0: {gains}.")
            vs = [r for r in sel if r["reference"] == "no filter"]
            if vs:
                sig = [r for r in vs if r["p_holm"] < alpha]
                out.append(
                    f"{rhythm}, k = {k}, filter against no filter: " + "; ".join(
                        f"{_pool_name(k, r['filter_pool'], n_generated)} {_gain_text(r)}"
                        for r in vs)
                    + (f". {len(sig)} of {len(vs)} differ at {alpha:g} after Holm's correction."
                       if sig else f". None differs at {alpha:g} after Holm's correction."))
    return out


def format_filter_table(rows: Sequence[Mapping[str, Any]], n_generated: int | None = None
                        ) -> str:
    """:func:`filter_table` as a text table: one line per k, rhythm and filter, with its change
    against k = 0 and, for a filter, against no filter (mean, bootstrap interval, Holm's p)."""
    if not rows:
        return "no comparisons"

    def cell(r: Mapping[str, Any] | None) -> str:
        return _gain_text(r, ";") if r else "-"

    head = (f"{'k':>3}  {'rhythm':<7}{'filter (share kept)':<31}{'vs k = 0':<44}"
            f"{'vs no filter':<44}").rstrip()
    lines = [head, "-" * len(head)]
    for k in sorted({r["k"] for r in rows}):
        for rhythm in _RHYTHMS:
            for pool in dict.fromkeys(r["filter_pool"] for r in rows if r["k"] == k):
                hit = {r["reference"]: r for r in rows if (r["k"], r["rhythm"], r["filter_pool"])
                       == (k, rhythm, pool)}
                if hit:
                    lines.append(f"{k:>3}  {rhythm:<7}{_pool_name(k, pool, n_generated):<31}"
                                 f"{cell(hit.get('k = 0')):<44}{cell(hit.get('no filter'))}")
    return "\n".join(lines)


def drawn_and_kept(run_dir: Any, generator: str) -> tuple[int, int]:
    """How many windows per rhythm the generator drew and kept (its saved synthetic sets; the
    smallest over its rhythms)."""
    sets = [synthesis.load_synthetic(run_dir, generator, rhythm)
            for rhythm in synthesis.GENERATORS[generator][1]]
    return min(len(s["generated"]) for s in sets), min(len(s["kept"]) for s in sets)


def _run_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["generator"], int(row.get("n_real_sims") or 0), int(row.get("filter_pool") or 0),
            int(row["k"]), int(row["seed"]))


def same_as_sweep(runs: Iterable[Mapping[str, Any]], sweep_rows: Iterable[Mapping[str, Any]]
                  ) -> dict[str, Any]:
    """The ablation's runs that the sweep also made (same generator, arm, filter, k and seed)
    against the sweep's record of them (``runs`` of ``06_sweep.json``,
    :func:`egmlib.workflow.results.run_rows`): how many there are and the largest absolute
    difference of their test correlation over both rhythms (0 when the runs reproduce; None when
    none is shared)."""
    theirs = {_run_key(r): r["corr"] for r in sweep_rows}
    shared = [(row["corr"], theirs[_run_key(row)]) for row in results.run_rows(runs)
              if _run_key(row) in theirs]
    diffs = [abs(ours[rh] - other[rh]) for ours, other in shared for rh in ours if rh in other]
    return {"n_shared": len(shared), "max_abs_diff": max(diffs) if diffs else None}


def sweep_check(runs: Iterable[Mapping[str, Any]], sweep_record: Path
                ) -> dict[str, Any] | None:
    """:func:`same_as_sweep` against the sweep's record file (``06_sweep.json``); None when
    there is no such record."""
    if not Path(sweep_record).is_file():
        return None
    return same_as_sweep(runs, load_json(sweep_record)["runs"])


def format_sweep_check(check: Mapping[str, Any] | None, where: str) -> str:
    """:func:`sweep_check` in one line; ``where``: the record's path as shown to the reader."""
    if check is None:
        return f"no sweep record at {where} to compare with"
    diff = check["max_abs_diff"]
    return (f"{check['n_shared']} runs shared with {where}; largest difference of test "
            f"correlation: " + ("none shared" if diff is None else f"{diff:.2g}"))


def study_record(runs: list[Mapping[str, Any]], config: Any, n_generated: int,
                 rows: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The ablation's record (notebook 07_filter stores it): the design (``ablation_*`` of
    ``config``, a :class:`~egmlib.core.params.SweepConfig` or the notebook's parameters; the seeds
    run, the windows drawn and the share each filter keeps), every
    comparison (:func:`filter_table`; computed here unless given), the networks' mean
    validation correlation per cell, the reading and every run's test correlation."""
    ks, pools = list(config.ablation_k), list(config.ablation_filter_pools)
    if rows is None:
        rows = filter_table(runs, config.ablation_generator, config.ablation_n_real_sims, ks,
                            pools)
    return {
        "design": {"generator": config.ablation_generator,
                   "n_real_sims": config.ablation_n_real_sims, "ks": ks, "pools": pools,
                   "seeds": sorted({int(r["seed"]) for r in runs}), "n_generated": n_generated,
                   "fraction_kept": {f"k={k} pool={p}": fraction_kept(k, p, n_generated)
                                     for k in ks for p in pools_of(k, pools)}},
        "n_runs": len(runs),
        "rows": list(rows),
        "validation": validation_by_pool(runs),
        "reading": filter_reading(rows, n_generated),
        "runs": results.run_rows(runs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m egmlib.workflow.ablation --profile P [--run-dir DIR] [--workers N]
    [--scheduler ADDRESS] [--dry-run]``: run the filter ablation's runs of notebook 05 (serially,
    on local worker processes or on a Dask cluster, as the sweep does), then notebook 07_filter,
    which reads them and writes the record."""
    ap = argparse.ArgumentParser(prog="python -m egmlib.workflow.ablation",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default", choices=_params.PROFILES)
    ap.add_argument("--run-dir", default=None,
                    help="run directory holding the data set and the generators (default: the "
                         "profile's)")
    ap.add_argument("--dry-run", action="store_true", help="show the runs, run nothing")
    add_execution_options(ap)
    a = ap.parse_args(argv)
    root = repo_root()
    profile_yaml = root / "params" / f"{a.profile}.yaml"
    profile_file = profile_yaml if a.profile != "default" else None
    if profile_file is not None and not profile_file.is_file():
        print(f"error: profile file {shown(profile_file)} does not exist", file=sys.stderr)
        return 2
    try:
        values = _params.load_profile(profile_file) if profile_file else {}
        config = _params.SweepConfig.from_values(values)
    except _params.ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = resolve_run_dir(a.profile, a.run_dir or values.get("run_dir", ""))
    points = ablation_points(config)
    gen = config.ablation_generator
    try:  # every k and pool must be drawable before any run starts
        n_generated, n_kept = drawn_and_kept(run_dir, gen)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: the ablation needs {gen}'s synthetic windows in {shown(run_dir)} "
              f"(run its notebook first): {exc}", file=sys.stderr)
        return 2
    too_big = sorted({p["filter_pool"] for p in points} - set(range(n_generated + 1)))
    if too_big:
        print(f"error: ablation_filter_pools: got {too_big}; allowed: 0..{n_generated}, the "
              f"windows {gen} generated per rhythm", file=sys.stderr)
        return 2
    if max(config.ablation_k) > n_kept:
        print(f"error: ablation_k: got {list(config.ablation_k)}; allowed: 1..{n_kept}, the "
              f"windows {gen}'s filter kept per rhythm (n_keep)", file=sys.stderr)
        return 2
    folder = run_dir / ABLATION_DIR
    if a.dry_run:
        print(f"filter ablation into {shown(folder)}: {len(points)} runs")
        for p in points:
            print(f"  {p}")
        return 0
    if a.profile in COMMITTED_PROFILES:  # 07 will write over the committed record
        note_other_machine(root / "results" / a.profile)
    digests = {g: input_fingerprint(run_dir, [g]) for g in {p["generator"] for p in points}}
    report = run_sweep(root / "notebooks" / f"{SWEEP_NOTEBOOK}.ipynb", points, folder,
                       {"profile": a.profile, "run_dir": str(run_dir)}, profile_file,
                       workers=a.workers, scheduler_address=a.scheduler, timeout=a.timeout,
                       inputs=lambda p: digests[p["generator"]])
    print(report.summary())
    if not report.ok:
        return 1
    notebook = root / "notebooks" / f"{NOTEBOOK}.ipynb"
    try:
        output = aggregate_notebook(notebook, a.profile, run_dir, profile_file, a.timeout,
                                    own_run_dir=a.run_dir is not None)
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{NOTEBOOK} -> {shown(output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
