"""Where privbench may write: names that are one folder name, outputs kept apart from inputs,
and folders checked for symbolic links before their files are packed or copied.

A run id and a suite name become folder names under the results root
(``<out>/<suite>/<run-id>``), so each must be a single path segment that cannot climb out of
it (``..``), name it (``.``), start from the root (``/``) or hide among privbench's own hidden
entries beside run folders (a lock, a folder being replaced), which all start with a dot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from harness.core.errors import PrivbenchError
from harness.core.limits import shorten

SEGMENT_CHARS = 128  # the longest run id or suite name
SEGMENT_RULE = (
    f"one folder name: letters, digits, '.', '_' or '-', not starting with '.', at most "
    f"{SEGMENT_CHARS} characters"
)
_SEGMENT_CHAR = re.compile(r"[A-Za-z0-9_.-]")


def segment_problem(value: object) -> str | None:
    """What keeps ``value`` from being a safe folder name (:data:`SEGMENT_RULE`), or None."""
    if not isinstance(value, str):
        return f"{type(value).__name__} is not text"
    if len(value) > SEGMENT_CHARS:
        return f"{len(value)} characters is more than {SEGMENT_CHARS}"
    if not value:
        return "it is empty"
    if value in (".", ".."):
        return "it names the folder it would be in, or that folder's parent"
    if value.startswith("."):
        return "it starts with '.'"
    bad = next((c for c in value if not _SEGMENT_CHAR.fullmatch(c)), None)
    return None if bad is None else f"it holds {bad!r}"


def check_segment(value: object, what: str) -> str:
    """``value`` if it is a safe folder name; else PrivbenchError naming ``what`` and the rule."""
    problem = segment_problem(value)
    if problem is not None:
        raise PrivbenchError(
            f"{what} {shorten(repr(value), 160)} is not {SEGMENT_RULE} ({problem})"
        )
    return str(value)


def within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it, symbolic links resolved."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_apart(output: Path, inputs: Iterable[Path], noun: str = "output") -> None:
    """PrivbenchError if ``output`` is one of ``inputs``, inside one, or holds one: a command
    never writes into what it reads, nor reads what it writes."""
    for source in inputs:
        if within(output, source):
            raise PrivbenchError(
                f"the {noun} {output} is inside (or is) the input {source}: privbench never "
                f"writes into what it reads; choose an {noun} outside it"
            )
        if within(source, output):
            raise PrivbenchError(
                f"the input {source} is inside the {noun} {output}: privbench never reads "
                f"what it writes; choose an {noun} that does not hold its inputs"
            )


def first_link(folder: Path) -> Path | None:
    """The first symbolic link (or other entry that is neither a file nor a folder) under
    ``folder``, which is walked without following links; None if there is none."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                return path
    return None
