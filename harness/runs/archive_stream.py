"""A .tar.gz read as a stream within the archive limits of :mod:`harness.core.limits`: every
member's declared size is checked from its header before anything is read, then the member is
copied in chunks to where the caller says while it is hashed and its bytes counted."""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from harness.core.errors import PrivbenchError
from harness.core.limits import (
    ARCHIVE_BYTES,
    ARCHIVE_INDEX_BYTES,
    ARCHIVE_MEMBER_BYTES,
    ARCHIVE_MEMBERS,
)

CHUNK = 1 << 20
_EXTENDED = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_EXTENDED_BYTES = 1 << 20


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extended headers (long names, pax records), which tarfile reads
    whole into memory, are refused past 1 MiB."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _EXTENDED and self.size > _EXTENDED_BYTES:
            raise tarfile.HeaderError(
                f"an extended header declares {self.size:,} bytes (at most {_EXTENDED_BYTES:,})"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _Budget:
    """The archive limits and what has been counted against them so far."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.members, self.total = 0, 0
        self.max_members = ARCHIVE_MEMBERS.value()
        self.max_member = ARCHIVE_MEMBER_BYTES.value()
        self.max_total = ARCHIVE_BYTES.value()
        self.max_index = ARCHIVE_INDEX_BYTES.value()

    def refuse(self, what: str, limit: int, env: str) -> PrivbenchError:
        return PrivbenchError(
            f"{self.archive}: {what} (the limit is {limit:,}; ${env} raises it); refusing it"
        )

    def member(self, info: tarfile.TarInfo, is_index: bool) -> None:
        """Count one member by its header, before it is read."""
        self.members += 1
        if self.members > self.max_members:
            raise self.refuse(
                f"more than {self.max_members:,} members", self.max_members, ARCHIVE_MEMBERS.env
            )
        limit, env = (
            (self.max_index, ARCHIVE_INDEX_BYTES.env)
            if is_index
            else (self.max_member, ARCHIVE_MEMBER_BYTES.env)
        )
        if info.size > limit:
            raise self.refuse(f"member {info.name!r} declares {info.size:,} bytes", limit, env)
        self.count(info.size)

    def count(self, size: int) -> None:
        self.total += size
        if self.total > self.max_total:
            raise self.refuse(
                f"its members hold more than {self.max_total:,} bytes",
                self.max_total,
                ARCHIVE_BYTES.env,
            )


def safe_name(archive: Path, name: str) -> PurePosixPath:
    """The member name as a relative path; PrivbenchError for an absolute one or one that
    climbs out with '..'."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise PrivbenchError(f"{archive}: unsafe member name {name!r}; refusing the archive")
    return rel


def read_members(
    archive: Path, index_name: str, destination: Callable[[PurePosixPath], Path | None]
) -> tuple[bytes | None, dict[str, str], dict[str, Path]]:
    """Read every member of ``archive`` once, in order: the index (``index_name``) into
    memory, every other regular file to ``destination(name)`` (None: hashed only). Returns the
    index's bytes (None if absent), each member's sha256 and where each kept one went."""
    budget = _Budget(archive)
    index: bytes | None = None
    digests: dict[str, str] = {}
    paths: dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r|gz", tarinfo=_BoundedTarInfo) as tar:
            for info in tar:
                rel = safe_name(archive, info.name)
                if info.isdir():
                    continue
                if not info.isfile():
                    raise PrivbenchError(
                        f"{archive}: member {info.name!r} is not a regular file; refusing it"
                    )
                if info.name in digests or (info.name == index_name and index is not None):
                    raise PrivbenchError(f"{archive}: member {info.name!r} appears twice")
                budget.member(info, info.name == index_name)
                stream = tar.extractfile(info)
                if info.name == index_name:
                    index = stream.read(info.size) if stream is not None else b""
                    continue
                target = destination(rel)
                digests[info.name] = _copy(stream, target, info.size, budget, info.name)
                if target is not None:
                    paths[info.name] = target
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise PrivbenchError(f"{archive}: not a readable .tar.gz ({exc})") from None
    except OSError as exc:
        raise PrivbenchError(
            f"{archive}: cannot be read or unpacked ({exc.strerror or exc})"
        ) from None
    return index, digests, paths


def _copy(
    stream: IO[bytes] | None, target: Path | None, declared: int, budget: _Budget, name: str
) -> str:
    """Copy ``stream`` to ``target`` (if any) in chunks; its sha256. PrivbenchError when it
    holds more than it declared."""
    digest = hashlib.sha256()
    sink = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        sink = target.open("xb")
    try:
        read = 0
        while stream is not None and (chunk := stream.read(CHUNK)):
            read += len(chunk)
            if read > declared:
                raise PrivbenchError(
                    f"{budget.archive}: member {name!r} holds more than the {declared:,} "
                    "bytes its header declares; refusing it"
                )
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
    finally:
        if sink is not None:
            sink.close()
    return digest.hexdigest()
