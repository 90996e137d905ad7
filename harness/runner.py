"""Turn a validated suite into results (ARCHITECTURE.md, "How data flows").

dataset → split; recognizers fit on it; per defense config: fit, protect the probes (timed),
quantise like an upload, measure quality; per counter-attack: fit on the protected pool,
transform; per recognizer: predict, score. Everything that costs time is cached by content hash,
so re-running a suite after an interruption or with one more counter-attack recomputes only
what is new. Results are written atomically; a failing defense config is reported and the other
cells still finish.
"""

from __future__ import annotations

import contextlib
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import __version__
from harness.cache import Cache, content_key
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
)
from harness.errors import PrivbenchError
from harness.imaging import jpeg_roundtrip, quantise, simulate_upload, to_tensor, to_uint8
from harness.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from harness.keys import Keyring, benchmark_key, key_from_env
from harness.leaderboard import render_markdown
from harness.provenance import device_info, git_commit, package_versions, resolve_device
from harness.records import CellRecords, DefenseRecords, RecognizerRecords
from harness.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS
from harness.suite import MethodConfig, Suite

RESULTS_SCHEMA_VERSION = 1
MIN_TIMED_BATCHES = 5
EXTRA_TIMING_BUDGET_S = 3.0


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


@dataclass
class RunResult:
    """What a run produced."""

    run_dir: Path
    rows: list[dict[str, Any]]
    manifest: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:80] or "x"


def _metric_row(
    metric_name: str,
    metric: Metric,
    value: MetricValue,
    scope: str,
    defense: MethodConfig | None = None,
    attack: MethodConfig | None = None,
    recognizer: MethodConfig | None = None,
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
        "higher_is_better": metric.higher_is_better,
        "unit": metric.unit,
        **({"note": value.note} if value.note else {}),
    }


