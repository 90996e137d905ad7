"""Submission archives read back: verified member by member, and a run folder made from one.

An archive (written by :mod:`harness.analysis.submission`) lists the sha256 of every member in
``submission.json``; reading verifies each and refuses unlisted, missing or unsafe members.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from harness.core.errors import PrivbenchError

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


def _safe_name(archive: Path, name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise PrivbenchError(f"{archive}: unsafe member name {name!r}; refusing the archive")
    return rel


def read_archive(archive: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The index and verified members of a submission archive."""
    archive = Path(archive)
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                _safe_name(archive, info.name)
                if info.isdir():
                    continue
                if not info.isfile():
                    raise PrivbenchError(
                        f"{archive}: member {info.name!r} is not a regular file; refusing it"
                    )
                members[info.name] = tar.extractfile(info).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PrivbenchError(f"{archive}: not a readable .tar.gz ({exc})") from None
    try:
        index = json.loads(members.pop(INDEX))
    except (KeyError, json.JSONDecodeError):
        raise PrivbenchError(f"{archive}: no valid {INDEX}; not a privbench submission") from None
    if index.get("format") != FORMAT or index.get("format_version") != FORMAT_VERSION:
        raise PrivbenchError(
            f"{archive}: {INDEX} says format {index.get('format')!r} version "
            f"{index.get('format_version')!r}; this privbench reads {FORMAT} {FORMAT_VERSION}"
        )
    listed: dict[str, str] = index.get("files", {})
    for name in sorted(set(listed) | set(members)):
        if name not in members:
            raise PrivbenchError(f"{archive}: {name} is listed in {INDEX} but missing")
        if name not in listed:
            raise PrivbenchError(f"{archive}: {name} is not listed in {INDEX}; refusing it")
        if sha256_hex(members[name]) != listed[name]:
            raise PrivbenchError(f"{archive}: {name} does not match its sha256 (damaged)")
    return index, members


def extract_run(archive: Path, target: Path) -> dict[str, Any]:
    """Verify ``archive`` and write its run folder into ``target``; returns the index."""
    index, members = read_archive(archive)
    for name, data in members.items():
        rel = _safe_name(archive, name)
        if rel.parts[0] != RUN_PREFIX:
            continue
        path = target.joinpath(*rel.parts[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return index


def run_folder(path: Path) -> Path:
    """``path`` itself for a run folder; for a submission archive, a verified copy of its run
    in a temporary folder that is removed when the process ends."""
    path = Path(path)
    if not is_archive(path):
        return path
    target = Path(tempfile.mkdtemp(prefix="privbench-submission-"))
    atexit.register(shutil.rmtree, target, True)
    extract_run(path, target)
    return target
