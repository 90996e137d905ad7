"""``privbench keygen / protect / recover`` end to end, and that keys never leak."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from harness.cli.main import main
from harness.toolkit.photos import read_photo
from tests.conftest import write_suite
from tests.test_krtio import VECTORS, _legacy_overlay_folder


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def privbench(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in this process (importing torch once); '' in ``env`` unsets a variable."""
    saved = {k: os.environ.get(k) for k in env or {}}
    for k, v in (env or {}).items():
        if v:
            os.environ[k] = v
        else:
            os.environ.pop(k, None)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    Image.fromarray(data.astronaut()[:96, :130]).save(src / "rgb.png")
    Image.fromarray(data.camera()[:70, :90]).save(src / "nested" / "gray.png")
    rgba = np.dstack(
        [data.coffee()[:50, :60], np.linspace(0, 255, 50 * 60).reshape(50, 60).astype(np.uint8)]
    )
    Image.fromarray(rgba).save(src / "alpha.png")
    deep = (data.astronaut()[:40, :40].astype(np.uint16) * 257 + 11)[..., ::-1]
    cv2.imwrite(str(src / "deep16.png"), np.ascontiguousarray(deep))
    Image.fromarray(data.chelsea()[:64, :64]).save(src / "photo.jpg", quality=92)
    (src / "broken.png").write_bytes(b"not an image")
    return src


def _max_diff(a: Path, b: Path) -> int:
    x, y = read_photo(a), read_photo(b)
    assert x.pixels.shape == y.pixels.shape and x.pixels.dtype == y.pixels.dtype
    if x.alpha is not None:
        assert np.array_equal(x.alpha, y.alpha)
    return int(np.abs(x.pixels.astype(np.int64) - y.pixels.astype(np.int64)).max())


def test_keygen_writes_0600_and_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "k.bin"
    assert privbench("keygen", str(key)).returncode == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    again = privbench("keygen", str(key))
    assert again.returncode == 2 and "never overwrites" in again.stderr
    assert privbench("keygen", str(tmp_path / "k128"), "--bits", "128").returncode == 0
    assert len((tmp_path / "k128").read_bytes()) == 16
    nested = tmp_path / "new" / "keys" / "k.bin"  # missing folders are made, owner-only
    assert privbench("keygen", str(nested)).returncode == 0
    assert stat.S_IMODE((tmp_path / "new" / "keys").stat().st_mode) & 0o077 == 0
    blocked = privbench("keygen", str(key / "k.bin"))  # a file where a folder should be
    assert blocked.returncode == 2 and "cannot write a key" in blocked.stderr


def test_round_trip_over_mixed_modes(tmp_path: Path, photos: Path) -> None:
    key = tmp_path / "key.bin"
    privbench("keygen", str(key))
    out, rec = tmp_path / "out", tmp_path / "rec"
    p = privbench("protect", "--key", str(key), "--param", "block=4", str(photos), str(out))
    assert p.returncode == 1, p.stderr  # broken.png failed, the rest went on
    assert "broken.png: cannot read as an image" in p.stderr
    assert sorted(f.relative_to(out).as_posix() for f in out.rglob("*.png")) == [
        "alpha.png",
        "deep16.png",
        "nested/gray.png",
        "photo.png",
        "rgb.png",
    ]
    assert read_photo(out / "rgb.png").metadata["params"]["block"] == 4
    r = privbench("recover", "--key", str(key), str(out), str(rec))
    assert r.returncode == 0, r.stderr
    bound = int(np.ceil(0.5 / 0.45))
    for name in ("rgb.png", "nested/gray.png", "alpha.png", "deep16.png"):
        assert _max_diff(photos / name, rec / name) <= bound, name
        assert _max_diff(photos / name, out / name) > 10  # it was really protected
    jpeg_source = np.asarray(Image.open(photos / "photo.jpg"))
    assert (
        np.abs(np.asarray(Image.open(rec / "photo.png")).astype(int) - jpeg_source).max() <= bound
    )
    # renamed protected file: the id travels in the PNG metadata
    (out / "rgb.png").rename(out / "renamed.png")
    r2 = privbench("recover", "--key", str(key), str(out / "renamed.png"), str(tmp_path / "r2"))
    assert (
        r2.returncode == 0
        and _max_diff(photos / "rgb.png", tmp_path / "r2" / "renamed.png") <= bound
    )


