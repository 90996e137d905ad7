"""The owner's commands on a folder of photos: ``privbench protect`` and ``recover`` over 100
photos of 512×512 (seeded crops of the photographs bundled with scikit-image), whole commands
timed from the shell, against the 2021 k-RTIO script's folder mode (``script2021.py``, a
transcription of its steps; its Enc output is checked to equal privbench's ``legacy`` scheme
pixel for pixel).

Printed, all measured in this one run: seconds and photos/s for the script's Enc and Dec, for
privbench with the script's scheme (``legacy``) and with the defaults (``pets2021``), at one
thread and at one per core; each one's time as a fraction of the script's (goal: under 0.1).

    .venv/bin/python benchmarks/owner_cli.py [--photos 100] [--block 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

from harness.toolkit.scenes import SCENE_SOURCES, load_scene

SOURCES = ("astronaut", "coffee", "rocket", "chelsea", "immunohistochemistry", "retina")
SCRIPT = Path(__file__).with_name("script2021.py")


def make_photos(folder: Path, n: int, side: int = 512) -> None:
    rng = np.random.default_rng(7)
    images = [np.asarray(getattr(data, s)())[..., :3] for s in SOURCES]
    folder.mkdir(parents=True)
    for i in range(n):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        c = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        top, left = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        crop = cv2.resize(img[top : top + c, left : left + c], (side, side), cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"photo-{i:03d}.png"), crop[..., ::-1])


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def script_folder(work: Path) -> Path:
    """The 2021 script's working folder: its key files and its overlay folder (the bundled
    scenes as o1…oN.png, the script's naming)."""
    folder = work / "script"
    (folder / "overlays").mkdir(parents=True)
    for v, name in enumerate(SCENE_SOURCES):
        Image.fromarray(load_scene(name)).save(folder / "overlays" / f"o{v + 1}.png")
    (folder / "aeskey.bin").write_bytes(os.urandom(32))
    (folder / "iv.bin").write_bytes(os.urandom(16))
    return folder


def run_script(folder: Path, mode: str, inputs: Path, block: int, out: Path) -> float:
    """Seconds for one run of the script, start-up included; its ./output moved to ``out``."""
    command = [sys.executable, str(SCRIPT), "--mode", mode, "--input", str(inputs)]
    command += ["--overlays_folder", "overlays", "--bl_size", str(block)]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, cwd=folder)
    seconds = time.perf_counter() - t0
    shutil.move(folder / "output", out)
    return seconds


def same_pixels(a: Path, b: Path) -> bool:
    return all(
        np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(b / f.name)))
        for f in sorted(a.iterdir())
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--block", type=int, default=8)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="privbench-owner-"))
    photos = work / "photos"
    make_photos(photos, args.photos)
    script = script_folder(work)
    enc, dec = work / "script-enc", work / "script-dec"
    timings = {
        "2021 script Enc": run_script(script, "Enc", photos, args.block, enc),
        "2021 script Dec": run_script(script, "Dec", enc, args.block, dec),
    }

    exe = str(Path(sys.executable).with_name("privbench"))
    key = work / "key"
    subprocess.run([exe, "keygen", str(key)], check=True, stdout=subprocess.DEVNULL)
    legacy = [
        "--key",
        str(script),
        "--param",
        "scheme=legacy",
        "--overlays",
        str(script / "overlays"),
    ]
    runs = [("legacy", legacy, jobs) for jobs in (1, cores)]
    runs += [("pets2021", ["--key", str(key)], jobs) for jobs in (1, cores)]
    for scheme, flags, jobs in runs:
        common = [*flags, "--param", f"block={args.block}", "--quiet", "--jobs", str(jobs)]
        prot, rec = work / f"p-{scheme}-{jobs}", work / f"r-{scheme}-{jobs}"
        for verb, src, dst in (("protect", photos, prot), ("recover", prot, rec)):
            t0 = time.perf_counter()
            subprocess.run([exe, verb, str(src), str(dst), *common], check=True)
            timings[f"privbench {verb}, {scheme}, jobs {jobs}"] = time.perf_counter() - t0
    assert same_pixels(enc, work / f"p-legacy-{cores}"), "the script and privbench legacy differ"
    for f in sorted(photos.iterdir())[:3]:  # the round trip is exact up to ⌈0.5/α⌉ levels
        back = cv2.imread(str(work / f"r-pets2021-{cores}" / f.name))
        assert np.abs(back.astype(int) - cv2.imread(str(f)).astype(int)).max() <= 2

    print(
        f"{args.photos} photos of 512×512, k-RTIO k=3 α=0.45 block {args.block}, {cores} cores; "
        "the script's Enc output equals privbench legacy's, pixel for pixel"
    )
    for name, seconds in timings.items():
        base = timings[
            "2021 script Dec" if "Dec" in name or "recover" in name else "2021 script Enc"
        ]
        print(
            f"  {name:36s} {seconds:7.2f} s  {args.photos / seconds:7.1f} photos/s  "
            f"{seconds / base:6.3f} of the script's time"
        )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
