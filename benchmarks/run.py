"""Speed benchmarks: every figure is reported with a baseline measured in the same run.

``python -m benchmarks.run [--quick] [--only SECTION,...]`` prints one table
and writes ``runs/bench/bench.json``. Nothing asserts a wall time: the machines are shared, so
only ratios measured side by side in one run are meaningful (each timing is the best of a few
repeats). ``--quick`` keeps the fast subset (shorter simulations, the smoke data set, n_rec 256,
the 400 x 256 VAE).

Sections (each a function returning a list of rows):

* ``simulator``: node-steps/s of :meth:`egmlib.physics.simulate.Simulator.run` (float32, a batch of
  simulations as columns) with the ``numba`` and ``torch`` backends side by side, at batch 1,
  8, 24 and 48 (quick: 1 and 24), against :func:`egmlib.physics.simulate.simulate_reference` (scipy
  float64, one simulation at a time), default geometry (``biatrial_geometry(2.0)``, 3,500
  nodes), dt 0.1 ms, a 256-site lead recorded every 20 steps. Simulator times include its
  setup (operators, the stability check), not the numba compilation (a warm-up call first).
  Rows carry the one-minute load average before and after the section and, for numba, how
  many timing windows the kernel ran on each thread count (it chooses by measured rate).
* ``data``: :func:`egmlib.data.build_dataset` of the smoke profile and (full mode) the default
  01_data parameters, into a temporary run folder with ``rebuild=True``, with the load.
* ``transfer``: :func:`benchmarks.transfer.time_transfer_matrix` at n_rec 256 and (full) 2048.
* ``recon``, ``baselines``, ``sweep``: the augmentation experiment (:mod:`benchmarks.augment`):
  training pairs/s of the reconstruction network, the baselines computed against cached, and a
  small 05 grid serially against two workers.
* ``train``: :func:`benchmarks.train.training_throughput`, eager against optimised (and, where
  the processor has bfloat16 arithmetic, mixed precision; also at 02's batch of 4 against
  float32), 400 x 256 and (full) 400 x 2048, with the FLOPs of a step
  (:func:`benchmarks.train.training_flops`) and the machine's matrix-product rate
  (:func:`benchmarks.train.matmul_gflops`) as the ceiling.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.augment import bench_baselines, bench_recon, bench_scores, bench_sweep
from egmlib.core import params as params_mod
from egmlib.core.runs import git_commit, package_versions, portable, repo_root, save_json, shown

Row = dict[str, Any]


def _machine() -> str:
    """The CPU model and core count (the conditions every figure of a run was measured under)."""
    from egmlib.core.runs import cpu_info

    return f"{cpu_info()[0]}, {os.cpu_count()} cores, load {_load()} at the end"


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _best(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------------------------------
def _load() -> float:
    """One-minute load average (other processes share the 2 cores)."""
    return round(os.getloadavg()[0], 2)


def bench_simulator(quick: bool) -> list[Row]:
    from egmlib.physics.anatomy import load_anatomy
    from egmlib.physics.electrograms import infinite_medium_lead_field
    from egmlib.physics.geometry import biatrial_geometry, recording_sites
    from egmlib.physics.simulate import Simulator, draw_specs, numba_available, simulate_reference

    geom = biatrial_geometry(2.0)
    n = geom.n_vertices
    # the real CT atria at the same edge length (numba or torch, batch 24), beside the idealised
    ct = load_anatomy("ct_biatrial", 2.0)
    ct_lead = infinite_medium_lead_field(recording_sites(ct, 256).electrodes, ct.mesh.vertices)
    sites = recording_sites(geom, 256)
    lead = infinite_medium_lead_field(sites.electrodes, geom.mesh.vertices)
    lead32 = lead.astype(np.float32)
    dt, duration = 0.1, (200.0 if quick else 500.0)
    repeats = 2 if quick else 3
    n_steps = round(duration / dt)
    batches = (1, 24) if quick else (1, 8, 24, 48)
    backends = ["numba", "torch"] if numba_available() else ["torch"]

    spec = draw_specs("AF", 1, 0, geom)[0]
    sims = {b: Simulator(geom, dt=dt, backend=b) for b in backends}
    jobs: dict[tuple[str, int], Callable[[], Any]] = {
        ("scipy", 1): lambda: simulate_reference(geom, spec, duration, dt=dt, record_every=20,
                                                 lead=lead)}
    for backend in backends:
        for batch in batches:
            specs = (draw_specs("SR", batch // 2, 1, geom)
                     + draw_specs("AF", batch - batch // 2, 2, geom, first_id=batch // 2))
            jobs[backend, batch] = (lambda specs=specs, sim=sims[backend]: sim.run(
                specs, duration, leads={"egm": lead32}, record_dt_ms=2.0, show_progress=False))
    ct_specs = (draw_specs("SR", 12, 1, ct) + draw_specs("AF", 12, 2, ct, first_id=12))
    ct_sim = Simulator(ct, dt=dt, backend=backends[0])
    jobs[backends[0] + "-ct", 24] = lambda: ct_sim.run(
        ct_specs, duration, leads={"egm": ct_lead.astype(np.float32)}, record_dt_ms=2.0,
        show_progress=False)
    # warm-up: the numba kernel is compiled (or loaded from its cache) on the first call
    if "numba" in sims:
        jobs["numba", batches[0]]()
    # interleaved repeats (baseline and every batch once per round), best time of each: the
    # machine is shared, so a slow stretch hits all of them rather than one
    load0 = _load()
    best = dict.fromkeys(jobs, float("inf"))
    threads_used: dict[tuple[str, int], list[int]] = {}
    for _ in range(repeats):
        for key, job in jobs.items():
            t = _best(job, 1)
            if t < best[key]:
                best[key] = t
                if key[0] == "numba":  # thread counts the kernel chose in that run
                    threads_used[key] = [c for c, _ in sims["numba"].last_thread_history]
    load1 = _load()
    ref_rate = n * n_steps / best["scipy", 1]
    rows: list[Row] = []
    for (backend, batch), seconds in best.items():
        on_ct = backend.endswith("-ct")
        n_nodes = ct.n_vertices if on_ct else n
        rate = n_nodes * batch * n_steps / seconds
        engine = backend.removesuffix("-ct")
        item = {"scipy": "scipy float64, one at a time",
                "torch": "Simulator.run torch float32",
                "numba": "Simulator.run numba float32"}[engine]
        if on_ct:
            item += ", CT atria"
        row: Row = {"section": "simulator", "item": item, "backend": engine, "batch": batch,
                    "seconds": seconds, "node_steps_per_s": rate, "ratio": rate / ref_rate,
                    "baseline": "scipy loop (idealised)", "load": f"{load0}-{load1}",
                    "anatomy": "ct_biatrial" if on_ct else "idealised", "n_nodes": n_nodes}
        if (backend, batch) in threads_used:
            used = threads_used[backend, batch]
            row["kernel_threads"] = {str(c): used.count(c) for c in sorted(set(used))}
        rows.append(row)
    for r in rows:
        r.update(n_steps=n_steps, dt_ms=dt, threads=torch.get_num_threads())
    return rows


# ------------------------------------------------------------------------------------------
def bench_data(quick: bool) -> list[Row]:
    from egmlib.data import build_dataset

    smoke = params_mod.load_profile(repo_root() / "params" / "smoke.yaml")
    # (name, parameters, Dask workers): the serial smoke build is the baseline; the same build
    # on a two-worker local Dask cluster; the smoke sizes on the CT atria; the default build
    profiles: list[tuple[str, dict[str, Any], int | None]] = [
        ("smoke", smoke, None), ("smoke, Dask 2 workers", smoke, 2)]
    if not quick:
        profiles += [("smoke, CT atria", {**smoke, "anatomy": "ct_biatrial"}, None),
                     ("default", {}, None)]
    rows: list[Row] = []
    base = None
    for name, values, workers in profiles:
        p = params_mod.validate("01_data", values)
        with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
            load0 = _load()
            t0 = time.perf_counter()
            ds = build_dataset(p, Path(tmp), rebuild=True, show_progress=False, workers=workers)
            seconds = time.perf_counter() - t0
            n_windows = len(ds.label)
            backend = ds.manifest.get("simulator_backend", "torch")
        base = base or seconds
        rows.append({"section": "data", "item": f"build_dataset ({name})", "seconds": seconds,
                     "n_windows": n_windows, "n_sims": int(p["n_sr"] + p["n_af"]),
                     "batch": int(p["batch"]), "backend": backend,
                     "ratio": seconds / base, "baseline": "smoke build",
                     "load": f"{load0}-{_load()}"})
    return rows


# ------------------------------------------------------------------------------------------
def bench_transfer(quick: bool) -> list[Row]:
    from benchmarks.transfer import time_transfer_matrix

    rows: list[Row] = []
    base = None
    for n_rec in (256,) if quick else (256, 2048):
        r = time_transfer_matrix(n_rec)
        seconds = r["heart_surface_s"] + r["transfer_matrix_s"]
        base = base or seconds
        rows.append({"section": "transfer", "item": f"transfer matrix n_rec {n_rec}",
                     "seconds": seconds, "ratio": seconds / base, "baseline": "n_rec 256",
                     **{k: v for k, v in r.items() if k != "n_rec"}, "n_rec": n_rec})
    return rows


# ------------------------------------------------------------------------------------------
def bench_train(quick: bool) -> list[Row]:
    from benchmarks import train
    from egmlib.generators.models import VAEConfig
    from egmlib.generators.train import resolve_precision

    bf16 = resolve_precision("auto") == "bfloat16"
    rows: list[Row] = []
    # the machine's dense float32 rate, measured in the same run: a ceiling for the training
    # steps, whose work is almost all convolutions (train.training_flops)
    peak = train.matmul_gflops()
    rows.append({"section": "train", "item": "matmul 1024 x 1024 float32", "gflops": peak,
                 "ratio": 1.0, "baseline": "matmul"})
    for c in (256,) if quick else (256, 2048):
        cfg = VAEConfig(T=400, C=c)
        gflop = train.training_flops(cfg)["flops_per_window"] / 1e9
        batch, n_batches = (32, 4) if c <= 256 else (8, 3)
        res = {v: train.training_throughput(cfg, batch_size=batch, n_batches=n_batches,
                                            variant=v)
               for v in ("eager", "optimized", *(("bfloat16",) if bf16 else ()))}
        base = res["eager"]["windows_per_s"]
        for v, r in res.items():
            rows.append({"section": "train", "item": f"VAE 400 x {c} {v}",
                         "windows_per_s": r["windows_per_s"], "seconds": r["seconds"],
                         "ratio": r["windows_per_s"] / base, "baseline": "eager",
                         "gflop_per_window": gflop, "gflops": r["windows_per_s"] * gflop,
                         "of_matmul": r["windows_per_s"] * gflop / peak,
                         "batch": batch, "n_batches": n_batches, "threads": r["threads"]})
    if bf16:  # 02's own batch (4): mixed precision against the float32 path it replaces
        cfg = VAEConfig(T=400, C=256)
        res = {v: train.training_throughput(cfg, batch_size=4, n_batches=10, warmup=3,
                                            variant=v) for v in ("optimized", "bfloat16")}
        for v, r in res.items():
            rows.append({"section": "train", "item": f"VAE 400 x 256 {v}, batch 4",
                         "windows_per_s": r["windows_per_s"], "seconds": r["seconds"],
                         "ratio": r["windows_per_s"] / res["optimized"]["windows_per_s"],
                         "baseline": "optimized, batch 4", "batch": 4, "n_batches": 10,
                         "threads": r["threads"]})
    return rows


SECTIONS: dict[str, Callable[[bool], list[Row]]] = {
    "simulator": bench_simulator,
    "data": bench_data,
    "transfer": bench_transfer,
    "train": bench_train,
    "recon": bench_recon,
    "baselines": bench_baselines,
    "scores": bench_scores,
    "sweep": bench_sweep,
}


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return "" if x is None else str(x)


def print_table(rows: list[Row]) -> None:
    cols = [("section", "section"), ("item", "item"), ("batch", "batch"),
            ("seconds", "s"), ("node_steps_per_s", "node-steps/s"),
            ("windows_per_s", "windows/s"), ("pairs_per_s", "pairs/s"), ("gflops", "GFLOP/s"),
            ("ratio", "ratio"),
            ("baseline", "vs")]
    table = [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, (_, h) in enumerate(cols)]
    print("  ".join(h.ljust(w) for (_, h), w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(x.ljust(w) for x, w in zip(t, widths)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the fast subset only")
    ap.add_argument("--only", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--out", default="", help="JSON path (default runs/bench/bench.json)")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    rows: list[Row] = []
    timings = {}
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rows.extend(SECTIONS[name](args.quick))
        timings[name] = time.perf_counter() - t0
    print_table(rows)
    out = Path(args.out) if args.out else repo_root() / "runs" / "bench" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(out, portable({"quick": args.quick, "sections": names,
                             "section_seconds": timings, "threads": torch.get_num_threads(),
                             "machine": _machine(), "created_utc": _now(),
                             "git_commit": git_commit(), "versions": package_versions(),
                             "rows": rows}))
    print(f"wrote {shown(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
