"""The notebooks run end to end through papermill with the smoke profile; their stored results are
read back and checked against the physics and the data contract."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_nbval

from egmlib import data
from egmlib.augmentation import augment
from egmlib.core import params
from egmlib.core.runs import json_ready, repo_root
from egmlib.workflow import results
from egmlib.workflow.pipeline import NotebookError, execute_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

ROOT = repo_root(Path(__file__).parent)


def test_01_data_results(smoke_run: Path) -> None:
    result = json.loads((smoke_run / "01_data" / "result.json").read_text())
    prof = params.load_profile(ROOT / "params" / "smoke.yaml")
    p = params.validate("01_data", prof)
    # the stored result describes the data set on disk, which loads with verified checksums
    ds = data.load_dataset(smoke_run)
    assert result["egm_shape"] == list(ds.egm.shape)
    assert ds.egm.shape[1:] == (p.T, p.n_rec)
    assert ds.bspm.shape[1:] == (p.n_torsos, p.T, 64)
    assert sum(result["counts"].values()) == len(ds.egm)
    # physics read back from the notebook's stored result
    sr, af = result["physics"]["SR"], result["physics"]["AF"]
    assert sr["n_sims"] == p.n_sr and af["n_sims"] == p.n_af
    assert 0.6 <= sr["cv_min_m_s"] <= sr["cv_max_m_s"] <= 1.2
    assert sr["activated_min"] == 1.0
    assert sr["df_equals_pacing"] == 1.0
    assert 3.0 <= af["df_min_hz"] <= af["df_p10_hz"] <= af["df_p90_hz"] <= af["df_max_hz"] <= 10.0
    assert af["wavefronts_min"] > 1.0
    reg = result["af_regularity"]
    assert reg["n_sims"] == p.n_af and reg["df_median_hz_p10"] <= reg["df_median_hz_p90"]
    assert 0.0 < reg["oi_median_p50"] <= 1.0 and reg["cl_cv_p50"] > 0.0
    # the sampling study: 500 Hz keeps everything, the window rate less of the steepest slope
    samp = result["sampling"]
    assert samp["500"]["slope_ratio"] == 1.0 and samp["100"]["slope_ratio"] < 1.0
    assert result["barr_heart"]["method"] == "hull"  # the idealised atria's electrodes
    # figures go to the run directory, not to the committed figures/
    for name in ("01_geometry", "01_snapshots_SR", "01_snapshots_AF", "01_activation_SR",
                 "01_egm_examples", "01_psd_df", "01_af_regularity", "01_torsos", "01_bspm_maps",
                 "01_tikhonov"):
        assert (smoke_run / "figures" / f"{name}.png").stat().st_size > 10_000, name
    assert (smoke_run / "notebooks" / "01_data.ipynb").exists()
    tik = result["tikhonov"]
    for rhythm in data.LABELS:
        assert np.isfinite(tik[rhythm]["corr_mean"]) and tik[rhythm]["rmse_mean"] > 0


def test_bad_parameter_stops_before_work(tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    with pytest.raises(NotebookError, match=r"ParameterError.*n_rec"):
        execute_notebook(ROOT / "notebooks" / "01_data.ipynb", out,
                         parameters={"n_rec": -3, "run_dir": str(tmp_path / "run")},
                         timeout=300)
    assert not out.exists()
    assert not (tmp_path / "run" / "data").exists()


@pytest.mark.parametrize("kind", ["vae_s", "vae_c"])
def test_generator_notebooks_results(smoke_run: Path, kind: str) -> None:
    from egmlib.generators import synthesis

    result = json.loads((smoke_run / kind / "result.json").read_text())
    p = params.validate(synthesis.GENERATORS[kind][0],
                        params.load_profile(ROOT / "params" / "smoke.yaml"))
    rhythms = synthesis.GENERATORS[kind][1]
    assert set(result["reconstruction"]) == set(rhythms)
    for rhythm in rhythms:
        r = result["reconstruction"][rhythm]
        assert -1.0 <= r["corr_mean"] <= 1.0 and r["rmse_mean"] > 0 and r["lsd_mean"] > 0
        stored = synthesis.load_synthetic(smoke_run, kind, rhythm)
        # the kept set is the n_keep lowest-scored of n_generate, as the result says
        assert stored["kept"].shape[0] == p.n_keep == result["synthetic"][rhythm]["kept"][0]
        assert len(stored["all_scores"]) == p.n_generate
        assert np.allclose(np.sort(stored["all_scores"])[:p.n_keep], stored["scores"])
        assert stored["scores"].max() == pytest.approx(result["synthetic"][rhythm]["score_max"])
    h = result["history"]
    assert 1 <= h["epochs_run"] <= p.epochs and 0 <= h["best_epoch"] < h["epochs_run"]
    # the checkpoint reloads and reproduces the stored synthetic windows bit for bit
    model, norm, _ = synthesis.load_generator(smoke_run, kind)
    ds = data.load_dataset(smoke_run)
    again = synthesis.synthesize(model, norm, ds, kind, rhythms[0], p.n_generate, p.n_keep,
                                 p.seed, p.gen_mode)
    np.testing.assert_array_equal(again["kept"],
                                  synthesis.load_synthetic(smoke_run, kind, rhythms[0])["kept"])
    if kind == "vae_c":  # the collapse detector and the memorising reference, per rhythm
        for rhythm in data.LABELS:
            assert 0 <= result["collapse"][rhythm]["active_units"] <= model.config.code_size
            assert -1.0 <= result["nearest_training_window"][rhythm]["corr_mean"] <= 1.0
        # where generated AF's rate comes from: the stored report is the library's, remade from
        # the stored windows and checkpoint
        from egmlib.evaluation import evaluator

        af = data.LABELS.index("AF")
        again = evaluator.periodicity_report(
            model, norm, synthesis.load_synthetic(smoke_run, kind, "AF")["generated"],
            np.asarray(ds.egm[ds.part("test", "AF")]), af, float(ds.manifest["fs"]))
        assert json.loads(json.dumps(again)) == result["af_periodicity"]
        first_map = {"vector": "dense map", "sequence": "sequence map"}
        assert model.config.latent_layout == p.latent_layout == "sequence"  # 03's default
        assert (result["af_periodicity"]["decoder"]["stages"][0]["stage"]
                == first_map[model.config.latent_layout])


def test_04_fidelity_results(smoke_run: Path) -> None:
    result = json.loads((smoke_run / "04_fidelity" / "result.json").read_text())
    rows = {(r["set"], r["rhythm"]): r for r in result["rows"]}
    # the three model rows of the paper's table and the reference rows are all there
    for key in (("vae_s", "SR"), ("vae_c", "SR"), ("vae_c", "AF"), ("ceiling", "SR"),
                ("ceiling", "AF")):
        assert key in rows, key
    p = params.validate("04_fidelity", params.load_profile(ROOT / "params" / "smoke.yaml"))
    assert rows[("vae_s", "SR")]["n"] == p.n_eval
    # real windows of other simulations are at least as close in spectrum as untrained VAEs
    assert (rows[("ceiling", "SR")]["morphology"]["lsd_mean"]
            < rows[("vae_s", "SR")]["morphology"]["lsd_mean"])
    assert result["paper"]["lsd_mean"] == 2.39 and result["paper"]["corr_mean"] == 0.56
    for name in ("04_psd", "04_df", "04_latent", "04_examples"):
        assert (smoke_run / "figures" / f"{name}.png").exists(), name


def test_05_augment_results(smoke_run: Path) -> None:
    p = params.validate("05_augment", params.load_profile(ROOT / "params" / "smoke.yaml"))
    path = smoke_run / "05_augment" / f"{p.generator}_k{p.k}_s{p.seed}" / "result.json"
    r = json.loads(path.read_text())
    ds = data.load_dataset(smoke_run)
    n_train_torsos = int((ds.torso_split == 0).sum())
    assert r["k"] == p.k and r["generator"] == p.generator
    # k synthetic pairs per training torso, and every real training window on every torso
    assert r["counts"]["n_synth"] == p.k * n_train_torsos
    assert r["counts"]["n_real"] == int(ds.part("train").sum()) * n_train_torsos
    for method in ("network", "tikhonov"):
        for rhythm in data.LABELS:
            m = r[method][rhythm]
            assert -1 <= m["corr_mean"] <= 1 and m["rmse_mean"] > 0, (method, rhythm)
    # every baseline on the same test BSPMs, read from the cache the notebook shares with the
    # sweep; the L-curve row is the record's Tikhonov
    base = r["test"]["baselines"]
    assert set(base) == {"lcurve", "gcv", "val", "val_rhythm", "mean"}
    assert base["lcurve"]["AF"] == r["tikhonov"]["AF"]
    cache = json.loads((smoke_run / "05_augment" / f"baselines_snr{p.snr_db:g}_seed"
                        f"{augment.EVAL_NOISE_SEED}.json").read_text())
    assert cache["baselines"]["val"] == base["val"]
    assert abs(base["mean"]["all"]["corr_mean"]) < 0.2  # the floor ignores its input
    hist = r["history"]
    assert hist["epochs_run"] == len(hist["val_corr"]) <= p.recon_epochs
    for name in ("05_lambda_search", f"05_training_{p.generator}_k{p.k}"):
        assert (smoke_run / "figures" / f"{name}.png").exists(), name


def test_05_papermill_cli_single_run(smoke_run: Path, tmp_path: Path) -> None:
    """The README's single augmentation run, ``papermill notebooks/05_augment.ipynb out.ipynb -p
    k 18``, and its profile-file form, ``papermill notebooks/05_augment.ipynb out.ipynb -f
    params/smoke.yaml -p k 2``, through papermill's own CLI on the smoke run (with a k its
    generators kept: the smoke profile keeps 5). The profile file names parameters of every
    notebook and of the sweep; 05 accepts and ignores the others, and ``-p`` beats the profile's
    ``k: 4``."""
    import subprocess
    import sys

    out_dir = tmp_path / "k2"
    subprocess.run([str(Path(sys.executable).parent / "papermill"), "notebooks/05_augment.ipynb",
                    str(tmp_path / "out.ipynb"), "-f", "params/smoke.yaml", "-p", "run_dir",
                    str(smoke_run), "-p", "k", "2", "-p", "out_dir", str(out_dir),
                    "--no-progress-bar"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "EGMLIB_QUIET": "1"})
    r = json.loads((out_dir / "result.json").read_text())
    assert r["k"] == 2 and r["generator"] == "vae_s"
    n_train_torsos = int((data.load_dataset(smoke_run).torso_split == 0).sum())
    assert r["counts"]["n_synth"] == 2 * n_train_torsos


def test_sweep_and_06(smoke_run: Path, tmp_path: Path) -> None:
    """A small study (two arms of real simulations, k = 0 and 2, two seeds) through the Dask
    path on local cores, then 06_sweep reads it: the primary test, the secondary family."""
    from egmlib.workflow.sweep import expand_grid, input_fingerprint, run_sweep, shared_baseline

    sweep_dir = smoke_run / "sweep"
    # as the CLI plans it: k = 0 once per seed and arm (generator "none"), inputs recorded per run
    points = shared_baseline(expand_grid({"generator": ["vae_s"], "n_real_sims": [1, 0],
                                          "k": [0, 2], "seed": [0, 1]}))
    kw = {"base_parameters": {"run_dir": str(smoke_run)},
          "profile_file": ROOT / "params" / "smoke.yaml", "timeout": 600,
          "inputs": lambda point: input_fingerprint(smoke_run, [point["generator"]])}
    report = run_sweep(ROOT / "notebooks" / "05_augment.ipynb", points, sweep_dir, workers=2,
                       **kw)
    assert report.ok and len(report.done) == 8
    again = run_sweep(ROOT / "notebooks" / "05_augment.ipynb", points, sweep_dir, workers=1,
                      **kw)
    assert len(again.skipped) == 8 and not again.done
    execute_notebook(ROOT / "notebooks" / "06_sweep.ipynb", tmp_path / "06.ipynb",
                     parameters={"profile": "smoke", "run_dir": str(smoke_run),
                                 "sweep_dir": str(sweep_dir), "range_k": [2],
                                 "learn_threshold": -1.0}, timeout=300)
    r = json.loads((smoke_run / "06_sweep" / "result.json").read_text())
    assert r["n_runs"] == 8 and r["n_stale"] == 0 and r["seeds"] == [0, 1]
    # every arm's k = 0 runs learn at threshold -1: the scarcest arm (1 simulation) is primary
    assert set(r["validation_by_arm"]) == {"1", "0"}
    p = r["primary"]
    assert (p["n_real_sims"], p["ks"], p["n_seeds"], p["generator"]) == (1, [2], 2, "vae_s")
    assert p["decision"] in ("gain", "loss", "no change") and p["boot_lo"] <= p["boot_hi"]
    runs = {(x["n_real_sims"], x["k"], x["seed"]): x["corr"]["SR"] for x in r["runs"]}
    want = np.mean([runs[(1, 2, s)] - runs[(1, 0, s)] for s in (0, 1)])
    assert p["mean_gain"] == pytest.approx(want, abs=1e-4)  # per-simulation means, rounded
    # the secondary family: the other rhythm of the primary arm, both rhythms of all data
    assert sorted((x["n_real_sims"], x["rhythm"]) for x in r["secondary"]) == [
        (0, "AF"), (0, "SR"), (1, "AF")]
    assert all(x["p_holm"] >= x["p_t"] or np.isnan(x["p_t"]) for x in r["secondary"])
    assert any("secondary comparisons" in line for line in r["reading"])
    # the record alone remakes its tests (each run's per-simulation scores are in it)
    again = results.runs_from_rows(r["runs"])
    assert json_ready(results.primary_test(again, "vae_s", "SR", [2], 1)) == r["primary"]
    assert json_ready(results.scarcity_table(again, exclude=r["primary"])) == r["secondary"]
    assert json_ready(results.validation_by_arm(again)) == r["validation_by_arm"]
    for name in ("06_gain_by_arm", "06_corr_vs_k"):
        assert (smoke_run / "figures" / f"{name}.png").stat().st_size > 10_000, name
    # nbval re-executes the aggregation: its marked cells (the primary test, the collapsed runs,
    # the reading) print the same
    assert "# NBVAL_CHECK_OUTPUT" in (tmp_path / "06.ipynb").read_text(encoding="utf-8")
    run_nbval([tmp_path / "06.ipynb"], rootdir=tmp_path)


def test_the_chain_runs_unchanged_on_the_ct_anatomy(tmp_path: Path, all_cores: None) -> None:
    """The README's ``pipeline --profile smoke -p anatomy ct_biatrial`` on the real CT atria
    (remeshed to the smoke profile's 4 mm): 01 builds the data set and its physics holds there,
    and the data set serves a generator (02) and the reconstruction network (05) unchanged. 03
    and 04 read the same windows as 02 and are left to the idealised smoke chain (and to the
    committed CT records). With 64 sites instead of the smoke profile's 32 (whose electrodes
    happen to lie on two disjoint convex hulls), the Barr heart surface is the wrapped one, as at
    the default sizes."""
    from egmlib.workflow import pipeline

    assert pipeline.main(["--profile", "smoke", "--run-dir", str(tmp_path), "--timeout", "900",
                          "--only", "01_data,02_vae_s,05_augment",
                          "-p", "anatomy", "ct_biatrial", "-p", "n_rec", "64"]) == 0
    result = json.loads((tmp_path / "01_data" / "result.json").read_text())
    sr, af = result["physics"]["SR"], result["physics"]["AF"]
    assert sr["activated_min"] == 1.0 and 0.6 <= sr["cv_min_m_s"] <= sr["cv_max_m_s"] <= 1.2
    assert 3.0 <= af["df_min_hz"] <= af["df_max_hz"] <= 10.0
    ds = data.load_dataset(tmp_path)
    assert ds.manifest["params"]["anatomy"] == "ct_biatrial"
    assert ds.manifest["barr_heart"]["method"] == "wrap"
    assert result["formulation_agreement"]["corr_median"] > 0.7
    aug = json.loads(next((tmp_path / "05_augment").rglob("result.json")).read_text())
    for method in ("network", "tikhonov"):
        for rhythm in data.LABELS:
            assert np.isfinite(aug[method][rhythm]["corr_mean"]), (method, rhythm)
