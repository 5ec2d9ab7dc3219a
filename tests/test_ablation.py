"""The filter ablation (egmlib.workflow.ablation): its runs, its comparisons on hand-made runs,
its parameters and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_nbval
from scipy import stats

from egmlib.core import params
from egmlib.workflow import ablation, results

SIMS = (10, 11, 12)


def _run(gen, k, seed, pool, sims, n_real=8, val=0.3):
    ids = sorted(sims)
    return {"k": k, "seed": seed, "generator": gen, "n_real_sims": n_real, "filter_pool": pool,
            "network": {"SR": {"corr_mean": float(np.mean([sims[s] for s in ids]))}},
            "history": {"val_corr_best": val, "best_epoch": 3, "epochs_run": 8},
            "test": {"per_simulation": {"sim_id": ids, "rhythm": ["SR"] * len(ids),
                                        "n_windows": [5] * len(ids),
                                        "corr": [sims[s] for s in ids]}}}


def _hand_made(n_seeds=10):
    """k = 0 runs and VAE-S k = 18 runs with the paper's filter (+0.05 on every simulation),
    the best 18 of 72 (+0.03) and no filter (+0.01), each seed's gain with its own noise; and
    runs of another arm that must not enter."""
    rng = np.random.default_rng(1)
    runs, gains = [], {0: [], 72: [], 18: []}
    for seed in range(n_seeds):
        base = {s: 0.2 + 0.1 * rng.standard_normal() for s in SIMS}
        runs.append(_run("none", 0, seed, 0, base, val=0.2))
        runs.append(_run("none", 0, seed, 0, {s: 0.0 for s in SIMS}, n_real=16))
        for pool, shift in ((0, 0.05), (72, 0.03), (18, 0.01)):
            g = shift + 0.005 * rng.standard_normal()
            gains[pool].append(g)
            runs.append(_run("vae_s", 18, seed, pool, {s: v + g for s, v in base.items()},
                             val=0.2 + shift))
    return runs, {p: np.asarray(g) for p, g in gains.items()}


def test_pools_put_the_papers_filter_first_and_no_filter_last():
    assert ablation.pools_of(18, [72, 0, 18]) == [0, 72, 18]
    assert ablation.pools_of(6, [0]) == [0, 6]
    assert ablation.fraction_kept(18, 0, 200) == pytest.approx(0.09)
    assert ablation.fraction_kept(18, 36, 200) == pytest.approx(0.5)


def test_points_share_one_k0_run_per_seed_in_the_ablation_arm():
    config = params.SweepConfig(sweep_seeds=[3, 4], ablation_k=[6, 18],
                                ablation_filter_pools=[0, 72], ablation_n_real_sims=4)
    points = ablation.ablation_points(config)
    assert len(points) == 2 * (1 + 3 + 3)
    assert all(p["n_real_sims"] == 4 for p in points)
    k0 = [p for p in points if p["k"] == 0]
    assert [(p["generator"], p["seed"], p["filter_pool"]) for p in k0] == [
        ("none", 3, 0), ("none", 4, 0)]
    assert sorted(p["filter_pool"] for p in points if p["k"] == 6 and p["seed"] == 3) == [0, 6, 72]


def test_a_pool_smaller_than_k_is_refused_naming_the_parameter():
    with pytest.raises(params.ParameterError, match=r"ablation_filter_pools.*at least"):
        params.SweepConfig(ablation_k=[18], ablation_filter_pools=[0, 10])
    with pytest.raises(params.ParameterError, match="ablation_generator"):
        params.SweepConfig(ablation_generator="gan")


def test_filter_table_against_k0_and_against_no_filter():
    runs, gains = _hand_made()
    rows = ablation.filter_table(runs, "vae_s", 8, [18], [0, 72], n_boot=500)
    key = {(r["filter_pool"], r["reference"]): r for r in rows}
    assert sorted(key) == [(0, "k = 0"), (0, "no filter"), (18, "k = 0"), (72, "k = 0"),
                           (72, "no filter")]
    assert all(r["rhythm"] == "SR" and r["n_seeds"] == 10 and r["n_sims"] == 3 for r in rows)
    for pool in (0, 72, 18):
        r = key[(pool, "k = 0")]
        assert r["mean_gain"] == pytest.approx(gains[pool].mean())
        assert r["p_t"] == pytest.approx(stats.ttest_1samp(gains[pool], 0).pvalue)
    for pool in (0, 72):  # the filter's own effect: paired with the unfiltered run of the seed
        d = gains[pool] - gains[18]
        r = key[(pool, "no filter")]
        assert r["mean_gain"] == pytest.approx(d.mean())
        assert r["p_t"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
        assert r["boot_lo"] > 0
    p = np.array([r["p_t"] for r in rows])
    np.testing.assert_allclose([r["p_holm"] for r in rows], results.holm(p))
    reading = ablation.filter_reading(rows, n_generated=200)
    assert reading[0].startswith("SR, k = 18, against k = 0: paper's: best 18 of 200 (9%) +0.05")
    assert "best 18 of 72 (25%) +0.03" in reading[0]
    assert "none (first 18 drawn) +0.01" in reading[0]
    table = ablation.format_filter_table(rows, 200).splitlines()
    assert [line.split()[:2] for line in table[2:]] == [["18", "SR"]] * 3
    assert "paper's: best 18 of 200 (9%)" in table[2] and table[4].rstrip().endswith("-")
    assert reading[1].endswith("2 of 2 differ at 0.05 after Holm's correction.")
    val = ablation.validation_by_pool(runs)
    assert val["k=18 pool=0"] == pytest.approx(0.25) and val["k=18 pool=18"] == pytest.approx(0.21)


def _profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params" / "smoke.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_cli_checks_k_and_the_pools_against_the_generated_windows(
        smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture):
    n_generated, n_kept = ablation.drawn_and_kept(smoke_run, "vae_s")
    assert (n_generated, n_kept) == (20, 5)  # params/smoke.yaml: n_generate, n_keep
    monkeypatch.setattr(ablation, "repo_root", lambda: tmp_path)
    cli = ["--profile", "smoke", "--run-dir", str(smoke_run), "--dry-run"]
    _profile(tmp_path, "ablation_k: [4]\nablation_filter_pools: [0, 72]\n")
    assert ablation.main(cli) == 2
    assert "ablation_filter_pools: got [72]; allowed: 0..20" in capsys.readouterr().err
    _profile(tmp_path, "ablation_k: [8]\nablation_filter_pools: [0]\n")
    assert ablation.main(cli) == 2
    assert "ablation_k: got [8]; allowed: 1..5" in capsys.readouterr().err
    _profile(tmp_path, "ablation_k: [4]\nablation_filter_pools: [0, 2]\n")
    assert ablation.main(cli) == 2
    assert "parameter 'ablation_filter_pools': got [2]" in capsys.readouterr().err
    _profile(tmp_path, "ablation_k: [4]\nablation_filter_pools: [0]\n")
    empty = tmp_path / "no_generators"
    empty.mkdir()
    assert ablation.main(["--profile", "smoke", "--run-dir", str(empty), "--dry-run"]) == 2
    assert "needs vae_s's synthetic windows" in capsys.readouterr().err


def test_cli_runs_the_ablation_and_07_writes_its_record(smoke_run: Path, all_cores: None):
    """The smoke profile's ablation for real: k = 4 with the paper's filter (best 4 of 20), the
    best 4 of 10 and no filter, plus k = 0, two seeds, on two local worker processes, then
    notebook 07_filter, which nbval re-executes."""
    assert ablation.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--timeout",
                          "600", "--workers", "2"]) == 0
    record = json.loads((smoke_run / "results" / "07_filter.json").read_text())
    assert record["n_runs"] == 8 and record["n_stale"] == 0
    assert record["design"]["seeds"] == [0, 1] and record["design"]["n_generated"] == 20
    assert record["design"]["fraction_kept"] == {"k=4 pool=0": 0.2, "k=4 pool=10": 0.4,
                                                 "k=4 pool=4": 1.0}
    rows = record["rows"]
    assert sorted({(r["filter_pool"], r["reference"]) for r in rows}) == [
        (0, "k = 0"), (0, "no filter"), (4, "k = 0"), (10, "k = 0"), (10, "no filter")]
    runs = {(x["filter_pool"], x["k"], x["seed"]): x["corr"] for x in record["runs"]}
    for r in rows:  # each row's mean is the mean over seeds of the paired per-run differences
        ref = (0, 0) if r["reference"] == "k = 0" else (4, 4)
        want = np.mean([runs[(r["filter_pool"], 4, s)][r["rhythm"]] - runs[(*ref, s)][r["rhythm"]]
                        for s in (0, 1)])
        assert r["mean_gain"] == pytest.approx(want, abs=1e-4), r
    assert set(record["validation"]) == {"k=0", "k=4 pool=0", "k=4 pool=10", "k=4 pool=4"}
    assert record["reading"][0].startswith("SR, k = 4, against k = 0: paper's: best 4 of 20 (20%)")
    assert (smoke_run / "figures" / "07_filter.png").stat().st_size > 10_000
    # nbval re-executes 07: its marked cells (the table, the validation means, the reading) print
    # the same
    executed = smoke_run / "notebooks" / "07_filter.ipynb"
    assert executed.read_text(encoding="utf-8").count("# NBVAL_CHECK_OUTPUT") == 3
    run_nbval([executed], rootdir=smoke_run)


def test_same_as_sweep_pairs_runs_by_their_grid_point():
    runs, _ = _hand_made(n_seeds=2)
    rows = results.run_rows(runs)
    theirs = [dict(r, corr={"SR": r["corr"]["SR"] + (0.01 if r["k"] else 0.0)}) for r in rows
              if r["filter_pool"] in (0,)]
    same = ablation.same_as_sweep(runs, theirs)
    assert same["n_shared"] == len(theirs) and same["max_abs_diff"] == pytest.approx(0.01)
    assert ablation.same_as_sweep(runs, []) == {"n_shared": 0, "max_abs_diff": None}


def test_sweep_check_reads_the_record_file(tmp_path: Path):
    runs, _ = _hand_made(n_seeds=2)
    record = tmp_path / "06_sweep.json"
    assert ablation.sweep_check(runs, record) is None
    assert ablation.format_sweep_check(None, "x.json") == (
        "no sweep record at x.json to compare with")
    record.write_text(json.dumps({"runs": results.run_rows(runs)}))
    check = ablation.sweep_check(runs, record)
    assert check == {"n_shared": len(runs), "max_abs_diff": 0.0}
    assert ablation.format_sweep_check(check, "x.json") == (
        f"{len(runs)} runs shared with x.json; largest difference of test correlation: 0")
