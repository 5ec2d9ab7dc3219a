"""Run directories, atomic writes, provenance, seeding and progress bars.

Conventions shared by every step of the pipeline:

* A profile writes under one run directory (``runs/<profile>/`` unless ``run_dir`` is given).
* Every file is written atomically: to a temporary name in the same folder, then ``os.replace``,
  so an interrupted step never leaves a half-written file that a later step could take as done.
* Every artifact carries :func:`provenance`: parameters, seed, git commit, package versions.
* Figures of the default profile go to ``figures/`` (committed); other profiles write theirs into
  their run directory, so tests never dirty the working tree.
* Each notebook's result record goes to :func:`results_dir` as well: ``results/default/`` for the
  default profile (committed, read by the README), ``<run_dir>/results/`` otherwise. Records are
  written by :func:`save_record`, which makes every path relative to the repository root, so a
  committed record names no folder of the machine that made it. Messages name paths through
  :func:`shown` for the same reason.
* Progress bars (:func:`progress`) are for people watching: they show in a terminal and in an
  interactive Jupyter frontend, never in a headless execution (papermill, nbconvert, nbclient, a
  pipe, CI), so executed notebooks keep no progress fragments on stderr. See :func:`interactive`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "BF16_FLAGS",
    "COMMITTED_PROFILES",
    "MissingInputError",
    "atomic_path",
    "cpu_info",
    "figures_dir",
    "has_bf16",
    "interactive",
    "json_ready",
    "load_json",
    "machine",
    "portable",
    "progress",
    "provenance",
    "repo_root",
    "require",
    "resolve_run_dir",
    "results_dir",
    "save_json",
    "save_record",
    "sha256_file",
    "shown",
]

T = TypeVar("T")


class MissingInputError(FileNotFoundError):
    """An input of a step is missing; the message names the notebook that makes it."""


def repo_root(start: str | Path | None = None) -> Path:
    """The repository root: the first folder upwards from ``start`` (default: the current
    directory) that holds both ``egmlib/`` and ``params/``; else the folder above the package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "egmlib").is_dir() and (folder / "params").is_dir():
            return folder
    return Path(__file__).resolve().parents[2]


