"""Per-image outcomes of a run's cells: what paired tests, per-image worst cases and the CI
gate are computed from.

A cell's outcome is, for each probe, whether the recognizer got it right when clean
(``eligible``: fooling rates are measured among those) and whether it was fooled after the
defense and the counter-attack. The runner holds them in memory; a run folder holds them as
``records/<defense>__<counter-attack>__<recognizer>.jsonl``, and each defense config's
per-image quality (SSIM, PSNR, …) as ``records/quality/<defense>.jsonl``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.api.records import CellRecords, DefenseRecords
from harness.core.files import read_jsonl

CellKey = tuple[str, str, str]  # (defense, counter-attack, recognizer) labels


def slug(text: str) -> str:
    """A label as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:80] or "x"


def cell_file_stem(defense: str, attack: str, recognizer: str) -> str:
    """The records file of one cell, without ``.jsonl``."""
    return f"{slug(defense)}__{slug(attack)}__{slug(recognizer)}"


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


def load_outcomes(run_dir: Path, rows: list[dict[str, Any]]) -> Outcomes:
    """The per-image outcomes of every cell of a run folder whose records file exists."""
    out: Outcomes = {}
    for key in cell_keys(rows):
        path = Path(run_dir) / "records" / f"{cell_file_stem(*key)}.jsonl"
        if path.is_file():
            out[key] = CellOutcome.from_rows(read_jsonl(path))
    return out


def quality_file(run_dir: Path, defense: str) -> Path:
    """The per-image quality file of one defense config."""
    return Path(run_dir) / "records" / "quality" / f"{slug(defense)}.jsonl"


def quality_rows(records: DefenseRecords) -> list[dict[str, Any]]:
    """JSON-ready per-image quality rows: ``{"id": …, "<metric>": value, …}``."""
    names = list(records.quality)

    def value(m: str, j: int) -> float | None:  # JSON has no NaN: an undefined value is null
        v = float(records.quality[m][j])
        return v if np.isfinite(v) else None

    return [{"id": i, **{m: value(m, j) for m in names}} for j, i in enumerate(records.ids)]


def load_quality(run_dir: Path, defenses: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """defense label → metric → {probe id: value}, for the defenses whose file exists."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for d in defenses:
        path = quality_file(run_dir, d)
        if not path.is_file():
            continue
        per_metric: dict[str, dict[str, float]] = {}
        for row in read_jsonl(path):
            for m, v in row.items():
                if m != "id":
                    per_metric.setdefault(m, {})[str(row["id"])] = math.nan if v is None else v
        out[d] = per_metric
    return out


THUMBNAIL_SIDE = 128  # the longest side of a sample image in a run folder


def write_samples(folder: Path, images: np.ndarray) -> None:
    """Sample images as ``folder/<k>.png``, downscaled to at most THUMBNAIL_SIDE pixels."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        img = Image.fromarray(np.ascontiguousarray(image))
        if max(img.size) > THUMBNAIL_SIDE:
            img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        tmp = folder / f".{k}.png.tmp"
        img.save(tmp, format="PNG")
        tmp.replace(folder / f"{k}.png")
