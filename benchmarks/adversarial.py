"""Adversarial defense throughput: images per second of PGD-10 (ε 8/255) and iterative
least-likely (ε 8/255, Kurakin's 10 steps) against a small-cnn and against SFace (torch
backend), batched vs one image at a time, and privbench's overhead over a bare ART call on the
same batch (the surrogate's scores, the ε-ball quantisation and the tensor/numpy hops).

Faces are lfw-subset's (25×25; SFace sees them at 112×112). Run:
    .venv/bin/python benchmarks/adversarial.py [--images 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _timing import rate
from tabulate import tabulate

from harness.api.contracts import Context
from harness.api.registry import DATASETS, DEFENSES
from harness.core.cache import Cache
from harness.toolkit.imaging import to_tensor

SURROGATES = {
    "small-cnn": {"surrogate": "small-cnn"},
    "sface (torch)": {"surrogate": "sface", "surrogate_params": {"backend": "torch"}},
}


def bare_art(defense, x: torch.Tensor, y: np.ndarray) -> None:
    """The same ART attack object on the same batch and labels, and nothing else."""
    defense.art_attack(x, x.device).generate(x=x.numpy(), y=y)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32, help="batch size")
    args = ap.parse_args()
    split = DATASETS.create("lfw-subset", {}).load(0)
    x = to_tensor(split.probe.images[: args.images], "cpu")
    n = len(x)
    ids = split.probe.ids[:n]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(torch.device("cpu"), 0, Cache(Path(tmp)), n)
        for label, surrogate in SURROGATES.items():
            for name in ("pgd", "least-likely"):
                defense = DEFENSES.create(name, {"eps": 8, **surrogate})
                defense.fit(split.fit, ctx)
                batched = rate(lambda d=defense: d.protect(x, ids, ctx), n)
                single = rate(
                    lambda d=defense: [
                        d.protect(x[i : i + 1], ids[i : i + 1], ctx) for i in range(n)
                    ],
                    n,
                    repeats=1,
                )
                probs = defense.scores(x)
                y = defense.targets(probs).numpy()
                art = rate(lambda d=defense, y=y: bare_art(d, x, y), n)
                rows.append(
                    [
                        label,
                        name,
                        f"{batched:.1f}",
                        f"{single:.1f}",
                        f"{batched / single:.2f}×",
                        f"{art:.1f}",
                        f"{100 * (art / batched - 1):+.1f}%",
                    ]
                )
    print(f"{n} lfw-subset faces, ε = 8/255, CPU threads {torch.get_num_threads()}")
    print(
        tabulate(
            rows,
            headers=[
                "surrogate",
                "defense",
                "batched img/s",
                "one at a time img/s",
                "batching gain",
                "bare ART img/s",
                "privbench overhead",
            ],
            tablefmt="github",
        )
    )


if __name__ == "__main__":
    main()
