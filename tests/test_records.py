"""egmlib.workflow.records: comparing two result records."""

from __future__ import annotations

import math

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
