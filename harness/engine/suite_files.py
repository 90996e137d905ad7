"""A suite file and the files it includes, read and merged: every top-level key with the file
it came from, so that an error names the file and line that set it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import SuiteError
from harness.core.limits import SUITE_FILE_BYTES, SUITE_FILES, shorten
from harness.core.params import suggest
from harness.core.yaml_lines import line_of, load_yaml
from harness.engine.suite_model import TOP_LEVEL

YAML_SUFFIXES = (".yaml", ".yml")


class Source:
    """Where a piece of the merged suite came from, for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(
        self, message: str, container: Any = None, key: Any = None, field_name: str | None = None
    ) -> SuiteError:
        line = line_of(container, key) if container is not None else None
        if line is None and container is not None:
            line = line_of(container, "__self__")
        return SuiteError(message, path=self.path, line=line, field=field_name)


@dataclass
class SuiteFiles:
    """A suite with its includes merged: each key's value and the file that set it (the
    including file's keys replace the included ones'), the texts read and their files.
    ``top`` is the named file's own mapping, ``top_source`` that file."""

    merged: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Source] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    top: dict[str, Any] = field(default_factory=dict)
    top_source: Source = field(default_factory=lambda: Source(""))

    def source(self, key: str) -> Source:
        """The file that set ``key``, or the named file for a key nobody set."""
        return self.origins.get(key, self.top_source)

    def add(self, other: SuiteFiles) -> None:
        """Take ``other``'s keys (an include) as they stand."""
        self.merged.update(other.merged)
        self.origins.update(other.origins)
        self.texts.extend(other.texts)
        self.files.extend(other.files)


def read_suite_files(
    path: Path, stack: tuple[Path, ...] = (), read: list[Path] | None = None
) -> SuiteFiles:
    """Read ``path`` and its includes (``stack``: the files that include it, for cycles;
    ``read``: every file read so far, at most :data:`SUITE_FILES` of them)."""
    read = [] if read is None else read
    read.append(path)
    limit = SUITE_FILES.value()
    if len(read) > limit:
        raise SuiteError(
            f"the suite reads more than {limit} files through 'include' "
            f"(${SUITE_FILES.env} raises the limit)",
            path=str(stack[-1] if stack else path),
        )
    data, text, src = _load(path, stack)
    out = SuiteFiles(top=data, top_source=src)
    root = (stack[0] if stack else path).resolve().parent.parent
    for inc in _includes(data, src):
        out.add(read_suite_files(_included(path, inc, root, data, src), (*stack, path), read))
    for key, value in data.items():
        if key != "include":
            out.merged[key] = value
            out.origins[key] = src
    out.texts.append(text)
    out.files.append(path)
    return out


def _load(path: Path, stack: tuple[Path, ...]) -> tuple[dict[str, Any], str, Source]:
    """One file's mapping, text and source; SuiteError for a missing file, an include cycle,
    an empty file, a file that is not a mapping, or an unknown top-level key."""
    where = f" (included from {stack[-1]})" if stack else ""
    if not path.exists():
        raise SuiteError(f"suite file not found{where}", path=str(path))
    if not path.is_file():
        raise SuiteError(
            f"not a regular file (a folder, a pipe or a device){where}; a suite is a YAML file",
            path=str(path),
        )
    if path.resolve() in [p.resolve() for p in stack]:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise SuiteError(f"include cycle: {chain}", path=str(path))
    text = _read_text(path)
    data = load_yaml(text, str(path))
    src = Source(str(path))
    if data is None:
        raise SuiteError("the suite is empty", path=str(path))
    if not isinstance(data, dict):
        raise src.error(
            f"a suite must be a mapping of keys ({', '.join(TOP_LEVEL)}), got {type(data).__name__}"
        )
    for key in data:
        if key not in TOP_LEVEL:
            raise src.error(
                f"unknown key{suggest(str(key), list(TOP_LEVEL))}; valid keys: "
                f"{', '.join(TOP_LEVEL)}",
                data,
                key,
                shorten(str(key), 80),
            )
    return data, text, src


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark dropped); SuiteError for a file larger than
    :data:`SUITE_FILE_BYTES` (by its size, then by what is read) or one that is not UTF-8."""
    limit = SUITE_FILE_BYTES.value()
    too_big = SuiteError(
        f"larger than {limit:,} bytes; a suite is a short text file "
        f"(${SUITE_FILE_BYTES.env} raises the limit)",
        path=str(path),
    )
    try:
        if path.stat().st_size > limit:
            raise too_big
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise SuiteError(f"cannot be read ({exc.strerror or exc})", path=str(path)) from None
    if len(raw) > limit:
        raise too_big
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SuiteError(
            f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})",
            path=str(path),
            line=raw.count(b"\n", 0, exc.start) + 1,
        ) from None


def _included(path: Path, name: str, root: Path, data: dict[str, Any], src: Source) -> Path:
    """The file ``name`` that the suite file ``path`` includes. A suite from someone else must
    not make privbench read (and quote, in an error) any file it likes: an include is a
    relative path to a ``.yaml``/``.yml`` file, also once links are followed, inside ``root``
    (the folder above the named suite's, so that ``suites/examples/x.yaml`` may include
    ``../ci-gate.yaml``)."""
    target = path.parent / name
    resolved = target.resolve()
    problem = None
    if Path(name).is_absolute():
        problem = "an absolute path"
    elif target.suffix not in YAML_SUFFIXES or resolved.suffix not in YAML_SUFFIXES:
        problem = "not a .yaml or .yml file"
    elif not resolved.is_relative_to(root):
        problem = f"outside {root}, the folder above the suite's"
    if problem is not None:
        raise src.error(
            f"{shorten(repr(name), 200)} is {problem}; a suite includes .yaml files by a relative "
            "path within its folder or the folder above it",
            data,
            "include",
            "include",
        )
    return target


def _includes(data: dict[str, Any], src: Source) -> list[str]:
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise src.error("expected a file name or a list of file names", data, "include", "include")
    return includes
