"""The bundled scenes: face-free colour photographs that ship inside scikit-image and
scikit-learn, read straight from the packages' files (no download, and no import of the packages
themselves). They are the ``scenes`` data set and the default overlay pool of transparent-overlay
defenses (Rajabi et al., PETS 2021, §5.2)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image

from harness.core.errors import DataError


def _packaged_photo(package: str, *path: str) -> Callable[[], np.ndarray]:
    """A photograph that ships inside an installed package, decoded with Pillow: the pixels of
    the package's own loader (a test checks all of them) without importing the package, which
    for scikit-learn's datasets alone costs about a second of every owner command."""

    def load() -> np.ndarray:
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"the bundled scenes need the {package} package; pip install it")
        file = Path(next(iter(spec.submodule_search_locations))).joinpath(*path)
        with Image.open(file) as img:
            return np.asarray(img.convert("RGB"))

    return load


# Face-free colour photographs that ship inside scikit-image and scikit-learn (no download).
SCENE_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "coffee": _packaged_photo("skimage", "data", "coffee.png"),
    "chelsea": _packaged_photo("skimage", "data", "chelsea.png"),
    "rocket": _packaged_photo("skimage", "data", "rocket.jpg"),
    "hubble_deep_field": _packaged_photo("skimage", "data", "hubble_deep_field.jpg"),
    "immunohistochemistry": _packaged_photo("skimage", "data", "ihc.png"),
    "retina": _packaged_photo("skimage", "data", "retina.jpg"),
    "motorcycle_left": _packaged_photo("skimage", "data", "motorcycle_left.png"),
    "motorcycle_right": _packaged_photo("skimage", "data", "motorcycle_right.png"),
    "china": _packaged_photo("sklearn", "datasets", "images", "china.jpg"),
    "flower": _packaged_photo("sklearn", "datasets", "images", "flower.jpg"),
}


@cache
def load_scene(name: str) -> np.ndarray:
    """One bundled scene as uint8 [H, W, 3] (read-only)."""
    if name not in SCENE_SOURCES:
        raise DataError(f"unknown scene {name!r}; valid scenes: {', '.join(SCENE_SOURCES)}")
    img = np.ascontiguousarray(SCENE_SOURCES[name]()[..., :3]).astype(np.uint8)
    img.setflags(write=False)
    return img
