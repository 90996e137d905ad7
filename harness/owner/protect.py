"""The photo owner's ``protect`` and ``recover`` over files and folders.

Inputs are never overwritten; existing outputs only with ``overwrite``. Keys come from
``key`` (a key file, or the 2021 k-RTIO script's key folder) or the environment, and appear in
no output, log line or message. Each protected file stores (in its metadata) the defense, its
parameters, the photo's id and a key check; recovery reads them back. The same, with the
protected output's perceptual hash and size, goes into the photo index beside the key
(:mod:`harness.owner.index`), from which recovery finds a photo whose metadata was stripped
(:mod:`harness.owner.matching`).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from harness import __version__
from harness.core.errors import PrivbenchError
from harness.owner.batch import Batch, FileJob
from harness.owner.files import FileOptions, collect
from harness.owner.identity import key_check, photo_id, recorded_id, verify_key
from harness.owner.index import Entry, append_index, prepare_index
from harness.owner.matching import fingerprint
from harness.owner.pixels import apply_to_photo, psnr
from harness.owner.recover_index import IndexLookup, index_path, recovering_photo
from harness.toolkit.photos import Photo, read_photo, write_photo


def protect_files(options: FileOptions) -> int:
    """Protect every photo under ``options.inputs`` into ``options.out_dir``; the exit status
    (1 if any file failed)."""
    batch = Batch(options, recovering=False)
    files = collect(options.inputs, batch.out_dir)
    inputs = {f.resolve() for f, _ in files}
    suffix = ".jpg" if options.jpeg is not None else ".png"
    ids: dict[str, tuple[Path, str]] = {}  # id -> (first file, its pixel digest)
    index = index_path(options, batch.keyring, writing=True)
    prepare_index(index)  # a broken or unwritable index is refused before any photo is written
    entries: dict[int, Entry] = {}

    def protect(job: FileJob) -> None:
        path, relative = job.path, job.relative
        out = batch.output_path(relative, suffix, inputs)
        photo = job.read(path)
        defense = batch.defense({})
        image_id = photo_id(defense, relative, photo, batch.keyring)
        digest = hashlib.sha256(photo.pixels.tobytes()).hexdigest()
        with job.in_order():
            first = ids.setdefault(image_id, (path, digest))
            if first[1] != digest:
                raise PrivbenchError(
                    f"{path} gets the same image id as {first[0]} (the legacy scheme's id is "
                    "the file name), so both would carry the same overlay and two uploads "
                    "would cancel it; protect them in separate calls with different keys, or "
                    "use the pets2021 scheme"
                )
            batch.claim(out, path)
        protected = apply_to_photo(defense, photo, image_id, batch.keyring, recovering=False)
        metadata = {
            "privbench": __version__,
            "defense": options.defense,
            "params": defense.config,
            "id": image_id,
            "key_check": key_check(batch.keyring, options.defense, defense.config, image_id),
        }
        result = replace(photo, pixels=protected, metadata=metadata)
        write_photo(out, result, options.jpeg, options.png_compression)
        if defense.reversible:  # an entry serves only recovery
            entries[job.index] = _entry(result, out.relative_to(batch.out_dir))
        job.report(f"protected {path} -> {out}")
        if options.jpeg is not None and defense.reversible:
            back = apply_to_photo(defense, read_photo(out), image_id, batch.keyring, True)
            lossless = apply_to_photo(defense, result, image_id, batch.keyring, True)
            job.say(
                f"note: {out} is JPEG q{options.jpeg}: recovery from it reaches "
                f"{psnr(back, photo.pixels, photo.max_value):.1f} dB PSNR, against "
                f"{psnr(lossless, photo.pixels, photo.max_value):.1f} dB from a PNG"
            )

    try:
        return batch.each(files, protect)
    finally:  # what was written is indexed, even when the call is interrupted
        _record(index, [entries[i] for i in sorted(entries)])


def _record(index: Path, entries: list[Entry]) -> None:
    """Add ``entries`` to the index; PrivbenchError saying what the outputs still have when it
    cannot be written (a disk that filled up during the call)."""
    try:
        append_index(index, entries)
    except OSError as exc:
        raise PrivbenchError(
            f"the photo index {index} could not be updated ({exc.strerror or exc}): the "
            f"{len(entries)} outputs written are not in it; they recover from their own "
            "metadata, or protect them again with --overwrite once the index can be written"
        ) from None


def _entry(protected: Photo, relative: Path) -> Entry:
    """The index entry of a protected output (its pixels, its metadata)."""
    phash, dhash = fingerprint(protected.pixels)
    meta = protected.metadata
    height, width = protected.pixels.shape[:2]
    return Entry(
        phash=phash,
        dhash=dhash,
        id=meta["id"],
        defense=meta["defense"],
        params=meta["params"],
        size=(height, width),
        key_check=meta["key_check"],
        file=relative.as_posix(),
    )


def recover_files(options: FileOptions) -> int:
    """Recover every protected photo under ``options.inputs`` into ``options.out_dir``; the
    exit status (1 if any file failed)."""
    batch = Batch(options, recovering=True)
    files = collect(options.inputs, batch.out_dir)
    inputs = {f.resolve() for f, _ in files}
    lookup = IndexLookup(index_path(options, batch.keyring, writing=False), batch)

    def recover(job: FileJob) -> None:
        path = job.path
        out = batch.output_path(job.relative, ".png", inputs)
        photo = recovering_photo(job, job.read(path), lookup)
        recorded = photo.metadata.get("defense")
        if recorded is not None and recorded != options.defense:
            raise PrivbenchError(
                f"{path} was protected with {recorded!r}, not {options.defense!r}; "
                f"pass --defense {recorded}"
            )
        defense = batch.defense(photo.metadata)
        image_id = recorded_id(defense, path, photo, options.id_from_name, lookup.hint())
        note = verify_key(batch.keyring, options.defense, defense, path, photo, image_id)
        if note:
            job.say(note, err=True)
        with job.in_order():
            batch.claim(out, path)
        recovered = apply_to_photo(defense, photo, image_id, batch.keyring, recovering=True)
        result = replace(photo, pixels=recovered, metadata={})
        write_photo(out, result, None, options.png_compression)
        job.report(f"recovered {path} -> {out}")

    return batch.each(files, recover)
