"""One counter-attack on one defense config's protected probes, with every recognizer: its
cells. Cached cells are read; for the others the counter-attacked images are made once, batch
by batch (:mod:`harness.engine.streaming`), and each batch goes to every recognizer still to
predict. An adaptive counter-attack adapts each recognizer on the protected fit split first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from harness.api.contracts import Context, CounterAttack, ImageSet, Recognizer
from harness.api.records import CellRecords
from harness.api.registry import ATTACKS
from harness.engine.cache_keys import cell_parts, countered_sample_parts
from harness.engine.protect import Defended, uploaded
from harness.engine.results import CellResult, UnitResult, failure
from harness.engine.setup import FittedRecognizer, Prepared
from harness.engine.streaming import Stream, Streamed, countered_batches, on_host_thread
from harness.engine.suite import MethodConfig, Suite
from harness.runs.folder import cell_file_stem, slug


class AttackCells:
    """The cells of the counter-attack ``acfg`` on the defense config ``dcfg``, which protected
    the probes as ``defended``."""

    def __init__(
        self,
        prepared: Prepared,
        suite: Suite,
        ctx: Context,
        dcfg: MethodConfig,
        acfg: MethodConfig,
        defended: Defended,
    ) -> None:
        self.prepared, self.suite, self.ctx = prepared, suite, ctx
        self.dcfg, self.acfg = dcfg, acfg
        self.defense = defended.defense
        self.protected, self.protected_key = defended.protected, defended.protected_key
        self.attack: CounterAttack = ATTACKS.create(acfg.name, acfg.params)
        self.fitted: list[FittedRecognizer] = prepared.fitted

    def name(self, fr: FittedRecognizer | None = None) -> str:
        """The failure name of the counter-attack on this defense config, or of one cell."""
        name = f"{self.dcfg.label} × {self.acfg.label}"
        return name if fr is None else f"{name} × {fr.cfg.label}"

    def run(self, result: UnitResult, on_cell: Callable[[], None] | None) -> None:
        """Append each cell to ``result`` in recognizer order (calling ``on_cell`` after each),
        the cells that do not apply to its skipped, and every failure to its failures."""
        reasons = [fr.not_applicable(self.attack) for fr in self.fitted]
        applies = not all(reasons)
        keys, protected_fit = self._cell_keys(applies)
        predictions, errors, pending = self._read_or_wrap(reasons, keys, protected_fit)
        idx = self.prepared.sample_index
        samples_parts = countered_sample_parts(self.protected_key, self.attack, idx)
        samples = self._cached_samples(samples_parts) if len(idx) and applies else None
        attack_error = None
        if pending or (samples is None and len(idx) and applies):
            streamed = self._compute(pending, keys, samples_parts)
            predictions.update(streamed.predictions)
            errors.update(streamed.errors)
            samples, attack_error = streamed.samples, streamed.attack_error
        self._append(result, reasons, predictions, errors, on_cell)
        if attack_error is not None:
            result.failures.append(attack_error)
        elif samples is not None:
            result.samples[f"samples/{slug(self.dcfg.label)}/{slug(self.acfg.label)}"] = samples

    def _cell_keys(self, applies: bool) -> tuple[list[dict[str, Any]], ImageSet | None]:
        """Every recognizer's cell key, and the protected fit split an adaptive counter-attack
        adapts on (made only if some cell uses it)."""
        protected_fit, adapted_on = None, None
        if self.attack.adapts() and applies:
            protected_fit, adapted_on = self._protected_fit()
        keys = [
            cell_parts(self.protected_key, self.attack, fr.identity, adapted_on)
            for fr in self.fitted
        ]
        return keys, protected_fit

    def _protected_fit(self) -> tuple[ImageSet, str]:
        """The split's fit images after the defense and the upload, and their identity."""
        fit = self.prepared.split.fit
        images, identity = uploaded(
            self.defense, fit, "fit", self.prepared.fingerprint, self.suite.upload, self.ctx
        )
        return ImageSet(images.whole(), fit.labels, fit.ids), identity

    def _cached_samples(self, parts: dict[str, Any]) -> np.ndarray | None:
        found = self.ctx.cache.cached_arrays("countered-samples", parts)
        return None if found is None else found["images"]

    def _read_or_wrap(
        self,
        reasons: list[str | None],
        keys: list[dict[str, Any]],
        protected_fit: ImageSet | None,
    ) -> tuple[dict[int, np.ndarray], dict[int, dict[str, str]], dict[int, Recognizer]]:
        """The cached predictions by recognizer index; the recognizers that failed to adapt or
        wrap; and the wrapped recognizers still to predict."""
        predictions: dict[int, np.ndarray] = {}
        errors: dict[int, dict[str, str]] = {}
        pending: dict[int, Recognizer] = {}
        for i, (fr, reason) in enumerate(zip(self.fitted, reasons, strict=True)):
            if reason:
                continue
            stored = self.ctx.cache.cached_arrays("cell", keys[i])
            if stored is not None:
                predictions[i] = stored["pred"]
                continue
            try:
                model = fr.model
                if protected_fit is not None:
                    model = self.attack.adapt(model, protected_fit, self.ctx)
                pending[i] = self.attack.wrap(model)
            except Exception as exc:  # this recognizer failed: one cell
                errors[i] = failure("cell", self.name(fr), exc)
        return predictions, errors, pending

    def _compute(
        self,
        pending: dict[int, Recognizer],
        keys: list[dict[str, Any]],
        samples_parts: dict[str, Any],
    ) -> Streamed:
        """One pass over the counter-attacked probes for the ``pending`` recognizers (and the
        report's sample rows); what it made is stored in the cache."""
        device = self.ctx.device
        host = {i: m for i, m in pending.items() if on_host_thread(device, self.fitted[i].unfitted)}
        main = {i: m for i, m in pending.items() if i not in host}
        names = {i: self.name(self.fitted[i]) for i in pending}
        stream = Stream(self.ctx, self.suite.precision, self.prepared.sample_index, names)
        batches = countered_batches(self.attack, self.protected, self.ctx)
        streamed = stream.run(batches, main, host, self.name())
        for i, pred in streamed.predictions.items():
            self.ctx.cache.store_arrays("cell", keys[i], {"pred": pred})
        if streamed.samples is not None:
            images = {"images": streamed.samples}
            self.ctx.cache.store_arrays("countered-samples", samples_parts, images)
        return streamed

    def _append(
        self,
        result: UnitResult,
        reasons: list[str | None],
        predictions: dict[int, np.ndarray],
        errors: dict[int, dict[str, str]],
        on_cell: Callable[[], None] | None,
    ) -> None:
        surrogates = self.defense.surrogate_weights()
        for i, (fr, reason) in enumerate(zip(self.fitted, reasons, strict=True)):
            if reason:  # e.g. retraining a detector: no cell, listed once
                name = f"{self.acfg.label} × {fr.cfg.label}"
                entry = {"scope": "cells", "name": name, "why": reason}
                if entry not in result.skipped:
                    result.skipped.append(entry)
            elif i in errors:
                result.failures.append(errors[i])
            elif i in predictions:
                white_box = bool(surrogates) and fr.weights_identity() in surrogates
                result.cells.append(self._cell(fr, predictions[i], white_box))
            # else: the counter-attack failed before this cell was made; counted all the same
            if on_cell:
                on_cell()

    def _cell(self, fr: FittedRecognizer, predicted: np.ndarray, white_box: bool) -> CellResult:
        probe = self.prepared.split.probe
        rec = fr.unfitted
        reference = rec.reference_labels(probe.labels, fr.clean)
        records = CellRecords(
            probe.ids,
            probe.labels,
            fr.clean,
            predicted,
            rec.recognized(fr.clean, reference),
            rec.recognized(predicted, reference),
            fr.kind,
        )
        stem = cell_file_stem(self.dcfg.label, self.acfg.label, fr.cfg.label)
        return CellResult(self.acfg, fr.cfg, stem, records, white_box)
