"""``argparse`` value types shared by the project's command lines (data builders, ``gadms``).

Each takes the argument's text and returns the value, or raises ``argparse.ArgumentTypeError`` with
a message that names what was expected (argparse prints it and exits with status 2).
"""
from __future__ import annotations

import argparse
from typing import Callable, TypeVar

__all__ = ["non_negative_int", "positive_int", "rate"]

_T = TypeVar("_T", int, float)


def _checked(text: str, convert: Callable[[str], _T], expected: str, ok: Callable[[_T], bool]) -> _T:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _checked(text, int, "a positive integer", lambda value: value >= 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _checked(text, int, "a non-negative integer", lambda value: value >= 0)


def rate(text: str) -> float:
    """A number in [0, 1]."""
    return _checked(text, float, "a number in [0, 1]", lambda value: 0.0 <= value <= 1.0)
