"""Recovery without metadata: ``protect`` records each output's perceptual hash in the photo
index beside the key, and ``recover`` finds a stripped, re-encoded or resized copy there.

The photos are real faces (scikit-image's lfw-subset, 25×25 grey), the smallest the index is
documented for: the distances the threshold was chosen from were measured on all 100 of them
(harness/owner/matching.py)."""

from __future__ import annotations

import json
import re
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from harness.api.registry import DEFENSES
from harness.core.keys import Keyring, load_key
from harness.datasets.faces import _gray_to_u8
from harness.owner.index import Entry, append_index, default_index, read_index
from harness.owner.matching import (
    AMBIGUITY_GAP,
    THRESHOLD,
    AmbiguousMatchError,
    NoMatchError,
    _ones,
    fingerprint,
    nearest_entry,
    to_recorded_size,
)
from harness.owner.pixels import psnr
from harness.toolkit.photos import read_photo, write_photo
from tests.test_owner_cli import _leaks, privbench

FACES = (0, 1, 2, 3)  # protected
STRANGER = 50  # never protected


def _face(i: int) -> np.ndarray:
    return _gray_to_u8(data.lfw_subset()[i : i + 1])[0]


@pytest.fixture
def owner(tmp_path: Path) -> dict[str, Path]:
    """A key, four faces and their protected outputs."""
    key = tmp_path / "keys" / "owner.key"
    assert privbench("keygen", str(key)).returncode == 0
    src = tmp_path / "in"
    src.mkdir()
    for i in FACES:
        Image.fromarray(_face(i)).save(src / f"face{i}.png")
    p = privbench("protect", "--key", str(key), str(src), str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    return {"key": key, "in": src, "out": tmp_path / "out", "tmp": tmp_path}


def _copies(owner: dict[str, Path], name: str, change: object, suffix: str = ".png") -> Path:
    """The protected outputs as a platform hands them back: ``change`` applied to each, saved
    by Pillow (no privbench metadata) under a name that says nothing (upload-N)."""
    folder = owner["tmp"] / name
    folder.mkdir()
    for n, i in enumerate(FACES):
        image = Image.open(owner["out"] / f"face{i}.png")
        image = change(image)  # type: ignore[operator]
        save = {"quality": 90} if suffix == ".jpg" else {}
        image.save(folder / f"upload-{n}{suffix}", **save)
    return folder


def _true_id(owner: dict[str, Path], i: int) -> str:
    return str(read_photo(owner["out"] / f"face{i}.png").metadata["id"])


def test_a_stripped_png_recovers_exactly_as_with_its_metadata(owner: dict[str, Path]) -> None:
    bare = _copies(owner, "bare", lambda im: im)
    assert all(read_photo(f).metadata == {} for f in bare.iterdir())
    meta = privbench(
        "recover", "--key", str(owner["key"]), str(owner["out"]), str(owner["tmp"] / "r1")
    )
    r = privbench("recover", "--key", str(owner["key"]), str(bare), str(owner["tmp"] / "r2"))
    assert meta.returncode == 0 and r.returncode == 0, r.stderr
    for n, i in enumerate(FACES):
        assert f"upload-{n}.png: no metadata; matches face{i}.png of the index" in r.stdout
        assert "(hashes 0 of 128 bits apart)" in r.stdout  # the very pixels that were hashed
        via_meta = read_photo(owner["tmp"] / "r1" / f"face{i}.png").pixels
        via_index = read_photo(owner["tmp"] / "r2" / f"upload-{n}.png").pixels
        np.testing.assert_array_equal(via_index, via_meta)  # so the PSNR is the same too
        original = read_photo(owner["in"] / f"face{i}.png").pixels
        assert psnr(via_index, original, 255) == psnr(via_meta, original, 255) > 40


def test_a_jpeg_copy_finds_its_entry(owner: dict[str, Path]) -> None:
    jpegs = _copies(owner, "jpeg", lambda im: im, ".jpg")
    r = privbench("recover", "--key", str(owner["key"]), str(jpegs), str(owner["tmp"] / "r"))
    assert r.returncode == 0, r.stderr
    krtio, ring = DEFENSES.create("krtio"), load_key(owner["key"])
    for n, i in enumerate(FACES):
        assert f"upload-{n}.jpg: no metadata; matches face{i}.png" in r.stdout
        got = read_photo(owner["tmp"] / "r" / f"upload-{n}.png").pixels
        # exactly the JPEG's pixels undone under the face's own id: the right entry was used
        pixels = read_photo(jpegs / f"upload-{n}.jpg").pixels
        np.testing.assert_array_equal(got, krtio.recover_array(pixels, _true_id(owner, i), ring))
        # measured on all 100 faces: at least 29.8 dB from quality 90; 5 dB of room
        assert psnr(got, read_photo(owner["in"] / f"face{i}.png").pixels, 255) > 25


def test_a_half_size_copy_is_recovered_at_the_protected_size(owner: dict[str, Path]) -> None:
    def half(im: Image.Image) -> Image.Image:
        return im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)

    small = _copies(owner, "half", half)
    r = privbench("recover", "--key", str(owner["key"]), str(small), str(owner["tmp"] / "r"))
    assert r.returncode == 0, r.stderr
    assert "is 12×12, protected at 25×25: resized back" in r.stderr
    assert "not measured" not in r.stderr  # 12 of 25 pixels is a half, not below
    krtio, ring = DEFENSES.create("krtio"), load_key(owner["key"])
    for n, i in enumerate(FACES):
        assert f"upload-{n}.png: no metadata; matches face{i}.png" in r.stdout
        got = read_photo(owner["tmp"] / "r" / f"upload-{n}.png").pixels
        assert got.shape == (25, 25, 1)
        back = to_recorded_size(read_photo(small / f"upload-{n}.png").pixels, (25, 25))
        np.testing.assert_array_equal(got, krtio.recover_array(back, _true_id(owner, i), ring))


