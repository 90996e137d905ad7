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
import secrets
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS
from harness.core.errors import PrivbenchError
from harness.core.keys import Keyring, benchmark_key, key_from_env
from harness.core.paths import check_segment
from harness.core.provenance import resolve_device
from harness.engine.execute import UnitRunner, failure, missing
from harness.engine.executors import Executor, LocalExecutor
from harness.engine.plan import RunPlan, describe, plan_run, planned_keys
from harness.engine.recorder import BoardSink, RunRecorder, start_manifest
from harness.engine.smoke import SmokeSkipped, smoke_plan
from harness.engine.state import RunState
from harness.engine.suite import Suite
from harness.runs.folder import RunFolder
from harness.runs.lock import RunBusyError, RunLock
from harness.runs.manifest import Manifest
from harness.runs.replace import discard, made_by_privbench, move_aside, put_back


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


def _make_run_dir(
    suite: Suite, options: RunOptions, held: contextlib.ExitStack
) -> tuple[str, RunFolder, Path | None]:
    """A new run folder ``<out_root>/<suite>/<run-id>``, locked for the run (the lock is left
    in ``held``), and the folder it replaces, moved aside (None when it replaces none).

    An explicit ``run_id`` that exists is refused unless ``overwrite``, and even then only a
    run folder privbench made is replaced (:mod:`harness.runs.replace`); a run that holds the
    same id is refused at once, naming its pid and host (:mod:`harness.runs.lock`)."""
    root = Path(options.out_root) / check_segment(suite.name, "suite name")
    if options.run_id is None:
        run_id = _new_run_dir(suite, root, held)
        return run_id, RunFolder(root / run_id), None
    run_id = check_segment(options.run_id, "run id")
    held.enter_context(RunLock(root, run_id))
    run_dir, aside = root / run_id, None
    if os.path.lexists(run_dir):
        made_by_privbench(run_dir, "choose another --run-id, or move it away yourself")
        if not options.overwrite:
            raise PrivbenchError(
                f"{run_dir} already holds a run; choose another --run-id, or pass "
                "--overwrite to replace it"
            )
        aside = move_aside(run_dir)
    try:
        run_dir.mkdir()
    except BaseException:
        if aside is not None:
            put_back(aside, run_dir)
        raise
    return run_id, RunFolder(run_dir), aside


def _new_run_dir(suite: Suite, root: Path, held: contextlib.ExitStack) -> str:
    """A new run id whose folder this run made under ``root`` and holds the lock of."""
    while True:
        run_id = new_run_id(suite)
        lock = RunLock(root, run_id)
        try:
            lock.acquire()
        except RunBusyError:
            continue
        held.callback(lock.release)  # a no-op for a lock given back below
        if _claim(root / run_id):
            return run_id
        lock.release()


def _claim(path: Path) -> bool:
    """Make the folder ``path``; False if it exists (another run took the name)."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return False
    return True


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
    folder name; else seed, plan, make the folder (locked for as long as ``held``) and write
    the first manifest (status ``running``). A folder replaced by ``overwrite`` is deleted once
    that manifest is written, and put back if it could not be."""
    check_segment(suite.name, "suite name")
    if options.run_id is not None:
        check_segment(options.run_id, "run id")
    lacking = missing_requirements(suite)
    if lacking:
        raise PrivbenchError(
            "this machine cannot run the suite yet:\n  - " + "\n  - ".join(lacking)
        )
    run_id, folder, aside = _make_run_dir(suite, options, held)  # a busy run id: refused now
    try:
        torch.manual_seed(suite.seed)
        np.random.seed(suite.seed % (2**32))
        executor = options.executor or LocalExecutor()
        plan = plan_run(suite)
        keyring = options.keyring or key_from_env() or benchmark_key(suite.seed)
        device = resolve_device(options.device or suite.device)
        runner = UnitRunner(suite, device, keyring, options.cache_root, options.use_cache)
        state = RunState(suite, runner)
        state.skipped += skipped
        started = datetime.now(timezone.utc)
        described = {**describe(plan), "executor": executor.describe()}
        manifest = start_manifest(suite, run_id, runner, keyring, described, started)
        recorder = RunRecorder(folder, manifest, state, runner, options.board)
        recorder.save("running")
    except BaseException:
        _abandon(folder, aside)
        raise
    if aside is not None:
        discard(aside)
    return _Run(suite, plan, executor, runner, recorder)


def _abandon(folder: RunFolder, aside: Path | None) -> None:
    """Undo the folder of a run that could not start: the folder it replaced goes back in its
    place, or the new folder is removed if nothing was written into it."""
    if aside is not None:
        put_back(aside, folder.path)
        return
    with contextlib.suppress(OSError):
        folder.path.rmdir()  # only an empty folder: a manifest written stays readable


def _execute(run: _Run, progress: bool) -> str:
    """Prepare the recognizers and run every unit; the run's status: ``complete``,
    ``terminated`` (SIGTERM) or ``interrupted`` (Ctrl-C). Any other exception is recorded as
    the run's failure, and raised once what finished is written."""
    runner, recorder = run.runner, run.recorder
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=run.suite.n_cells, desc=f"{run.suite.name}", unit="cell", leave=False)
    status = "complete"
    try:
        with _sigterm_interrupts():
            results, failures = runner.prepare()
            recorder.state.prepared(results, failures)
            clean = runner.split.probe.images[runner.sample_index]  # type: ignore[union-attr]
            recorder.write_clean_samples(clean)
            recorder.state.count_cache(runner)  # the set-up's; each unit brings its own counts
            recorder.manifest.plan["cells_cached_at_start"] = _cells_cached(
                run.suite, run.plan, runner
            )
            run.executor.run(
                runner, run.plan.units, recorder.write_unit, bar.update if bar else None
            )
    except Terminated:
        status = "terminated"
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException as exc:
        recorder.state.failures.append(failure("run", run.suite.name, exc))
        recorder.finish("failed")
        raise
    finally:
        if bar is not None:
            bar.close()
    return status


def _run(suite: Suite, options: RunOptions, skipped: list[dict[str, Any]]) -> RunResult:
    with contextlib.ExitStack() as held:  # the run folder's lock, until the run has ended
        run = _set_up(suite, options, skipped, held)
        status = _execute(run, options.progress)
        failures = run.recorder.state.all_failures()
        if failures and status == "complete":
            status = "failed"
        run.recorder.finish(status)
        if status == "terminated":
            raise Terminated
        if status == "interrupted":
            raise KeyboardInterrupt
        return RunResult(
            run.recorder.folder.path, run.recorder.state.rows, run.recorder.manifest, failures
        )
