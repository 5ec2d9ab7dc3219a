"""egmlib.data.build on a Dask cluster (``workers``): the same data set to the bit as the serial
build, the same replacements of terminated AF runs, and this process's environment unchanged.

One tiny profile (4 mm mesh, 3 SR + 3 AF simulations of 1 s in batches of 2, so each rhythm
takes two batches, the second partial) is built serially and on a local cluster of two worker
processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import one_thread

from egmlib.core import params
from egmlib.core.params import DataConfig
from egmlib.core.process import environment_restored
from egmlib.data import build, parallel, store
from egmlib.physics.simulate import SimulationResult, draw_specs

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
TINY = {**params.load_profile(str(ROOT / "params" / "smoke.yaml")), "n_sr": 3, "n_af": 3,
        "batch": 2, "record_s": 1.0, "T": 50, "n_torsos": 2}
#: the AF ids whose runs are made to count as terminated in the replacement test
FORCED_DEAD = {100_000, 100_003}


def _tiny() -> dict:
    p = params.validate("01_data", TINY)
    DataConfig.from_values(p)  # a valid data configuration
    return p


def _arrays(data_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(data_dir.iterdir()):
        if f.suffix == ".npy":
            out[f.name] = np.load(f)
        elif f.suffix == ".npz":
            with np.load(f) as z:
                out.update({f"{f.name}:{k}": z[k] for k in z.files})
    return out


def _assert_same_dataset(a: store.Dataset, b: store.Dataset, tmp: Path) -> None:
    ma, mb = dict(a.manifest), dict(b.manifest)
    ma.pop("provenance")
    mb.pop("provenance")
    assert ma == mb
    arr_a, arr_b = _arrays(tmp / "serial" / "data"), _arrays(tmp / "dask" / "data")
    assert arr_a.keys() == arr_b.keys() and len(arr_a) > 10
    for name, x in arr_a.items():
        assert x.dtype == arr_b[name].dtype, name
        np.testing.assert_array_equal(x, arr_b[name], err_msg=name)


def _build_both(tmp: Path, scheduler: str | None = None,
                workers: int | None = None) -> tuple[store.Dataset, store.Dataset]:
    p = _tiny()
    with one_thread():
        serial = build.build_dataset(p, tmp / "serial", show_progress=False)
    dask = build.build_dataset(p, tmp / "dask", show_progress=False, scheduler=scheduler,
                               workers=workers)
    return serial, dask


def _forced_keep(rhythm: str, res: SimulationResult) -> np.ndarray:
    alive = np.asarray(res.alive, bool).copy()
    if rhythm == "AF":
        alive &= np.array([s.sim_id not in FORCED_DEAD for s in res.specs])
    return alive


@pytest.mark.slow
def test_dask_build_equals_serial_build(tmp_path: Path) -> None:
    env = dict(os.environ)
    serial, dask = _build_both(tmp_path, workers=2)
    _assert_same_dataset(serial, dask, tmp_path)
    assert dict(os.environ) == env  # the local cluster's OMP_NUM_THREADS=1 etc. are gone


@pytest.mark.slow
def test_dask_replacements_match_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AF 100000 (first batch) and 100003 (the second) count as terminated: both builds draw
    the same replacements with the same ids; the cluster build (at a scheduler address here)
    plans again after the first batch and redraws its speculative second one."""
    from distributed import LocalCluster

    monkeypatch.setattr(build, "_kept_columns", _forced_keep)
    draws = []

    def recording_draw(rhythm: str, n: int, *args: object, **kwargs: object) -> list:
        draws.append((rhythm, kwargs["first_id"], n))
        return draw_specs(rhythm, n, *args, **kwargs)

    monkeypatch.setattr(parallel, "draw_specs", recording_draw)
    with (environment_restored(),
          LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                       dashboard_address=None) as cluster):
        serial, dask = _build_both(tmp_path, scheduler=cluster.scheduler_address)
    _assert_same_dataset(serial, dask, tmp_path)
    assert serial.manifest["replaced_terminated_af"] >= 2
    af_ids = [s["spec"]["sim_id"] for s in serial.manifest["simulations"]
              if s["spec"]["rhythm"] == "AF"]
    assert not FORCED_DEAD & set(af_ids) and len(af_ids) == 3
    af_draws = [d[1:] for d in draws if d[0] == "AF"]
    assert af_draws[:3] == [(100_000, 2), (100_002, 1), (100_002, 2)]


def test_child_seed_is_spawn() -> None:
    ss = np.random.SeedSequence(12345).spawn(2)[1]
    fresh = build._fresh(ss)
    spawned = [fresh.spawn(1)[0] for _ in range(4)]
    for k, child in enumerate(spawned):
        assert (parallel.child_seed(ss, k).generate_state(4) == child.generate_state(4)).all()


@pytest.mark.parametrize(("scheduler", "workers"), [("tcp://x:1", 2), (None, 0), (None, True),
                                                     ("", None)])
def test_cluster_arguments_checked(scheduler: str | None, workers: int | None) -> None:
    with pytest.raises(ValueError, match=r"scheduler|workers"):
        parallel.check_cluster_args(scheduler, workers)


def test_environment_restored() -> None:
    before = dict(os.environ)
    with environment_restored():
        os.environ["EGMLIB_TEST_ADDED"] = "1"
        os.environ["PATH"] = "changed"
    assert dict(os.environ) == before


def test_plan_follows_serial_loop() -> None:
    task = parallel.RhythmTask(rhythm="AF", n=5, seed_seq=np.random.SeedSequence(0),
                               first_id=100)
    st = parallel._RhythmState(task=task, next_id=100)
    assert st.plan(2, 20) == [(0, 100, 2), (1, 102, 2), (2, 104, 1)]
    st.attempts, st.kept, st.next_id = 2, 3, 104  # one of the first four terminated
    assert st.plan(2, 20) == [(2, 104, 2)]
    assert st.plan(2, 2) == []
