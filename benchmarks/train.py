"""Speed of VAE training (``python -m benchmarks.run --only train``): throughput, FLOPs, ceiling.

* :func:`training_throughput` measures windows per second of one training step for the plain eager
  baseline and for the optimised CPU path used by :func:`egmlib.generators.train.train_vae`
  (:func:`egmlib.generators.train.prepare_model`).
* :func:`training_flops` counts the floating-point operations of a step; :func:`matmul_gflops`
  measures the machine's dense float32 rate, a ceiling for convolution-bound training.

Measured on a 2-core AMD EPYC virtual machine (torch 2.13.0, 2 threads, medians of 3 interleaved
runs; windows/s of forward + loss + backward + Adam):

==========  ======================  ======================  =====
size        eager (baseline)        optimized               ratio
==========  ======================  ======================  =====
400 x 256   10.4 (batch 32)         21.0 (batch 16)         2.0x
400 x 256   16.2 (batch 16)         21.0 (batch 16)         1.3x
400 x 256   10.4 (batch 32)         17.6 (batch 32)         1.7x
400 x 2048  1.24 (batch 8)          2.49 (batch 8)          2.0x
==========  ======================  ======================  =====

What helped: channels-last weights (the decoder's transposed and smoothing convolutions ~2x),
the single-channel smoothing convolution as a shifted sum, the loss's STFT as one matrix product
(the loss's share of a step fell from ~25% to ~10%), batch 16 rather than 32 (cache), 2 threads
rather than 1 (~1.5x). ``torch.compile`` of the model gave nothing on this CPU (16.2 vs 17.8
windows/s at batch 16, after ~20 s of compiling) and is not used. What remains is the encoder's
second convolution (32 -> 64 filters, 5 x 15), about a third of a step.

The ceiling (``make bench``, section ``train``, 2026-11-24): a step costs 2.94 GFLOP per
400 x 256 window and 18.9 per 400 x 2048 window; the CPU does 161 GFLOP/s in a 1024 x 1024
float32 product; the optimised step reaches 57 GFLOP/s (35% of it), eager 28. A rate of 70
windows/s at 400 x 256 would take 206 GFLOP/s.

Every function here restores torch's thread count and global generator state on return.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from egmlib.core.process import seeded_torch, torch_threads
from egmlib.generators.models import ConvVAE, LossWeights, VAEConfig, vae_loss
from egmlib.generators.train import precision_context, prepare_model

__all__ = ["VARIANTS", "matmul_gflops", "training_flops", "training_throughput"]

#: The implementations :func:`training_throughput` compares.
VARIANTS = ("eager", "optimized", "compiled", "bfloat16")


def _loss(model: ConvVAE, net: Any, x: torch.Tensor, y: torch.Tensor | None,
          weights: LossWeights | None, bf16: bool = False) -> torch.Tensor:
    """The total VAE loss (beta 1e-3) of one batch through ``net`` (``model`` or a compiled
    version of it), the model under bfloat16 autocast with ``bf16`` (the loss in float32); the
    prior always comes from ``model``."""
    with precision_context("bfloat16" if bf16 else "float32", x.device):
        x_hat, mu, logvar = net(x, y)
    prior = model.prior(y, batch=x.shape[0]) if model.conditional else None
    return vae_loss(x, x_hat.float(), mu.float(), logvar.float(), 1e-3, prior=prior,
                    weights=weights)["total"]


def training_flops(config: VAEConfig, batch_size: int = 1,
                   weights: LossWeights | None = None) -> dict[str, Any]:
    """Floating-point operations of one training step per window: forward, loss and backward
    (Adam's elementwise update is left out), counted by ``torch.utils.flop_counter`` on random
    windows. Returns ``{"flops_per_window": float, "by_op": {aten op: flops per window},
    "by_module": {module name: flops per window}}``.

    It bounds the throughput any implementation can reach on a machine: windows/s times
    FLOPs per window cannot exceed what the processor sustains (:func:`matmul_gflops` measures
    that for a dense float32 product, the best case for convolutions).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with seeded_torch(0):
        model = ConvVAE(config)
        x = torch.rand(batch_size, config.T, config.C) * 2 - 1
        y = torch.zeros(batch_size, dtype=torch.long) if config.n_classes else None
        counter = FlopCounterMode(display=False)
        with counter:
            _loss(model, model, x, y, weights).backward()
    counts = counter.get_flop_counts()
    per = 1.0 / batch_size
    return {"flops_per_window": counter.get_total_flops() * per,
            "by_op": {str(op): n * per for op, n in counts.get("Global", {}).items()},
            "by_module": {name: sum(ops.values()) * per for name, ops in counts.items()
                          if name != "Global"}}


def matmul_gflops(n: int = 1024, repeats: int = 20, threads: int | None = None) -> float:
    """GFLOP/s of ``n x n`` float32 matrix products on the CPU (best of three timings of
    ``repeats`` products, ``threads`` torch threads, default
    :func:`egmlib.core.process.default_threads`): the dense-arithmetic rate this machine
    sustains, a ceiling for convolution-bound training."""
    with torch_threads(threads):
        g = torch.Generator().manual_seed(0)
        a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
        for _ in range(2):
            a @ b
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 * repeats / best / 1e9


def training_throughput(config: VAEConfig, batch_size: int = 32, n_batches: int = 4,
                        variant: str = "optimized", threads: int | None = None,
                        device: str = "cpu", warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """Windows per second of training steps (forward, loss, backward, clipping, Adam).

    Variants: ``eager`` -- the plain baseline (contiguous NCHW weights, plain ``Conv2d``
    smoothing, the loss's STFT through ``torch.stft``); ``optimized`` -- what ``train_vae``
    uses (channels-last weights and the fast paths of ``prepare_model``, the loss's STFT as
    one matrix product); ``compiled`` -- ``optimized`` plus ``torch.compile`` of the model (slow
    to start); ``bfloat16`` -- ``optimized`` in mixed precision, as ``train_vae`` runs with
    ``precision="bfloat16"`` (:func:`egmlib.generators.train.resolve_precision`). ``threads``:
    torch intra-op threads on the CPU (default :func:`egmlib.core.process.default_threads`).
    Random windows; ``warmup`` steps are run and not timed. Returns the settings with
    ``windows_per_s``, ``seconds`` (timed steps) and ``warmup_s``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: got {variant!r}; allowed: one of {', '.join(VARIANTS)}")
    with torch_threads(threads if device == "cpu" else torch.get_num_threads()) as n_threads, \
            seeded_torch(seed, device):
        dev = torch.device(device)
        model = ConvVAE(config)
        prepare_model(model, dev, optimized=variant != "eager")
        net: Any = torch.compile(model) if variant == "compiled" else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(batch_size, config.T, config.C, generator=g) * 2 - 1).to(dev)
        y = (torch.randint(0, config.n_classes, (batch_size,), generator=g).to(dev)
             if config.n_classes else None)
        model.train()
        weights = LossWeights(stft="torch" if variant == "eager" else "matmul")

        def step() -> None:
            loss = _loss(model, net, x, y, weights, bf16=variant == "bfloat16")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        t_start = time.perf_counter()
        for _ in range(warmup):
            step()
        t_warm = time.perf_counter() - t_start
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_batches):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return {"variant": variant, "T": config.T, "C": config.C, "batch_size": batch_size,
            "n_batches": n_batches, "threads": n_threads, "device": device,
            "windows_per_s": batch_size * n_batches / dt, "seconds": dt, "warmup_s": t_warm}
