"""Keys of keyed defenses (k-RTIO): where they come from, and that they never leak.

A key comes from a file (raw 16 or 32 bytes, as ``privbench keygen`` writes and as the 2021
k-RTIO script's ``aeskey.bin`` is, or the same as 32 or 64 hex digits), from the 2021
script's key folder (``aeskey.bin`` + ``iv.bin``), or from an environment variable holding
hex. Never from a suite. A benchmark run without a key uses a key derived from the run seed
(reproducible, and explicitly not secret).
Nothing here puts key bytes into a repr, a log line or an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import PrivbenchError

KEY_ENV = "PRIVBENCH_KEY"
KEY_FILE_ENV = "PRIVBENCH_KEY_FILE"
LEGACY_KEY_FILE, LEGACY_IV_FILE = "aeskey.bin", "iv.bin"


class KeyMaterialError(PrivbenchError):
    """A key cannot be read or has the wrong size (the message never contains key bytes)."""


@dataclass(frozen=True)
class Keyring:
    """The owner's key (and, for the legacy scheme, an IV), with where it came from."""

    key: bytes = field(repr=False)
    iv: bytes | None = field(default=None, repr=False)
    source: str = "unknown"

    def __post_init__(self) -> None:
        if len(self.key) not in (16, 32):
            raise KeyMaterialError(
                f"a key must be 16 or 32 bytes (AES-128/256); the one from "
                f"{self.source} has {len(self.key)} bytes"
            )
        if self.iv is not None and len(self.iv) != 16:
            raise KeyMaterialError(
                f"an IV must be 16 bytes; the one from {self.source} has {len(self.iv)}"
            )

    def __repr__(self) -> str:
        return (
            f"Keyring(source={self.source!r}, bits={8 * len(self.key)}, iv={self.iv is not None})"
        )

    __str__ = __repr__

    def tag(self, label: str, message: bytes) -> str:
        """HMAC-SHA256 under the key (and IV) of a labelled message, in hex."""
        data = label.encode() + b"\x00" + message
        return hmac.new(self.key + (self.iv or b""), data, hashlib.sha256).hexdigest()

    def key_id(self) -> str:
        """A keyed hash that names this key in cache keys: HMAC-SHA256 under the key (and IV)
        of a fixed label, with its own label so it is never equal to any value the PRFs
        produce. Equal keys give equal ids; for a random 128- or 256-bit key the id reveals
        nothing about it."""
        return self.tag("privbench.cache.key-id.v1", b"")

    def legacy_iv(self) -> bytes:
        """The IV of the legacy scheme: the stored one, else derived from the key (documented)."""
        if self.iv is not None:
            return self.iv
        return hashlib.sha256(b"privbench.krtio.legacy-iv\x00" + self.key).digest()[:16]


def load_key(spec: str | Path, given_by: str = "--key") -> Keyring:
    """A key file (raw 16/32 bytes) or a 2021-script key folder (aeskey.bin + iv.bin), named by
    ``spec`` as ``given_by`` (an option or an environment variable) gave it. Where nothing is
    found there, the message does not repeat ``spec``: a user may have given the key itself."""
    path = Path(spec).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError):  # a name too long, or holding NUL: no file of that name
        is_dir = is_file = False
    if is_dir:
        key_path, iv_path = path / LEGACY_KEY_FILE, path / LEGACY_IV_FILE
        if not key_path.is_file():
            raise KeyMaterialError(
                f"{path} is a folder but holds no {LEGACY_KEY_FILE}; pass a key file "
                f"or the 2021 script's key folder ({LEGACY_KEY_FILE} + {LEGACY_IV_FILE})"
            )
        iv = iv_path.read_bytes() if iv_path.is_file() else None
        return Keyring(key_path.read_bytes(), iv, source=f"key folder {path}")
    if not is_file:
        raise KeyMaterialError(
            f"{given_by} names no key file or key folder here (its value is not repeated: it "
            f"may be a key); {given_by} takes the path of a key file (`privbench keygen PATH` "
            f"writes one) or of the 2021 script's key folder, and a key in hex goes in "
            f"${KEY_ENV}, never on the command line"
        )
    return Keyring(key_file_bytes(path.read_bytes()), None, source=f"key file {path}")


def key_file_bytes(raw: bytes) -> bytes:
    """A key file's key: 32 or 64 hex digits (surrounding whitespace ignored, as `echo` or an
    editor leaves it), else the raw bytes, as ``privbench keygen`` writes them. A random raw key
    made only of hex digits has probability (22/256)^32, so the rule is unambiguous."""
    text = raw.strip()
    if len(text) in (32, 64) and all(c in b"0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text.decode("ascii"))
    return raw


def key_from_env() -> Keyring | None:
    """``$PRIVBENCH_KEY`` (hex) or ``$PRIVBENCH_KEY_FILE`` (a path), if set."""
    if os.environ.get(KEY_ENV):
        try:
            raw = bytes.fromhex(os.environ[KEY_ENV].strip())
        except ValueError:
            raise KeyMaterialError(f"${KEY_ENV} must hold 32 or 64 hex digits") from None
        return Keyring(raw, None, source=f"${KEY_ENV}")
    if os.environ.get(KEY_FILE_ENV):
        return load_key(os.environ[KEY_FILE_ENV], f"${KEY_FILE_ENV}")
    return None


def benchmark_key(seed: int) -> Keyring:
    """A reproducible key for benchmark runs, derived from the run seed. Not a secret."""
    raw = hashlib.sha256(f"privbench.benchmark-key.v1\x00{seed}".encode()).digest()
    return Keyring(raw, None, source=f"benchmark key derived from seed {seed} (not secret)")


def keygen(path: str | Path, bits: int = 256) -> Path:
    """Write a fresh random key of ``bits`` bits to ``path`` with mode 0600, making missing
    folders (mode 0700); never overwrites."""
    if bits not in (128, 256):
        raise KeyMaterialError(f"--bits must be 128 or 256, not {bits}")
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # new folders: owner only
    except OSError as exc:  # a file where a folder should be, a folder we may not write
        raise KeyMaterialError(
            f"cannot write a key at {path}: {path.parent} cannot be made a folder "
            f"({exc.strerror or exc})"
        ) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyMaterialError(f"{path} already exists; privbench never overwrites a key") from None
    except OSError as exc:
        raise KeyMaterialError(f"cannot write a key at {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(bits // 8))
    os.chmod(path, 0o600)
    return path
