"""egmlib.workflow.sweep: grids, keys, skip/redo rules, failures, the Dask path and the CLI.

The swept notebook is tests/fixtures/probe.ipynb: it writes the parameters it received to
``<out_dir>/result.json`` and then raises ValueError when ``fail`` is true.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from egmlib.core.runs import load_json, save_json
from egmlib.workflow import sweep
from egmlib.workflow.sweep import expand_grid, is_finished, plan_sweep, run_key, run_sweep

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROBE = FIXTURES / "probe.ipynb"


def _result(record) -> dict:
    return json.loads((record.folder / "result.json").read_text())


def test_expand_grid_order_and_errors():
    grid = expand_grid({"k": [0, 2, 25], "seed": [0, 1], "generator": ["vae_s"]})
    assert len(grid) == 6
    assert grid[0] == {"k": 0, "seed": 0, "generator": "vae_s"}
    assert grid[1] == {"k": 0, "seed": 1, "generator": "vae_s"}
    assert grid[-1] == {"k": 25, "seed": 1, "generator": "vae_s"}
    for bad in ({"k": []}, {"k": 3}, {"k": "abc"}):
        with pytest.raises(ValueError, match="'k'"):
            expand_grid(bad)


def test_run_key_is_stable_short_and_order_free():
    key = run_key({"k": 2, "seed": 1}, "05_augment")
    assert key == run_key({"seed": 1, "k": 2}, "05_augment")
    assert len(key) == 12 and int(key, 16) >= 0
    assert key != run_key({"k": 2, "seed": 2}, "05_augment")
    assert key != run_key({"k": 2, "seed": 1}, "other")
    assert run_key({"k": (1, 2)}) == run_key({"k": [1, 2]})
    # the same on every machine and Python run (a hash of the canonical JSON)
    assert run_key({"k": 2, "seed": 1}, "05_augment") == key


@pytest.mark.notebook
def test_serial_sweep_then_rerun_skips(tmp_path):
    grid = {"x": [1, 2]}
    report = run_sweep(PROBE, grid, tmp_path, base_parameters={"seed": 4}, workers=1, timeout=60)
    assert report.mode == "serial" and report.ok
    assert [r.params for r in report.done] == [{"x": 1}, {"x": 2}]
    assert not report.skipped and not report.failed
    for rec in report.done:
        result = _result(rec)
        assert result["x"] == rec.params["x"] and result["seed"] == 4
        # a serial run has every core: the one-thread environment is for parallel workers
        assert result["omp_num_threads"] == os.environ.get("OMP_NUM_THREADS")
        assert rec.folder == tmp_path / run_key(rec.params, "probe")
        assert load_json(rec.folder / "params.json") == {
            "notebook": "probe.ipynb", "parameters": {"seed": 4, "x": rec.params["x"]}}
        assert load_json(rec.folder / "DONE")["provenance"]["params"]["x"] == rec.params["x"]
        assert rec.notebook == rec.folder / "probe.ipynb" and rec.notebook.is_file()
        assert "# finished in" in rec.log.read_text()
        assert rec.wall_s > 0
    assert "2 runs: 2 done, 0 skipped" in report.summary()
    saved = load_json(tmp_path / "sweep.json")
    assert [r["status"] for r in saved["runs"]] == ["done", "done"]
    assert saved["grid"] == {"x": [1, 2]}
    mtimes = [(r.folder / "result.json").stat().st_mtime_ns for r in report.done]

    again = run_sweep(PROBE, grid, tmp_path, base_parameters={"seed": 4}, workers=1, timeout=60)
    assert not again.done and not again.failed
    assert [r.key for r in again.skipped] == [r.key for r in report.done]
    assert [r.wall_s for r in again.skipped] == pytest.approx([r.wall_s for r in report.done],
                                                              abs=1e-3)
    assert [(r.folder / "result.json").stat().st_mtime_ns for r in again.skipped] == mtimes
    # other base parameters: the same folders, but not finished any more
    planned = plan_sweep(PROBE, grid, tmp_path, base_parameters={"seed": 5})
    assert [p.folder for p in planned] == [r.folder for r in report.done]
    assert [p.finished for p in planned] == [False, False]
    # other inputs (a rebuilt data set, a retrained generator): not finished either
    planned = plan_sweep(PROBE, grid, tmp_path, base_parameters={"seed": 4},
                         inputs={"data/manifest.json": "0123456789abcdef"})
    assert [p.finished for p in planned] == [False, False]


def test_input_fingerprint_follows_the_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "vae_s").mkdir()
    manifest = tmp_path / "data" / "manifest.json"
    entry = {"files": {"egm.npy": {"sha256": "aa", "shape": [2]}}, "params": {"seed": 0}}
    manifest.write_text(json.dumps({**entry, "provenance": {"created_utc": "2026-12-01"}}))
    npz = tmp_path / "vae_s" / "synthetic_SR.npz"
    kept = np.arange(6, dtype=np.float32).reshape(1, 3, 2)
    np.savez(npz, kept=kept, provenance=np.array("run 1"))
    fp = sweep.input_fingerprint(tmp_path, ["vae_s", "vae_c", "none"])
    assert set(fp) == {"data/manifest.json", "vae_s/synthetic_SR.npz"}
    # the data set by its files' checksums and its parameters, not by the manifest's bytes:
    # sha256 of '{"files": {"egm.npy": "aa"}, "params": {"seed": 0}}'
    assert fp["data/manifest.json"] == hashlib.sha256(
        b'{"files": {"egm.npy": "aa"}, "params": {"seed": 0}}').hexdigest()[:16]
    # rebuilt with the same values at another time (a fresh make reproduce): same digest
    manifest.write_text(json.dumps({**entry, "provenance": {"created_utc": "2026-12-03"}}))
    assert sweep.input_fingerprint(tmp_path, ["vae_s"]) == fp
    # another array, or other parameters: another digest
    for other in ({**entry, "files": {"egm.npy": {"sha256": "ab"}}},
                  {**entry, "params": {"seed": 1}}):
        manifest.write_text(json.dumps(other))
        assert sweep.input_fingerprint(tmp_path, [])["data/manifest.json"] != fp[
            "data/manifest.json"]
    manifest.write_text("{}")
    with pytest.raises(ValueError, match="not a data set manifest"):
        sweep.input_fingerprint(tmp_path, [])
    manifest.write_text(json.dumps(entry))
    # the synthetic set by the values of its kept windows: dtype, shape, then the bytes
    expected = hashlib.sha256(b"<f4 (1, 3, 2)" + kept.tobytes()).hexdigest()[:16]
    assert fp["vae_s/synthetic_SR.npz"] == expected
    # written again with the same windows and another provenance (another execution of 02):
    # same digest, though the file's bytes differ
    before = sweep.file_digest(npz)
    np.savez(npz, kept=kept, provenance=np.array("run 2, another time"))
    assert sweep.file_digest(npz) != before
    assert sweep.input_fingerprint(tmp_path, ["vae_s"]) == fp
    # other windows (or the same values in another dtype): another digest
    np.savez(npz, kept=kept + 1, provenance=np.array("run 2"))
    assert sweep.input_fingerprint(tmp_path, ["vae_s"])["vae_s/synthetic_SR.npz"] != expected
    np.savez(npz, kept=kept.astype(np.float64))
    assert sweep.input_fingerprint(tmp_path, ["vae_s"])["vae_s/synthetic_SR.npz"] != expected
    np.savez(npz, generated=kept)
    with pytest.raises(KeyError, match="no array 'kept'"):
        sweep.input_fingerprint(tmp_path, ["vae_s"])


@pytest.mark.notebook
def test_failed_run_is_reported_and_only_it_is_retried(tmp_path):
    grid = {"x": [3], "fail": [False, True]}
    # two runs on a LocalCluster of two worker processes (the default path for workers > 1)
    environment = dict(os.environ)
    report = run_sweep(PROBE, grid, tmp_path, workers=2, timeout=60)
    assert report.mode.startswith("LocalCluster, 2 worker")
    # the cluster's OMP_NUM_THREADS=1 etc. did not stay in this process's environment
    assert dict(os.environ) == environment
    assert [r.params for r in report.done] == [{"x": 3, "fail": False}]
    assert [r.params for r in report.failed] == [{"x": 3, "fail": True}]
    bad = report.failed[0]
    assert bad.error == "ValueError: probe asked to fail (x=3)"
    assert bad.log == bad.folder / "run.log"
    assert "ValueError: probe asked to fail (x=3)" in bad.log.read_text()
    assert bad.notebook == bad.folder / "probe.failed.ipynb" and bad.notebook.is_file()
    assert not (bad.folder / "DONE").exists()
    assert _result(bad)["fail"] is True  # its partial output exists but does not count
    assert (_result(report.done[0])["x"], _result(report.done[0])["fail"]) == (3, False)
    summary = report.summary()
    assert "1 done, 0 skipped (finished before), 1 failed" in summary
    assert f"FAILED {bad.key}" in summary and str(bad.log) in summary
    assert load_json(tmp_path / "sweep.json")["runs"][1]["error"] == bad.error

    good_done = (report.done[0].folder / "DONE").stat().st_mtime_ns
    again = run_sweep(PROBE, grid, tmp_path, workers=2, timeout=60)
    assert again.mode == "serial"  # one run left to do: no cluster
    assert [r.key for r in again.skipped] == [report.done[0].key]
    assert [r.key for r in again.failed] == [bad.key] and not again.done
    assert (report.done[0].folder / "DONE").stat().st_mtime_ns == good_done


@pytest.mark.notebook
def test_partial_run_folder_is_redone(tmp_path):
    grid = {"x": [7]}
    (planned,) = plan_sweep(PROBE, grid, tmp_path)
    planned.folder.mkdir(parents=True)
    save_json(planned.folder / "params.json", planned.record)
    save_json(planned.folder / "result.json", {"x": -1})  # left by an interrupted run
    (planned.folder / "stale.txt").write_text("from the interrupted run")
    assert not is_finished(planned.folder, planned.record)  # no DONE marker

    report = run_sweep(PROBE, grid, tmp_path, workers=1, timeout=60)
    assert [r.key for r in report.done] == [planned.key] and not report.skipped
    assert _result(report.done[0])["x"] == 7
    assert not (planned.folder / "stale.txt").exists()  # redone from an empty folder
    assert is_finished(planned.folder, planned.record)
    # a DONE marker next to other parameters does not count either
    assert not is_finished(planned.folder, {**planned.record, "parameters": {"x": 8}})


@pytest.mark.notebook
def test_sweep_on_an_existing_dask_cluster(tmp_path):
    from distributed import LocalCluster

    from egmlib.core.process import environment_restored

    with environment_restored(), LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                              dashboard_address=None) as cluster:
        report = run_sweep(PROBE, {"x": [11, 12]}, tmp_path, base_parameters={"seed": 2},
                           scheduler_address=cluster.scheduler_address, timeout=60)
    assert report.mode == f"Dask cluster {cluster.scheduler_address}"
    assert report.ok and [r.params["x"] for r in report.done] == [11, 12]
    results = [_result(r) for r in report.done]
    assert [(r["x"], r["seed"], r["omp_num_threads"]) for r in results] == [
        (11, 2, "1"), (12, 2, "1")]
    assert all((r.folder / "DONE").is_file() for r in report.done)


def test_cli_names_the_missing_notebook(tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr(sweep, "repo_root", lambda: tmp_path)
    assert sweep.main(["--profile", "smoke"]) == 2
    assert "notebooks/05_augment.ipynb" in capsys.readouterr().err


def _cli_repo(tmp_path: Path, generators: str = "[vae_s]") -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "params").mkdir()
    shutil.copy(PROBE, root / "notebooks" / "05_augment.ipynb")
    (root / "params" / "smoke.yaml").write_text(
        f"run_dir: {tmp_path / 'run'}\nseed: 9\n"
        f"sweep_k: [0, 3]\nsweep_seeds: [1]\nsweep_generators: {generators}\n"
        "sweep_n_real_sims: [0]\n")
    return root


def test_cli_grid_from_profile_and_default(tmp_path):
    grid = sweep.profile_grid(None)
    assert grid == {"generator": ["vae_s", "vae_c"], "n_real_sims": [2, 4, 8, 16, 0],
                    "k": [0, 6, 12, 18], "seed": list(range(20))}
    assert len(expand_grid(grid)) == 2 * 5 * 4 * 20
    # k = 0 runs once per seed and n_real_sims for both generators
    assert len(sweep.shared_baseline(expand_grid(grid))) == 5 * 20 + 2 * 5 * 3 * 20
    # an arm field swept over more than its default enters the grid and the keys
    yaml = tmp_path / "p.yaml"
    yaml.write_text("sweep_filter_pool: [0, 18]\nsweep_n_real_sims: [0]\n")
    grid = sweep.profile_grid(yaml)
    assert grid["filter_pool"] == [0, 18] and "n_real_sims" not in grid


def test_restrict_grid_keeps_named_values_and_refuses_others():
    grid = {"generator": ["vae_s", "vae_c"], "k": [0, 6, 18], "seed": [0, 1]}
    sweep.restrict_grid(grid, ["k=0,18", "generator=vae_c"])
    assert grid == {"generator": ["vae_c"], "k": [0, 18], "seed": [0, 1]}
    with pytest.raises(ValueError, match=r"k: got '7'; allowed: values of the profile's grid"):
        sweep.restrict_grid(grid, ["k=7"])
    with pytest.raises(ValueError, match="NAME one of"):
        sweep.restrict_grid(grid, ["lr=1"])
    with pytest.raises(ValueError, match="integers"):
        sweep.restrict_grid(grid, ["seed=a"])


def test_cli_dry_run(tmp_path, monkeypatch, capsys):
    root = _cli_repo(tmp_path)
    monkeypatch.setattr(sweep, "repo_root", lambda: root)
    assert sweep.main(["--profile", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("2 runs (1 generator x 2 k x 1 seed, k = 0 shared by the generators); "
            "0 finished, 2 to run") in out
    assert run_key({"generator": "vae_s", "k": 3, "seed": 1}, "05_augment") in out
    assert run_key({"generator": "none", "k": 0, "seed": 1}, "05_augment") in out
    assert not (tmp_path / "run" / "sweep").exists()


def test_cli_generator_filter(tmp_path, monkeypatch, capsys):
    root = _cli_repo(tmp_path, generators="[vae_s, vae_c]")
    monkeypatch.setattr(sweep, "repo_root", lambda: root)
    assert sweep.main(["--profile", "smoke", "--dry-run"]) == 0
    assert "3 runs (2 generator x 2 k x 1 seed" in capsys.readouterr().out
    assert sweep.main(["--profile", "smoke", "--dry-run", "--generator", "vae_c"]) == 0
    out = capsys.readouterr().out
    assert "2 runs (1 generator x 2 k x 1 seed" in out
    assert run_key({"generator": "none", "k": 0, "seed": 1}, "05_augment") in out
    assert run_key({"generator": "vae_s", "k": 3, "seed": 1}, "05_augment") not in out
    assert sweep.main(["--profile", "smoke", "--generator", "gan"]) == 2
    err = capsys.readouterr().err
    assert "--generator gan: not in the profile's grid ['vae_s', 'vae_c']" in err


def test_shared_baseline_runs_k0_once_per_seed():
    points = expand_grid({"generator": ["vae_s", "vae_c"], "k": [0, 2], "seed": [0, 1]})
    shared = sweep.shared_baseline(points)
    assert shared == [
        {"generator": "none", "k": 0, "seed": 0}, {"generator": "none", "k": 0, "seed": 1},
        {"generator": "vae_s", "k": 2, "seed": 0}, {"generator": "vae_s", "k": 2, "seed": 1},
        {"generator": "vae_c", "k": 2, "seed": 0}, {"generator": "vae_c", "k": 2, "seed": 1}]
    assert points[0]["generator"] == "vae_s"  # the input is not modified
    assert sweep.shared_baseline([{"k": 0, "seed": 0}]) == [{"k": 0, "seed": 0}]
    # the filter does not act at k = 0: one baseline for every pool
    pooled = sweep.shared_baseline(expand_grid({"generator": ["vae_s"], "filter_pool": [0, 6],
                                                "k": [0, 6], "seed": [0]}))
    assert pooled == [{"generator": "none", "filter_pool": 0, "k": 0, "seed": 0},
                      {"generator": "vae_s", "filter_pool": 0, "k": 6, "seed": 0},
                      {"generator": "vae_s", "filter_pool": 6, "k": 6, "seed": 0}]


def test_a_run_stays_finished_while_only_inputs_it_does_not_read_change(tmp_path):
    grid = [{"generator": "vae_s", "x": 1}, {"generator": "vae_c", "x": 2}]
    digests = {"vae_s": {"data": "d0", "vae_s": "s0"}, "vae_c": {"data": "d0", "vae_c": "c0"}}
    report = run_sweep(PROBE, grid, tmp_path, workers=1, timeout=60,
                       inputs=lambda point: digests[point["generator"]])
    assert report.ok and len(report.done) == 2
    assert load_json(report.done[0].folder / "params.json")["inputs"] == {"data": "d0",
                                                                          "vae_s": "s0"}
    assert load_json(tmp_path / "sweep.json")["grid"] == grid
    digests["vae_c"]["vae_c"] = "c1"  # VAE-C retrained: only its run is redone
    assert [p.finished for p in plan_sweep(PROBE, grid, tmp_path,
                                           inputs=lambda p: digests[p["generator"]])] == [
        True, False]
    # a record listing more inputs than are asked for (an older, global fingerprint) still counts
    folder = report.done[0].folder
    record = load_json(folder / "params.json")
    save_json(folder / "params.json", {**record, "inputs": {**record["inputs"], "vae_c": "c0"}})
    assert is_finished(folder, record)
    # ... but not when an input it reads changed, or is missing from the record
    assert not is_finished(folder, {**record, "inputs": {"data": "d1", "vae_s": "s0"}})
    assert not is_finished(folder, {**record, "inputs": {**record["inputs"], "noise": "n0"}})


@pytest.mark.notebook
def test_cli_runs_the_profile_grid(tmp_path, monkeypatch, capsys):
    root = _cli_repo(tmp_path)
    monkeypatch.setattr(sweep, "repo_root", lambda: root)
    assert sweep.main(["--profile", "smoke", "--workers", "1", "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "2 done, 0 skipped" in out and "06_sweep.ipynb does not exist yet" in out
    sweep_dir = tmp_path / "run" / "sweep"
    for gen, k in (("none", 0), ("vae_s", 3)):  # k = 0 is the shared baseline run
        folder = sweep_dir / run_key({"generator": gen, "k": k, "seed": 1}, "05_augment")
        assert load_json(folder / "result.json") | {"seed": 1, "profile": "smoke"} == \
            load_json(folder / "result.json")
        assert load_json(folder / "params.json")["parameters"] == {
            "generator": gen, "k": k, "seed": 1, "profile": "smoke",
            "run_dir": str(tmp_path / "run")}


def test_aggregate_notebook_keeps_machine_paths_out_of_the_committed_notebook(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr(sweep, "execute_notebook",
                        lambda nb, out, params, **kw: calls.append((nb, out, params)) or out)
    nb, run = Path("notebooks/06_sweep.ipynb"), tmp_path / "run"
    # the default profile in its own run directory: in place, nothing injected
    assert sweep.aggregate_notebook(nb, "default", run, None) == nb
    assert calls[-1] == (nb, nb, {})
    # a run directory given on the command line, or another profile: a copy in the run directory
    for profile, own in (("default", True), ("smoke", False)):
        out = sweep.aggregate_notebook(nb, profile, run, None, own_run_dir=own)
        assert out == run / "notebooks" / nb.name
        assert calls[-1][2] == {"profile": profile, "run_dir": str(run)}


def test_the_readme_part_of_the_default_study_plans_80_runs(tmp_path, monkeypatch, capsys):
    """README (Reproducibility): ``--generator vae_s --restrict n_real_sims=8,16 --restrict
    k=0,18`` on the default grid is 2 arms x 2 k x 20 seeds, the k = 0 runs as the shared
    baseline; on the CLI, the restricted part is what runs."""
    grid = sweep.profile_grid(None)
    grid["generator"] = ["vae_s"]
    sweep.restrict_grid(grid, ["n_real_sims=8,16", "k=0,18"])
    points = sweep.shared_baseline(expand_grid(grid))
    assert len(points) == 80
    assert {(p["generator"], p["k"]) for p in points} == {("none", 0), ("vae_s", 18)}
    assert {p["n_real_sims"] for p in points} == {8, 16}
    root = _cli_repo(tmp_path)
    monkeypatch.setattr(sweep, "repo_root", lambda: root)
    assert sweep.main(["--profile", "smoke", "--generator", "vae_s", "--restrict", "k=3",
                       "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 runs" in out and "'k': 3" in out and "'k': 0" not in out
    assert sweep.main(["--profile", "smoke", "--restrict", "k=7", "--dry-run"]) == 2
    assert "--restrict" in capsys.readouterr().err
