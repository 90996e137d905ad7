"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A crash or Ctrl-C never leaves a half-written result, manifest or cache entry behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.core.errors import JsonLinesError, PrivbenchError, RunFileError
from harness.core.limits import shorten

# Why a write fails for want of room or permission, not because of what is written: a full disk,
# an exhausted quota, a read-only file system, a folder the user may not write to.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for want of space or permission."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically, creating parent folders. The file gets ``mode``
    if given, else the mode a plain ``open`` would give it (0666 less the umask), not the
    temporary file's 0600; either is set before the file takes ``path``'s name.

    An OSError (a full disk: ``ENOSPC``) names ``path``, never the temporary file, and leaves
    neither the temporary file nor a partial ``path`` behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename != str(path):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN/inf are refused: they are not JSON)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line atomically."""
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def loads_finite(text: str | bytes) -> Any:
    """JSON ``text`` parsed, refusing what JSON does not allow but Python reads (NaN,
    Infinity, numbers too large for a float). ValueError (JSONDecodeError for bad syntax,
    RecursionError for a document nested too deep) on a bad document."""
    return json.loads(text, parse_float=_finite, parse_constant=_no_constant)


def read_json(path: Path) -> Any:
    """The JSON document in ``path`` (NaN and Infinity read as floats, for the reader to check
    with the key named); :class:`RunFileError` naming the file on one that is not UTF-8
    JSON, holds an integer too long to convert, or is nested too deeply."""
    try:
        return json.loads(Path(path).read_bytes())
    except (ValueError, RecursionError) as exc:
        raise RunFileError(f"{path}: not valid JSON ({_why_not_json(exc)})") from None


def read_jsonl(path: Path, check: Callable[[Any, str], None] | None = None) -> list[Any]:
    """Read a JSON-lines file, each line passed to ``check(row, "file:line")`` if given;
    :class:`JsonLinesError` naming the file and line on a line that is not JSON (non-finite
    numbers included) or a file that is not UTF-8 text."""
    rows = []
    i = 0
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    row = loads_finite(line)
                    if check is not None:
                        check(row, f"{path}:{i}")
                    rows.append(row)
    except JsonLinesError:
        raise
    except (ValueError, RecursionError) as exc:
        raise JsonLinesError(f"{path}:{max(i, 1)}: not valid JSON ({_why_not_json(exc)})") from None
    return rows


def _why_not_json(exc: ValueError | RecursionError) -> str:
    """What :func:`json.loads` found wrong, for a message (its position left to the caller)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return shorten(exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc), 200)


def sha256_of(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """:func:`sha256_of`, remembered per (path, size, modification time) so that a model file
    named in many cache keys is read once per process, and read again when it changes."""
    resolved = Path(path).expanduser().resolve()
    st = resolved.stat()
    return _digest(str(resolved), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=1024)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(Path(path))


def read_regular_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path`` (a symbolic link is followed only to a regular file), at most
    ``limit`` of them; PrivbenchError naming ``what`` and ``path`` for a file that is missing,
    not a regular file (a folder, a FIFO, a device) or larger than ``limit``."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise PrivbenchError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise PrivbenchError(f"cannot read {what} {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
        raise PrivbenchError(f"{path} is {kind}, not a {what}: give a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            # the stated size refuses a large file unread; the bounded read, one that grew
            data = b"" if info.st_size > limit else f.read(limit + 1)
        except OSError as exc:
            raise PrivbenchError(f"cannot read {what} {path}: {exc.strerror}") from None
    if info.st_size > limit or len(data) > limit:
        raise PrivbenchError(
            f"{path} is larger than {limit:,} bytes, the most a {what} may hold; if it is one, "
            "raise the limit (docs/security.md)"
        )
    return data
