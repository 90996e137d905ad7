"""Executing a run's work units: the records of one defense config's cells (docs/architecture.md,
"How a run flows").

dataset → split; recognizers (fitted only when a prediction is not cached); per defense config:
fit, protect the probes (timed), quantise like an upload, measure quality; per counter-attack:
fit on the protected pool, transform; per recognizer: predict. Everything that costs time is
cached by content hash, so re-running a suite after an interruption or with one more
counter-attack recomputes only what is new, and a run whose cells are all cached fits no model.

A :class:`UnitRunner` holds what every unit shares (the split, the recognizers); it runs in the
main process or, one per worker process, on a Dask worker. What it returns is plain data that
:mod:`harness.engine.score` turns into metric rows. The steps are modules of their own: set-up
(:mod:`~harness.engine.setup`), protection (:mod:`~harness.engine.protect`), quality
(:mod:`~harness.engine.quality`), latency (:mod:`~harness.engine.latency`), the report's samples
(:mod:`~harness.engine.samples`) and the counter-attack cells (:mod:`~harness.engine.cells`,
:mod:`~harness.engine.streaming`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from harness.api.contracts import Context, DataSplit, Defense, Metric
from harness.api.records import DefenseRecords
from harness.api.registry import DEFENSES, METRICS
from harness.core.cache import Cache
from harness.core.keys import Keyring
from harness.engine.cells import AttackCells
from harness.engine.latency import (
    SMOKE_TIMING,
    TIMED_BATCHES,
    TIMING_BUDGET_S,
    TIMING_PROTOCOL,
    protect_timing,
    timing_protocol,
)
from harness.engine.plan import WorkUnit
from harness.engine.protect import Defended, uploaded
from harness.engine.quality import quality_values
from harness.engine.results import (
    CellResult,
    RecognizerResult,
    UnitResult,
    failure,
    missing,
)
from harness.engine.samples import SAMPLE_IMAGES, defense_samples
from harness.engine.setup import (
    FittedRecognizer,
    LazyRecognizers,
    Prepared,
    load,
    set_up_recognizers,
)
from harness.engine.shards import ShardedImages
from harness.engine.streaming import HOST_BATCHES_AHEAD
from harness.engine.suite import MethodConfig, Suite

__all__ = [
    "HOST_BATCHES_AHEAD",
    "SAMPLE_IMAGES",
    "SMOKE_TIMING",
    "TIMED_BATCHES",
    "TIMING_BUDGET_S",
    "TIMING_PROTOCOL",
    "CellResult",
    "FittedRecognizer",
    "LazyRecognizers",
    "RecognizerResult",
    "UnitResult",
    "UnitRunner",
    "failure",
    "missing",
    "timing_protocol",
]


def _tick(on_cell: Callable[[], None] | None, n: int) -> None:
    for _ in range(n if on_cell else 0):
        on_cell()  # type: ignore[misc]


class UnitRunner:
    """Runs work units of one suite on this process's device.

    :meth:`prepare` loads the split and sets the recognizers up; then :meth:`run_unit` runs any
    unit, in any order: a unit's records do not depend on which units ran before it here."""

    def __init__(
        self,
        suite: Suite,
        device: torch.device,
        keyring: Keyring,
        cache_root: Any = None,
        use_cache: bool = True,
    ) -> None:
        self.suite = suite
        self.device = device
        self.cache = Cache(cache_root, use_cache, device)
        self.keyring = keyring
        self.ctx = Context(device, suite.seed, self.cache, suite.batch_size, keyring)
        self.metrics: dict[str, Metric] = {}
        for cfg in suite.metrics:
            metric = METRICS.create(cfg.name, cfg.params)
            metric.key = cfg.label
            self.metrics[cfg.label] = metric
        self.prepared: Prepared | None = None
        self.timings: dict[str, float] = {}

    # What the set-up made, for the runner's manifest (empty until :meth:`prepare`).
    @property
    def split(self) -> DataSplit | None:
        return self.prepared.split if self.prepared else None

    @property
    def split_info(self) -> dict[str, Any]:
        return self.prepared.info if self.prepared else {}

    @property
    def sample_index(self) -> np.ndarray:
        return self.prepared.sample_index if self.prepared else np.zeros(0, dtype=np.int64)

    @property
    def fitted(self) -> list[FittedRecognizer]:
        return self.prepared.fitted if self.prepared else []

    def prepare(self) -> tuple[list[RecognizerResult], list[dict[str, str]]]:
        """Load the split, draw the report's sample probes, set up every recognizer with its
        clean predictions (cached). Returns the recognizers' clean records and the failures."""
        self.prepared = load(self.suite, self.ctx, self.timings)
        return set_up_recognizers(self.prepared, self.suite, self.ctx, self.timings)

    def run_unit(self, unit: WorkUnit, on_cell: Callable[[], None] | None = None) -> UnitResult:
        """Every cell of one defense config. A failure is recorded in the result, never raised:
        one broken defense or counter-attack must not lose the other cells."""
        assert self.prepared is not None, "prepare() first"
        t0 = time.perf_counter()
        hits, misses, damaged = self.cache.hits, self.cache.misses, len(self.cache.damaged)
        result = UnitResult(unit.index, unit.defense)
        n_fitted, n_attacks = len(self.prepared.fitted), len(unit.counter_attacks)
        _tick(on_cell, n_attacks * (len(self.suite.recognizers) - n_fitted))
        defended = self._defend(unit.defense, result)
        if defended is None:
            _tick(on_cell, n_attacks * n_fitted)
        else:
            for acfg in unit.counter_attacks:
                self._attack(unit.defense, defended, acfg, result, on_cell)
        result.seconds = time.perf_counter() - t0
        result.cache_hits = self.cache.hits - hits
        result.cache_misses = self.cache.misses - misses
        result.cache_damaged = self.cache.damaged[damaged:]
        return result

    def _defend(self, dcfg: MethodConfig, result: UnitResult) -> Defended | None:
        """The defense config's protected probes, its records and samples in ``result``; None
        when it was skipped (lacking weights here: not a failure) or failed (recorded)."""
        assert self.prepared is not None
        lacking = missing(DEFENSES.get(dcfg.name), dcfg.params)
        if lacking:
            result.skipped.append({"scope": "defense", "name": dcfg.label, "needs": lacking})
            return None
        try:
            defense: Defense = DEFENSES.create(dcfg.name, dcfg.params)
            protected, records, protected_key = self._protect(defense, self.prepared)
            result.reversible = defense.reversible
            probe_ids = self.prepared.split.probe.ids
            idx = self.prepared.sample_index
            result.samples.update(
                defense_samples(
                    dcfg.label, defense, protected, protected_key, idx, probe_ids, self.ctx
                )
            )
            result.records = records
        except Exception as exc:
            result.failures.append(failure("defense", dcfg.label, exc))
            return None
        return Defended(defense, protected, protected_key)

    def _protect(
        self, defense: Defense, prepared: Prepared
    ) -> tuple[ShardedImages, DefenseRecords, str]:
        """The uploaded protected probes (cached), their quality and their protect latency."""
        split, ctx = prepared.split, self.ctx
        defense.fit(split.fit, ctx)  # defenses cache expensive fits themselves
        protected, key = uploaded(
            defense, split.probe, "probe", prepared.fingerprint, self.suite.upload, ctx
        )
        # Quality (recovery included) and the fit report come first: timing protects fresh ids,
        # which may add to what the defense remembers (UEP's face boxes per id).
        records = DefenseRecords(
            ids=split.probe.ids,
            quality=quality_values(self.metrics, defense, split.probe, protected, key, ctx),
            image_size=tuple(split.probe.images.shape[1:3]),
            fit_report=defense.fit_report(),
        )
        if any(m.scope == "defense" and m.needs_timing for m in self.metrics.values()):
            records.timing = protect_timing(defense, split.probe, key, ctx, self.suite.smoke)
        return protected, records, key

    def _attack(
        self,
        dcfg: MethodConfig,
        defended: Defended,
        acfg: MethodConfig,
        result: UnitResult,
        on_cell: Callable[[], None] | None,
    ) -> None:
        """One counter-attack's cells into ``result``; if it fails outright, its failure, and
        its cells are counted all the same."""
        assert self.prepared is not None
        done = len(result.cells)
        try:
            cells = AttackCells(self.prepared, self.suite, self.ctx, dcfg, acfg, defended)
            cells.run(result, on_cell)
        except Exception as exc:
            result.failures.append(failure("counter-attack", f"{dcfg.label} × {acfg.label}", exc))
            _tick(on_cell, len(self.prepared.fitted) - (len(result.cells) - done))
