"""Sweep aggregation: hand-made result files with known means, intervals and paired tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from egmlib.core.runs import save_json
from egmlib.workflow import results, sweep


def _write(folder, gen, k, seed, corr):
    save_json(folder / f"{gen}_k{k}_s{seed}" / "result.json",
              {"k": k, "seed": seed, "generator": gen,
               "network": {"SR": {"corr_mean": corr, "rmse_mean": 1.0 - corr}},
               "tikhonov": {"SR": {"corr_mean": 0.5}}})


def test_summary_and_paired_tests(tmp_path):
    base = [0.10, 0.12, 0.14, 0.16, 0.18]
    gain = [0.05, 0.03, 0.04, 0.06, 0.02]
    for s in range(5):
        _write(tmp_path, "vae_s", 0, s, base[s])
        _write(tmp_path, "vae_s", 4, s, base[s] + gain[s])
    (tmp_path / "junk").mkdir()
    save_json(tmp_path / "junk" / "result.json", {"other": 1})  # not a 05 result: skipped
    res = results.collect([tmp_path, tmp_path])  # a folder given twice counts once
    assert len(res) == 10
    table = results.summarise(res)["vae_s"]["SR"]
    assert [row["k"] for row in table] == [0, 4]
    assert table[0]["mean"] == pytest.approx(0.14)
    half = stats.t.ppf(0.975, 4) * np.std(base, ddof=1) / np.sqrt(5)
    assert table[0]["hi"] - table[0]["mean"] == pytest.approx(half)
    (row,) = results.paired_tests(res)
    assert row["k"] == 4 and row["n_pairs"] == 5
    assert row["mean_diff"] == pytest.approx(0.04)
    # all five differences positive: the exact two-sided signed-rank p-value is 2 / 2^5
    assert row["p_value"] == pytest.approx(2 / 32)
    assert "vae_s" in results.format_tests([row])


def test_shared_k0_runs_are_every_generators_baseline(tmp_path):
    for s, (base, gain_s, gain_c) in enumerate([(0.1, 0.02, -0.01), (0.2, 0.04, -0.03)]):
        _write(tmp_path, "none", 0, s, base)
        _write(tmp_path, "vae_s", 2, s, base + gain_s)
        _write(tmp_path, "vae_c", 2, s, base + gain_c)
    _write(tmp_path, "vae_c", 0, 1, 0.5)  # a generator's own k = 0 run takes precedence
    res = results.collect([tmp_path])
    groups = results.by_generator(res)
    assert sorted(groups) == ["vae_c", "vae_s"]  # "none" is no generator of its own
    assert sorted((r["generator"], r["seed"]) for r in groups["vae_c"] if r["k"] == 0) == [
        ("none", 0), ("vae_c", 1)]
    tests = {row["generator"]: row for row in results.paired_tests(res)}
    assert tests["vae_s"]["mean_diff"] == pytest.approx(0.03)
    assert tests["vae_c"]["mean_diff"] == pytest.approx((-0.01 + (0.17 - 0.5)) / 2)
    table = results.summarise(res)["vae_s"]["SR"]
    assert [(row["k"], row["n"]) for row in table] == [(0, 2), (2, 2)]
    assert table[0]["mean"] == pytest.approx(0.15)
    assert list(results.by_generator([r for r in res if r["generator"] == "none"])) == ["none"]


def test_single_seed_has_no_interval(tmp_path):
    _write(tmp_path, "vae_c", 0, 0, 0.2)
    table = results.summarise(results.collect([tmp_path]))["vae_c"]["SR"]
    assert table[0]["n"] == 1 and np.isnan(table[0]["lo"])


def test_sweep_cost_reads_markers_report_and_bench(tmp_path):
    for i, wall in enumerate((10.0, 20.0, 30.0)):
        save_json(tmp_path / f"run{i}" / "DONE", {"wall_s": wall})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "DONE").write_text("not json")  # skipped, not fatal
    save_json(tmp_path / "sweep.json", {"elapsed_s": 31.0, "mode": "LocalCluster, 2 workers",
                                        "runs": [{"status": "done"}, {"status": "skipped"},
                                                 {"status": "done"}]})
    bench = tmp_path / "bench.json"
    save_json(bench, {"rows": [{"section": "sweep", "ratio": 1.0, "workers": 1},
                               {"section": "sweep", "ratio": 1.8, "workers": 2},
                               {"section": "train", "ratio": 5.0}]})
    cost = results.sweep_cost(tmp_path, bench)
    assert cost["n_runs"] == 3 and cost["run_s_total"] == 60.0 and cost["run_s_mean"] == 20.0
    assert cost["last_elapsed_s"] == 31.0 and cost["last_n_run"] == 2
    assert cost["last_mode"] == "LocalCluster, 2 workers"
    assert cost["bench_speedup"] == 1.8 and len(cost["bench_rows"]) == 2
    # parallel slower than serial: the speed-up is below one, not the serial row's 1.0
    save_json(bench, {"rows": [{"section": "sweep", "ratio": 1.0, "workers": 1},
                               {"section": "sweep", "ratio": 0.86, "workers": 2}]})
    assert results.sweep_cost(tmp_path, bench)["bench_speedup"] == 0.86
    empty = results.sweep_cost(tmp_path / "nothing")
    assert empty["n_runs"] == 0 and empty["run_s_mean"] is None and empty["bench_speedup"] is None


def test_collect_with_a_marker_skips_unfinished_runs(tmp_path):
    rec = {"k": 2, "seed": 0, "generator": "vae_s", "network": {}}
    save_json(tmp_path / "a" / "result.json", rec)
    save_json(tmp_path / "a" / "DONE", {"wall_s": 1.0})
    save_json(tmp_path / "b" / "result.json", {**rec, "seed": 1})  # no DONE: failed or stopped
    assert [r["seed"] for r in results.collect([tmp_path])] == [0, 1]
    assert [r["seed"] for r in results.collect([tmp_path], marker="DONE")] == [0]


def test_power_note_names_the_smallest_attainable_p():
    # exact two-sided Wilcoxon: all of n differences positive gives p = 2 / 2**n
    assert stats.wilcoxon([0.1, 0.2, 0.3, 0.4]).pvalue == 0.125
    assert "smallest attainable p is 0.125" in results._power_note(4, 0.05)
    assert results._power_note(6, 0.05) == ""  # 2 / 64 = 0.031 can reach 0.05


def test_verdict_compares_only_the_k_with_every_seed(tmp_path):
    for seed in range(3):
        _write(tmp_path, "vae_s", 0, seed, 0.10)
        _write(tmp_path, "vae_s", 4, seed, 0.10 + 0.01 * (seed + 1))  # +0.02 on average
    _write(tmp_path, "vae_s", 8, 0, 0.50)  # one seed so far: a large, unreliable gain
    text = results.verdict(results.collect([tmp_path]))
    assert text.startswith("vae_s, SR: best k = 4 changes corr_mean by +0.020 against k = 0 "
                           "(Wilcoxon p = 0.250, 3 seeds): no significant gain")
    assert "smallest attainable p is 0.250" in text
    assert text.endswith("Not compared, fewer than 3 seeds so far: k = 8.")


def test_a_significant_gain_names_the_multiplicity_threshold(tmp_path):
    for seed in range(6):
        _write(tmp_path, "vae_s", 0, seed, 0.10)
        _write(tmp_path, "vae_s", 4, seed, 0.11 + 0.001 * seed)  # all six positive: p = 2 / 64
        _write(tmp_path, "vae_s", 8, seed, 0.10 + (0.01 if seed % 2 else -0.01))
    text = results.verdict(results.collect([tmp_path]))
    assert "best k = 4" in text and "(Wilcoxon p = 0.031, 6 seeds): a significant gain." in text
    assert text.endswith("Uncorrected for the 2 values of k tested: Bonferroni-Holm would need "
                         "p < 0.0250, below the smallest p that 6 seeds allow (0.031), so read "
                         "it as a hint, not a finding.")


def test_collect_with_a_run_dir_leaves_out_runs_of_changed_inputs(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "vae_c").mkdir()
    (run_dir / "data" / "manifest.json").write_text('{"files": {}, "params": {}}')
    np.savez(run_dir / "vae_c" / "synthetic_AF.npz", kept=np.ones((2, 3, 4), np.float32))
    now = sweep.input_fingerprint(run_dir, ["vae_c"])
    sweep_dir = tmp_path / "sweep"
    for name, gen, inputs in (("fresh", "vae_c", now),
                              ("stale", "vae_c", {**now, "vae_c/synthetic_AF.npz": "0" * 16}),
                              ("base", "none", {"data/manifest.json":
                                                now["data/manifest.json"]}),
                              ("unrecorded", "vae_c", None)):
        _write(sweep_dir / name, gen, 0 if gen == "none" else 2, 0, 0.2)
        folder = sweep_dir / name / f"{gen}_k{0 if gen == 'none' else 2}_s0"
        save_json(folder / "params.json", {"notebook": "05_augment.ipynb", "parameters": {},
                                           **({"inputs": inputs} if inputs else {})})
        save_json(folder / "DONE", {"wall_s": 1.0})
    kept = results.collect([sweep_dir], marker="DONE", run_dir=run_dir)
    assert sorted(Path(r["path"]).parts[-3] for r in kept) == ["base", "fresh"]
    assert len(results.collect([sweep_dir], marker="DONE")) == 4


def test_range_test_averages_each_seeds_gain_over_the_range(tmp_path):
    # six seeds; per seed the gains at k = 14, 16, 18 average to gain[s], all positive
    base = [0.10, 0.20, 0.15, 0.30, 0.25, 0.05]
    gain = [0.01, 0.03, 0.02, 0.05, 0.04, 0.06]
    for s in range(6):
        _write(tmp_path, "none", 0, s, base[s])
        for k, dk in ((14, -0.02), (16, 0.0), (18, 0.02)):
            _write(tmp_path, "vae_s", k, s, base[s] + gain[s] + dk)
        _write(tmp_path, "vae_s", 2, s, base[s] - 0.5)  # outside the range: ignored
    _write(tmp_path, "vae_s", 14, 6, 0.9)  # a seed without k = 0: left out
    _write(tmp_path, "none", 0, 7, 0.1)  # a seed without the range: left out
    res = results.collect([tmp_path])
    (row,) = results.range_test(res, [18, 14, 16])
    assert row["generator"] == "vae_s" and row["rhythm"] == "SR" and row["ks"] == [14, 16, 18]
    assert row["n_pairs"] == 6
    assert row["mean_diff"] == pytest.approx(np.mean(gain))
    assert row["p_value"] == pytest.approx(2 / 64)  # six positive gains: exact p = 2 / 2^6
    assert "significantly higher" in results.format_range_test([row])
    assert row["seeds_for_power"] == results.seeds_for_power(gain)
    # a range of one k is that k's paired test
    (single,) = results.range_test(res, [2])
    (paired,) = [t for t in results.paired_tests(res) if t["k"] == 2]
    assert single["mean_diff"] == pytest.approx(paired["mean_diff"]) == pytest.approx(-0.5)
    assert single["p_value"] == pytest.approx(paired["p_value"])
    assert "significantly lower" in results.format_range_test([single])
    assert results.range_test(res, [20]) == []  # no seed has k = 20
    assert "nothing to test" in results.format_range_test([])
    weak = {**row, "mean_diff": 0.02, "p_value": 0.094, "seeds_for_power": 11}
    assert "no significant change. A change of this size" in results.format_range_test([weak])
    assert "about 11 seeds" in results.format_range_test([weak])
    with pytest.raises(ValueError, match=r"ks: got 0; allowed: an int >= 1"):
        results.range_test(res, [0, 14])
    with pytest.raises(ValueError, match=r"ks: got 14.5"):
        results.range_test(res, [14.5])
    with pytest.raises(ValueError, match="ks: got none"):
        results.range_test(res, [])


@pytest.mark.parametrize("effect, n", [(0.2, 199), (0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_for_power_matches_the_paired_t_test_tables(effect, n):
    # gains with mean / sd = effect: the sample sizes of a two-sided paired t-test at
    # alpha 0.05 and power 0.8 in the standard tables (Cohen 1988; G*Power)
    gains = effect * np.sqrt(2) + np.array([-1.0, 1.0])
    assert results.seeds_for_power(gains) == n
    assert results.seeds_for_power(-gains) == n  # a loss needs as many seeds as a gain


def test_seeds_for_power_without_spread_or_mean_is_none():
    assert results.seeds_for_power([0.1, 0.1, 0.1]) is None
    assert results.seeds_for_power([-0.1, 0.1]) is None
    assert results.seeds_for_power([0.1]) is None
    assert results.seeds_for_power(0.2 * np.sqrt(2) + np.array([-1.0, 1.0]), n_max=50) is None


def test_gain_plot_draws_the_paired_changes_and_the_papers_gain(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from egmlib.evaluation import plots

    for s, (base, gain) in enumerate([(0.1, 0.02), (0.2, 0.04), (0.3, 0.03)]):
        _write(tmp_path, "none", 0, s, base)
        _write(tmp_path, "vae_s", 14, s, base + gain)
        _write(tmp_path, "vae_s", 18, s, base - gain)
    tests = results.paired_tests(results.collect([tmp_path]))
    (k14,) = [t for t in tests if t["k"] == 14]
    half = stats.t.ppf(0.975, 2) * np.std([0.02, 0.04, 0.03], ddof=1) / np.sqrt(3)
    assert k14["hi"] - k14["mean_diff"] == pytest.approx(half)
    fig = plots.gain_vs_k(tests, paper=results.PAPER)
    (ax,) = fig.axes  # one rhythm, SR: the paper's rhythm
    line = next(ln for ln in ax.lines if ln.get_label() == "vae_s")
    assert list(line.get_xdata()) == [14, 18]
    assert list(line.get_ydata()) == pytest.approx([0.03, -0.03])
    (segment,) = ax.collections[-1].get_segments()  # the paper's change over k = 14-18
    assert segment[:, 0].tolist() == [14, 18]
    assert segment[:, 1] == pytest.approx([0.054, 0.054])
    assert "its own data" in ax.get_legend_handles_labels()[1][-1]


def test_collapsed_runs_are_counted_with_their_best_epochs(tmp_path):
    def run(gen, k, seed, af, best):
        save_json(tmp_path / f"{gen}_k{k}_s{seed}" / "result.json",
                  {"k": k, "seed": seed, "generator": gen,
                   "network": {"SR": {"corr_mean": 0.4}, "AF": {"corr_mean": af}},
                   "tikhonov": {"SR": {"corr_mean": 0.5}},
                   "history": {"best_epoch": best, "epochs_run": best + 6}})
    run("none", 0, 0, 0.13, 18)
    run("vae_s", 8, 0, -0.001, 6)
    run("vae_s", 16, 1, 0.049, 9)
    run("vae_s", 16, 0, 0.05, 21)  # at the threshold: not collapsed
    run("vae_c", 6, 0, 0.12, 14)
    summary = results.collapsed_runs(results.collect([tmp_path]))
    assert [(r["generator"], r["k"], r["seed"]) for r in summary["runs"]] == [
        ("vae_s", 8, 0), ("vae_s", 16, 1)]
    assert summary["runs"][0]["value"] == pytest.approx(-0.001)
    assert summary["runs"][1]["epochs_run"] == 15
    assert summary["n_by_generator"] == {"none": [0, 1], "vae_c": [0, 1], "vae_s": [2, 3]}
    assert sorted(summary["best_epoch"]["collapsed"]) == [6, 9]
    assert sorted(summary["best_epoch"]["others"]) == [14, 18, 21]
    text = results.format_collapsed(summary)
    assert summary["runs"][0]["n_real_sims"] == 0  # a record without the field: all
    assert ("vae_s: 2 of 3 runs with AF corr_mean < 0.05 (k = 8, 16; real simulations per "
            "rhythm: all)") in text
    assert "vae_c: 0 of 1 runs" in text
    assert "of these runs 7-10; of the others 15-22, median 19" in text
    # SR never collapses here; a rhythm nobody recorded is reported as such
    assert results.collapsed_runs(results.collect([tmp_path]), rhythm="SR")["runs"] == []
    assert results.format_collapsed(results.collapsed_runs([], rhythm="AF")) == \
        "no run has AF corr_mean"


# --------------------------------------------------------------------------------------------
# The study: arms, per-simulation gains, the two-level bootstrap, Holm, the primary test
# --------------------------------------------------------------------------------------------

def test_holm_on_a_hand_worked_case():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, 1 * 0.04 -> max 0.06
    np.testing.assert_allclose(results.holm([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    np.testing.assert_allclose(results.holm([0.5, 0.9]), [1.0, 1.0])
    out = results.holm([0.02, float("nan")])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1])


def test_bootstrap_of_test_simulations_matches_the_standard_error():
    """Every seed the same gains per simulation: only the test sample varies, so the bootstrap
    standard error is the plug-in standard error of a mean, std / sqrt(n)."""
    x = np.random.default_rng(3).normal(0.02, 0.05, 40)
    g = np.tile(x, (6, 1))
    b = results.bootstrap_interval(g, n_boot=8000, seed=1)
    assert b["mean"] == pytest.approx(x.mean())
    assert b["se"] == pytest.approx(x.std() / np.sqrt(40), rel=0.05)
    assert b["lo"] < x.mean() < b["hi"]
    assert b["hi"] - b["lo"] == pytest.approx(2 * 1.96 * x.std() / np.sqrt(40), rel=0.1)


def test_bootstrap_of_a_constant_and_of_two_by_two():
    b = results.bootstrap_interval(np.full((3, 4), 0.07))
    assert b["lo"] == pytest.approx(0.07) and b["hi"] == pytest.approx(0.07)
    # 2 seeds x 2 simulations, g = [[0, 0], [0, 1]]: the mean is 1/4 times the number of
    # (seed 2, simulation 2) cells drawn, (binomial(2, 1/2))^2 / 4, so P(mean = 0) = 1 - 1/4 *
    # 1/4 ... = 1 - P(seed 2 drawn) P(sim 2 drawn) = 1 - (3/4)(3/4) = 7/16
    g = np.array([[0.0, 0.0], [0.0, 1.0]])
    b = results.bootstrap_interval(g, n_boot=20000, level=0.8, seed=0)
    assert b["lo"] == 0.0
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 2, (20000, 2)), rng.integers(0, 2, (20000, 2))
    reps = [g[np.ix_(r, c)].mean() for r, c in zip(rows, cols)]
    assert np.mean(np.asarray(reps) == 0) == pytest.approx(7 / 16, abs=0.01)
    with pytest.raises(ValueError, match="gains"):
        results.bootstrap_interval(np.zeros(3))


def test_paired_t_power_matches_the_tables():
    # Cohen's tables: effect size 0.5 needs 34 pairs, 0.8 needs 15, for 80% power at 0.05
    for effect, n in ((0.5, 34), (0.8, 15)):
        assert results.paired_t_power(effect, 1.0, n - 1) < 0.8 <= results.paired_t_power(
            effect, 1.0, n)
    assert results.paired_t_power(0.05, 0.1, 20) == pytest.approx(
        results.paired_t_power(0.5, 1.0, 20))
    assert np.isnan(results.paired_t_power(0.5, 0.0, 10))


def _study_run(gen, k, seed, n_real, sim_corr, pool=0, val=0.3):
    sims = sorted(sim_corr)
    return {"k": k, "seed": seed, "generator": gen, "n_real_sims": n_real, "filter_pool": pool,
            "network": {"SR": {"corr_mean": float(np.mean(list(sim_corr.values())))}},
            "tikhonov": {"SR": {"corr_mean": 0.5}},
            "history": {"val_corr_best": val, "best_epoch": 3, "epochs_run": 8},
            "test": {"per_simulation": {"sim_id": sims, "rhythm": ["SR"] * len(sims),
                                        "n_windows": [5] * len(sims),
                                        "corr": [sim_corr[s] for s in sims]}}}


def test_primary_test_reads_per_simulation_gains_of_its_arm():
    rng = np.random.default_rng(0)
    runs, gains = [], []
    for seed in range(8):
        base = {s: 0.3 + 0.1 * rng.standard_normal() for s in (10, 11, 12)}
        runs.append(_study_run("none", 0, seed, 4, base, val=0.25))
        g = 0.05 + 0.01 * rng.standard_normal()
        gains.append(g)
        runs.append(_study_run("vae_s", 18, seed, 4, {s: v + g for s, v in base.items()}))
        # another arm and a filter ablation: must not enter the primary test
        runs.append(_study_run("none", 0, seed, 0, base, val=0.5))
        d1, d2 = 0.2 + 0.01 * rng.standard_normal(2)
        runs.append(_study_run("vae_s", 18, seed, 0, {s: v - d1 for s, v in base.items()}))
        runs.append(_study_run("vae_s", 18, seed, 4, {s: v - d2 for s, v in base.items()},
                               pool=18))
    assert results.arms(runs) == [(4, 0), (4, 18), (0, 0)]
    seeds, sims, g = results.simulation_gains(
        results.by_generator(results.select(runs, 4))["vae_s"], [18], "SR")
    assert seeds == list(range(8)) and sims == [10, 11, 12]
    np.testing.assert_allclose(g, np.repeat(np.asarray(gains)[:, None], 3, 1), atol=1e-12)
    t = results.primary_test(runs, "vae_s", "SR", [18], 4)
    assert t["mean_gain"] == pytest.approx(np.mean(gains))
    assert t["p_t"] == pytest.approx(stats.ttest_1samp(gains, 0).pvalue)
    assert t["decision"] == "gain" and t["boot_lo"] > 0
    assert "gain" in results.format_primary(t)
    # the pre-registered rule: the scarcest arm whose k = 0 runs learn on validation
    assert results.choose_scarce(runs, 0.2) == 4
    assert results.choose_scarce(runs, 0.3) == 0
    assert results.choose_scarce(runs, 0.9) is None
    assert results.primary_test(runs, "vae_s", "SR", [18], None)["decision"] == "untestable"
    # secondary family: the other two comparisons, Holm-adjusted, the primary left out
    rows = results.scarcity_table(runs, exclude=t)
    assert {(r["n_real_sims"], r["filter_pool"]) for r in rows} == {(4, 18), (0, 0)}
    assert all(r["mean_gain"] < 0 for r in rows)
    p_low, p_high = sorted(r["p_t"] for r in rows)  # Holm with m = 2
    first = min(1.0, 2 * p_low)
    assert sorted(r["p_holm"] for r in rows) == pytest.approx([first, max(first, p_high)])


def test_a_study_record_alone_remakes_its_tests():
    """run_rows keeps what the tests read; runs_from_rows gives it back: the same primary test,
    secondary family and validation per arm, from the record's JSON without the run folders."""
    import json

    from egmlib.core.runs import json_ready

    rng = np.random.default_rng(1)
    runs = []
    for seed in range(5):
        base = {s: 0.3 + 0.1 * rng.standard_normal() for s in (3, 7)}
        runs.append(_study_run("none", 0, seed, 4, base, val=0.25 + 0.01 * seed))
        runs.append(_study_run("vae_s", 18, seed, 4,
                               {s: v + 0.04 + 0.02 * rng.standard_normal()
                                for s, v in base.items()}))
        runs.append(_study_run("vae_s", 6, seed, 4, {s: v - 0.01 for s, v in base.items()}))
    rows = json.loads(json.dumps(results.run_rows(runs)))   # through the record's JSON
    assert rows[0]["per_simulation"]["sim_id"] == [3, 7] and rows[0]["val_corr_best"] == 0.25
    again = results.runs_from_rows(rows)
    t = results.primary_test(runs, "vae_s", "SR", [18], 4)
    assert json_ready(results.primary_test(again, "vae_s", "SR", [18], 4)) == json_ready(t)
    assert json_ready(results.scarcity_table(again, exclude=t)) == json_ready(
        results.scarcity_table(runs, exclude=t))
    assert results.validation_by_arm(again) == results.validation_by_arm(runs)
    # a record written before the per-simulation scores: no paired test can be remade
    old = [{k: v for k, v in row.items() if k != "per_simulation"} for row in rows]
    assert results.primary_test(results.runs_from_rows(old), "vae_s", "SR", [18], 4)[
        "decision"] == "untestable"


