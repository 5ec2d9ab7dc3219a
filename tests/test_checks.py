"""The shared argument checks (egmlib.core.checks)."""

import numpy as np
import pytest

from egmlib.core.checks import check_int, check_ints


def test_check_int_accepts_python_and_numpy_ints_and_returns_python_int() -> None:
    assert check_int("n", 3, 1) == 3
    value = check_int("n", np.int64(7), 7)
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("value", [True, 2.0, "3", None, np.float32(4)])
def test_check_int_rejects_non_integers(value: object) -> None:
    with pytest.raises(ValueError, match=r"^epochs: got .*; allowed: an int >= 1$"):
        check_int("epochs", value, 1)


def test_check_int_rejects_below_the_bound_and_names_the_bound() -> None:
    with pytest.raises(ValueError, match=r"^k: got -1; allowed: an int >= 0$"):
        check_int("k", -1, 0)


def test_check_ints_reports_the_first_failing_argument() -> None:
    check_ints(("a", 1, 1), ("b", 0, 0))
    with pytest.raises(ValueError, match=r"^b: got 0; allowed: an int >= 1$"):
        check_ints(("a", 1, 1), ("b", 0, 1), ("c", -5, 0))
