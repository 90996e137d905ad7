"""Cost per image as a run grows: one fixed small suite over N photos, N = 100, 1,000, 10,000.

The data set is a ``folder`` tree built here, deterministically, from the photographs that ship
inside scikit-image (astronaut, coffee, rocket, ...): each of 10 classes is one photograph, each
image a seeded crop of it (random position and scale, mirrored or not, re-lit) resized to
``--size``. Each N runs cold (a fresh cache) in its own process, so its peak memory is its own.
Printed per N: probes, wall seconds, seconds per image (wall / N) and its ratio to the previous
N's, the marginal cost per image ((wall − previous wall) / (N − previous N): what one more photo
costs once the fixed set-up is paid) and its ratio to the previous marginal cost, and peak RSS.

    .venv/bin/python benchmarks/scale.py [--sizes 100 1000 10000] [--size 64] [--device cpu]
        [--executor local|dask] [--workdir /tmp/privbench-scale]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOGRAPHS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "retina",
    "brick",
    "gravel",
)

# Fixed per-image work: a keyed reversible defense and none, two counter-attacks, a trained
# classifier (fixed training steps) and a face detector; quality and recovery per image. No
# latency (its timing budget is a constant per defense config, not a per-image cost).
SUITE = """\
name: scale-{n}
seed: 0
device: {device}
dataset: {{name: folder, params: {{root: {root}, size: {size}}}}}
recognizers:
  - yunet
  - {{name: small-cnn, params: {{steps: 200, width: 16, input_size: 32}}}}
defenses:
  - none
  - {{name: krtio, params: {{alpha: 0.45, block: 4, k: 3}}}}
counter_attacks: [none, {{name: jpeg, params: {{quality: 75}}}}]
metrics: [fooling_rate, detection_rate, ssim, recovery_ssim]
upload: {{format: png}}
batch_size: 64
"""


def build_folder(root: Path, n: int, size: int) -> None:
    """``n`` seeded crops of the bundled photographs, ``n / 10`` per class, as PNG files."""
    if (root / ".complete").exists():
        return
    rng = np.random.default_rng(20261123)
    sources = [np.asarray(getattr(data, name)())[..., :3] for name in PHOTOGRAPHS]
    for i in range(n):
        label = i % len(PHOTOGRAPHS)
        img = sources[label]
        h, w = img.shape[:2]
        side = int(rng.uniform(0.3, 0.9) * min(h, w))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = img[top : top + side, left : left + side].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop * rng.uniform(0.8, 1.2) + rng.uniform(-15, 15), 0, 255)
        out = Image.fromarray(crop.astype(np.uint8)).resize((size, size), Image.BILINEAR)
        folder = root / PHOTOGRAPHS[label]
        folder.mkdir(parents=True, exist_ok=True)
        out.save(folder / f"{i:06d}.png")
    (root / ".complete").write_text("ok")


CHILD = """
import json, resource, sys, time
from pathlib import Path
from harness.engine.executors import make_executor
from harness.cli.wiring import run_with_leaderboard
from harness.engine.runner import RunOptions
from harness.engine.suite import load_suite
suite = load_suite(sys.argv[1])
executor = make_executor(sys.argv[4], device=suite.device)
options = RunOptions(Path(sys.argv[2]), cache_root=Path(sys.argv[3]), progress=False,
                     executor=executor)
t0 = time.perf_counter()
result = run_with_leaderboard(suite, options)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "status": result.manifest["status"],
                  "probes": result.manifest["dataset"]["sizes"]["probe"],
                  "cells": suite.n_cells,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(n: int, args: argparse.Namespace) -> dict:
    work = Path(args.workdir)
    root = work / f"photos-{n}-{args.size}"
    build_folder(root, n, args.size)
    suite = work / f"scale-{n}.yaml"
    suite.write_text(SUITE.format(n=n, device=args.device, root=root, size=args.size))
    cache = work / f"cache-{n}-{args.executor}"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(suite), str(work / "results"), str(cache), args.executor],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"N = {n} failed:\n{textwrap.indent(run.stderr[-3000:], '  ')}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--size", type=int, default=64, help="side of every photo in pixels")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--executor", choices=["local", "dask"], default="local")
    ap.add_argument("--workdir", default="/tmp/privbench-scale")
    args = ap.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print(f"fixed suite: 2 defense configs × 2 counter-attacks × 2 recognizers, {args.size} px")
    print(
        f"{'N':>7} {'probes':>7} {'seconds':>8} {'per image':>10} {'ratio':>6} "
        f"{'marginal':>9} {'ratio':>6} {'peak RSS':>9}"
    )
    previous: tuple[int, float, float, float | None] | None = None
    for n in args.sizes:
        m = measure(n, args)
        per_image = m["seconds"] / n
        ratio = marginal = marginal_ratio = "-"
        margin = None
        if previous:
            p_n, p_seconds, p_per_image, p_margin = previous
            ratio = f"{per_image / p_per_image:.2f}"
            margin = (m["seconds"] - p_seconds) / (n - p_n)
            marginal = f"{margin * 1000:.2f}ms"
            if p_margin:
                marginal_ratio = f"{margin / p_margin:.2f}"
        print(
            f"{n:>7} {m['probes']:>7} {m['seconds']:>8.1f} {per_image * 1000:>8.2f}ms "
            f"{ratio:>6} {marginal:>9} {marginal_ratio:>6} {m['peak_rss_mib']:>5.0f} MiB"
            f"  ({m['status']})"
        )
        previous = (n, m["seconds"], per_image, margin)


if __name__ == "__main__":
    main()
