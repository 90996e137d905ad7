"""Small classic sets: scikit-learn's digits, the bundled scenes (the default overlay pool)
and CIFAR-10 from a local copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from harness.api.contracts import Dataset, DataSplit, ImageSet
from harness.core.cache import privbench_home
from harness.core.errors import DataError
from harness.core.params import Param
from harness.datasets.splits import SPLIT_PARAMS, limit, stratified_split
from harness.toolkit.photos import center_square_resize
from harness.toolkit.scenes import SCENE_SOURCES, load_scene


class Digits(Dataset):
    """scikit-learn's 1,797 real 8×8 handwritten digits, 10 classes: closed-set classification.

    Pixel values 0–16 are scaled to 0–255; with ``size`` the digits are enlarged (bicubic,
    clipped and rounded to uint8), e.g. to the 32×32 of CIFAR-sized models and of the SSIM
    window. Stratified seeded split; ids ``digit-0000`` ….
    """

    protocol = "classification"
    smoke: ClassVar[dict[str, Any]] = {"max_probes": 8, "fit_fraction": 0.1}
    params: ClassVar[dict[str, Param]] = {
        **SPLIT_PARAMS,
        "size": Param(int, 8, "square side the 8×8 digits are resized to", low=8, high=512),
    }

    def load(self, seed: int) -> DataSplit:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
        if self.size != 8:
            images = _enlarge_exactly(images, self.size)
        everything = ImageSet(
            images, d.target.astype(np.int64), [f"digit-{i:04d}" for i in range(len(images))]
        )
        return stratified_split(
            everything,
            self.fit_fraction,
            self.max_probes,
            seed,
            self.protocol,
            [str(d) for d in range(10)],
        )


def _enlarge_exactly(gray: np.ndarray, size: int) -> np.ndarray:
    """Bicubic (antialiased kernel) enlargement of uint8 [N, h, w, 1] to ``size``², rounded.

    Runs in float64 on the 0–255 scale rather than float32 on [0, 1]: in float32 torch's
    AVX-512, AVX2 and portable kernels round a few pixels to different levels, so the data
    set's bytes would depend on the CPU. For a scale that is a power of two the kernel
    weights are dyadic and every sum is exact in float64, hence the same on every kernel.
    """
    pixels = torch.from_numpy(np.ascontiguousarray(gray[..., 0])).double()[:, None]
    big = F.interpolate(
        pixels, size=(size, size), mode="bicubic", align_corners=False, antialias=True
    )
    return big.clamp_(0.0, 255.0).round_().to(torch.uint8).numpy()[:, 0, :, :, None]


class Scenes(Dataset):
    """The face-free colour photographs bundled with scikit-image and scikit-learn, centre
    cropped to a square and resized to ``size``; each is its own class. Mainly the default
    overlay pool of transparent-overlay defenses."""

    protocol = "classification"
    params: ClassVar[dict[str, Param]] = {
        "size": Param(int, 128, "side of the square images", low=8, high=2048),
    }

    def load(self, seed: int) -> DataSplit:
        names = list(SCENE_SOURCES)
        images = np.stack([center_square_resize(load_scene(n), self.size) for n in names])
        s = ImageSet(images, np.arange(len(names), dtype=np.int64), [f"scene-{n}" for n in names])
        return DataSplit(fit=s, enroll=s, probe=s, protocol=self.protocol, class_names=names)


def _cifar_root(root: str | None) -> Path:
    """The CIFAR-10 folder: ``root`` as given, else ``$PRIVBENCH_HOME/data``."""
    return Path(os.path.expanduser(root)) if root else privbench_home() / "data"


class Cifar10(Dataset):
    """CIFAR-10 through torchvision's loader from a local root (no download unless
    ``download: true`` is set explicitly). Fit = the training set, probes = the test set."""

    protocol = "classification"
    smoke: ClassVar[dict[str, Any]] = {"max_fit": 64, "max_probes": 8}
    params: ClassVar[dict[str, Param]] = {
        "root": Param(
            str,
            None,
            "folder holding cifar-10-batches-py (default: $PRIVBENCH_HOME/data, that is "
            "~/.cache/privbench/data)",
        ),
        "download": Param(bool, False, "allow torchvision to download CIFAR-10 (needs internet)"),
        "max_fit": Param(int, None, "use at most this many training images", low=1),
        "max_probes": Param(int, None, "use at most this many test images", low=1),
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        root = _cifar_root(params.get("root"))
        if params.get("download") or (root / "cifar-10-batches-py").is_dir():
            return []
        return [
            f"CIFAR-10 not found under {root} (expected {root}/cifar-10-batches-py): download "
            "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
            f"extract it into {root}"
        ]

    def load(self, seed: int) -> DataSplit:
        from torchvision.datasets import CIFAR10

        root = _cifar_root(self.root)
        try:
            train = CIFAR10(str(root), train=True, download=self.download)
            test = CIFAR10(str(root), train=False, download=self.download)
        except RuntimeError as exc:
            raise DataError(
                f"CIFAR-10 not found under {root} (expected {root}/cifar-10-batches-py). "
                "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                f"and extract it into {root}, or set dataset.params.download: true on a machine "
                "with internet"
            ) from exc
        rng = np.random.default_rng(seed)

        def as_set(ds: Any, prefix: str) -> ImageSet:
            return ImageSet(
                np.asarray(ds.data, dtype=np.uint8),
                np.asarray(ds.targets, dtype=np.int64),
                [f"{prefix}-{i:05d}" for i in range(len(ds.targets))],
            )

        fit = limit(as_set(train, "train"), self.max_fit, rng)
        probe = limit(as_set(test, "test"), self.max_probes, rng)
        return DataSplit(
            fit=fit,
            enroll=fit,
            probe=probe,
            protocol=self.protocol,
            class_names=list(train.classes),
        )
