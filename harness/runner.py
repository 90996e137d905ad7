"""Turn a validated suite into results (docs/architecture.md, "How a run flows").

dataset → split; recognizers fit on it; per defense config: fit, protect the probes (timed),
quantise like an upload, measure quality; per counter-attack: fit on the protected pool,
transform; per recognizer: predict, score. Everything that costs time is cached by content hash,
so re-running a suite after an interruption or with one more counter-attack recomputes only
what is new. Results are written atomically; a failing defense config is reported and the other
cells still finish.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import shutil
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import __version__
from harness.cache import Cache, content_key
from harness.cache_keys import (
    cell_parts,
    method_identity,
    protected_parts,
    recognizer_identity,
    timing_parts,
)
from harness.contracts import (
    Context,
    CounterAttack,
    DataSplit,
    Defense,
    ImageSet,
    Metric,
    MetricValue,
    QualityMetric,
    Recognizer,
    SuiteRecognizer,
)
from harness.datasets import describe_protocol
from harness.errors import PrivbenchError
from harness.imaging import jpeg_roundtrip, quantise, simulate_upload, to_tensor, to_uint8
from harness.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from harness.keys import Keyring, benchmark_key, key_from_env
from harness.leaderboard import render_markdown
from harness.outcomes import (
    CellOutcome,
    Outcomes,
    cell_file_stem,
    quality_file,
    quality_rows,
    slug,
    write_samples,
)
from harness.plugins import plugin_provenance, suite_methods
from harness.provenance import (
    device_info,
    git_commit,
    host_identity,
    package_versions,
    resolve_device,
)
from harness.records import CellRecords, DefenseRecords, RecognizerRecords
from harness.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS
from harness.suite import MethodConfig, Suite

RESULTS_SCHEMA_VERSION = 2
SAMPLE_IMAGES = 4  # seeded sample probes whose images the report shows
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


@dataclass
class RunOptions:
    """How to run: where results go, whether to use the cache, progress display."""

    out_root: Path = Path("results")
    use_cache: bool = True
    cache_root: Path | None = None
    progress: bool = True
    run_id: str | None = None
    device: str | None = None
    keyring: Keyring | None = None
    overwrite: bool = False  # replace the folder of an explicit run_id that already exists


@dataclass
class RunResult:
    """What a run produced."""

    run_dir: Path
    rows: list[dict[str, Any]]
    manifest: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)


def _metric_row(
    metric_name: str,
    metric: Metric,
    value: MetricValue,
    scope: str,
    defense: MethodConfig | None = None,
    attack: MethodConfig | None = None,
    recognizer: MethodConfig | None = None,
    white_box: bool = False,
) -> dict[str, Any]:
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
        **(_threat(attack) if attack is not None else {}),
        **({"white_box": True} if white_box else {}),
        **({"note": value.note} if value.note else {}),
        **value.extra,
    }


def _threat(attack: MethodConfig) -> dict[str, Any]:
    """The counter-attack's declared threat model, and whether it retrains the recognizer."""
    cls = ATTACKS.get(attack.name)
    return {**cls.threat(attack.params), **({"retrains": True} if cls.adapts() else {})}


def _applies(metric: Metric, recognizer: Recognizer | None) -> bool:
    kinds = getattr(metric, "kinds", None)
    return kinds is None or recognizer is None or recognizer.kind in kinds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CounterAttackFailed(Exception):
    """Raised inside a cell's computation when the counter-attack itself failed, so that the
    failure is recorded against the counter-attack and not against the recognizer."""


@dataclass
class FittedRecognizer:
    """A recognizer fitted on the split, with its clean predictions and cache identity."""

    cfg: MethodConfig
    model: Recognizer
    clean: np.ndarray
    identity: str


