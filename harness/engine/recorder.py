"""A run's folder written as the run goes: the manifest first (status ``running``), then after
every unit its records, samples, the rows so far and the manifest again, so that a run killed
even by SIGKILL leaves a readable folder. The leaderboard is drawn by a sink the caller
chooses (:data:`BoardSink`; the command line's draws :mod:`harness.boards.leaderboard`), at
most every :data:`LEADERBOARD_EVERY_S` seconds while running and always at the end.

While the run goes, :data:`RESERVE_FILE` keeps some room on its disk: a run that the disk stops
frees it and writes its manifest as ``failed``, with the reason, in that room.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np

from harness.api.contracts import Metric
from harness.api.registry import DEFENSES, RECOGNIZERS
from harness.core.keys import Keyring
from harness.core.provenance import device_info, git_commit, package_versions
from harness.engine.execute import UnitResult, UnitRunner
from harness.engine.smoke import SMOKE_NOTE, SMOKE_PROBES
from harness.engine.state import RunState
from harness.engine.suite import MethodConfig, Suite
from harness.runs.folder import RunFolder, write_thumbnails
from harness.runs.manifest import Manifest, SuiteRef
from harness.runs.outcomes import Outcomes, quality_rows
from harness.runs.plugins import plugin_provenance, suite_methods

LEADERBOARD_EVERY_S = 5.0  # a running leaderboard.md is redrawn at most this often
# Room kept on the run's disk while it runs, released when it ends, so that a run stopped by a
# full disk can still write its manifest as ``failed`` (the manifest is rewritten atomically:
# a second copy must fit). At least RESERVE_MIN_BYTES, or this many times the first manifest.
RESERVE_FILE = ".privbench-reserve"
RESERVE_MIN_BYTES = 256 * 1024
RESERVE_MANIFESTS = 8

# Draws leaderboard.md from the manifest (as JSON), the metric rows and the per-image outcomes.
BoardSink = Callable[[dict[str, Any], list[dict[str, Any]], Outcomes], str]


def metric_entry(cfg: MethodConfig, metric: Metric) -> dict[str, Any]:
    """A metric as the manifest describes it: its definition and the settings that pin it."""
    return {
        "name": cfg.name,
        "params": cfg.params,
        "scope": metric.scope,
        "higher_is_better": metric.higher_is_better,
        "unit": metric.unit,
        "parity": metric.parity,
        "doc": (type(metric).__doc__ or "").strip(),
        **metric.describe(),
    }


def start_manifest(
    suite: Suite,
    run_id: str,
    runner: UnitRunner,
    keyring: Keyring,
    plan: dict[str, Any],
    started: datetime,
) -> Manifest:
    """The manifest of a run started at ``started``: what is known before anything runs."""
    return Manifest(
        run_id=run_id,
        suite=SuiteRef(suite.name, suite.path, suite.sha256, suite.files),
        config=suite.resolved(),
        recognizer_kinds={r.label: RECOGNIZERS.get(r.name).kind for r in suite.recognizers},
        roles={
            d.label: roles
            for d in suite.defenses
            if (roles := DEFENSES.get(d.name).recognizer_roles(d.params))
        },
        git=git_commit(),
        plugins=plugin_provenance(suite_methods(suite.resolved())),
        packages=package_versions(),
        machine=device_info(runner.ctx.device),
        key={"source": keyring.source},
        seed=suite.seed,
        metrics={
            label: metric_entry(cfg, metric)
            for cfg, (label, metric) in zip(suite.metrics, runner.metrics.items(), strict=True)
        },
        plan=plan,
        started=started.isoformat(),
        smoke={"probes": SMOKE_PROBES, "note": SMOKE_NOTE} if suite.smoke else None,
    )


class RunRecorder:
    """Writes one run's folder from its :class:`RunState` as units finish."""

    def __init__(
        self,
        folder: RunFolder,
        manifest: Manifest,
        state: RunState,
        runner: UnitRunner,
        board: BoardSink | None,
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.state = state
        self.runner = runner
        self.board = board
        self.started = datetime.fromisoformat(str(manifest.started))
        self._last_board = -float("inf")

    def save(self, status: str) -> None:
        """Rewrite the manifest with everything finished so far under ``status``, and the
        leaderboard when it is due."""
        now = datetime.now(timezone.utc)
        m, state = self.manifest, self.state
        m.status = status
        m.dataset = self.runner.split_info
        if status == "running":
            m.updated = now.isoformat()
        else:
            m.finished = now.isoformat()
        m.duration_s = round((now - self.started).total_seconds(), 3)
        m.stage_seconds = {k: round(v, 3) for k, v in state.timings(self.runner).items()}
        m.cache = state.cache
        if self.runner.cache.unwritable is not None:
            m.extra["cache_not_stored"] = self.runner.cache.unwritable
        m.failures = [{k: f[k] for k in ("scope", "name", "error")} for f in state.all_failures()]
        m.skipped = state.all_skipped()
        self.folder.write_manifest(m)
        due = time.monotonic() - self._last_board >= LEADERBOARD_EVERY_S
        if self.board is not None and (status != "running" or due):
            self.folder.write_leaderboard(self.board(m.to_json(), state.rows, state.outcomes))
            self._last_board = time.monotonic()

    def write_clean_samples(self, images: np.ndarray) -> None:
        # clean_samples_dir already starts with the folder's path (relative when --out is):
        # write_samples would join it to that path a second time
        write_thumbnails(self.folder.clean_samples_dir, images)

    def write_unit(self, unit: UnitResult) -> None:
        """A finished unit: its records, quality and samples, then the rows and manifest."""
        self.state.add(unit)
        defense = unit.defense.label
        for cell in unit.cells:
            key = (defense, cell.attack.label, cell.recognizer.label)
            self.folder.write_cell_records(key, cell.records.rows())
        for rel, images in unit.samples.items():
            self.folder.write_samples(rel, images)
        if unit.records is not None and unit.records.quality:
            self.folder.write_quality(defense, quality_rows(unit.records))
        self.folder.write_rows(self.state.rows)
        self.save("running")

    def finish(self, status: str) -> None:
        """The last rows and the manifest under the run's final ``status``, with the digests
        of the results and records files as they are now (harness.runs.sealed)."""
        self.release_reserve()
        self.folder.write_rows(self.state.rows)
        self.manifest.digests = self.folder.digests()
        self.save(status)

    def fail_for_storage(self) -> None:
        """The manifest alone as ``failed``, in the room the reserve kept (the rows stay as the
        last unit that was written whole left them)."""
        self.release_reserve()
        self.save("failed")

    def keep_reserve(self) -> None:
        """Fill :data:`RESERVE_FILE` (best effort: a disk that cannot hold it gets none)."""
        size = max(RESERVE_MIN_BYTES, RESERVE_MANIFESTS * self.folder.manifest_file.stat().st_size)
        path = self.folder.path / RESERVE_FILE
        try:
            with path.open("wb") as f:
                for _ in range(0, size, 1 << 16):
                    f.write(bytes(1 << 16))
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            self.release_reserve()

    def release_reserve(self) -> None:
        with contextlib.suppress(OSError):
            (self.folder.path / RESERVE_FILE).unlink(missing_ok=True)
