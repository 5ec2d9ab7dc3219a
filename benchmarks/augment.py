"""Benchmarks of the augmentation experiment (``python -m benchmarks.run --only recon,sweep``).

Every figure comes with a baseline measured in the same run:

* ``recon``: training pairs per second of :class:`egmlib.augmentation.recon.DualBranchVAE` at the
default
  sizes (400 x 64 BSPM -> 400 x 256 EGM, batch 32), forward + loss + backward + Adam, with the
  loss computed directly (:func:`egmlib.augmentation.recon.recon_loss` on the formed
  reconstruction, the
  baseline) and from moments (:func:`egmlib.augmentation.recon.recon_loss_moments`, what training
  uses), on
  one and on two threads.
* ``baselines``: the baselines of the test BSPMs
  (:func:`egmlib.augmentation.baselines.baselines`: Tikhonov by L-curve, GCV and the validation
  lambda, the floor), computed as every 05 run did before (the baseline) against read back from
  the cache that the runs now share (:func:`egmlib.augmentation.baselines.cached_baselines`), on
  the default data set (``--quick``: the smoke one, built when missing).
* ``scores``: the fixed cost of scoring a 05 run and of its training scale, before and after
  (:func:`bench_scores`).
* ``sweep``: the same two runs of ``notebooks/05_augment.ipynb`` (k in {0, 18}, seed 0,
  VAE-S) run serially and then on a ``LocalCluster`` of two single-threaded workers, each into
  a fresh temporary sweep folder: the wall times and the speed-up (serial / parallel). Full mode
  uses the default profile and needs its run directory (notebooks 01-02 run, ``make
  reproduce``); ``--quick`` uses the smoke profile, which it builds when missing.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

Row = dict[str, Any]


def _pairs_per_s(fast: bool, threads: int, batch: int = 32, steps: int = 6) -> float:
    from egmlib.augmentation.recon import DualBranchVAE, ReconConfig, recon_loss, recon_loss_moments

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        cfg = ReconConfig(T=400, n_electrodes=64, n_rec=256, bspm_scale=1.0, egm_scale=1.0)
        model = DualBranchVAE(cfg).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        b, e = torch.randn(batch, 64, 400), torch.randn(batch, 256, 400)

        def step() -> None:
            parts = (recon_loss_moments(model, b, e) if fast else
                     recon_loss(model(b, True), b, e, cfg, channels_first=True))
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        step()
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return batch * steps / best


def bench_recon(quick: bool) -> list[Row]:
    rows: list[Row] = []
    base = _pairs_per_s(False, 1)
    for threads in (1,) if quick else (1, 2):
        for fast in (False, True):
            rate = base if (threads == 1 and not fast) else _pairs_per_s(fast, threads)
            rows.append({"section": "recon",
                         "item": f"recon training, {'moments' if fast else 'direct'} loss, "
                                 f"{threads} thread{'s' if threads > 1 else ''}",
                         "batch": 32, "pairs_per_s": rate, "ratio": rate / base,
                         "baseline": "direct loss, 1 thread"})
    return rows


def bench_sweep(quick: bool) -> list[Row]:
    from egmlib.core.runs import repo_root
    from egmlib.workflow.pipeline import run_pipeline
    from egmlib.workflow.sweep import run_sweep

    root = repo_root()
    profile, run_dir, profile_file = _profile_run(quick)
    needed = [run_dir / "data" / "manifest.json", run_dir / "vae_s" / "synthetic_SR.npz"]
    if not all(p.exists() for p in needed):
        if not quick:
            return [{"section": "sweep", "skipped": True,
                     "item": f"needs {run_dir} with notebooks 01-02 run (make reproduce)"}]
        run_pipeline("smoke", only=["01_data", "02_vae_s"])
    k_max = 4 if quick else 18
    grid = {"generator": ["vae_s"], "k": [0, k_max], "seed": [0]}
    base = {"profile": profile, "run_dir": str(run_dir)}
    notebook = root / "notebooks" / "05_augment.ipynb"
    rows: list[Row] = []
    walls = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            t0 = time.perf_counter()
            report = run_sweep(notebook, grid, Path(tmp) / "sweep", base, profile_file,
                               workers=workers)
            walls[workers] = time.perf_counter() - t0
            if not report.ok:
                raise RuntimeError(f"benchmark sweep failed:\n{report.summary()}")
            runs_s = [r.wall_s for r in report.done]
        rows.append({"section": "sweep",
                     "item": f"05 x {len(runs_s)} ({profile}), "
                             f"{'serial' if workers == 1 else f'{workers} workers'}",
                     "seconds": walls[workers], "ratio": walls[1] / walls[workers],
                     "baseline": "serial (speed-up)", "workers": workers,
                     "run_s_mean": sum(runs_s) / len(runs_s)})
    return rows


def _profile_run(quick: bool) -> tuple[str, Path, Any]:
    """``(profile, run_dir, profile_file)`` of the benchmark's data: smoke when ``quick``."""
    from egmlib.core import params as params_mod
    from egmlib.core.runs import repo_root, resolve_run_dir

    profile_file = repo_root() / "params" / "smoke.yaml" if quick else None
    values = params_mod.load_profile(profile_file) if profile_file else {}
    profile = "smoke" if quick else "default"
    return profile, resolve_run_dir(profile, values.get("run_dir", "")), profile_file


