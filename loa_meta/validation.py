"""Uniform argument validation with messages that name the argument and what was expected.

Every public entry point of loa-meta validates through these helpers so that errors read alike:
``Argument `ratio` must be in (0, 1], but received: 1.5``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence


def _num(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Argument `{name}` must be a number, but received: {value!r}") from None
    if math.isnan(v):
        raise ValueError(f"Argument `{name}` must be a number, but received: NaN")
    return v


def check_in_range(
    value: Any,
    name: str,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``float(value)`` if it lies in the interval, else raise ValueError naming `name`."""
    v = _num(value, name)
    ok = True
    if low is not None:
        ok &= v >= low if low_inclusive else v > low
    if high is not None:
        ok &= v <= high if high_inclusive else v < high
    if not ok:
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        interval = f"{'[' if low_inclusive and low is not None else '('}{lo}, {hi}{']' if high_inclusive and high is not None else ')'}"
        raise ValueError(f"Argument `{name}` must be in {interval}, but received: {value!r}")
    return v


def check_positive(value: Any, name: str) -> float:
    return check_in_range(value, name, low=0.0, low_inclusive=False)


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise ValueError(f"Argument `{name}` must be an integer >= {minimum}, but received: {value!r}") from None
    if int(value) < minimum:
        raise ValueError(f"Argument `{name}` must be an integer >= {minimum}, but received: {value!r}")
    return int(value)


def check_one_of(value: Any, name: str, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"Argument `{name}` must be one of {choices}, but received: {value!r}")
    return value


def check_shape(shape: Sequence[int], name: str, rank: int) -> tuple:
    """Validate a static shape of the given rank with positive entries."""
    try:
        ints = tuple(int(s) for s in shape)
        integral = all(not isinstance(s, (bool, str, bytes)) and float(s) == i for s, i in zip(shape, ints))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"Argument `{name}` must be a shape of {rank} positive integers, but received: {shape!r}") from None
    if not integral:  # 12.5 or True are not sizes
        raise ValueError(f"Argument `{name}` must be a shape of {rank} positive integers, but received: {shape!r}")
    shape = ints
    if len(shape) != rank or any(s <= 0 for s in shape):
        raise ValueError(f"Argument `{name}` must be a shape of {rank} positive integers, but received: {shape!r}")
    return shape
