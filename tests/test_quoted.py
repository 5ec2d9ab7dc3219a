"""Numbers quoted in the README, tied to their records (egmlib.workflow.quoted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from egmlib.core.runs import repo_root
from egmlib.workflow import quoted

RECORD = {
    "corr": 0.4949092255532018,
    "gain": 0.025338315,
    "low": -0.0011,
    "share": 0.3412,
    "frechet": 113.32069631751875,
    "history": {"best_epoch": 34, "epochs_run": 40},
    "rows": [{"set": "vae_s", "rhythm": "SR", "x": 1.24},
             {"set": "vae_s", "rhythm": "AF", "x": 2.5},
             {"set": "real", "rhythm": "SR", "x": 0.06}],
    "by arm": {"16": {"val corr": 0.3503}},
}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "r.json").write_text(json.dumps(RECORD))
    return tmp_path


def q(num: str, path: str) -> str:
    return f"{num}<!--= default/r.json:{path} -->"


def test_numbers_are_written_as_the_quote_is(results: Path):
    text = (f"corr {q('0.49', 'corr')}, gain {q('+0.025', 'gain')}, "
            f"{q('0.00', 'low')}, {q('34%', 'share')}, Frechet {q('113', 'frechet')}, "
            f"epoch {q('35', 'history.best_epoch+1')} of {q('40', 'history.epochs_run')}, "
            f"{q('3', 'rows#')} rows, {q('1.24', 'rows[set=vae_s,rhythm=SR].x')}, "
            f"{q('0.06', 'rows[2].x')}, {q('0.35', 'by arm.16.val corr')}")
    assert quoted.check(text, results) == []
    assert quoted.render(text, results) == text
    assert len(quoted.find(text)) == 11


def test_a_stale_number_is_named_and_rewritten(results: Path):
    text = f"line one\nSR {q('0.50', 'corr')} and {q('+0.03', 'gain')} (kept)"
    problems = quoted.check(text, results)
    assert problems == ["line 2: 0.50 is 0.49 in default/r.json:corr"]
    fixed = quoted.render(text, results)
    assert fixed == f"line one\nSR {q('0.49', 'corr')} and {q('+0.03', 'gain')} (kept)"
    assert quoted.check(fixed, results) == []


@pytest.mark.parametrize(("value", "like", "want"), [
    (0.4949, "0.50", "0.49"), (0.025338, "+0.054", "+0.025"), (-0.0084, "+0.000", "-0.008"),
    (-0.0011, "0.00", "0.00"), (-0.0011, "+0.000", "-0.001"), (-0.0004, "+0.000", "+0.000"),
    (0.3412, "12%", "34%"), (0.3412, "12.5%", "34.1%"), (113.32, "23", "113"), (7, "7", "7"),
    (0.000135, "0.0001", "0.0001"), (3.2851e7, "3.3e7", "3.3e7"), (1.0589e9, "1.1e9", "1.1e9"),
    (9.6e-7, "1e-6", "1e-6"), (1114.47, "1,110", "1,114"), (4896, "4,896", "4,896"),
])
def test_format_like(value: float, like: str, want: str):
    assert quoted.format_like(value, like) == want


def test_format_like_refuses_what_is_no_number():
    for bad in ("gain", None, True, float("nan")):
        with pytest.raises(ValueError, match="the record holds"):
            quoted.format_like(bad, "0.1")


@pytest.mark.parametrize(("path", "message"), [
    ("corrr", "the record has no 'corrr' \\(it has: by arm, corr, frechet"),
    ("history.best", "history has no 'best'"),
    ("rows[set=vae_s].x", "matches 2 items; it must match exactly one"),
    ("rows[set=none].x", "matches 0 items"),
    ("rows[7].x", "no item \\[7\\] \\(the list has 3\\)"),
    ("corr.x", "corr has no 'x'"),
    ("corr#", "no list or mapping"),
    ("rows[vae_s].x", "expected name=value fields"),
])
def test_a_source_that_does_not_resolve_is_named(results: Path, path: str, message: str):
    text = f"x {q('0.49', path)}"
    (problem,) = quoted.check(text, results)
    assert re.search(message, problem), problem
    with pytest.raises(ValueError, match=re.escape(path)):
        quoted.render(text, results)


def test_a_selector_fans_out_to_every_match_and_an_aggregate_reduces_it(results: Path):
    text = (f"{q('1.87', 'rows[*set=vae_s].x@mean')} {q('1.24', 'rows[*set=vae_s].x@min')} "
            f"{q('2.50', 'rows[*set=vae_s].x@max')} {q('2', 'rows[*set=vae_s]#')} "
            f"{q('1.24', 'rows[*rhythm=SR].x@max')} {q('2.50', 'rows[*].x@max')} "
            f"{q('3', 'rows[*]#')}")
    assert quoted.check(text, results) == []
    for path, message in (("rows[*set=vae_s].x", "selects 2 values; end it with #"),
                          ("rows[*set=vae_s].x@median", "unknown aggregate @median"),
                          ("rows[*set=none].x@mean", "matches no item"),
                          ("rows[*set=vae_s].set@mean", "@mean needs numbers")):
        (problem,) = quoted.check(q("1.87", path), results)
        assert message in problem, problem


def test_offset_needs_an_integer_and_missing_records_are_named(results: Path):
    (problem,) = quoted.check(q("1.5", "corr+1"), results)
    assert "not an integer" in problem
    (problem,) = quoted.check("3<!--= default/none.json:a -->", results)
    assert "no record" in problem
    with pytest.raises(ValueError, match=re.escape("allowed: <record>.json:<path>")):
        quoted.find("3<!--= default/r.json -->")


def test_definitions_are_sourced_but_never_checked(results: Path):
    text = f"k = 18 against k = 0<!--= def --> gives {q('+0.03', 'gain')}"
    assert quoted.check(text, results) == []
    assert quoted.render(text, results) == text
    assert quoted.unquoted(text) == ["18"]


def test_unquoted_finds_numbers_without_a_source():
    text = ("| 02 VAE-S (`02_vae_s.json`, k = 18) | CV 0.68-0.98 m/s, worst -0.46, 34%, "
            "[fig](figures/01_psd.png) <!-- 12 --> and 7 of " + q("0.5", "corr") + " |")
    assert quoted.unquoted(text) == ["18", "0.68", "0.98", "-0.46", "34%", "7"]


def test_ratios_exponents_and_thousands_are_numbers_of_their_own():
    text = "| numba | 3.3e7 (0.36x) | 1.1e9 (12x) | 3,500 nodes at 1,114 pairs/s, 1.26x |"
    assert quoted.unquoted(text) == ["3.3e7", "0.36x", "1.1e9", "12x", "3,500", "1,114", "1.26x"]


def test_a_selector_value_may_hold_commas(results: Path):
    (results / "default" / "b.json").write_text(json.dumps({"rows": [
        {"item": "recon, 1 thread", "n": 1, "x": 735.4}, {"item": "recon, 2 threads", "n": 2,
                                                         "x": 1114.5}]}))
    text = ("735<!--= default/b.json:rows[item=recon, 1 thread].x --> and "
            "1,114<!--= default/b.json:rows[item=recon, 2 threads,n=2].x -->x")
    assert quoted.check(text, results) == []


def test_a_range_keeps_its_hyphen_out_of_the_quoted_number(results: Path):
    text = f"{q('0.49', 'corr')}-{q('0.35', 'by arm.16.val corr')} and worst {q('0.00', 'low')}"
    assert [x.text for x in quoted.find(text)] == ["0.49", "0.35", "0.00"]
    assert quoted.check(text, results) == []


def test_cli_checks_and_writes_in_place(results: Path, tmp_path: Path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text(f"SR {q('0.50', 'corr')}\n")
    assert quoted.main([str(doc), "--results", str(results)]) == 1
    assert "0.50 is 0.49" in capsys.readouterr().out
    assert quoted.main([str(doc), "--results", str(results), "--write"]) == 0
    assert "1 rewritten" in capsys.readouterr().out
    assert doc.read_text() == f"SR {q('0.49', 'corr')}\n"
    assert quoted.main([str(doc), "--results", str(results)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default", "doc.md"]  # no temporary


# --- the README against the committed records -------------------------------------------------
README = repo_root() / "README.md"


@pytest.mark.parametrize("name", ["README.md", *sorted(
    p.relative_to(repo_root()).as_posix() for p in (repo_root() / "notebooks").glob("*.ipynb"))])
def test_the_committed_prose_agrees_with_the_committed_records(name: str):
    assert quoted.check_file(repo_root() / name) == [], (
        f"a number {name} quotes differs from its record; run `python -m egmlib.workflow.quoted "
        "README.md notebooks/*.ipynb --write` after making the records again")


def test_cli_rewrites_a_notebooks_markdown(results: Path, tmp_path: Path, capsys):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"SR {q('0.50', 'corr')}"),
                nbformat.v4.new_code_cell("x = 0.50  # code is not prose")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert quoted.main([str(path), "--results", str(results)]) == 1
    assert "cell " in capsys.readouterr().out
    assert quoted.main([str(path), "--write", "--results", str(results)]) == 0
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source == f"SR {q('0.49', 'corr')}"
    assert cells[1].source == "x = 0.50  # code is not prose"
    assert quoted.check_file(path, results) == []


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_headline_table_quotes_every_number_from_a_record():
    lines = _section("What the default profile measures").splitlines()
    rows = [(line, after.startswith("|---")) for line, after in zip(lines, [*lines[1:], ""])
            if line.startswith("| ")]
    assert sum(not header for _, header in rows) >= 9
    for line, header in rows:  # a header row (above a |---| line) quotes nothing, or a source
        assert quoted.unquoted(line) == [], line[:80]
        assert header or quoted.find(line), line[:80]
