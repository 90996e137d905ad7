"""Content-addressed cache of everything that costs time.

A trained recognizer, a batch of protected images, the records of a finished cell: each is
stored under the sha256 of everything that determines it (data fingerprint, method config and
version, seed). Adding a counter-attack or a metric therefore never recomputes a defense, and an
interrupted run resumes from the cells it finished. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.io import atomic_write_bytes

T = TypeVar("T")


def privbench_home() -> Path:
    """``$PRIVBENCH_HOME`` or ``~/.cache/privbench``: cache and local weights live here."""
    return Path(os.environ.get("PRIVBENCH_HOME", "~/.cache/privbench")).expanduser()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(kind: str, parts: dict[str, Any]) -> str:
    """sha256 hex of ``kind`` and ``parts`` (plus the privbench version)."""
    from harness import __version__

    payload = canonical_json({"kind": kind, "privbench": __version__, **parts})
    return hashlib.sha256(payload.encode()).hexdigest()


class Cache:
    """A folder of artefacts keyed by content hash; ``enabled=False`` computes everything afresh."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.root = (root or privbench_home() / "cache").expanduser()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str, suffix: str) -> Path:
        """Where the artefact ``key`` of ``kind`` lives."""
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def arrays(
        self, kind: str, parts: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Load the arrays stored under ``parts`` or compute and store them (npz)."""
        path = self.path(kind, content_key(kind, parts), ".npz")
        if self.enabled and path.is_file():
            self.hits += 1
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        self.misses += 1
        result = compute()
        if self.enabled:
            import io

            buf = io.BytesIO()
            np.savez(buf, **result)
            atomic_write_bytes(path, buf.getvalue())
        return result

    def torch_state(
        self, kind: str, parts: dict[str, Any], compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Load a torch state dict (``weights_only=True``) or compute and store it."""
        import io

        import torch

        path = self.path(kind, content_key(kind, parts), ".pt")
        if self.enabled and path.is_file():
            self.hits += 1
            return torch.load(path, map_location="cpu", weights_only=True)
        self.misses += 1
        state = compute()
        if self.enabled:
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(path, buf.getvalue())
        return state
