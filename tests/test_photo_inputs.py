"""The owner's commands on inputs nobody prepared: every Pillow mode and odd size, bombs,
truncated, empty, mislabelled and unreadable files, wrong keys, misplaced folders."""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from harness.toolkit.photos import read_photo
from tests.test_owner_cli import privbench

BOUND = math.ceil(0.5 / 0.45)  # k-RTIO recovery error at α = 0.45, in grey levels


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "key.bin"
    assert privbench("keygen", str(path)).returncode == 0
    return path


def _rgb(h: int, w: int) -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[100 : 100 + h, 150 : 150 + w])


def _save_mode(folder: Path, mode: str, h: int = 23, w: int = 31) -> Path:
    """An image in Pillow ``mode`` saved in a format that keeps the mode."""
    base = Image.fromarray(_rgb(h, w))
    if mode in ("I;16", "I;16B"):
        arr = (np.asarray(base.convert("L")).astype(np.uint16) * 257 + 3).astype(np.uint16)
        img, fmt = Image.fromarray(arr), "png"
    elif mode in ("I", "F"):
        img, fmt = base.convert("L").convert(mode), "tiff"
    elif mode in ("CMYK", "YCbCr", "LAB"):
        img, fmt = base.convert(mode), "tiff" if mode != "YCbCr" else "jpeg"
    else:
        img, fmt = base.convert(mode), "png"
    path = folder / f"{mode.replace(';', '_')}.{fmt}"
    img.save(path)
    return path


MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "LAB", "I", "F", "I;16")


