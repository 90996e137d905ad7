"""Recovery's use of the photo index: which index a call reads or writes, and a photo without
metadata turned into one that has it (its entry's), at the size it was protected at."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.api.photo_files import PhotoIds
from harness.core.errors import PrivbenchError
from harness.core.keys import Keyring
from harness.core.limits import PHOTO_PIXELS, shorten
from harness.owner.batch import Batch, FileJob
from harness.owner.files import FileOptions
from harness.owner.index import Entry, default_index, read_index
from harness.owner.matching import (
    NoMatchError,
    hash_table,
    nearest_entry,
    resize_note,
    to_recorded_size,
)
from harness.toolkit.photos import Photo


def index_path(options: FileOptions, keyring: Keyring, writing: bool) -> Path:
    """``--index`` if given, else the index beside the key; when ``writing``, PrivbenchError
    for one inside the output folder (whose files are uploaded)."""
    if options.index is not None and not options.index.strip():
        raise PrivbenchError("--index needs the path of a photo index file")
    path = (
        Path(options.index).expanduser() if options.index else default_index(options.key, keyring)
    )
    if writing:
        out = Path(options.out_dir).resolve()
        where = path.resolve()
        if where == out or out in where.parents:
            raise PrivbenchError(
                f"the photo index {path} would be inside OUT_DIR {options.out_dir}, whose "
                "files are meant for upload; keep the key (and its index) outside it, or pass "
                "--index with a path outside it"
            )
    return path


class IndexLookup:
    """The index one recover call reads (once, before any file: a broken one stops the call)."""

    def __init__(self, path: Path, batch: Batch) -> None:
        self.path = path
        if batch.options.index and not path.exists():
            raise PrivbenchError(f"--index {path}: no such file")
        self.entries: list[Entry] = read_index(path)
        self.table = hash_table(self.entries) if self.entries else None
        self._by_id: dict[str, list[Entry]] = {}
        for entry in self.entries:
            self._by_id.setdefault(entry.id, []).append(entry)

    def recorded(self, metadata: dict[str, Any]) -> Entry | None:
        """The entry of a photo that kept its metadata (the one with its id, defense and
        parameters), or None: it says the size the photo was protected at."""
        for entry in self._by_id.get(str(metadata.get("id")), []):
            if (entry.defense, entry.params) == (metadata.get("defense"), metadata.get("params")):
                return entry
        return None

    def hint(self) -> str:
        """What to add to the message for a photo without metadata when the index is empty."""
        if self.entries:
            return ""
        return (
            f"; no photo index at {self.path} could stand in (`privbench protect` writes one "
            "beside the key; --index names another)"
        )


def recovering_photo(job: FileJob, photo: Photo, lookup: IndexLookup) -> Photo:
    """``photo`` as recovery should see it: with its own metadata when it has it, else (unless
    ``--id-from-name`` was given, or there is no index) with the metadata of the index entry it
    matches; resized to the size its entry records, if it has one (a note says so). A photo
    that matches none is an error, unless the defense can read its id from the file name
    (k-RTIO's legacy scheme)."""
    options = job.batch.options
    if photo.metadata.get("id"):
        return _at_recorded_size(job, photo, lookup.recorded(photo.metadata))
    if options.id_from_name or not lookup.entries:
        return photo
    try:
        entry, bits = nearest_entry(photo.pixels, lookup.entries, str(job.path), lookup.table)
    except NoMatchError:
        defense = job.batch.defense({})
        if isinstance(defense, PhotoIds) and defense.id_from_file_name(job.path):
            return photo
        raise
    job.report(
        f"{job.path}: no metadata; matches {shorten(entry.file, 200)} of the index (hashes "
        f"{bits} of 128 bits apart)"
    )
    return _at_recorded_size(job, replace(photo, metadata=entry.metadata()), entry)


def _at_recorded_size(job: FileJob, photo: Photo, entry: Entry | None) -> Photo:
    """``photo`` resized to ``entry``'s size (with a note) when it is not at it."""
    if entry is None or photo.pixels.shape[:2] == entry.size:
        return photo
    _check_size(job, entry)
    note = resize_note(photo.pixels.shape, entry.size, str(job.path))
    if note:
        job.say(note, err=True)
    pixels = to_recorded_size(photo.pixels, entry.size)
    alpha = photo.alpha
    if alpha is not None:
        alpha = to_recorded_size(alpha[..., None], entry.size)[..., 0]
    return replace(photo, pixels=pixels, alpha=alpha)


def _check_size(job: FileJob, entry: Entry) -> None:
    """PrivbenchError for an entry whose recorded size has more pixels than a photo may
    (:data:`PHOTO_PIXELS`): resizing to it would allocate that many, and ``protect`` never
    records one (it refuses such photos), so the index was damaged or written by another."""
    height, width = entry.size
    limit = PHOTO_PIXELS.value()
    if height * width > limit:
        raise PrivbenchError(
            f"{job.path}: its index entry ({entry.file}) records a size of {width}×{height}, "
            f"{height * width:,} pixels, more than the {limit:,} privbench processes "
            f"(${PHOTO_PIXELS.env} raises the limit); protect never records such a size: the "
            "index is damaged or not privbench's; nothing written"
        )
