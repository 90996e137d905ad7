"""Protective U-Net speed (Ye et al., ACM MMSys 2022, §4.3.2, Table 3): generator ms per image
against the target networks' own inference, at the paper's batch of 256 CIFAR-sized (32×32)
images, on CPU and on CUDA when present; and training throughput (images per second of
generator updates through a frozen target and auxiliary).

CUDA timings synchronise before each clock read. The paper's GPU column did not; the
unsynchronised figure is printed beside ours to show how far that moves the number. The zoo's
architectures are built with random weights: speed does not depend on the weights. Run:
    .venv/bin/python benchmarks/unet.py [--batch 256] [--targets resnet18 vgg13_bn mobilenet_v2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from tabulate import tabulate

from defenses.unet import ProtectiveUNet, parameter_count
from defenses.unet_training import conceal_loss, frozen
from recognizers.cifar10_zoo import build_cifar10_model


def ms_per_image(
    fn: Callable[[], object], batch: int, device: torch.device, sync: bool, repeats: int = 5
) -> float:
    """Median over ``repeats`` timed calls after a warm-up, in ms per image."""

    def run() -> float:
        if sync and device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if sync and device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    run()
    return 1000.0 * statistics.median(run() for _ in range(repeats)) / batch


def train_rate(
    device: torch.device, batch: int, target: torch.nn.Module, aux: torch.nn.Module
) -> float:
    """Images per second of generator training steps (AMP on CUDA, as the paper's code)."""
    gen = ProtectiveUNet(32).to(device)
    opt = torch.optim.AdamW(gen.parameters(), lr=5e-3, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out = gen.protect(x)
            loss = conceal_loss(x, out, y, y, target, aux).total
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    with frozen(target, aux):
        return 1000.0 / ms_per_image(step, batch, device, sync=True, repeats=3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--targets", nargs="+", default=["resnet18", "vgg13_bn", "mobilenet_v2"])
    args = ap.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}")
    rows = []
    for device in devices:
        gen = ProtectiveUNet(32).to(device).eval()
        x = torch.rand(args.batch, 3, 32, 32, device=device)
        with torch.inference_mode():
            protect = lambda gen=gen, x=x: gen.protect(x)  # noqa: E731
            g_sync = ms_per_image(protect, args.batch, device, sync=True)
            g_async = ms_per_image(protect, args.batch, device, sync=False)
            for arch in args.targets:
                net = build_cifar10_model(arch).to(device).eval()
                t_ms = ms_per_image(lambda net=net, x=x: net(x), args.batch, device, sync=True)
                rows.append(
                    [
                        device.type,
                        arch,
                        f"{t_ms:.3f}",
                        f"{g_sync:.3f}",
                        f"{g_sync / t_ms:.2f}",
                        f"{g_async:.3f}" if device.type == "cuda" else "same",
                    ]
                )
        target = build_cifar10_model(args.targets[0]).to(device)
        aux = build_cifar10_model(args.targets[-1]).to(device)
        rate = train_rate(device, args.batch, target, aux)
        print(
            f"{device.type}: generator {parameter_count(gen):,} parameters; training "
            f"{rate:.0f} images/s (target {args.targets[0]}, auxiliary {args.targets[-1]})"
        )
    print(
        tabulate(
            rows,
            headers=[
                "device",
                "target",
                "target ms/img",
                "generator ms/img",
                "generator / target",
                "generator ms/img without sync",
            ],
            tablefmt="github",
        )
    )


if __name__ == "__main__":
    main()
