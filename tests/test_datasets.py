from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.errors import DataError
from harness.registry import DATASETS


def test_lfw_subset_linkability_and_detection_split() -> None:
    split = DATASETS.create("lfw-subset").load(seed=0)
    assert split.probe.images.shape == (100, 25, 25, 1) and split.probe.images.dtype == np.uint8
    assert split.probe.ids[0] == "lfw-000" and split.probe.ids[-1] == "lfw-099"
    assert list(split.probe.labels) == list(range(100))
    assert split.enroll.fingerprint() == split.probe.fingerprint()
    assert split.negatives is not None and len(split.negatives) == 100
    assert split.fingerprint() == DATASETS.create("lfw-subset").load(seed=0).fingerprint()


def test_lfw_subset_limit_is_seeded() -> None:
    a = DATASETS.create("lfw-subset", {"max_probes": 10}).load(seed=1)
    b = DATASETS.create("lfw-subset", {"max_probes": 10}).load(seed=1)
    c = DATASETS.create("lfw-subset", {"max_probes": 10}).load(seed=2)
    assert a.probe.ids == b.probe.ids and len(a.probe) == 10 and a.probe.ids != c.probe.ids


def test_digits_stratified_deterministic_split() -> None:
    split = DATASETS.create("digits", {"fit_fraction": 0.5}).load(seed=0)
    assert len(split.fit) + len(split.probe) == 1797
    assert not set(split.fit.ids) & set(split.probe.ids)
    assert sorted(np.unique(split.probe.labels)) == list(range(10))
    assert split.fit.images.max() == 255
    again = DATASETS.create("digits", {"fit_fraction": 0.5}).load(seed=0)
    assert again.fingerprint() == split.fingerprint()


def test_scenes_are_colour_and_face_free_names() -> None:
    split = DATASETS.create("scenes", {"size": 32}).load(seed=0)
    assert split.probe.images.shape == (10, 32, 32, 3)
    assert "scene-astronaut" not in split.probe.ids


def _save(path: Path, size: tuple[int, int], colour: int, exif_rotate: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (colour, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))
    if exif_rotate:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90° clockwise on display
        img.save(path, exif=exif)
    else:
        img.save(path)


def test_folder_dataset(tmp_path: Path) -> None:
    for person in ("alice", "bob"):
        for i in range(4):
            _save(tmp_path / person / f"{i}.png", (12, 12), 40 * i)
    split = DATASETS.create("folder", {"root": str(tmp_path)}).load(seed=0)
    assert len(split.fit) == 4 and len(split.probe) == 4
    assert all(i.split("/")[0] in ("alice", "bob") for i in split.probe.ids)
    assert set(split.probe.labels) == {0, 1}


def test_folder_applies_exif_orientation(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "x.jpg", (20, 10), 0, exif_rotate=True)
    _save(tmp_path / "a" / "y.jpg", (10, 20), 0)
    split = DATASETS.create("folder", {"root": str(tmp_path)}).load(seed=0)
    assert split.fit.images.shape[1:3] == (20, 10)


def test_folder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        DATASETS.create("folder", {"root": str(tmp_path / "nope")}).load(seed=0)
    _save(tmp_path / "a" / "1.png", (10, 10), 0)
    _save(tmp_path / "a" / "2.png", (12, 10), 0)
    with pytest.raises(DataError, match=r"different sizes.*dataset.params.size"):
        DATASETS.create("folder", {"root": str(tmp_path)}).load(seed=0)
    split = DATASETS.create("folder", {"root": str(tmp_path), "size": 8}).load(seed=0)
    assert split.fit.images.shape[1:] == (8, 8, 3)
    (tmp_path / "a" / "3.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"3.png: cannot read"):
        DATASETS.create("folder", {"root": str(tmp_path), "size": 8}).load(seed=0)


def test_cifar10_missing_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"CIFAR-10 not found under .*cifar-10-batches-py"):
        DATASETS.create("cifar10", {"root": str(tmp_path)}).load(seed=0)
