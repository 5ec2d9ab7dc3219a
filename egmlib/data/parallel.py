"""The simulation batches of the data build on a Dask cluster
(:func:`egmlib.data.build.simulate_all` with ``scheduler`` or ``workers``).

The cluster receives plain, picklable inputs only: the geometry's arrays and the leads (scattered
once to every worker), the specs of one batch and the run's time settings; each task builds a
:class:`~egmlib.physics.simulate.Simulator` of one thread and returns the batch's
:class:`~egmlib.physics.simulate.SimulationResult`. The specs are drawn here, in the parent.

Identity with the serial build
------------------------------
The serial loop of one rhythm (``_simulate_rhythm`` of :mod:`egmlib.data.build`) makes attempt
k = 0, 1, ... with the k-th child of the rhythm's seed sequence, ``min(batch, n - kept)``
columns and ids from where attempt k - 1 stopped; it drops the columns that terminated (AF) and
goes on until ``n`` are kept. Attempt k's inputs depend on the earlier attempts only through
how many columns they kept. Here the attempts the serial loop would make if every column still
running survived are planned, drawn (child k by its index: the same seed sequence the serial
``spawn`` gives) and submitted together, both rhythms at once. Results are taken attempt by
attempt in that order, never in completion order. When an attempt comes back with dropped
columns, the plan is made again from the exact count: the planned attempts whose (number, first
id, size) are unchanged stay (their specs are the same), the others are cancelled, and the new
plan's missing attempts are drawn and submitted. This is the serial loop's round-by-round
replacement, with the next round started as soon as its inputs are known. Every attempt kept
therefore has the inputs of the serial loop's attempt of the same number; the numba kernel's
results do not depend on the thread count, so its arrays are the same to the bit, and so are
the kept specs, their ids and the count replaced. Speculation costs compute only: the
attempts planned after one with terminations that the new plan changes (in practice the last,
partial batch of the rhythm).

:func:`distributed.LocalCluster` sets ``OMP_NUM_THREADS=1`` and other variables in this
process's environment and leaves them there; :func:`egmlib.core.process.environment_restored`
puts the environment back when the cluster has closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from egmlib.core.process import environment_restored
from egmlib.physics.geometry import AtrialGeometry, TriMesh
from egmlib.physics.simulate import SimulationResult, SimulationSpec, Simulator, draw_specs

#: decides which columns of a batch are kept: (rhythm, result) -> (S,) bool
KeepRule = Callable[[str, SimulationResult], NDArray[np.bool_]]


def check_cluster_args(scheduler: str | None, workers: int | None) -> None:
    """Raise ``ValueError`` unless at most one of ``scheduler`` (an address string) and
    ``workers`` (an int >= 1) is given."""
    if scheduler is not None and workers is not None:
        raise ValueError("give either 'scheduler' (an existing cluster) or 'workers' (a local "
                         f"cluster), not both; got scheduler={scheduler!r}, workers={workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler):
        raise ValueError(f"parameter 'scheduler': got {scheduler!r}; allowed: an address such "
                         "as 'tcp://host:8786', or None")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"parameter 'workers': got {workers!r}; allowed: an int >= 1 or None")


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster at ``scheduler``, or of a local cluster of
    ``workers`` one-thread processes made and closed here; this process's environment is
    restored on exit."""
    from distributed import Client, LocalCluster

    with environment_restored():
        if scheduler is not None:
            with Client(scheduler) as client:
                yield client
            return
        with (LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                           dashboard_address=None) as cluster,
              Client(cluster) as client):
            yield client


def geometry_arrays(geometry: AtrialGeometry) -> dict[str, Any]:
    """The fields of ``geometry`` as plain arrays (and names); :func:`geometry_from_arrays`
    gives it back."""
    return {"vertices": geometry.mesh.vertices, "faces": geometry.mesh.faces,
            "region": geometry.region, "links": geometry.links,
            "link_names": tuple(geometry.link_names), "pacing": geometry.pacing,
            "landmarks": dict(geometry.landmarks), "fibres": geometry.fibres,
            "anisotropy": geometry.anisotropy}


def geometry_from_arrays(a: dict[str, Any]) -> AtrialGeometry:
    """The geometry of :func:`geometry_arrays`."""
    return AtrialGeometry(mesh=TriMesh(a["vertices"], a["faces"]), region=a["region"],
                          links=a["links"], link_names=a["link_names"], pacing=a["pacing"],
                          landmarks=a["landmarks"], fibres=a.get("fibres"),
                          anisotropy=a.get("anisotropy", 1.0))


@dataclass(frozen=True)
class BatchRun:
    """What every batch of a build shares besides the geometry and the leads: the time step, the
    recorded and discarded durations (ms), the snapshot times and the simulator backend."""

    dt_ms: float
    record_ms: float
    transient_ms: float
    snapshot_ms: tuple[float, ...]
    backend: str


