"""One writer per run folder: a lock beside the folder, held for the whole run.

The lock of ``<parent>/<run-id>`` is the file ``<parent>/.<run-id>.lock`` (beside the folder, so
that it outlives a folder moved aside by ``--overwrite``), taken with :mod:`filelock` without
waiting. Whoever holds it writes ``<parent>/.<run-id>.lock.json`` (pid, host, since), so that a
second run with the same id is refused at once, naming the holder. Both files are removed when
the lock is released; a process killed outright leaves them, and the kernel releases its lock,
so the next run takes it.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from harness.core.errors import PrivbenchError
from harness.core.files import atomic_write_json


class RunBusyError(PrivbenchError):
    """Another process is writing the run folder."""


def lock_file(parent: Path, run_id: str) -> Path:
    """The lock of the run folder ``parent/run_id``."""
    return Path(parent) / f".{run_id}.lock"


def holder_file(parent: Path, run_id: str) -> Path:
    """Who holds the lock of ``parent/run_id`` (JSON: pid, host, since)."""
    return Path(parent) / f".{run_id}.lock.json"


def holder(parent: Path, run_id: str) -> dict[str, Any] | None:
    """The process that holds the lock of ``parent/run_id`` as it recorded itself, or None if
    no process holds it (the lock is taken and given back at once to find out)."""
    probe = FileLock(lock_file(parent, run_id), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return _recorded(parent, run_id)
    except OSError:
        return None  # a folder we may not write to: nobody writes a run there either
    try:
        lock_file(parent, run_id).unlink(missing_ok=True)
    finally:
        probe.release(force=True)
    return None


def _recorded(parent: Path, run_id: str) -> dict[str, Any]:
    try:
        data = json.loads(holder_file(parent, run_id).read_text(encoding="utf-8")[:4096])
    except (OSError, ValueError):
        data = None
    return data if isinstance(data, dict) else {}


def describe(who: dict[str, Any]) -> str:
    """``pid N on host H since T`` from a holder record (``?`` where it is not known yet)."""
    return f"pid {who.get('pid', '?')} on host {who.get('host', '?')} since {who.get('since', '?')}"


class RunLock:
    """The lock of one run folder: :meth:`acquire` takes it at once or raises
    :class:`RunBusyError` naming the holder; :meth:`release` (or leaving a ``with`` block) gives
    it back and removes its files."""

    def __init__(self, parent: Path, run_id: str) -> None:
        self.parent, self.run_id = Path(parent), run_id
        self._lock = FileLock(lock_file(parent, run_id), timeout=0)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> RunLock:
        """Take the lock now and record this process as its holder; RunBusyError naming the
        holder if another has it, PrivbenchError if the folder cannot be written."""
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:  # a TimeoutError, so an OSError: first
            who = _recorded(self.parent, self.run_id)
            raise RunBusyError(
                f"run folder {self.run_id} in {self.parent} is being written by {describe(who)}; "
                "wait for that run to end, stop it, or choose another --run-id"
            ) from None
        except OSError as exc:
            raise PrivbenchError(
                f"cannot write a run folder in {self.parent}: {exc.strerror or exc}; choose "
                "a results folder this account can write to"
            ) from None
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        try:
            atomic_write_json(holder_file(self.parent, self.run_id), me)
        except BaseException:
            self._lock.release()
            raise
        return self

    def release(self) -> None:
        """Give the lock back, removing the holder record and the lock file first (a waiter
        that opened the removed file sees it unlinked and does not take it)."""
        if not self._lock.is_locked:
            return
        try:
            for path in (
                holder_file(self.parent, self.run_id),
                lock_file(self.parent, self.run_id),
            ):
                path.unlink(missing_ok=True)
        finally:
            self._lock.release(force=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
