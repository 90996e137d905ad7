"""Content-addressed cache of everything that costs time, verified on every read.

A trained recognizer, a gallery, a batch of protected images, the predictions of a finished
cell: each is stored under the sha256 of everything that determines it. Every key is derived by
:meth:`Cache.key`, which adds what all entries depend on whether or not the caller thinks of it:

- the code: privbench's version, the versions of the packages that can change a number
  (:func:`code_identity`) and the code version of the modules that compute the entry's kind
  (:func:`harness.core.code_version.kind_code_version`: those modules and what they import,
  not the whole source, so editing an unrelated module keeps every entry);
- where it was computed: the device type, the CPU's instruction set or the GPU's name
  (:func:`compute_identity`), because floating-point results differ between them.

Callers add the rest (data fingerprint, method config and version, seed, the owner's key as a
keyed hash; see :mod:`harness.engine.cache_keys`). Adding a counter-attack or a metric therefore
never recomputes a defense, and an interrupted run resumes from the cells it finished.

Each entry is a plain file (``.npz``, ``.pt``, ``.onnx``) written atomically, with a sidecar
``.sha256`` holding its digest, written after it. A read checks the digest; an entry that is
missing its sidecar, fails the check or cannot be parsed is reported on stderr, counted in
:attr:`Cache.damaged` and recomputed (and overwritten), never used and never fatal.

Several processes may share one cache folder (the workers of a Dask run): an entry and its
sidecar are written under an exclusive lock of their shard folder and read under a shared one,
so no reader sees one writer's entry with another writer's digest.

A cache folder that cannot be written (read-only, full, not the user's) is not fatal either: the
first write that fails prints one warning on stderr, and from then on entries are computed and
not stored (:attr:`Cache.unwritable`); what can still be read is used.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from harness import __version__
from harness.core.code_version import kind_code_version
from harness.core.files import atomic_write_bytes

T = TypeVar("T")

DIGEST_SUFFIX = ".sha256"


def privbench_home() -> Path:
    """``$PRIVBENCH_HOME`` or ``~/.cache/privbench``: cache and local weights live here."""
    return Path(os.environ.get("PRIVBENCH_HOME", "~/.cache/privbench")).expanduser()


def default_cache_root() -> Path:
    """``$PRIVBENCH_CACHE`` if set, else ``$PRIVBENCH_HOME/cache``."""
    explicit = os.environ.get("PRIVBENCH_CACHE")
    return Path(explicit).expanduser() if explicit else privbench_home() / "cache"


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(kind: str, parts: dict[str, Any]) -> str:
    """sha256 hex of ``kind`` and ``parts``: a stable name for a combination of inputs (used
    to nest one identity inside another key; entries themselves go through :meth:`Cache.key`)."""
    payload = canonical_json({"kind": kind, **parts})
    return hashlib.sha256(payload.encode()).hexdigest()


@cache
def code_identity() -> dict[str, Any]:
    """What every cached result depends on in the code besides its own modules: privbench's
    version (a release invalidates every entry) and the versions of the packages that can change
    a number. :meth:`Cache.key` adds the code version of the entry's kind."""
    # provenance imports torch; the owner's commands import the cache and run without it.
    from harness.core.provenance import package_versions

    return {"privbench": __version__, "packages": package_versions()}


