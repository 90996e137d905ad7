"""Turn a validated suite into a run folder (docs/architecture.md, "How a run flows").

A run has three parts: :mod:`harness.engine.plan` (the suite's work units, one per defense
config, and their cache keys), an executor (:mod:`harness.engine.executors`: here, or on a Dask
cluster) that runs :mod:`harness.engine.execute` on each unit, and :mod:`harness.engine.score`
(records → metric rows). This module ties them together and owns the run folder: the manifest,
results.jsonl, per-image
records, samples and leaderboard, written atomically as units finish, in plan order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import __version__
from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS
from harness.boards.leaderboard import render_markdown
from harness.core.errors import PrivbenchError
from harness.core.files import atomic_write_json, atomic_write_jsonl, atomic_write_text
from harness.core.keys import Keyring, benchmark_key, key_from_env
from harness.core.provenance import device_info, git_commit, package_versions, resolve_device
from harness.engine.execute import RecognizerResult, UnitResult, UnitRunner, failure, missing
from harness.engine.executors import Executor, LocalExecutor
from harness.engine.plan import RunPlan, describe, plan_run, planned_keys
from harness.engine.score import recognizer_rows, unit_outcomes, unit_rows
from harness.engine.smoke import SMOKE_NOTE, SMOKE_PROBES, SmokeSkipped, smoke_plan
from harness.engine.suite import Suite
from harness.runs.outcomes import Outcomes, quality_file, quality_rows, write_samples
from harness.runs.plugins import plugin_provenance, suite_methods

RESULTS_SCHEMA_VERSION = 2
LEADERBOARD_EVERY_S = 5.0  # a running leaderboard.md is redrawn at most this often


@dataclass
class RunOptions:
    """How to run: where results go, whether to use the cache, progress display, executor."""

    out_root: Path = Path("results")
    use_cache: bool = True
    cache_root: Path | None = None
    progress: bool = True
    run_id: str | None = None
    device: str | None = None
    keyring: Keyring | None = None
    overwrite: bool = False  # replace the folder of an explicit run_id that already exists
    executor: Executor | None = None  # default: LocalExecutor
    smoke: bool = (
        False  # harness.engine.smoke: every method on a few probes, in a cold cache of its own
    )


@dataclass
class RunResult:
    """What a run produced."""

    run_dir: Path
    rows: list[dict[str, Any]]
    manifest: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)


class RunState:
    """What has finished so far, kept in plan order whatever order units finish in."""

    def __init__(self, suite: Suite, runner: UnitRunner) -> None:
        self.metrics = runner.metrics
        self.recognizer_rows: list[dict[str, Any]] = []
        self.units: dict[int, UnitResult] = {}
        self.unit_rows: dict[int, list[dict[str, Any]]] = {}
        self.unit_outcomes: dict[int, Outcomes] = {}
        self.failures: list[dict[str, str]] = []  # set-up and run failures (units keep theirs)
        self.skipped: list[dict[str, Any]] = []
        self.samples: dict[str, np.ndarray] = {}
        self.cache = {"hits": 0, "misses": 0, "damaged_and_recomputed": []}
        for cfg in suite.metrics:
            lacking = missing(METRICS.get(cfg.name), cfg.params)
            if lacking:  # its rows say so too; listed once with what to add
                self.skipped.append({"scope": "metric", "name": cfg.label, "needs": lacking})

    def prepared(self, results: list[RecognizerResult], failures: list[dict[str, str]]) -> None:
        self.recognizer_rows = recognizer_rows(self.metrics, results)
        self.failures += failures

    def count_cache(self, runner: UnitRunner) -> None:
        self.cache["hits"] += runner.cache.hits
        self.cache["misses"] += runner.cache.misses
        self.cache["damaged_and_recomputed"] += runner.cache.damaged

    def add(self, unit: UnitResult) -> None:
        self.units[unit.index] = unit
        self.unit_rows[unit.index] = unit_rows(self.metrics, unit)
        self.unit_outcomes[unit.index] = unit_outcomes(unit)
        self.cache["hits"] += unit.cache_hits
        self.cache["misses"] += unit.cache_misses
        self.cache["damaged_and_recomputed"] += unit.cache_damaged

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


def missing_requirements(suite: Suite) -> list[str]:
    """What the suite's data set, recognizers and counter-attacks lack on this machine (data
    folders, weights, model and class files, packages), one line each saying where to get it.
    Without any of these the suite cannot run."""
    lacking = [
        f"dataset {suite.dataset.name}: {m}"
        for m in missing(DATASETS.get(suite.dataset.name), suite.dataset.params)
    ]
    for registry, configs in ((RECOGNIZERS, suite.recognizers), (ATTACKS, suite.counter_attacks)):
        for cfg in configs:
            lacking += [f"{cfg.label}: {m}" for m in missing(registry.get(cfg.name), cfg.params)]
    return lacking


def optional_missing(suite: Suite) -> list[str]:
    """What defenses and metrics lack here (weights): the run skips those defense configs
    and leaves those metric columns empty, saying what to add, and goes on."""
    lacking = []
    for registry, configs in ((DEFENSES, suite.defenses), (METRICS, suite.metrics)):
        for cfg in configs:
            lacking += [f"{cfg.label}: {m}" for m in missing(registry.get(cfg.name), cfg.params)]
    return lacking


def new_run_id(suite: Suite) -> str:
    """Sortable and unique: UTC time, the first 8 hex digits of the suite hash, and 4 random
    hex digits (two runs started in the same second get different folders)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    prefix = "smoke-" if suite.smoke else ""
    return f"{prefix}{stamp}-{suite.sha256[:8]}-{secrets.token_hex(2)}"


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


