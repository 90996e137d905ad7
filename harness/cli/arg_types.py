"""Argument types for numeric command-line options: each refuses what its option cannot mean
(NaN, infinities, out-of-range values) so that argparse exits 2 naming the option and the
valid range, before any command runs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def probability(text: str) -> float:
    """A significance level: a finite number strictly between 0 and 1."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; give a number in (0, 1)")
    return value


def non_negative(text: str) -> float:
    """A tolerance: a finite number ≥ 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; give a number ≥ 0")
    return value


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer type for argparse: a whole number in [low, high] (no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            valid = f"[{low}, {high}]" if high is not None else f"≥ {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range; give a number {valid}")
        return value

    parse.__name__ = "whole number"
    return parse


positive = whole(1)
