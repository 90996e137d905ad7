"""Data sets: deterministic, with stable image ids, offline by default.

Each data set turns its parameters into a :class:`~harness.api.contracts.DataSplit`. Resizing and
channel conversion are not done here: that belongs to each recognizer's input spec. The
``scenes`` pool is also the default overlay source of transparent-overlay defenses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.api.contracts import DataSplit, ImageSet, Method, apply_smoke
from harness.core.errors import DataError, ParamError
from harness.core.params import Param
from harness.toolkit.photos import IMAGE_SUFFIXES, read_image_rgb
from harness.toolkit.scenes import SCENE_SOURCES, load_scene

# What each protocol measures, written into the manifest and above every leaderboard.
PROTOCOLS: dict[str, str] = {
    "near-duplicate-linking": "the gallery holds each probe's own clean original: can the "
    "platform link a protected photo to the photo it was made from (what reverse image search "
    "does)? This is not face recognition across different photos of a person",
    "recognition": "the gallery holds other photos of each identity than the probes: can the "
    "platform recognise the person in a photo it has never seen?",
    "detection": "probes are faces, negatives are non-faces: is there a face at all?",
    "classification": "closed-set classes; classifiers train on the fit split, which holds "
    "none of the probe photos",
}


def describe_protocol(protocol: str) -> str:
    """The descriptions of a protocol name such as 'near-duplicate-linking+detection'."""
    return "; ".join(f"{p}: {PROTOCOLS.get(p, '(no description)')}" for p in protocol.split("+"))


class Dataset(Method):
    """A data set and its split into fit / enroll / probe (/ negatives)."""

    protocol: ClassVar[str] = ""

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        """What this machine lacks to load the data set with ``params`` (folders, files), one
        sentence each saying where to get it; empty when ready. Must not raise."""
        return []

    def load(self, seed: int) -> DataSplit:
        """Build the split; the same parameters and seed always give the same split."""
        raise NotImplementedError


def _gray_to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _stratified_split(
    labels: np.ndarray, fit_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, probe): per class a ``fit_fraction`` share to fit, at least one each side
    when the class has two or more images; sorted, so the order does not depend on the shuffle."""
    fit, probe = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_fit = round(fit_fraction * len(idx))
        n_fit = min(max(n_fit, 1), len(idx) - 1) if len(idx) >= 2 else len(idx)
        fit.extend(idx[:n_fit])
        probe.extend(idx[n_fit:])
    return np.sort(np.asarray(fit, dtype=np.int64)), np.sort(np.asarray(probe, dtype=np.int64))


SPLIT_PARAMS: dict[str, Param] = {
    "fit_fraction": Param(
        float,
        0.5,
        "share of each class used to fit/enroll",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    ),
    "max_probes": Param(int, None, "use at most this many probes (seeded subset)", low=1),
}


def stratified_split(
    everything: ImageSet,
    fit_fraction: float,
    max_probes: int | None,
    seed: int,
    protocol: str,
    class_names: list[str] | None = None,
) -> DataSplit:
    """Per class, ``fit_fraction`` of the images fit and enroll; the rest are probes (at most
    ``max_probes`` of them, a seeded subset)."""
    rng = np.random.default_rng(seed)
    fit_idx, probe_idx = _stratified_split(everything.labels, fit_fraction, rng)
    fit = everything.subset(fit_idx)
    probe = _limit(everything.subset(probe_idx), max_probes, rng)
    return DataSplit(fit=fit, enroll=fit, probe=probe, protocol=protocol, class_names=class_names)


def _limit(images: ImageSet, max_count: int | None, rng: np.random.Generator) -> ImageSet:
    if max_count is None or max_count >= len(images):
        return images
    return images.subset(np.sort(rng.choice(len(images), size=max_count, replace=False)))


