"""Whether a run folder is the run its manifest describes: finished, and with the result files
it had when it finished.

A run records, when it finishes, the sha256 of ``results.jsonl`` and of every file under
``records/`` in its manifest (``digests``). ``submit`` and ``merge`` take only a folder whose
status is ``complete``, that holds no symbolic link, and whose files still match those digests:
a folder that two runs wrote into, or whose records were changed afterwards, is refused.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import PrivbenchError
from harness.core.paths import first_link
from harness.runs.archive import is_archive
from harness.runs.folder import RunFolder, resume_command
from harness.runs.lock import describe, holder
from harness.runs.manifest import Manifest

# What to do about a run that did not finish, by its status ({resume}: the command that
# finishes it in its folder, harness.engine.resume).
UNFINISHED = {
    "running": "it did not finish: it was stopped before it could say so (killed, or the "
    "machine went down); finish it with {resume}",
    "failed": "some of its cells or methods failed, or its disk filled up (its manifest lists "
    "why); fix that, then finish it with {resume}",
    "interrupted": "it was interrupted (Ctrl-C or SIGTERM) before it finished; finish it with "
    "{resume}",
    "terminated": "it was terminated (SIGTERM) before it finished; finish it with {resume}",
}


class UnsealedRunError(PrivbenchError):
    """A run folder that is unfinished, or that changed after its run finished."""


def check_finished(source: Path, folder: Path, manifest: Manifest, verb: str) -> None:
    """UnsealedRunError unless the run is ``complete``: its status, and what to do about it
    (a running run is told apart from one that was killed by its lock)."""
    if manifest.complete:
        return
    resume = (
        "--resume on the machine that ran it, then a new submission"
        if is_archive(Path(source))
        else resume_command(manifest.suite.path, folder.name, folder)
    )
    why = UNFINISHED.get(manifest.status, "run the suite again").format(resume=resume)
    if manifest.status == "running":
        who = holder(folder.parent, folder.name)
        if who is not None:
            why = f"it is still being written by {describe(who)}; wait for it to finish"
    raise UnsealedRunError(
        f"{source} is {manifest.status!r}, not complete, so it cannot be {verb}: {why}"
    )


def check_sealed(source: Path, folder: RunFolder, manifest: Manifest, verb: str) -> None:
    """UnsealedRunError unless the run in ``folder`` (read from ``source``, a folder or an
    archive) is complete, holds no symbolic link, and its results and records match the
    digests its manifest recorded when it finished."""
    check_finished(source, folder.path, manifest, verb)
    link = first_link(folder.path)
    if link is not None:
        raise UnsealedRunError(
            f"{source}: {link.relative_to(folder.path)} is a symbolic link or special file; a "
            f"run folder privbench wrote holds none, so it cannot be {verb}"
        )
    if manifest.digests is None:
        # Folders written before runs recorded digests (privbench 0.1 and the releases up to
        # this one) are taken as they are: nothing recorded, nothing to compare.
        return
    found = folder.digests()
    for name in sorted(set(found) | set(manifest.digests)):
        if name not in found:
            problem = "is missing"
        elif name not in manifest.digests:
            problem = "was not there when the run finished"
        elif found[name] != manifest.digests[name]:
            problem = "has changed since the run finished"
        else:
            continue
        raise UnsealedRunError(
            f"{source}: {name} {problem} (its manifest records the sha256 of every results "
            f"and records file), so it cannot be {verb}; run the suite again into a new folder"
        )