def test_a_half_size_copy_that_kept_its_metadata_is_resized_back(owner: dict[str, Path]) -> None:
    kept = owner["tmp"] / "kept"
    protected = read_photo(owner["out"] / "face0.png")
    small = to_recorded_size(protected.pixels, (12, 12))
    write_photo(kept / "face0.png", replace(protected, pixels=small))
    assert read_photo(kept / "face0.png").metadata == protected.metadata
    r = privbench("recover", "--key", str(owner["key"]), str(kept), str(owner["tmp"] / "r"))
    assert r.returncode == 0, r.stderr
    assert "no metadata" not in r.stdout and "resized back" in r.stderr
    got = read_photo(owner["tmp"] / "r" / "face0.png").pixels
    krtio, ring = DEFENSES.create("krtio"), load_key(owner["key"])
    expected = krtio.recover_array(to_recorded_size(small, (25, 25)), _true_id(owner, 0), ring)
    np.testing.assert_array_equal(got, expected)


def test_a_photo_never_protected_matches_nothing(owner: dict[str, Path]) -> None:
    stranger = owner["tmp"] / "stranger"
    stranger.mkdir()
    Image.fromarray(_face(STRANGER)).save(stranger / "someone.png")
    r = privbench("recover", "--key", str(owner["key"]), str(stranger), str(owner["tmp"] / "r"))
    assert r.returncode == 1  # as any other file that fails
    assert "someone.png: carries no privbench metadata and matches no photo in the index" in (
        r.stderr
    )
    assert "a match differs in at most 21" in r.stderr
    assert not (owner["tmp"] / "r" / "someone.png").exists()


def test_two_equally_near_entries_are_refused(owner: dict[str, Path]) -> None:
    index = owner["key"].with_name("owner.key.index.jsonl")
    first = json.loads(index.read_text().splitlines()[0])
    twin = {**first, "id": "f" * 32, "file": "twin.png"}  # same look, another photo
    index.write_text(index.read_text() + json.dumps(twin) + "\n")
    bare = _copies(owner, "bare", lambda im: im)
    r = privbench("recover", "--key", str(owner["key"]), str(bare), str(owner["tmp"] / "r"))
    assert r.returncode == 1
    assert "upload-0.png: carries no privbench metadata and looks like two photos" in r.stderr
    assert "face0.png (0 bits apart) and twin.png (0 bits apart)" in r.stderr
    assert not (owner["tmp"] / "r" / "upload-0.png").exists()
    assert (owner["tmp"] / "r" / "upload-1.png").exists()  # the others are not ambiguous


def test_the_index_lies_beside_the_key_grows_and_holds_no_key(
    owner: dict[str, Path], tmp_path: Path
) -> None:
    key = owner["key"]
    index = key.with_name("owner.key.index.jsonl")
    assert len(index.read_text().splitlines()) == len(FACES)
    assert sorted(p.name for p in owner["out"].rglob("*")) == [f"face{i}.png" for i in FACES]
    # a second call appends; protecting the same photos again adds nothing
    more = tmp_path / "more"
    more.mkdir()
    Image.fromarray(_face(STRANGER)).save(more / "late.png")
    assert privbench("protect", "--key", str(key), str(more), str(tmp_path / "o2")).returncode == 0
    again = privbench("protect", "--key", str(key), str(owner["in"]), str(tmp_path / "o3"))
    assert again.returncode == 0
    files = [json.loads(line)["file"] for line in index.read_text().splitlines()]
    assert files == [f"face{i}.png" for i in FACES] + ["late.png"]
    assert _leaks([index], [], key.read_bytes()) == []
    # never inside the output folder
    inside = privbench(
        "protect", "--key", str(key), "--index", str(tmp_path / "o4" / "i.jsonl"),
        str(more), str(tmp_path / "o4"),
    )  # fmt: skip
    assert inside.returncode == 2 and "would be inside OUT_DIR" in inside.stderr
    assert not (tmp_path / "o4").exists()
    # a key from the environment: the index is named by the key's id under $PRIVBENCH_HOME
    env = {"PRIVBENCH_HOME": str(tmp_path / "home"), "PRIVBENCH_KEY": key.read_bytes().hex()}
    assert privbench("protect", str(more), str(tmp_path / "o5"), env=env).returncode == 0
    (held,) = (tmp_path / "home" / "owner").glob("index-*.jsonl")
    assert len(held.name) == len("index-") + 16 + len(".jsonl")
    assert _leaks([held], [], key.read_bytes()) == []


