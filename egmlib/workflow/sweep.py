"""Run a notebook over a grid of parameters, serially, on local cores or on a Dask cluster.

Each point of the grid (for example k x seed x generator) is one papermill run of the notebook in
its own folder ``<sweep_dir>/<key>/``, where ``key`` is :func:`run_key` of the point:

``params.json``
    the notebook's name and every parameter injected (profile values, base parameters, the
    point); written before the run starts.
``<notebook>.ipynb``
    the executed notebook (``<notebook>.failed.ipynb`` when it failed, see
    :func:`egmlib.workflow.pipeline.execute_notebook`).
``run.log``
    the kernel's stdout and stderr, and the traceback of a failure.
``DONE``
    written atomically, last, only on success (JSON: wall time, provenance). A run counts as
    finished only when ``DONE`` is present and ``params.json`` equals the parameters asked for;
    anything else (a crash, a failure, a partial folder, changed base parameters) is redone from
    an empty folder. The notebook writes its own outputs (``result.json``) into the folder it gets
    as ``out_dir``; they never count as finished without ``DONE``.

A rerun of :func:`run_sweep` therefore skips finished runs and retries failed or partial ones.
The CLI also records the digests of the inputs the runs read (:func:`input_fingerprint`: the
data set's manifest, the values of the generators' kept windows), so after a rebuilt data set or
a generator retrained to other windows the runs that read it are redone rather than mixed with
results of the old inputs.
Each run records only the inputs it reads (the data set, and its own generator's windows), and a
run counts as finished when every input it reads is unchanged, so retraining VAE-C redoes the
VAE-C runs and leaves the VAE-S runs and the shared ``k = 0`` runs alone.

``k = 0`` runs train on real pairs only, so their result does not depend on the generator (the
same seed gives the same numbers, checked in the reduced sweep): the CLI runs them once per seed
with ``generator="none"`` (:func:`shared_baseline`) and 06_sweep uses them as every generator's
baseline (:mod:`egmlib.workflow.results`).

A failure is recorded in the :class:`SweepReport` (error, log, failed notebook) and never stops
the other runs. ``<sweep_dir>/sweep.json`` holds the last report, for the aggregating notebook.

Parallelism: ``workers=1`` runs serially in this process, each run with every core;
otherwise a ``dask.distributed.LocalCluster`` of single-threaded worker processes, or an existing
cluster when ``scheduler_address`` is given (its workers must see ``sweep_dir`` and the notebook
at the same paths). A parallel run sets ``OMP_NUM_THREADS=1`` (and the BLAS and ``EGMLIB_THREADS``
equivalents) before its kernel starts, so parallel runs do not oversubscribe the cores; kernels
inherit the environment.

Which is faster depends on the machine. On a 2-core AMD EPYC virtual machine, two one-thread workers
ran two default 05 runs in 216 s against 186 s serially (one thread each; ``make bench``, section
``sweep``): the runs are bound by memory traffic, which two processes share, and the network
trains 1.6x faster on two threads than on one. So the CLI runs serially with every core per run
unless ``--workers`` says otherwise; parallel workers pay off on machines with more cores and
memory channels, or on a cluster.

CLI: ``python -m egmlib.workflow.sweep --profile smoke [--workers N] [--scheduler ADDRESS]
[--dry-run]``
runs ``notebooks/05_augment.ipynb`` over the profile's grid into ``<run_dir>/sweep/`` and then
``notebooks/06_sweep.ipynb`` (when it exists) to aggregate: in place for the default profile (its
notebooks are committed with their outputs, as ``make reproduce`` leaves them), into
``<run_dir>/notebooks/`` otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from egmlib.core import params as _params
from egmlib.core.runs import (
    COMMITTED_PROFILES,
    load_json,
    progress,
    provenance,
    repo_root,
    resolve_run_dir,
    save_json,
)
from egmlib.workflow.pipeline import NotebookError, execute_notebook
from egmlib.workflow.records import (
    BASELINE_GENERATOR,
    MARKER,
    PARAMS_FILE,
    array_digest,
    file_digest,
    input_fingerprint,
    inputs_match,
    note_other_machine,
)

__all__ = [
    "GRID_FIELDS",
    "THREAD_ENV",
    "PlannedRun",
    "RunRecord",
    "SweepReport",
    "add_execution_options",
    "aggregate_notebook",
    "array_digest",
    "expand_grid",
    "file_digest",
    "input_fingerprint",
    "inputs_match",
    "is_finished",
    "main",
    "plan_sweep",
    "profile_grid",
    "restrict_grid",
    "run_key",
    "run_sweep",
    "shared_baseline",
]

#: Environment of every run's kernel: one thread per run (numpy/BLAS/torch) and no progress bars.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "EGMLIB_THREADS": "1",
    "EGMLIB_QUIET": "1",
}

#: Environment of a serial run's kernel: quiet, with every core for the one run.
SERIAL_ENV = {"EGMLIB_QUIET": "1"}

#: Grid parameter of the augmentation notebook <- its :class:`~egmlib.core.params.SweepConfig`
#: field (the defaults and checks live there).
GRID_FIELDS = {"generator": "sweep_generators", "n_real_sims": "sweep_n_real_sims",
               "filter_pool": "sweep_filter_pool", "k": "sweep_k", "seed": "sweep_seeds"}

#: The grid fields that make the study's arms (data scarcity, the filter); 0 is each one's default.
ARM_FIELDS = ("n_real_sims", "filter_pool")

SWEEP_NOTEBOOK = "05_augment"
AGGREGATE_NOTEBOOK = "06_sweep"
LOG_FILE = "run.log"


# --------------------------------------------------------------------------------------------
# grid and keys
# --------------------------------------------------------------------------------------------

def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest.

    >>> expand_grid({"k": [0, 2], "seed": [0, 1]})
    [{'k': 0, 'seed': 0}, {'k': 0, 'seed': 1}, {'k': 2, 'seed': 0}, {'k': 2, 'seed': 1}]
    """
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid {name!r}: expected a non-empty list of values, got {values!r}")
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*grid.values())]




