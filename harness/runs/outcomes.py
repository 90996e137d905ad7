"""Per-image outcomes of a run's cells: what paired tests, per-image worst cases and the CI
gate are computed from.

A cell's outcome is, for each probe, whether the recognizer got it right when clean
(``eligible``: fooling rates are measured among those) and whether it was fooled after the
defense and the counter-attack. The runner holds them in memory; a run folder holds them, and
each defense config's per-image quality (SSIM, PSNR, …), as JSON lines
(:class:`harness.runs.folder.RunFolder` reads and writes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.api.records import CellRecords, DefenseRecords

CellKey = tuple[str, str, str]  # (defense, counter-attack, recognizer) labels


@dataclass(frozen=True)
class CellOutcome:
    """Per-probe outcomes of one cell, in probe order."""

    ids: tuple[str, ...]
    eligible: np.ndarray  # bool: recognised when clean
    fooled: np.ndarray  # bool: eligible and not recognised after protection

    @classmethod
    def from_records(cls, records: CellRecords) -> CellOutcome:
        eligible = np.asarray(records.recognized_clean, dtype=bool)
        fooled = eligible & ~np.asarray(records.recognized_protected, dtype=bool)
        return cls(tuple(records.ids), eligible, fooled)

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> CellOutcome:
        eligible = np.array([bool(r["recognized_clean"]) for r in rows], dtype=bool)
        recognized = np.array([bool(r["recognized_protected"]) for r in rows], dtype=bool)
        return cls(tuple(str(r["id"]) for r in rows), eligible, eligible & ~recognized)


Outcomes = dict[CellKey, CellOutcome]


def cell_keys(rows: list[dict[str, Any]]) -> list[CellKey]:
    """The (defense, counter-attack, recognizer) of every cell that has metric rows."""
    seen: dict[CellKey, None] = {}
    for r in rows:
        if r["scope"] == "cell":
            seen.setdefault((r["defense"], r["counter_attack"], r["recognizer"]), None)
    return list(seen)


def quality_rows(records: DefenseRecords) -> list[dict[str, Any]]:
    """JSON-ready per-image quality rows: ``{"id": …, "<metric>": value, …}``."""
    names = list(records.quality)

    def value(m: str, j: int) -> float | None:  # JSON has no NaN: an undefined value is null
        v = float(records.quality[m][j])
        return v if np.isfinite(v) else None

    return [{"id": i, **{m: value(m, j) for m in names}} for j, i in enumerate(records.ids)]
