"""Aggregating the augmentation sweep (notebook 06_sweep).

Every run of notebook 05_augment writes a ``result.json`` holding at least::

    {"k": int, "seed": int, "generator": str,
     "network":  {"SR": {"corr_mean": ..., "rmse_mean": ..., ...}, "AF": {...}},
     "tikhonov": {"SR": {...}, "AF": {...}}}

This module collects them, summarises each metric against k per generator and rhythm with a
confidence interval over seeds (Student t, 95%), and compares every k with k = 0 seed by seed
(Wilcoxon signed-rank test, :func:`scipy.stats.wilcoxon`; paired because a seed fixes the network's
initialisation and the noise, so the pairs differ only by the synthetic windows).

The ``k = 0`` runs of generator ``"none"`` (:func:`egmlib.workflow.sweep.shared_baseline`: a run
without
synthetic windows does not depend on the generator) are every generator's ``k = 0`` runs; a
generator's own ``k = 0`` run of a seed, where there is one, takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from egmlib.core.checks import check_int
from egmlib.core.runs import load_json
from egmlib.data import LABELS as LABELS_ORDER
from egmlib.workflow.records import (
    BASELINE_GENERATOR,
    MARKER,
    PARAMS_FILE,
    input_fingerprint,
    inputs_match,
)

__all__ = [
    "N_BOOT",
    "PAPER",
    "PAPER_GAIN",
    "arms",
    "bootstrap_interval",
    "by_generator",
    "choose_scarce",
    "collapsed_runs",
    "collect",
    "compare_studies",
    "decide",
    "format_collapsed",
    "format_pivot",
    "format_primary",
    "format_range_test",
    "format_tests",
    "gain_row",
    "holm",
    "paired_t_power",
    "primary_test",
    "range_test",
    "run_rows",
    "runs_from_rows",
    "scarcity_table",
    "seeds_for_power",
    "select",
    "simulation_gains",
    "study_reading",
    "summarise",
    "sweep_cost",
    "validation_by_arm",
    "verdict",
]

#: The paper's numbers (arXiv 2512.14537), measured on its own (closed) data: the test
#: correlation of the reconstructed SR EGMs without and with VAE-S augmentation, the k range of
#: the gains and the k range where they plateau or slightly degrade (inclusive bounds).
PAPER = {"corr_without": 0.160, "corr_with_vae_s": 0.214, "rhythm": "SR", "best_k": (14, 18),
         "plateau_k": (20, 25)}
#: The paper's gain in SR test correlation from VAE-S augmentation (0.214 - 0.160): the effect
#: size the study is powered to find.
PAPER_GAIN = round(PAPER["corr_with_vae_s"] - PAPER["corr_without"], 3)
#: Bootstrap replicates of every two-level interval of the studies (:func:`bootstrap_interval`):
#: one value, so that the same runs get the same interval in every record (06's secondary rows
#: used 2000 in records made before 2026-12-07).
N_BOOT = 4000


def collect(folders: Iterable[str | Path], marker: str | None = None,
            run_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every ``result.json`` below the given folders (recursively), each once, sorted by
    (generator, k, seed). Files without the keys above are skipped. With ``marker`` (the sweep's
    ``"DONE"``), a result counts only when its folder holds that file: a run that wrote its
    result and then failed, or was stopped, is not a finished run. With ``run_dir``, a result
    counts only when the input digests its ``params.json`` records still match the inputs in
    ``run_dir`` (:func:`egmlib.workflow.records.input_fingerprint`: the data set and the run's
    generator):
    a run made with a generator since retrained is stale until the sweep redoes it."""
    seen, out = set(), []
    current: dict[str, dict[str, str]] = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("result.json")):
            rp = path.resolve()
            if rp in seen or (marker is not None and not (path.parent / marker).is_file()):
                continue
            seen.add(rp)
            r = load_json(path)
            if not all(key in r for key in ("k", "seed", "generator", "network")):
                continue
            if run_dir is not None:
                gen = r["generator"]
                if gen not in current:
                    current[gen] = input_fingerprint(run_dir, [gen])
                try:
                    recorded = load_json(path.parent / PARAMS_FILE).get("inputs")
                except (OSError, ValueError, AttributeError):
                    recorded = None
                if not inputs_match(recorded, current[gen]):
                    continue
            r["path"] = str(path)
            out.append(r)
    return sorted(out, key=lambda r: (r["generator"], r["k"], r["seed"]))