def test_no_change_when_gains_straddle_zero():
    runs = []
    for seed, g in enumerate([0.02, -0.03, 0.01, -0.01, 0.015, -0.02]):
        runs.append(_study_run("none", 0, seed, 2, {1: 0.2, 2: 0.3}))
        runs.append(_study_run("vae_s", 18, seed, 2, {1: 0.2 + g, 2: 0.3 + g}))
    t = results.primary_test(runs, "vae_s", "SR", [18], 2)
    assert t["decision"] == "no change" and t["boot_lo"] < 0 < t["boot_hi"]
    assert 0 < t["power"] < 1


def test_pivot_and_reading_name_each_arm_and_the_holm_survivors():
    rows = [{"generator": "vae_s", "rhythm": "SR", "n_real_sims": n, "filter_pool": 0, "k": k,
             "mean_gain": g, "p_t": p, "p_holm": ph, "boot_lo": g - 0.01, "boot_hi": g + 0.01}
            for n, k, g, p, ph in ((2, 6, 0.030, 0.001, 0.004), (2, 18, -0.010, 0.2, 0.6),
                                   (0, 6, 0.005, 0.3, 0.6))]
    text = results.format_pivot(rows)
    lines = text.splitlines()
    assert "k = 6" in lines[0] and "k = 18" in lines[0]
    assert lines[2].split()[:3] == ["vae_s", "SR", "2"] and "+0.030 (p_Holm 0.00)" in lines[2]
    assert lines[3].split()[:3] == ["vae_s", "SR", "all"] and lines[3].rstrip().endswith("-")
    primary = {"generator": "vae_s", "rhythm": "SR", "ks": [18], "decision": "untestable",
               "reason": "no arm's k = 0 runs learn"}
    reading = results.study_reading(primary, rows)
    assert "untestable" in reading[0]
    assert "1 remain significant" in reading[1] and "k = 6 with 2 real simulations" in reading[1]
    assert "+0.030" in reading[2]


