"""The package layout: every module sits in one layer, and no module imports a layer above its
own (the order is the one :mod:`egmlib` documents)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "egmlib"
#: Layers bottom to top, as the package docstring lists them.
LAYERS = ("core", "physics", "data", "generators", "evaluation", "augmentation", "workflow")


def _layer(module: str) -> str:
    """The layer of a dotted module name inside egmlib ('egmlib.physics.forward' -> 'physics')."""
    parts = module.split(".")
    assert parts[0] == "egmlib" and len(parts) > 1, module
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted egmlib module) of every import in ``path``, relative ones resolved."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("egmlib")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "egmlib":  # from egmlib import physics -> the named subpackages
                found += [(node.lineno, f"egmlib.{a.name}") for a in node.names]
            elif module.startswith("egmlib"):
                found.append((node.lineno, module))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_sits_in_a_layer():
    stray = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert stray == [], f"modules outside a layer subpackage: {stray}"
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") \
        == sorted(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_layer(path: Path):
    own = LAYERS.index(path.relative_to(PACKAGE).parts[0])
    upward = [f"line {line}: {mod}" for line, mod in _imports(path)
              if LAYERS.index(_layer(mod)) > own]
    assert upward == [], f"{path.relative_to(PACKAGE)} imports a higher layer: {upward}"


def test_the_checker_sees_an_upward_import(tmp_path: Path):
    """The import parser resolves relative and absolute forms (else the test above is blind)."""
    path = PACKAGE / "physics" / "forward.py"
    mods = {m for _, m in _imports(path)}
    assert "egmlib.physics.geometry" in mods
    assert LAYERS.index(_layer("egmlib.workflow.sweep")) > LAYERS.index("physics")


def test_the_package_docstring_lists_every_public_module():
    """``egmlib.__doc__`` is the map of the public API: every module whose name does not start
    with an underscore is listed (by its dotted name), and nothing listed is missing."""
    import re

    import egmlib

    public = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
              for p in PACKAGE.rglob("*.py")
              if p.name != "__init__.py" and not p.name.startswith("_")}
    listed = set(re.findall(r":mod:`~?(egmlib\.\w+\.\w+)`", egmlib.__doc__))
    assert public - listed == set(), f"modules missing from egmlib's docstring: {public - listed}"
    assert listed - public == set(), f"listed but not modules: {listed - public}"
