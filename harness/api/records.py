"""Per-image records: what metrics aggregate and what paired tests need later."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CellRecords:
    """Outcomes of one (defense config, counter-attack, recognizer) cell, one entry per probe.

    ``recognized_*``: the platform succeeded (right identity / class, or a face found for a
    detector). ``detected_*``: the recognizer returned anything but −1.
    """

    ids: list[str]
    labels: np.ndarray
    pred_clean: np.ndarray
    pred_protected: np.ndarray
    recognized_clean: np.ndarray
    recognized_protected: np.ndarray
    recognizer_kind: str = "classifier"

    @property
    def detected_protected(self) -> np.ndarray:
        return self.pred_protected != -1

    def rows(self) -> list[dict[str, Any]]:
        """JSON-ready per-image rows."""
        return [
            {
                "id": i,
                "label": int(lab),
                "pred_clean": int(pc),
                "pred_protected": int(pp),
                "recognized_clean": bool(rc),
                "recognized_protected": bool(rp),
            }
            for i, lab, pc, pp, rc, rp in zip(
                self.ids,
                self.labels,
                self.pred_clean,
                self.pred_protected,
                self.recognized_clean,
                self.recognized_protected,
                strict=False,
            )
        ]


@dataclass
class DefenseRecords:
    """Per-image quality values and the protect timing of one defense config.

    ``timing`` (empty when no metric needs it): ``ms_per_image`` per timed batch,
    ``batch_images``, ``measured_at`` (UTC), ``host`` (what measured it) and ``cached``
    (whether this run reused a timing measured earlier on the same host).
    """

    ids: list[str]
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)
    fit_report: dict[str, float] = field(default_factory=dict)


@dataclass
class RecognizerRecords:
    """Clean behaviour of one recognizer: outcomes on clean probes and on negatives."""

    recognized_clean: np.ndarray
    detected_negatives: np.ndarray | None
    recognizer_kind: str = "classifier"