def test_collapsed_runs_name_their_arm():
    runs = [{"generator": "none", "k": 0, "seed": s, "n_real_sims": arm,
             "network": {"AF": {"corr_mean": 0.01}}, "history": {}}
            for s, arm in ((0, 4), (1, 2), (2, 0))]
    summary = results.collapsed_runs(runs)
    assert [r["n_real_sims"] for r in summary["runs"]] == [4, 2, 0]
    assert "(k = 0; real simulations per rhythm: 2, 4, all)" in results.format_collapsed(summary)


def test_compare_studies_pairs_comparisons_and_seeds_by_hand(tmp_path, capsys):
    """Two hand-made study records: the shared comparison side by side, the runs of the same
    cell and seed paired (means, spreads, correlation across seeds, mean absolute difference)."""
    import json

    def record(corr_sr, gain, machine):
        runs = [{"generator": "none", "n_real_sims": 8, "filter_pool": 0, "k": 0, "seed": s,
                 "corr": {"SR": c, "AF": 0.1}} for s, c in enumerate(corr_sr)]
        runs.append({"generator": "vae_s", "n_real_sims": 8, "filter_pool": 0, "k": 18,
                     "seed": 0, "corr": {"SR": 0.5, "AF": 0.1}})
        row = {"mean_gain": gain, "boot_lo": gain - 0.01, "boot_hi": gain + 0.01, "p_t": 0.01,
               "n_seeds": 3}
        return {"n_runs": len(runs), "runs": runs, "provenance": {"machine": machine},
                "primary": {"generator": "vae_s", "n_real_sims": 8, "ks": [18], "rhythm": "SR",
                            "decision": "gain", **row},
                "secondary": [{"generator": "vae_s", "n_real_sims": 8, "filter_pool": 0,
                               "k": 18, "rhythm": "AF", "p_holm": 0.5, **row}]}

    a, b = record([0.2, 0.3, 0.4], 0.05, "A"), record([0.25, 0.3, 0.5], 0.02, "B")
    b["secondary"] = []   # a comparison only one record holds is left out
    out = results.compare_studies(a, b)
    assert out["machines"] == {"a": "A", "b": "B"} and out["n_runs"] == {"a": 4, "b": 4}
    (c,) = out["comparisons"]
    assert (c["generator"], c["ks"], c["rhythm"]) == ("vae_s", [18], "SR")
    assert c["a"]["mean_gain"] == 0.05 and c["b"]["mean_gain"] == 0.02
    assert c["a"]["role"] == "primary"
    sr = next(r for r in out["runs"] if (r["k"], r["rhythm"]) == (0, "SR"))
    assert sr["n_seeds"] == 3 and sr["mean_a"] == pytest.approx(0.3)
    assert sr["mean_b"] == pytest.approx(1.05 / 3)
    assert sr["mean_abs_diff"] == pytest.approx((0.05 + 0 + 0.1) / 3)
    assert sr["corr_across_seeds"] == pytest.approx(np.corrcoef([.2, .3, .4], [.25, .3, .5])[0, 1])
    assert sr["sd_seeds_a"] == pytest.approx(0.1)
    af = next(r for r in out["runs"] if (r["k"], r["rhythm"]) == (0, "AF"))
    assert np.isnan(af["corr_across_seeds"]) and af["mean_abs_diff"] == 0  # no spread
    one = next(r for r in out["runs"] if r["k"] == 18 and r["rhythm"] == "SR")
    assert one["n_seeds"] == 1 and np.isnan(one["sd_seeds_a"])
    # the command: a line per shared comparison, the JSON with NaN written as null
    for name, rec in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    assert results.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out",
                         str(tmp_path / "c.json")]) == 0
    assert "vae_s SR k = 18, 8 real simulations per rhythm: +0.050 (+0.040 to +0.060) against " \
           "+0.020 (+0.010 to +0.030); paired by seed, b - a -0.050" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["runs"][0]["corr_across_seeds"] is None
    with pytest.raises(SystemExit):
        results.main([str(tmp_path / "a.json"), str(tmp_path / "absent.json")])
    assert "record_b: no file" in capsys.readouterr().err


