"""How much privbench reads from files other people made, and how long its messages get.

Suites, submission archives and photos from others are untrusted (docs/security.md): each is
read within the limits declared here, so that a small hostile file cannot exhaust memory or
time. Every limit has a default, an environment variable that raises or lowers it, and, where a
single command needs it, a command-line flag; docs/security.md lists them all (a test checks
that the table there and :data:`LIMITS` agree).
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

from harness.core.errors import PrivbenchError


@dataclass(frozen=True)
class Limit:
    """One bound on untrusted input: its default, the environment variable that overrides it,
    the command-line flag that overrides both (None: no flag), and what it bounds."""

    name: str
    default: int
    env: str
    flag: str | None
    unit: str
    bounds: str

    def value(self, override: int | None = None) -> int:
        """``override`` (a flag's value) if given, else the environment's, else the default;
        PrivbenchError naming the variable for a value that is not a positive integer."""
        if override is not None:
            return _positive(override, self.flag or self.name)
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return self.default
        try:
            number = int(raw.strip().replace("_", ""))
        except ValueError:
            raise PrivbenchError(
                f"${self.env}={shorten(raw, 40)!r} is not a whole number; give a positive "
                f"number of {self.unit} (default {self.default:,})"
            ) from None
        return _positive(number, f"${self.env}")


def _positive(number: int, where: str) -> int:
    if number < 1:
        raise PrivbenchError(f"{where} must be a positive whole number, got {number}")
    return number


KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

SUITE_FILE_BYTES = Limit(
    "suite_file_bytes",
    1 * MIB,
    "PRIVBENCH_MAX_SUITE_BYTES",
    None,
    "bytes",
    "size of one suite file (and of each file it includes)",
)
SUITE_FILES = Limit(
    "suite_files",
    64,
    "PRIVBENCH_MAX_SUITE_FILES",
    None,
    "files",
    "files one suite reads through `include`, the suite itself counted",
)
YAML_NODES = Limit(
    "yaml_nodes",
    100_000,
    "PRIVBENCH_MAX_YAML_NODES",
    None,
    "nodes",
    "values built from one suite file, every expansion of an alias counted again",
)
YAML_DEPTH = Limit(
    "yaml_depth",
    64,
    "PRIVBENCH_MAX_YAML_DEPTH",
    None,
    "levels",
    "nesting of mappings and lists in one suite file",
)
GRID_CELLS = Limit(
    "grid_cells",
    20_000,
    "PRIVBENCH_MAX_CELLS",
    "--max-cells",
    "cells",
    "cells of one suite (defense configs × counter-attack configs × recognizers), counted by "
    "multiplying the lengths of the parameter grids before any grid is expanded",
)
ARCHIVE_MEMBERS = Limit(
    "archive_members",
    100_000,
    "PRIVBENCH_MAX_ARCHIVE_MEMBERS",
    None,
    "members",
    "members of one submission archive",
)
ARCHIVE_MEMBER_BYTES = Limit(
    "archive_member_bytes",
    256 * MIB,
    "PRIVBENCH_MAX_ARCHIVE_MEMBER_BYTES",
    None,
    "bytes",
    "size of one member of a submission archive, declared and as read",
)
ARCHIVE_BYTES = Limit(
    "archive_bytes",
    2 * GIB,
    "PRIVBENCH_MAX_ARCHIVE_BYTES",
    None,
    "bytes",
    "size of all members of a submission archive together, declared and as read",
)
ARCHIVE_INDEX_BYTES = Limit(
    "archive_index_bytes",
    32 * MIB,
    "PRIVBENCH_MAX_ARCHIVE_INDEX_BYTES",
    None,
    "bytes",
    "size of a submission archive's index (submission.json), the one member read into memory",
)
PHOTO_PIXELS = Limit(
    "photo_pixels",
    50_000_000,
    "PRIVBENCH_MAX_PHOTO_PIXELS",
    None,
    "pixels",
    "pixels of one photo, read from its header before it is decoded (protecting a photo "
    "peaks at about 100 bytes per pixel: 2.4 GB measured for 20 megapixels)",
)
BASELINE_BYTES = Limit(
    "baseline_bytes",
    64 * MIB,
    "PRIVBENCH_MAX_BASELINE_BYTES",
    None,
    "bytes",
    "size of a baseline file `privbench check --baseline` reads (and that `baseline -o` replaces)",
)
INDEX_BYTES = Limit(
    "index_bytes",
    64 * MIB,
    "PRIVBENCH_MAX_INDEX_BYTES",
    None,
    "bytes",
    "size of the owner's photo index that `privbench recover` reads (and `protect` appends "
    "to); an entry takes about 300 bytes",
)
MESSAGE_CHARS = Limit(
    "message_chars",
    600,
    "PRIVBENCH_MAX_MESSAGE_CHARS",
    None,
    "characters",
    "length of one error message; longer ones are shortened in the middle",
)

LIMITS: tuple[Limit, ...] = (
    SUITE_FILE_BYTES,
    SUITE_FILES,
    YAML_NODES,
    YAML_DEPTH,
    GRID_CELLS,
    ARCHIVE_MEMBERS,
    ARCHIVE_MEMBER_BYTES,
    ARCHIVE_BYTES,
    ARCHIVE_INDEX_BYTES,
    PHOTO_PIXELS,
    BASELINE_BYTES,
    INDEX_BYTES,
    MESSAGE_CHARS,
)


def shorten(text: str, limit: int | None = None) -> str:
    """``text`` cut to ``limit`` characters (default: :data:`MESSAGE_CHARS`) by dropping its
    middle, which is marked with the number of characters left out."""
    if limit is None:
        try:
            limit = MESSAGE_CHARS.value()
        except PrivbenchError:  # a bad $PRIVBENCH_MAX_MESSAGE_CHARS must not hide the message
            limit = MESSAGE_CHARS.default
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 2)
    head, tail = text[: keep * 2 // 3], text[len(text) - keep // 3 :]
    return f"{head} […{len(text) - len(head) - len(tail):,} characters…] {tail}"


def printable(text: str) -> str:
    """``text`` as a terminal may show it: control characters other than newline and tab
    (an escape sequence, a bell, NUL, from a file someone else made) written as ``\\x1b``."""
    return "".join(
        c if c in "\n\t" or unicodedata.category(c) != "Cc" else ascii(c)[1:-1] for c in text
    )


def markdown_rows() -> list[str]:
    """The rows of docs/security.md's limits table, one per limit (``python -m
    harness.core.limits`` prints them; tests/test_hostile_inputs.py checks the page)."""
    return [
        f"| `{lim.name}` | {_amount(lim.default, lim.unit)} | `{lim.env}` | "
        f"{f'`{lim.flag}`' if lim.flag else '-'} | {lim.bounds} |"
        for lim in LIMITS
    ]


def _amount(number: int, unit: str) -> str:
    """``256 MiB`` for a whole number of KiB, MiB or GiB of bytes, else ``20,000 cells``."""
    if unit == "bytes":
        for size, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
            if number % size == 0:
                return f"{number // size:,} {name}"
    return f"{number:,} {unit}"


if __name__ == "__main__":
    print("\n".join(markdown_rows()))
