"""A folder tree with one sub-folder per identity or class: recognition or linking."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.api.contracts import Dataset, DataSplit, ImageSet
from harness.core.errors import DataError
from harness.core.params import Param
from harness.datasets.splits import SPLIT_PARAMS, limit, stratified_split
from harness.toolkit.photos import IMAGE_SUFFIXES, center_square_resize, read_image_rgb


class Folder(Dataset):
    """A tree with one sub-folder per identity or class (LFW, FaceScrub, PIPA crops, Places365
    subsets). Images are read in sorted order; ids are ``<class>/<file name>``.

    Folders may nest (:func:`class_folders`): a class is a folder that directly holds images,
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
            class_folders(root)
        except DataError as exc:
            return [str(exc)]
        return []

    def load(self, seed: int) -> DataSplit:
        root = Path(os.path.expanduser(self.root))
        lacking = self.missing(self.config)
        if lacking:
            raise DataError(lacking[0])
        tree = class_folders(root)
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
            img = center_square_resize(img, self.size) if self.size else img
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
        split.probe = limit(split.probe, self.max_probes, np.random.default_rng([seed, 3]))
        return split


def class_folders(root: Path) -> list[tuple[str, list[Path]]]:
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
