"""Process-wide torch settings: one set-up call for entry points, scoped versions for the library.

Three kinds of torch state belong to the whole process: the global random generators (CPU and
CUDA), the deterministic-algorithms switch (with cuDNN's ``deterministic`` / ``benchmark`` flags)
and the number of intra-op threads. Two rules keep them predictable:

* **Entry points** -- a notebook's set-up cell, a command-line tool, the pipeline -- set them once
  for the process with :func:`setup_process` (seeds, determinism, threads).
* **Library calls** never leave them changed. A function that needs a seed, determinism or a
  thread count of its own runs inside :func:`torch_state` (or the single-purpose
  :func:`seeded_torch`, :func:`deterministic_algorithms`, :func:`torch_threads`), which set them
  for the duration of the ``with`` block and restore the previous values on exit, also when an
  exception leaves the block.

Torch only; nothing from the rest of :mod:`egmlib` is imported.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "available_cores",
    "configure_threads",
    "default_threads",
    "deterministic_algorithms",
    "environment_restored",
    "seed_everything",
    "seeded_torch",
    "set_deterministic",
    "setup_process",
    "torch_state",
    "torch_threads",
]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(n: int | None = None) -> int:
    """The torch intra-op thread count to use: ``n`` when given, else the ``EGMLIB_THREADS``
    environment variable, else every available core (:func:`available_cores`)."""
    if n is None:
        n = int(os.environ.get("EGMLIB_THREADS", 0)) or available_cores()
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads: got {n!r}; allowed: an int >= 1")
    return int(n)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads **for the process** to :func:`default_threads` ``(n)`` and
    return the count. For entry points; library code uses :func:`torch_threads`."""
    n = default_threads(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, numpy's legacy global state and torch's global generators (CPU
    and every CUDA device) with ``seed``; returns a fresh numpy ``Generator`` of ``seed``.
    Process-wide: for entry points (:func:`setup_process`) and tests."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global state, for third-party code
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def set_deterministic(enabled: bool, warn_only: bool = True) -> None:
    """``torch.use_deterministic_algorithms(enabled, warn_only=warn_only)`` without the import of
    ``torch._inductor`` that the public call makes to set inductor's own ``deterministic`` flag.

    That import costs about 1.3 s per process (torch 2.13, measured on the 2-core test machine),
    paid by every notebook kernel, sweep run and command-line tool. Inductor's flag matters only
    to ``torch.compile``, which egmlib does not use; once inductor is loaded (the user compiled
    something), the public call is made, so that the flag follows too.
    """
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(enabled, warn_only=warn_only)


def setup_process(seed: int, threads: int | None = None,
                  deterministic: bool = True) -> np.random.Generator:
    """Set up the process for a reproducible run: the one call of an entry point (a notebook's
    set-up cell, a command-line tool, the pipeline).

    Seeds every global generator (:func:`seed_everything`), switches torch's deterministic
    kernels on or off (``deterministic``, :func:`set_deterministic`; ``warn_only``, cuDNN
    deterministic and, when on, not benchmarking) and sets torch's intra-op threads to
    ``threads`` (default: the ``EGMLIB_THREADS`` variable or every core,
    :func:`default_threads`). Returns a numpy ``Generator`` of ``seed`` for the caller's own
    draws.
    """
    configure_threads(threads)
    rng = seed_everything(seed)
    set_deterministic(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False
    return rng


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``default_threads(n)`` torch intra-op threads; the previous count is
    restored on exit. Yields the count in use."""
    before = torch.get_num_threads()
    n = default_threads(n)
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True, warn_only: bool = True) -> Iterator[None]:
    """Run the block with ``torch.use_deterministic_algorithms(enabled, warn_only=warn_only)``
    and, when ``enabled``, cuDNN deterministic without benchmarking; all four settings are
    restored on exit."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    set_deterministic(enabled, warn_only=warn_only)
    if enabled:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        set_deterministic(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


def _cuda_devices(device: torch.device | str | None) -> list[int]:
    """The CUDA devices whose generators to save and seed: all of them once CUDA is initialised
    (it is initialised here when ``device`` is a CUDA device, so a block that moves work there
    cannot change a generator that was not saved); none before (forking would initialise it)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.init()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's global generators seeded by ``seed`` (as ``torch.manual_seed``
    seeds them: the block draws exactly what it would after a process-wide seed) and restore
    their previous states on exit (``torch.random.fork_rng``): the caller's random stream is
    untouched. ``device``: where the block will run (a CUDA device is initialised first so that
    its generator is saved and restored too)."""
    devices = _cuda_devices(device)
    with torch.random.fork_rng(devices=devices):
        # the CPU generator as torch.manual_seed seeds it; CUDA ones only when saved (before
        # CUDA is initialised, torch.manual_seed would queue a seeding that outlives the block)
        torch.random.default_generator.manual_seed(int(seed))
        if devices:
            torch.cuda.manual_seed_all(int(seed))
        yield


@contextlib.contextmanager
def torch_state(seed: int | None = None, threads: int | None = None,
                deterministic: bool | None = True,
                device: torch.device | str | None = None) -> Iterator[int]:
    """Scoped process state for one library call: torch's generators seeded by ``seed``
    (:func:`seeded_torch`; ``None``: left alone), deterministic kernels on or off
    (:func:`deterministic_algorithms`; ``None``: left alone) and ``default_threads(threads)``
    intra-op threads (:func:`torch_threads`). Everything is restored on exit. Yields the
    thread count in use."""
    with contextlib.ExitStack() as stack:
        n = stack.enter_context(torch_threads(threads))
        if deterministic is not None:
            stack.enter_context(deterministic_algorithms(deterministic))
        if seed is not None:
            stack.enter_context(seeded_torch(seed, device))
        yield n


@contextlib.contextmanager
def environment_restored() -> Iterator[None]:
    """Give ``os.environ`` back as it was on entry (variables added inside removed).

    ``distributed.LocalCluster`` (2026.8.0) sets ``OMP_NUM_THREADS=1`` and other variables in
    the *parent* process before it spawns its workers and leaves them there, so everything this
    process ran afterwards (notebook kernels it starts, BLAS) would use one thread, with other
    float rounding. The sweep and the data build wrap their clusters in this."""
    saved = os.environ.copy()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
