"""Replacing a folder privbench made (``run --overwrite``, a merged run written again), and
nothing else.

A folder is replaced only when it is a real folder (not a symbolic link) whose
``manifest.json`` is a privbench run manifest. It is first moved aside, renamed within its
parent to a hidden name (:func:`move_aside`); the new one is made in its place; the old one is
deleted once the new one has started (:func:`discard`), or put back if it could not
(:func:`put_back`). Whatever else is found is refused, saying what it is and what to do.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from harness.core.errors import PrivbenchError
from harness.core.files import read_json
from harness.core.limits import shorten
from harness.runs.folder import MANIFEST, RUN_ENTRIES
from harness.runs.manifest import Manifest

MANIFEST_BYTES = 64 << 20  # a manifest larger than this is not one privbench wrote


class ReplaceRefusedError(PrivbenchError):
    """A folder is in the way that privbench did not make, so it will not replace it."""


def made_by_privbench(path: Path, hint: str) -> Manifest:
    """The manifest of the run folder at ``path``, which privbench may replace; otherwise
    :class:`ReplaceRefusedError` saying what is there and ``hint`` (what to do instead)."""
    path = Path(path)
    if path.is_symlink():
        found = f"a symbolic link (to {shorten(os.readlink(path), 200)})"
    elif not path.is_dir():
        found = "a file" if path.is_file() else "neither a file nor a folder"
    else:
        problem = _manifest_problem(path / MANIFEST) or _foreign_entry(path)
        if problem is None:
            return Manifest.from_json(read_json(path / MANIFEST), str(path / MANIFEST))
        found = f"a folder privbench did not make ({problem})"
    raise ReplaceRefusedError(
        f"{path} is {found}; privbench replaces only run folders it made, so it leaves this "
        f"one as it is: {hint}"
    )


def _manifest_problem(manifest: Path) -> str | None:
    """Why ``manifest`` is not a privbench run manifest, or None if it is one."""
    if manifest.is_symlink() or not manifest.is_file():
        return f"no {MANIFEST} in it"
    if manifest.stat().st_size > MANIFEST_BYTES:
        return f"its {MANIFEST} is larger than any privbench writes"
    try:
        Manifest.from_json(read_json(manifest), str(manifest))
    except (OSError, ValueError, PrivbenchError) as exc:
        return f"its {MANIFEST} is not a privbench run manifest: {shorten(str(exc), 200)}"
    return None


def _foreign_entry(path: Path) -> str | None:
    """What in the folder ``path`` a run never writes (a run folder holds only the files of
    :data:`RUN_ENTRIES`, an atomic write's ``.<name>.<random>.tmp`` and the run's
    ``.privbench-reserve``), or None: a folder that a user put a copied manifest into, beside
    their own files, is not replaced."""
    for entry in sorted(path.iterdir()):
        name = entry.name
        ours = name in RUN_ENTRIES or (
            name.startswith(".") and (name.endswith(".tmp") or name.startswith(".privbench-"))
        )
        if not ours:
            return f"it holds {shorten(name, 80)!r}, which no run writes"
    return None


def move_aside(path: Path) -> Path:
    """Rename the folder ``path`` to a hidden name beside it; the new name."""
    path = Path(path)
    aside = path.with_name(f".{path.name}.replaced-{secrets.token_hex(4)}")
    os.rename(path, aside)
    return aside


def put_back(aside: Path, path: Path) -> None:
    """Undo :func:`move_aside`: remove what was made at ``path`` since, then rename ``aside``
    back to it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.rename(aside, path)


def discard(aside: Path) -> None:
    """Delete a folder moved aside; what cannot be deleted is left there, and said."""
    shutil.rmtree(aside, ignore_errors=True)
    if os.path.lexists(aside):
        print(
            f"privbench: warning: could not delete all of the replaced folder {aside}; "
            "remove it yourself",
            file=sys.stderr,
        )