def _cells_cached(suite: Suite, plan: RunPlan, runner: UnitRunner) -> int | None:
    """How many of the plan's cells the cache held when the run started (None if unknown: a
    method that cannot even be built is reported by the unit that uses it)."""
    try:
        identities = {fr.cfg.label: fr.identity for fr in runner.fitted}
        fingerprint = runner.split_info["fingerprint"]
        keys = planned_keys(suite, plan, fingerprint, runner.ctx, identities)
    except Exception:
        return None
    return sum(runner.cache.contains("cell", key) for key in keys.values())


@contextlib.contextmanager
def _cold_cache() -> Iterator[Path]:
    """A new, empty cache folder, also the default of every ``Cache()`` made meanwhile (and of
    processes started meanwhile: ``PRIVBENCH_CACHE``); removed afterwards."""
    previous = os.environ.get("PRIVBENCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="privbench-smoke-cache-") as root:
        os.environ["PRIVBENCH_CACHE"] = root
        try:
            yield Path(root)
        finally:
            if previous is None:
                os.environ.pop("PRIVBENCH_CACHE", None)
            else:
                os.environ["PRIVBENCH_CACHE"] = previous


def run_suite(suite: Suite, options: RunOptions | None = None) -> RunResult:
    """Run ``suite`` and write ``<out_root>/<suite>/<run-id>/`` (manifest, results, records,
    leaderboard).

    A suite this machine cannot run is refused before any folder is made. The manifest is
    written first (status ``running``) and rewritten after each unit with everything finished
    so far, so a run killed even by SIGKILL leaves a readable folder; Ctrl-C and SIGTERM end it
    as ``interrupted`` / ``terminated`` after writing what finished.

    With ``options.smoke`` the suite is cut by :func:`harness.engine.smoke.smoke_plan` and run in a
    cold cache of its own; :class:`SmokeSkipped` when nothing of it can run here."""
    options = options or RunOptions()
    if not options.smoke:
        return _run(suite, options, [])
    cut = smoke_plan(suite)
    if cut.suite is None:
        raise SmokeSkipped(cut)
    with _cold_cache() as root:
        return _run(
            cut.suite, dataclasses.replace(options, cache_root=root, use_cache=True), cut.skipped
        )


def _run(suite: Suite, options: RunOptions, skipped: list[dict[str, Any]]) -> RunResult:
    lacking = missing_requirements(suite)
    if lacking:
        raise PrivbenchError(
            "this machine cannot run the suite yet:\n  - " + "\n  - ".join(lacking)
        )
    torch.manual_seed(suite.seed)
    np.random.seed(suite.seed % (2**32))
    executor = options.executor or LocalExecutor()
    plan = plan_run(suite)
    keyring = options.keyring or key_from_env() or benchmark_key(suite.seed)
    device = resolve_device(options.device or suite.device)
    runner = UnitRunner(suite, device, keyring, options.cache_root, options.use_cache)
    state = RunState(suite, runner)
    state.skipped += skipped
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
        "machine": device_info(device),
        "key": {"source": keyring.source},
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
                **m.describe(),
            }
            for cfg, (n, m) in zip(suite.metrics, runner.metrics.items(), strict=True)
        },
        "plan": {**describe(plan), "executor": executor.describe()},
        "started": started.isoformat(),
        **({"smoke": {"probes": SMOKE_PROBES, "note": SMOKE_NOTE}} if suite.smoke else {}),
    }
    last_board = [-float("inf")]

    def save_manifest(status: str) -> None:
        now = datetime.now(timezone.utc)
        manifest.update(
            {
                "status": status,
                "dataset": runner.split_info,
                "updated" if status == "running" else "finished": now.isoformat(),
                "duration_s": round((now - started).total_seconds(), 3),
                "stage_seconds": {k: round(v, 3) for k, v in state.timings(runner).items()},
                "cache": {
                    "enabled": runner.cache.enabled,
                    "hits": state.cache["hits"],
                    "misses": state.cache["misses"],
                    "damaged_and_recomputed": state.cache["damaged_and_recomputed"],
                },
                "failures": [
                    {k: f[k] for k in ("scope", "name", "error")} for f in state.all_failures()
                ],
                "skipped": state.all_skipped(),
            }
        )
        atomic_write_json(run_dir / "manifest.json", manifest)
        if status != "running" or time.monotonic() - last_board[0] >= LEADERBOARD_EVERY_S:
            board = render_markdown(manifest, state.rows, state.outcomes)
            atomic_write_text(run_dir / "leaderboard.md", board)
            last_board[0] = time.monotonic()

    def write_unit(unit: UnitResult) -> None:
        state.add(unit)
        for cell in unit.cells:
            atomic_write_jsonl(run_dir / "records" / f"{cell.stem}.jsonl", cell.records.rows())
        for rel, images in unit.samples.items():
            write_samples(run_dir / rel, images)
        if unit.records is not None and unit.records.quality:
            atomic_write_jsonl(
                quality_file(run_dir, unit.defense.label), quality_rows(unit.records)
            )
        atomic_write_jsonl(run_dir / "results.jsonl", state.rows)
        save_manifest("running")

    save_manifest("running")
    progress = None
    if options.progress:
        from tqdm import tqdm

        progress = tqdm(total=suite.n_cells, desc=f"{suite.name}", unit="cell", leave=False)
    status = "complete"
    try:
        with _sigterm_interrupts():
            results, failures = runner.prepare()
            state.prepared(results, failures)
            clean = runner.split.probe.images[runner.sample_index]  # type: ignore[union-attr]
            write_samples(run_dir / "samples/clean", clean)
            state.count_cache(runner)  # the set-up's; each unit brings its own counts
            manifest["plan"]["cells_cached_at_start"] = _cells_cached(suite, plan, runner)
            executor.run(runner, plan.units, write_unit, progress.update if progress else None)
    except Terminated:
        status = "terminated"
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException as exc:
        status = "failed"
        state.failures.append(failure("run", suite.name, exc))
        raise
    finally:
        if progress is not None:
            progress.close()
        failures = state.all_failures()
        if failures and status == "complete":
            status = "failed"
        atomic_write_jsonl(run_dir / "results.jsonl", state.rows)
        save_manifest(status)
    if status == "terminated":
        raise Terminated
    if status == "interrupted":
        raise KeyboardInterrupt
    return RunResult(run_dir, state.rows, manifest, failures)
