"""Shared fixtures of the data-engine tests: small meshes and session-scoped simulations.

Simulations are the expensive part, so each physical scenario is run once per session and read by
several tests. Meshes use 4 mm edges (874 bi-atrial nodes), runs use dt 0.1 ms. The simulator runs
with one torch thread inside these fixtures (the test machines have 2 cores, shared between jobs;
two threads on a
busy machine were 10x slower here) and the previous setting is restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("EGMLIB_QUIET", "1")

from egmlib.physics import electrograms, geometry, simulate

EDGE_MM = 4.0
DT = 0.1


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch with one intra-op thread, restoring the previous count on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def torch_single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Train with one torch thread (``EGMLIB_THREADS=1``, read by
    :func:`egmlib.core.process.default_threads`) and restore the thread count afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setenv("EGMLIB_THREADS", "1")
    yield
    torch.set_num_threads(before)


@dataclass
class Run:
    """A finished simulation batch with what it was run on."""

    geometry: geometry.AtrialGeometry
    sites: geometry.RecordingSites
    specs: list[simulate.SimulationSpec]
    result: simulate.SimulationResult
    duration_ms: float


@pytest.fixture(scope="session")
def biatrial() -> geometry.AtrialGeometry:
    """The idealised bi-atrial surface at 4 mm edges."""
    return geometry.biatrial_geometry(EDGE_MM)


@pytest.fixture(scope="session")
def biatrial_sites(biatrial) -> geometry.RecordingSites:
    return geometry.recording_sites(biatrial, 24, 1.5)


@pytest.fixture(scope="session")
def ellipsoid_geometry() -> geometry.AtrialGeometry:
    """A user-style surface: an ellipsoid given as raw arrays (one region, no links)."""
    e = geometry.ellipsoid_mesh((24.0, 20.0, 30.0), EDGE_MM, center=(5.0, -3.0, 2.0))
    return geometry.AtrialGeometry.from_arrays(np.array(e.vertices), np.array(e.faces).tolist())


def _run(geom, specs, duration_ms, n_sites, transient_ms=0.0) -> Run:
    sites = geometry.recording_sites(geom, n_sites, 1.5)
    lead = electrograms.infinite_medium_lead_field(sites.electrodes, geom.mesh.vertices)
    with one_thread():
        res = simulate.Simulator(geom, dt=DT).run(
            specs, duration_ms, transient_ms=transient_ms, leads={"egm": lead},
            show_progress=False)
    return Run(geom, sites, list(specs), res, duration_ms)


@pytest.fixture(scope="session")
def sr_run(biatrial) -> Run:
    """SR at D 0.5 (cycle 600 ms) and D 1.0 (cycle 800 ms, heterogeneous, shifted pacing), for
    2400 ms: four and three whole cycles, paced from t = 0."""
    specs = [
        simulate.SimulationSpec(0, "SR", 11, D=0.5, tau_close_ra=140.0, tau_close_la=140.0,
                                cycle_length_ms=600.0),
        simulate.SimulationSpec(1, "SR", 12, D=1.0, tau_close_ra=135.0, tau_close_la=145.0,
                                cycle_length_ms=800.0, heterogeneity=0.03, pacing_shift=1),
    ]
    return _run(biatrial, specs, 2400.0, 32)


@pytest.fixture(scope="session")
def af_run(biatrial) -> Run:
    """AF from the phase-field start, one run without and one with fibrosis; 300 ms discarded,
    1500 ms recorded."""
    specs = [
        simulate.SimulationSpec(100, "AF", 21, D=0.22, tau_close_ra=65.0, tau_close_la=56.0,
                                heterogeneity=0.1, start_axes=((0.0, 0.0, 1.0), (0.0, 1.0, 0.0))),
        simulate.SimulationSpec(101, "AF", 22, D=0.28, tau_close_ra=62.0, tau_close_la=54.0,
                                fibrosis=((100, 8.0), (600, 6.0)),
                                start_axes=((1.0, 0.0, 0.0), (0.0, 0.0, 1.0))),
    ]
    return _run(biatrial, specs, 1500.0, 24, transient_ms=300.0)


@pytest.fixture(scope="session")
def ellipsoid_run(ellipsoid_geometry) -> Run:
    """On the ellipsoid: SR at D 0.5 and 1.0 (cycle 500 ms, three cycles) and AF started with one
    axis (the only region) for 1500 ms."""
    specs = [
        simulate.SimulationSpec(0, "SR", 1, D=0.5, tau_close_ra=140.0, tau_close_la=140.0,
                                cycle_length_ms=500.0),
        simulate.SimulationSpec(1, "SR", 2, D=1.0, tau_close_ra=140.0, tau_close_la=140.0,
                                cycle_length_ms=500.0),
        simulate.SimulationSpec(100, "AF", 3, D=0.25, tau_close_ra=65.0, tau_close_la=56.0,
                                start_axes=((0.3, 0.2, 0.93),)),
    ]
    return _run(ellipsoid_geometry, specs, 1500.0, 12)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole smoke chain, executed once per test session into a temporary run directory, by
    the README's command ``python -m egmlib.workflow.pipeline --profile smoke`` (its CLI)."""
    from egmlib.workflow import pipeline

    run_dir = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        unset_thread_limits(mp)
        assert pipeline.main(["--profile", "smoke", "--run-dir", str(run_dir), "--timeout",
                              "900"]) == 0
    return run_dir


def unset_thread_limits(mp: pytest.MonkeyPatch) -> None:
    """Run with every core, as a user does: remove the thread limits a sweep sets for its
    parallel runs (``sweep.THREAD_ENV``), whichever test ran before. Float rounding in BLAS, and
    so every result, depends on the thread count."""
    from egmlib.workflow.sweep import THREAD_ENV

    for name in THREAD_ENV:
        mp.delenv(name, raising=False)


def run_nbval(notebooks: list[Path], rootdir: Path) -> None:
    """Run nbval (``--nbval-lax``: only cells marked NBVAL_CHECK_OUTPUT are compared) on executed
    notebooks, in the given order, re-executing each with the parameters injected into it; fail
    with nbval's log."""
    import subprocess
    import sys

    cfg = Path(__file__).parent / "nbval_sanitize.cfg"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
         "--nbval-sanitize-with", str(cfg), "--rootdir", str(rootdir), *map(str, notebooks)],
        cwd=rootdir, capture_output=True, text=True, timeout=900,
        env={**os.environ, "EGMLIB_QUIET": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


@pytest.fixture
def all_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test runs notebooks with every core (see :func:`unset_thread_limits`)."""
    unset_thread_limits(monkeypatch)