def test_a_photo_from_another_key_is_refused_by_its_key_check(owner: dict[str, Path]) -> None:
    other = owner["tmp"] / "other.key"
    privbench("keygen", str(other))
    index = owner["key"].with_name("owner.key.index.jsonl")
    bare = _copies(owner, "bare", lambda im: im)
    r = privbench(
        "recover", "--key", str(other), "--index", str(index), str(bare), str(owner["tmp"] / "r")
    )
    assert r.returncode == 1 and "not the one the photo was protected with" in r.stderr
    assert not (owner["tmp"] / "r").exists() or not any((owner["tmp"] / "r").iterdir())


def test_an_oversized_or_broken_index_is_a_clear_error(owner: dict[str, Path]) -> None:
    key, tmp = owner["key"], owner["tmp"]
    index = key.with_name("owner.key.index.jsonl")
    size = index.stat().st_size
    args = ["recover", "--key", str(key), str(owner["out"]), str(tmp / "r")]
    big = privbench(*args, env={"PRIVBENCH_MAX_INDEX_BYTES": str(size - 1)})
    assert big.returncode == 2 and f"larger than {size - 1:,} bytes" in big.stderr
    assert "PRIVBENCH_MAX_INDEX_BYTES" in big.stderr and "Traceback" not in big.stderr
    assert privbench(*args, env={"PRIVBENCH_MAX_INDEX_BYTES": str(size)}).returncode == 0
    index.write_bytes(index.read_bytes() + b"\x00garbage{\n")
    broken = privbench(*args[:-1], str(tmp / "r2"))
    assert (
        broken.returncode == 2 and f"{index}:{len(FACES) + 1}: not a photo index" in broken.stderr
    )
    # protect refuses it before writing anything
    p = privbench("protect", "--key", str(key), str(owner["in"]), str(tmp / "o"))
    assert p.returncode == 2 and not (tmp / "o").exists()
    missing = privbench("recover", "--key", str(key), "--index", str(tmp / "nope"), *args[3:])
    assert missing.returncode == 2 and "no such file" in missing.stderr


def _entry_at(pixels: np.ndarray, bits: int, name: str) -> Entry:
    """An entry whose hashes differ from ``pixels``' in exactly ``bits`` bits (the lowest ones
    of the pHash first, then of the dHash)."""
    phash, dhash = fingerprint(pixels)
    p_flip, d_flip = min(bits, 64), max(bits - 64, 0)
    p = int(phash, 16) ^ ((1 << p_flip) - 1)
    d = int(dhash, 16) ^ ((1 << d_flip) - 1)
    return Entry(f"{p:016x}", f"{d:016x}", name, "krtio", {}, (25, 25), "0" * 16, f"{name}.png")


def test_the_threshold_and_the_gap_are_exact() -> None:
    pixels = _face(0)[..., None]
    near = _entry_at(pixels, THRESHOLD, "near")
    assert nearest_entry(pixels, [near], "x") == (near, THRESHOLD)
    with pytest.raises(NoMatchError, match=f"differs in {THRESHOLD + 1} of 128"):
        nearest_entry(pixels, [_entry_at(pixels, THRESHOLD + 1, "far")], "x")
    best = _entry_at(pixels, 3, "best")
    clear = _entry_at(pixels, 3 + AMBIGUITY_GAP, "clear")
    assert nearest_entry(pixels, [clear, best], "x") == (best, 3)
    close = _entry_at(pixels, 3 + AMBIGUITY_GAP - 1, "close")
    with pytest.raises(
        AmbiguousMatchError, match=re.escape("best.png (3 bits apart) and close.png")
    ):
        nearest_entry(pixels, [close, best], "x")
    same = replace(best, file="again.png")  # the same recovery twice is not ambiguous
    assert nearest_entry(pixels, [best, same], "x")[0].id == "best"


def test_index_locations_and_appends(tmp_path: Path) -> None:
    ring = Keyring(bytes(32), source="test")
    folder = tmp_path / "script-keys"
    folder.mkdir()
    assert default_index(str(folder), ring) == folder / "privbench-index.jsonl"
    assert default_index(str(tmp_path / "k.bin"), ring) == tmp_path / "k.bin.index.jsonl"
    index = tmp_path / "new" / "i.jsonl"
    pixels = _face(0)[..., None]
    a, b = _entry_at(pixels, 0, "a"), _entry_at(pixels, 30, "b")
    append_index(index, [a])
    append_index(index, [b, a])
    assert read_index(index) == [a, b]
    assert stat.S_IMODE(index.stat().st_mode) == 0o600


def test_bit_counts_agree_with_and_without_numpys_popcount(monkeypatch: pytest.MonkeyPatch) -> None:
    words = np.array([[0, 1], [2**64 - 1, 0x8000_0000_0000_0001]], dtype=np.uint64)
    expected = [[0, 1], [64, 2]]
    assert _ones(words).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # numpy before 2.0
    assert _ones(words).tolist() == expected
