"""A transcription of the 2021 k-RTIO reference script's folder mode, for timing only.

The original (``KRTIO_UEP.py`` with ``EncriptionWithAES.py``, Rajabi et al., PETS 2021) cannot
run here as published: it calls ``np.float`` (removed in NumPy 1.24). This file repeats its
documented steps one for one (docs/methods.md, "What the 2021 code does") so that
``benchmarks/owner_cli.py`` can time privbench's owner commands against it:

- key material ``aeskey.bin`` and ``iv.bin`` read from the working folder; output written to
  ``./output/<file name>``, as the script does;
- per image: the id is ``'/' + file name``; overlay selection with one AES-CFB-8 object reused
  across draws, duplicates rejected; per selected overlay, the overlay file opened with PIL and
  resized (bicubic) to the padded grid, a Fisher–Yates permutation with a fresh AES-CFB-8
  object per swap, and a Python loop copying block after block; the float64 overlay sum;
- Enc: ``uint8(round(α·I + (1 − α)·O))`` saved with PIL;
- Dec: the inverse, then ``repair()``: a Python loop over every value of every pixel that
  replaces values below 5 or above 250 by the mean of a box around them (the original's branch
  conditions, with their bugs, are simplified here; the loop over every value, which is what
  costs time, is the same), then the unclipped ``uint8`` cast, which wraps.

``benchmarks/owner_cli.py`` checks that Enc writes the same pixels as privbench's ``legacy``
scheme. Not part of privbench: nothing imports it.

    python script2021.py --mode Enc|Dec --input DIR --overlays_folder DIR [--k 3]
        [--alpha 0.45] [--bl_size 16]
"""

from __future__ import annotations

import argparse
import glob
import math
import os

import numpy as np
from Crypto.Cipher import AES
from PIL import Image

MARKERS = (".jpeg", ".jpg", ".png", ".JPEG", ".JPG", ".PNG")


def signed(ct: bytes) -> int:
    return int.from_bytes(ct, byteorder="big", signed=True)


def select(key: bytes, iv: bytes, image_id: str, k: int, n: int) -> list[int]:
    cipher = AES.new(key, AES.MODE_CFB, iv)
    chosen: list[int] = []
    j = 0
    while len(chosen) < k:
        v = signed(cipher.encrypt(image_id.encode() + b"\x00" + str(j).encode())) % n
        if v not in chosen:
            chosen.append(v)
        j += 1
    return chosen


def permutation(key: bytes, iv: bytes, image_id: str, ov_id: int, n: int) -> np.ndarray:
    arr = np.arange(n)
    for i in range(n - 1, 0, -1):
        msg = image_id.encode() + b"\x00" + str(i + 1).encode() + b"\x00" + str(ov_id).encode()
        j = signed(AES.new(key, AES.MODE_CFB, iv).encrypt(msg)) % (i + 1)
        arr[i], arr[j] = arr[j], arr[i]
    return arr


def permuted_overlay(path: str, perm: np.ndarray, h: int, w: int, bl: int) -> np.ndarray:
    b1, b2 = math.ceil(h / bl), math.ceil(w / bl)
    img = np.array(Image.open(path).resize((b2 * bl, b1 * bl)).convert("RGB"))
    new = np.zeros_like(img)
    for i in range(b1 * b2):
        r, c = i // b2, i % b2
        src = int(perm[i])
        sr, sc = src // b2, src % b2
        new[r * bl : (r + 1) * bl, c * bl : (c + 1) * bl] = img[
            sr * bl : (sr + 1) * bl, sc * bl : (sc + 1) * bl
        ]
    return new[:h, :w]


def overlay(args: argparse.Namespace, key: bytes, iv: bytes, image_id: str, h: int, w: int):
    n_overlays = len([f for f in os.listdir(args.overlays_folder) if any(m in f for m in MARKERS)])
    bl = args.bl_size
    n_blocks = math.ceil(h / bl) * math.ceil(w / bl)
    ov = np.zeros((h, w, 3), dtype=np.float64)
    for v in select(key, iv, image_id, args.k, n_overlays):
        path = glob.glob(args.overlays_folder + "/o" + str(v + 1) + ".*")[0]
        perm = permutation(key, iv, image_id, v, n_blocks)
        ov = ov + permuted_overlay(path, perm, h, w, bl)
    return ov / float(args.k)


def repair(img: np.ndarray, box: int = 8) -> np.ndarray:
    h, w, channels = img.shape
    for i in range(h):
        for j in range(w):
            for c in range(channels):
                if img[i, j, c] < 5 or img[i, j, c] > 250:
                    half = box if box <= i < h - box and box <= j < w - box else box // 2
                    top, left = max(0, i - half), max(0, j - half)
                    img[i, j, c] = img[top : i + half, left : j + half, c].mean()
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="Enc")
    ap.add_argument("--alpha", type=float, default=0.45)
    ap.add_argument("--overlays_folder", default="./overlays")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--input", default="./InputFiles")
    ap.add_argument("--bl_size", type=int, default=16)
    args = ap.parse_args()
    with open("aeskey.bin", "rb") as f:
        key = f.read()
    with open("iv.bin", "rb") as f:
        iv = f.read()
    os.makedirs("output", exist_ok=True)
    for f in sorted(glob.glob(args.input + "/*")):
        image_id = f[f.rindex("/") :]
        img = np.array(Image.open(f).convert("RGB")).astype(np.float64)
        ov = overlay(args, key, iv, image_id, img.shape[0], img.shape[1])
        if args.mode == "Enc":
            out = np.uint8(np.round(args.alpha * img + (1 - args.alpha) * ov))
        else:
            x = repair((1 / args.alpha) * (img - (1 - args.alpha) * ov))
            out = (np.round(x).astype(np.int64) % 256).astype(np.uint8)
        Image.fromarray(out).save("./output/" + os.path.basename(f))


if __name__ == "__main__":
    main()
