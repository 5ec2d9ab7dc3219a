"""What a run leaves on disk, and how two records are compared.

The sweep (:mod:`egmlib.workflow.sweep`) writes one folder per run with a ``params.json``
(parameters and the digests of the inputs the run read) and a ``DONE`` marker;
:mod:`egmlib.workflow.results` reads them back. Both use the names and digests defined here, so
neither reaches into the other. :func:`record_differences` compares two result records (for
example a fresh ``make reproduce`` against the committed ``results/default/``), leaving out what
legitimately changes between executions (time stamps, wall times, the commit, machine paths).
:func:`machine_differences` says before any work whether this machine is of the kind that made a
folder's records (``make nbval`` asks it first).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from egmlib.core import runs
from egmlib.core.runs import load_json, sha256_file

__all__ = [
    "BASELINE_GENERATOR",
    "KIND_FIELDS",
    "KIND_PACKAGES",
    "MARKER",
    "PARAMS_FILE",
    "VOLATILE_KEYS",
    "agreement",
    "array_digest",
    "compare_folders",
    "dataset_digest",
    "file_digest",
    "input_fingerprint",
    "inputs_match",
    "machine_differences",
    "note_other_machine",
    "record_differences",
]

#: The file a finished sweep run's folder holds.
MARKER = "DONE"
#: The file that records a run's parameters and input digests.
PARAMS_FILE = "params.json"
#: The generator of the ``k = 0`` runs shared by every generator
#: (:func:`egmlib.workflow.sweep.shared_baseline`).
BASELINE_GENERATOR = "none"

#: Keys whose values differ between two executions of the same computation: the provenance
#: record (creation time, commit, versions, machine), wall times and rates, and paths.
VOLATILE_KEYS = frozenset({"provenance", "created_utc", "wall_s", "train_s", "windows_per_s",
                           "pairs_per_s", "run_dir", "out_dir", "machine", "git_commit"})


def inputs_match(recorded: Any, current: Mapping[str, str]) -> bool:
    """True when the input digests a run ``recorded`` (its ``params.json``'s ``"inputs"``)
    include every digest of ``current`` with the same value; digests of inputs the run does not
    read may differ or be absent from ``current``."""
    return isinstance(recorded, dict) and all(recorded.get(name) == digest
                                              for name, digest in current.items())


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex, first 16 digits) of a file's bytes (:func:`egmlib.core.runs.sha256_file`)."""
    return sha256_file(path)[:16]


def array_digest(path: str | Path, key: str = "kept") -> str:
    """SHA-256 (hex, first 16 digits) of the array ``key`` of an ``.npz`` file: its dtype, shape
    and bytes. Unlike :func:`file_digest`, it does not change when the same values are written
    again: a synthetic set's file also holds its provenance (creation time, commit), which
    differs at every execution of 02/03 even when retraining gives the same windows."""
    with np.load(path) as z:
        if key not in z.files:
            raise KeyError(f"{path}: no array {key!r}; it holds {sorted(z.files)}")
        a = np.ascontiguousarray(z[key])
    h = hashlib.sha256(f"{a.dtype.str} {a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def dataset_digest(manifest_path: str | Path) -> str:
    """SHA-256 (hex, first 16 digits) of what a data set holds: the checksum of every file its
    manifest lists and the parameters that made it. Unlike :func:`file_digest` of the manifest,
    it ignores the manifest's provenance (creation time, commit), so a data set rebuilt with the
    same values, as a fresh ``make reproduce`` does, keeps the sweep's finished runs."""
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    try:
        content = {"files": {name: entry["sha256"] for name, entry in manifest["files"].items()},
                   "params": manifest["params"]}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{manifest_path}: not a data set manifest (no files with sha256 or no "
                         "params)") from exc
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def input_fingerprint(run_dir: str | Path, generators: Sequence[str]) -> dict[str, str]:
    """Digests of what the augmentation runs read from ``run_dir``: the data set (the values,
    :func:`dataset_digest`, not the manifest file) and each generator's kept
    synthetic windows (the values, :func:`array_digest`, not the file). Part of every run's
    record, so a run made before the data or a generator changed (a rebuilt data set, a retrained
    VAE whose kept windows differ) no longer counts as finished. Missing files are left out (the
    run itself then fails with the notebook's clear message)."""
    run_dir = Path(run_dir)
    paths = [run_dir / "data" / "manifest.json"]
    for gen in sorted(set(generators) - {"none"}):
        paths += sorted((run_dir / gen).glob("synthetic_*.npz"))
    return {str(p.relative_to(run_dir)): (array_digest(p) if p.suffix == ".npz"
                                          else dataset_digest(p))
            for p in paths if p.is_file()}


def record_differences(a: Any, b: Any, *, rtol: float = 0.0, atol: float = 0.0,
                       ignore: Callable[[str], bool] | frozenset[str] = VOLATILE_KEYS,
                       path: str = "") -> list[str]:
    """Where two JSON-like records differ: one line per differing leaf, ``"/a/b[2]: x != y"``.

    Numbers (not bools) agree when ``|x - y| <= atol + rtol * |y|`` (both NaN agree); everything
    else must be equal. Keys in ``ignore`` (or for which ``ignore(key)`` is true) are skipped at
    any depth. With the defaults the comparison is exact, apart from :data:`VOLATILE_KEYS`.
    """
    skip = ignore if callable(ignore) else (lambda key: key in ignore)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            if skip(str(key)):
                continue
            if key not in a or key not in b:
                out.append(f"{path}/{key}: only in {'b' if key not in a else 'a'}")
                continue
            out += record_differences(a[key], b[key], rtol=rtol, atol=atol, ignore=ignore,
                                      path=f"{path}/{key}")
        return out
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str) \
            and not isinstance(b, str):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += record_differences(x, y, rtol=rtol, atol=atol, ignore=ignore,
                                      path=f"{path}[{i}]")
        return out
    if isinstance(a, bool) != isinstance(b, bool):  # JSON true is not the number 1
        return [f"{path}: {a!r} != {b!r}"]
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        if math.isnan(a) and math.isnan(b):
            return []
        if abs(a - b) <= atol + rtol * abs(b):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _leaves(obj: Any, skip: Callable[[str], bool], path: str = "") -> dict[str, Any]:
    """Every leaf of a JSON-like record by its path (``a.b[2]``), skipping keys ``skip`` names."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key in sorted(obj, key=str):
            if not skip(str(key)):
                out.update(_leaves(obj[key], skip, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        out = {}
        for i, x in enumerate(obj):
            out.update(_leaves(x, skip, f"{path}[{i}]"))
        return out
    return {path: obj}


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _relative(x: float, y: float) -> float:
    """``|x - y| / max(|x|, |y|)``: 0 for equal numbers (both NaN included), 1 when one of them
    is zero, between 1 and 2 for opposite signs; NaN against a number counts as 1."""
    if x == y or (math.isnan(x) and math.isnan(y)):
        return 0.0
    if math.isnan(x) or math.isnan(y):
        return 1.0
    return abs(x - y) / max(abs(x), abs(y))


def agreement(a: Mapping[str, Any], b: Mapping[str, Any],
              ignore: frozenset[str] = VOLATILE_KEYS) -> dict[str, Any]:
    """How closely two records of the same computation agree, number by number.

    Every leaf at the same path in both (keys in ``ignore`` skipped at any depth): ``n_numbers``
    numeric leaves, ``n_equal`` of them equal, ``largest_relative`` (``|a - b| / max(|a|, |b|)``)
    and where (``largest_at``); ``numbers``: every numeric leaf that differs, with both values and
    its relative difference, largest first; ``other``: every other leaf (bools, strings, leaves
    in only one record) that differs. Unlike :func:`record_differences`, which answers "equal
    within a tolerance?", this measures how far two executions drifted apart (for example on two
    kinds of processor: README, Reproducibility)."""
    la, lb = _leaves(a, ignore.__contains__), _leaves(b, ignore.__contains__)
    numbers: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    n_numbers = 0
    for path in sorted(set(la) | set(lb)):
        x, y = la.get(path, "(absent)"), lb.get(path, "(absent)")
        if _is_number(x) and _is_number(y):
            n_numbers += 1
            rel = _relative(float(x), float(y))
            if rel > 0:
                numbers.append({"path": path, "a": x, "b": y, "relative": rel})
        elif x != y:
            other.append({"path": path, "a": x, "b": y})
    numbers.sort(key=lambda d: -d["relative"])
    return {"n_numbers": n_numbers, "n_equal": n_numbers - len(numbers),
            "largest_relative": numbers[0]["relative"] if numbers else 0.0,
            "largest_at": numbers[0]["path"] if numbers else None,
            "numbers": numbers, "other": other}


def compare_folders(folder_a: str | Path, folder_b: str | Path, names: Sequence[str]
                    ) -> dict[str, Any]:
    """:func:`agreement` of the result records ``<folder>/<name>.json`` of two folders (say the
    committed ``results/default`` and the same notebooks run on another machine), with the
    machine each record names in its provenance."""
    out: dict[str, Any] = {"a": str(folder_a), "b": str(folder_b), "records": {}}
    for name in names:
        ra, rb = (load_json(Path(f) / f"{name}.json") for f in (folder_a, folder_b))
        out["records"][name] = {
            "machine_a": ra.get("provenance", {}).get("machine"),
            "machine_b": rb.get("provenance", {}).get("machine"),
            **agreement(ra, rb)}
    return out


#: The fields of :func:`egmlib.core.runs.machine` that decide a trained network's numbers: two
#: machines that differ in one train different networks from the same seed (README,
#: Reproducibility).
KIND_FIELDS = ("arch", "cores", "torch_cpu", "bf16")
#: The packages (:func:`egmlib.core.runs.package_versions`) whose versions decide the numbers.
KIND_PACKAGES = ("numpy", "scipy", "torch", "scikit-learn")


def _trained_precisions(obj: Any) -> set[str]:
    """Every ``precision`` a record says a network trained in (resolved values such as a
    history's ``settings``; the requested parameters under ``provenance`` or ``params`` are
    left out)."""
    if isinstance(obj, Mapping):
        out: set[str] = set()
        for k, v in obj.items():
            if k in ("provenance", "params"):
                continue
            if k == "precision" and isinstance(v, str):
                out.add(v)
            else:
                out |= _trained_precisions(v)
        return out
    if isinstance(obj, list):
        return set().union(*map(_trained_precisions, obj))
    return set()


def machine_differences(folder: str | Path, here: Mapping[str, Any] | None = None,
                        versions: Mapping[str, str] | None = None) -> list[str]:
    """Why this machine (``here``: :func:`egmlib.core.runs.machine`; ``versions``:
    :func:`egmlib.core.runs.package_versions`) may not reproduce the records ``folder/*.json``:
    one line per difference, naming the first record that shows it; empty when nothing recorded
    says so.

    Read from each record's provenance: the machine's :data:`KIND_FIELDS` (records made since
    the provenance names them) and the versions of :data:`KIND_PACKAGES`; and, for records
    older than that, the arithmetic a network trained in: a record that trained in bfloat16
    cannot be reproduced by a processor without bfloat16 arithmetic. A record whose provenance
    says ``kind_independent`` (no network trained; its numbers move only by float rounding
    between processors) is checked for the package versions only."""
    here = runs.machine() if here is None else here
    versions = runs.package_versions() if versions is None else versions
    found: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.json")):
        record = load_json(path)
        prov = record.get("provenance") if isinstance(record, Mapping) else None
        if not isinstance(prov, Mapping):
            continue
        free = bool(prov.get("kind_independent"))  # no network trained: only versions count
        made_on = None if free else prov.get("machine")
        if isinstance(made_on, Mapping):
            for name in KIND_FIELDS:
                if name in made_on and made_on[name] != here.get(name):
                    found.setdefault(f"{name}: {made_on[name]!r} there, {here.get(name)!r} here",
                                     path.name)
        for name in KIND_PACKAGES:
            there = (prov.get("versions") or {}).get(name)
            if there is not None and there != versions.get(name):
                found.setdefault(f"{name} {there} there, {versions.get(name)} here", path.name)
        if not free and "bfloat16" in _trained_precisions(record) and not here.get("bf16"):
            found.setdefault("networks trained in bfloat16 there; this processor has no bfloat16 "
                             "arithmetic", path.name)
    return [f"{what} (first in {name})" for what, name in found.items()]


def note_other_machine(folder: str | Path) -> list[str]:
    """Before a command writes over the committed records in ``folder``: print to stderr every
    way this machine differs from the one that made them (:func:`machine_differences`), and
    return those lines (the command runs all the same)."""
    differences = machine_differences(folder)
    if differences:
        _print_differences(f"note: {runs.shown(folder)}/ was made on a machine of another kind, "
                           "so the trained numbers written over it will differ from the "
                           "committed ones", differences)
    return differences


def _print_differences(header: str, differences: Sequence[str]) -> None:
    """``header`` and one indented line per difference, on stderr."""
    print(f"{header} (README, Reproducibility):", file=sys.stderr)
    for line in differences:
        print(f"  {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m egmlib.workflow.records FOLDER_A FOLDER_B NAME... [--out FILE]``: how the
    records ``NAME`` of two folders agree (:func:`compare_folders`); a summary line per record,
    the whole comparison to ``--out`` (JSON).

    ``python -m egmlib.workflow.records --same-machine FOLDER``: whether this machine is of the
    kind that made ``FOLDER``'s records (:func:`machine_differences`); exit status 1, naming each
    difference, when it is not."""
    import argparse

    from egmlib.core.runs import portable, save_json

    ap = argparse.ArgumentParser(prog="python -m egmlib.workflow.records",
                                 description=main.__doc__)
    ap.add_argument("folder_a", nargs="?")
    ap.add_argument("folder_b", nargs="?")
    ap.add_argument("names", nargs="*", help="record names without .json, e.g. 01_data")
    ap.add_argument("--out", default="", help="write the comparison here (JSON)")
    ap.add_argument("--same-machine", metavar="FOLDER", default="",
                    help="only check that this machine is of the kind that made FOLDER's records")
    args = ap.parse_args(argv)
    if args.same_machine:
        if not Path(args.same_machine).is_dir():
            ap.error(f"--same-machine: {args.same_machine} is not a folder")
        differences = machine_differences(args.same_machine)
        if not differences:
            print(f"{args.same_machine}: nothing recorded differs from this machine")
            return 0
        _print_differences(f"{args.same_machine} was made on a machine of another kind, so its "
                           "trained numbers will not reproduce here", differences)
        return 1
    if not (args.folder_a and args.folder_b and args.names):
        ap.error("give FOLDER_A FOLDER_B NAME..., or --same-machine FOLDER")
    for folder in (args.folder_a, args.folder_b):
        missing = [n for n in args.names if not (Path(folder) / f"{n}.json").is_file()]
        if missing:
            ap.error(f"names: no {', '.join(missing)} in {folder}")
    result = compare_folders(args.folder_a, args.folder_b, args.names)
    for name, r in result["records"].items():
        print(f"{name}: {r['n_equal']} of {r['n_numbers']} numbers equal; largest relative "
              f"difference {r['largest_relative']:.2g} at {r['largest_at']}; "
              f"{len(r['other'])} other differences")
    if args.out:
        save_json(args.out, portable(result))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through main()
    raise SystemExit(main())
