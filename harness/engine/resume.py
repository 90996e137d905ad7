"""``privbench run SUITE --run-id ID --resume``: an existing run folder of the same suite
reopened, so that a run stopped by a full disk, a signal or a crash finishes in place.

The resumed run runs every unit again: the units the folder already holds come from the cache
at once, and every file of the folder is rewritten whole (atomically), never appended to, so a
cell's records are never written twice. The manifest keeps what each earlier attempt ended as
(``resumed_from``). Temporary files that a killed writer left behind are removed first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core.errors import PrivbenchError
from harness.core.paths import check_segment
from harness.engine.suite import Suite
from harness.runs.folder import RunFolder
from harness.runs.manifest import Manifest

RESUMED_FROM = "resumed_from"  # the manifest key listing the attempts before this one


def open_run_dir(suite: Suite, out_root: Path, run_id: str) -> tuple[RunFolder, Manifest]:
    """The folder ``<out_root>/<suite>/<run_id>`` to resume and its manifest as it is.

    PrivbenchError (nothing is written) unless ``run_id`` is one path segment, the folder is a
    privbench run folder of this very suite (its manifest names the same suite sha256), and
    the run there has not completed."""
    check_segment(run_id, "run id")
    folder = RunFolder(Path(out_root) / suite.name / run_id)
    if not folder.path.is_dir():
        raise PrivbenchError(
            f"--resume: {folder.path} does not exist; start the run without --resume"
        )
    if not any(folder.path.iterdir()):
        raise PrivbenchError(
            f"--resume: {folder.path} is empty: its run was killed before it wrote anything, so "
            "there is nothing to finish; run it again with --overwrite instead of --resume"
        )
    if not folder.manifest_file.is_file():
        raise PrivbenchError(
            f"--resume: {folder.path} has no {folder.manifest_file.name}: not a privbench run "
            "folder (a run killed before it wrote anything); remove it or choose another --run-id"
        )
    manifest = folder.read_manifest()
    if manifest.suite.sha256 != suite.sha256:
        raise PrivbenchError(
            f"--resume: {folder.path} holds a run of another suite (sha256 "
            f"{manifest.suite.sha256[:12]}, {suite.path} is {suite.sha256[:12]}); resume it "
            "with the suite it ran, or choose another --run-id"
        )
    if manifest.complete:
        raise PrivbenchError(f"--resume: the run in {folder.path} is complete; nothing to resume")
    return folder, manifest


def remove_partial_files(folder: RunFolder) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (an atomic write's
    ``.<name>.<random>.tmp``, a thumbnail's ``.<k>.png.tmp``), so that nothing half-written is
    ever read or packed; the paths removed. Only for a folder this process holds."""
    partial = [p for p in folder.path.rglob(".*.tmp") if p.is_file() and not p.is_symlink()]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def attempts(previous: Manifest) -> list[dict[str, Any]]:
    """What the manifest of a resumed run says of the attempts before it: theirs, and the
    one that ``previous`` records (how it ended, and why)."""
    earlier = list(previous.extra.get(RESUMED_FROM) or [])
    run_failures = [f["error"] for f in previous.failures if f.get("scope") == "run"]
    earlier.append(
        {
            "status": previous.status,
            "started": previous.started,
            "ended": previous.finished or previous.updated,
            **({"reason": run_failures[-1]} if run_failures else {}),
            **(
                {"interrupted_by": previous.extra["interrupted_by"]}
                if "interrupted_by" in previous.extra
                else {}
            ),
        }
    )
    return earlier
