"""Turn a validated suite into a run folder (docs/architecture.md, "How a run flows").

A run has three parts: :mod:`harness.engine.plan` (the suite's work units, one per defense
config, and their cache keys), an executor (:mod:`harness.engine.executors`: here, or on a Dask
cluster) that runs :mod:`harness.engine.execute` on each unit, and :mod:`harness.engine.score`
(records → metric rows). This module ties them together; :mod:`harness.engine.recorder` writes
the run folder as units finish, in plan order. The engine draws no leaderboard itself: the
caller passes a sink (``RunOptions.board``; :mod:`harness.cli.wiring` passes the boards').
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS
from harness.core.errors import CacheError, PrivbenchError, StorageError
from harness.core.files import is_storage_error
from harness.core.keys import Keyring, benchmark_key, key_from_env
from harness.core.paths import check_segment
from harness.core.provenance import resolve_device
from harness.core.signals import Terminated, signal_name, sigterm_raises
from harness.engine.execute import UnitRunner, failure, missing
from harness.engine.executors import Executor, LocalExecutor
from harness.engine.plan import RunPlan, describe, plan_run, planned_keys
from harness.engine.progress import RunProgress
from harness.engine.recorder import BoardSink, RunRecorder, start_manifest
from harness.engine.results import UnitResult
from harness.engine.resume import RESUMED_FROM, attempts
from harness.engine.run_dir import abandon, make_run_dir, reopen_run_dir
from harness.engine.smoke import SmokeSkipped, smoke_plan
from harness.engine.state import RunState
from harness.engine.suite import Suite
from harness.runs.folder import resume_command
from harness.runs.manifest import Manifest
from harness.runs.replace import discard

__all__ = ["RunOptions", "RunResult", "Terminated", "run_suite"]


@dataclass
class RunOptions:
    """How to run: where results go, whether to use the cache, progress display, executor, and
    what draws leaderboard.md (``board``; None: no leaderboard)."""

    out_root: Path = Path("results")
    use_cache: bool = True
    cache_root: Path | None = None
    progress: bool = True
    run_id: str | None = None
    device: str | None = None
    keyring: Keyring | None = None
    overwrite: bool = False  # replace the run folder (one privbench made) of an explicit run_id
    executor: Executor | None = None  # default: LocalExecutor
    smoke: bool = (
        False  # harness.engine.smoke: every method on a few probes, in a cold cache of its own
    )
    board: BoardSink | None = None
    # an unwritable cache folder stops the run before it starts, instead of a warning
    cache_required: bool = False
    resume: bool = False  # finish the run of ``run_id`` in its folder (harness.engine.resume)


@dataclass
class RunResult:
    """What a run produced: its folder, metric rows, manifest (typed, ``info``; as written,
    ``manifest``) and failures."""

    run_dir: Path
    rows: list[dict[str, Any]]
    info: Manifest
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as written to ``manifest.json``."""
        return self.info.to_json()


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
    samples; leaderboard.md when ``options.board`` draws one).

    A suite this machine cannot run is refused before any folder is made. The manifest is
    written first (status ``running``) and rewritten after each unit with everything finished
    so far, so a run killed even by SIGKILL leaves a readable folder; Ctrl-C and SIGTERM end it
    as ``interrupted`` (``interrupted_by``: ``SIGINT`` / ``SIGTERM``) after writing what
    finished. A disk that is full (or read-only) ends it as :class:`StorageError`, the manifest
    ``failed`` with the reason where it can still be written; ``options.resume`` finishes such
    a run in its folder. A cache folder that cannot be written is a warning, and nothing is
    stored in it (``options.cache_required``: :class:`CacheError` before any folder is made).

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


@dataclass
class _Run:
    """The parts of one run, once it is set up."""

    suite: Suite
    plan: RunPlan
    executor: Executor
    runner: UnitRunner
    recorder: RunRecorder


def _set_up(
    suite: Suite, options: RunOptions, skipped: list[dict[str, Any]], held: contextlib.ExitStack
) -> _Run:
    """Refuse a suite this machine cannot run and a run id or suite name that is not one
    folder name; else make the folder (or reopen it, to resume), locked for as long as
    ``held``, seed, plan, refuse a cache it cannot write when that is required, and write the
    first manifest (status ``running``). A folder replaced by ``overwrite`` is deleted once
    that manifest is written, and put back if it could not be."""
    check_segment(suite.name, "suite name")
    if options.run_id is not None:
        check_segment(options.run_id, "run id")
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
    _check_cache(runner, options.cache_required)  # before any folder is made
    if options.resume:
        folder, earlier = reopen_run_dir(suite, options.out_root, options.run_id, held)
        run_id, aside = earlier.run_id, None
    else:
        run_id, folder, aside = make_run_dir(
            suite, options.out_root, options.run_id, options.overwrite, held
        )  # a busy id: refused now
        earlier = None
    try:
        state = RunState(suite, runner)
        state.skipped += skipped
        started = datetime.now(timezone.utc)
        described = {**describe(plan), "executor": executor.describe()}
        manifest = start_manifest(suite, run_id, runner, keyring, described, started)
        if earlier is not None:
            manifest.extra[RESUMED_FROM] = attempts(earlier)
        recorder = RunRecorder(folder, manifest, state, runner, options.board)
        recorder.save("running")
    except BaseException:
        if earlier is None:
            abandon(folder, aside)
        raise
    if aside is not None:
        discard(aside)
    recorder.keep_reserve()
    return _Run(suite, plan, executor, runner, recorder)


