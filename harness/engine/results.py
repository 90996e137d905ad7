"""What running a unit produces: plain data that travels back from a worker and that
:mod:`harness.engine.score` turns into metric rows; and how a failure or a skip is recorded."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.api.method import Method
from harness.api.records import CellRecords, DefenseRecords, RecognizerRecords
from harness.engine.suite import MethodConfig


def missing(cls: type[Method], params: dict[str, Any]) -> list[str]:
    """What a method class says it lacks on this machine for ``params`` (weights, files)."""
    return list(cls.missing(params))


def failure(scope: str, name: str, exc: BaseException) -> dict[str, str]:
    """A stage that failed: what, which one, the error and its traceback."""
    return {
        "scope": scope,
        "name": name,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
    }


@dataclass
class RecognizerResult:
    """One recognizer's clean behaviour (its ``recognizer``-scope metrics come from it)."""

    cfg: MethodConfig
    records: RecognizerRecords


@dataclass
class CellResult:
    """One cell's per-image records, and whether its recognizer judged the defense white-box."""

    attack: MethodConfig
    recognizer: MethodConfig
    stem: str
    records: CellRecords
    white_box: bool


@dataclass
class UnitResult:
    """Everything one work unit produced; plain data, so it travels back from a worker."""

    index: int
    defense: MethodConfig
    reversible: bool = False
    records: DefenseRecords | None = None  # None when the defense config was skipped or failed
    cells: list[CellResult] = field(default_factory=list)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_damaged: list[str] = field(default_factory=list)
