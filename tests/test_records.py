"""egmlib.workflow.records: comparing two result records."""

from __future__ import annotations

import math

import pytest

from egmlib.workflow.records import VOLATILE_KEYS, record_differences


def test_equal_records_and_volatile_keys():
    a = {"k": 4, "corr": [0.5, 0.25], "provenance": {"created_utc": "2026-01-01"}, "wall_s": 3.0}
    b = {"k": 4, "corr": [0.5, 0.25], "provenance": {"created_utc": "2026-12-03"}, "wall_s": 9.5}
    assert record_differences(a, b) == []
    assert "provenance" in VOLATILE_KEYS and "wall_s" in VOLATILE_KEYS
    # nothing ignored: both volatile keys differ
    assert record_differences(a, b, ignore=frozenset()) == [
        "/provenance/created_utc: '2026-01-01' != '2026-12-03'", "/wall_s: 3.0 != 9.5"]


def test_every_kind_of_difference_is_named_with_its_path():
    a = {"x": {"y": [1, 2, 3]}, "s": "SR", "only_a": 1, "n": [1, 2], "flag": True}
    b = {"x": {"y": [1, 2, 4]}, "s": "AF", "only_b": 1, "n": [1, 2, 3], "flag": 1}
    assert record_differences(a, b) == [
        "/flag: True != 1",  # a bool is not the number 1 here
        "/n: length 2 != 3",
        "/only_a: only in a",
        "/only_b: only in b",
        "/s: 'SR' != 'AF'",
        "/x/y[2]: 3 != 4",
    ]


def test_tolerances_are_relative_to_the_second_record():
    # |1.0 - 1.1| = 0.1 <= 0 + 0.1 * 1.1 = 0.11 -> agree; against 0.09 (rtol 0.08) -> differ
    assert record_differences({"v": 1.0}, {"v": 1.1}, rtol=0.1) == []
    assert record_differences({"v": 1.0}, {"v": 1.1}, rtol=0.08) == ["/v: 1.0 != 1.1"]
    assert record_differences({"v": 0.0}, {"v": 1e-9}, atol=1e-9) == []
    assert record_differences({"v": 0.0}, {"v": 1e-9}) == ["/v: 0.0 != 1e-09"]
    assert record_differences({"v": math.nan}, {"v": math.nan}) == []
    assert record_differences({"v": math.nan}, {"v": 0.0}, atol=1.0) == ["/v: nan != 0.0"]


def test_ignore_may_be_a_predicate():
    a, b = {"time_a": 1, "keep": 1}, {"time_a": 2, "keep": 2}
    assert record_differences(a, b, ignore=lambda key: key.startswith("time")) == [
        "/keep: 1 != 2"]


def test_agreement_measures_each_number_by_hand():
    from egmlib.workflow.records import agreement

    a = {"corr": {"SR": 0.5, "AF": 0.2}, "n": [10, 20], "stopped": False, "wall_s": 1.0,
         "only_a": 3}
    b = {"corr": {"SR": 0.4, "AF": 0.2}, "n": [10, -20], "stopped": True, "wall_s": 9.0}
    r = agreement(a, b)
    # numbers at the same path in both: corr.AF, corr.SR, n[0], n[1] (wall_s is volatile)
    assert r["n_numbers"] == 4 and r["n_equal"] == 2
    assert [d["path"] for d in r["numbers"]] == ["n[1]", "corr.SR"]  # largest first
    assert r["numbers"][0]["relative"] == 2.0                 # |20 - (-20)| / 20
    assert math.isclose(r["numbers"][1]["relative"], 0.2)     # |0.5 - 0.4| / 0.5
    assert r["largest_at"] == "n[1]" and r["largest_relative"] == 2.0
    assert r["other"] == [{"path": "only_a", "a": 3, "b": "(absent)"},
                          {"path": "stopped", "a": False, "b": True}]
    same = agreement(a, a)
    assert same["n_equal"] == same["n_numbers"] == 5 and same["largest_at"] is None