class Runner:
    """Executes one suite on the local machine."""

    def __init__(self, suite: Suite, options: RunOptions | None = None) -> None:
        self.suite = suite
        self.options = options or RunOptions()
        self.device = resolve_device(self.options.device or suite.device)
        self.cache = Cache(self.options.cache_root, self.options.use_cache, self.device)
        self.keyring = self.options.keyring or key_from_env() or benchmark_key(suite.seed)
        self.ctx = Context(self.device, suite.seed, self.cache, suite.batch_size, self.keyring)
        self.metrics: dict[str, Metric] = {}
        self.skipped: list[dict[str, Any]] = []
        for cfg in suite.metrics:
            metric = METRICS.create(cfg.name, cfg.params)
            metric.key = cfg.label
            self.metrics[cfg.label] = metric
            lacking = _missing(type(metric), cfg.params)
            if lacking:  # its rows say so too; listed once with what to add
                self.skipped.append({"scope": "metric", "name": cfg.label, "needs": lacking})
        self.rows: list[dict[str, Any]] = []
        self.outcomes: Outcomes = {}
        self.quality: dict[str, DefenseRecords] = {}  # per-image quality, per defense label
        self.samples: dict[str, np.ndarray] = {}  # run-folder path → uint8 [k, H, W, 3]
        self.sample_index = np.zeros(0, dtype=np.int64)
        self.failures: list[dict[str, str]] = []
        self.timings: dict[str, float] = {}
        self.split_fingerprint = ""
        self.split_info: dict[str, Any] = {}

    def _record_failure(self, scope: str, name: str, exc: BaseException) -> None:
        """A stage that failed: what, which one, the error; the other stages go on."""
        self.failures.append(
            {
                "scope": scope,
                "name": name,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        )

    # -- batching helpers -------------------------------------------------------------------
    def _batches(self, images: np.ndarray) -> list[slice]:
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

    # -- stages -----------------------------------------------------------------------------
    def _cached_predictions(
        self, recognizer: Recognizer, identity: str, on: str, images: np.ndarray
    ) -> np.ndarray:
        return self.cache.arrays(
            "predictions",
            {"recognizer": identity, "on": on},
            lambda: {"pred": self._predict(recognizer, images)},
        )["pred"]

    def _fit_recognizers(self, split: DataSplit, fingerprint: str) -> list[FittedRecognizer]:
        """Fit each recognizer, predict the clean probes (and negatives for detectors)."""
        fitted = []
        for cfg in self.suite.recognizers:
            t0 = time.perf_counter()
            try:
                recognizer: Recognizer = RECOGNIZERS.create(cfg.name, cfg.params)
                recognizer.fit(split, self.ctx)
                identity = recognizer_identity(
                    recognizer, fingerprint, self.suite.seed, self.suite.precision
                )
                clean = self._cached_predictions(recognizer, identity, "probe", split.probe.images)
                negatives = None
                if split.negatives is not None and recognizer.kind == "detector":
                    negatives = (
                        self._cached_predictions(
                            recognizer, identity, "negatives", split.negatives.images
                        )
                        != -1
                    )
            except Exception as exc:  # its cells fail; the other recognizers' cells go on
                self._record_failure("recognizer", cfg.label, exc)
                continue
            self.timings[f"fit+clean:{cfg.label}"] = time.perf_counter() - t0
            records = RecognizerRecords(
                recognizer.recognized(
                    clean, recognizer.reference_labels(split.probe.labels, clean)
                ),
                negatives,
                recognizer.kind,
            )
            for name, metric in self.metrics.items():
                if metric.scope == "recognizer" and _applies(metric, recognizer):
                    value = metric.compute(records)
                    self.rows.append(_metric_row(name, metric, value, "recognizer", recognizer=cfg))
            fitted.append(FittedRecognizer(cfg, recognizer, clean, identity))
        return fitted

    def _protect(self, defense: Defense, images: ImageSet) -> np.ndarray:
        """Protect ``images`` in batches and quantise them like an upload: uint8 [N, H, W, 3]."""
        upload = self.suite.upload
        out = np.empty((len(images), *images.images.shape[1:3], 3), dtype=np.uint8)
        for s in self._batches(images.images):
            x = to_tensor(images.images[s], self.device)
            protected = defense.protect(x, images.ids[s], self.ctx)
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
        n = len(probe)
        b = min(self.suite.batch_size, n)
        nonce = uuid.uuid4().hex[:12]
        timings: list[float] = []
        budget_end = math.inf
        for j in range(TIMED_BATCHES + 1):
            idx = [(j * b + i) % n for i in range(b)]
            x = to_tensor(probe.images[idx], self.device)
            ids = [f"{probe.ids[i]}#timing-{nonce}-{j}" for i in idx]
            _sync(self.device)
            t0 = time.perf_counter()
            defense.protect(x, ids, ctx)
            _sync(self.device)
            elapsed = time.perf_counter() - t0
            if j == 0:
                budget_end = time.perf_counter() + TIMING_BUDGET_S
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
        self, defense: Defense, probe: ImageSet, protected: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per-image quality of the uploaded protected images against the originals, and of
        what the owner recovers from them (reversible defenses, optionally after JPEG)."""
        quality = {
            n: m
            for n, m in self.metrics.items()
            if isinstance(m, QualityMetric) and (not m.recovery or defense.reversible)
        }
        values: dict[str, list[np.ndarray]] = {n: [] for n in quality}
        for s in self._batches(probe.images):
            x = to_tensor(probe.images[s], self.device)
            y = to_tensor(protected[s], self.device)
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

    def _uploaded(
        self, defense: Defense, images: ImageSet, role: str, fingerprint: str
    ) -> tuple[np.ndarray, str]:
        """``images`` (the split's ``role``) after the defense and the upload, cached; and the
        identity of that result."""
        parts = protected_parts(defense, fingerprint, role, self.ctx, self.suite.upload)
        uploaded = self.cache.arrays(
            "protected", parts, lambda: {"protected": self._protect(defense, images)}
        )["protected"]
        return uploaded, content_key("protected", parts)

    def _protect_cached(
        self, defense: Defense, split: DataSplit, fingerprint: str
    ) -> tuple[np.ndarray, DefenseRecords, str]:
        """The uploaded protected probes (cached), their quality and their protect latency."""
        defense.fit(split.fit, self.ctx)  # defenses cache expensive fits themselves
        protected, protected_key = self._uploaded(defense, split.probe, "probe", fingerprint)
        # Quality (recovery included) and the fit report come first: timing protects fresh ids,
        # which may add to what the defense remembers (UEP's face boxes per id).
        records = DefenseRecords(
            ids=split.probe.ids,
            quality=self._quality(defense, split.probe, protected),
            image_size=tuple(split.probe.images.shape[1:3]),
            fit_report=defense.fit_report(),
        )
        if any(m.scope == "defense" and m.needs_timing for m in self.metrics.values()):
            host = host_identity(self.device)
            measured_now: list[bool] = []

            def measure() -> dict[str, np.ndarray]:
                measured_now.append(True)
                return self._time_protect(defense, split.probe)

            key = timing_parts(protected_key, host, TIMING_PROTOCOL)
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
        self, label: str, defense: Defense, probe: ImageSet, protected: np.ndarray
    ) -> None:
        """The report's sample images of one defense config: uploaded, and recovered."""
        idx = self.sample_index
        folder = f"samples/{slug(label)}"
        self.samples[f"{folder}/protected"] = protected[idx]
        if defense.reversible:
            ids = [probe.ids[i] for i in idx]
            recovered = defense.recover(to_tensor(protected[idx], self.device), ids, self.ctx)
            self.samples[f"{folder}/recovered"] = to_uint8(quantise(recovered))

    def _sample_counter_attack(
        self,
        dlabel: str,
        attack: CounterAttack,
        acfg: MethodConfig,
        protected: np.ndarray,
        protected_key: str,
        countered: list[torch.Tensor],
    ) -> None:
        """The sample images after one counter-attack (cached: a re-run whose cells all came
        from the cache does not redo the counter-attack for them)."""
        idx = self.sample_index

        def compute() -> dict[str, np.ndarray]:
            images = countered[0] if countered else self._countered(attack, protected)
            return {"images": to_uint8(images[torch.as_tensor(idx)])}

        parts = {"protected": protected_key, "attack": method_identity(attack), "idx": idx.tolist()}
        stored = self.cache.arrays("countered-samples", parts, compute)["images"]
        self.samples[f"samples/{slug(dlabel)}/{slug(acfg.label)}"] = stored

    def _countered(self, attack: CounterAttack, protected: np.ndarray) -> torch.Tensor:
        pool = to_tensor(protected, self.device)
        attack.fit(pool, self.ctx)
        parts = [attack.transform(pool[s], self.ctx) for s in self._batches(protected)]
        return torch.cat(parts).clamp(0.0, 1.0)

    def _counter_attack_cells(
        self,
        dcfg: MethodConfig,
        defense: Defense,
        acfg: MethodConfig,
        protected: np.ndarray,
        protected_key: str,
        fitted: list[FittedRecognizer],
        split: DataSplit,
        on_cell: Callable[[], None] | None,
        out: list[tuple[str, CellRecords]],
    ) -> None:
        """Score one counter-attack on one defense's protected probes with every recognizer,
        appending each finished cell's records to ``out``.

        The counter-attacked images are computed only if some recognizer's cell is not cached.
        An adaptive counter-attack adapts each recognizer on the protected fit split.
        """
        attack: CounterAttack = ATTACKS.create(acfg.name, acfg.params)
        countered: list[torch.Tensor] = []
        labels = split.probe.labels
        protected_fit, adapted_on = None, None
        reasons = [attack.not_applicable(fr.model) for fr in fitted]
        if attack.adapts() and not all(reasons):  # the protected fit split only if it is used
            images, adapted_on = self._uploaded(defense, split.fit, "fit", self.split_fingerprint)
            protected_fit = ImageSet(images, split.fit.labels, split.fit.ids)
        for fr, reason in zip(fitted, reasons, strict=True):
            if reason:  # e.g. retraining a detector: no cell, listed once
                entry = {"scope": "cells", "name": f"{acfg.label} × {fr.cfg.label}", "why": reason}
                if entry not in self.skipped:
                    self.skipped.append(entry)
                if on_cell:
                    on_cell()
                continue
            key = cell_parts(protected_key, attack, fr.identity, adapted_on)

            def predict(rec: Recognizer = fr.model) -> dict[str, np.ndarray]:
                if not countered:
                    try:
                        countered.append(self._countered(attack, protected))
                    except Exception as exc:
                        raise CounterAttackFailed(f"{type(exc).__name__}: {exc}") from exc
                model = rec if protected_fit is None else attack.adapt(rec, protected_fit, self.ctx)
                model = attack.wrap(model)
                return {"pred": self._predict(model, countered[0])}

            try:
                pred = self.cache.arrays("cell", key, predict)["pred"]
            except CounterAttackFailed:
                raise
            except Exception as exc:  # this recognizer failed on these images: one cell
                name = f"{dcfg.label} × {acfg.label} × {fr.cfg.label}"
                self._record_failure("cell", name, exc)
                if on_cell:
                    on_cell()
                continue
            reference = fr.model.reference_labels(labels, fr.clean)
            records = CellRecords(
                split.probe.ids,
                labels,
                fr.clean,
                pred,
                fr.model.recognized(fr.clean, reference),
                fr.model.recognized(pred, reference),
                fr.model.kind,
            )
            out.append((cell_file_stem(dcfg.label, acfg.label, fr.cfg.label), records))
            self.outcomes[(dcfg.label, acfg.label, fr.cfg.label)] = CellOutcome.from_records(
                records
            )
            white_box = fr.model.weights_identity() in defense.surrogate_weights()
            for name, metric in self.metrics.items():
                if metric.scope == "cell" and _applies(metric, fr.model):
                    value = metric.compute(records)
                    self.rows.append(
                        _metric_row(name, metric, value, "cell", dcfg, acfg, fr.cfg, white_box)
                    )
            if on_cell:
                on_cell()
        if len(self.sample_index) and not all(reasons):
            try:
                self._sample_counter_attack(
                    dcfg.label, attack, acfg, protected, protected_key, countered
                )
            except Exception as exc:  # the cells are done; only the report's images are lost
                self.skipped.append(
                    {
                        "scope": "samples",
                        "name": f"{dcfg.label} × {acfg.label}",
                        "why": f"{type(exc).__name__}: {exc}",
                    }
                )

    # -- the run ----------------------------------------------------------------------------
    def run(
        self,
        on_cell: Callable[[], None] | None = None,
        write: Callable[[list[dict[str, Any]], list[tuple[str, CellRecords]]], None] | None = None,
    ) -> tuple[list[dict[str, Any]], list[tuple[str, CellRecords]], dict[str, Any]]:
        """Execute every cell; returns metric rows, per-cell records and split information."""
        suite = self.suite
        t0 = time.perf_counter()
        dataset = DATASETS.create(suite.dataset.name, suite.dataset.params)
        split = dataset.load(suite.seed)
        fingerprint = self.split_fingerprint = split.fingerprint()
        self.split_info = {
            "fingerprint": fingerprint,
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
        self.samples["samples/clean"] = split.probe.images[self.sample_index]
        fitted = self._fit_recognizers(split, fingerprint)
        self.ctx.recognizers = {
            fr.cfg.label: SuiteRecognizer(fr.model, fr.identity) for fr in fitted
        }
        cell_records: list[tuple[str, CellRecords]] = []
        if len(fitted) < len(suite.recognizers) and on_cell:
            for _ in range(len(suite.defenses) * len(suite.counter_attacks)):
                for _ in range(len(suite.recognizers) - len(fitted)):
                    on_cell()
        for dcfg in suite.defenses:
            t_def = time.perf_counter()
            lacking = _missing(DEFENSES.get(dcfg.name), dcfg.params)
            if lacking:  # e.g. weights not added here: skipped and said so, not a failure
                self.skipped.append({"scope": "defense", "name": dcfg.label, "needs": lacking})
                if on_cell:
                    for _ in range(len(suite.counter_attacks) * len(fitted)):
                        on_cell()
                continue
            try:
                defense: Defense = DEFENSES.create(dcfg.name, dcfg.params)
                protected, drec, protected_key = self._protect_cached(defense, split, fingerprint)
                self.quality[dcfg.label] = drec
                self._sample_defense(dcfg.label, defense, split.probe, protected)
                for name, metric in self.metrics.items():
                    recovery = isinstance(metric, QualityMetric) and metric.recovery
                    if metric.scope == "defense" and (defense.reversible or not recovery):
                        self.rows.append(
                            _metric_row(name, metric, metric.compute(drec), "defense", defense=dcfg)
                        )
            except Exception as exc:  # one broken defense must not lose the others' cells
                self._record_failure("defense", dcfg.label, exc)
                if on_cell:
                    for _ in range(len(suite.counter_attacks) * len(fitted)):
                        on_cell()
                if write:
                    write(self.rows, cell_records)
                continue
            for acfg in suite.counter_attacks:
                done = len(cell_records)
                try:
                    self._counter_attack_cells(
                        dcfg,
                        defense,
                        acfg,
                        protected,
                        protected_key,
                        fitted,
                        split,
                        on_cell,
                        cell_records,
                    )
                except Exception as exc:  # the counter-attack failed: its remaining cells
                    self._record_failure("counter-attack", f"{dcfg.label} × {acfg.label}", exc)
                    if on_cell:
                        for _ in range(len(fitted) - (len(cell_records) - done)):
                            on_cell()
            self.timings[f"defense:{dcfg.label}"] = time.perf_counter() - t_def
            if write:
                write(self.rows, cell_records)
        return self.rows, cell_records, self.split_info


def _missing(cls: Any, params: dict[str, Any]) -> list[str]:
    check = getattr(cls, "missing", None)
    return list(check(params)) if callable(check) else []


def missing_requirements(suite: Suite) -> list[str]:
    """What the suite's data set, recognizers and counter-attacks lack on this machine (data
    folders, weights, model and class files, packages), one line each saying where to get it.
    Without any of these the suite cannot run."""
    lacking = [
        f"dataset {suite.dataset.name}: {m}"
        for m in _missing(DATASETS.get(suite.dataset.name), suite.dataset.params)
    ]
    for registry, configs in ((RECOGNIZERS, suite.recognizers), (ATTACKS, suite.counter_attacks)):
        for cfg in configs:
            lacking += [f"{cfg.label}: {m}" for m in _missing(registry.get(cfg.name), cfg.params)]
    return lacking


def optional_missing(suite: Suite) -> list[str]:
    """What defenses and metrics lack here (weights): the run skips those defense configs
    and leaves those metric columns empty, saying what to add, and goes on."""
    lacking = []
    for registry, configs in ((DEFENSES, suite.defenses), (METRICS, suite.metrics)):
        for cfg in configs:
            lacking += [f"{cfg.label}: {m}" for m in _missing(registry.get(cfg.name), cfg.params)]
    return lacking


def new_run_id(suite: Suite) -> str:
    """Sortable and unique: UTC time, the first 8 hex digits of the suite hash, and 4 random
    hex digits (two runs started in the same second get different folders)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{suite.sha256[:8]}-{secrets.token_hex(2)}"


class Terminated(KeyboardInterrupt):
    """The run received SIGTERM; handled like Ctrl-C: what finished is written."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a run is in progress (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _make_run_dir(suite: Suite, options: RunOptions) -> tuple[str, Path]:
    """A new run folder; an explicit ``run_id`` that exists is refused unless ``overwrite``."""
    root = Path(options.out_root) / suite.name
    if options.run_id:
        run_dir = root / options.run_id
        if run_dir.exists():
            if not options.overwrite:
                raise PrivbenchError(
                    f"{run_dir} already holds a run; choose another --run-id, or pass "
                    "--overwrite to replace it"
                )
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        return options.run_id, run_dir
    while True:
        run_id = new_run_id(suite)
        try:
            (root / run_id).mkdir(parents=True)
        except FileExistsError:
            continue
        return run_id, root / run_id


def run_suite(suite: Suite, options: RunOptions | None = None) -> RunResult:
    """Run ``suite`` and write ``<out_root>/<suite>/<run-id>/`` (manifest, results, records,
    leaderboard).

    A suite this machine cannot run is refused before any folder is made. The manifest is
    written first (status ``running``) and rewritten after each defense config with everything
    finished so far, so a run killed even by SIGKILL leaves a readable folder; Ctrl-C and
    SIGTERM end it as ``interrupted`` / ``terminated`` after writing what finished."""
    options = options or RunOptions()
    lacking = missing_requirements(suite)
    if lacking:
        raise PrivbenchError(
            "this machine cannot run the suite yet:\n  - " + "\n  - ".join(lacking)
        )
    torch.manual_seed(suite.seed)
    np.random.seed(suite.seed % (2**32))
    runner = Runner(suite, options)
    run_id, run_dir = _make_run_dir(suite, options)
    started = datetime.now(timezone.utc)
    manifest: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "privbench_version": __version__,
        "run_id": run_id,
        "status": "running",
        "suite": {
            "name": suite.name,
            "path": suite.path,
            "sha256": suite.sha256,
            "files": suite.files,
        },
        "config": suite.resolved(),
        "recognizer_kinds": {r.label: RECOGNIZERS.get(r.name).kind for r in suite.recognizers},
        "roles": {
            d.label: roles
            for d in suite.defenses
            if (roles := DEFENSES.get(d.name).recognizer_roles(d.params))
        },
        "git": git_commit(),
        "plugins": plugin_provenance(suite_methods(suite.resolved())),
        "packages": package_versions(),
        "machine": device_info(runner.device),
        "key": {"source": runner.keyring.source},
        "seed": suite.seed,
        "metrics": {
            n: {
                "name": cfg.name,
                "params": cfg.params,
                "scope": m.scope,
                "higher_is_better": m.higher_is_better,
                "unit": m.unit,
                "parity": m.parity,
                "doc": (type(m).__doc__ or "").strip(),
            }
            for cfg, (n, m) in zip(suite.metrics, runner.metrics.items(), strict=True)
        },
        "started": started.isoformat(),
    }

    def save_manifest(status: str) -> None:
        now = datetime.now(timezone.utc)
        manifest.update(
            {
                "status": status,
                "dataset": runner.split_info,
                "updated" if status == "running" else "finished": now.isoformat(),
                "duration_s": round((now - started).total_seconds(), 3),
                "stage_seconds": {k: round(v, 3) for k, v in runner.timings.items()},
                "cache": {
                    "enabled": runner.cache.enabled,
                    "hits": runner.cache.hits,
                    "misses": runner.cache.misses,
                    "damaged_and_recomputed": runner.cache.damaged,
                },
                "failures": [
                    {k: f[k] for k in ("scope", "name", "error")} for f in runner.failures
                ],
                "skipped": runner.skipped,
            }
        )
        atomic_write_json(run_dir / "manifest.json", manifest)
        atomic_write_text(
            run_dir / "leaderboard.md", render_markdown(manifest, runner.rows, runner.outcomes)
        )

    written_records: set[str] = set()
    written_quality: set[str] = set()
    written_samples: set[str] = set()

    def write(rows: list[dict[str, Any]], cells: list[tuple[str, CellRecords]]) -> None:
        for cell_id, records in cells:
            if cell_id not in written_records:
                atomic_write_jsonl(run_dir / "records" / f"{cell_id}.jsonl", records.rows())
                written_records.add(cell_id)
        for rel, images in list(runner.samples.items()):
            if rel not in written_samples:
                write_samples(run_dir / rel, images)
                written_samples.add(rel)
        for label, drec in runner.quality.items():
            if label not in written_quality and drec.quality:
                atomic_write_jsonl(quality_file(run_dir, label), quality_rows(drec))
                written_quality.add(label)
        atomic_write_jsonl(run_dir / "results.jsonl", rows)
        save_manifest("running")

    save_manifest("running")
    progress = None
    if options.progress:
        from tqdm import tqdm

        progress = tqdm(total=suite.n_cells, desc=f"{suite.name}", unit="cell", leave=False)
    status = "complete"
    try:
        with _sigterm_interrupts():
            rows, cells, _ = runner.run(on_cell=progress.update if progress else None, write=write)
            write(rows, cells)
    except Terminated:
        status = "terminated"
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException as exc:
        status = "failed"
        runner._record_failure("run", suite.name, exc)
        raise
    finally:
        if progress is not None:
            progress.close()
        if runner.failures and status == "complete":
            status = "failed"
        atomic_write_jsonl(run_dir / "results.jsonl", runner.rows)
        save_manifest(status)
    if status == "terminated":
        raise Terminated
    if status == "interrupted":
        raise KeyboardInterrupt
    return RunResult(run_dir, runner.rows, manifest, runner.failures)
