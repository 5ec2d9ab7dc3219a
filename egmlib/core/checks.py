"""Argument checks shared by egmlib's entry points.

Every public function that takes a count (epochs, windows, harmonics, ...) checks it before any
work, and the message names the argument and what it allows, in the form the notebooks'
parameter validation uses (:mod:`egmlib.core.params`): ``"epochs: got 0; allowed: an int >= 1"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as a Python int when it is an integer (numpy integers included, bool not) of
    at least ``low``; otherwise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}: got {value!r}; allowed: an int >= {low}")
    return int(value)


def check_ints(*bounds: tuple[str, Any, int]) -> None:
    """:func:`check_int` for each ``(name, value, low)``, in order (the first failure raises)."""
    for name, value, low in bounds:
        check_int(name, value, low)
