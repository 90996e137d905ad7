"""The photo index against hostile and broken inputs: hand-made entries (giant or boolean
sizes, missing fields, names with terminal escapes), an index behind a link, one that cannot
be written, and photos too small or of the wrong proportions to be recognised by their look.
The fixtures are those of tests/test_owner_index.py (four protected lfw-subset faces)."""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import harness.core.files as files
import harness.owner.protect as protect
from harness.owner.index import append_index, read_index
from harness.owner.matching import MIN_SIDE, NoMatchError, nearest_entry, to_recorded_size
from tests.test_owner_cli import privbench
from tests.test_owner_index import FACES, _copies, _entry_at, _face, owner

__all__ = ["owner"]  # the fixture, used by name


def _one_entry_index(owner: dict[str, Path], **changes: object) -> Path:
    """An index holding face 0's true entry with ``changes`` made to its JSON row."""
    index = owner["key"].with_name("owner.key.index.jsonl")
    row = next(r for r in map(json.loads, index.read_text().splitlines()) if "face0" in r["file"])
    hostile = owner["tmp"] / "hostile.jsonl"
    hostile.write_text(json.dumps({**row, **changes}) + "\n")
    return hostile


def test_a_hostile_recorded_size_is_refused_not_allocated(owner: dict[str, Path]) -> None:
    copies = _copies(owner, "stripped", lambda im: im)
    args = ["recover", "--key", str(owner["key"]), str(copies / "upload-0.png")]
    # 10^10 pixels (30 GB as RGB) would be allocated by the resize back to the recorded size
    huge = _one_entry_index(owner, size=[100_000, 100_000])
    p = privbench(*args, str(owner["tmp"] / "r1"), "--index", str(huge))
    assert p.returncode == 1 and "100000×100000" in p.stderr, p.stderr
    assert "PRIVBENCH_MAX_PHOTO_PIXELS" in p.stderr and "unexpected" not in p.stderr
    assert not (owner["tmp"] / "r1").exists()
    # JSON's true is no size, though Python counts it as the number 1
    flags = _one_entry_index(owner, size=[True, True])
    p = privbench(*args, str(owner["tmp"] / "r2"), "--index", str(flags))
    assert p.returncode == 2 and f"{flags}:1: not a photo index line ('size'" in p.stderr
    missing = _one_entry_index(owner, phash=None)
    missing.write_text(missing.read_text().replace('"phash": null, ', ""))
    p = privbench(*args, str(owner["tmp"] / "r3"), "--index", str(missing))
    assert p.returncode == 2 and "(no 'phash')" in p.stderr, p.stderr


def test_an_index_reached_through_a_link_stays_one_file(tmp_path: Path) -> None:
    """A link to the index (kept in a synced folder, say) is written through, not replaced by
    a copy that later calls would grow while the real index stays behind."""
    real = tmp_path / "vault" / "owner.index.jsonl"
    link = tmp_path / "link.jsonl"
    pixels = _face(0)[..., None]
    a, b = _entry_at(pixels, 0, "a"), _entry_at(pixels, 30, "b")
    append_index(real, [a])
    link.symlink_to(real)
    append_index(link, [b])
    assert link.is_symlink() and read_index(real) == [a, b]


def test_the_index_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even between its rename into place and a chmod after it: the mode it is renamed
    with is already 0600, whatever the umask."""
    modes: list[int] = []
    replace_file = files.os.replace

    def watched(src: str, dst: object) -> None:
        modes.append(stat.S_IMODE(Path(src).stat().st_mode))
        replace_file(src, dst)

    monkeypatch.setattr(files.os, "replace", watched)
    old = os.umask(0)
    try:
        append_index(tmp_path / "i.jsonl", [_entry_at(_face(0)[..., None], 0, "a")])
    finally:
        os.umask(old)
    assert modes == [0o600]


def test_tiny_or_misshapen_photos_are_not_matched_by_their_look() -> None:
    """A photo under MIN_SIDE pixels a side has almost no structure left for the hashes (a
    1×1 photo hashes like any flat one), and an entry of other proportions than the photo is
    not a resized copy of it: neither is a candidate, whatever the bits say."""
    pixels = _face(0)[..., None]  # 25×25
    entry = _entry_at(pixels, 0, "face")
    assert nearest_entry(pixels, [entry], "x") == (entry, 0)
    tiny = to_recorded_size(pixels, (MIN_SIDE - 1, MIN_SIDE - 1))
    with pytest.raises(NoMatchError, match=f"too small.*{MIN_SIDE} pixels"):
        nearest_entry(tiny, [entry], "x")
    assert nearest_entry(to_recorded_size(pixels, (MIN_SIDE, MIN_SIDE)), [entry], "x")[0] == entry
    flat = np.full((64, 64, 1), 128, np.uint8)
    one = replace(_entry_at(flat, 0, "one"), size=(1, 1))  # a protected 1×1 photo's entry
    with pytest.raises(NoMatchError, match="proportions"):
        nearest_entry(flat, [one], "x")
    # rounding a resize moves each side by at most one pixel: 25×25 halved may be 12×13
    assert nearest_entry(to_recorded_size(pixels, (12, 13)), [entry], "x")[0] == entry
    wide = replace(entry, size=(25, 50))
    with pytest.raises(NoMatchError, match="proportions"):
        nearest_entry(pixels, [wide], "x")


def test_names_from_the_index_reach_the_terminal_without_escapes(owner: dict[str, Path]) -> None:
    copies = _copies(owner, "stripped", lambda im: im)
    args = ["recover", "--key", str(owner["key"]), str(copies / "upload-0.png")]
    name = "\x1b]0;owned\x07\x1b[2J" + "x" * 100_000 + ".png"
    index = _one_entry_index(owner, file=name)
    p = privbench(*args, str(owner["tmp"] / "r1"), "--index", str(index))
    assert p.returncode == 0 and "\\x1b]0;owned\\x07" in p.stdout, p.stderr
    assert "\x1b" not in p.stdout + p.stderr and len(p.stdout) < 2_000
    twice = _one_entry_index(owner, file=name)
    twice.write_text(twice.read_text() * 2)  # the same face under another id: ambiguous
    lines = twice.read_text().splitlines()
    twice.write_text(lines[0] + "\n" + lines[1].replace('"id": "', '"id": "other') + "\n")
    p = privbench(*args, str(owner["tmp"] / "r2"), "--index", str(twice))
    assert p.returncode == 1 and "looks like two photos" in p.stderr, p.stderr
    assert "\x1b" not in p.stderr and len(p.stderr) < 2_000


def test_an_index_that_cannot_be_written_is_refused_before_any_photo(
    owner: dict[str, Path],
) -> None:
    below_a_file = owner["key"] / "sub" / "i.jsonl"  # the key is a file: no folder below it
    out = owner["tmp"] / "o"
    p = privbench(
        "protect",
        "--key",
        str(owner["key"]),
        "--index",
        str(below_a_file),
        str(owner["in"]),
        str(out),
    )
    assert p.returncode == 2 and f"the photo index {below_a_file} cannot be written" in p.stderr
    assert not out.exists() and "Traceback" not in p.stderr


def test_an_index_that_fills_the_disk_says_what_the_outputs_still_have(
    owner: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, entries: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(protect, "append_index", full)
    out = owner["tmp"] / "o"
    p = privbench("protect", "--key", str(owner["key"]), str(owner["in"]), str(out))
    assert p.returncode == 2 and "could not be updated (No space left on device)" in p.stderr
    assert f"the {len(FACES)} outputs written are not in it" in p.stderr
    assert len(list(out.iterdir())) == len(FACES) and "Traceback" not in p.stderr