def _applies(metric: Metric, recognizer: Recognizer | None) -> bool:
    kinds = getattr(metric, "kinds", None)
    return kinds is None or recognizer is None or recognizer.kind in kinds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        self.cache = Cache(self.options.cache_root, enabled=self.options.use_cache)
        self.keyring = self.options.keyring or key_from_env() or benchmark_key(suite.seed)
        self.ctx = Context(self.device, suite.seed, self.cache, suite.batch_size, self.keyring)
        self.metrics: dict[str, Metric] = {}
        for cfg in suite.metrics:
            metric = METRICS.create(cfg.name, cfg.params)
            metric.key = cfg.label
            self.metrics[cfg.label] = metric
        self.rows: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []
        self.timings: dict[str, float] = {}

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
            recognizer: Recognizer = RECOGNIZERS.create(cfg.name, cfg.params)
            recognizer.fit(split, self.ctx)
            identity = content_key(
                "recognizer",
                {
                    "state": recognizer.state_key(),
                    "split": fingerprint,
                    "seed": self.suite.seed,
                    "precision": self.suite.precision,
                },
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

    def _protect(self, defense: Defense, probe: ImageSet) -> tuple[np.ndarray, np.ndarray]:
        """Protect all probes in batches and quantise them like an upload.

        Returns uint8 [N, H, W, 3] and per-batch ms/image. The first batch is the warm-up and
        is not timed; more batches are re-timed (within a small budget) until there are
        MIN_TIMED_BATCHES measurements.
        """
        upload = self.suite.upload
        batches = self._batches(probe.images)
        out = np.empty((len(probe), *probe.images.shape[1:3], 3), dtype=np.uint8)
        timings: list[float] = []

        def timed(s: slice) -> tuple[torch.Tensor, torch.Tensor, float]:
            x = to_tensor(probe.images[s], self.device)
            _sync(self.device)
            t0 = time.perf_counter()
            y = defense.protect(x, probe.ids[s], self.ctx)
            _sync(self.device)
            return x, y, 1000.0 * (time.perf_counter() - t0) / (s.stop - s.start)

        for i, s in enumerate(batches):
            x, protected, ms = timed(s)
            if i > 0:
                timings.append(ms)
            if protected.shape != x.shape:
                raise PrivbenchError(
                    f"defense returned shape {tuple(protected.shape)} for input "
                    f"{tuple(x.shape)}; protect() must keep the shape"
                )
            out[s] = to_uint8(
                simulate_upload(protected.detach(), upload["format"], upload["quality"])
            )
        budget_end = time.perf_counter() + EXTRA_TIMING_BUDGET_S
        j = 0
        while len(timings) < MIN_TIMED_BATCHES and time.perf_counter() < budget_end:
            timings.append(timed(batches[j % len(batches)])[2])
            j += 1
        return out, np.asarray(timings)

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

    def _protect_cached(
        self, cfg: MethodConfig, defense: Defense, split: DataSplit, fingerprint: str
    ) -> tuple[np.ndarray, DefenseRecords, str]:
        key = {
            "defense": cfg.as_dict(),
            "class": type(defense).__qualname__,
            "version": defense.version,
            "split": fingerprint,
            "seed": self.suite.seed,
            "upload": self.suite.upload,
        }

        defense.fit(split.fit, self.ctx)  # defenses cache expensive fits themselves

        def compute() -> dict[str, np.ndarray]:
            protected, ms = self._protect(defense, split.probe)
            return {"protected": protected, "ms_per_image": ms}

        stored = self.cache.arrays("protected", key, compute)
        records = DefenseRecords(
            ids=split.probe.ids,
            quality=self._quality(defense, split.probe, stored["protected"]),
            ms_per_image=stored["ms_per_image"],
            image_size=tuple(split.probe.images.shape[1:3]),
            fit_report=defense.fit_report(),
        )
        return stored["protected"], records, content_key("protected", key)

    def _countered(self, attack: CounterAttack, protected: np.ndarray) -> torch.Tensor:
        pool = to_tensor(protected, self.device)
        attack.fit(pool, self.ctx)
        parts = [attack.transform(pool[s], self.ctx) for s in self._batches(protected)]
        return torch.cat(parts).clamp(0.0, 1.0)

    def _counter_attack_cells(
        self,
        dcfg: MethodConfig,
        acfg: MethodConfig,
        protected: np.ndarray,
        protected_key: str,
        fitted: list[FittedRecognizer],
        split: DataSplit,
        on_cell: Callable[[], None] | None,
    ) -> list[tuple[str, CellRecords]]:
        """Score one counter-attack on one defense's protected probes with every recognizer.

        The counter-attacked images are computed only if some recognizer's cell is not cached.
        """
        attack: CounterAttack = ATTACKS.create(acfg.name, acfg.params)
        countered: list[torch.Tensor] = []
        labels = split.probe.labels
        out = []
        for fr in fitted:
            key = {
                "protected": protected_key,
                "attack": acfg.as_dict(),
                "attack_version": attack.version,
                "recognizer": fr.identity,
            }

            def predict(rec: Recognizer = fr.model) -> dict[str, np.ndarray]:
                if not countered:
                    countered.append(self._countered(attack, protected))
                model = attack.adapt(rec, split.fit, self.ctx)
                return {"pred": self._predict(model, countered[0])}

            pred = self.cache.arrays("cell", key, predict)["pred"]
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
            out.append(
                (f"{_slug(dcfg.label)}__{_slug(acfg.label)}__{_slug(fr.cfg.label)}", records)
            )
            for name, metric in self.metrics.items():
                if metric.scope == "cell" and _applies(metric, fr.model):
                    value = metric.compute(records)
                    self.rows.append(_metric_row(name, metric, value, "cell", dcfg, acfg, fr.cfg))
            if on_cell:
                on_cell()
        return out

    # -- the run ----------------------------------------------------------------------------
    def run(
        self,
        on_cell: Callable[[], None] | None = None,
        write: Callable[[list[dict[str, Any]], list[tuple[str, CellRecords]]], None] | None = None,
    ) -> tuple[list[dict[str, Any]], list[tuple[str, CellRecords]], dict[str, Any]]:
        """Execute every cell; returns metric rows, per-cell records and split information."""
        suite = self.suite
        t0 = time.perf_counter()
        lacking = missing_requirements(suite)
        if lacking:
            raise PrivbenchError(
                "this machine cannot run the suite yet:\n  - " + "\n  - ".join(lacking)
            )
        dataset = DATASETS.create(suite.dataset.name, suite.dataset.params)
        split = dataset.load(suite.seed)
        fingerprint = split.fingerprint()
        self.timings["dataset"] = time.perf_counter() - t0
        fitted = self._fit_recognizers(split, fingerprint)
        cell_records: list[tuple[str, CellRecords]] = []
        for dcfg in suite.defenses:
            try:
                t_def = time.perf_counter()
                defense: Defense = DEFENSES.create(dcfg.name, dcfg.params)
                protected, drec, protected_key = self._protect_cached(
                    dcfg, defense, split, fingerprint
                )
                for name, metric in self.metrics.items():
                    recovery = isinstance(metric, QualityMetric) and metric.recovery
                    if metric.scope == "defense" and (defense.reversible or not recovery):
                        self.rows.append(
                            _metric_row(name, metric, metric.compute(drec), "defense", defense=dcfg)
                        )
                for acfg in suite.counter_attacks:
                    cell_records += self._counter_attack_cells(
                        dcfg, acfg, protected, protected_key, fitted, split, on_cell
                    )
                self.timings[f"defense:{dcfg.label}"] = time.perf_counter() - t_def
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one broken defense must not lose the others' cells
                self.failures.append(
                    {
                        "defense": dcfg.label,
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                )
                if on_cell:
                    for _ in range(len(suite.counter_attacks) * len(fitted)):
                        on_cell()
            if write:
                write(self.rows, cell_records)
        split_info = {
            "fingerprint": fingerprint,
            "protocol": split.protocol,
            "sizes": {
                "fit": len(split.fit),
                "enroll": len(split.enroll),
                "probe": len(split.probe),
                "negatives": len(split.negatives) if split.negatives else 0,
            },
            "probe_image_size": list(split.probe.images.shape[1:3]),
        }
        return self.rows, cell_records, split_info


def missing_requirements(suite: Suite) -> list[str]:
    """What the suite's recognizers lack on this machine (weights, model files, packages)."""
    lacking = []
    for cfg in suite.recognizers:
        cls = RECOGNIZERS.get(cfg.name)
        lacking += [f"{cfg.label}: {m}" for m in getattr(cls, "missing", lambda p: [])(cfg.params)]
    return lacking


def new_run_id(suite: Suite) -> str:
    """Sortable and unique: UTC time plus the first 8 hex digits of the suite hash."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + suite.sha256[:8]


def run_suite(suite: Suite, options: RunOptions | None = None) -> RunResult:
    """Run ``suite`` and write ``<out_root>/<suite>/<run-id>/`` (manifest, results, records,
    leaderboard). Partial results are written after each defense config, so an interrupted run
    keeps what it finished (and the cache lets a re-run skip it)."""
    options = options or RunOptions()
    torch.manual_seed(suite.seed)
    np.random.seed(suite.seed % (2**32))
    runner = Runner(suite, options)
    run_id = options.run_id or new_run_id(suite)
    run_dir = Path(options.out_root) / suite.name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
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
        "git": git_commit(),
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
    written_records: set[str] = set()

    def write(rows: list[dict[str, Any]], cells: list[tuple[str, CellRecords]]) -> None:
        for cell_id, records in cells:
            if cell_id not in written_records:
                atomic_write_jsonl(run_dir / "records" / f"{cell_id}.jsonl", records.rows())
                written_records.add(cell_id)
        atomic_write_jsonl(run_dir / "results.jsonl", rows)

    progress = None
    if options.progress:
        from tqdm import tqdm

        progress = tqdm(total=suite.n_cells, desc=f"{suite.name}", unit="cell", leave=False)
    status = "complete"
    split_info: dict[str, Any] = {}
    try:
        rows, cells, split_info = runner.run(
            on_cell=progress.update if progress else None, write=write
        )
        write(rows, cells)
    except KeyboardInterrupt:
        status = "interrupted"
        write(runner.rows, [])
    except BaseException as exc:
        status = "failed"
        runner.failures.append({"defense": "(run)", "error": f"{type(exc).__name__}: {exc}"})
        write(runner.rows, [])
        raise
    finally:
        if progress is not None:
            progress.close()
        if runner.failures and status == "complete":
            status = "failed"
        finished = datetime.now(timezone.utc)
        manifest.update(
            {
                "status": status,
                "dataset": split_info,
                "finished": finished.isoformat(),
                "duration_s": round((finished - started).total_seconds(), 3),
                "stage_seconds": {k: round(v, 3) for k, v in runner.timings.items()},
                "cache": {
                    "enabled": runner.cache.enabled,
                    "hits": runner.cache.hits,
                    "misses": runner.cache.misses,
                },
                "failures": [
                    {"defense": f["defense"], "error": f["error"]} for f in runner.failures
                ],
            }
        )
        atomic_write_json(run_dir / "manifest.json", manifest)
        atomic_write_text(run_dir / "leaderboard.md", render_markdown(manifest, runner.rows))
    if status == "interrupted":
        raise KeyboardInterrupt
    return RunResult(run_dir, runner.rows, manifest, runner.failures)
