from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.api.registry import DATASETS
from harness.core.errors import DataError


def test_lfw_subset_linking_and_detection_split() -> None:
    split = DATASETS.create("lfw-subset").load(seed=0)
    assert split.protocol == "near-duplicate-linking+detection"
    assert split.probe.images.shape == (100, 25, 25, 1) and split.probe.images.dtype == np.uint8
    assert split.probe.ids[0] == "lfw-000" and split.probe.ids[-1] == "lfw-099"
    assert list(split.probe.labels) == list(range(100))
    assert split.enroll.fingerprint() == split.probe.fingerprint()
    assert split.negatives is not None and len(split.negatives) == 100
    assert split.fingerprint() == DATASETS.create("lfw-subset").load(seed=0).fingerprint()


def test_lfw_subset_classifiers_train_on_altered_views_never_on_the_probes() -> None:
    split = DATASETS.create("lfw-subset", {"fit_views": 5}).load(seed=0)
    assert len(split.fit) == 500 and split.fit.ids[:2] == ["lfw-000~v0", "lfw-000~v1"]
    np.testing.assert_array_equal(split.fit.labels, np.repeat(np.arange(100), 5))
    probes = {img.tobytes() for img in split.probe.images}
    assert not any(img.tobytes() in probes for img in split.fit.images)
    # altered enough that no view is a near copy of its original (mean grey-level difference)
    originals = split.probe.images[np.repeat(np.arange(100), 5)].astype(int)
    assert np.abs(split.fit.images.astype(int) - originals).mean(axis=(1, 2, 3)).min() > 3
    again = DATASETS.create("lfw-subset", {"fit_views": 5}).load(seed=0)
    assert again.fingerprint() == split.fingerprint()


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
            _save(tmp_path / person / f"{i}.png", (12, 12), 40 * i + (person == "bob"))
    split = DATASETS.create("folder", {"root": str(tmp_path)}).load(seed=0)
    assert split.protocol == "recognition+classification"
    assert len(split.fit) == 4 and len(split.probe) == 4
    assert all(i.split("/")[0] in ("alice", "bob") for i in split.probe.ids)
    assert set(split.probe.labels) == {0, 1}
    # recognition: the gallery holds other photos of each person than the probes
    assert split.enroll.ids == split.fit.ids and not set(split.enroll.ids) & set(split.probe.ids)
    linking = DATASETS.create("folder", {"root": str(tmp_path), "protocol": "linking"}).load(0)
    assert linking.protocol == "near-duplicate-linking"
    assert linking.enroll.ids == linking.probe.ids


def test_folder_recognition_drops_probes_that_are_copies_of_a_gallery_photo(
    tmp_path: Path,
) -> None:
    for i in range(4):
        _save(tmp_path / "alice" / f"{i}.png", (12, 12), 40 * i)
    # the same photo under two names: wherever the split puts them, a probe is never a copy
    _save(tmp_path / "alice" / "4.png", (12, 12), 0)
    for seed in range(6):
        split = DATASETS.create("folder", {"root": str(tmp_path)}).load(seed=seed)
        gallery = {img.tobytes() for img in split.enroll.images}
        assert not any(img.tobytes() in gallery for img in split.probe.images)
        assert len(split.probe) + split.dropped + len(split.fit) == 5


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


def test_bundled_scenes_are_read_as_their_packages_load_them() -> None:
    """The overlay scenes are decoded straight from the package files (no import of
    scikit-learn's datasets); the pixels are those of the packages' own loaders."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    from harness.toolkit.scenes import SCENE_SOURCES

    expected = {
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "hubble_deep_field": data.hubble_deep_field(),
        "immunohistochemistry": data.immunohistochemistry(),
        "retina": data.retina(),
        "motorcycle_left": data.stereo_motorcycle()[0],
        "motorcycle_right": data.stereo_motorcycle()[1],
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
    }
    assert set(expected) == set(SCENE_SOURCES)
    for name, pixels in expected.items():
        assert np.array_equal(SCENE_SOURCES[name](), pixels[..., :3]), name


def test_enlarged_digits_are_the_same_bytes_on_every_kernel_path() -> None:
    """The bicubic enlargement runs in float64, so torch's AVX-512, AVX2 and portable kernels
    round every pixel to the same level (in float32 a few of 460k pixels differed)."""
    code = (
        "import hashlib; from harness.api.registry import DATASETS; "
        "s = DATASETS.create('digits', {'size': 32}).load(0); "
        "print(hashlib.sha256(s.fit.images.tobytes() + s.probe.images.tobytes()).hexdigest())"
    )
    digests = set()
    for capability in ("default", "avx2"):
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        digests.add(out.stdout.strip())
    native = DATASETS.create("digits", {"size": 32}).load(0)
    digests.add(
        hashlib.sha256(native.fit.images.tobytes() + native.probe.images.tobytes()).hexdigest()
    )
    assert len(digests) == 1


def test_cifar10_looks_under_privbench_home_unless_given_a_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIVBENCH_HOME", str(tmp_path))
    cls = DATASETS.get("cifar10")
    (lacking,) = cls.missing(DATASETS.resolve("cifar10", {}))
    assert f"CIFAR-10 not found under {tmp_path / 'data'}" in lacking
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)
    assert cls.missing(DATASETS.resolve("cifar10", {})) == []
    assert cls.missing(DATASETS.resolve("cifar10", {"root": str(tmp_path / "elsewhere")}))
