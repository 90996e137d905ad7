"""Errors a user can act on.

Every error privbench raises for bad input says *where* (file, line, field) and *what would be
valid*. The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PrivbenchError(Exception):
    """Base class of errors caused by the user's input, printed without a traceback."""


class SuiteError(PrivbenchError):
    """A suite file is malformed: an unknown key, a wrong type, an out-of-range value."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.line, self.field, self.message = path, line, field, message
        where = path or "<suite>"
        if line is not None:
            where += f":{line}"
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


class ParamError(PrivbenchError):
    """A method parameter has a wrong name, type or value."""


class UnknownNameError(PrivbenchError):
    """A registry lookup failed; the message carries 'did you mean' suggestions."""


class DataError(PrivbenchError):
    """A data set or image cannot be found or read."""


class ModelFileError(PrivbenchError):
    """A model file is missing or does not match its checksum."""


class StorageError(PrivbenchError):
    """A file could not be written: the disk is full, over quota, read-only or not writable.
    The message names the file and what to do (free space, then resume)."""


class CacheError(PrivbenchError):
    """The cache folder cannot be used as the run asked (``--cache required``)."""


class PluginError(PrivbenchError):
    """An installed plugin's entry point cannot be used: it fails to import, names something
    that is not a method of its kind, or takes a name that belongs to privbench."""


class RunFileError(PrivbenchError):
    """A file of a run folder or submission archive (manifest, results, records) is malformed:
    the message names the file, the line or key, and what it should be."""


class JsonLinesError(RunFileError, ValueError):
    """A line of a JSON-lines file is not valid JSON; the message names the file and line.
    Also a ValueError, for callers that catch that."""
