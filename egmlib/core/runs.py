"""Run directories, atomic writes, provenance, seeding and progress bars.

Conventions shared by every step of the pipeline:

* A profile writes under one run directory (``runs/<profile>/`` unless ``run_dir`` is given).
* Every file is written atomically: to a temporary name in the same folder, then ``os.replace``,
  so an interrupted step never leaves a half-written file that a later step could take as done.
* Every artifact carries :func:`provenance`: parameters, seed, git commit, package versions.
* Figures of the default profile go to ``figures/`` (committed); other profiles write theirs into
  their run directory, so tests never dirty the working tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "MissingInputError",
    "atomic_path",
    "figures_dir",
    "load_json",
    "progress",
    "provenance",
    "repo_root",
    "require",
    "resolve_run_dir",
    "save_json",
    "seed_everything",
    "sha256_file",
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


def figures_dir(profile: str, run_dir: Path) -> Path:
    """``figures/`` for the default profile (committed), ``<run_dir>/figures`` otherwise."""
    path = repo_root() / "figures" if profile == "default" else Path(run_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def save_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically. numpy scalars and arrays are converted."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n",
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


def provenance(params: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """What made an artifact: parameters, seed, git commit, package versions, time, machine."""
    return {
        "params": dict(params),
        "seed": seed if seed is not None else params.get("seed"),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
    }


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch (if imported) and return a fresh numpy Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global state, for third-party code
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def quiet() -> bool:
    """True in CI or when EGMLIB_QUIET is set: progress bars are hidden."""
    return bool(os.environ.get("CI")) or bool(os.environ.get("EGMLIB_QUIET"))


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None,
             **kwargs: Any) -> Iterable[T]:
    """A tqdm progress bar, silent in CI (``CI`` or ``EGMLIB_QUIET`` set)."""
    from tqdm import tqdm  # plain text bar: notebooks run headless under papermill

    disable = bool(kwargs.pop("disable", False)) or quiet()
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