def augmented_views(
    images: np.ndarray, views: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``views`` altered copies of each uint8 [N, H, W, C] image, none equal to its original:
    a shift of 1-2 pixels in x or y (never none), a rotation of up to ±6° and a scale of
    0.94-1.06 about the centre (reflected borders), a mirror half the time, and brightness
    ±12 grey levels with contrast ×0.88-1.12. Returns (views [N·views, H, W, C], index of
    each view's original)."""
    import cv2

    n, h, w, c = images.shape
    out = np.empty((n * views, h, w, c), dtype=np.uint8)
    source = np.repeat(np.arange(n), views)
    for j, i in enumerate(source):
        original = images[i]
        while True:
            dx, dy = 0, 0
            while dx == 0 and dy == 0:
                dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
            m = cv2.getRotationMatrix2D(
                ((w - 1) / 2, (h - 1) / 2),
                float(rng.uniform(-6, 6)),
                float(rng.uniform(0.94, 1.06)),
            )
            m[:, 2] += (dx, dy)
            img = cv2.warpAffine(
                original, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            ).reshape(h, w, c)
            if rng.random() < 0.5:
                img = img[:, ::-1]
            x = img.astype(np.float64)
            x = (x - x.mean()) * rng.uniform(0.88, 1.12) + x.mean() + rng.uniform(-12, 12)
            view = np.clip(np.round(x), 0, 255).astype(np.uint8)
            if not np.array_equal(view, original):
                break
        out[j] = view
    return out, source


class LfwSubset(Dataset):
    """scikit-image's ``lfw_subset``: 100 real 25×25 grayscale face crops from Labeled Faces in
    the Wild (one photo per person) and 100 non-face crops.

    Protocols: *near-duplicate linking* (gallery = the clean faces, each its own identity;
    probes = their protected versions: can the platform link a protected photo to its original,
    as reverse image search does? With one photo per person this is not face recognition; use
    a ``folder`` data set with the ``recognition`` protocol for that) and *detection* (faces as
    probes, non-faces as negatives). Classifiers train on the fit split: ``fit_views`` altered
    copies of each face (:func:`augmented_views`), never the probe photos themselves. With
    ``fit_faces`` the fit split is instead that many other faces (a hold-out: the owner's
    models learn on photos that are not protected). Ids: ``lfw-000`` … ``lfw-099`` (views:
    ``lfw-007~v3``), ``nonface-000`` … ``nonface-099``.
    """

    protocol = "near-duplicate-linking+detection"
    params: ClassVar[dict[str, Param]] = {
        "max_probes": Param(
            int,
            None,
            "use only this many faces (a seeded subset); all 100 by default",
            low=1,
            high=100,
        ),
        "fit_faces": Param(
            int,
            None,
            "hold out: this many faces (seeded) fit the owner's models; the rest are the "
            "probes and the gallery. Default: the fit split is altered views of the probes",
            low=1,
            high=99,
        ),
        "fit_views": Param(
            int, 8, "altered copies of each face in the fit split (without fit_faces)", low=1
        ),
    }

    @classmethod
    def smoke_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Eight probes (and, with ``fit_faces``, at most eight held-out fit faces besides)."""
        held_out = params.get("fit_faces")
        if held_out is None:
            return apply_smoke(params, {"max_probes": 8, "fit_views": 2})
        fit = min(held_out, 8)
        return {
            **params,
            "fit_faces": fit,
            "max_probes": min(params.get("max_probes") or 100, fit + 8),
        }

    def load(self, seed: int) -> DataSplit:
        from skimage import data

        raw = data.lfw_subset()
        faces = _gray_to_u8(raw[:100])[..., None]
        nonfaces = _gray_to_u8(raw[100:])[..., None]
        face_set = ImageSet(
            faces, np.arange(100, dtype=np.int64), [f"lfw-{i:03d}" for i in range(100)]
        )
        face_set = _limit(face_set, self.max_probes, np.random.default_rng(seed))
        negatives = ImageSet(
            nonfaces, np.full(100, -1, dtype=np.int64), [f"nonface-{i:03d}" for i in range(100)]
        )
        probe = face_set
        if self.fit_faces is None:
            views, source = augmented_views(
                face_set.images, self.fit_views, np.random.default_rng([seed, 2])
            )
            k = np.arange(len(source)) % self.fit_views
            fit = ImageSet(
                views,
                face_set.labels[source],
                [f"{face_set.ids[i]}~v{j}" for i, j in zip(source, k, strict=True)],
            )
        else:
            if self.fit_faces >= len(face_set):
                raise ParamError(
                    f"lfw-subset.fit_faces: {self.fit_faces} leaves no held-out faces "
                    f"(there are {len(face_set)}); use at most {len(face_set) - 1}"
                )
            order = np.random.default_rng([seed, 1]).permutation(len(face_set))
            fit = face_set.subset(np.sort(order[: self.fit_faces]))
            probe = face_set.subset(np.sort(order[self.fit_faces :]))
        return DataSplit(
            fit=fit,
            enroll=probe,
            probe=probe,
            negatives=negatives,
            protocol=self.protocol,
        )


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


def _center_square_resize(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top : top + s, left : left + s])
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))


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
        images = np.stack([_center_square_resize(load_scene(n), self.size) for n in names])
        s = ImageSet(images, np.arange(len(names), dtype=np.int64), [f"scene-{n}" for n in names])
        return DataSplit(fit=s, enroll=s, probe=s, protocol=self.protocol, class_names=names)


class Folder(Dataset):
    """A tree with one sub-folder per identity or class (LFW, FaceScrub, PIPA crops, Places365
    subsets). Images are read in sorted order; ids are ``<class>/<file name>``.

    Folders may nest (:func:`_class_folders`): a class is a folder that directly holds images,
    named by its path below ``root`` with '/' separators, so Places365's ``/c/church/indoor``
    (Zhou et al., TPAMI 2018) can be the folder ``church/indoor/`` (class ``church/indoor``, ids
    ``church/indoor/<file name>``) as well as a flat ``church_indoor/`` (a classifier's
    ``classes_file`` matches both, reading '/' as '_'). A folder holding only sub-folders is a
    container; a folder holding neither images nor sub-folders is an error naming it, never a
    class silently left empty. A one-level tree reads exactly as before: the same classes in
    the same order, labels and ids.

    Per class a seeded ``fit_fraction`` of the photos is the fit split (classifiers train on
    it). ``protocol: recognition`` (default) enrols the fit photos in identifiers' galleries
    and probes with the others, so a probe is never a gallery photo: a probe whose pixels equal
    an enrolled photo of its class is dropped (counted in the manifest), and a class with one
    photo only enrols it (a distractor). ``protocol: linking`` enrols the probes' own clean
    originals instead (near-duplicate linking, as ``lfw-subset``).

    All images must share one size unless ``size`` is set (then each is centre-cropped to a
    square and resized), because batches need one shape.
    """

    protocol = "recognition"
    smoke: ClassVar[dict[str, Any]] = {"max_per_class": 4, "max_probes": 8}
    params: ClassVar[dict[str, Param]] = {
        "root": Param(
            str,
            None,
            "the folder holding one sub-folder per class (nested: a class is a folder that "
            "directly holds images, named by its path, e.g. church/indoor)",
            required=True,
        ),
        "protocol": Param(
            str,
            "recognition",
            "recognition: gallery and probes are different photos of each identity; linking: "
            "the gallery holds each probe's own original",
            choices=("recognition", "linking"),
        ),
        "size": Param(int, None, "centre-crop and resize every image to size×size", low=8),
        "max_per_class": Param(int, None, "read at most this many images per class", low=1),
        **SPLIT_PARAMS,
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        root = Path(os.path.expanduser(str(params.get("root"))))
        if not root.is_dir():
            return [
                f"{root} does not exist. Put one sub-folder per identity or "
                "class there (e.g. an LFW or FaceScrub export), or change dataset.params.root"
            ]
        if not any(p.is_dir() for p in root.iterdir()):
            return [f"{root} has no sub-folders; expected one sub-folder per identity or class"]
        try:
            _class_folders(root)
        except DataError as exc:
            return [str(exc)]
        return []

    def load(self, seed: int) -> DataSplit:
        root = Path(os.path.expanduser(self.root))
        lacking = self.missing(self.config)
        if lacking:
            raise DataError(lacking[0])
        tree = _class_folders(root)
        classes = [name for name, _ in tree]
        files, labels, ids = [], [], []
        for label, (name, found) in enumerate(tree):
            for f in found[: self.max_per_class]:
                files.append(f)
                labels.append(label)
                ids.append(f"{name}/{f.name}")
        if not files:
            raise DataError(f"{root}: no images found (suffixes {', '.join(IMAGE_SUFFIXES)})")
        images: np.ndarray | None = None  # filled in place: no second copy of the data set
        shapes = set()
        for i, f in enumerate(files):
            img = read_image_rgb(f)
            img = _center_square_resize(img, self.size) if self.size else img
            shapes.add(img.shape)
            if images is None:
                images = np.empty((len(files), *img.shape), dtype=np.uint8)
            if len(shapes) == 1:
                images[i] = img
        if len(shapes) > 1 or images is None:
            raise DataError(
                f"{root}: images have {len(shapes)} different sizes (e.g. "
                f"{sorted(shapes)[:3]}); set dataset.params.size to resize them"
            )
        everything = ImageSet(images, np.asarray(labels, dtype=np.int64), ids)
        if self.config["protocol"] == "linking":
            split = stratified_split(
                everything, self.fit_fraction, self.max_probes, seed, "near-duplicate-linking"
            )
            split.enroll, split.class_names = split.probe, classes
            return split
        split = stratified_split(
            everything, self.fit_fraction, None, seed, "recognition+classification", classes
        )
        split.probe, split.dropped = _drop_enrolled_duplicates(split.probe, split.enroll)
        split.probe = _limit(split.probe, self.max_probes, np.random.default_rng([seed, 3]))
        return split


def _class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """The classes below ``root`` and their image files, sorted by class name (files sorted
    too). A class is a folder that directly holds images, named by its path relative to
    ``root`` with '/' separators (``church/indoor``); its sub-folders are searched as well. A
    folder with sub-folders only is a container. A folder with neither images nor sub-folders
    is a DataError naming it. Images directly in ``root`` belong to no class (as before).
    Symbolic links to folders are followed, except one leading back to a folder above it."""
    found: list[tuple[str, list[Path]]] = []

    def visit(folder: Path, above: frozenset[Path]) -> None:
        real = folder.resolve()
        if real in above:  # a link back up the tree: read that folder once
            return
        entries = list(folder.iterdir())
        subs = [e for e in entries if e.is_dir()]
        images = sorted(e for e in entries if e.suffix.lower() in IMAGE_SUFFIXES and not e.is_dir())
        if images:
            found.append((folder.relative_to(root).as_posix(), images))
        elif not subs:
            raise DataError(
                f"{folder}: a folder with no images (suffixes {', '.join(IMAGE_SUFFIXES)}) and "
                "no sub-folders; a class folder holds its images directly, a container holds "
                "class folders. Add its images or remove it"
            )
        for sub in subs:
            visit(sub, above | {real})

    top = frozenset({root.resolve()})
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        visit(sub, top)
    return sorted(found, key=lambda c: c[0])


def _drop_enrolled_duplicates(probe: ImageSet, enroll: ImageSet) -> tuple[ImageSet, int]:
    """The probes whose pixels equal no enrolled photo of the same class, and how many were
    dropped (a folder can hold the same photo twice under two names)."""
    enrolled = {
        (int(lab), img.tobytes()) for img, lab in zip(enroll.images, enroll.labels, strict=True)
    }
    keep = [
        i
        for i, (img, lab) in enumerate(zip(probe.images, probe.labels, strict=True))
        if (int(lab), img.tobytes()) not in enrolled
    ]
    return probe.subset(keep), len(probe) - len(keep)


class Cifar10(Dataset):
    """CIFAR-10 through torchvision's loader from a local root (no download unless
    ``download: true`` is set explicitly). Fit = the training set, probes = the test set."""

    protocol = "classification"
    smoke: ClassVar[dict[str, Any]] = {"max_fit": 64, "max_probes": 8}
    params: ClassVar[dict[str, Param]] = {
        "root": Param(str, "~/.cache/privbench/data", "folder holding cifar-10-batches-py"),
        "download": Param(bool, False, "allow torchvision to download CIFAR-10 (needs internet)"),
        "max_fit": Param(int, None, "use at most this many training images", low=1),
        "max_probes": Param(int, None, "use at most this many test images", low=1),
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        root = Path(os.path.expanduser(str(params.get("root"))))
        if params.get("download") or (root / "cifar-10-batches-py").is_dir():
            return []
        return [
            f"CIFAR-10 not found under {root} (expected {root}/cifar-10-batches-py): download "
            "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
            f"extract it into {root}"
        ]

    def load(self, seed: int) -> DataSplit:
        from torchvision.datasets import CIFAR10

        root = Path(os.path.expanduser(self.root))
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

        fit = _limit(as_set(train, "train"), self.max_fit, rng)
        probe = _limit(as_set(test, "test"), self.max_probes, rng)
        return DataSplit(
            fit=fit,
            enroll=fit,
            probe=probe,
            protocol=self.protocol,
            class_names=list(train.classes),
        )
