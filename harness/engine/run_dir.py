"""Where a run writes: its folder ``<out_root>/<suite>/<run-id>``, made new, made in place of a
run folder privbench made before (``--overwrite``), or reopened to finish a run
(``--resume``); locked for the whole run (:mod:`harness.runs.lock`), so that one process at a
time writes it (docs/security.md, "Writes stay where they belong")."""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from harness.core.errors import PrivbenchError
from harness.core.paths import check_segment
from harness.engine.resume import open_run_dir, remove_partial_files
from harness.engine.suite import Suite
from harness.runs.folder import RunFolder
from harness.runs.lock import RunBusyError, RunLock
from harness.runs.manifest import Manifest
from harness.runs.replace import made_by_privbench, move_aside, put_back


def new_run_id(suite: Suite) -> str:
    """Sortable and unique: UTC time, the first 8 hex digits of the suite hash, and 4 random
    hex digits (two runs started in the same second get different folders)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    prefix = "smoke-" if suite.smoke else ""
    return f"{prefix}{stamp}-{suite.sha256[:8]}-{secrets.token_hex(2)}"


def make_run_dir(
    suite: Suite,
    out_root: Path,
    run_id: str | None,
    overwrite: bool,
    held: contextlib.ExitStack,
) -> tuple[str, RunFolder, Path | None]:
    """A new run folder ``<out_root>/<suite>/<run-id>``, locked for the run (the lock is left
    in ``held``), and the folder it replaces, moved aside (None when it replaces none).

    An explicit ``run_id`` that exists is refused unless ``overwrite``, and even then only a
    run folder privbench made is replaced (:mod:`harness.runs.replace`); a run that holds the
    same id is refused at once, naming its pid and host (:mod:`harness.runs.lock`)."""
    root = Path(out_root) / check_segment(suite.name, "suite name")
    if run_id is None:
        run_id = _new_run_dir(suite, root, held)
        return run_id, RunFolder(root / run_id), None
    run_id = check_segment(run_id, "run id")
    held.enter_context(RunLock(root, run_id))
    run_dir, aside = root / run_id, None
    if _empty_folder(run_dir):  # a run killed before it wrote its manifest: nothing to keep
        if not overwrite:
            raise PrivbenchError(
                f"{run_dir} is the empty folder of a run killed before it wrote anything; "
                "pass --overwrite to run again in it, or choose another --run-id"
            )
        run_dir.rmdir()
    if os.path.lexists(run_dir):
        made_by_privbench(run_dir, "choose another --run-id, or move it away yourself")
        if not overwrite:
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


def _empty_folder(path: Path) -> bool:
    """Whether ``path`` is a real folder with nothing in it."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


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


def reopen_run_dir(
    suite: Suite, out_root: Path, run_id: str | None, held: contextlib.ExitStack
) -> tuple[RunFolder, Manifest]:
    """The folder of ``run_id`` to resume, locked for as long as ``held``, with its manifest as
    it was, cleared of the temporary files a killed writer left."""
    if run_id is None:
        raise PrivbenchError("--resume needs the --run-id of the run to finish")
    root = Path(out_root) / check_segment(suite.name, "suite name")
    if not (root / check_segment(run_id, "run id")).is_dir():  # before the lock makes ``root``
        raise PrivbenchError(
            f"--resume: {root / run_id} does not exist; check --out (the results root the run "
            "was written under), or start the run without --resume"
        )
    held.enter_context(RunLock(root, run_id))
    folder, earlier = open_run_dir(suite, out_root, run_id)
    remove_partial_files(folder)
    return folder, earlier


def abandon(folder: RunFolder, aside: Path | None) -> None:
    """Undo the folder of a run that could not start: the folder it replaced goes back in its
    place, or the new folder is removed if nothing was written into it."""
    if aside is not None:
        put_back(aside, folder.path)
        return
    with contextlib.suppress(OSError):
        folder.path.rmdir()  # only an empty folder: a manifest written stays readable
