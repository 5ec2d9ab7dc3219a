"""egmlib.workflow.pipeline: papermill execution with atomic outputs, and the pipeline CLI.

The notebooks run here are the tiny fixtures of tests/fixtures (see make_fixtures.py):
probe.ipynb records the parameters it received in result.json and raises when ``fail`` is true;
fails.ipynb always raises RuntimeError.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from egmlib.workflow import pipeline
from egmlib.workflow.pipeline import (
    NotebookError,
    execute_notebook,
    failed_path,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROBE = FIXTURES / "probe.ipynb"
FAILS = FIXTURES / "fails.ipynb"


def _read_result(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


@pytest.mark.notebook
def test_execute_notebook_injects_profile_then_parameters(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("seed: 7\nprofile: smoke\nsweep_k: [0, 2]\n")
    output = tmp_path / "out" / "probe.ipynb"
    res = tmp_path / "res"
    got = execute_notebook(PROBE, output, {"x": 5, "profile": "paper", "out_dir": str(res)},
                           profile_file=profile, timeout=60, progress_bar=False)
    assert got == output
    result = _read_result(res)
    # profile values injected, explicit parameters win over the profile's
    assert result["x"] == 5
    assert result["seed"] == 7
    assert result["profile"] == "paper"
    assert result["fail"] is False
    assert Path(result["cwd"]) == FIXTURES  # default cwd: the notebook's folder
    nb = nbformat.read(output, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "x = 5" in injected[0].source
    assert nb.metadata.papermill["output_path"].endswith("probe.ipynb")
    assert ".tmp" not in nb.metadata.papermill["output_path"]
    # nothing but the output in its folder: no temporary file, no failed notebook
    assert sorted(p.name for p in output.parent.iterdir()) == ["probe.ipynb"]
    assert output.stat().st_mode & 0o777 == 0o644


@pytest.mark.notebook
def test_execute_notebook_failure_leaves_no_output(tmp_path):
    output = tmp_path / "probe_out.ipynb"
    with pytest.raises(NotebookError) as info:
        execute_notebook(PROBE, output, {"x": 3, "fail": True, "out_dir": str(tmp_path)},
                         timeout=60, progress_bar=False)
    err = info.value
    assert not output.exists()
    assert err.ename == "ValueError"
    assert err.evalue == "probe asked to fail (x=3)"
    assert "ValueError: probe asked to fail (x=3)" in str(err)
    assert str(failed_path(output)) in str(err)
    assert err.failed_path == tmp_path / "probe_out.failed.ipynb"
    failed = nbformat.read(err.failed_path, as_version=4)
    errors = [o for c in failed.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert [(o.ename, o.evalue) for o in errors] == [("ValueError", "probe asked to fail (x=3)")]
    assert "raise ValueError" in err.traceback
    # the cells before the failure did run
    assert _read_result(tmp_path)["x"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe_out.failed.ipynb", "result.json"]


def test_execute_notebook_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ipynb"):
        execute_notebook(tmp_path / "nope.ipynb", tmp_path / "out.ipynb")


def _fake_repo(root: Path, notebooks: dict[str, Path]) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "params").mkdir()
    for name, source in notebooks.items():
        shutil.copy(source, root / "notebooks" / f"{name}.ipynb")
    return root


@pytest.mark.notebook
def test_pipeline_profile_writes_into_run_dir(tmp_path, capsys):
    root = _fake_repo(tmp_path / "repo", {"01_data": PROBE})
    (root / "params" / "smoke.yaml").write_text("seed: 3\nsweep_k: [1]\n")
    run_dir = tmp_path / "run"
    done = pipeline.run_pipeline("smoke", run_dir=run_dir, root=root, timeout=60)
    assert [name for name, _, _ in done] == ["01_data"]  # only the notebooks that exist
    output = run_dir / "notebooks" / "01_data.ipynb"
    assert done[0][1] == output and output.is_file()
    result = _read_result(run_dir)  # the probe writes to run_dir when out_dir is empty
    assert result == {**result, "seed": 3, "profile": "smoke", "run_dir": str(run_dir), "x": 1}
    # the committed notebook is untouched
    assert (root / "notebooks" / "01_data.ipynb").read_bytes() == PROBE.read_bytes()
    line = capsys.readouterr().out.strip()
    assert line.startswith("01_data") and " s  -> " in line


@pytest.mark.notebook
def test_pipeline_in_place_stops_at_failure(tmp_path, monkeypatch, capsys):
    root = _fake_repo(tmp_path / "repo", {"01_data": PROBE, "02_vae_s": FAILS, "03_vae_c": PROBE})
    committed = (root / "notebooks" / "02_vae_s.ipynb").read_bytes()
    monkeypatch.setattr(pipeline, "repo_root", lambda: root)
    status = pipeline.main(["--profile", "default", "--in-place"])
    assert status == 1
    out, err = capsys.readouterr()
    assert "02_vae_s" in err and "RuntimeError: deliberate failure in fails.ipynb" in err
    assert "01_data" in out and "02_vae_s     FAILED" in out
    assert "03_vae_c" not in out  # stops at the first failure
    assert "another kind" not in err  # the fake repository has no committed records
    # 01 replaced by its executed version; 02 untouched, its failed execution kept beside it
    nb01 = nbformat.read(root / "notebooks" / "01_data.ipynb", as_version=4)
    assert [c.execution_count for c in nb01.cells if c.cell_type == "code"] == [1, 2, 3]
    assert "injected-parameters" not in nbformat.writes(nb01)  # default: nothing injected
    assert (root / "notebooks" / "02_vae_s.ipynb").read_bytes() == committed
    assert (root / "notebooks" / "02_vae_s.failed.ipynb").is_file()
    assert _read_result(root / "notebooks")["profile"] == "default"  # cwd: notebooks/
    assert sorted(p.name for p in (root / "notebooks").iterdir()) == [
        "01_data.ipynb", "02_vae_s.failed.ipynb", "02_vae_s.ipynb", "03_vae_c.ipynb",
        "result.json"]


def test_pipeline_cli_rejects_bad_arguments(capsys):
    assert pipeline.main(["--profile", "smoke", "--in-place"]) == 2
    assert "--in-place" in capsys.readouterr().err
    assert pipeline.main(["--only", "07_nothing"]) == 2
    assert "07_nothing" in capsys.readouterr().err


def test_pipeline_in_place_names_a_machine_of_another_kind(tmp_path, monkeypatch, capsys):
    """Before replacing the committed records, the pipeline says how this machine differs from
    the one that made them (here: a torch version no machine has), and runs all the same."""
    root = _fake_repo(tmp_path / "repo", {"01_data": PROBE})
    (root / "results" / "default").mkdir(parents=True)
    (root / "results" / "default" / "01_data.json").write_text(json.dumps(
        {"provenance": {"versions": {"torch": "0.0"}}}))
    monkeypatch.setattr(pipeline, "repo_root", lambda: root)
    assert pipeline.main(["--profile", "default", "--in-place"]) == 0
    out, err = capsys.readouterr()
    assert "results/default/ was made on a machine of another kind" in err
    assert "torch 0.0 there" in err and "01_data" in out