def compute_identity(device: Any = "cpu") -> dict[str, Any]:
    """Where a result is computed, as far as it can change the floating-point outcome: the
    device type and, on CPU, the vector instruction set torch dispatches to; on CUDA, the GPU
    model and CUDA version."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return {
            "device": "cuda",
            "gpu": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
        }
    return {"device": device.type, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


class Cache:
    """A folder of verified artefacts keyed by content hash.

    ``enabled=False`` computes everything afresh and stores nothing. ``device`` is where the
    entries of this cache are computed (it enters every key)."""

    def __init__(self, root: Path | None = None, enabled: bool = True, device: Any = "cpu") -> None:
        self.root = (root or default_cache_root()).expanduser()
        self.enabled = enabled
        self.environment = {"code": code_identity(), "compute": compute_identity(device)}
        self.hits = 0
        self.misses = 0
        self.damaged: list[str] = []  # entries that failed verification and were recomputed
        self.unwritable: str | None = None  # why entries are no longer stored, once one fails

    def probe_writable(self) -> str | None:
        """Why the cache folder cannot be written (made if missing, then a file written and
        removed in it), or None if it can."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def stop_writing(self, reason: str) -> None:
        """Store nothing from now on (entries are still read); warn once on stderr."""
        if self.unwritable is not None:
            return
        self.unwritable = reason
        print(
            f"privbench: warning: the cache folder {self.root} cannot be written ({reason}); "
            "going on without storing results in it (what it holds is still read). "
            "--cache off skips the cache, --cache required stops instead",
            file=sys.stderr,
        )

    def key(self, kind: str, parts: dict[str, Any]) -> str:
        """The entry name of ``parts``: sha256 over kind, parts, code and compute identity,
        where the code's ``sources`` are the code version of the modules that compute ``kind``."""
        code = {**self.environment["code"], "sources": kind_code_version(kind)}
        return content_key(
            kind, {"parts": parts, "environment": {**self.environment, "code": code}}
        )

    def path(self, kind: str, key: str, suffix: str) -> Path:
        """Where the artefact ``key`` of ``kind`` lives."""
        return self.root / kind / key[:2] / f"{key}{suffix}"

    # -- verified storage ----------------------------------------------------------------
    def _report_damage(self, path: Path, why: str) -> None:
        self.damaged.append(str(path))
        print(f"privbench: cache entry {path} {why}; recomputing it", file=sys.stderr)

    def contains(self, kind: str, key: str, suffix: str = ".npz") -> bool:
        """Whether an entry is stored under ``key`` (not verified: a read does that)."""
        return self.enabled and self.path(kind, key, suffix).is_file()

    def _read_verified(self, path: Path) -> bytes | None:
        """The entry's bytes if it exists and matches its recorded digest, else None."""
        if not path.is_file():
            return None
        digest_path = path.with_name(path.name + DIGEST_SUFFIX)
        try:
            with _shard_lock(path, exclusive=False):
                data = path.read_bytes()
                recorded = digest_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            self._report_damage(path, "has no readable checksum")
            return None
        if hashlib.sha256(data).hexdigest() != recorded:
            self._report_damage(path, "does not match its checksum")
            return None
        return data

    def _write(self, path: Path, data: bytes) -> None:
        """Store an entry and its digest; a failed write turns storing off (with a warning)
        and leaves no entry without its digest."""
        if self.unwritable is not None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _shard_lock(path, exclusive=True):
                atomic_write_bytes(path, data)
                atomic_write_bytes(
                    path.with_name(path.name + DIGEST_SUFFIX),
                    hashlib.sha256(data).hexdigest().encode("ascii"),
                )
        except OSError as exc:
            with contextlib.suppress(OSError):
                if not path.with_name(path.name + DIGEST_SUFFIX).is_file():
                    path.unlink(missing_ok=True)
            self.stop_writing(exc.strerror or str(exc))

    def load_or_compute(
        self,
        kind: str,
        parts: dict[str, Any],
        suffix: str,
        compute: Callable[[], T],
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
    ) -> T:
        """The decoded entry for ``parts`` if it verifies, else ``compute()``, stored."""
        path = self.path(kind, self.key(kind, parts), suffix)
        if self.enabled:
            data = self._read_verified(path)
            if data is not None:
                try:
                    value = decode(data)
                except Exception as exc:  # a verified entry written by incompatible code
                    self._report_damage(path, f"cannot be read ({type(exc).__name__})")
                else:
                    self.hits += 1
                    return value
        self.misses += 1
        value = compute()
        if self.enabled:
            self._write(path, encode(value))
        return value

    # -- typed helpers -------------------------------------------------------------------
    def arrays(
        self, kind: str, parts: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Load the arrays stored under ``parts`` or compute and store them (npz)."""
        return self.load_or_compute(kind, parts, ".npz", compute, _encode_npz, _decode_npz)

    def store_arrays(self, kind: str, parts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Store (or replace) the arrays under ``parts``: a record, not a computation."""
        if self.enabled:
            self._write(self.path(kind, self.key(kind, parts), ".npz"), _encode_npz(arrays))

    def cached_arrays(self, kind: str, parts: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """:meth:`arrays` without the computation: the verified entry (a hit), or None (a miss;
        the caller computes it and stores it with :meth:`store_arrays`)."""
        found = self.stored_arrays(kind, parts)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def stored_arrays(self, kind: str, parts: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The verified arrays stored under ``parts``, or None."""
        if not self.enabled:
            return None
        path = self.path(kind, self.key(kind, parts), ".npz")
        data = self._read_verified(path)
        try:
            return None if data is None else _decode_npz(data)
        except Exception as exc:
            self._report_damage(path, f"cannot be read ({type(exc).__name__})")
            return None

    def torch_state(
        self, kind: str, parts: dict[str, Any], compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Load a torch state dict (``weights_only=True``) or compute and store it."""
        return self.load_or_compute(kind, parts, ".pt", compute, _encode_torch, _decode_torch)

    def file(
        self, kind: str, parts: dict[str, Any], compute: Callable[[], bytes], suffix: str
    ) -> Path:
        """A verified file holding the bytes of ``compute()``, for libraries that want a path.
        With the cache disabled or not writable the file goes to a fresh temporary folder,
        removed when the process ends."""
        if self.enabled:
            hits = self.hits
            data = self.load_or_compute(kind, parts, suffix, compute, bytes, bytes)
            if self.hits > hits or self.unwritable is None:  # verified, or just stored
                return self.path(kind, self.key(kind, parts), suffix)
        else:
            data = compute()
        folder = Path(tempfile.mkdtemp(prefix=f"privbench-{kind}-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / f"{kind}{suffix}"
        path.write_bytes(data)
        return path


@contextlib.contextmanager
def _shard_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """An advisory lock on the folder of ``path`` (one lock file per key prefix, so at most 256
    per kind), where the platform has ``fcntl``; elsewhere nothing. A reader in a folder it
    cannot write opens an existing lock file read-only, or reads unlocked where there is none
    (the digest still catches a torn entry)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    handle = _open_lock(path.parent / ".lock", exclusive)
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock(lock: Path, exclusive: bool) -> BinaryIO | None:
    """The lock file, made if missing; for a reader that cannot make or write it, the existing
    file opened read-only, or None where there is none."""
    try:
        return open(lock, "a+b")
    except OSError:
        if exclusive:
            raise
    try:
        return open(lock, "rb")
    except OSError:
        return None


def _encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _decode_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _encode_torch(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _decode_torch(data: bytes) -> dict[str, Any]:
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
