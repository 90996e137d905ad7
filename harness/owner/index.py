"""The owner's photo index: for every protected output, its perceptual hash and what recovery
needs (id, defense, parameters, size, key check), kept beside the key so that a photo whose
metadata a platform stripped can still be recovered (:mod:`harness.owner.matching` finds its
entry).

Where it lives (``--index PATH`` overrides it):

- key file ``K`` (``--key K`` or ``$PRIVBENCH_KEY_FILE``): ``K.index.jsonl`` in the same folder;
- the 2021 script's key folder ``D``: ``D/privbench-index.jsonl``;
- ``$PRIVBENCH_KEY`` (no file to sit beside): ``$PRIVBENCH_HOME/owner/index-<key id>.jsonl``,
  named by the first 16 hex digits of :meth:`~harness.core.keys.Keyring.key_id`, so that two
  keys never share one.

One JSON object per line. It holds no key material: the key check is an HMAC tag under the key
(:func:`harness.owner.identity.key_check`). It is read within
:data:`~harness.core.limits.INDEX_BYTES` and rewritten atomically under a lock (the file
``.<name>.lock`` beside it), so that two ``protect`` calls appending at once lose neither's
entries. Mode 0600: it lists what the owner protected.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.core.cache import privbench_home
from harness.core.errors import PrivbenchError
from harness.core.files import atomic_write_bytes, loads_finite, read_regular_file
from harness.core.keys import KEY_ENV, KEY_FILE_ENV, Keyring
from harness.core.limits import INDEX_BYTES

INDEX_VERSION = 1
_HEX16 = re.compile(r"[0-9a-f]{16}")


class PhotoIndexError(PrivbenchError):
    """The photo index cannot be read, or is not one."""


@dataclass(frozen=True)
class Entry:
    """One protected output: its hashes (64-bit pHash and dHash, hex), the id it was protected
    under, the defense and its parameters, its size (height, width), the key check, and its
    path below the output folder (for messages)."""

    phash: str
    dhash: str
    id: str
    defense: str
    params: dict[str, Any]
    size: tuple[int, int]
    key_check: str
    file: str

    def metadata(self) -> dict[str, Any]:
        """What the protected file's own metadata would have said."""
        return {
            "defense": self.defense,
            "params": self.params,
            "id": self.id,
            "key_check": self.key_check,
        }

    def identity(self) -> str:
        """Equal for two entries that recover a photo the same way."""
        return json.dumps([self.id, self.defense, self.params, list(self.size)], sort_keys=True)

    def line(self) -> str:
        row = {"v": INDEX_VERSION, **asdict(self), "size": list(self.size)}
        return json.dumps(row, sort_keys=True, allow_nan=False) + "\n"


def default_index(key: str | None, keyring: Keyring) -> Path:
    """Where the index of this key lives when ``--index`` is not given (the module docstring
    says where); the same precedence as :func:`harness.owner.files.keyring_for`."""
    if key:
        return _beside(Path(key).expanduser())
    if os.environ.get(KEY_ENV):
        return privbench_home() / "owner" / f"index-{keyring.key_id()[:16]}.jsonl"
    return _beside(Path(os.environ[KEY_FILE_ENV]).expanduser())


def _beside(key_path: Path) -> Path:
    if key_path.is_dir():
        return key_path / "privbench-index.jsonl"
    return key_path.with_name(key_path.name + ".index.jsonl")


def read_index(path: Path) -> list[Entry]:
    """The entries of the index at ``path`` (none if it does not exist), read within
    :data:`INDEX_BYTES`; :class:`PhotoIndexError` naming the file (and line) for one that is too
    large, not a regular file, or not an index."""
    if not path.exists():
        return []
    limit = INDEX_BYTES.value()
    size = path.stat().st_size
    if size > limit:
        raise PhotoIndexError(
            f"{path} is larger than {limit:,} bytes ({size:,}), the most a photo index may "
            f"hold; if it is one, raise ${INDEX_BYTES.env}"
        )
    raw = read_regular_file(path, limit, "photo index")  # still bounded: it may have grown
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PhotoIndexError(f"{path}: not a photo index (not UTF-8 text)") from None
    return [
        _entry(line, f"{path}:{n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()
    ]


def _entry(line: str, where: str) -> Entry:
    try:
        row = loads_finite(line)
    except (ValueError, RecursionError):
        raise PhotoIndexError(
            f"{where}: not a photo index line (not JSON); `privbench protect` writes one "
            "JSON object per line: move the file aside or pass --index with another"
        ) from None
    if not isinstance(row, dict) or row.get("v") != INDEX_VERSION:
        raise PhotoIndexError(
            f'{where}: not a photo index line (expected an object with "v": {INDEX_VERSION})'
        )
    try:
        entry = Entry(
            phash=_text(row, "phash"),
            dhash=_text(row, "dhash"),
            id=_text(row, "id"),
            defense=_text(row, "defense"),
            params=_params(row),
            size=_size(row),
            key_check=_text(row, "key_check"),
            file=_text(row, "file"),
        )
    except KeyError as exc:
        raise PhotoIndexError(f"{where}: not a photo index line (no {exc})") from None
    except (TypeError, ValueError) as exc:
        raise PhotoIndexError(f"{where}: not a photo index line ({exc})") from None
    if not (_HEX16.fullmatch(entry.phash) and _HEX16.fullmatch(entry.dhash)):
        raise PhotoIndexError(f"{where}: phash and dhash must be 16 lower-case hex digits")
    return entry


def _text(row: dict[str, Any], name: str) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise TypeError(f"{name!r} must be a string")
    return value


def _params(row: dict[str, Any]) -> dict[str, Any]:
    value = row["params"]
    if not isinstance(value, dict):
        raise TypeError("'params' must be an object")
    return value


def _size(row: dict[str, Any]) -> tuple[int, int]:
    value = row["size"]
    ok = isinstance(value, list) and len(value) == 2
    # bool is an int in Python, not in JSON: true is no size
    if not ok or not all(type(v) is int and v > 0 for v in value):
        raise ValueError("'size' must be [height, width], two positive whole numbers")
    return int(value[0]), int(value[1])


def prepare_index(path: Path) -> None:
    """Check, before any photo is protected, that the index at ``path`` can be read and
    written: it is read (a broken one is refused), and its folder and lock file are made;
    :class:`PhotoIndexError` naming it otherwise (a path below a file, a read-only folder), so
    that no output is written that its index would then miss."""
    read_index(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with FileLock(str(_lock(path.resolve()))):
            pass
    except OSError as exc:
        raise PhotoIndexError(
            f"the photo index {path} cannot be written ({exc.strerror or exc}); pass --index "
            "with a path in a folder you can write, or keep the key in one"
        ) from None


def _lock(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def append_index(path: Path, entries: Iterable[Entry]) -> None:
    """Add ``entries`` to the index at ``path`` (made with its folder if missing), leaving out
    those it already holds: read, merge and rewrite atomically, under its lock file so that
    concurrent calls each keep the other's entries. A link to the index is written through
    (its target is rewritten), so that it stays one file."""
    new = list(entries)
    if not new:
        return
    path = path.resolve()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # new folders: owner only
    with FileLock(str(_lock(path))):
        lines = [e.line() for e in read_index(path)]
        seen = set(lines)
        for line in (e.line() for e in new):
            if line not in seen:
                seen.add(line)
                lines.append(line)
        # it lists what the owner protected: as private as the key, from its first moment
        atomic_write_bytes(path, "".join(lines).encode("utf-8"), mode=0o600)
