"""One ``protect`` or ``recover`` call over many files: the state its files share, and each
file's messages, error and turn at the steps that must happen in input order.

One bad file is reported and the batch continues; the exit status is 1 if any file failed.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.api.contracts import Defense
from harness.api.registry import DEFENSES
from harness.core.errors import PrivbenchError
from harness.core.limits import printable, shorten
from harness.core.paths import within
from harness.owner.files import FileOptions, keyring_for, parse_params
from harness.toolkit.photos import Photo, read_photo


class Batch:
    """Shared state of one protect/recover call."""

    def __init__(self, options: FileOptions, recovering: bool) -> None:
        self.options = options
        self.verb = "recovered" if recovering else "protected"
        self.explicit = parse_params(options.params, options.overlays)
        DEFENSES.resolve(options.defense, self.explicit)  # fail fast on a bad name or value
        cls = DEFENSES.get(options.defense)
        if recovering and not cls.reversible:
            raise PrivbenchError(f"defense {options.defense!r} is not reversible")
        self.keyring = keyring_for(options.key)
        self.out_dir = Path(options.out_dir)
        self._defenses: dict[str, Defense] = {}
        self._claimed: dict[Path, Path] = {}

    def defense(self, metadata: dict[str, Any]) -> Defense:
        """The defense with explicit params, else the file's recorded ones, else defaults."""
        same = metadata.get("defense") == self.options.defense
        params = dict(metadata.get("params") or {}) if same else {}
        params.update(self.explicit)
        key = repr(sorted(params.items()))
        if key not in self._defenses:
            self._defenses[key] = DEFENSES.create(self.options.defense, params)
        return self._defenses[key]

    def output_path(self, relative: Path, suffix: str, inputs: set[Path]) -> Path:
        out = (self.out_dir / relative).with_suffix(suffix)
        if not within(out, self.out_dir):
            raise PrivbenchError(
                f"{out} leads out of OUT_DIR {self.out_dir} through a symbolic link; privbench "
                "writes only inside OUT_DIR: remove the link or choose another OUT_DIR"
            )
        if out.resolve() in inputs:
            raise PrivbenchError(
                f"{out} is an input; choose another OUT_DIR (inputs are never overwritten)"
            )
        return out

    def claim(self, out: Path, source: Path) -> None:
        """Record that ``source`` writes ``out`` in this call; refused if another input of
        this call does, or if ``out`` exists from before and ``--overwrite`` is not given
        (call in input order, :meth:`FileJob.in_order`: an earlier input may already have
        written ``out``, which must read as a clash, not as a file from before)."""
        if out.resolve() in self._claimed:
            raise PrivbenchError(
                f"its output {out} is already the output of {self._claimed[out.resolve()]} in "
                "this call (the names differ only in the suffix); rename one of them or "
                "protect it into another folder"
            )
        if out.exists() and not self.options.overwrite:
            raise PrivbenchError(f"{out} exists; pass --overwrite to replace it")
        self._claimed[out.resolve()] = source

    def each(self, files: list[tuple[Path, Path]], handle: Callable[[FileJob], None]) -> int:
        """Run ``handle`` on every file, ``jobs`` at a time; a file that fails is named with
        the reason and the others go on. Each file's messages are printed together, in input
        order. Ends with a summary; returns the exit status (1 if any file failed)."""
        turns = [threading.Event() for _ in files]
        jobs = [FileJob(self, i, path, rel, turns) for i, (path, rel) in enumerate(files)]

        def attempt(job: FileJob) -> FileJob:
            try:
                handle(job)
            except Exception as exc:
                job.error = exc
                job.trace = traceback.format_exc()
            finally:
                job.pass_turn()
            return job

        workers = max(1, min(int(self.options.jobs), len(jobs)))
        with ThreadPoolExecutor(workers, thread_name_prefix="privbench-file") as pool:
            failed = sum(job.print() for job in pool.map(attempt, jobs))
        done = len(files) - failed
        summary = f"privbench: {self.verb} {done} of {len(files)} files"
        if failed or not self.options.quiet:
            print(summary + (f"; {failed} failed (above)" if failed else ""), file=sys.stderr)
        return 1 if failed else 0


class FileJob:
    """One file of a protect/recover call: its messages, its error, and its turn at the steps
    that must happen in input order (the first of two photos with the same id is the earlier
    one in the input, whichever thread gets there first)."""

    def __init__(
        self, batch: Batch, index: int, path: Path, relative: Path, turns: list[threading.Event]
    ) -> None:
        self.batch = batch
        self.index = index
        self.path = path
        self.relative = relative
        self.turns = turns
        self.lines: list[tuple[bool, str]] = []  # (to stderr, text)
        self.error: Exception | None = None
        self.trace = ""

    def say(self, text: str, err: bool = False) -> None:
        self.lines.append((err, text))

    def report(self, text: str) -> None:
        if not self.batch.options.quiet:
            self.say(text)

    def read(self, path: Path) -> Photo:
        """The photo at ``path``; what the decoder warned about is printed as a note."""
        photo = read_photo(path)
        for note in photo.notes:
            self.say(f"note: {path}: {note}", err=True)
        return photo

    @contextmanager
    def in_order(self) -> Iterator[None]:
        """A step no file enters before every earlier file has passed it (or failed)."""
        if self.index:
            self.turns[self.index - 1].wait()
        try:
            yield
        finally:
            self.pass_turn()

    def pass_turn(self) -> None:
        self.turns[self.index].set()

    def print(self) -> bool:
        """Print this file's messages and error; True if it failed."""
        # names come from files and an index others may have made: no escape reaches the terminal
        for err, text in self.lines:
            print(printable(text), file=sys.stderr if err else sys.stdout)
        if self.error is None:
            return False
        exc = self.error
        text = str(exc) if isinstance(exc, PrivbenchError | OSError) else None
        if text is None:  # not an input problem: a bug worth reporting as such
            text = f"unexpected {type(exc).__name__}: {exc}"
            if self.batch.options.debug:
                print(self.trace, file=sys.stderr)
        prefix = "" if text.startswith(str(self.path)) else f"{self.path}: "
        print(f"error: {printable(shorten(prefix + text))}", file=sys.stderr)
        return True
