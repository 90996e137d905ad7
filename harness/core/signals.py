"""SIGTERM handled like Ctrl-C: an exception in the main thread, so that ``finally`` blocks,
context managers and ``atexit`` handlers run (temporary folders are removed, a run's manifest
says what finished) before the process exits with status 143."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended
SIGINT_EXIT = 130  # 128 + SIGINT


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; handled like Ctrl-C: what finished is written."""


def signal_name(exc: BaseException) -> str:
    """The signal an interruption came from: ``SIGTERM`` for :class:`Terminated`, else
    ``SIGINT`` (Ctrl-C)."""
    return "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only; elsewhere
    nothing changes). Only the first SIGTERM raises: one sent again while the program cleans
    up does not interrupt the cleaning. The previous handler is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
