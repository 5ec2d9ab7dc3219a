"""Numbers quoted in prose, tied to the committed record each one comes from.

The README quotes numbers from the result records (``results/``). A number written by hand drifts
from its record as soon as the record is made again, so each quoted number carries its source in
an HTML comment right after it, invisible where the Markdown is rendered::

    held-out SR correlation 0.65<!--= default/02_vae_s.json:reconstruction_val.SR.corr_mean -->

The source is ``<record>:<path>``: the record relative to ``results/`` and a path into its JSON,
dot-separated keys with list items selected by position (``rows[2]``) or by their fields
(``rows[generator=vae_c,mode=prior]``, which must match exactly one item), or every item
whose fields match (``runs[*generator=none,n_real_sims=16].corr.SR``; ``runs[*]``: every item),
which the path then reduces with ``@mean``, ``@min`` or ``@max`` at its end. A trailing ``#``
takes the length of a list or mapping, or the number of items selected (``secondary#``); a
trailing ``+N`` adds an integer (``history.best_epoch+1``: a 0-based epoch quoted counted from
1). A number that is a definition rather than a measurement (the ``k = 0`` of "against k = 0")
says so with the source ``def``: it is never rewritten, and it counts as sourced. The number's
own form says how its value is written (:func:`format_like`): as many decimals as it shows, a
leading ``+`` for a signed difference, a trailing ``%`` for a fraction in percent, thousands
separators, an exponent (``3.3e7``). Nothing else about the prose is touched.

:func:`check` lists every quoted number that differs from its record (a test runs it on the
README against the committed records); :func:`render` writes the records' values in place (``make
reproduce`` and ``make sweep`` run it after they write the records); :func:`unquoted` lists the
numbers of a passage without a source (the headline table of the README has none).

Notebooks quote the same way in their markdown cells (their code cells compute their numbers).

Command line::

    python -m egmlib.workflow.quoted README.md            # check: exit 1 naming each stale number
    python -m egmlib.workflow.quoted README.md --write    # write the records' values in place
    python -m egmlib.workflow.quoted README.md notebooks/*.ipynb
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egmlib.core.runs import atomic_path, load_json, repo_root, shown

__all__ = ["DEFINITION", "QUOTE", "Quote", "check", "check_file", "find", "format_like", "lookup",
           "main", "render", "unquoted"]

#: A quoted number and its source: ``<number><!--= <record>:<path>[+N] -->``; a sign right after a
#: digit or after a source (``-->``) is a range's hyphen (``0.68-0.98``), not the number's.
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[+-]?\d+)?"
QUOTE = re.compile(rf"(?P<num>(?:(?<![\d>])[+-])?{_DIGITS})(?P<pct>%?)<!--= (?P<src>[^>]+?) -->")
#: Aggregates of the values a ``[*k=v]`` selector fans out to (``@mean`` at the end of a path).
_AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda v: math.fsum(v) / len(v), "min": min, "max": max}
#: The source of a quoted number that is a definition, not a measurement.
DEFINITION = "def"
#: A number in prose (for :func:`unquoted`): not part of a word, a path or a longer number, and
#: not a label with a leading zero (the notebooks' "02"); a ratio's ``x`` may follow it.
_NUMBER = re.compile(rf"(?<![\w.,\-/])(?!0\d)[+-]?{_DIGITS}(?:%|x\b)?(?![\w/]|[.,]\d)")
#: The hyphen of a range such as ``0.68-0.98`` (both ends are numbers).
_RANGE = re.compile(r"(?<=\d)-(?=\d)")
_STEP = re.compile(r"(?P<key>[^.\[\]]+)|\[(?P<sel>[^\]]+)\]")


@dataclass(frozen=True)
class Quote:
    """One quoted number: its text as written, its source, where it sits in the text."""

    text: str
    record: str  # "" for a definition (source ``def``)
    path: str
    offset: int
    start: int
    end: int

    @property
    def source(self) -> str:
        if not self.record:
            return DEFINITION
        return f"{self.record}:{self.path}" + (f"{self.offset:+d}" if self.offset else "")


def find(text: str) -> list[Quote]:
    """Every quoted number of ``text``, in order; a source that is not ``<record>:<path>``
    raises ``ValueError`` naming it."""
    out = []
    for m in QUOTE.finditer(text):
        src = m.group("src")
        if src == DEFINITION:
            out.append(Quote(m.group("num") + m.group("pct"), "", "", 0, m.start(),
                             m.end("pct")))
            continue
        record, sep, path = src.partition(":")
        offset = 0
        off = re.search(r"\+(\d+)$", path)
        if off:
            offset, path = int(off.group(1)), path[:off.start()]
        if not sep or not record.endswith(".json") or not path:
            raise ValueError(f"quoted number {m.group(0)!r}: source {src!r}; allowed: "
                             f"<record>.json:<path>[#][+N] or {DEFINITION}")
        out.append(Quote(m.group("num") + m.group("pct"), record, path, offset,
                         m.start(), m.end("pct")))
    return out


def _matches(items: list[Any], sel: str) -> list[Any]:
    # fields are split at a comma followed by "name=", so a value may hold commas
    parts = [part.split("=", 1) for part in re.split(r",(?=[\w ]+=)", sel)]
    if any(len(p) != 2 for p in parts):
        raise KeyError(f"selector [{sel}]: expected name=value fields separated by commas")
    want = dict(parts)
    return [it for it in items if isinstance(it, dict)
            and all(str(it.get(k)) == v for k, v in want.items())]


def _step(value: Any, step: re.Match[str], path: str, done: str) -> list[Any]:
    """The values one step of ``path`` leads to from ``value``: one, or every match of a
    ``[*k=v]`` selector."""
    where = f"path {path!r}: {done or 'the record'}"
    if step.group("key") is not None:
        key = step.group("key")
        if not isinstance(value, dict) or key not in value:
            have = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise KeyError(f"{where} has no {key!r} (it has: {have})")
        return [value[key]]
    if not isinstance(value, list):
        raise KeyError(f"{where} is no list")
    sel = step.group("sel")
    if re.fullmatch(r"-?\d+", sel):
        if not -len(value) <= int(sel) < len(value):
            raise KeyError(f"{where}: no item [{sel}] (the list has {len(value)})")
        return [value[int(sel)]]
    if sel == "*":
        if not value:
            raise KeyError(f"{where}: [*] selects no item (the list is empty)")
        return list(value)
    hits = _matches(value, sel.lstrip("*"))
    if sel.startswith("*"):
        if not hits:
            raise KeyError(f"{where}: [{sel}] matches no item")
        return hits
    if len(hits) != 1:
        raise KeyError(f"{where}: [{sel}] matches {len(hits)} items; it must match exactly one "
                       "(or select all of them with [*...] and end the path with an aggregate)")
    return hits


def lookup(record: Any, path: str) -> Any:
    """The value at ``path`` (module docstring) in a JSON-like ``record``; ``KeyError`` names
    the first step that does not resolve."""
    path, _, agg = path.partition("@")
    count = path.endswith("#")
    path = path.removesuffix("#")
    if agg and agg not in _AGGREGATES:
        raise KeyError(f"path {path!r}: unknown aggregate @{agg}; allowed: "
                       f"{', '.join('@' + a for a in _AGGREGATES)}")
    values, done, pos, fanned = [record], "", 0, False
    for m in _STEP.finditer(path):
        if m.start() not in (pos, pos + 1) or (m.start() == pos + 1 and path[pos] != "."):
            raise KeyError(f"path {path!r}: cannot parse near {path[pos:]!r}")
        pos = m.end()
        values = [v for value in values for v in _step(value, m, path, done)]
        fanned = fanned or (m.group("sel") or "").startswith("*")
        done += (f"[{m.group('sel')}]" if m.group("key") is None
                 else ("." if done else "") + m.group("key"))
    if pos != len(path):
        raise KeyError(f"path {path!r}: cannot parse near {path[pos:]!r}")
    if count:
        if fanned:
            return len(values)
        if not isinstance(values[0], list | dict):
            raise KeyError(f"path {path!r}: {path!r} is no list or mapping, it has no length")
        return len(values[0])
    if agg:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise KeyError(f"path {path!r}: @{agg} needs numbers")
        return _AGGREGATES[agg](values)
    if fanned:
        raise KeyError(f"path {path!r}: selects {len(values)} values; end it with # or an "
                       f"aggregate ({', '.join('@' + a for a in _AGGREGATES)})")
    return values[0]


def format_like(value: Any, like: str) -> str:
    """``value`` written as the quoted number ``like`` is: its decimals (none: rounded to a whole
    number), its sign, its percent, its thousands separators, its exponent (``3.3e7``); a value
    that rounds to zero is written without a minus. A value that is no finite number raises
    ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"the record holds {value!r}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"the record holds {value!r}")
    pct = like.endswith("%")
    body = like[:-1] if pct else like
    mantissa, exp, _ = body.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    sign = "+" if body.startswith("+") else ""
    group = "," if "," in mantissa else ""
    if exp:
        m, e = f"{value:{sign}.{decimals}e}".split("e")
        return f"{m}e{int(e)}"
    text = f"{100.0 * value if pct else value:{sign}{group}.{decimals}f}"
    if text.startswith("-") and float(text.replace(",", "")) == 0:  # -0.001 reads 0.00
        text = sign + text[1:]
    return text + ("%" if pct else "")