def test_every_pillow_mode_is_protected_and_recovered(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    paths = [_save_mode(src, m) for m in MODES]
    p = privbench("protect", "--key", str(key), str(src), str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    assert f"protected {len(MODES)} of {len(MODES)} files" in p.stderr
    r = privbench("recover", "--key", str(key), str(tmp_path / "o"), str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    for path in paths:
        original = read_photo(path)
        back = read_photo(tmp_path / "r" / path.with_suffix(".png").name)
        assert back.pixels.shape == original.pixels.shape, path.name
        assert back.pixels.dtype == original.pixels.dtype, path.name
        peak = np.iinfo(original.pixels.dtype).max / 255  # 16-bit: levels of 1/65535
        diff = np.abs(back.pixels.astype(np.int64) - original.pixels.astype(np.int64))
        assert diff.max() <= BOUND * math.ceil(peak), path.name
        if original.alpha is not None:
            assert np.array_equal(back.alpha, original.alpha), path.name


@pytest.mark.parametrize("size", [(1, 1), (1, 37), (2, 3), (97, 5), (17, 8)])
def test_odd_sizes_round_trip(tmp_path: Path, key: Path, size: tuple[int, int]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(*size)).save(src / "odd.png")
    for block in ("1", "8", "64"):
        out, rec = tmp_path / f"o{block}", tmp_path / f"r{block}"
        args = ["--key", str(key), "--param", f"block={block}"]
        assert privbench("protect", *args, str(src), str(out)).returncode == 0
        assert privbench("recover", "--key", str(key), str(out), str(rec)).returncode == 0
        back = np.asarray(Image.open(rec / "odd.png")).astype(int)
        assert np.abs(back - _rgb(*size)).max() <= BOUND


def _bombs(folder: Path) -> list[Path]:
    """Small files that declare huge images, in three formats."""
    Image.new("1", (40_000, 40_000)).save(folder / "bomb.png")
    gif = io.BytesIO()
    Image.new("P", (16, 16)).save(gif, format="GIF")
    raw = bytearray(gif.getvalue())
    raw[6:10] = (65_535).to_bytes(2, "little") * 2  # logical screen 65535 × 65535
    (folder / "bomb.gif").write_bytes(bytes(raw))
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4)).save(bmp, format="BMP")
    raw = bytearray(bmp.getvalue())
    raw[18:26] = (30_000).to_bytes(4, "little") + (30_000).to_bytes(4, "little")
    (folder / "bomb.bmp").write_bytes(bytes(raw))
    return [folder / n for n in ("bomb.png", "bomb.gif", "bomb.bmp")]


def test_bad_files_are_named_and_the_good_ones_after_them_are_protected(
    tmp_path: Path, key: Path, monkeypatch
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    bad = _bombs(src)
    Image.fromarray(_rgb(30, 30)).save(src / "good_a.png")
    good = (src / "good_a.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "zero.jpg").write_bytes(b"")
    (src / "text.png").write_text("not an image at all")
    Image.fromarray(_rgb(30, 30)).save(src / "good_b.jpg", format="PNG")  # wrong extension
    cv2.imwrite(str(src / "deep.png"), (_rgb(12, 12).astype(np.uint16) * 257)[..., ::-1])
    (src / "deep_cut.png").write_bytes((src / "deep.png").read_bytes()[:120])
    (src / "locked.png").write_bytes(good)
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:  # the test runs as root, so chmod cannot deny
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    p = privbench("protect", "--key", str(key), str(src), str(tmp_path / "o"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    bad += [src / n for n in ("truncated.png", "zero.jpg", "text.png", "deep_cut.png")]
    for path in bad:
        assert f"error: {path}: " in p.stderr, path.name
    assert f"{src / 'locked.png'}: cannot be read (Permission denied)" in p.stderr
    assert "declares 1,600,000,000 pixels" in p.stderr  # the PNG bomb, by its size
    assert "the file is empty" in p.stderr
    assert "protected 3 of 11 files; 8 failed" in p.stderr
    # no raw codec chatter reaches the terminal: every line is privbench's own
    assert all(line.startswith(("error: ", "privbench: ")) for line in p.stderr.splitlines())
    written = sorted(f.name for f in (tmp_path / "o").iterdir())
    assert written == ["deep.png", "good_a.png", "good_b.png"]


def test_recover_refuses_an_unprotected_photo(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(20, 20)).save(src / "plain.png")
    r = privbench("recover", "--key", str(key), str(src), str(tmp_path / "r"))
    assert r.returncode == 1 and "not protected by privbench" in r.stderr
    assert not (tmp_path / "r").exists()


def test_out_inside_in_and_empty_inputs_are_refused(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    empty = privbench("protect", "--key", str(key), str(src), str(tmp_path / "o"))
    assert empty.returncode == 2 and "holds no image files" in empty.stderr
    Image.fromarray(_rgb(20, 20)).save(src / "a.png")
    for out in (src, src / "protected"):
        p = privbench("protect", "--key", str(key), str(src), str(out))
        assert p.returncode == 2 and "is inside the input folder" in p.stderr
    assert sorted(f.name for f in src.iterdir()) == ["a.png"]
    missing = privbench("protect", "--key", str(key), str(tmp_path / "nope"), str(tmp_path / "o"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_a_key_file_may_hold_hex_text(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(20, 20)).save(src / "a.png")
    hex_key = tmp_path / "key.hex"
    hex_key.write_text(key.read_bytes().hex() + "\n")
    assert (
        privbench("protect", "--key", str(hex_key), str(src), str(tmp_path / "o")).returncode == 0
    )
    # the raw key file and its hex text are the same key: recovery verifies
    r = privbench("recover", "--key", str(key), str(tmp_path / "o"), str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr


def test_an_animation_says_that_only_its_first_frame_is_protected(
    tmp_path: Path, key: Path
) -> None:
    first, second = _rgb(32, 32), _rgb(32, 32)[::-1].copy()
    gif = tmp_path / "in" / "anim.gif"
    gif.parent.mkdir()
    frames = [Image.fromarray(f).quantize(256, dither=Image.Dither.NONE) for f in (first, second)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    p = privbench("protect", "--key", str(key), str(gif.parent), str(tmp_path / "out"))
    assert p.returncode == 0 and f"note: {gif}: it holds 2 frames" in p.stderr, p.stderr
    back = privbench("recover", "--key", str(key), str(tmp_path / "out"), str(tmp_path / "r"))
    assert back.returncode == 0, back.stderr
    recovered = read_photo(tmp_path / "r" / "anim.png").pixels.astype(int)
    still = np.asarray(Image.open(gif).convert("RGB"), dtype=int)  # the first frame
    assert np.abs(recovered - still).max() <= BOUND
