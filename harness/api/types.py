"""The data that travels between the engine and the methods: image sets, splits, input specs,
weight files and per-use seeds. Plain values; the contracts that use them are in
:mod:`harness.api.contracts`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np


@dataclass
class ImageSet:
    """Images with labels and stable ids.

    ``images`` is uint8 [N, H, W, C] with C in {1, 3}; ``labels`` int64 [N]; ``ids`` unique
    strings that stay the same across runs and machines (records and keys refer to them).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError("ImageSet.images must be uint8 [N, H, W, C]")
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise ValueError("ImageSet images, labels and ids must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | list[int]) -> ImageSet:
        """The images at ``index``, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(self.images[idx], self.labels[idx], [self.ids[i] for i in idx])

    def fingerprint(self) -> str:
        """sha256 over pixels, labels and ids: identical data gives an identical fingerprint."""
        h = hashlib.sha256()
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()


@dataclass
class DataSplit:
    """What a protocol needs.

    ``fit``: training data for defenses and trainable recognizers. ``enroll``: the gallery of an
    identifier. ``probe``: the photos the owner protects and the platform tries to recognise.
    ``negatives``: images without the target (non-faces), for detectors' false detections.
    """

    fit: ImageSet
    enroll: ImageSet
    probe: ImageSet
    negatives: ImageSet | None = None
    protocol: str = ""
    class_names: list[str] | None = None  # name of label i, where labels are classes
    dropped: int = 0  # probes left out by the protocol (e.g. duplicates of a gallery photo)

    def fingerprint(self) -> str:
        """One hash over every part of the split."""
        parts = [
            self.protocol,
            self.fit.fingerprint(),
            self.enroll.fingerprint(),
            self.probe.fingerprint(),
            self.negatives.fingerprint() if self.negatives is not None else "-",
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class InputSpec:
    """How a recognizer wants its input: travels with the model, like timm's pretrained config.

    ``size`` (H, W) or None for native size; ``channels`` 'rgb', 'bgr' or 'gray'; ``mean``/``std``
    applied after scaling to [0, 1]; ``interpolation`` used to resize.
    """

    size: tuple[int, int] | None = None
    channels: Literal["rgb", "bgr", "gray"] = "rgb"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    interpolation: Literal["bicubic", "bilinear", "nearest", "area"] = "bicubic"


@dataclass(frozen=True)
class WeightFile:
    """One pretrained weight file a method reads, declared beside the method that reads it
    (``Method.weights``), as timm keeps a model's pretrained config with the model.

    ``name`` is what suites and ``privbench weights add NAME PATH`` call it; ``filename`` its
    path below the weights folder; ``source`` where a user with internet gets it; ``sha256``
    the full digest when the publisher gives one, ``sha256_prefix`` the torchvision-style
    prefix in the file's name (with neither, the first file added is recorded and every later
    use is checked against it). ``input_spec`` is the input the network was trained on, where
    the file fixes it (documentation: a recognizer's own ``input_spec`` decides what it is fed).
    ``convert`` turns a file published in another format (``convert_suffixes``, e.g. a Keras
    ``.h5``) into the state dict stored instead. ``used_by`` is filled in by the catalogue
    (:func:`harness.toolkit.weights.catalogue`): leave it empty when declaring.
    """

    name: str
    filename: str
    source: str
    licence: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    note: str = ""
    input_spec: InputSpec | None = None
    convert: Callable[[Path], dict[str, Any]] | None = None
    convert_suffixes: tuple[str, ...] = ()
    used_by: tuple[str, ...] = ()


def derive_seed(seed: int, *scope: str) -> int:
    """A 63-bit seed from the run seed and a scope path, stable across Python versions."""
    digest = hashlib.sha256(("/".join([str(seed), *scope])).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