def _records(root: Path) -> Callable[[str], Any]:
    cache: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in cache:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"{name}: no record {shown(path)}")
            cache[name] = load_json(path)
        return cache[name]
    return load


def _resolved(text: str, results: str | Path | None
              ) -> Iterator[tuple[Quote, int, str | None, Exception | None]]:
    """Each quoted number of ``text`` with a source (definitions are skipped), its line, and the
    value its record gives in the number's form, or the error that resolving it raised."""
    load = _records(Path(results) if results is not None else repo_root() / "results")
    for q in find(text):
        if not q.record:
            continue
        line = text.count("\n", 0, q.start) + 1
        try:
            value = lookup(load(q.record), q.path)
            if q.offset:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"+{q.offset}: the record holds {value!r}, not an integer")
                value += q.offset
            yield q, line, format_like(value, q.text), None
        except (KeyError, ValueError, FileNotFoundError) as err:
            yield q, line, None, err


def check(text: str, results: str | Path | None = None) -> list[str]:
    """One line per quoted number of ``text`` that differs from its record under ``results``
    (default: the repository's ``results/``), or whose source does not resolve: ``"line L:
    0.65 is 0.66 in default/02_vae_s.json:reconstruction_val.SR.corr_mean"``."""
    return [f"line {line}: {q.text} <- {q.source}: {err}" if err is not None
            else f"line {line}: {q.text} is {want} in {q.source}"
            for q, line, want, err in _resolved(text, results)
            if err is not None or want != q.text]