def bench_baselines(quick: bool) -> list[Row]:
    from egmlib.augmentation import augment, baselines
    from egmlib.data import load_dataset
    from egmlib.workflow.pipeline import run_pipeline

    profile, run_dir, _ = _profile_run(quick)
    if not (run_dir / "data" / "manifest.json").exists():
        if not quick:
            return [{"section": "baselines", "skipped": True,
                     "item": f"needs {run_dir} with notebook 01 run (make reproduce)"}]
        run_pipeline("smoke", only=["01_data"])
    ds = load_dataset(run_dir)
    seed = augment.EVAL_NOISE_SEED
    t0 = time.perf_counter()
    baselines.baselines(ds, 20.0, seed)
    computed = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as tmp:
        baselines.cached_baselines(ds, 20.0, seed, tmp)  # fills the cache (not timed)
        t0 = time.perf_counter()
        baselines.cached_baselines(ds, 20.0, seed, tmp)
        cached = time.perf_counter() - t0
    return [{"section": "baselines", "item": f"baselines of the test BSPMs ({profile}), {how}",
             "seconds": sec, "ratio": computed / sec, "baseline": "computed in every run"}
            for how, sec in (("computed", computed), ("read from the cache", cached))]


def bench_scores(quick: bool) -> list[Row]:
    """The fixed cost of scoring one 05 run, before and after, on random windows of the default
    test set's size (200 windows of 400 x 256: 100 test windows on two held-out torsos;
    ``--quick``: 20): :func:`egmlib.augmentation.baselines.scores` with the per-window metrics
    computed on the whole array at once and the truth's DF recomputed (as every run did
    before, the baseline) against by blocks of windows with the truth's DF given (read from the
    cached baselines); and the training scale of :meth:`DualBranchVAE.fit_scales` on 984
    training pairs (``--quick``: 98), through a float64 copy (before) against by blocks."""
    import numpy as np

    from benchmarks.run import _best
    from egmlib.augmentation import baselines, recon
    from egmlib.core import metrics

    n = 20 if quick else 200
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 400, 256))
    y = x + rng.standard_normal(x.shape)
    lab = np.repeat([0, 1], n // 2)
    block = metrics._PAIR_BLOCK_ELEMENTS
    try:
        metrics._PAIR_BLOCK_ELEMENTS = x.size  # one block: the whole array, as before
        before = _best(lambda: baselines.scores(x, y, lab, 100.0), 2)
    finally:
        metrics._PAIR_BLOCK_ELEMENTS = block
    df = baselines.truth_df(x, lab, 100.0)
    after = _best(lambda: baselines.scores(x, y, lab, 100.0, df), 2)
    pairs = 98 if quick else 984
    train = rng.standard_normal((pairs, 400, 320)).astype(np.float32)
    copy = _best(lambda: float(np.asarray(train, np.float64).std()), 2)
    blocks = _best(lambda: recon._std(train), 2)
    item = f"scores of one run ({n} windows of 400 x 256)"
    return [{"section": "scores", "item": f"{item}, whole arrays, truth DF recomputed",
             "seconds": before, "ratio": 1.0, "baseline": "whole arrays"},
            {"section": "scores", "item": f"{item}, by blocks, truth DF cached",
             "seconds": after, "ratio": before / after, "baseline": "whole arrays"},
            {"section": "scores", "item": f"training scale ({pairs} pairs), float64 copy",
             "seconds": copy, "ratio": 1.0, "baseline": "float64 copy"},
            {"section": "scores", "item": f"training scale ({pairs} pairs), by blocks",
             "seconds": blocks, "ratio": copy / blocks, "baseline": "float64 copy"}]