def simulate_batch(geometry: dict[str, Any], leads: dict[str, NDArray],
                   specs: list[SimulationSpec], run: BatchRun) -> SimulationResult:
    """One batch on a worker: a one-thread simulator of the geometry's arrays runs ``specs``."""
    sim = Simulator(geometry_from_arrays(geometry), dt=run.dt_ms, threads=1,
                    backend=run.backend)
    return sim.run(specs, run.record_ms, transient_ms=run.transient_ms, leads=leads,
                   snapshot_ms=list(run.snapshot_ms), show_progress=False)


def child_seed(seed_seq: np.random.SeedSequence, index: int) -> np.random.SeedSequence:
    """The ``index``-th child of ``seed_seq``: what its ``index + 1``-th ``spawn(1)`` gives."""
    return np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, index),
                                  pool_size=seed_seq.pool_size)


@dataclass(frozen=True)
class RhythmTask:
    """``n`` kept simulations of ``rhythm``, drawn from the fresh ``seed_seq``, ids from
    ``first_id``."""

    rhythm: str
    n: int
    seed_seq: np.random.SeedSequence
    first_id: int


@dataclass
class _RhythmState:
    """The serial loop's state of one rhythm (attempts taken so far) and its submitted
    attempts, (number, first id, size) -> future, in attempt order."""

    task: RhythmTask
    next_id: int
    kept: int = 0
    attempts: int = 0
    taken: list[tuple[SimulationResult, NDArray[np.bool_]]] = field(default_factory=list)
    pending: dict[tuple[int, int, int], Any] = field(default_factory=dict)

    def plan(self, batch: int, max_attempts: int) -> list[tuple[int, int, int]]:
        """The attempts the serial loop makes next if every submitted column survives."""
        out, kept, next_id = [], self.kept, self.next_id
        for k in range(self.attempts, max_attempts):
            if kept >= self.task.n:
                break
            size = min(batch, self.task.n - kept)
            out.append((k, next_id, size))
            kept += size
            next_id += size
        return out


def simulate_rhythms(tasks: Sequence[RhythmTask], geometry: AtrialGeometry,
                     leads: dict[str, NDArray], run: BatchRun, batch: int, max_attempts: int,
                     keep: KeepRule, bar: Any, scheduler: str | None, workers: int | None
                     ) -> list[list[tuple[SimulationResult, NDArray[np.bool_]]]]:
    """Simulate the ``tasks`` on a Dask cluster (see the module's text for the identity with the
    serial loop). Returns per task its attempts in order, each as (batch result, kept columns
    by ``keep``); ``bar`` is updated by the kept count of each attempt taken. Raises
    ``RuntimeError`` when a rhythm would need more than ``max_attempts`` attempts."""
    check_cluster_args(scheduler, workers)
    with dask_client(scheduler, workers) as client:
        return _drive(client, tasks, geometry, leads, run, batch, max_attempts, keep, bar)


def _drive(client: Any, tasks: Sequence[RhythmTask], geometry: AtrialGeometry,
           leads: dict[str, NDArray], run: BatchRun, batch: int, max_attempts: int,
           keep: KeepRule, bar: Any) -> list[list[tuple[SimulationResult, NDArray[np.bool_]]]]:
    from distributed import as_completed

    geometry_f, leads_f = client.scatter([geometry_arrays(geometry), dict(leads)],
                                         broadcast=True)
    states = [_RhythmState(task=t, next_id=t.first_id) for t in tasks]
    done = as_completed()

    def replan(st: _RhythmState) -> None:
        wanted = st.plan(batch, max_attempts)
        for key in [k for k in st.pending if k not in wanted]:
            st.pending.pop(key).cancel()
        for key in wanted:
            if key not in st.pending:
                k, first_id, size = key
                specs = draw_specs(st.task.rhythm, size, child_seed(st.task.seed_seq, k),
                                   geometry, first_id=first_id)
                st.pending[key] = client.submit(simulate_batch, geometry_f, leads_f, specs, run,
                                                pure=False)
                done.add(st.pending[key])
        st.pending = dict(sorted(st.pending.items()))

    for st in states:
        replan(st)
    for _ in done:
        for st in states:
            _take_finished(st, keep, bar, max_attempts, replan)
        if all(st.kept >= st.task.n for st in states):
            break
    return [st.taken for st in states]


def _take_finished(st: _RhythmState, keep: KeepRule, bar: Any, max_attempts: int,
                   replan: Callable[[_RhythmState], None]) -> None:
    """Take the finished attempts at the head of ``st``'s queue, in attempt order; plan again
    after one with dropped columns."""
    while st.pending:
        key, future = next(iter(st.pending.items()))
        if not future.done():
            return
        del st.pending[key]
        res = future.result()  # a failed batch raises its error here
        mask = np.asarray(keep(st.task.rhythm, res), bool)
        _, first_id, size = key
        st.taken.append((res, mask))
        st.attempts += 1
        st.next_id = first_id + size
        st.kept += int(mask.sum())
        bar.update(int(mask.sum()))
        if st.kept < st.task.n and st.attempts >= max_attempts:
            raise RuntimeError(f"could not obtain {st.task.n} sustained {st.task.rhythm} "
                               "simulations")
        if not mask.all():
            replan(st)