def test_compare_folders_command(tmp_path, capsys):
    import json

    from egmlib.workflow.records import main

    for name, v in (("a", 1.0), ("b", 1.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "01_data.json").write_text(json.dumps(
            {"x": v, "provenance": {"machine": {"cpu": name}}}))
    out = tmp_path / "cmp.json"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "01_data", "--out", str(out)]) == 0
    assert "0 of 1 numbers equal; largest relative difference 0.33 at x" in capsys.readouterr().out
    rec = json.loads(out.read_text())["records"]["01_data"]
    assert rec["machine_a"] == {"cpu": "a"} and rec["machine_b"] == {"cpu": "b"}
    with pytest.raises(SystemExit):   # a record that is not there is named before any work
        main([str(tmp_path / "a"), str(tmp_path / "b"), "02_vae_s"])
    assert "names: no 02_vae_s in" in capsys.readouterr().err


HERE = {"arch": "x86_64", "cores": 2, "cpu": "Example", "torch_cpu": "AVX2", "bf16": False}
VERSIONS = {"numpy": "2.0", "scipy": "1.0", "torch": "2.13.0+cpu", "scikit-learn": "1.0"}


def _record(folder, name, record):
    import json

    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_machine_differences_name_each_difference_once(tmp_path):
    from egmlib.workflow.records import machine_differences

    same = tmp_path / "same"
    _record(same, "a", {"x": 1, "provenance": {"machine": dict(HERE, cpu="Other model"),
                                               "versions": VERSIONS}})
    assert machine_differences(same, HERE, VERSIONS) == []   # the model name is not the kind
    other = tmp_path / "other"
    made_on = dict(HERE, torch_cpu="AVX512", bf16=True)
    for name in ("a", "b"):   # a difference is named once, with the first record that shows it
        _record(other, name, {"provenance": {"machine": made_on,
                                             "versions": dict(VERSIONS, torch="2.12.0")}})
    assert machine_differences(other, HERE, VERSIONS) == [
        "torch_cpu: 'AVX512' there, 'AVX2' here (first in a.json)",
        "bf16: True there, False here (first in a.json)",
        "torch 2.12.0 there, 2.13.0+cpu here (first in a.json)"]
    # a record older than the machine field: the arithmetic its network trained in
    old = tmp_path / "old"
    _record(old, "05", {"history": {"settings": {"precision": "bfloat16"}},
                        "provenance": {"machine": "x86_64 2 cores",
                                       "params": {"precision": "bfloat16"}}})
    _record(old, "02", {"history": {"settings": {"precision": "float32"}},
                        "provenance": {"params": {"precision": "bfloat16"}}})  # asked, not made
    assert machine_differences(old, HERE, VERSIONS) == [
        "networks trained in bfloat16 there; this processor has no bfloat16 arithmetic "
        "(first in 05.json)"]
    assert machine_differences(old, dict(HERE, bf16=True), VERSIONS) == []
    # a record that trained no network (its provenance says so) is checked for versions only
    free = tmp_path / "free"
    _record(free, "recon_linear", {"history": {"settings": {"precision": "bfloat16"}},
                                   "provenance": {"machine": made_on, "versions": VERSIONS,
                                                  "kind_independent": "no network"}})
    assert machine_differences(free, HERE, VERSIONS) == []
    assert machine_differences(free, HERE, dict(VERSIONS, numpy="0.1")) == [
        f"numpy {VERSIONS['numpy']} there, 0.1 here (first in recon_linear.json)"]


def test_same_machine_command_on_the_committed_records(tmp_path, capsys):
    """The committed default records trained networks in bfloat16 (the 05 record's history):
    the check passes exactly where this processor has bfloat16 arithmetic."""
    from egmlib.core.runs import has_bf16, repo_root
    from egmlib.workflow.records import main

    committed = repo_root() / "results" / "default"
    assert main(["--same-machine", str(committed)]) == (0 if has_bf16() else 1)
    if not has_bf16():
        assert "this processor has no bfloat16 arithmetic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--same-machine", str(tmp_path / "absent")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(committed)])   # the comparison needs two folders and names


def test_note_other_machine_prints_the_differences(tmp_path, capsys):
    from egmlib.workflow.records import note_other_machine

    folder = tmp_path / "results"
    _record(folder, "06_sweep", {"provenance": {"versions": {"numpy": "0.1"}}})
    lines = note_other_machine(folder)
    assert len(lines) == 1 and lines[0].startswith("numpy 0.1 there")
    err = capsys.readouterr().err
    assert "was made on a machine of another kind" in err and lines[0] in err
    assert note_other_machine(tmp_path / "empty") == [] and capsys.readouterr().err == ""
