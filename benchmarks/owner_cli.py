"""The owner's commands on a folder of photos: ``privbench protect`` and ``recover`` over 100
photos of 512×512 (seeded crops of the photographs bundled with scikit-image), whole commands
timed from the shell, against a per-file loop in the manner of the 2021 k-RTIO script
(read with OpenCV, per-input AES calls and per-block copies, write with OpenCV).

Printed, all measured in this one run: seconds and photos/s for each configuration (threads,
PNG compression), and each one's speed-up over the script-style loop.

    .venv/bin/python benchmarks/owner_cli.py [--photos 100] [--block 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from krtio import loop_protect
from skimage import data

from defenses.krtio import KRTIO
from harness.keys import Keyring

SOURCES = ("astronaut", "coffee", "rocket", "chelsea", "immunohistochemistry", "retina")


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--block", type=int, default=8)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="privbench-owner-"))
    photos = work / "photos"
    make_photos(photos, args.photos)
    key = work / "key"
    exe = str(Path(sys.executable).with_name("privbench"))
    subprocess.run([exe, "keygen", str(key)], check=True, stdout=subprocess.DEVNULL)
    params = ["--param", f"block={args.block}", "--key", str(key), "--quiet"]

    ring = Keyring(key.read_bytes(), None, "benchmark")
    d = KRTIO(alpha=0.45, k=3, block=args.block, blocks=None, overlays="scenes", scheme="pets2021")
    out = work / "loop"
    out.mkdir()
    t0 = time.perf_counter()
    for f in sorted(photos.iterdir()):  # the script's shape: one file after another
        img = cv2.imread(str(f))[..., ::-1]
        cv2.imwrite(str(out / f.name), loop_protect(d, img, f.name, ring)[..., ::-1])
    loop = time.perf_counter() - t0

    rows = [("script-style loop (protect)", loop)]
    for jobs, level in ((1, 6), (1, 1), (cores, 1)):  # last: the defaults
        tag = f"jobs {jobs}, png level {level}"
        flags = ["--jobs", str(jobs), "--png-compression", str(level)]
        prot, rec = work / f"p-{jobs}-{level}", work / f"r-{jobs}-{level}"
        rows.append(
            (f"protect, {tag}", timed([exe, "protect", str(photos), str(prot), *params, *flags]))
        )
        rows.append(
            (f"recover, {tag}", timed([exe, "recover", str(prot), str(rec), *params, *flags]))
        )
    for f in sorted(photos.iterdir())[:3]:  # the round trip is exact up to ⌈0.5/α⌉ levels
        back = cv2.imread(str(work / f"r-{cores}-1" / f.name))
        assert np.abs(back.astype(int) - cv2.imread(str(f)).astype(int)).max() <= 2
    print(f"{args.photos} photos of 512×512, k-RTIO pets2021 block {args.block}, {cores} cores")
    for name, seconds in rows:
        print(
            f"  {name:32s} {seconds:7.2f} s  {args.photos / seconds:7.1f} photos/s  "
            f"{loop / seconds:6.1f}x the loop"
        )


if __name__ == "__main__":
    main()