def test_wrong_key_and_no_key(tmp_path: Path, photos: Path) -> None:
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    privbench("keygen", str(k1))
    privbench("keygen", str(k2))
    privbench("protect", "--key", str(k1), str(photos / "rgb.png"), str(tmp_path / "o"))
    wrong = privbench("recover", "--key", str(k2), str(tmp_path / "o"), str(tmp_path / "r"))
    assert wrong.returncode == 1 and "not the one the photo was protected with" in wrong.stderr
    assert not (tmp_path / "r" / "rgb.png").exists()  # no garbage written
    # altered metadata is caught the same way: the check covers defense, parameters and id
    meta = read_photo(tmp_path / "o" / "rgb.png")
    from harness.toolkit.photos import write_photo

    altered = dict(meta.metadata, params={**meta.metadata["params"], "alpha": 0.5})
    write_photo(tmp_path / "alt" / "rgb.png", replace(meta, metadata=altered))
    r = privbench("recover", "--key", str(k1), str(tmp_path / "alt"), str(tmp_path / "r"))
    assert r.returncode == 1 and "metadata was altered" in r.stderr
    right = privbench("recover", "--key", str(k1), str(tmp_path / "o"), str(tmp_path / "r"))
    assert right.returncode == 0 and _max_diff(photos / "rgb.png", tmp_path / "r" / "rgb.png") <= 2
    env = {k: "" for k in ("PRIVBENCH_KEY", "PRIVBENCH_KEY_FILE")}
    none = privbench("protect", str(photos / "rgb.png"), str(tmp_path / "x"), env=env)
    assert none.returncode == 2 and "no key" in none.stderr


