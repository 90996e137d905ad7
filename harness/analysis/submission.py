"""Submission archives: one finished run packed with everything needed to judge and merge it.

``privbench submit RUN_DIR`` writes a ``.tar.gz`` holding the run's manifest, metric rows,
per-image records, per-image quality and sample thumbnails under ``run/``, the suite files it
ran (when they still hash to the run's suite sha256) under ``suite/``, optionally the plugins'
source under ``source/``, and ``submission.json``: the suite hash, the data fingerprint and
protocol, each plugin's distribution name, version and the sha256 of its source files, the
environment the run had, and the sha256 of every other member.

Reading an archive verifies every member against those digests and refuses unlisted, missing
or unsafe members. The digests catch damage, not forgery: whoever trusts a submission reruns
its suite with the plugin whose source hashes it names.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import __version__
from harness.core.errors import PrivbenchError
from harness.core.files import atomic_write_bytes
from harness.core.limits import GRID_CELLS, MIB, shorten
from harness.core.paths import check_apart
from harness.engine.suite import load_suite
from harness.runs.archive import (
    ARCHIVE_SUFFIXES,
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    RUN_PREFIX,
    sha256_hex,
)
from harness.runs.folder import Run, RunFolder
from harness.runs.manifest import Manifest
from harness.runs.plugins import package_root, source_files, verify_installed
from harness.runs.sealed import check_sealed


def _run_members(folder: RunFolder) -> dict[str, bytes]:
    return {
        f"{RUN_PREFIX}/{p.relative_to(folder.path).as_posix()}": p.read_bytes()
        for p in folder.packed_files()
    }


def _suite_members(manifest: Manifest) -> tuple[dict[str, bytes], str]:
    """The suite's files, if they still are the ones the run used, and what was done."""
    suite = manifest.suite
    try:
        # the run already passed its cell limit (perhaps raised with --max-cells): re-reading
        # the suite must not refuse it for its size
        cells = manifest.plan.get("cells")
        ran = cells if isinstance(cells, int) and not isinstance(cells, bool) else 0
        limit = max(ran, GRID_CELLS.value())
        current = load_suite(suite.path, max_cells=limit) if suite.path else None
    except (PrivbenchError, OSError):
        current = None
    if current is None or current.sha256 != suite.sha256:
        return {}, "not included: the suite file is gone or has changed since the run"
    # the files the suite reads now (which hash to the run's), never the paths the manifest
    # lists: a manifest from elsewhere could name any file on this machine
    files = [Path(f) for f in current.files]
    if len({f.name for f in files}) != len(files):
        return {}, "not included: two of its files share a name"
    return {f"suite/{f.name}": f.read_bytes() for f in files}, "included under suite/"


def _source_members(plugins: list[dict[str, Any]]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for plugin in plugins:
        for provided in plugin["provides"].values():
            for method in provided:
                module = method["class"].rsplit(".", 1)[0]
                base = package_root(module).parent
                for rel in source_files(module):
                    out[f"source/{plugin['distribution']}/{rel}"] = (base / rel).read_bytes()
    return out


def _submittable(folder: RunFolder, manifest: Manifest) -> list[dict[str, Any]]:
    """The run's plugins, or PrivbenchError saying why the run cannot be submitted: it did not
    finish, its files changed since (:mod:`harness.runs.sealed`), it is a smoke run, or it
    did not record its plugins."""
    run_dir = folder.path
    check_sealed(run_dir, folder, manifest, "submitted")
    if manifest.smoke:
        raise PrivbenchError(
            f"{run_dir} is a smoke run (--smoke): its numbers measure nothing; submit a full run"
        )
    if manifest.plugins is None:
        raise PrivbenchError(
            f"{run_dir} was made by a privbench that did not record its plugins; run it again"
        )
    return manifest.plugins


def _index(
    manifest: Manifest, members: dict[str, bytes], suite_note: str, with_source: bool
) -> dict[str, Any]:
    """``submission.json``: what the archive holds and the sha256 of every other member."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(),
        "packed_by": f"privbench {__version__}",
        "run_id": manifest.run_id,
        "suite": {
            "name": manifest.suite.name,
            "sha256": manifest.suite.sha256,
            "files": suite_note,
        },
        "data": {
            "fingerprint": manifest.fingerprint,
            "protocol": manifest.protocol,
            "dataset": manifest.config.get("dataset"),
        },
        "defenses": manifest.defense_labels,
        "plugins": manifest.plugins,
        "source_included": with_source,
        "environment": {
            "privbench": manifest.privbench_version,
            "git": manifest.git,
            "packages": manifest.packages,
            "machine": manifest.machine,
        },
        "files": {name: sha256_hex(data) for name, data in sorted(members.items())},
    }


def _write_archive(output: Path, members: dict[str, bytes]) -> None:
    """``members`` as a .tar.gz, the index first, written atomically (a temporary file
    beside ``output``, then renamed over it)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name in [INDEX, *sorted(set(members) - {INDEX})]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(members[name]), 0o644
            tar.addfile(info, io.BytesIO(members[name]))
    atomic_write_bytes(output, data.getvalue())  # a full disk: the CLI's named storage error


def _is_submission(path: Path) -> bool:
    """Whether ``path`` is a regular file whose first member is a privbench index."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
            if first is None or first.name != INDEX or not first.isfile() or first.size > MIB:
                return False
            index = json.loads(tar.extractfile(first).read())  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError, ValueError, RecursionError):
        return False
    return isinstance(index, dict) and index.get("format") == FORMAT


def _default_name(manifest: Manifest) -> str:
    """``<suite>-<run-id>.tar.gz`` in the current folder, if that is one file name."""
    name = f"{manifest.suite.name}-{manifest.run_id}.tar.gz"
    if "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise PrivbenchError(
            f"the run's suite name and run id ({shorten(name, 160)!r}) do not make a file name "
            "in this folder; name the archive with -o"
        )
    return name


def _check_output(output: Path, run_dir: Path) -> None:
    """PrivbenchError unless ``output`` may be written: named *.tar.gz, outside the run
    folder, and new or a submission archive (which it replaces)."""
    if not str(output).endswith(ARCHIVE_SUFFIXES):
        raise PrivbenchError(f"{output}: name the archive *.tar.gz")
    check_apart(output, [run_dir], "archive")
    if os.path.lexists(output) and not _is_submission(output):
        raise PrivbenchError(
            f"{output} exists and is not a privbench submission archive (it may be a link, a "
            "folder or someone else's file); privbench replaces only its own archives: "
            "choose another -o, or move it away yourself"
        )


def pack(run_dir: Path, output: Path | None = None, with_source: bool = False) -> Path:
    """Write the submission archive of the finished run ``run_dir``; returns its path."""
    folder = RunFolder(Path(run_dir))
    manifest = folder.read_manifest()
    Run.load(folder.path)  # a folder whose results or records cannot be read is not submitted
    plugins = _submittable(folder, manifest)
    if output is None:
        output = Path(_default_name(manifest))
    output = Path(output)
    _check_output(output, folder.path)
    verify_installed(plugins)
    members = _run_members(folder)
    suite_files, suite_note = _suite_members(manifest)
    members.update(suite_files)
    if with_source:
        members.update(_source_members(plugins))
    index = _index(manifest, members, suite_note, with_source)
    members[INDEX] = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
    _write_archive(output, members)
    return output
