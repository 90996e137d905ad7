"""UEP learning time for N = 200 images (the paper's N; 12 h on a GTX 1080 Ti there), and what
batching buys: one gradient step over all N images and the three local CNNs at once against the
same step taken one image at a time.

The 200 images are lfw-subset's 100 faces and their mirror images (each its own class for the
local CNNs). Defaults of the ``uep`` defense unless overridden. Run:
    .venv/bin/python benchmarks/uep.py [--images 200] [--compare-steps 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from defenses.uep_delta import margin_loss, to_tanh_space
from harness.api.contracts import Context, DataSplit, ImageSet
from harness.api.registry import DATASETS, DEFENSES
from harness.core.cache import Cache
from harness.toolkit.imaging import resize, to_tensor


def faces(n: int) -> ImageSet:
    """``n`` ≤ 200 face images: lfw-subset's faces, then their mirrors, each its own class."""
    split = DATASETS.create("lfw-subset", {}).load(seed=0)
    images = np.concatenate([split.fit.images, split.fit.images[:, :, ::-1]])[:n]
    ids = [f"{i}" for i in split.fit.ids] + [f"{i}-mirror" for i in split.fit.ids]
    return ImageSet(np.ascontiguousarray(images), np.arange(len(images)), ids[:n])


def step_seconds(models, x: torch.Tensor, batched: bool, repeats: int) -> float:
    """Median seconds of one gradient step of the UEP objective over all of ``x``."""
    targets = [m.logits(x).argmax(1).detach() for m in models]
    u = to_tanh_space(x)
    delta = torch.zeros_like(x[0], requires_grad=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chunks = [slice(0, len(x))] if batched else [slice(i, i + 1) for i in range(len(x))]
        for s in chunks:
            xp = 0.5 * torch.tanh(u[s] + delta) + 0.5
            f = sum(
                margin_loss(m.logits(xp), y[s], 0.1).sum()
                for m, y in zip(models, targets, strict=True)
            )
            (delta.norm() + f).backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--compare-steps", type=int, default=5)
    args = ap.parse_args()
    train = faces(args.images)
    ctx = Context(torch.device("cpu"), 0, Cache(enabled=False), 64)
    uep = DEFENSES.create("uep", {})
    t0 = time.perf_counter()
    uep.fit(train, ctx)
    wall = time.perf_counter() - t0
    r = uep.fit_report()
    print(f"N = {len(train)} images, {torch.get_num_threads()} torch threads, uep defaults")
    print(f"  learning wall time        {wall:8.1f} s")
    print(f"    local CNNs (3) trained  {r['cnn_seconds']:8.1f} s")
    print(
        f"    c search                {r['search_seconds']:8.1f} s "
        f"({int(r['search_rounds'])} values of c)"
    )
    print(
        f"  fooled every local CNN on {r['fooled_share']:.0%} of the N images "
        f"(p = 0.7 reached: {bool(r['reached_p'])}); ‖δ‖₂ = {r['delta_l2']:.2f}, "
        f"c = {r['c']:.4g}, δ stored in {int(r['artefact_bytes'])} bytes"
    )
    models = uep.local_models()
    for m in models:
        m.fit(DataSplit(train, train, train, protocol="uep-local"), ctx)
    x = resize(to_tensor(train.images), (uep.size, uep.size), "bicubic")
    batched = step_seconds(models, x, True, args.compare_steps)
    single = step_seconds(models, x, False, max(1, args.compare_steps // 2))
    print(f"  one gradient step, all N at once   {batched * 1e3:8.1f} ms")
    print(
        f"  one gradient step, image by image  {single * 1e3:8.1f} ms "
        f"({single / batched:.1f}x slower)"
    )


if __name__ == "__main__":
    main()
