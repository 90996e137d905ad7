"""Scoring a run: per-image records become metric rows (results.jsonl) and cell outcomes (the
ranking's paired tests). Pure functions of the records, so the rows of a unit are the same
whichever executor computed it, and a run's rows are in plan order."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.api.contracts import Metric, MetricValue, QualityMetric
from harness.api.registry import ATTACKS, DEFENSES, RECOGNIZERS
from harness.engine.results import CellResult, RecognizerResult, UnitResult
from harness.engine.suite import MethodConfig
from harness.runs.outcomes import CellOutcome, Outcomes


def metric_row(
    metric_name: str,
    metric: Metric,
    value: MetricValue,
    scope: str,
    defense: MethodConfig | None = None,
    attack: MethodConfig | None = None,
    recognizer: MethodConfig | None = None,
    white_box: bool = False,
) -> dict[str, Any]:
    """One line of results.jsonl (the schema is in docs/architecture.md)."""

    def clean(x: float | None) -> float | None:
        return None if x is None or not np.isfinite(x) else float(x)

    return {
        "scope": scope,
        "defense": defense.label if defense else None,
        "defense_name": defense.name if defense else None,
        "defense_params": defense.params if defense else None,
        "counter_attack": attack.label if attack else None,
        "recognizer": recognizer.label if recognizer else None,
        "metric": metric_name,
        "value": clean(value.value),
        "n": int(value.n),
        "ci_low": clean(value.ci_low),
        "ci_high": clean(value.ci_high),
        "ci_level": value.ci_level if value.ci_low is not None else None,
        "higher_is_better": metric.higher_is_better,
        "unit": metric.unit,
        **(_threat(defense, attack) if attack is not None and defense is not None else {}),
        **({"white_box": True} if white_box else {}),
        **({"note": value.note} if value.note else {}),
        **value.extra,
    }


def _threat(defense: MethodConfig, attack: MethodConfig) -> dict[str, Any]:
    """The pair's threat model (adaptive only against a defense the counter-attack targets,
    :meth:`~harness.api.contracts.CounterAttack.threat_against`), and whether the
    counter-attack retrains the recognizer."""
    cls = ATTACKS.get(attack.name)
    names = DEFENSES.get(defense.name).target_names(defense.name, defense.params)
    threat = cls.threat_against(attack.params, names)
    return {**threat, **({"retrains": True} if cls.adapts() else {})}


def _applies(metric: Metric, recognizer: MethodConfig | None) -> bool:
    kinds = metric.kinds
    return kinds is None or recognizer is None or RECOGNIZERS.get(recognizer.name).kind in kinds


def recognizer_rows(
    metrics: dict[str, Metric], results: list[RecognizerResult]
) -> list[dict[str, Any]]:
    """The ``recognizer``-scope rows (clean recognition, false detections)."""
    return [
        metric_row(name, metric, metric.compute(r.records), "recognizer", recognizer=r.cfg)
        for r in results
        for name, metric in metrics.items()
        if metric.scope == "recognizer" and _applies(metric, r.cfg)
    ]


def unit_rows(metrics: dict[str, Metric], unit: UnitResult) -> list[dict[str, Any]]:
    """A unit's rows: its defense's quality and latency, then each cell's."""
    if unit.records is None:
        return []
    rows = [
        metric_row(name, metric, metric.compute(unit.records), "defense", defense=unit.defense)
        for name, metric in metrics.items()
        if metric.scope == "defense"
        and (unit.reversible or not (isinstance(metric, QualityMetric) and metric.recovery))
    ]
    for cell in unit.cells:
        rows += _cell_rows(metrics, unit.defense, cell)
    return rows


def _cell_rows(
    metrics: dict[str, Metric], defense: MethodConfig, cell: CellResult
) -> list[dict[str, Any]]:
    return [
        metric_row(
            name,
            metric,
            metric.compute(cell.records),
            "cell",
            defense,
            cell.attack,
            cell.recognizer,
            cell.white_box,
        )
        for name, metric in metrics.items()
        if metric.scope == "cell" and _applies(metric, cell.recognizer)
    ]


def unit_outcomes(unit: UnitResult) -> Outcomes:
    """Per-image outcomes of a unit's cells, by (defense, counter-attack, recognizer) label."""
    return {
        (unit.defense.label, c.attack.label, c.recognizer.label): CellOutcome.from_records(
            c.records
        )
        for c in unit.cells
    }
