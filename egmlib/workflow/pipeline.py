"""Run the pipeline notebooks through papermill, atomically.

``python -m egmlib.workflow.pipeline --profile smoke`` executes ``notebooks/01_data.ipynb`` ... in
order
(only those that exist yet) with the profile's parameters and writes the executed notebooks to
``<run_dir>/notebooks/``. ``--profile default --in-place`` replaces the committed notebooks by
their executed versions (they are committed with the default profile's outputs); that is what
``make reproduce`` runs.

Every execution goes through :func:`execute_notebook`: the executed notebook is written beside the
output under a temporary name and renamed onto the output only on success. A failed run never
leaves a half-written file at the output: the failed notebook is kept as
``<output stem>.failed.ipynb`` and :class:`NotebookError` names it, the cell and the error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from egmlib.core import params as _params
from egmlib.core.runs import COMMITTED_PROFILES, atomic_path, quiet, repo_root, shown
from egmlib.workflow.records import note_other_machine

__all__ = [
    "PIPELINE",
    "NotebookError",
    "execute_notebook",
    "failed_path",
    "main",
    "run_pipeline",
]

#: The pipeline notebooks in execution order (``notebooks/<name>.ipynb``). Only those that exist
#: on disk are run, so the list may name notebooks that arrive later.
PIPELINE: tuple[str, ...] = ("01_data", "02_vae_s", "03_vae_c", "04_fidelity", "05_augment")

class NotebookError(RuntimeError):
    """A notebook failed. Names the notebook, the failing cell, the error and where the executed
    (failed) notebook was kept."""

    def __init__(self, notebook: Path, failed: Path | None, ename: str, evalue: str,
                 cell: int | None = None, traceback: str = "") -> None:
        self.notebook = Path(notebook)
        self.failed_path = failed
        self.ename = ename
        self.evalue = evalue
        self.cell = cell
        self.traceback = traceback
        where = f" in cell [{cell}]" if cell is not None else ""
        kept = f"; the failed notebook is kept at {failed}" if failed else ""
        super().__init__(f"{self.notebook.name} failed{where}: {ename}: {evalue}{kept}")


def failed_path(output: str | Path) -> Path:
    """Where a failed execution of ``output`` is kept: ``<stem>.failed.ipynb`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}.failed.ipynb")


def _keep_mode(tmp: Path, output: Path) -> None:
    """Give the temporary file the permissions of the file it replaces (0644 for a new one):
    temporary files are created 0600, and a notebook must stay readable after an in-place run."""
    tmp.chmod(output.stat().st_mode & 0o777 if output.exists() else 0o644)


def execute_notebook(notebook: str | Path, output: str | Path,
                     parameters: Mapping[str, Any] | None = None,
                     profile_file: str | Path | None = None, cwd: str | Path | None = None,
                     timeout: int = 3600, log_output: bool = False,
                     log_file: IO[str] | None = None, progress_bar: bool | None = None) -> Path:
    """Execute ``notebook`` with papermill and write the executed notebook to ``output``.

    Args:
        notebook: the input notebook.
        output: the executed notebook; may be ``notebook`` itself (in-place).
        parameters: injected after the ``parameters`` cell; they update the profile's values.
        profile_file: a YAML profile whose values are injected (all of them, as papermill -f
            does; see :func:`egmlib.core.params.load_profile`).
        cwd: the kernel's working directory; default: the notebook's folder.
        timeout: seconds allowed per cell.
        log_output: also send the cells' output to papermill's logger.
        log_file: an open text file that receives the kernel's stdout and stderr.
        progress_bar: papermill's per-cell bar; default: on unless quiet (CI, EGMLIB_QUIET).

    Returns:
        ``output``.

    Raises:
        FileNotFoundError: the notebook does not exist.
        NotebookError: a cell failed, timed out or the kernel died. ``output`` is left as it was;
            the executed notebook is kept at :func:`failed_path` (``<stem>.failed.ipynb``).
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    values: dict[str, Any] = dict(_params.load_profile(profile_file)) if profile_file else {}
    values.update(parameters or {})
    failed = failed_path(output)
    with atomic_path(output) as tmp:
        try:
            nb = pm.execute_notebook(
                str(notebook), str(tmp), parameters=values, kernel_name="python3",
                language="python", cwd=str(cwd or notebook.resolve().parent),
                progress_bar=(not quiet()) if progress_bar is None else progress_bar,
                log_output=log_output, stdout_file=log_file, stderr_file=log_file,
                execution_timeout=timeout)
        except Exception as exc:
            kept = None
            if tmp.is_file() and tmp.stat().st_size > 0:
                _keep_mode(tmp, output)
                os.replace(tmp, failed)
                kept = failed
            if isinstance(exc, PapermillExecutionError):
                from papermill.exceptions import strip_color

                raise NotebookError(notebook, kept, exc.ename, exc.evalue, exc.exec_count,
                                    strip_color("\n".join(exc.traceback))) from exc
            raise NotebookError(notebook, kept, type(exc).__name__, str(exc)) from exc
        # papermill recorded the temporary name; record the real ones.
        nb.metadata.papermill["input_path"] = shown(notebook)
        nb.metadata.papermill["output_path"] = shown(output)
        nbformat.write(nb, str(tmp))
        _keep_mode(tmp, output)
    failed.unlink(missing_ok=True)
    return output


def run_pipeline(profile: str, *, in_place: bool = False, run_dir: str | Path = "",
                 only: Sequence[str] | None = None, root: str | Path | None = None,
                 timeout: int = 3600, parameters: Mapping[str, Any] | None = None
                 ) -> list[tuple[str, Path, float]]:
    """Execute the pipeline notebooks that exist under ``<root>/notebooks`` in order.

    For ``profile != "default"`` the parameters are ``params/<profile>.yaml`` plus ``profile``
    (and ``run_dir`` if given); the default profile runs the notebooks' own values (plus
    ``run_dir`` if given). With ``in_place`` (default profile only) each executed notebook replaces
    the committed one; else it goes to ``<run_dir>/notebooks/<name>.ipynb``. For a profile whose
    records are committed (:data:`~egmlib.core.runs.COMMITTED_PROFILES`) it first names on stderr
    every way this machine differs from the one that made them
    (:func:`egmlib.workflow.records.note_other_machine`), and runs all the same. Prints one line
    per notebook and stops at the first failure (raises :class:`NotebookError`).

    Returns:
        ``(name, output, wall seconds)`` per executed notebook.
    """
    root = Path(root) if root is not None else repo_root()
    if profile not in _params.PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(_params.PROFILES)}")
    if in_place and (profile != "default" or str(run_dir) or parameters):
        raise ValueError("--in-place replaces the committed notebooks, which hold the default "
                         "profile's outputs: use it with --profile default, no --run-dir and no "
                         "-p")
    overrides = dict(parameters or {})
    for name, value in overrides.items():
        spec = _params.SPECS.get(name)
        if spec is None:
            raise ValueError(f"-p {name}: not a notebook parameter")
        overrides[name] = spec.check(name, value)
    if only:
        unknown = [name for name in only if name not in PIPELINE]
        if unknown:
            raise ValueError(f"unknown notebook {unknown[0]!r}; the pipeline is "
                             f"{', '.join(PIPELINE)}")
        missing = [name for name in only if not (root / "notebooks" / f"{name}.ipynb").is_file()]
        if missing:
            raise FileNotFoundError(f"notebooks/{missing[0]}.ipynb does not exist")
        names = [name for name in PIPELINE if name in only]
    else:
        names = [name for name in PIPELINE if (root / "notebooks" / f"{name}.ipynb").is_file()]
        if not names:
            raise FileNotFoundError(f"no pipeline notebook under {root / 'notebooks'}")

    parameters = dict(overrides)
    profile_file = None
    if profile != "default":
        profile_file = root / "params" / f"{profile}.yaml"
        if not profile_file.is_file():
            raise FileNotFoundError(f"profile file {profile_file} does not exist")
        parameters["profile"] = profile
    if str(run_dir):
        run_dir = Path(run_dir).resolve()
        parameters["run_dir"] = str(run_dir)
    else:
        run_dir = root / "runs" / profile
        if profile_file is not None:
            run_dir = Path(_params.load_profile(profile_file).get("run_dir") or run_dir)
            run_dir = run_dir if run_dir.is_absolute() else root / run_dir

    if profile in COMMITTED_PROFILES:  # its committed records will be replaced: say if they differ
        note_other_machine(root / "results" / profile)
    done = []
    for name in names:
        notebook = root / "notebooks" / f"{name}.ipynb"
        output = notebook if in_place else run_dir / "notebooks" / f"{name}.ipynb"
        start = time.perf_counter()
        try:
            execute_notebook(notebook, output, parameters, profile_file=profile_file,
                             timeout=timeout)
        except NotebookError:
            print(f"{name:<12} FAILED after {time.perf_counter() - start:7.1f} s", flush=True)
            raise
        wall = time.perf_counter() - start
        print(f"{name:<12} {wall:7.1f} s  -> {shown(output)}", flush=True)
        done.append((name, output, wall))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m egmlib.workflow.pipeline --profile default|smoke|paper [--in-place] [--run-dir
    DIR]
    [--only 01_data,02_vae_s] [-p NAME VALUE ...]``. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m egmlib.workflow.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", choices=_params.PROFILES)
    parser.add_argument("--in-place", action="store_true",
                        help="replace the committed notebooks (default profile only)")
    parser.add_argument("--run-dir", default="", help="run directory (default runs/<profile>)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(PIPELINE)}")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="override one parameter in every notebook (value read as YAML, "
                             "as papermill -p)")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()] or None
    overrides = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        run_pipeline(args.profile, in_place=args.in_place, run_dir=args.run_dir, only=only,
                     timeout=args.timeout, parameters=overrides)
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