def resolve_run_dir(profile: str, run_dir: str | Path = "") -> Path:
    """``run_dir`` if given (relative paths are taken from the repository root), else
    ``runs/<profile>``. The folder is created."""
    path = Path(run_dir) if str(run_dir) else Path("runs") / profile
    if not path.is_absolute():
        path = repo_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Profiles whose figures and result records are committed: the default one (``figures/``,
#: ``results/default/``) and the same pipeline on the CT anatomy (``figures/ct_biatrial/``,
#: ``results/ct_biatrial/``).
COMMITTED_PROFILES = ("default", "ct_biatrial")


def figures_dir(profile: str, run_dir: Path) -> Path:
    """``figures/`` for the default profile, ``figures/<profile>/`` for the other committed ones
    (:data:`COMMITTED_PROFILES`), ``<run_dir>/figures`` otherwise."""
    if profile == "default":
        path = repo_root() / "figures"
    elif profile in COMMITTED_PROFILES:
        path = repo_root() / "figures" / profile
    else:
        path = Path(run_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(profile: str, run_dir: str | Path | None = None) -> Path:
    """Where the notebooks' result records go (:func:`save_record`): ``results/<profile>/`` at
    the repository root for the :data:`COMMITTED_PROFILES` (committed: the numbers the README
    quotes), ``<run_dir>/results`` for any other profile (``run_dir`` is then required), so tests
    and smoke runs never dirty the working tree. The folder is created."""
    if profile in COMMITTED_PROFILES:
        path = repo_root() / "results" / profile
    elif run_dir is None or not str(run_dir):
        raise ValueError(f"results_dir: profile {profile!r} keeps its results in its run "
                         "directory; pass run_dir")
    else:
        path = Path(run_dir) / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


#: What :func:`portable` writes for a path outside the repository (only its name is kept).
OUTSIDE = "<outside the repository>"


def shown(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` as a message shows it: relative to the repository root (POSIX separators) when it
    lies below it, else unchanged. Notebooks print paths through it, so executed notebooks name
    no folder of the machine that ran them."""
    path = Path(path)
    base = Path(root).resolve() if root is not None else repo_root()
    full = path if path.is_absolute() else Path.cwd() / path
    try:
        return full.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _portable_path(path: str | Path, root: Path) -> str:
    text = str(path)
    if (len(text) > 2 and text[1] == ":" and text[2] in "/\\") or text.startswith("\\"):
        return f"{OUTSIDE}/{PureWindowsPath(text).name}"  # a Windows path, never below root
    rel = shown(path, root)
    return rel if not Path(rel).is_absolute() else f"{OUTSIDE}/{Path(rel).name}"


def _looks_absolute(text: str) -> bool:
    return text.startswith(("/", "\\")) or (len(text) > 2 and text[1] == ":"
                                              and text[2] in "/\\")


def portable(obj: Any, root: str | Path | None = None) -> Any:
    """A copy of ``obj`` (mappings, sequences, scalars) without absolute paths: every
    :class:`~pathlib.Path` and every string that is an absolute path becomes relative to the
    repository root; one outside the repository becomes ``"<outside the repository>/<name>"``.
    Other values are returned as they are; tuples become lists (as JSON has them)."""
    base = Path(root).resolve() if root is not None else repo_root()
    if isinstance(obj, Path):
        return _portable_path(obj, base)
    if isinstance(obj, str):
        return _portable_path(obj, base) if _looks_absolute(obj) else obj
    if isinstance(obj, Mapping):
        return {k: portable(v, base) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [portable(v, base) for v in obj]
    return obj


def save_record(name: str, record: Mapping[str, Any], profile: str,
                run_dir: str | Path | None = None) -> Path:
    """Write a notebook's result record to ``<results_dir(profile, run_dir)>/<name>.json``,
    atomically and with :func:`portable` paths (provenance included); returns the path."""
    if not name or Path(name).name != name or name.endswith(".json"):
        raise ValueError(f"save_record: {name!r} is not a plain record name")
    path = results_dir(profile, run_dir) / f"{name}.json"
    return save_json(path, portable(dict(record)))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. The temporary
    name keeps the suffix, so writers that choose a format by extension (matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_ready(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays turned into Python values and non-finite floats
    into ``None`` (JSON has no NaN), recursively through dicts, lists and tuples."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def save_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically. numpy scalars and arrays are converted, and a
    non-finite float (an undefined statistic, such as a p-value of gains without spread) is
    written as ``null`` (:func:`json_ready`), as JSON has no NaN. Before, a NaN stopped the
    write: the smoke sweep's 06 record failed so on an AMD EPYC, where the same record from an
    Intel processor had none."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_ready(obj), indent=2, default=_json_default,
                                  allow_nan=False) + "\n",
                       encoding="utf-8")
    return Path(path)


def load_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def require(path: str | Path, made_by: str, profile: str = "") -> Path:
    """Return ``path`` if it exists, else raise :class:`MissingInputError` naming its maker."""
    path = Path(path)
    if not path.exists():
        how = f" with the same profile ({profile})" if profile else ""
        raise MissingInputError(
            f"{path} is missing: run notebooks/{made_by}.ipynb{how} first")
    return path


def git_commit() -> str:
    """The current git commit (with ``+dirty`` when the work tree differs), or ``unknown``."""
    root = repo_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour determines the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("egmlib", "numpy", "scipy", "torch", "scikit-learn", "matplotlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_info(path: str | Path = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """The processor's model name and feature flags, read from ``path`` (Linux's
    ``/proc/cpuinfo``; the first processor's lines); ``platform.processor()`` (or the
    architecture) and no flags where the file cannot be read."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = frozenset(fields.get("flags", "").split())
    return model, flags


#: The CPU feature flags (``/proc/cpuinfo``) of bfloat16 arithmetic in hardware: AMX and
#: AVX512-BF16.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether a processor with feature ``flags`` (default: this one's, :func:`cpu_info`) does
    bfloat16 arithmetic in hardware (:data:`BF16_FLAGS`)."""
    return bool(BF16_FLAGS & (cpu_info()[1] if flags is None else flags))


def machine() -> dict[str, Any]:
    """The machine an artifact was made on, as far as it decides the numbers.

    ``arch`` and ``cores``; ``cpu`` (model name); ``torch_cpu``, the widest vector instruction
    set torch's CPU kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``: AVX2,
    AVX512, ...), and ``bf16``, whether the processor does bfloat16 arithmetic in hardware (AMX or
    AVX512-BF16), which is where ``precision="auto"`` trains in mixed precision
    (:func:`egmlib.generators.train.resolve_precision`). Two machines that differ in either train
    different networks from the same seed: float sums are ordered by the kernel's vector width,
    and a difference in the last digit grows over training (README, Reproducibility)."""
    model, flags = cpu_info()
    try:
        import torch

        capability: str | None = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):  # pragma: no cover - torch is a dependency
        capability = None
    return {"arch": platform.machine(), "cores": os.cpu_count(), "cpu": model,
            "torch_cpu": capability, "bf16": has_bf16(flags)}


def provenance(params: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """What made an artifact: parameters, seed, git commit, package versions, time and the
    machine (:func:`machine`)."""
    return {
        "params": dict(params),
        "seed": seed if seed is not None else params.get("seed"),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def quiet() -> bool:
    """True in CI or when EGMLIB_QUIET is set: progress bars are hidden."""
    return bool(os.environ.get("CI")) or bool(os.environ.get("EGMLIB_QUIET"))


def _kernel() -> Any:
    """The IPython kernel this code runs in, or None (plain Python, terminal IPython)."""
    ipython_mod = sys.modules.get("IPython")
    if ipython_mod is None:
        return None
    try:
        shell = ipython_mod.get_ipython()
    except AttributeError:
        return None
    return getattr(shell, "kernel", None)


def interactive() -> bool:
    """True when a person is watching: progress bars are shown.

    The rule, in order:

    1. ``CI`` or ``EGMLIB_QUIET`` set (:func:`quiet`): not interactive.
    2. Inside a Jupyter kernel: interactive when the request being executed lets the frontend
       answer ``input()``. JupyterLab, Notebook and VS Code allow it; headless executors
       (papermill, nbconvert, nbclient, nbval) all run through nbclient, which forbids it. So a
       notebook executed by ``python -m egmlib.workflow.pipeline``, ``make reproduce`` or a plain
       ``papermill`` call keeps no progress bar in its outputs, with no variable to set.
    3. Elsewhere (scripts, the sweep's command line, terminal IPython): interactive when stderr
       is a terminal; a pipe, a log file or pytest's capture gets no bar.
    """
    if quiet():
        return False
    kernel = _kernel()
    if kernel is not None:
        return bool(getattr(kernel, "_allow_stdin", False))
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None,
             **kwargs: Any) -> Iterable[T]:
    """A tqdm progress bar, shown only when :func:`interactive` (a terminal or an interactive
    Jupyter frontend; never under papermill, in CI or with ``EGMLIB_QUIET``). ``disable=True``
    hides it in any case."""
    from tqdm import tqdm  # plain text bar: the same in a terminal and a notebook

    disable = bool(kwargs.pop("disable", False)) or not interactive()
    return tqdm(iterable, desc=desc, total=total, disable=disable, **kwargs)


def save_torch_checkpoint(path: str | Path, payload: dict[str, Any],
                          extra: Mapping[str, Any] | None = None) -> Path:
    """Write a torch checkpoint atomically: ``payload`` plus ``extra`` and the provenance built
    from ``extra``'s ``params`` and ``seed`` entries (shared by the VAE and reconstruction
    checkpoints)."""
    import torch

    extra = dict(extra or {})
    full = {**payload, "extra": extra,
            "provenance": provenance(extra.get("params", {}), seed=extra.get("seed"))}
    with atomic_path(path) as tmp:
        torch.save(full, tmp)
    return Path(path)
