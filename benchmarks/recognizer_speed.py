"""Recognizer throughput: images per second on this machine's CPU (and its GPU when present).

Every recognizer predicts the same 64 lfw-subset faces (25×25, each resized to its own input
spec). The torchvision ResNet50 and CIFAR-10 zoo rows and the deepface-route SFace use
weights made here (random, or the dequantised SFace graph): speed does not depend on the values,
and the real files are not shipped. Run:
    .venv/bin/python benchmarks/recognizer_speed.py [--images 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from _timing import rate

from harness.api.contracts import Context
from harness.api.registry import DATASETS, RECOGNIZERS
from harness.core.cache import Cache
from harness.toolkit.imaging import to_tensor
from recognizers.cifar10_zoo import build_cifar10_model
from recognizers.onnx_convert import fp32_onnx
from recognizers.opencv_zoo import SFACE, model_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--images",
        type=int,
        default=64,
        help="batch size; lfw-subset's 100 faces are repeated to fill larger batches",
    )
    args = ap.parse_args()
    if args.images < 1:
        ap.error("--images must be at least 1")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    split = DATASETS.create("lfw-subset").load(seed=0)
    faces = split.probe.images[np.arange(args.images) % len(split.probe)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "resnet50.pth"
        torch.save(torchvision.models.resnet50(weights=None, num_classes=365).state_dict(), ckpt)
        zoo = {}
        for arch in ("resnet18", "vgg13_bn", "mobilenet_v2", "densenet121"):
            zoo[arch] = Path(tmp) / f"{arch}.pt"
            torch.save(build_cifar10_model(arch).state_dict(), zoo[arch])
        sface_fp32 = str(fp32_onnx(model_path(SFACE), SFACE.sha256))
        configs = [
            ("sface (opencv)", "sface", {}),
            ("sface (onnxruntime)", "sface", {"backend": "onnxruntime"}),
            ("sface (torch)", "sface", {"backend": "torch"}),
            ("yunet", "yunet", {}),
            ("haar", "haar", {}),
            ("small-cnn (width 16, 32 px)", "small-cnn", {"steps": 1}),
            (
                "resnet50 365-way, 256 px",
                "torchvision-classifier",
                {
                    "arch": "resnet50",
                    "checkpoint": str(ckpt),
                    "num_classes": 365,
                    "input_size": 256,
                },
            ),
            *(
                (f"cifar10-zoo {arch}, 32 px", "cifar10-zoo", {"arch": arch, "checkpoint": str(p)})
                for arch, p in zoo.items()
            ),
            (
                "deepface SFace (onnxruntime)",
                "deepface",
                {"model": "SFace", "checkpoint": sface_fp32},
            ),
        ]
        print(f"batches of {len(faces)} lfw-subset faces, {torch.get_num_threads()} torch threads")
        for device in devices:
            ctx = Context(device, 0, Cache(Path(tmp) / "cache"), args.images)
            x = to_tensor(faces, device)
            for label, name, params in configs:
                rec = RECOGNIZERS.create(name, params)
                rec.fit(split, ctx)
                r = rate(lambda rec=rec, x=x, ctx=ctx: rec.predict(x, ctx), len(x))
                print(f"  {device.type:4s} {label:30s} {r:9.1f} images/s")


if __name__ == "__main__":
    main()