def test_compare_studies_gain_difference_paired_by_seed_by_hand():
    """The difference of one comparison's gain between two records, per seed from the runs'
    mean correlations: (k = 18 minus the arm's k = 0) in b minus the same in a, with its t
    interval; k = 0 runs count whatever generator they are filed under, and a seed missing a run
    in either record is left out."""
    def record(base, k18):
        runs = [{"generator": "none", "n_real_sims": 16, "k": 0, "seed": s, "corr": {"SR": c}}
                for s, c in enumerate(base)]
        runs += [{"generator": "vae_s", "n_real_sims": 16, "k": 18, "seed": s, "corr": {"SR": c}}
                 for s, c in enumerate(k18) if c is not None]
        return {"runs": runs, "primary": {"generator": "vae_s", "n_real_sims": 16, "ks": [18],
                                          "rhythm": "SR", "decision": "no change",
                                          "mean_gain": 0.0}}

    a = record([0.30, 0.40, 0.50, 0.60], [0.35, 0.40, 0.55, None])   # gains .05 0 .05 -
    b = record([0.30, 0.40, 0.50, 0.60], [0.40, 0.43, 0.56, 0.70])   # gains .10 .03 .06 .10
    (c,) = results.compare_studies(a, b)["comparisons"]
    d = np.array([0.05, 0.03, 0.01])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    got = c["b_minus_a"]
    assert got["n_seeds"] == 3 and got["mean"] == pytest.approx(0.03)
    assert (got["t_lo"], got["t_hi"]) == pytest.approx((0.03 - half, 0.03 + half))
    assert got["p_t"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    # the other way round, the opposite difference
    assert results.compare_studies(b, a)["comparisons"][0]["b_minus_a"]["mean"] == \
        pytest.approx(-0.03)


def test_compare_studies_reads_the_filter_ablations_rows_by_hand(capsys, tmp_path):
    """07's record: its rows against k = 0 are compared filter by filter (the gain difference
    paired by seed from the runs of that filter and the shared k = 0 runs); its rows against no
    filter are left out."""
    import json

    def record(k18_pool0, k18_pool18):
        runs = [{"generator": "none", "n_real_sims": 8, "filter_pool": 0, "k": 0, "seed": s,
                 "corr": {"SR": 0.2}} for s in range(3)]
        runs += [{"generator": "vae_s", "n_real_sims": 8, "filter_pool": pool, "k": 18,
                  "seed": s, "corr": {"SR": c}}
                 for pool, corrs in ((0, k18_pool0), (18, k18_pool18))
                 for s, c in enumerate(corrs)]
        rows = [{"generator": "vae_s", "n_real_sims": 8, "k": 18, "filter_pool": pool,
                 "reference": ref, "rhythm": "SR", "mean_gain": 0.1, "boot_lo": 0.0,
                 "boot_hi": 0.2, "p_holm": 0.5}
                for pool, ref in ((0, "k = 0"), (18, "k = 0"), (0, "no filter"))]
        return {"runs": runs, "rows": rows}

    a = record([0.30, 0.30, 0.30], [0.25, 0.25, 0.25])
    b = record([0.31, 0.32, 0.33], [0.25, 0.24, 0.23])
    comparisons = results.compare_studies(a, b)["comparisons"]
    assert [(c["filter_pool"], c["a"]["role"]) for c in comparisons] == [(0, "filter"),
                                                                         (18, "filter")]
    by_pool = {c["filter_pool"]: c["b_minus_a"]["mean"] for c in comparisons}
    assert by_pool[0] == pytest.approx(0.02) and by_pool[18] == pytest.approx(-0.01)
    for name, rec in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    assert results.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "8 real simulations per rhythm, filter_pool 18: +0.100" in out
    assert "8 real simulations per rhythm: +0.100" in out   # the paper's filter, unnamed


def test_compare_studies_two_level_interval_of_the_difference_by_hand(tmp_path, capsys):
    """Records whose runs keep per-simulation scores: the difference also gets the two-level
    interval, the bootstrap (:func:`results.bootstrap_interval`) of the per-seed,
    per-simulation matrix (gain in b minus gain in a); a record without those scores gives the
    seed-level interval only."""
    def record(base, k18):   # base, k18: seeds x 2 test simulations of SR
        def run(gen, k, s, sims):
            return {"generator": gen, "n_real_sims": 8, "filter_pool": 0, "k": k, "seed": s,
                    "corr": {"SR": float(np.mean(sims))},
                    "per_simulation": {"sim_id": [40, 41], "rhythm": ["SR", "SR"],
                                       "corr": list(sims)}}
        runs = [run("none", 0, s, b) for s, b in enumerate(base)]
        runs += [run("vae_s", 18, s, c) for s, c in enumerate(k18)]
        return {"runs": runs, "secondary": [{"generator": "vae_s", "n_real_sims": 8,
                                             "filter_pool": 0, "k": 18, "rhythm": "SR",
                                             "mean_gain": 0.0, "boot_lo": 0.0,
                                             "boot_hi": 0.0}]}

    base = [(0.2, 0.4), (0.3, 0.5), (0.1, 0.3)]
    a = record(base, [(0.25, 0.40), (0.30, 0.55), (0.10, 0.30)])
    b = record(base, [(0.30, 0.45), (0.35, 0.55), (0.20, 0.30)])
    (c,) = results.compare_studies(a, b)["comparisons"]
    d = np.array([[0.05, 0.05], [0.05, 0.0], [0.10, 0.0]])   # (b - base) - (a - base)
    want = results.bootstrap_interval(d)
    got = c["b_minus_a"]
    assert got["mean"] == pytest.approx(d.mean(axis=1).mean())
    assert (got["boot_lo"], got["boot_hi"]) == pytest.approx((want["lo"], want["hi"]))
    assert got["boot_lo"] >= 0 and got["boot_hi"] <= 0.1
    import json
    for name, rec in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    assert results.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert (f"3 seeds; seeds and test simulations {want['lo']:+.3f} to {want['hi']:+.3f})"
            in capsys.readouterr().out)
    for run in a["runs"]:
        del run["per_simulation"]
    assert "boot_lo" not in results.compare_studies(a, b)["comparisons"][0]["b_minus_a"]