def _check_cache(runner: UnitRunner, required: bool) -> None:
    """Try a write in the cache folder before the run starts: if it fails, CacheError when the
    cache is ``required``, else one warning and a run that stores nothing in it."""
    cache = runner.cache
    reason = cache.probe_writable() if cache.enabled else None
    if reason is None:
        return
    if required:
        raise CacheError(
            f"the cache folder {cache.root} cannot be written ({reason}); make it writable, "
            "point PRIVBENCH_CACHE at a folder that is, or run with --cache auto (go on without "
            "storing) or --cache off"
        )
    cache.stop_writing(reason)


def _execute(run: _Run, progress: bool) -> str:
    """Prepare the recognizers and run every unit; the run's status: ``complete``, or
    ``interrupted`` (Ctrl-C or SIGTERM: the manifest's ``interrupted_by`` says which). Any
    other exception is recorded as the run's failure, and raised once what finished is
    written (as far as the disk still takes it)."""
    runner, recorder = run.runner, run.recorder
    bar = None
    if progress:
        in_order = bool(getattr(run.executor, "in_plan_order", False))
        bar = RunProgress(run.suite.name, run.suite.n_cells, run.plan.units, in_order)
    status = "complete"
    try:
        with sigterm_raises():
            results, failures = runner.prepare()
            recorder.state.prepared(results, failures)
            clean = runner.split.probe.images[runner.sample_index]  # type: ignore[union-attr]
            recorder.write_clean_samples(clean)
            recorder.state.count_cache(runner)  # the set-up's; each unit brings its own counts
            recorder.manifest.plan["cells_cached_at_start"] = _cells_cached(
                run.suite, run.plan, runner
            )
            if bar is not None:
                bar.started()
            run.executor.run(
                runner, run.plan.units, _done(recorder, bar), bar.tick if bar else None
            )
    except KeyboardInterrupt as exc:
        status = "interrupted"
        recorder.manifest.extra["interrupted_by"] = signal_name(exc)
    except BaseException as exc:
        recorder.state.failures.append(failure("run", run.suite.name, exc))
        _finish_if_possible(recorder, exc)
        raise
    finally:
        if bar is not None:
            bar.close()
    return status


def _done(recorder: RunRecorder, bar: RunProgress | None) -> Callable[[UnitResult], None]:
    """What the executor calls with each finished unit: the recorder writes it, the bar moves
    on to the next."""
    if bar is None:
        return recorder.write_unit

    def done(result: UnitResult) -> None:
        recorder.write_unit(result)
        bar.unit_done()

    return done


def _finish_if_possible(recorder: RunRecorder, exc: BaseException) -> None:
    """The run ``failed`` because of ``exc``: its last rows and manifest, or for a full disk the
    manifest alone (in the room the reserve kept); nothing if the disk refuses even that (the
    run's own error is the one to report)."""
    try:
        if is_storage_error(exc):
            recorder.fail_for_storage()
        else:
            recorder.finish("failed")
    except OSError as again:
        if not is_storage_error(again):
            raise


def _finish(run: _Run, status: str) -> None:
    """The run's last rows and manifest under ``status``; if the disk refuses them, the run
    ``failed`` with that reason where the manifest can still be written, and the error raised."""
    try:
        run.recorder.finish(status)
    except OSError as exc:
        if is_storage_error(exc):
            run.recorder.state.failures.append(failure("run", run.suite.name, exc))
            _finish_if_possible(run.recorder, exc)
        raise


@contextlib.contextmanager
def _storage_errors_named(suite: Suite, run_dirs: list[Path]) -> Iterator[None]:
    """Turn a write that failed for want of space or permission into :class:`StorageError`,
    naming the file and how to finish the run (``run_dirs``: its folder, once it has one) once
    the disk takes it."""
    try:
        yield
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        what = exc.filename or "a file of the run"
        resume = (
            resume_command(str(suite.path), run_dirs[0].name, run_dirs[0])
            if run_dirs
            else "run the command again"
        )
        raise StorageError(
            f"cannot write {what}: {exc.strerror}. Free space on that disk (or make the folder "
            f"writable); the units that finished are kept; then finish the run: {resume}"
        ) from exc


def _run(suite: Suite, options: RunOptions, skipped: list[dict[str, Any]]) -> RunResult:
    run_dirs: list[Path] = []  # once the folder holds a manifest, a run that can be resumed
    with contextlib.ExitStack() as held, _storage_errors_named(suite, run_dirs):
        run = _set_up(suite, options, skipped, held)  # held: the folder's lock, until the end
        if not suite.smoke:
            run_dirs.append(run.recorder.folder.path)
        status = _execute(run, options.progress)
        failures = run.recorder.state.all_failures()
        if failures and status == "complete":
            status = "failed"
        _finish(run, status)
    if status == "interrupted":
        by = run.recorder.manifest.extra["interrupted_by"]
        raise Terminated if by == "SIGTERM" else KeyboardInterrupt
    return RunResult(
        run.recorder.folder.path, run.recorder.state.rows, run.recorder.manifest, failures
    )
