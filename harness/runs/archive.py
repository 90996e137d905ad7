"""Submission archives read back: verified member by member, and a run folder made from one.

An archive (written by :mod:`harness.analysis.submission`) lists the sha256 of every member in
``submission.json``; reading verifies each and refuses unlisted, missing or unsafe members.
Archives come from others (docs/security.md): they are read as a stream, each member copied
to disk in chunks while it is hashed, never whole into memory (only the index, itself
bounded), within the member count and size limits of :mod:`harness.core.limits`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from harness.core.errors import PrivbenchError
from harness.runs.archive_stream import read_members

FORMAT = "privbench-submission"
FORMAT_VERSION = 1
INDEX = "submission.json"
RUN_PREFIX = "run"  # the run folder's files are under run/ (harness.runs.folder.PACKED)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    """Whether ``path`` names a submission archive rather than a run folder."""
    return Path(path).is_file() and str(path).endswith(ARCHIVE_SUFFIXES)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Members(Mapping[str, bytes]):
    """The verified members of an archive, kept in a folder: ``members[name]`` reads that
    member's file, :meth:`path` gives it."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths

    def path(self, name: str) -> Path:
        """Where the member ``name`` was written."""
        return self._paths[name]

    def __getitem__(self, name: str) -> bytes:
        return self._paths[name].read_bytes()

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _temporary_folder() -> Path:
    target = Path(tempfile.mkdtemp(prefix="privbench-submission-"))
    atexit.register(shutil.rmtree, target, True)
    return target


def read_archive(archive: Path) -> tuple[dict[str, Any], Members]:
    """The index and verified members of a submission archive (the members are written into
    a temporary folder that is removed when the process ends)."""
    target = _temporary_folder()
    index, paths = _verify(Path(archive), lambda rel: target.joinpath(*rel.parts))
    return index, Members(paths)


def extract_run(archive: Path, target: Path) -> dict[str, Any]:
    """Verify ``archive`` and write its run folder into ``target``; returns the index."""

    def destination(rel: PurePosixPath) -> Path | None:
        if rel.parts[0] != RUN_PREFIX or len(rel.parts) < 2:
            return None  # verified, not kept
        return target.joinpath(*rel.parts[1:])

    index, _ = _verify(Path(archive), destination)
    return index


def run_folder(path: Path) -> Path:
    """``path`` itself for a run folder; for a submission archive, a verified copy of its run
    in a temporary folder that is removed when the process ends."""
    path = Path(path)
    if not is_archive(path):
        return path
    target = _temporary_folder()
    extract_run(path, target)
    return target


def _verify(
    archive: Path, destination: Callable[[PurePosixPath], Path | None]
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Read ``archive``, writing each member where ``destination`` says (None: hash only);
    the checked index and where each kept member went. PrivbenchError for anything that is not
    a complete, unaltered submission."""
    raw_index, digests, paths = read_members(archive, INDEX, destination)
    index = _index(archive, raw_index)
    listed: dict[str, str] = index["files"]
    for name in sorted(set(listed) | set(digests)):
        if name not in digests:
            raise PrivbenchError(f"{archive}: {name} is listed in {INDEX} but missing")
        if name not in listed:
            raise PrivbenchError(f"{archive}: {name} is not listed in {INDEX}; refusing it")
        if digests[name] != listed[name]:
            raise PrivbenchError(f"{archive}: {name} does not match its sha256 (damaged)")
    return index, paths


def _index(archive: Path, raw: bytes | None) -> dict[str, Any]:
    """The parsed index: a mapping of the right format whose ``files`` maps member names to
    sha256 digests; PrivbenchError otherwise."""
    not_ours = PrivbenchError(f"{archive}: no valid {INDEX}; not a privbench submission")
    if raw is None:
        raise not_ours
    try:
        index = json.loads(raw)
    except (ValueError, RecursionError):
        raise not_ours from None
    if not isinstance(index, dict):
        raise not_ours
    if index.get("format") != FORMAT or index.get("format_version") != FORMAT_VERSION:
        shown = str(index.get("format"))[:40], str(index.get("format_version"))[:10]
        raise PrivbenchError(
            f"{archive}: {INDEX} says format {shown[0]!r} version {shown[1]!r}; this "
            f"privbench reads {FORMAT} {FORMAT_VERSION}"
        )
    files = index.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise PrivbenchError(
            f"{archive}: {INDEX}: 'files' must map member names to sha256 digests (strings)"
        )
    index["files"] = files
    return index
