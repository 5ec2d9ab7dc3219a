"""egmlib.core.process: the entry points' set-up call and the scoped state of library calls."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from egmlib.core import process


@pytest.fixture
def restore_process_state():
    """Put the process-wide torch state back as it was before the test."""
    rng = torch.get_rng_state()
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    threads = torch.get_num_threads()
    yield
    torch.set_rng_state(rng)
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2:]
    torch.set_num_threads(threads)


def _state() -> tuple:
    return (torch.get_rng_state(), torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            torch.get_num_threads())


def _same(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_setup_process_sets_seeds_determinism_and_threads(restore_process_state, monkeypatch):
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(2)
    rng = process.setup_process(11, threads=1)
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    draws = (torch.rand(3), random.random(), np.random.rand(), rng.random())  # noqa: NPY002
    torch.manual_seed(11)
    assert torch.equal(draws[0], torch.rand(3))
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    assert draws[1:] == (random.random(), np.random.rand(),  # noqa: NPY002
                         np.random.default_rng(11).random())
    # off again, and the thread count from EGMLIB_THREADS by default
    monkeypatch.setenv("EGMLIB_THREADS", "2")
    process.setup_process(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic
    assert torch.get_num_threads() == 2


def test_set_deterministic_skips_inductor_until_it_is_loaded():
    """The flags are set without importing torch._inductor (1.3 s per process); once inductor is
    loaded, its own flag follows them. In a fresh interpreter: this one may have loaded it."""
    import subprocess
    import sys

    code = """
import sys, torch
from egmlib.core import process
process.setup_process(0)
assert torch.are_deterministic_algorithms_enabled()
assert torch.is_deterministic_algorithms_warn_only_enabled()
assert "torch._inductor.config" not in sys.modules
with process.deterministic_algorithms(False, warn_only=False):
    assert not torch.are_deterministic_algorithms_enabled()
assert torch.are_deterministic_algorithms_enabled()
import torch._inductor.config as inductor_config
process.set_deterministic(True, warn_only=False)
assert inductor_config.deterministic is True
assert not torch.is_deterministic_algorithms_warn_only_enabled()
process.set_deterministic(False)
assert inductor_config.deterministic is False and not torch.are_deterministic_algorithms_enabled()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_torch_state_is_scoped_and_restored_on_errors(restore_process_state):
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(1)
    torch.manual_seed(123)
    torch.rand(5)  # somewhere in the caller's stream
    before = _state()
    with process.torch_state(seed=4, threads=2) as n:
        assert n == 2 and torch.get_num_threads() == 2
        assert torch.are_deterministic_algorithms_enabled()
        inside = torch.rand(4)
    assert _same(_state(), before)
    torch.manual_seed(4)
    assert torch.equal(inside, torch.rand(4))  # exactly the draws of a process-wide seed
    before = _state()
    with pytest.raises(KeyError), process.torch_state(seed=9, threads=2):
        torch.rand(2)
        raise KeyError("boom")
    assert _same(_state(), before)
    # None leaves that part alone
    with process.torch_state(seed=None, threads=1, deterministic=None):
        assert torch.equal(torch.get_rng_state(), before[0])
        assert not torch.are_deterministic_algorithms_enabled()


def test_default_threads(monkeypatch):
    monkeypatch.setenv("EGMLIB_THREADS", "3")
    assert process.default_threads() == 3
    assert process.default_threads(1) == 1
    monkeypatch.delenv("EGMLIB_THREADS")
    assert process.default_threads() == process.available_cores() >= 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            process.default_threads(bad)