def shared_baseline(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The points with every ``k = 0`` point's generator set to ``"none"`` (and its
    ``filter_pool``, if any, to 0), duplicates dropped (first occurrence kept, order otherwise
    unchanged).

    A ``k = 0`` run of the augmentation notebook trains on real pairs only, so it is the same run
    whatever the generator and the filter; running it once per seed (and number of real
    simulations) saves ``(n_generators * n_pools - 1) * n_seeds`` runs and gives every generator
    and filter the identical baseline.

    >>> shared_baseline([{"generator": "vae_s", "k": 0}, {"generator": "vae_c", "k": 0},
    ...                  {"generator": "vae_c", "k": 2}])
    [{'generator': 'none', 'k': 0}, {'generator': 'vae_c', 'k': 2}]
    """
    out, seen = [], set()
    for point in points:
        point = dict(point)
        if point.get("k") == 0 and "generator" in point:
            point["generator"] = BASELINE_GENERATOR
            if "filter_pool" in point:
                point["filter_pool"] = 0
        key = run_key(point)
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


def _points(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
            ) -> list[dict[str, Any]]:
    """A grid (name -> values, :func:`expand_grid`) or an explicit list of points."""
    if isinstance(grid, Mapping):
        return expand_grid(grid)
    if not grid or not all(isinstance(p, Mapping) for p in grid):
        raise ValueError(f"grid: expected a mapping of lists or a non-empty list of points, "
                         f"got {grid!r}")
    return [dict(p) for p in grid]


def _canonical(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def run_key(params: Mapping[str, Any], notebook: str = "") -> str:
    """A stable 12-hex-digit key of ``params`` (order-independent) and the notebook's name."""
    text = json.dumps({"notebook": notebook, "params": _canonical(dict(params))},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# records and report
# --------------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One run of the sweep.

    Attributes:
        key: :func:`run_key` of the grid point; the run's folder is ``<sweep_dir>/<key>``.
        params: the grid point (the full parameters are in ``folder/params.json``).
        folder: the run's folder.
        status: ``done`` (ran now), ``skipped`` (finished before) or ``failed``.
        wall_s: seconds the run took (for a skipped run: when it ran).
        error: ``Name: message`` of a failure, else ``""``.
        notebook: the executed notebook (the ``.failed.ipynb`` one for a failure).
        log: the run's log (kernel output; traceback of a failure).
    """

    key: str
    params: dict[str, Any]
    folder: Path
    status: str
    wall_s: float = 0.0
    error: str = ""
    notebook: Path | None = None
    log: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "params": self.params, "folder": str(self.folder),
                "status": self.status, "wall_s": round(self.wall_s, 3), "error": self.error,
                "notebook": str(self.notebook) if self.notebook else None,
                "log": str(self.log) if self.log else None}


@dataclass
class SweepReport:
    """What a sweep did: runs done now, skipped (finished before) and failed."""

    notebook: str
    sweep_dir: Path
    mode: str
    elapsed_s: float = 0.0
    done: list[RunRecord] = field(default_factory=list)
    skipped: list[RunRecord] = field(default_factory=list)
    failed: list[RunRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No run failed."""
        return not self.failed

    @property
    def runs(self) -> list[RunRecord]:
        return [*self.done, *self.skipped, *self.failed]

    def summary(self) -> str:
        """A few lines: counts, wall time against the summed run time, and each failure."""
        busy = sum(r.wall_s for r in self.done) + sum(r.wall_s for r in self.failed)
        lines = [
            f"sweep of {self.notebook} in {self.sweep_dir} ({self.mode}): {len(self.runs)} runs: "
            f"{len(self.done)} done, {len(self.skipped)} skipped (finished before), "
            f"{len(self.failed)} failed; {self.elapsed_s:.1f} s wall for {busy:.1f} s of runs"]
        for r in self.failed:
            lines.append(f"  FAILED {r.key} {r.params}: {r.error}")
            lines.append(f"         log: {r.log}  notebook: {r.notebook}")
        if self.failed:
            lines.append("  rerun the sweep to retry the failed runs (finished runs are skipped)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "sweep_dir": str(self.sweep_dir), "mode": self.mode,
                "elapsed_s": round(self.elapsed_s, 3),
                "runs": [r.to_dict() for r in self.runs]}


# --------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------

@dataclass
class PlannedRun:
    """One run of a sweep as planned: its key, grid point, folder, the content its
    ``params.json`` must have, and whether it finished before."""

    key: str
    point: dict[str, Any]
    folder: Path
    record: dict[str, Any]  # what params.json holds
    finished: bool


def is_finished(folder: str | Path, expected: Mapping[str, Any]) -> bool:
    """True when ``folder`` holds the ``DONE`` marker and a ``params.json`` that matches
    ``expected``: equal in everything but ``"inputs"``, and every input digest that ``expected``
    lists recorded with the same value (a record may list more inputs than the run reads: a run
    is still valid when only inputs it does not read changed)."""
    folder = Path(folder)
    if not (folder / MARKER).is_file() or not (folder / PARAMS_FILE).is_file():
        return False
    try:
        recorded = load_json(folder / PARAMS_FILE)
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    expected = _canonical(dict(expected))
    want, got = expected.pop("inputs", {}), recorded.pop("inputs", {})
    return recorded == expected and inputs_match(got, want)


Inputs = Mapping[str, str] | Callable[[Mapping[str, Any]], Mapping[str, str]]


def plan_sweep(notebook: str | Path,
               grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
               sweep_dir: str | Path, base_parameters: Mapping[str, Any] | None = None,
               profile_file: str | Path | None = None,
               inputs: Inputs | None = None) -> list[PlannedRun]:
    """The runs of a sweep, each with its key, folder, parameters and whether it is finished.

    ``grid`` is a mapping of lists (:func:`expand_grid`) or an explicit list of points (e.g.
    :func:`shared_baseline` of one). ``inputs`` (e.g. :func:`input_fingerprint`), a mapping or a
    function of the point, joins each run's record: a finished run whose recorded digests of
    these inputs differ is redone (:func:`is_finished`)."""
    notebook, sweep_dir = Path(notebook), Path(sweep_dir)
    profile = _params.load_profile(profile_file) if profile_file else {}
    # the grid's own keys (sweep_k, sweep_dir, ...) are read by no run: a run's record holds only
    # what can change its result, so growing the grid keeps the finished runs
    base: dict[str, Any] = {k: v for k, v in profile.items() if not k.startswith("sweep_")}
    base.update(base_parameters or {})
    planned, seen = [], set()
    for point in _points(grid):
        key = run_key(point, notebook.stem)
        if key in seen:
            raise ValueError(f"grid point {point} appears twice")
        seen.add(key)
        record = {"notebook": notebook.name, "parameters": {**base, **point}}
        run_inputs = inputs(point) if callable(inputs) else inputs
        if run_inputs:
            record["inputs"] = dict(run_inputs)
        record = _canonical(record)
        folder = sweep_dir / key
        planned.append(PlannedRun(key, point, folder, record, is_finished(folder, record)))
    return planned


# --------------------------------------------------------------------------------------------
# one run (a top-level function, so that Dask can ship it to worker processes)
# --------------------------------------------------------------------------------------------

@contextmanager
def _environment(values: Mapping[str, str], restore: bool) -> Iterator[None]:
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        if restore:
            for name, value in old.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point from an empty folder; return its record as a dict. Never raises for a
    failure of the notebook: the failure is the record."""
    notebook, folder = Path(task["notebook"]), Path(task["folder"])
    parameters = dict(task["record"]["parameters"])
    if task["out_param"]:
        parameters[task["out_param"]] = str(folder)
    output, log = folder / f"{notebook.stem}.ipynb", folder / LOG_FILE
    rec = {"key": task["key"], "params": task["point"], "folder": str(folder), "log": str(log),
           "notebook": None, "error": "", "status": "failed", "wall_s": 0.0}
    try:
        if folder.exists():
            shutil.rmtree(folder)  # a partial or stale run starts again from nothing
        folder.mkdir(parents=True)
        save_json(folder / PARAMS_FILE, task["record"])
    except OSError as exc:
        rec["error"] = f"{type(exc).__name__}: could not prepare {folder}: {exc}"
        return rec
    start = time.perf_counter()
    env = SERIAL_ENV if task["restore_env"] else THREAD_ENV
    with _environment(env, restore=task["restore_env"]), \
            open(log, "w", encoding="utf-8") as fh:
        fh.write(f"# {notebook} {json.dumps(task['point'])} pid {os.getpid()} "
                 f"started {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        fh.flush()
        try:
            execute_notebook(notebook, output, parameters, cwd=task["cwd"],
                             timeout=task["timeout"], log_file=fh, progress_bar=False)
        except Exception as exc:
            rec["wall_s"] = time.perf_counter() - start
            if isinstance(exc, NotebookError):
                rec["error"] = f"{exc.ename}: {exc.evalue}"
                rec["notebook"] = str(exc.failed_path) if exc.failed_path else None
                fh.write(f"\n# FAILED after {rec['wall_s']:.1f} s: {exc}\n{exc.traceback}\n")
            else:
                rec["error"] = f"{type(exc).__name__}: {exc}"
                fh.write(f"\n# FAILED after {rec['wall_s']:.1f} s\n{traceback.format_exc()}\n")
            return rec
        rec["wall_s"] = time.perf_counter() - start
        fh.write(f"\n# finished in {rec['wall_s']:.1f} s\n")
    save_json(folder / MARKER, {
        "key": task["key"], "wall_s": rec["wall_s"],
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "provenance": provenance(parameters)})
    rec.update(status="done", notebook=str(output))
    return rec


def _record(rec: Mapping[str, Any]) -> RunRecord:
    return RunRecord(key=rec["key"], params=dict(rec["params"]), folder=Path(rec["folder"]),
                     status=rec["status"], wall_s=float(rec["wall_s"]), error=rec["error"],
                     notebook=Path(rec["notebook"]) if rec["notebook"] else None,
                     log=Path(rec["log"]) if rec["log"] else None)


def _skipped(p: PlannedRun, stem: str) -> RunRecord:
    try:
        wall = float(load_json(p.folder / MARKER).get("wall_s", 0.0))
    except (OSError, ValueError, AttributeError):
        wall = 0.0
    return RunRecord(p.key, p.point, p.folder, "skipped", wall,
                     notebook=p.folder / f"{stem}.ipynb", log=p.folder / LOG_FILE)


# --------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------

def run_sweep(notebook: str | Path,
              grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
              sweep_dir: str | Path, base_parameters: Mapping[str, Any] | None = None,
              profile_file: str | Path | None = None, workers: int | None = None,
              scheduler_address: str | None = None, timeout: int = 3600,
              out_param: str | None = "out_dir", cwd: str | Path | None = None,
              inputs: Inputs | None = None) -> SweepReport:
    """Run ``notebook`` once per point of ``grid``, each in ``<sweep_dir>/<run_key>/``.

    Args:
        notebook: the notebook to run.
        grid: parameter name -> list of values (:func:`expand_grid`), or a list of points.
        sweep_dir: the sweep's folder.
        base_parameters: injected into every run (they update the profile's values; the grid
            point updates them).
        profile_file: a YAML profile whose notebook parameters every run gets.
        workers: ``1``: serially in this process; ``n``: a LocalCluster of ``n`` single-threaded
            worker processes (default: ``os.cpu_count()``, at most one per run to do).
        scheduler_address: run on this existing Dask cluster instead (``workers`` is ignored).
        timeout: seconds allowed per cell.
        out_param: the notebook parameter that receives the run's folder (``None``: none).
        cwd: the kernels' working directory; default: the notebook's folder.
        inputs: fingerprints of the runs' inputs (:func:`input_fingerprint`; a mapping, or a
            function of the point), recorded with each run; runs finished with other inputs are
            redone.

    Returns:
        A :class:`SweepReport`; also saved as ``<sweep_dir>/sweep.json``.
    """
    notebook, sweep_dir = Path(notebook).resolve(), Path(sweep_dir).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    planned = plan_sweep(notebook, grid, sweep_dir, base_parameters, profile_file, inputs)
    todo = [p for p in planned if not p.finished]
    n_workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    serial = scheduler_address is None and n_workers == 1
    mode = ("serial" if serial else f"Dask cluster {scheduler_address}" if scheduler_address
            else f"LocalCluster, {n_workers} worker processes")
    report = SweepReport(notebook.name, sweep_dir, mode)
    report.skipped = [_skipped(p, notebook.stem) for p in planned if p.finished]
    tasks = [{"key": p.key, "point": p.point, "folder": str(p.folder), "record": p.record,
              "notebook": str(notebook), "out_param": out_param, "timeout": timeout,
              "cwd": str(cwd or notebook.parent), "restore_env": serial} for p in todo]

    start = time.perf_counter()
    if not tasks:
        records = []
    elif serial:
        records = [_run_one(task) for task in progress(tasks, desc=f"sweep {notebook.stem}")]
    else:
        records = _run_dask(tasks, n_workers, scheduler_address, notebook.stem)
    report.elapsed_s = time.perf_counter() - start

    order = {p.key: i for i, p in enumerate(planned)}
    for rec in sorted(records, key=lambda r: order[r["key"]]):
        (report.done if rec["status"] == "done" else report.failed).append(_record(rec))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    grid_record = dict(grid) if isinstance(grid, Mapping) else list(grid)
    save_json(sweep_dir / "sweep.json", {**report.to_dict(), "grid": _canonical(grid_record)})
    return report


def _run_dask(tasks: list[dict[str, Any]], n_workers: int, scheduler_address: str | None,
              stem: str) -> list[dict[str, Any]]:
    from distributed import as_completed

    from egmlib.data.parallel import dask_client

    # the same client as the data build's: a local cluster of one-thread processes, or an
    # existing one; this process's environment is restored afterwards
    with dask_client(scheduler_address or None, None if scheduler_address else n_workers) \
            as client:
        tag = uuid.uuid4().hex[:6]
        futures = {client.submit(_run_one, task, key=f"sweep-{stem}-{task['key']}-{tag}"): task
                   for task in tasks}
        records = []
        for future in progress(as_completed(futures), desc=f"sweep {stem}", total=len(futures)):
            try:
                records.append(future.result())
            except Exception as exc:  # the worker died or the task could not run at all
                task = futures[future]
                records.append({"key": task["key"], "params": task["point"],
                                "folder": task["folder"], "status": "failed", "wall_s": 0.0,
                                "error": f"{type(exc).__name__}: {exc}", "notebook": None,
                                "log": str(Path(task["folder"]) / LOG_FILE)})
        return records


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def aggregate_notebook(notebook: Path, profile: str, run_dir: Path,
                       profile_file: Path | None, timeout: int = 3600,
                       own_run_dir: bool = False) -> Path:
    """Execute a notebook that aggregates a study's runs (06_sweep, 07_filter); returns the
    executed notebook's path.

    Like ``make reproduce``: for the default profile in its own run directory the notebook is
    executed in place (it is committed with its outputs) with no parameter injected, so it keeps
    its own relative defaults and no machine path; otherwise (another profile, or
    ``own_run_dir``: a run directory given on the command line) into
    ``<run_dir>/notebooks/`` with the profile and the run directory injected. Raises
    :class:`~egmlib.workflow.pipeline.NotebookError` when a cell fails."""
    if profile == "default" and not own_run_dir:
        return execute_notebook(notebook, notebook, {}, timeout=timeout)
    return execute_notebook(notebook, run_dir / "notebooks" / notebook.name,
                            {"profile": profile, "run_dir": str(run_dir)},
                            profile_file=profile_file, timeout=timeout)


def profile_grid(profile_yaml: Path | None) -> dict[str, list[Any]]:
    """The CLI's grid (:data:`GRID_FIELDS`: generator, n_real_sims, filter_pool, k, seed) from
    the profile's :class:`~egmlib.core.params.SweepConfig` (its defaults where the YAML is
    silent). An arm field (:data:`ARM_FIELDS`) whose only value is 0, the notebook's own default,
    is left out of the grid, so its runs keep the keys they had before the field existed."""
    values = (_params.load_profile(profile_yaml)
              if profile_yaml is not None and profile_yaml.is_file() else {})
    config = _params.SweepConfig.from_values(values)
    grid = {name: list(getattr(config, key)) for name, key in GRID_FIELDS.items()}
    return {name: v for name, v in grid.items() if not (name in ARM_FIELDS and v == [0])}


def restrict_grid(grid: dict[str, list[Any]], rules: Sequence[str]) -> dict[str, list[Any]]:
    """Keep, in place, only the values that each ``"NAME=V1,V2"`` rule names (values read as
    ints except for ``generator``); a name outside :data:`GRID_FIELDS` or a value outside the
    profile's grid raises ValueError naming both.

    >>> restrict_grid({"k": [0, 6, 18], "seed": [0, 1]}, ["k=0,18"])
    {'k': [0, 18], 'seed': [0, 1]}
    """
    for rule in rules:
        name, sep, values = rule.partition("=")
        if not sep or name not in GRID_FIELDS or name not in grid:
            raise ValueError(f"got {rule!r}; allowed: NAME=V1,V2 with NAME one of "
                             f"{', '.join(GRID_FIELDS)}")
        try:
            wanted = [v.strip() if name == "generator" else int(v)
                      for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"got {rule!r}; the values of {name} are integers") from None
        outside = [v for v in wanted if v not in grid[name]]
        if not wanted or outside:
            raise ValueError(f"{name}: got {values!r}; allowed: values of the profile's grid "
                             f"{grid[name]}")
        grid[name] = [v for v in grid[name] if v in wanted]
    return grid


def add_execution_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that runs a grid of notebooks through :func:`run_sweep` (this
    module's CLI and :mod:`egmlib.workflow.ablation`'s): ``--workers``, ``--scheduler`` and
    ``--timeout``."""
    parser.add_argument("--workers", type=int, default=1,
                        help="local worker processes (default 1: serial, every core per run; "
                             "measured faster than parallel one-thread runs on 2 cores)")
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m egmlib.workflow.sweep --profile P [--workers N] [--scheduler ADDRESS]
    [--generator NAME]
    [--dry-run]``."""
    parser = argparse.ArgumentParser(prog="python -m egmlib.workflow.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", choices=_params.PROFILES)
    add_execution_options(parser)
    parser.add_argument("--generator", action="append", default=None, metavar="NAME",
                        help="run only this generator's part of the grid (repeatable; the shared "
                             "k = 0 runs always belong to the part)")
    parser.add_argument("--restrict", action="append", default=[], metavar="NAME=V1,V2",
                        help="run only these values of one grid field (repeatable; e.g. "
                             "n_real_sims=4 or k=0,18): a part of the study, whose finished "
                             "runs the full sweep then skips")
    parser.add_argument("--dry-run", action="store_true", help="show the plan, run nothing")
    args = parser.parse_args(argv)

    root = repo_root()
    notebook = root / "notebooks" / f"{SWEEP_NOTEBOOK}.ipynb"
    if not notebook.is_file():
        print(f"error: the sweep runs notebooks/{SWEEP_NOTEBOOK}.ipynb, which does not exist "
              f"yet under {root}", file=sys.stderr)
        return 2
    profile_yaml = root / "params" / f"{args.profile}.yaml"
    if args.profile != "default" and not profile_yaml.is_file():
        print(f"error: profile file {profile_yaml} does not exist", file=sys.stderr)
        return 2
    # The default profile is the notebooks' own values; its YAML (if any) only sets the grid.
    profile_file = profile_yaml if args.profile != "default" else None
    try:
        grid = profile_grid(profile_yaml)
        values = _params.load_profile(profile_file) if profile_file else {}
    except _params.ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = resolve_run_dir(args.profile, values.get("run_dir", ""))
    base = {"profile": args.profile, "run_dir": str(run_dir)}
    sweep_dir = run_dir / "sweep"

    if args.generator:
        unknown = sorted(set(args.generator) - set(grid["generator"]))
        if unknown:
            print(f"error: --generator {', '.join(unknown)}: not in the profile's grid "
                  f"{grid['generator']}", file=sys.stderr)
            return 2
        grid["generator"] = [g for g in grid["generator"] if g in args.generator]
    try:
        restrict_grid(grid, args.restrict)
    except ValueError as exc:
        print(f"error: --restrict: {exc}", file=sys.stderr)
        return 2
    points = shared_baseline(expand_grid(grid))
    digests = {gen: input_fingerprint(run_dir, [gen]) for gen in {p["generator"] for p in points}}

    def inputs(point: Mapping[str, Any]) -> dict[str, str]:
        return digests[point["generator"]]

    if args.dry_run:
        planned = plan_sweep(notebook, points, sweep_dir, base, profile_file, inputs)
        todo = [p for p in planned if not p.finished]
        shape = " x ".join(f"{len(v)} {k}" for k, v in grid.items())
        print(f"sweep of {notebook.name} into {sweep_dir}: {len(planned)} runs ({shape}, k = 0 "
              f"shared by the generators); {len(planned) - len(todo)} finished, "
              f"{len(todo)} to run")
        for p in todo:
            print(f"  {p.key} {p.point}")
        return 0

    if args.profile in COMMITTED_PROFILES:  # 06 will write over the committed record
        note_other_machine(root / "results" / args.profile)
    report = run_sweep(notebook, points, sweep_dir, base, profile_file, workers=args.workers,
                       scheduler_address=args.scheduler, timeout=args.timeout, inputs=inputs)
    print(report.summary())
    if not report.ok:
        return 1
    aggregate = root / "notebooks" / f"{AGGREGATE_NOTEBOOK}.ipynb"
    if aggregate.is_file():
        start = time.perf_counter()
        try:
            output = aggregate_notebook(aggregate, args.profile, run_dir, profile_file,
                                        args.timeout)
        except NotebookError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{AGGREGATE_NOTEBOOK:<12} {time.perf_counter() - start:7.1f} s  -> {output}")
    else:
        print(f"notebooks/{AGGREGATE_NOTEBOOK}.ipynb does not exist yet: nothing aggregated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
