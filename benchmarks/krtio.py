"""k-RTIO speed at 512×512: privbench's vectorised paths against a straightforward per-block loop.

Prints images per second for protect and recover (pets2021 scheme, k = 3, α = 0.45, block 8,
the bundled scene pool) and the ratios, all measured in this one run:
- batched: the harness path (float tensors, one gather per overlay slot for a whole batch);
- per-file: the exact integer path the CLI uses, one image at a time;
- loop: one AES call per PRF input and a Python loop over blocks (what a direct transcription of
  the paper's Fig. 7 does); checked to produce the same protected image.

    .venv/bin/python benchmarks/krtio.py [--images 8] [--block 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from _timing import rate
from Crypto.Cipher import AES
from skimage import data

from defenses.krtio import KRTIO
from defenses.krtio_prf import Pets2021Prf
from harness.api.contracts import Context
from harness.core.cache import Cache
from harness.core.keys import Keyring
from harness.toolkit.imaging import to_tensor


def loop_protect(d: KRTIO, img: np.ndarray, image_id: str, ring: Keyring) -> np.ndarray:
    """The straightforward transcription: per-input AES calls, per-block copies."""
    prf = Pets2021Prf.for_image(ring.key, image_id)
    aes = AES.new(prf.image_key, AES.MODE_ECB)

    def uniform(domain: int, slot: int, index: int, m: int) -> int:
        retry = 0
        while True:
            x = (
                bytes([domain, slot])
                + index.to_bytes(4, "big")
                + retry.to_bytes(4, "big")
                + bytes(6)
            )
            v = int.from_bytes(aes.encrypt(x), "big")
            if v < (2**128 // m) * m:
                return v % m
            retry += 1

    h, w, _ = img.shape
    s = d.block_side(h, w)
    b1, b2 = math.ceil(h / s), math.ceil(w / s)
    n = b1 * b2
    pool = list(range(len(d.pool)))
    selected = [pool.pop(uniform(1, j, 0, len(d.pool) - j)) for j in range(d.k)]
    acc = np.zeros((b1 * s, b2 * s, 3))
    for j, v in enumerate(selected):
        perm = list(range(n))
        for i in range(n - 1, 0, -1):
            t = uniform(2, j, i, i + 1)
            perm[i], perm[t] = perm[t], perm[i]
        big = d.pool.resized(v, b2 * s, b1 * s, "RGB")
        new = np.empty_like(big)
        for dst in range(n):
            src = perm[dst]
            new[dst // b2 * s : (dst // b2 + 1) * s, dst % b2 * s : (dst % b2 + 1) * s] = big[
                src // b2 * s : (src // b2 + 1) * s, src % b2 * s : (src % b2 + 1) * s
            ]
        acc = acc + new
    o = (acc / d.k)[:h, :w]
    return np.round(d.alpha * img.astype(np.float64) + (1 - d.alpha) * o).astype(np.uint8)


def setup(device: torch.device, images: int, block: int) -> tuple[KRTIO, Context, list[str]]:
    """The benchmark's k-RTIO, context and ids (pets2021, k = 3, α = 0.45, scene pool)."""
    ring = Keyring(bytes(range(32)), None, "benchmark")
    d = KRTIO(alpha=0.45, k=3, block=block, blocks=None, overlays="scenes", scheme="pets2021")
    ctx = Context(device, 0, Cache(enabled=False), images, ring)
    return d, ctx, [f"img-{i:04d}" for i in range(images)]


def batched_rates(device: torch.device, images: int = 8, block: int = 8) -> dict[str, float]:
    """Images per second of the harness's batched protect and recover of ``images`` copies of
    the 512×512 astronaut on ``device`` (CUDA synchronised before each clock read)."""
    d, ctx, ids = setup(device, images, block)
    x = to_tensor(np.repeat(data.astronaut()[None], images, axis=0), device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    protected = d.protect(x, ids, ctx)

    def batch_protect() -> None:
        d.protect(x, ids, ctx)
        sync()

    def batch_recover() -> None:
        d.recover(protected, ids, ctx)
        sync()

    return {
        "protect, batched": rate(batch_protect, images),
        "recover, batched": rate(batch_recover, images),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    d, ctx, ids = setup(device, args.images, args.block)
    ring = ctx.keyring
    base = data.astronaut()

    few = ids[: max(2, args.images // 8)]
    arrays = {i: d.protect_array(base, i, ring) for i in few}
    assert np.array_equal(loop_protect(d, base, few[0], ring), arrays[few[0]]), "loop differs"

    results = {
        **batched_rates(device, args.images, args.block),
        "protect, per-file": rate(lambda: [d.protect_array(base, i, ring) for i in few], len(few)),
        "recover, per-file": rate(
            lambda: [d.recover_array(arrays[i], i, ring) for i in few], len(few)
        ),
        "protect, loop": rate(lambda: loop_protect(d, base, few[0], ring), 1, repeats=2),
    }
    print(
        f"k-RTIO pets2021, 512×512 RGB, k=3, α=0.45, block {args.block}, device {device}, "
        f"{torch.get_num_threads()} threads, batch {args.images}"
    )
    for name, r in results.items():
        print(f"  {name:20s} {r:9.1f} images/s")
    loop = results["protect, loop"]
    print(
        f"  batched / loop: {results['protect, batched'] / loop:.1f}x;  "
        f"per-file / loop: {results['protect, per-file'] / loop:.1f}x"
    )


if __name__ == "__main__":
    main()