def by_generator(results: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The runs of each generator, its ``k = 0`` runs completed by the shared ``"none"`` ones
    (for the seeds it has no ``k = 0`` run of its own). ``"none"`` appears as a generator only
    when there is no other."""
    shared = [r for r in results if r["generator"] == BASELINE_GENERATOR and r["k"] == 0]
    gens = sorted({r["generator"] for r in results} - {BASELINE_GENERATOR})
    if not gens:
        return {BASELINE_GENERATOR: list(results)} if results else {}
    out = {}
    for gen in gens:
        own = [r for r in results if r["generator"] == gen]
        seeds = {r["seed"] for r in own if r["k"] == 0}
        out[gen] = own + [r for r in shared if r["seed"] not in seeds]
    return out


def _t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    if len(x) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def summarise(results: list[Mapping[str, Any]], metric: str = "corr_mean",
              source: str = "network") -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per generator and rhythm, one row per k: mean over seeds, 95% t interval, n seeds."""
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for gen, rows in by_generator(results).items():
        for rhythm in sorted({rh for r in rows for rh in r[source]}):
            table = []
            for k in sorted({r["k"] for r in rows}):
                x = np.array([r[source][rhythm][metric] for r in rows
                              if r["k"] == k and rhythm in r[source]], float)
                lo, hi = _t_interval(x)
                table.append({"k": k, "mean": float(x.mean()), "lo": lo, "hi": hi,
                              "n": len(x)})
            out.setdefault(gen, {})[rhythm] = table
    return out


def _gains_by_seed(runs: list[Mapping[str, Any]], ks: Iterable[int], metric: str
                   ) -> dict[str, dict[int, float]]:
    """Per rhythm, per seed that has k = 0 and every k in ``ks``: the mean over ``ks`` of the
    seed's ``metric`` minus its k = 0 value."""
    ks = list(ks)
    base = {r["seed"]: r for r in runs if r["k"] == 0}
    by_k = [{r["seed"]: r for r in runs if r["k"] == k} for k in ks]
    seeds = sorted(set(base).intersection(*by_k))
    if not seeds:
        return {}
    return {rhythm: {s: float(np.mean([cur[s]["network"][rhythm][metric] for cur in by_k])
                              - base[s]["network"][rhythm][metric]) for s in seeds}
            for rhythm in sorted(base[seeds[0]]["network"])}


def _paired_gains(runs: list[Mapping[str, Any]], ks: Iterable[int], metric: str
                  ) -> dict[str, np.ndarray]:
    """Per rhythm, one number per seed that has k = 0 and every k in ``ks``: the mean over
    ``ks`` of the seed's ``metric`` minus its k = 0 value (seeds in increasing order)."""
    return {rhythm: np.array(list(by_seed.values()))
            for rhythm, by_seed in _gains_by_seed(runs, ks, metric).items()}


def _wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (exact for small samples without ties or zeros);
    nan with fewer than 2 pairs or all differences zero."""
    return float(stats.wilcoxon(d).pvalue) if len(d) >= 2 and np.any(d != 0) else float("nan")


def paired_tests(results: list[Mapping[str, Any]], metric: str = "corr_mean"
                 ) -> list[dict[str, Any]]:
    """For each generator, rhythm and k > 0: the mean paired difference to k = 0 over the seeds
    both have, its 95% t interval (``lo``, ``hi``; nan with one pair) and the two-sided Wilcoxon
    signed-rank p-value (nan with fewer than 2 pairs or all differences zero)."""
    rows = []
    for gen, runs in by_generator(results).items():
        for k in sorted({r["k"] for r in runs if r["k"] > 0}):
            for rhythm, d in _paired_gains(runs, (k,), metric).items():
                lo, hi = _t_interval(d)
                rows.append({"generator": gen, "rhythm": rhythm, "k": k, "n_pairs": len(d),
                             "mean_diff": float(d.mean()), "lo": lo, "hi": hi,
                             "p_value": _wilcoxon_p(d)})
    return rows


def seeds_for_power(gains: ArrayLike, alpha: float = 0.05, power: float = 0.8,
                    n_max: int = 1000) -> int | None:
    """The smallest number of seeds at which a two-sided paired t-test at ``alpha`` would have
    ``power`` if the true per-seed gain had the mean and standard deviation of ``gains``
    (noncentral t distribution; for effect size 0.5 it gives 34, for 0.8 15, as the standard
    tables do). A planning figure for a follow-up sweep, not evidence about the gain: the
    measured effect is itself uncertain. None when the gains have no spread or no mean, or the
    answer exceeds ``n_max``."""
    d = np.asarray(gains, float)
    if len(d) < 2 or d.std(ddof=1) == 0 or d.mean() == 0:
        return None
    effect = abs(d.mean()) / d.std(ddof=1)
    for n in range(2, n_max + 1):
        t_crit = stats.t.ppf(1 - alpha / 2, n - 1)
        shift = effect * np.sqrt(n)
        reached = stats.nct.sf(t_crit, n - 1, shift) + stats.nct.cdf(-t_crit, n - 1, shift)
        if reached >= power:
            return n
    return None


def range_test(results: list[Mapping[str, Any]], ks: Iterable[int],
               metric: str = "corr_mean") -> list[dict[str, Any]]:
    """One test of a range of k fixed before looking at the sweep (the paper's k = 14-18):
    per generator and rhythm, each seed's gain averaged over ``ks`` against its k = 0 run, and
    the two-sided Wilcoxon signed-rank p-value of those per-seed gains.

    A single pre-specified comparison needs no correction for the many k of the sweep, unlike
    picking the best k afterwards (:func:`verdict`); averaging over neighbouring k also
    averages out some of each run's training noise. Only seeds with k = 0 and every k in
    ``ks`` count; a generator without them has no row. ``seeds_for_power``: the seeds a
    follow-up would need to detect a gain of the measured size (:func:`seeds_for_power`)."""
    ks = sorted({check_int("ks", k, 1) for k in ks})
    if not ks:
        raise ValueError("ks: got none; allowed: one or more k >= 1")
    rows = []
    for gen, runs in by_generator(results).items():
        for rhythm, d in _paired_gains(runs, ks, metric).items():
            rows.append({"generator": gen, "rhythm": rhythm, "ks": ks, "metric": metric,
                         "n_pairs": len(d), "mean_diff": float(d.mean()),
                         "p_value": _wilcoxon_p(d), "seeds_for_power": seeds_for_power(d)})
    return rows


def format_range_test(rows: list[Mapping[str, Any]], alpha: float = 0.05) -> str:
    """The range test as sentences, one per generator and rhythm."""
    if not rows:
        return "no seed has k = 0 and every k of the range: nothing to test"
    lines = []
    for r in rows:
        sig = r["p_value"] < alpha
        lines.append(
            f"{r['generator']}, {r['rhythm']}: k = {', '.join(map(str, r['ks']))} together "
            f"change {r['metric']} by {r['mean_diff']:+.3f} against k = 0 (Wilcoxon p = "
            f"{r['p_value']:.3f}, {r['n_pairs']} seeds): "
            + (("significantly higher." if r["mean_diff"] > 0 else "significantly lower.")
               if sig else "no significant change.")
            + _power_note(r["n_pairs"], alpha)
            + (f" A change of this size, with this spread over seeds, would need about "
               f"{r['seeds_for_power']} seeds to be found 80% of the time (paired t-test)."
               if not sig and r.get("seeds_for_power") else ""))
    return "\n".join(lines)


def collapsed_runs(results_: list[Mapping[str, Any]], rhythm: str = "AF",
                   metric: str = "corr_mean", below: float = 0.05) -> dict[str, Any]:
    """Runs whose network scored ``metric < below`` on ``rhythm``: a reconstruction that has
    not learnt that rhythm at all (for the correlation, an output unrelated to the true EGMs),
    as opposed to one a little worse than its neighbours. Such runs make a mean over seeds
    bimodal, so a mean change against k = 0 says little without them being counted.

    Returns ``runs`` (one row per such run: generator, k, seed, ``n_real_sims`` (0: all), the
    value, and from the run's
    training history ``best_epoch``, 0-based, and ``epochs_run``), ``n_by_generator``
    (generator -> [such runs, runs]) and ``best_epoch`` (``"collapsed"`` / ``"others"``: the
    best epochs of both groups, to see whether early stopping picked the collapsed networks
    before they had learnt the rhythm). Runs without that rhythm or metric are skipped."""
    rows, counts = [], {}
    epochs: dict[str, list[int]] = {"collapsed": [], "others": []}
    for r in results_:
        value = r.get("network", {}).get(rhythm, {}).get(metric)
        if value is None:
            continue
        hist = r.get("history") or {}
        hit = value < below
        n = counts.setdefault(r["generator"], [0, 0])
        n[0] += hit
        n[1] += 1
        if hist.get("best_epoch") is not None:
            epochs["collapsed" if hit else "others"].append(int(hist["best_epoch"]))
        if hit:
            rows.append({"generator": r["generator"], "k": int(r["k"]), "seed": int(r["seed"]),
                         "n_real_sims": int(r.get("n_real_sims", 0)), "value": float(value),
                         "best_epoch": hist.get("best_epoch"),
                         "epochs_run": hist.get("epochs_run")})
    return {"rhythm": rhythm, "metric": metric, "below": below, "runs": rows,
            "n_by_generator": counts, "best_epoch": epochs}


def format_collapsed(summary: Mapping[str, Any]) -> str:
    """:func:`collapsed_runs` as sentences: how many runs per generator, at which k and real
    training simulations per rhythm, and the
    best epochs (counted from 1) of those runs against the others'."""
    rh, metric, below = summary["rhythm"], summary["metric"], summary["below"]
    lines = []
    for gen, (hit, total) in sorted(summary["n_by_generator"].items()):
        mine = [r for r in summary["runs"] if r["generator"] == gen]
        ks = sorted({r["k"] for r in mine})
        arms = sorted({r.get("n_real_sims", 0) for r in mine}, key=lambda a: (a == 0, a))
        where = (f" (k = {', '.join(map(str, ks))}; real simulations per rhythm: "
                 f"{', '.join(str(a) if a else 'all' for a in arms)})" if ks else "")
        lines.append(f"{gen}: {hit} of {total} runs with {rh} {metric} < {below}{where}")
    ep = {g: np.asarray(v) + 1 for g, v in summary["best_epoch"].items()}
    if ep["collapsed"].size and ep["others"].size:
        lines.append(f"best epoch (early stopping's pick, counted from 1) of these runs "
                     f"{ep['collapsed'].min()}-{ep['collapsed'].max()}; of the others "
                     f"{ep['others'].min()}-{ep['others'].max()}, median "
                     f"{np.median(ep['others']):g}")
    return "\n".join(lines) if lines else f"no run has {rh} {metric}"


def format_tests(rows: list[Mapping[str, Any]]) -> str:
    """The paired comparisons as a text table."""
    lines = [f"{'generator':<10}{'rhythm':<7}{'k':>4}{'pairs':>7}{'mean diff':>11}{'p':>8}"]
    for r in rows:
        lines.append(f"{r['generator']:<10}{r['rhythm']:<7}{r['k']:>4}{r['n_pairs']:>7}"
                     f"{r['mean_diff']:>+11.3f}{r['p_value']:>8.3f}")
    return "\n".join(lines)


def _smallest_p(n_pairs: int) -> float:
    """The smallest p-value of the exact two-sided Wilcoxon signed-rank test with ``n_pairs``
    pairs: ``2 / 2**n``, reached when every difference has the same sign."""
    return 2.0 / 2.0 ** n_pairs


def _power_note(n_pairs: int, alpha: float) -> str:
    """A note when ``n_pairs`` seeds cannot reach ``alpha`` (:func:`_smallest_p`)."""
    p_min = _smallest_p(n_pairs)
    if p_min < alpha:
        return ""
    return (f" With {n_pairs} seeds the smallest attainable p is {p_min:.3f}, so no gain could "
            f"reach p < {alpha:g}: more seeds are needed.")


def _multiplicity_note(n_tests: int, n_pairs: int, alpha: float) -> str:
    """For a gain significant at ``alpha`` among ``n_tests`` values of k: the Bonferroni-Holm
    threshold of the smallest p (``alpha / n_tests``), and whether ``n_pairs`` seeds can reach it
    (:func:`_smallest_p`)."""
    if n_tests < 2:
        return ""
    threshold, p_min = alpha / n_tests, _smallest_p(n_pairs)
    reach = ("" if p_min < threshold else
             f", below the smallest p that {n_pairs} seeds allow ({p_min:.3f})")
    return (f" Uncorrected for the {n_tests} values of k tested: Bonferroni-Holm would need "
            f"p < {threshold:.4f}{reach}, so read it as a hint, not a finding.")


def verdict(results_: list[Mapping[str, Any]], metric: str = "corr_mean",
            alpha: float = 0.05) -> str:
    """One honest sentence per generator and rhythm: the best k by mean, its paired gain over
    k = 0 and whether it is significant at ``alpha`` (no correction for the many k tested).

    Only the k values with the most seeds of that generator compete for "best": in an unfinished
    sweep, a k with one or two seeds would otherwise win on noise; the sentence names the k
    values left out."""
    tests = paired_tests(results_, metric)
    lines = []
    for gen in sorted({r["generator"] for r in tests}):
        for rhythm in sorted({r["rhythm"] for r in tests if r["generator"] == gen}):
            rows = [r for r in tests if r["generator"] == gen and r["rhythm"] == rhythm]
            most = max(r["n_pairs"] for r in rows)
            best = max((r for r in rows if r["n_pairs"] == most), key=lambda r: r["mean_diff"])
            fewer = [r["k"] for r in rows if r["n_pairs"] < most]
            sig = best["p_value"] < alpha
            lines.append(
                f"{gen}, {rhythm}: best k = {best['k']} changes {metric} by "
                f"{best['mean_diff']:+.3f} against k = 0 (Wilcoxon p = {best['p_value']:.3f}, "
                f"{best['n_pairs']} seeds): "
                + ("a significant gain." if sig and best["mean_diff"] > 0 else
                   "no significant gain from augmentation.")
                + _power_note(best["n_pairs"], alpha)
                + (_multiplicity_note(len([r for r in rows if r["n_pairs"] == most]),
                                      best["n_pairs"], alpha) if sig else "")
                + (f" Not compared, fewer than {most} seeds so far: k = "
                   f"{', '.join(map(str, fewer))}." if fewer else ""))
    return "\n".join(lines) if lines else "no k > 0 runs with matching k = 0 runs"


def sweep_cost(sweep_dir: str | Path, bench_json: str | Path | None = None) -> dict[str, Any]:
    """What the sweep in ``sweep_dir`` cost: the number of finished runs, their summed and mean
    wall times (each run's ``DONE`` marker), the wall time and mode of the last invocation
    (``sweep.json``, which counts only the runs it did not skip), and -- when ``bench_json``
    (``make bench``'s output) holds a ``sweep`` section -- the speed-up of parallel workers over
    serial runs measured there on the same small grid. Summed run times over elapsed time is not
    a speed-up: runs sharing the cores each take longer than alone."""
    sweep_dir = Path(sweep_dir)
    walls = []
    for marker in sorted(sweep_dir.glob(f"*/{MARKER}")):
        try:
            walls.append(float(load_json(marker)["wall_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    out: dict[str, Any] = {"n_runs": len(walls), "run_s_total": float(np.sum(walls)),
                           "run_s_mean": float(np.mean(walls)) if walls else None,
                           "last_elapsed_s": None, "last_mode": None, "last_n_run": None,
                           "bench_speedup": None, "bench_rows": []}
    if (sweep_dir / "sweep.json").is_file():
        report = load_json(sweep_dir / "sweep.json")
        out["last_elapsed_s"] = report.get("elapsed_s")
        out["last_mode"] = report.get("mode")
        out["last_n_run"] = sum(1 for r in report.get("runs", []) if r.get("status") != "skipped")
    if bench_json is not None and Path(bench_json).is_file():
        rows = [r for r in load_json(bench_json).get("rows", []) if r.get("section") == "sweep"
                and not r.get("skipped")]
        out["bench_rows"] = rows
        parallel = [r for r in rows if r.get("workers", 1) > 1]
        if parallel:  # serial time / parallel time: below 1 when parallel is slower
            out["bench_speedup"] = float(parallel[-1]["ratio"])
    return out


# --------------------------------------------------------------------------------------------
# The study's arms: data scarcity (n_real_sims) and the filter (filter_pool)
# --------------------------------------------------------------------------------------------

def _scarcest_first(n_real_sims: int) -> tuple[bool, int]:
    """Sort key of arms: fewest real simulations first, 0 (all of them) last."""
    return n_real_sims == 0, n_real_sims


#: The grid point of a run, as :func:`run_rows` keeps it.
_POINT_KEYS = ("generator", "n_real_sims", "filter_pool", "k", "seed")


def run_rows(results_: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The study record's list of runs: every run's grid point (generator, n_real_sims,
    filter_pool, k, seed), its network's test correlation per rhythm (``corr``), its best
    validation correlation (``val_corr_best``, what :func:`choose_scarce` reads) and its
    per-simulation test scores (``per_simulation``, as
    :func:`egmlib.augmentation.augment.per_simulation` gives them: what the paired tests read).
    With these the record alone remakes the study's tests (:func:`runs_from_rows`), without
    the run folders."""
    rows = []
    for r in results_:
        row = {key: r.get(key) for key in _POINT_KEYS}
        row["corr"] = {rh: v["corr_mean"] for rh, v in r["network"].items() if rh != "all"}
        row["val_corr_best"] = r.get("history", {}).get("val_corr_best")
        ps = r.get("test", {}).get("per_simulation")
        if ps is not None:
            row["per_simulation"] = {key: list(v) for key, v in ps.items()}
        rows.append(row)
    return rows


def runs_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runs of a study record's :func:`run_rows`, in the shape :func:`collect` reads them, as
    far as the study's tests need (grid point, ``network`` correlation per rhythm,
    ``history.val_corr_best``, ``test.per_simulation``): :func:`primary_test`,
    :func:`scarcity_table` and :func:`validation_by_arm` on them give the record's numbers,
    so a committed record can be re-analysed on a fresh clone."""
    out = []
    for row in rows:
        run: dict[str, Any] = {key: row.get(key) for key in _POINT_KEYS}
        run["network"] = {rh: {"corr_mean": v} for rh, v in row["corr"].items()}
        run["history"] = {"val_corr_best": row.get("val_corr_best")}
        run["test"] = ({"per_simulation": row["per_simulation"]} if "per_simulation" in row
                       else {})
        out.append(run)
    return out


def select(results_: Iterable[Mapping[str, Any]], n_real_sims: int = 0, filter_pool: int = 0
           ) -> list[Mapping[str, Any]]:
    """The runs of one arm of the study: those trained on ``n_real_sims`` real simulations per
    rhythm (0: all) whose synthetic windows came through the filter with ``filter_pool`` (0: the
    paper's), plus the ``k = 0`` runs of that ``n_real_sims`` (which add no synthetic window, so
    they are every filter's baseline). Runs written before these parameters existed (absent, or
    ``None`` from :func:`runs_from_rows` of an older record) count as ``0`` and ``0``."""
    return [r for r in results_ if int(r.get("n_real_sims") or 0) == n_real_sims
            and (r["k"] == 0 or int(r.get("filter_pool") or 0) == filter_pool)]


def arms(results_: Iterable[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """The ``(n_real_sims, filter_pool)`` arms present among runs with ``k > 0``, scarcest
    first (0, all the data, last)."""
    found = {(int(r.get("n_real_sims", 0)), int(r.get("filter_pool", 0)))
             for r in results_ if r["k"] > 0}
    return sorted(found, key=lambda a: (*_scarcest_first(a[0]), a[1]))


def holm(p_values: ArrayLike) -> NDArray[np.float64]:
    """Holm's step-down adjusted p-values (family-wise error control): the i-th smallest of m
    p-values becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; NaNs stay NaN and do not count
    in m. Holm, Scand. J. Statist. 6:65-70 (1979).

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def simulation_gains(runs: list[Mapping[str, Any]], ks: Iterable[int], rhythm: str,
                     metric: str = "corr") -> tuple[list[int], list[int], NDArray[np.float64]]:
    """The gain of each seed on each test simulation: ``(seeds, sim_ids, gains)`` with
    ``gains[i, j]`` the mean over ``ks`` of seed i's per-simulation ``metric``
    (``per_simulation`` of :func:`egmlib.augmentation.augment.evaluate`) on test simulation j of
    ``rhythm``, minus its ``k = 0`` run's. ``runs``: one arm and generator (:func:`select`,
    :func:`by_generator`); seeds without ``k = 0`` and every k of ``ks``, or without per-simulation
    scores, are left out."""
    ks = list(ks)
    base = {r["seed"]: r for r in runs if r["k"] == 0}
    by_k = [{r["seed"]: r for r in runs if r["k"] == k} for k in ks]
    seeds = sorted(s for s in set(base).intersection(*by_k)
                   if all("per_simulation" in run[s]["test"] for run in (base, *by_k)))
    if not seeds:
        return [], [], np.zeros((0, 0))

    def per_sim(r: Mapping[str, Any]) -> dict[int, float]:
        ps = r["test"]["per_simulation"]
        return {int(i): float(v) for i, v, rh in zip(ps["sim_id"], ps[metric], ps["rhythm"])
                if rh == rhythm}

    sims = sorted(per_sim(base[seeds[0]]))
    if not sims:
        return [], [], np.zeros((0, 0))
    rows = []
    for s in seeds:
        b = per_sim(base[s])
        cur = [per_sim(run[s]) for run in by_k]
        if sorted(b) != sims or any(sorted(c) != sims for c in cur):
            raise ValueError(f"seed {s}: the runs were scored on different test simulations")
        rows.append([np.mean([c[j] for c in cur]) - b[j] for j in sims])
    return seeds, sims, np.asarray(rows, float)


def bootstrap_interval(gains: ArrayLike, n_boot: int = N_BOOT, level: float = 0.95,
                       seed: int = 0) -> dict[str, float]:
    """Percentile interval of the mean of a seeds x test-simulations matrix of gains under a
    two-level (crossed) bootstrap: each replicate draws the seeds (rows) and, independently, the
    test simulations (columns) with replacement, so the interval holds both the training noise
    of a run and the sampling of the test set (every seed is scored on the same simulations,
    which a bootstrap over seeds alone would treat as fixed). Windows of one simulation overlap
    and are not resampled separately. A matrix with one seed or one simulation resamples the
    other axis only.

    Returns ``{"mean", "lo", "hi", "se"}`` (``se``: the replicates' standard deviation).
    """
    g = np.asarray(gains, float)
    if g.ndim != 2 or g.size == 0 or not np.all(np.isfinite(g)):
        raise ValueError(f"gains: expected a finite (seeds, simulations) matrix; got shape "
                         f"{g.shape}")
    check_int("n_boot", n_boot, 1)
    if not 0 < level < 1:
        raise ValueError(f"level: got {level!r}; allowed: 0 < level < 1")
    rng = np.random.default_rng(seed)
    n_s, n_j = g.shape
    rows = rng.integers(0, n_s, (n_boot, n_s))
    cols = rng.integers(0, n_j, (n_boot, n_j))
    # mean of g[rows][:, cols] = (row weights) . g . (column weights) / (n_s n_j)
    w_r = np.stack([np.bincount(r, minlength=n_s) for r in rows])
    w_c = np.stack([np.bincount(c, minlength=n_j) for c in cols])
    reps = np.einsum("bi,ij,bj->b", w_r, g, w_c) / (n_s * n_j)
    tail = (1 - level) / 2
    return {"mean": float(g.mean()), "lo": float(np.quantile(reps, tail)),
            "hi": float(np.quantile(reps, 1 - tail)), "se": float(reps.std())}


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test at ``alpha`` with ``n`` pairs to find a mean gain of
    ``effect`` when the per-pair gains have standard deviation ``sd`` (noncentral t). nan when
    ``sd`` is not positive or ``n < 2``."""
    if not (sd > 0) or n < 2:
        return float("nan")
    t_crit = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = effect / sd * np.sqrt(n)
    return float(stats.nct.sf(t_crit, n - 1, shift) + stats.nct.cdf(-t_crit, n - 1, shift))


def choose_scarce(results_: Iterable[Mapping[str, Any]], threshold: float) -> int | None:
    """The pre-registered rule that picks the primary hypothesis's ``n_real_sims``: the
    scarcest arm whose ``k = 0`` runs still learn, that is, whose mean *validation* correlation
    (``history.val_corr_best``; the test split is not read) reaches ``threshold``. None when no
    arm does."""
    for n, v in validation_by_arm(results_).items():  # scarcest first
        if v["val_corr"] >= threshold:
            return n
    return None


def _t_p(d: np.ndarray) -> float:
    """Two-sided one-sample t-test p-value of the gains ``d`` against 0 (nan below 2 or with no
    spread)."""
    if len(d) < 2 or d.std(ddof=1) == 0:
        return float("nan")
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def gain_row(runs: list[Mapping[str, Any]], ks: list[int], rhythm: str, metric: str = "corr",
             n_boot: int = N_BOOT) -> dict[str, Any] | None:
    """One paired comparison: each seed's ``metric`` on ``rhythm``, averaged over ``ks``, minus
    its ``k = 0`` run's (:func:`simulation_gains`), as the mean gain over seeds, its t interval
    over seeds, the two-level bootstrap interval over seeds and test simulations
    (:func:`bootstrap_interval`), the paired t and Wilcoxon p-values and the counts. None when no
    seed has both runs."""
    seeds, sims, g = simulation_gains(runs, ks, rhythm, metric)
    if not seeds:
        return None
    d = g.mean(1)
    lo, hi = _t_interval(d)
    boot = bootstrap_interval(g, n_boot=n_boot)
    return {"n_seeds": len(seeds), "n_sims": len(sims), "mean_gain": float(d.mean()),
            "sd_seeds": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
            "t_lo": lo, "t_hi": hi, "boot_lo": boot["lo"], "boot_hi": boot["hi"],
            "p_t": _t_p(d), "p_wilcoxon": _wilcoxon_p(d)}


def primary_test(results_: list[Mapping[str, Any]], generator: str, rhythm: str,
                 ks: Iterable[int], n_real_sims: int | None, metric: str = "corr",
                 alpha: float = 0.05, effect: float = PAPER_GAIN, n_boot: int = N_BOOT
                 ) -> dict[str, Any]:
    """The study's one pre-registered test: ``generator``'s synthetic windows, each seed's
    ``metric`` on ``rhythm`` averaged over ``ks``, against the same seed's ``k = 0`` run, in the
    arm of ``n_real_sims`` (the paper's filter).

    Decision, fixed before the sweep: a gain (or a loss) when the two-sided paired t-test over
    seeds gives ``p < alpha`` *and* the 95% two-level bootstrap interval over seeds and test
    simulations (:func:`bootstrap_interval`) excludes zero. Also reported: the Wilcoxon p, the
    t interval over seeds, and the power the design had to find a gain of ``effect`` (the
    paper's +0.054) given the measured spread over seeds (:func:`paired_t_power`).
    """
    ks = sorted({check_int("ks", k, 1) for k in ks})
    out: dict[str, Any] = {"generator": generator, "rhythm": rhythm, "ks": ks,
                           "n_real_sims": n_real_sims, "metric": metric, "alpha": alpha,
                           "effect": effect}
    if n_real_sims is None:
        return {**out, "decision": "untestable", "reason": "no arm's k = 0 runs learn"}
    runs = by_generator(select(results_, n_real_sims)).get(generator, [])
    row = gain_row(runs, ks, rhythm, metric, n_boot)
    if row is None:
        return {**out, "decision": "untestable", "reason": "no seed has k = 0 and every k"}
    out.update(row)
    out["power"] = paired_t_power(effect, row["sd_seeds"], row["n_seeds"], alpha)
    out["decision"] = decide(row, alpha)
    return out


def decide(row: Mapping[str, Any], alpha: float = 0.05) -> str:
    """The decision rule of a pre-registered test on a :func:`gain_row`: ``"gain"`` or
    ``"loss"`` (by the sign of the mean) when the two-sided paired t-test over seeds gives
    ``p < alpha`` *and* the 95% two-level bootstrap interval excludes zero; else
    ``"no change"``."""
    sig = row["p_t"] < alpha and not row["boot_lo"] <= 0 <= row["boot_hi"]
    return ("gain" if row["mean_gain"] > 0 else "loss") if sig else "no change"


def format_primary(t: Mapping[str, Any]) -> str:
    """:func:`primary_test` as one paragraph."""
    head = (f"{t['generator']}, {t['rhythm']}, k = {', '.join(map(str, t['ks']))} against "
            f"k = 0")
    if t["decision"] == "untestable":
        return f"{head}: untestable ({t['reason']})."
    arm = "all" if t["n_real_sims"] == 0 else str(t["n_real_sims"])
    verdict_ = {"gain": "a gain", "loss": "a loss", "no change": "no change detected"}
    where = "inside" if t["boot_lo"] <= t["effect"] <= t["boot_hi"] else "outside"
    return (f"{head}, {arm} real training simulations per rhythm: mean change of "
            f"{t['metric']} {t['mean_gain']:+.4f} (95% interval over seeds {t['t_lo']:+.4f} to "
            f"{t['t_hi']:+.4f}; over seeds and test simulations {t['boot_lo']:+.4f} to "
            f"{t['boot_hi']:+.4f}); paired t p = {t['p_t']:.3g}, Wilcoxon p = "
            f"{t['p_wilcoxon']:.3g}; {t['n_seeds']} seeds, {t['n_sims']} test simulations. "
            f"Decision: {verdict_[t['decision']]}. A change of {t['effect']:+.3f} (the "
            f"paper's) lies {where} that interval; the t-test over seeds had "
            f"{100 * t['power']:.0f}% power to find it at this spread over seeds.")


def scarcity_table(results_: list[Mapping[str, Any]], metric: str = "corr", n_boot: int = N_BOOT,
                   exclude: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every secondary comparison: per arm (:func:`arms`), generator, k > 0 and rhythm, the mean
    gain over the same seed's ``k = 0`` run with its t interval over seeds, the two-level
    bootstrap interval, the paired t p-value and Holm's adjusted p over all rows (the family of
    secondary comparisons). ``exclude``: the primary test (:func:`primary_test`), whose own
    k values in its arm are left out of the family."""
    rows = []
    for n_real, pool in arms(results_):
        for gen, runs in by_generator(select(results_, n_real, pool)).items():
            for k in sorted({r["k"] for r in runs if r["k"] > 0}):
                for rhythm in LABELS_ORDER:
                    if (exclude and exclude.get("generator") == gen and pool == 0
                            and exclude.get("n_real_sims") == n_real
                            and exclude.get("rhythm") == rhythm and k in exclude.get("ks", ())):
                        continue
                    row = gain_row(runs, [k], rhythm, metric, n_boot)
                    if row is not None:
                        rows.append({"n_real_sims": n_real, "filter_pool": pool,
                                     "generator": gen, "k": k, "rhythm": rhythm, **row})
    for row, p in zip(rows, holm([r["p_t"] for r in rows])):
        row["p_holm"] = float(p)
    return rows


def validation_by_arm(results_: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Per ``n_real_sims`` arm, the ``k = 0`` runs' mean validation correlation (what
    :func:`choose_scarce` reads) and their number: ``{n: {"val_corr", "n_runs"}}``."""
    val: dict[int, list[float]] = {}
    for r in results_:
        if r["k"] == 0 and r.get("history", {}).get("val_corr_best") is not None:
            val.setdefault(int(r.get("n_real_sims", 0)), []).append(
                float(r["history"]["val_corr_best"]))
    return {n: {"val_corr": float(np.mean(v)), "n_runs": len(v)}
            for n, v in sorted(val.items(), key=lambda kv: _scarcest_first(kv[0]))}


def format_pivot(rows: list[Mapping[str, Any]], filter_pool: int = 0) -> str:
    """:func:`scarcity_table` rows of one filter as a pivot: one line per generator, rhythm and
    arm, one column per k, each cell the mean gain and Holm's adjusted p."""
    rows = [r for r in rows if r["filter_pool"] == filter_pool]
    if not rows:
        return "no comparisons"
    ks = sorted({r["k"] for r in rows})
    head = f"{'generator':<10}{'rhythm':<7}{'real sims':>10}" + "".join(
        f"{f'k = {k}':>22}" for k in ks)
    lines = [head, "-" * len(head)]
    keys = sorted({(r["generator"], r["rhythm"], r["n_real_sims"]) for r in rows},
                  key=lambda t: (t[0], t[1] != "SR", t[2] == 0, t[2]))
    for gen, rhythm, n in keys:
        cells = []
        for k in ks:
            hit = [r for r in rows if (r["generator"], r["rhythm"], r["n_real_sims"], r["k"])
                   == (gen, rhythm, n, k)]
            cells.append(f"{hit[0]['mean_gain']:+.3f} (p_Holm {hit[0]['p_holm']:.2f})"
                         if hit else "-")
        lines.append(f"{gen:<10}{rhythm:<7}{'all' if n == 0 else n:>10}"
                     + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def study_reading(primary: Mapping[str, Any], secondary: list[Mapping[str, Any]],
                  alpha: float = 0.05, paper: Mapping[str, Any] = PAPER) -> list[str]:
    """Sentences that read the study from its numbers: the primary decision, how many secondary
    comparisons survive Holm's correction and which, the largest secondary gain, and the paper's
    result for context."""
    out = [format_primary(primary)]
    survivors = [r for r in secondary if r["p_holm"] < alpha]
    out.append(f"Of {len(secondary)} secondary comparisons (every arm, generator, k and rhythm), "
               f"{len(survivors)} remain significant after Holm's correction at {alpha:g}"
               + (": " + "; ".join(
                   f"{r['generator']} {r['rhythm']} k = {r['k']} with "
                   f"{'all' if r['n_real_sims'] == 0 else r['n_real_sims']} real simulations "
                   f"per rhythm ({r['mean_gain']:+.3f})" for r in survivors) if survivors
                  else "") + ".")
    if secondary:
        best = max(secondary, key=lambda r: r["mean_gain"])
        out.append(f"The largest secondary mean change is {best['mean_gain']:+.3f} "
                   f"({best['generator']}, {best['rhythm']}, k = {best['k']}, "
                   f"{'all' if best['n_real_sims'] == 0 else best['n_real_sims']} real "
                   f"simulations per rhythm; interval over seeds and test simulations "
                   f"{best['boot_lo']:+.3f} to {best['boot_hi']:+.3f}).")
    out.append(f"For context, the paper reports {paper['rhythm']} correlation "
               f"{paper['corr_without']:.3f} without and {paper['corr_with_vae_s']:.3f} with "
               f"VAE-S augmentation (a change of {PAPER_GAIN:+.3f}, k = {paper['best_k'][0]}-"
               f"{paper['best_k'][1]}), on its own data and network, without intervals.")
    return out


#: What :func:`compare_studies` keeps of each comparison of a study record.
_COMPARISON_KEYS = ("mean_gain", "boot_lo", "boot_hi", "p_t", "p_holm", "decision", "n_seeds")


def _comparisons(record: Mapping[str, Any]) -> dict[tuple, dict[str, Any]]:
    """A study record's comparisons against ``k = 0`` by (generator, n_real_sims, filter_pool,
    ks, rhythm): 06's primary and secondary ones, and 07's ``rows`` with the reference ``k = 0``
    (role ``"filter"``; its rows against no filter compare two filters, not k with k = 0, and
    are left out)."""
    def entry(role: str, row: Mapping[str, Any], ks: tuple[int, ...]) -> tuple[tuple, dict]:
        key = (row["generator"], row["n_real_sims"], row.get("filter_pool", 0), ks,
               row["rhythm"])
        return key, {"role": role} | {k: row.get(k) for k in _COMPARISON_KEYS}

    primary = record.get("primary") or {}
    found = ([entry("primary", primary, tuple(primary["ks"]))]
             if primary.get("decision") not in (None, "untestable") else [])
    found += [entry("secondary", row, (row["k"],)) for row in record.get("secondary") or ()]
    found += [entry("filter", row, (row["k"],)) for row in record.get("rows") or ()
              if row.get("reference") == "k = 0"]
    return dict(found)


def _gain_difference(a: Mapping[str, Any], b: Mapping[str, Any], key: tuple) -> dict[str, Any]:
    """How much one comparison's gain (``key`` as in :func:`_comparisons`) differs between two
    study records, paired by seed: the mean over the seeds both hold of (gain in b - gain in a),
    each gain from the runs' mean test correlations (:func:`select`, :func:`_gains_by_seed`),
    its 95% t interval over seeds and the paired t p-value. When both records keep their runs'
    per-simulation scores (:func:`run_rows`) on the same test simulations, also ``boot_lo`` and
    ``boot_hi``: the 95% two-level interval (:func:`bootstrap_interval` over seeds and test
    simulations) of the per-seed, per-simulation difference (:func:`simulation_gains` in b minus
    the same in a); a record made before the runs kept those scores gives the seed-level
    interval only, and the keys are absent."""
    gen, arm, pool, ks, rhythm = key

    def arm_runs(record: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [r for r in select(runs_from_rows(record.get("runs", ())), arm, pool)
                if r["k"] == 0 or r["generator"] == gen]

    runs_a, runs_b = arm_runs(a), arm_runs(b)
    ga = _gains_by_seed(runs_a, ks, "corr_mean").get(rhythm, {})
    gb = _gains_by_seed(runs_b, ks, "corr_mean").get(rhythm, {})
    seeds = sorted(set(ga) & set(gb))
    d = np.array([gb[s] - ga[s] for s in seeds], float)
    lo, hi = _t_interval(d)
    out = {"n_seeds": len(seeds), "mean": float(d.mean()) if len(d) else float("nan"),
           "t_lo": lo, "t_hi": hi, "p_t": _t_p(d)}
    seeds_a, sims_a, sim_a = simulation_gains(runs_a, ks, rhythm)
    seeds_b, sims_b, sim_b = simulation_gains(runs_b, ks, rhythm)
    both = sorted(set(seeds_a) & set(seeds_b))
    if both and sims_a and sims_a == sims_b:
        ia, ib = [seeds_a.index(s) for s in both], [seeds_b.index(s) for s in both]
        boot = bootstrap_interval(sim_b[ib] - sim_a[ia])
        out.update(boot_lo=boot["lo"], boot_hi=boot["hi"])
    return out


def compare_studies(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two records of the same study (06's or 07's, made on two machines, say) side by side.

    ``comparisons``: every comparison (primary or secondary: generator, arm, filter, k and
    rhythm against ``k = 0``) that both records hold, with each one's mean gain, two-level
    interval, p-values and decision; the roles and Holm's adjustment are each record's own, as
    their families may differ; and ``b_minus_a``, the difference of the two gains paired by seed
    (:func:`_gain_difference`: does the other machine, or the other generator setting, change the
    gain?). ``runs``: for every cell (arm, filter, generator, k) and rhythm
    with runs of the same seeds in both, the mean test correlation of each, the spread over
    seeds of each, the correlation across seeds between the two and the mean absolute
    difference of a seed's two runs: how much of a run's number is its seed (the same subsets,
    initial weights and batches) and how much the machine. ``machines``: each record's
    provenance."""
    def cells(record: Mapping[str, Any]) -> dict[tuple, dict[str, float]]:
        return {(r["n_real_sims"], r.get("filter_pool", 0), r["generator"], r["k"], r["seed"]):
                r["corr"] for r in record.get("runs", ())}

    ra, rb = cells(a), cells(b)
    ca, cb = _comparisons(a), _comparisons(b)
    comparisons = []
    for key in sorted(set(ca) & set(cb), key=str):
        gen, arm, pool, ks, rhythm = key
        comparisons.append({"generator": gen, "n_real_sims": arm, "filter_pool": pool,
                            "ks": list(ks), "rhythm": rhythm, "a": ca[key], "b": cb[key],
                            "b_minus_a": _gain_difference(a, b, key)})
    by_cell: dict[tuple, list[tuple]] = {}
    for key in sorted(set(ra) & set(rb), key=str):   # runs of the same cell and seed in both
        by_cell.setdefault(key[:4], []).append(key)
    runs = []
    for cell, seeds in by_cell.items():
        for rhythm in sorted(set(ra[seeds[0]]) & set(rb[seeds[0]])):
            x = np.array([ra[key][rhythm] for key in seeds], float)
            y = np.array([rb[key][rhythm] for key in seeds], float)
            several = len(seeds) > 1 and np.ptp(x) > 0 and np.ptp(y) > 0
            runs.append({"n_real_sims": cell[0], "filter_pool": cell[1], "generator": cell[2],
                         "k": cell[3], "rhythm": rhythm, "n_seeds": len(seeds),
                         "mean_a": float(x.mean()), "mean_b": float(y.mean()),
                         "sd_seeds_a": float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
                         "sd_seeds_b": float(y.std(ddof=1)) if len(y) > 1 else float("nan"),
                         "corr_across_seeds": (float(np.corrcoef(x, y)[0, 1]) if several
                                               else float("nan")),
                         "mean_abs_diff": float(np.abs(x - y).mean())})
    return {"machines": {"a": a.get("provenance", {}).get("machine"),
                         "b": b.get("provenance", {}).get("machine")},
            "n_runs": {"a": a.get("n_runs"), "b": b.get("n_runs")},
            "comparisons": comparisons, "runs": runs}


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m egmlib.workflow.results A.json B.json [--out FILE]``: two records of one
    study side by side (:func:`compare_studies`); a line per shared comparison, the whole to
    ``--out`` (JSON)."""
    import argparse

    from egmlib.core.runs import portable, save_json

    ap = argparse.ArgumentParser(prog="python -m egmlib.workflow.results",
                                 description=main.__doc__)
    ap.add_argument("record_a")
    ap.add_argument("record_b")
    ap.add_argument("--out", default="", help="write the comparison here (JSON)")
    args = ap.parse_args(None if argv is None else list(argv))
    for name in ("record_a", "record_b"):
        if not Path(getattr(args, name)).is_file():
            ap.error(f"{name}: no file {getattr(args, name)}")
    out = compare_studies(load_json(args.record_a), load_json(args.record_b))
    for c in out["comparisons"]:
        arm = "all" if c["n_real_sims"] == 0 else c["n_real_sims"]
        pool = f", filter_pool {c['filter_pool']}" if c["filter_pool"] else ""
        print(f"{c['generator']} {c['rhythm']} k = {', '.join(map(str, c['ks']))}, {arm} real "
              f"simulations per rhythm{pool}: {c['a']['mean_gain']:+.3f} "
              f"({c['a']['boot_lo']:+.3f} to {c['a']['boot_hi']:+.3f}) against "
              f"{c['b']['mean_gain']:+.3f} ({c['b']['boot_lo']:+.3f} to "
              f"{c['b']['boot_hi']:+.3f}); paired by seed, b - a "
              f"{c['b_minus_a']['mean']:+.3f} ({c['b_minus_a']['t_lo']:+.3f} to "
              f"{c['b_minus_a']['t_hi']:+.3f}, {c['b_minus_a']['n_seeds']} seeds"
              + (f"; seeds and test simulations {c['b_minus_a']['boot_lo']:+.3f} to "
                 f"{c['b_minus_a']['boot_hi']:+.3f}" if "boot_lo" in c["b_minus_a"] else "")
              + ")")
    if args.out:
        save_json(args.out, portable(out))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through main()
    raise SystemExit(main())