def test_never_overwrites_inputs_or_outputs(tmp_path: Path, photos: Path) -> None:
    key = tmp_path / "key.bin"
    privbench("keygen", str(key))
    before = (photos / "rgb.png").read_bytes()
    p = privbench("protect", "--key", str(key), str(photos / "rgb.png"), str(photos))
    assert p.returncode == 1 and "is an input" in p.stderr
    assert (photos / "rgb.png").read_bytes() == before
    privbench("protect", "--key", str(key), str(photos / "rgb.png"), str(tmp_path / "o"))
    again = privbench("protect", "--key", str(key), str(photos / "rgb.png"), str(tmp_path / "o"))
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_jpeg_output_needs_the_flag_and_reports_the_loss(tmp_path: Path, photos: Path) -> None:
    key = tmp_path / "key.bin"
    privbench("keygen", str(key))
    p = privbench(
        "protect", "--key", str(key), "--jpeg", "90", str(photos / "rgb.png"), str(tmp_path / "o")
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o" / "rgb.jpg").is_file()
    assert "recovery from it reaches" in p.stdout and "from a PNG" in p.stdout


def test_bad_param_is_rejected_before_any_file(tmp_path: Path, photos: Path) -> None:
    key = tmp_path / "key.bin"
    privbench("keygen", str(key))
    p = privbench(
        "protect", "--key", str(key), "--param", "alpah=0.5", str(photos), str(tmp_path / "o")
    )
    assert p.returncode == 2 and "did you mean alpha" in p.stderr and not (tmp_path / "o").exists()


def test_legacy_key_folder_and_overlay_folder(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    keydir.mkdir()
    (keydir / "aeskey.bin").write_bytes(bytes.fromhex(VECTORS["key_hex"]))
    (keydir / "iv.bin").write_bytes(bytes.fromhex(VECTORS["iv_hex"]))
    overlays = _legacy_overlay_folder(tmp_path / "overlays", 26)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(data.astronaut()).save(src / "astronaut.png")
    args = [
        "--key",
        str(keydir),
        "--overlays",
        str(overlays),
        "--param",
        "scheme=legacy",
        "--param",
        "block=16",
    ]
    assert privbench("protect", *args, str(src), str(tmp_path / "o")).returncode == 0
    # the file as the 2021 script would have left it: same name, no metadata
    raw = np.asarray(Image.open(tmp_path / "o" / "astronaut.png"))
    (tmp_path / "script").mkdir()
    Image.fromarray(raw).save(tmp_path / "script" / "astronaut.png")
    r = privbench("recover", *args, str(tmp_path / "script"), str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert _max_diff(src / "astronaut.png", tmp_path / "r" / "astronaut.png") <= 2


def _leaks(paths: list[Path], texts: list[str], key: bytes) -> list[str]:
    needles = [
        key.hex(),
        key.hex().upper(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode(),
    ]
    found = []
    for path in paths:
        blob = path.read_bytes()
        found += [f"{path}: {n[:6]}…" for n in needles if n.encode() in blob or key in blob]
    for text in texts:
        found += [f"log: {n[:6]}…" for n in needles if n in text]
    return found


def test_no_output_or_log_contains_the_key(tmp_path: Path, photos: Path) -> None:
    key_file = tmp_path / "secret" / "key.bin"
    key_file.parent.mkdir()
    privbench("keygen", str(key_file))
    key = key_file.read_bytes()
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
name: keyed
dataset: {name: lfw-subset, params: {max_probes: 8}}
recognizers: [yunet]
defenses:
  - {name: krtio, params: {block: [4, 8]}}
  - {name: krtio, params: {overlays: /nope}, label: broken}
counter_attacks: [none, {name: jpeg, params: {quality: 80}}]
""",
    )
    env = {"PRIVBENCH_HOME": str(tmp_path / "home")}
    run = privbench(
        "run", str(suite), "--key", str(key_file), "--out", str(tmp_path / "res"), env=env
    )
    assert run.returncode == 1  # the broken config fails, its error is logged
    env_run = privbench(
        "run", str(suite), "--out", str(tmp_path / "res2"), env={**env, "PRIVBENCH_KEY": key.hex()}
    )
    cli = privbench("protect", "--key", str(key_file), str(photos), str(tmp_path / "prot"))
    bad = privbench(
        "recover",
        "--key",
        str(key_file),
        "--param",
        "k=99",
        str(tmp_path / "prot"),
        str(tmp_path / "rec"),
    )
    outputs = [
        p
        for root in ("res", "res2", "prot", "rec", "home")
        for p in (tmp_path / root).rglob("*")
        if p.is_file()
    ]
    assert len(outputs) > 20
    logs = [
        run.stdout,
        run.stderr,
        env_run.stdout,
        env_run.stderr,
        cli.stdout,
        cli.stderr,
        bad.stdout,
        bad.stderr,
    ]
    assert _leaks(outputs, logs, key) == []
    assert (
        "key file"
        in (tmp_path / "res").joinpath("keyed").rglob("manifest.json").__next__().read_text()
    )


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    key = tmp_path / "key.bin"
    privbench("keygen", str(key))
    upright = data.astronaut()[:80, :120]
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what the camera wrote, sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    (tmp_path / "in").mkdir()
    Image.fromarray(stored).save(tmp_path / "in" / "phone.jpg", exif=exif, quality=95)
    assert (
        privbench(
            "protect", "--key", str(key), str(tmp_path / "in"), str(tmp_path / "o")
        ).returncode
        == 0
    )
    assert (
        privbench("recover", "--key", str(key), str(tmp_path / "o"), str(tmp_path / "r")).returncode
        == 0
    )
    back = read_photo(tmp_path / "r" / "phone.png").pixels
    assert back.shape == upright.shape  # 80 × 120, not 120 × 80
    decoded = read_photo(tmp_path / "in" / "phone.jpg").pixels
    assert np.abs(back.astype(int) - decoded.astype(int)).max() <= 2
    assert np.abs(decoded.astype(int) - upright.astype(int)).mean() < 3  # really upright


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A fresh key file."""
    path = tmp_path / "key.bin"
    privbench("keygen", str(path))
    return path


def test_same_file_name_in_two_folders_gets_its_own_overlay(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    for folder, image in (("a", data.astronaut()), ("b", data.chelsea())):
        (src / folder).mkdir(parents=True)
        Image.fromarray(image[:96, :96]).save(src / folder / "IMG_0001.png")
    assert privbench("protect", "--key", str(key), str(src), str(tmp_path / "o")).returncode == 0
    x = [np.asarray(Image.open(src / f / "IMG_0001.png"), float) for f in "ab"]
    y = [np.asarray(Image.open(tmp_path / "o" / f / "IMG_0001.png"), float) for f in "ab"]
    # with a shared overlay (y_a − y_b)/α would give x_a − x_b to within 2.2 grey levels
    assert np.abs((y[0] - y[1]) / 0.45 - (x[0] - x[1])).mean() > 20
    ids = {read_photo(tmp_path / "o" / f / "IMG_0001.png").metadata["id"] for f in "ab"}
    assert len(ids) == 2 and not any("IMG" in i for i in ids)
    r = privbench("recover", "--key", str(key), str(tmp_path / "o"), str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    for f in "ab":
        assert _max_diff(src / f / "IMG_0001.png", tmp_path / "r" / f / "IMG_0001.png") <= 2


def test_the_same_photo_keeps_its_id_across_calls(tmp_path: Path, photos: Path, key: Path) -> None:
    for out in ("o1", "o2"):
        privbench("protect", "--key", str(key), str(photos / "rgb.png"), str(tmp_path / out))
    assert (tmp_path / "o1" / "rgb.png").read_bytes() == (tmp_path / "o2" / "rgb.png").read_bytes()


def test_two_inputs_with_one_output_name_are_refused(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(data.astronaut()[:64, :64]).save(src / "astronaut.png")
    Image.fromarray(data.coffee()[:64, :64]).save(src / "astronaut.jpg")
    for extra in ([], ["--overwrite"]):
        p = privbench("protect", "--key", str(key), *extra, str(src), str(tmp_path / "o"))
        assert p.returncode == 1
        assert "astronaut.png is already the output of" in p.stderr and "astronaut.jpg" in p.stderr
    assert [f.name for f in (tmp_path / "o").iterdir()] == ["astronaut.png"]
    # the one written is the first in sorted order (astronaut.jpg), and it recovers exactly
    r = privbench("recover", "--key", str(key), str(tmp_path / "o"), str(tmp_path / "r"))
    assert r.returncode == 0
    jpeg = np.asarray(Image.open(src / "astronaut.jpg")).astype(int)
    assert np.abs(np.asarray(Image.open(tmp_path / "r" / "astronaut.png")) - jpeg).max() <= 2


def test_legacy_ids_that_collide_in_one_call_are_refused(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    keydir.mkdir()
    (keydir / "aeskey.bin").write_bytes(bytes.fromhex(VECTORS["key_hex"]))
    (keydir / "iv.bin").write_bytes(bytes.fromhex(VECTORS["iv_hex"]))
    src = tmp_path / "in"
    for folder, image in (("a", data.astronaut()), ("b", data.chelsea())):
        (src / folder).mkdir(parents=True)
        Image.fromarray(image[:64, :64]).save(src / folder / "IMG_0001.png")
    p = privbench(
        "protect", "--key", str(keydir), "--param", "scheme=legacy", str(src), str(tmp_path / "o")
    )
    assert p.returncode == 1
    assert "gets the same image id as" in p.stderr and "a/IMG_0001.png" in p.stderr
    assert not (tmp_path / "o" / "b").exists()


def test_jpeg_outputs_carry_their_id_and_bare_files_need_a_rule(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(data.astronaut()[:64, :64]).save(src / "a.png")
    p = privbench("protect", "--key", str(key), "--jpeg", "95", str(src), str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    (tmp_path / "o" / "a.jpg").rename(tmp_path / "o" / "renamed.jpg")
    r = privbench("recover", "--key", str(key), str(tmp_path / "o"), str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    # exactly what the owner's key and the photo's own id give from the JPEG's pixels
    from defenses.krtio import keyed_photo_id
    from harness.api.registry import DEFENSES
    from harness.core.keys import load_key

    ring = load_key(key)
    image_id = keyed_photo_id(ring, read_photo(src / "a.png").pixels)
    jpeg_pixels = read_photo(tmp_path / "o" / "renamed.jpg").pixels
    expected = DEFENSES.create("krtio").recover_array(jpeg_pixels, image_id, ring)
    np.testing.assert_array_equal(read_photo(tmp_path / "r" / "renamed.png").pixels, expected)
    # a file whose metadata was stripped cannot name its id without the photo index
    # (tests/test_owner_index.py covers recovery through it)
    (key.parent / f"{key.name}.index.jsonl").unlink()
    bare = tmp_path / "bare"
    bare.mkdir()
    Image.open(tmp_path / "o" / "renamed.jpg").save(bare / "a.png")
    r = privbench("recover", "--key", str(key), str(bare), str(tmp_path / "r2"))
    assert r.returncode == 1 and "carries no privbench metadata" in r.stderr
    assert "--id-from-name" in r.stderr


def test_threads_and_png_levels_change_neither_pixels_nor_messages(
    photos: Path, tmp_path: Path
) -> None:
    """--jobs overlaps files in threads: the outputs and the printed lines are those of one
    file after another (input order, the broken file's error in its place); --png-compression
    changes the file size, never a pixel."""
    key = tmp_path / "k"
    assert privbench("keygen", str(key)).returncode == 0
    runs = {
        (jobs, level): privbench(
            "protect",
            str(photos),
            str(tmp_path / f"o{jobs}{level}"),
            "--key",
            str(key),
            "--jobs",
            str(jobs),
            "--png-compression",
            str(level),
        )
        for jobs, level in ((1, 1), (4, 1), (4, 9))
    }
    serial = runs[(1, 1)]
    assert serial.returncode == 1 and "broken.png" in serial.stderr
    for (jobs, level), run in runs.items():
        out = run.stdout.replace(f"/o{jobs}{level}/", "/o11/")
        assert (run.returncode, out, run.stderr) == (1, serial.stdout, serial.stderr)
    outputs = sorted(p.relative_to(tmp_path / "o11") for p in (tmp_path / "o11").rglob("*.png"))
    assert len(outputs) == 5
    for rel in outputs:
        assert (tmp_path / "o41" / rel).read_bytes() == (tmp_path / "o11" / rel).read_bytes()
        assert _max_diff(tmp_path / "o49" / rel, tmp_path / "o11" / rel) == 0
    sizes = [sum((tmp_path / f"o4{lv}" / r).stat().st_size for r in outputs) for lv in (1, 9)]
    assert sizes[1] < sizes[0]
