"""The committed notebooks are a publication: they are read as they are (no execution) and must
hold no machine paths, no stderr, no progress-bar fragments, no warnings, no errors, no functions
or classes defined in cells (those belong in ``egmlib``) and no template leftovers.

:func:`notebook_defects` is the checker; ``test_checker_reports_each_defect`` shows on small
hand-made notebooks that it reports every kind of defect, so the test of the committed notebooks
cannot pass vacuously.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import (
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

#: Absolute paths of a machine (POSIX home, temporary and work folders; Windows drives) and the
#: reprs of path objects, which always show the absolute path a notebook happened to run in.
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.])/(?:work|tmp|home|root|Users|private|var/folders|mnt|scratch)/"
    r"|(?:Posix|Windows)Path\("
    r"|\b[A-Za-z]:\\\\?[\w.]")
#: What tqdm (or any progress bar) leaves behind in a stream.
PROGRESS = re.compile(r"it/s\b|\bs/it\b|%\||\r")
#: A warning printed by the warnings module (``path:line: UserWarning: ...``) or a logged one.
WARNING = re.compile(r"\b\w*Warning\b|\bwarning:|\bwarnings\.warn\(")
#: An unfilled placeholder of a template engine (``{{ kind }}``, ``$KIND$``, ``<<kind>>``).
PLACEHOLDER = re.compile(r"\{\{\s*\w+\s*\}\}|\$[A-Z_]+\$|<<\s*\w+\s*>>")
#: Mime types whose payload is text that a reader sees (images are binary: base64 may contain
#: anything, and is not checked).
TEXT_MIME = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")


def _output_text(output: dict) -> str:
    """The text a reader sees of one output."""
    kind = output.get("output_type")
    if kind == "stream":
        return _joined(output.get("text", ""))
    if kind == "error":
        return "\n".join([output.get("ename", ""), output.get("evalue", ""),
                          *output.get("traceback", [])])
    data = output.get("data", {})
    parts = []
    for mime in TEXT_MIME:
        if mime in data:
            value = data[mime]
            parts.append(json.dumps(value) if mime == "application/json" else _joined(value))
    return "\n".join(parts)


def _joined(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _python_source(source: str) -> str:
    """``source`` with IPython magics and shell escapes turned into ``pass`` (line numbers kept),
    so that :mod:`ast` can parse it."""
    if source.lstrip().startswith("%%"):
        return ""  # a cell magic: not Python
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")) or (stripped and stripped.rstrip().endswith("?")
                                                and not stripped.startswith("#")):
            lines.append(line[: len(line) - len(stripped)] + "pass")
        else:
            lines.append(line)
    return "\n".join(lines)


def _code_defects(source: str) -> list[str]:
    """Definitions and template leftovers in the source of one code cell."""
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError as exc:
        return [f"does not parse: {exc.msg} (line {exc.lineno})"]
    found = []
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(f"defines function {node.name}() ({where}): move it into egmlib")
        elif isinstance(node, ast.ClassDef):
            found.append(f"defines class {node.name} ({where}): move it into egmlib")
        elif isinstance(node, ast.Lambda):
            found.append(f"defines a lambda ({where}): move it into egmlib")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if all(isinstance(o, ast.Constant) for o in operands):
                found.append(f"compares constants {ast.unparse(node)} ({where}): a template "
                             "leftover (its value never changes)")
        elif isinstance(node, ast.If | ast.IfExp | ast.While) and isinstance(node.test,
                                                                              ast.Constant):
            found.append(f"tests the constant {ast.unparse(node.test)} ({where}): a template "
                         "leftover")
    return found


def notebook_defects(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """Every defect of a committed notebook, one line each, naming the notebook and the cell
    (``name cell [i]``, i counting from 0 as the notebook stores them)."""
    found: list[str] = []
    papermill = nb.get("metadata", {}).get("papermill", {})
    meta_text = json.dumps(papermill)
    if ABSOLUTE_PATH.search(meta_text):
        found.append(f"{name} metadata: absolute path in the papermill metadata")
    for i, cell in enumerate(nb.cells):
        at = f"{name} cell [{i}]"
        source = _joined(cell.get("source", ""))
        if m := ABSOLUTE_PATH.search(source):
            found.append(f"{at}: absolute path in the source ({m.group(0)!r})")
        if PLACEHOLDER.search(source):
            found.append(f"{at}: unfilled template placeholder in the source")
        if cell.cell_type != "code":
            continue
        found += [f"{at}: {d}" for d in _code_defects(source)]
        for j, output in enumerate(cell.get("outputs", [])):
            out = f"{at} output {j}"
            kind = output.get("output_type")
            text = _output_text(output)
            if kind == "error":
                found.append(f"{out}: error {output.get('ename')}: {output.get('evalue')}")
            if kind == "stream" and output.get("name") == "stderr":
                first = text.strip().splitlines()[0][:60] if text.strip() else ""
                found.append(f"{out}: stderr stream ({first!r})")
            if m := ABSOLUTE_PATH.search(text):
                found.append(f"{out}: absolute path ({m.group(0)!r})")
            if PROGRESS.search(text):
                found.append(f"{out}: progress-bar fragment")
            if m := WARNING.search(text):
                found.append(f"{out}: warning ({m.group(0)!r})")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    defects = notebook_defects(nb, path.name)
    assert not defects, f"{len(defects)} defects:\n" + "\n".join(defects)


def test_there_are_committed_notebooks() -> None:
    assert len(NOTEBOOKS) >= 5


# --- the checker itself, on hand-made notebooks ----------------------------------------------

def _clean_notebook() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# A claim\n\nFigures go to `figures/`; results to `results/default/`."),
        new_code_cell("%matplotlib inline\nx = [1, 2, 3]\nprint(sum(x))",
                      outputs=[new_output("stream", name="stdout", text="6\n")]),
        new_code_cell("y = {'a': 1}\ny", outputs=[new_output(
            "execute_result", data={"text/plain": "{'a': 1}",
                                    "image/png": "iVBORw0/tmp/work/home/PosixPath(=="},
            execution_count=2)]),
        new_code_cell('print(f"wrote {\'runs/default/01_data/result.json\'}")', outputs=[
            new_output("stream", name="stdout", text="wrote runs/default/01_data/result.json\n")]),
    ]
    nb.metadata["papermill"] = {"input_path": "notebooks/x.ipynb",
                                "output_path": "notebooks/x.ipynb"}
    return nb


BAD_CELLS = {
    "absolute path in the source": new_code_cell('d = "/work/main/runs"'),
    "absolute path ('PosixPath(')": new_code_cell("RUN", outputs=[new_output(
        "execute_result", data={"text/plain": "PosixPath('runs/default')"}, execution_count=1)]),
    "absolute path ('/tmp/')": new_code_cell("print(RUN)", outputs=[
        new_output("stream", name="stdout", text="wrote /tmp/x/result.json\n")]),
    "absolute path ('/home/')": new_code_cell("print(RUN)", outputs=[
        new_output("stream", name="stdout", text="run directory /home/me/runs\n")]),
    "absolute path ('C:": new_code_cell("print(RUN)", outputs=[
        new_output("stream", name="stdout", text="run directory C:\\Users\\me\\runs\n")]),
    "stderr stream": new_code_cell("import sys\nprint('x', file=sys.stderr)", outputs=[
        new_output("stream", name="stderr", text="x\n")]),
    "progress-bar fragment": new_code_cell("train()", outputs=[new_output(
        "stream", name="stdout",
        text="train vae_s:  40%|████      | 10/25 [00:03<00:05, 2.9it/s]\r")]),
    "warning ('UserWarning')": new_code_cell("fit()", outputs=[new_output(
        "stream", name="stdout",
        text="sklearn/base.py:3: UserWarning: X has feature names\n  warnings.warn(\n")]),
    "error ValueError": new_code_cell("raise ValueError('no')", outputs=[new_output(
        "error", ename="ValueError", evalue="no", traceback=["ValueError: no"])]),
    "defines function helper()": new_code_cell("def helper(x):\n    return x + 1\n"),
    "defines class Thing": new_code_cell("class Thing:\n    pass\n"),
    "defines a lambda": new_code_cell("key = lambda r: r['k']\n"),
    "compares constants 'vae_s' == 'vae_s'": new_code_cell(
        'y = None if "vae_s" == "vae_s" else 1\n'),
    "tests the constant True": new_code_cell("if True:\n    x = 1\n"),
    "unfilled template placeholder": new_markdown_cell("# {{ kind }}: a generator"),
    "does not parse": new_code_cell("x = (1,\n"),
}


def test_checker_passes_a_clean_notebook() -> None:
    assert notebook_defects(_clean_notebook(), "clean.ipynb") == []


@pytest.mark.parametrize("expected", list(BAD_CELLS))
def test_checker_reports_each_defect(expected: str) -> None:
    nb = _clean_notebook()
    nb.cells.insert(2, BAD_CELLS[expected])
    defects = notebook_defects(nb, "bad.ipynb")
    assert len(defects) >= 1
    assert any(d.startswith("bad.ipynb cell [2]") and expected in d for d in defects), defects


def test_checker_reads_metadata_paths() -> None:
    nb = _clean_notebook()
    nb.metadata["papermill"]["input_path"] = "/home/me/repo/notebooks/x.ipynb"
    assert notebook_defects(nb, "bad.ipynb") == [
        "bad.ipynb metadata: absolute path in the papermill metadata"]


def test_checker_reads_written_notebooks(tmp_path: Path) -> None:
    """The same checker on a notebook written to and read from disk, as the committed ones are."""
    nb = _clean_notebook()
    nb.cells.append(BAD_CELLS["stderr stream"])
    nbformat.write(nb, tmp_path / "bad.ipynb")
    defects = notebook_defects(nbformat.read(tmp_path / "bad.ipynb", as_version=4), "bad.ipynb")
    assert defects == ["bad.ipynb cell [4] output 0: stderr stream ('x')"]
