"""Result records and their folder, paths as messages show them, and when progress bars show."""

from __future__ import annotations

import io
import json
import re
import sys
import types
from pathlib import Path

import pytest

from egmlib.core import runs

ABSOLUTE = re.compile(r'"(/|[A-Za-z]:[\\/]|\\\\)')


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in repository root, so that nothing is written into the working tree."""
    repo = tmp_path / "repo"
    (repo / "egmlib").mkdir(parents=True)
    (repo / "params").mkdir()
    monkeypatch.setattr(runs, "repo_root", lambda start=None: repo)
    return repo


def test_results_dir_default_is_committed_folder(root: Path) -> None:
    path = runs.results_dir("default", root / "runs" / "default")
    assert path == root / "results" / "default" and path.is_dir()
    assert runs.results_dir("default") == path  # the run directory does not matter
    ct = runs.results_dir("ct_biatrial", root / "runs" / "ct_biatrial")
    assert ct == root / "results" / "ct_biatrial"  # the CT profile's records are committed too
    assert runs.figures_dir("ct_biatrial", root / "runs" / "x") == root / "figures" / "ct_biatrial"
    assert runs.figures_dir("default", root / "runs" / "x") == root / "figures"


def test_results_dir_other_profiles_stay_in_run_dir(root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "smoke_run"
    path = runs.results_dir("smoke", run_dir)
    assert path == run_dir / "results" and path.is_dir()
    assert not (root / "results").exists()
    with pytest.raises(ValueError, match="run_dir"):
        runs.results_dir("smoke")


def test_shown_is_relative_inside_the_repository(root: Path, tmp_path: Path) -> None:
    assert runs.shown(root / "runs" / "default" / "01_data" / "result.json") == \
        "runs/default/01_data/result.json"
    assert runs.shown(root) == "."
    outside = tmp_path / "elsewhere" / "x.json"
    assert runs.shown(outside) == str(outside)  # a message still says where it went


def test_portable_removes_every_absolute_path(root: Path, tmp_path: Path) -> None:
    record = {"out": root / "runs" / "default" / "vae_s" / "result.json",
              "params": {"run_dir": str(root / "runs" / "x"), "out_dir": str(tmp_path / "o"),
                         "profile": "default", "ratio": "1/2", "n": 3, "none": None},
              "list": [str(tmp_path / "a.npz"), ("C:\\Users\\me\\b.npz", "plain")]}
    got = runs.portable(record)
    assert got["out"] == "runs/default/vae_s/result.json"
    assert got["params"] == {"run_dir": "runs/x", "out_dir": f"{runs.OUTSIDE}/o",
                             "profile": "default", "ratio": "1/2", "n": 3, "none": None}
    assert got["list"] == [f"{runs.OUTSIDE}/a.npz", [f"{runs.OUTSIDE}/b.npz", "plain"]]
    assert record["params"]["run_dir"] == str(root / "runs" / "x")  # the input is not changed


def test_save_record_has_no_absolute_path(root: Path, tmp_path: Path) -> None:
    params = {"profile": "default", "run_dir": str(tmp_path / "run"), "seed": 0}
    record = {"corr": 0.5, "folder": root / "runs" / "default" / "05_augment",
              "provenance": runs.provenance(params)}
    path = runs.save_record("05_augment_vae_s_k18_s0", record, "default")
    assert path == root / "results" / "default" / "05_augment_vae_s_k18_s0.json"
    text = path.read_text(encoding="utf-8")
    assert not ABSOLUTE.search(text), text
    assert str(tmp_path) not in text and str(root) not in text
    data = json.loads(text)
    assert data["folder"] == "runs/default/05_augment"
    assert data["provenance"]["params"]["run_dir"] == f"{runs.OUTSIDE}/run"
    assert data["provenance"]["seed"] == 0 and data["corr"] == 0.5
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, no leftover


@pytest.mark.parametrize("name", ["", "a/b", "../x", "x.json"])
def test_save_record_refuses_odd_names(root: Path, name: str) -> None:
    with pytest.raises(ValueError, match="record name"):
        runs.save_record(name, {}, "default")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _fake_kernel(monkeypatch: pytest.MonkeyPatch, allow_stdin: bool | None) -> None:
    """Pretend to run inside IPython: a kernel whose current request allows stdin or not
    (``None``: terminal IPython, no kernel)."""
    shell = types.SimpleNamespace()
    if allow_stdin is not None:
        shell.kernel = types.SimpleNamespace(_allow_stdin=allow_stdin)
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)


@pytest.fixture
def loud(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("EGMLIB_QUIET", raising=False)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    return monkeypatch


@pytest.mark.parametrize(("tty", "allow_stdin", "expected"), [
    (True, None, True),    # a terminal (script or terminal IPython)
    (False, None, False),  # a pipe, a log file, pytest's capture
    (False, True, True),   # JupyterLab / Notebook / VS Code: the frontend answers input()
    (False, False, False),  # papermill, nbconvert, nbclient, nbval: headless
    (True, False, False),  # headless kernel started from a terminal
])
def test_interactive_rule(loud: pytest.MonkeyPatch, tty: bool, allow_stdin: bool | None,
                          expected: bool) -> None:
    loud.setattr(sys, "stderr", _Stream(tty))
    if allow_stdin is not None or tty:
        _fake_kernel(loud, allow_stdin)
    assert runs.interactive() is expected


@pytest.mark.parametrize("var", ["CI", "EGMLIB_QUIET"])
def test_quiet_wins(loud: pytest.MonkeyPatch, var: str) -> None:
    loud.setattr(sys, "stderr", _Stream(True))
    _fake_kernel(loud, True)
    loud.setenv(var, "1")
    assert runs.interactive() is False


def test_progress_writes_nothing_when_headless(loud: pytest.MonkeyPatch) -> None:
    err = _Stream(False)
    loud.setattr(sys, "stderr", err)
    _fake_kernel(loud, False)
    assert list(runs.progress(range(5), desc="train")) == [0, 1, 2, 3, 4]
    assert err.getvalue() == ""


def test_progress_shows_in_a_terminal(loud: pytest.MonkeyPatch) -> None:
    err = _Stream(True)
    loud.setattr(sys, "stderr", err)
    assert list(runs.progress(range(3), desc="train", file=err)) == [0, 1, 2]
    assert "train" in err.getvalue() and "3/3" in err.getvalue()
    err2 = _Stream(True)
    loud.setattr(sys, "stderr", err2)
    list(runs.progress(range(3), desc="train", file=err2, disable=True))
    assert err2.getvalue() == ""


def test_cpu_info_and_machine_read_the_first_processor(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu avx2 "
                    "avx512_bf16\n\nprocessor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    model, flags = runs.cpu_info(info)
    assert model == "Example CPU 9000" and {"avx2", "avx512_bf16"} <= flags and "fpu" in flags
    assert runs.cpu_info(tmp_path / "absent")[1] == frozenset()   # unreadable: no flags
    monkeypatch.setattr(runs, "cpu_info", lambda: (model, flags))
    m = runs.machine()
    assert m["cpu"] == "Example CPU 9000" and m["bf16"] is True and m["cores"] >= 1
    monkeypatch.setattr(runs, "cpu_info", lambda: ("Plain", frozenset({"avx2"})))
    assert runs.machine()["bf16"] is False
    assert runs.provenance({"seed": 3})["machine"]["cpu"] == "Plain"
    assert runs.has_bf16(frozenset({"amx_bf16", "amx_tile"})) is True
    assert runs.has_bf16(frozenset({"avx512f"})) is False and runs.has_bf16() is False


def test_save_json_writes_undefined_statistics_as_null(tmp_path: Path) -> None:
    import numpy as np

    path = runs.save_json(tmp_path / "r.json", {"p_t": float("nan"), "a": np.float32(1.5),
                                                "n": np.int64(3), "x": (np.inf, 0.25)})
    assert json.loads(path.read_text()) == {"p_t": None, "a": 1.5, "n": 3, "x": [None, 0.25]}
