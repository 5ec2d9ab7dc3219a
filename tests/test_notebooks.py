"""The notebooks run end to end through papermill with the smoke profile; their stored results are
read back and checked against the physics and the data contract."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from egmlib import data, params
from egmlib.pipeline import NotebookError, execute_notebook, run_pipeline
from egmlib.runs import repo_root

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

ROOT = repo_root(Path(__file__).parent)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole smoke chain, executed once per test session into a temporary run directory."""
    os.environ.setdefault("EGMLIB_QUIET", "1")
    run_dir = tmp_path_factory.mktemp("smoke")
    run_pipeline("smoke", run_dir=run_dir, root=ROOT, timeout=900)
    return run_dir


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
    assert 4.0 <= af["df_min_hz"] <= af["df_max_hz"] <= 10.0
    assert af["wavefronts_min"] > 1.0
    # figures go to the run directory, not to the committed figures/
    for name in ("01_geometry", "01_snapshots_SR", "01_snapshots_AF", "01_activation_SR",
                 "01_egm_examples", "01_psd_df", "01_torsos", "01_bspm_maps", "01_tikhonov"):
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
    from egmlib import synthesis

    result = json.loads((smoke_run / kind / "result.json").read_text())
    p = params.validate("02_vae_s", params.load_profile(ROOT / "params" / "smoke.yaml"))
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
    if kind == "vae_c":
        assert 0.0 <= result["separation"]["linear_probe"] <= 1.0