def render(text: str, results: str | Path | None = None) -> str:
    """``text`` with every quoted number rewritten from its record (in the number's own form);
    a source that does not resolve raises ``ValueError`` (nothing is half-rewritten)."""
    out, pos = [], 0
    for q, line, want, err in _resolved(text, results):
        if err is not None:
            raise ValueError(f"line {line}: {q.text} <- {q.source}: {err}") from None
        out += [text[pos:q.start], str(want)]
        pos = q.end
    return "".join(out) + text[pos:]


def unquoted(text: str) -> list[str]:
    """The numbers of ``text`` that carry no source, in order (code spans, link targets and
    HTML comments are not prose and are skipped)."""
    prose = re.sub(r"<!--.*?-->|`[^`]*`|\]\([^)]*\)", " ", QUOTE.sub(" ", text), flags=re.S)
    return _NUMBER.findall(_RANGE.sub(" ", prose))


def _prose(path: Path) -> tuple[list[tuple[str, str]], Callable[[list[str]], None]]:
    """The prose of a file as ``(where, text)`` parts (the whole of a Markdown file; each markdown
    cell of a notebook, ``"cell <id>"``: code cells and outputs are computed, not quoted), and a
    function that writes new texts of those parts back, atomically."""
    if path.suffix != ".ipynb":
        def save_text(texts: list[str]) -> None:
            with atomic_path(path) as tmp:
                tmp.write_text(texts[0])
        return [("", path.read_text())], save_text
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "markdown"]

    def save_notebook(texts: list[str]) -> None:
        for cell, new in zip(cells, texts, strict=True):
            cell.source = new
        with atomic_path(path) as tmp:
            nbformat.write(nb, str(tmp))
    return [(f"cell {c.get('id', i)}", c.source) for i, c in enumerate(cells)], save_notebook


def _write(path: Path, results: Path | None) -> tuple[int, int]:
    """Rewrite the quoted numbers of ``path`` from their records, atomically; returns (quoted,
    rewritten)."""
    parts, save = _prose(path)
    olds = [text for _, text in parts]
    news = [render(text, results) for text in olds]
    if news != olds:
        save(news)
    pairs = [(a, b) for old, new in zip(olds, news, strict=True)
             for a, b in zip(find(old), find(new), strict=True)]
    return len(pairs), sum(a.text != b.text for a, b in pairs)


def _check_parts(parts: list[tuple[str, str]], results: str | Path | None) -> list[str]:
    return [f"{where}: {p}" if where else p for where, text in parts
            for p in check(text, results)]


def check_file(path: str | Path, results: str | Path | None = None) -> list[str]:
    """:func:`check` on a Markdown file, or on every markdown cell of a notebook (each problem
    then names its cell)."""
    return _check_parts(_prose(Path(path))[0], results)


def main(argv: Sequence[str] | None = None) -> int:
    """Check (exit 1 naming each stale number) or ``--write`` the quoted numbers of files."""
    ap = argparse.ArgumentParser(prog="python -m egmlib.workflow.quoted", description=(
        "Check or rewrite the numbers that Markdown files and the markdown cells of notebooks "
        "quote from the result records."))
    ap.add_argument("files", nargs="+", type=Path,
                    help="Markdown files or notebooks (e.g. README.md notebooks/*.ipynb)")
    ap.add_argument("--write", action="store_true",
                    help="write each record's value in place of its quoted number")
    ap.add_argument("--results", type=Path, default=None,
                    help="the records' folder (default: the repository's results/)")
    args = ap.parse_args(argv)
    status = 0
    for path in args.files:
        if args.write:
            n, changed = _write(path, args.results)
            print(f"{shown(path)}: {n} quoted numbers, {changed} rewritten")
            continue
        parts = _prose(path)[0]
        problems = _check_parts(parts, args.results)
        for p in problems:
            print(f"{shown(path)}: {p}")
        if problems:
            status = 1
        else:
            n = sum(len(find(text)) for _, text in parts)
            print(f"{shown(path)}: {n} quoted numbers agree with their records")
    return status


if __name__ == "__main__":
    sys.exit(main())
