"""Executing a run's work units: the records of one defense config's cells (docs/architecture.md,
"How a run flows").

dataset → split; recognizers (fitted only when a prediction is not cached); per defense config:
fit, protect the probes (timed), quantise like an upload, measure quality; per counter-attack:
fit on the protected pool, transform; per recognizer: predict. Everything that costs time is
cached by content hash, so re-running a suite after an interruption or with one more
counter-attack recomputes only what is new, and a run whose cells are all cached fits no model.

A :class:`UnitRunner` holds what every unit shares (the split, the recognizers); it runs in the
main process or, one per worker process, on a Dask worker. What it returns is plain data that
:mod:`harness.engine.score` turns into metric rows.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from harness.api.contracts import (
    Context,
    CounterAttack,
    DataSplit,
    Defense,
    ImageSet,
    Metric,
    QualityMetric,
    Recognizer,
    SuiteRecognizer,
)
from harness.api.records import CellRecords, DefenseRecords, RecognizerRecords
from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS
from harness.core.cache import Cache, content_key
from harness.core.errors import PrivbenchError
from harness.core.keys import Keyring
from harness.core.provenance import host_identity
from harness.datasets.builtin import describe_protocol
from harness.engine.cache_keys import (
    cell_parts,
    method_identity,
    protected_parts,
    recognizer_identity,
    timing_parts,
)
from harness.engine.plan import WorkUnit
from harness.engine.shards import SHARD_BATCHES, ShardedImages
from harness.engine.suite import MethodConfig, Suite
from harness.runs.folder import cell_file_stem, slug
from harness.toolkit.imaging import jpeg_roundtrip, quantise, simulate_upload, to_tensor, to_uint8

SAMPLE_IMAGES = 4  # seeded sample probes whose images the report shows
# How many counter-attacked batches a CPU-bound recognizer of a GPU run may lag behind
# (each waiting batch stays on the GPU).
HOST_BATCHES_AHEAD = 2
# Latency: one warm-up batch, then fresh batches until this many are timed (6 batches give an
# order-statistic interval of at least 95% coverage) or the budget is spent (at least one).
TIMED_BATCHES = 6
TIMING_BUDGET_S = 10.0
TIMING_PROTOCOL = {
    "version": 2,
    "warmup_batches": 1,
    "timed_batches": TIMED_BATCHES,
    "budget_s": TIMING_BUDGET_S,
    "ids": "fresh per batch",
    "cache": "disabled inside the timer",
}
# --smoke: two timed batches of two images still take every step of the timing path
SMOKE_TIMING = {"timed_batches": 2, "budget_s": 2.0, "batch_images": 2}


def timing_protocol(smoke: bool = False) -> dict[str, Any]:
    """The latency protocol of a run (a smoke run times two batches only)."""
    return {**TIMING_PROTOCOL, **SMOKE_TIMING} if smoke else TIMING_PROTOCOL


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def missing(cls: Any, params: dict[str, Any]) -> list[str]:
    """What a method class says it lacks on this machine for ``params`` (weights, files)."""
    check = getattr(cls, "missing", None)
    return list(check(params)) if callable(check) else []


def failure(scope: str, name: str, exc: BaseException) -> dict[str, str]:
    """A stage that failed: what, which one, the error and its traceback."""
    return {
        "scope": scope,
        "name": name,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
    }


class CounterAttackFailed(Exception):
    """Raised inside a cell's computation when the counter-attack itself failed, so that the
    failure is recorded against the counter-attack and not against the recognizer."""


class FittedRecognizer:
    """A recognizer of the suite: its clean predictions, its cache identity, and the model,
    fitted on the split the first time something needs it (a cached run never does)."""

    def __init__(self, cfg: MethodConfig, model: Recognizer, identity: str, fit: Callable) -> None:
        self.cfg = cfg
        self.identity = identity
        self.kind = model.kind
        self.clean = np.zeros(0, dtype=np.int64)
        self._model = model
        self._fit = fit
        self._fitted = False

    @property
    def unfitted(self) -> Recognizer:
        """The model for what does not depend on its fit (``recognized``, ``reference_labels``)."""
        return self._model

    @property
    def model(self) -> Recognizer:
        if not self._fitted:
            self._fit(self._model)
            self._fitted = True
        return self._model

    def weights_identity(self) -> str | None:
        """:meth:`Recognizer.weights_identity`, fitting only a model whose identity is its fit."""
        if type(self._model).weights_identity is Recognizer.weights_identity:
            return self._model.weights_identity()
        return self.model.weights_identity()

    def not_applicable(self, attack: CounterAttack) -> str | None:
        if type(attack).not_applicable is CounterAttack.not_applicable:
            return None
        return attack.not_applicable(self.model)


class LazyRecognizers(Mapping[str, SuiteRecognizer]):
    """``Context.recognizers``: a defense that names a recognizer gets it fitted."""

    def __init__(self, fitted: list[FittedRecognizer]) -> None:
        self._by_label = {fr.cfg.label: fr for fr in fitted}

    def __getitem__(self, label: str) -> SuiteRecognizer:
        fr = self._by_label[label]
        return SuiteRecognizer(fr.model, fr.identity)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_label)

    def __len__(self) -> int:
        return len(self._by_label)


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
        self.split: DataSplit | None = None
        self.split_info: dict[str, Any] = {}
        self.sample_index = np.zeros(0, dtype=np.int64)
        self.fitted: list[FittedRecognizer] = []
        self.timings: dict[str, float] = {}

    # -- batching helpers -------------------------------------------------------------------
    def _batches(self, images: np.ndarray | torch.Tensor) -> list[slice]:
        b = self.suite.batch_size
        return [slice(i, min(i + b, len(images))) for i in range(0, len(images), b)]

    def _predict(self, recognizer: Recognizer, images: np.ndarray | torch.Tensor) -> np.ndarray:
        parts = []
        for s in self._batches(images):
            batch = (
                images[s] if isinstance(images, torch.Tensor) else to_tensor(images[s], self.device)
            )
            with torch.inference_mode(), self._autocast():
                parts.append(np.asarray(recognizer.predict(batch, self.ctx), dtype=np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _autocast(self) -> Any:
        """Mixed precision for torch recognizers when the suite asks for it."""
        if self.suite.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.suite.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # -- shared set-up ------------------------------------------------------------------------
    def prepare(self) -> tuple[list[RecognizerResult], list[dict[str, str]]]:
        """Load the split, draw the report's sample probes, set up every recognizer with its
        clean predictions (cached). Returns the recognizers' clean records and the failures."""
        suite = self.suite
        t0 = time.perf_counter()
        dataset = DATASETS.create(suite.dataset.name, suite.dataset.params)
        split = self.split = dataset.load(suite.seed)
        self.split_info = {
            "fingerprint": split.fingerprint(),
            "protocol": split.protocol,
            "protocol_description": describe_protocol(split.protocol),
            "probes_dropped": split.dropped,
            "sizes": {
                "fit": len(split.fit),
                "enroll": len(split.enroll),
                "probe": len(split.probe),
                "negatives": len(split.negatives) if split.negatives else 0,
            },
            "probe_image_size": list(split.probe.images.shape[1:3]),
        }
        self.timings["dataset"] = time.perf_counter() - t0
        k = min(SAMPLE_IMAGES, len(split.probe))
        self.sample_index = np.sort(
            self.ctx.rng("report", "samples").choice(len(split.probe), k, False)
        )
        self.split_info["samples"] = [split.probe.ids[i] for i in self.sample_index]
        results, failures = [], []
        for cfg in suite.recognizers:
            t0 = time.perf_counter()
            try:
                fr, records = self._recognizer(cfg, split)
            except Exception as exc:  # its cells fail; the other recognizers' cells go on
                failures.append(failure("recognizer", cfg.label, exc))
                continue
            self.timings[f"fit+clean:{cfg.label}"] = time.perf_counter() - t0
            self.fitted.append(fr)
            results.append(RecognizerResult(cfg, records))
        self.ctx.recognizers = LazyRecognizers(self.fitted)
        return results, failures

    def _recognizer(
        self, cfg: MethodConfig, split: DataSplit
    ) -> tuple[FittedRecognizer, RecognizerRecords]:
        model: Recognizer = RECOGNIZERS.create(cfg.name, cfg.params)
        identity = recognizer_identity(
            model, self.split_info["fingerprint"], self.suite.seed, self.suite.precision
        )

        def fit(m: Recognizer) -> None:
            t0 = time.perf_counter()
            m.fit(split, self.ctx)
            self.timings[f"fit:{cfg.label}"] = time.perf_counter() - t0

        fr = FittedRecognizer(cfg, model, identity, fit)
        fr.clean = self._cached_predictions(fr, "probe", split.probe.images)
        negatives = None
        if split.negatives is not None and fr.kind == "detector":
            negatives = self._cached_predictions(fr, "negatives", split.negatives.images) != -1
        reference = model.reference_labels(split.probe.labels, fr.clean)
        records = RecognizerRecords(model.recognized(fr.clean, reference), negatives, fr.kind)
        return fr, records

    def _cached_predictions(self, fr: FittedRecognizer, on: str, images: np.ndarray) -> np.ndarray:
        return self.cache.arrays(
            "predictions",
            {"recognizer": fr.identity, "on": on},
            lambda: {"pred": self._predict(fr.model, images)},
        )["pred"]

    # -- one unit -------------------------------------------------------------------------------
    def run_unit(self, unit: WorkUnit, on_cell: Callable[[], None] | None = None) -> UnitResult:
        """Every cell of one defense config. A failure is recorded in the result, never raised:
        one broken defense or counter-attack must not lose the other cells."""
        assert self.split is not None, "prepare() first"
        split, dcfg = self.split, unit.defense
        t0 = time.perf_counter()
        hits, misses, damaged = self.cache.hits, self.cache.misses, len(self.cache.damaged)
        result = UnitResult(unit.index, dcfg)

        def tick(n: int = 1) -> None:
            for _ in range(n if on_cell else 0):
                on_cell()  # type: ignore[misc]

        n_fitted = len(self.fitted)
        tick(len(unit.counter_attacks) * (len(self.suite.recognizers) - n_fitted))
        lacking = missing(DEFENSES.get(dcfg.name), dcfg.params)
        if lacking:  # e.g. weights not added here: skipped and said so, not a failure
            result.skipped.append({"scope": "defense", "name": dcfg.label, "needs": lacking})
            tick(len(unit.counter_attacks) * n_fitted)
        else:
            try:
                defense: Defense = DEFENSES.create(dcfg.name, dcfg.params)
                protected, drec, protected_key = self._protect_cached(defense, split)
                result.reversible = defense.reversible
                result.samples.update(
                    self._sample_defense(dcfg.label, defense, protected, protected_key)
                )
                result.records = drec
            except Exception as exc:
                result.failures.append(failure("defense", dcfg.label, exc))
                tick(len(unit.counter_attacks) * n_fitted)
            else:
                for acfg in unit.counter_attacks:
                    done = len(result.cells)
                    try:
                        self._counter_attack_cells(
                            dcfg, defense, acfg, protected, protected_key, result, on_cell
                        )
                    except _Recorded:  # the counter-attack failed; its cells are counted
                        pass
                    except Exception as exc:
                        name = f"{dcfg.label} × {acfg.label}"
                        result.failures.append(failure("counter-attack", name, exc))
                        tick(n_fitted - (len(result.cells) - done))
        result.seconds = time.perf_counter() - t0
        result.cache_hits = self.cache.hits - hits
        result.cache_misses = self.cache.misses - misses
        result.cache_damaged = self.cache.damaged[damaged:]
        return result

    # -- protection ---------------------------------------------------------------------------
    def _protect(self, defense: Defense, images: ImageSet, rows: slice) -> np.ndarray:
        """Protect ``images[rows]`` in batches and quantise them like an upload: uint8
        [rows, H, W, 3]."""
        upload = self.suite.upload
        pixels, ids = images.images[rows], images.ids[rows]
        out = np.empty((len(pixels), *pixels.shape[1:3], 3), dtype=np.uint8)
        for s in self._batches(pixels):
            x = to_tensor(pixels[s], self.device)
            protected = defense.protect(x, ids[s], self.ctx)
            if protected.shape != x.shape:
                raise PrivbenchError(
                    f"defense returned shape {tuple(protected.shape)} for input "
                    f"{tuple(x.shape)}; protect() must keep the shape"
                )
            out[s] = to_uint8(
                simulate_upload(protected.detach(), upload["format"], upload["quality"])
            )
        return out

    def _time_protect(self, defense: Defense, probe: ImageSet) -> dict[str, np.ndarray]:
        """Protect latency in ms per image, measured on fresh work only.

        Batches of ``batch_size`` probes cycle through the probe set under ids never used
        before (so nothing a defense remembers per id is reused), with the disk cache disabled
        (so no cache I/O is timed). One warm-up batch, then timed batches until TIMED_BATCHES
        or TIMING_BUDGET_S; CUDA is synchronised before each clock read."""
        ctx = Context(
            self.device, self.suite.seed, Cache(enabled=False), self.suite.batch_size, self.keyring
        )
        protocol = timing_protocol(self.suite.smoke)
        n = len(probe)
        b = min(protocol.get("batch_images", self.suite.batch_size), n)
        nonce = uuid.uuid4().hex[:12]
        timings: list[float] = []
        budget_end = math.inf
        for j in range(protocol["timed_batches"] + 1):
            idx = [(j * b + i) % n for i in range(b)]
            x = to_tensor(probe.images[idx], self.device)
            ids = [f"{probe.ids[i]}#timing-{nonce}-{j}" for i in idx]
            _sync(self.device)
            t0 = time.perf_counter()
            defense.protect(x, ids, ctx)
            _sync(self.device)
            elapsed = time.perf_counter() - t0
            if j == 0:
                budget_end = time.perf_counter() + protocol["budget_s"]
                continue
            timings.append(1000.0 * elapsed / b)
            if time.perf_counter() >= budget_end:
                break
        return {
            "ms_per_image": np.asarray(timings),
            "batch_images": np.int64(b),
            "measured_at": np.str_(datetime.now(timezone.utc).isoformat(timespec="seconds")),
        }

    def _quality(
        self, defense: Defense, probe: ImageSet, protected: ShardedImages, protected_key: str
    ) -> dict[str, np.ndarray]:
        """Per-image quality of the uploaded protected images against the originals, and of
        what the owner recovers from them (reversible defenses, optionally after JPEG); cached
        with the protected images and the metrics' identities."""
        quality = {
            n: m
            for n, m in self.metrics.items()
            if isinstance(m, QualityMetric) and (not m.recovery or defense.reversible)
        }
        if not quality:
            return {}

        def compute() -> dict[str, np.ndarray]:
            values: dict[str, list[np.ndarray]] = {n: [] for n in quality}
            for s, uploaded in protected.batches(self.suite.batch_size):
                x = to_tensor(probe.images[s], self.device)
                y = to_tensor(uploaded, self.device)
                recovered: dict[int | None, torch.Tensor] = {}
                for n, m in quality.items():
                    if not m.recovery:
                        values[n].append(m.per_image(x, y))
                        continue
                    q = m.jpeg_quality
                    if q not in recovered:
                        uploaded = jpeg_roundtrip(y, q) if q is not None else y
                        recovered[q] = quantise(defense.recover(uploaded, probe.ids[s], self.ctx))
                    values[n].append(m.per_image(x, recovered[q]))
            return {n: np.concatenate(v) if v else np.zeros(0) for n, v in values.items()}

        parts = {
            "protected": protected_key,
            "metrics": {n: method_identity(m) for n, m in quality.items()},
        }
        return self.cache.arrays("quality", parts, compute)

    def _uploaded(self, defense: Defense, images: ImageSet, role: str) -> tuple[ShardedImages, str]:
        """``images`` (the split's ``role``) after the defense and the upload, made and cached a
        shard at a time when first read; and the identity of the whole result. The shards are
        whole batches, so every batch the defense sees is the one it would see unsharded."""
        fingerprint = self.split_info["fingerprint"]
        parts = protected_parts(defense, fingerprint, role, self.ctx, self.suite.upload)

        def shard_parts(rows: slice) -> dict[str, Any]:
            return {**parts, "rows": [rows.start, rows.stop]}

        def load(rows: slice) -> np.ndarray:
            return self.cache.arrays(
                "protected",
                shard_parts(rows),
                lambda: {"protected": self._protect(defense, images, rows)},
            )["protected"]

        def stored(rows: slice) -> bool:
            key = self.cache.key("protected", shard_parts(rows))
            return self.cache.contains("protected", key)

        uploaded = ShardedImages(
            len(images),
            self.suite.batch_size * SHARD_BATCHES,
            load,
            stored,
            keep=not self.cache.enabled,
        )
        uploaded.make()
        return uploaded, content_key("protected", parts)

    def _protect_cached(
        self, defense: Defense, split: DataSplit
    ) -> tuple[ShardedImages, DefenseRecords, str]:
        """The uploaded protected probes (cached), their quality and their protect latency."""
        defense.fit(split.fit, self.ctx)  # defenses cache expensive fits themselves
        protected, protected_key = self._uploaded(defense, split.probe, "probe")
        # Quality (recovery included) and the fit report come first: timing protects fresh ids,
        # which may add to what the defense remembers (UEP's face boxes per id).
        records = DefenseRecords(
            ids=split.probe.ids,
            quality=self._quality(defense, split.probe, protected, protected_key),
            image_size=tuple(split.probe.images.shape[1:3]),
            fit_report=defense.fit_report(),
        )
        if any(m.scope == "defense" and m.needs_timing for m in self.metrics.values()):
            host = host_identity(self.device)
            measured_now: list[bool] = []

            def measure() -> dict[str, np.ndarray]:
                measured_now.append(True)
                return self._time_protect(defense, split.probe)

            key = timing_parts(protected_key, host, timing_protocol(self.suite.smoke))
            stored = self.cache.arrays("timing", key, measure)
            records.timing = {
                "ms_per_image": stored["ms_per_image"],
                "batch_images": int(stored["batch_images"]),
                "measured_at": str(stored["measured_at"]),
                "host": host,
                "cached": not measured_now,
            }
        return protected, records, protected_key

    def _sample_defense(
        self, label: str, defense: Defense, protected: ShardedImages, protected_key: str
    ) -> dict[str, np.ndarray]:
        """The report's sample images of one defense config: uploaded, and recovered (cached)."""
        assert self.split is not None
        idx = self.sample_index
        if not len(idx):
            return {}
        folder = f"samples/{slug(label)}"
        rows = self.cache.arrays(  # cached apart: a re-run then reads no shard of the probes
            "protected-samples",
            {"protected": protected_key, "idx": idx.tolist()},
            lambda: {"images": protected.take(idx)},
        )["images"]
        samples = {f"{folder}/protected": rows}
        if defense.reversible:
            ids = [self.split.probe.ids[i] for i in idx]

            def recover() -> dict[str, np.ndarray]:
                recovered = defense.recover(to_tensor(rows, self.device), ids, self.ctx)
                return {"images": to_uint8(quantise(recovered))}

            parts = {"protected": protected_key, "idx": idx.tolist()}
            stored = self.cache.arrays("recovered-samples", parts, recover)
            samples[f"{folder}/recovered"] = stored["images"]
        return samples

    # -- counter-attacks ------------------------------------------------------------------------
    def _countered_batches(
        self, attack: CounterAttack, protected: ShardedImages
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """The counter-attacked probes, one batch at a time on the run's device, read a shard
        at a time: only a counter-attack that fits on the whole protected pool (blind source
        separation) ever holds it whole, as one float tensor."""
        if type(attack).fit is not CounterAttack.fit:
            attack.fit(to_tensor(protected.whole(), self.device), self.ctx)
        for s, uploaded in protected.batches(self.suite.batch_size):
            yield s, attack.transform(to_tensor(uploaded, self.device), self.ctx).clamp(0, 1)

    def _counter_attack_cells(
        self,
        dcfg: MethodConfig,
        defense: Defense,
        acfg: MethodConfig,
        protected: ShardedImages,
        protected_key: str,
        result: UnitResult,
        on_cell: Callable[[], None] | None,
    ) -> None:
        """Run one counter-attack on one defense's protected probes with every recognizer,
        appending each finished cell to ``result`` in recognizer order.

        Cached cells are read; for the others the counter-attacked images are made once, batch
        by batch, and each batch goes to every recognizer still to predict (so a batch moves to
        the device once, and no float copy of the whole probe set is kept). An adaptive
        counter-attack adapts each recognizer on the protected fit split first."""
        assert self.split is not None
        split = self.split
        attack: CounterAttack = ATTACKS.create(acfg.name, acfg.params)
        reasons = [fr.not_applicable(attack) for fr in self.fitted]
        protected_fit, adapted_on = None, None
        if attack.adapts() and not all(reasons):  # the protected fit split only if it is used
            images, adapted_on = self._uploaded(defense, split.fit, "fit")
            protected_fit = ImageSet(images.whole(), split.fit.labels, split.fit.ids)
        keys = [cell_parts(protected_key, attack, fr.identity, adapted_on) for fr in self.fitted]
        predictions: dict[int, np.ndarray] = {}
        errors: dict[int, dict[str, str]] = {}
        pending: dict[int, Recognizer] = {}
        for i, (fr, reason) in enumerate(zip(self.fitted, reasons, strict=True)):
            if reason:
                continue
            stored = self.cache.cached_arrays("cell", keys[i])
            if stored is not None:
                predictions[i] = stored["pred"]
                continue
            try:
                model = fr.model
                if protected_fit is not None:
                    model = attack.adapt(model, protected_fit, self.ctx)
                pending[i] = attack.wrap(model)
            except Exception as exc:  # this recognizer failed: one cell
                name = f"{dcfg.label} × {acfg.label} × {fr.cfg.label}"
                errors[i] = failure("cell", name, exc)
        samples_parts = {
            "protected": protected_key,
            "attack": method_identity(attack),
            "idx": self.sample_index.tolist(),
        }
        samples = None
        if len(self.sample_index) and not all(reasons):
            found = self.cache.cached_arrays("countered-samples", samples_parts)
            samples = None if found is None else found["images"]
        attack_error: dict[str, str] | None = None
        if pending or (samples is None and len(self.sample_index) and not all(reasons)):
            try:
                computed, samples = self._stream(attack, protected, pending, errors, dcfg, acfg)
            except CounterAttackFailed as exc:
                attack_error = failure("counter-attack", f"{dcfg.label} × {acfg.label}", exc)
                computed, samples = {}, None
            for i, pred in computed.items():
                self.cache.store_arrays("cell", keys[i], {"pred": pred})
                predictions[i] = pred
            if samples is not None:
                self.cache.store_arrays("countered-samples", samples_parts, {"images": samples})
        surrogates = defense.surrogate_weights()
        labels = split.probe.labels
        for i, (fr, reason) in enumerate(zip(self.fitted, reasons, strict=True)):
            if reason:  # e.g. retraining a detector: no cell, listed once
                entry = {"scope": "cells", "name": f"{acfg.label} × {fr.cfg.label}", "why": reason}
                if entry not in result.skipped:
                    result.skipped.append(entry)
            elif i in errors:
                result.failures.append(errors[i])
            elif i in predictions:
                rec = fr.unfitted
                reference = rec.reference_labels(labels, fr.clean)
                records = CellRecords(
                    split.probe.ids,
                    labels,
                    fr.clean,
                    predictions[i],
                    rec.recognized(fr.clean, reference),
                    rec.recognized(predictions[i], reference),
                    fr.kind,
                )
                white_box = bool(surrogates) and fr.weights_identity() in surrogates
                stem = cell_file_stem(dcfg.label, acfg.label, fr.cfg.label)
                result.cells.append(CellResult(acfg, fr.cfg, stem, records, white_box))
            # else: the counter-attack failed before this cell was made; counted all the same
            if on_cell:
                on_cell()
        if attack_error is not None:
            result.failures.append(attack_error)
            raise _Recorded
        if samples is not None:
            result.samples[f"samples/{slug(dcfg.label)}/{slug(acfg.label)}"] = samples

    def _on_host_thread(self, i: int) -> bool:
        """Whether recognizer ``i`` is fed from the background thread: on a GPU run, one whose
        predictions run on the CPU anyway (OpenCV), so the GPU does not wait for it."""
        return self.device.type == "cuda" and self.fitted[i].unfitted.runs_on_host()

    def _stream(
        self,
        attack: CounterAttack,
        protected: ShardedImages,
        pending: dict[int, Recognizer],
        errors: dict[int, dict[str, str]],
        dcfg: MethodConfig,
        acfg: MethodConfig,
    ) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
        """One pass over the counter-attacked batches: every pending recognizer predicts each
        batch (one that fails drops out with its error), and the report's sample rows are
        kept. CPU-bound recognizers of a GPU run predict on a background thread, at most
        :data:`HOST_BATCHES_AHEAD` batches behind, in batch order. Raises
        :class:`CounterAttackFailed` if the counter-attack itself fails."""
        parts: dict[int, list[np.ndarray]] = {i: [] for i in pending}
        host = {i: pending.pop(i) for i in list(pending) if self._on_host_thread(i)}
        idx = self.sample_index
        sample_rows: dict[int, np.ndarray] = {}
        batches = self._countered_batches(attack, protected)

        def predict_all(models: dict[int, Recognizer], x: torch.Tensor) -> None:
            for i, model in list(models.items()):
                try:
                    with torch.inference_mode(), self._autocast():
                        pred = model.predict(x, self.ctx)
                    parts[i].append(np.asarray(pred, dtype=np.int64))
                except Exception as exc:  # this recognizer failed on these images: one cell
                    name = f"{dcfg.label} × {acfg.label} × {self.fitted[i].cfg.label}"
                    errors[i] = failure("cell", name, exc)
                    del models[i], parts[i]

        in_flight: deque[Future[None]] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="privbench-host") as background:
            try:
                while True:
                    try:
                        item = next(batches, None)
                    except Exception as exc:
                        raise CounterAttackFailed(f"{type(exc).__name__}: {exc}") from exc
                    if item is None:
                        break
                    s, x = item
                    for j in idx[(idx >= s.start) & (idx < s.stop)]:
                        row = x[int(j) - s.start : int(j) - s.start + 1]
                        sample_rows[int(j)] = to_uint8(row)[0]
                    if host:
                        while len(in_flight) >= HOST_BATCHES_AHEAD:
                            in_flight.popleft().result()
                        in_flight.append(background.submit(predict_all, host, x))
                    predict_all(pending, x)
            finally:
                for done in in_flight:  # the thread's own errors are recorded in ``errors``
                    done.result()
        pending.update(host)
        computed = {i: np.concatenate(p) if p else np.zeros(0, np.int64) for i, p in parts.items()}
        samples = np.stack([sample_rows[int(j)] for j in idx]) if len(sample_rows) else None
        return computed, samples


class _Recorded(Exception):
    """A failure already recorded in the unit's result: the caller only counts the cells."""
