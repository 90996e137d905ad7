"""What a run has finished so far, kept in plan order whatever order its units finish in
(docs/architecture.md, "How a run flows"): the rows, outcomes, failures, skips and cache
counts that :mod:`harness.engine.recorder` writes after every unit."""

from __future__ import annotations

from typing import Any

from harness.api.registry import METRICS
from harness.engine.execute import RecognizerResult, UnitResult, UnitRunner, missing
from harness.engine.score import recognizer_rows, unit_outcomes, unit_rows
from harness.engine.suite import Suite
from harness.runs.manifest import CacheCounts
from harness.runs.outcomes import Outcomes


class RunState:
    """The finished part of a run, in plan order."""

    def __init__(self, suite: Suite, runner: UnitRunner) -> None:
        self.metrics = runner.metrics
        self.recognizer_rows: list[dict[str, Any]] = []
        self.units: dict[int, UnitResult] = {}
        self.unit_rows: dict[int, list[dict[str, Any]]] = {}
        self.unit_outcomes: dict[int, Outcomes] = {}
        self.failures: list[dict[str, str]] = []  # set-up and run failures (units keep theirs)
        self.skipped: list[dict[str, Any]] = []
        self.cache = CacheCounts(enabled=runner.cache.enabled)
        for cfg in suite.metrics:
            lacking = missing(METRICS.get(cfg.name), cfg.params)
            if lacking:  # its rows say so too; listed once with what to add
                self.skipped.append({"scope": "metric", "name": cfg.label, "needs": lacking})

    def prepared(self, results: list[RecognizerResult], failures: list[dict[str, str]]) -> None:
        self.recognizer_rows = recognizer_rows(self.metrics, results)
        self.failures += failures

    def count_cache(self, runner: UnitRunner) -> None:
        self._count(runner.cache.hits, runner.cache.misses, runner.cache.damaged)

    def add(self, unit: UnitResult) -> None:
        self.units[unit.index] = unit
        self.unit_rows[unit.index] = unit_rows(self.metrics, unit)
        self.unit_outcomes[unit.index] = unit_outcomes(unit)
        self._count(unit.cache_hits, unit.cache_misses, unit.cache_damaged)

    def _count(self, hits: int, misses: int, damaged: list[str]) -> None:
        self.cache.hits += hits
        self.cache.misses += misses
        self.cache.damaged_and_recomputed += damaged

    def _in_order(self) -> list[UnitResult]:
        return [self.units[i] for i in sorted(self.units)]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.recognizer_rows + [r for i in sorted(self.unit_rows) for r in self.unit_rows[i]]

    @property
    def outcomes(self) -> Outcomes:
        return {k: v for i in sorted(self.unit_outcomes) for k, v in self.unit_outcomes[i].items()}

    def all_failures(self) -> list[dict[str, str]]:
        return self.failures + [f for u in self._in_order() for f in u.failures]

    def all_skipped(self) -> list[dict[str, Any]]:
        out = list(self.skipped)
        for u in self._in_order():
            out += [s for s in u.skipped if s not in out]
        return out

    def timings(self, runner: UnitRunner) -> dict[str, float]:
        return {
            **runner.timings,
            **{f"defense:{u.defense.label}": u.seconds for u in self._in_order()},
        }
