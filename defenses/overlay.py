"""Naive transparent overlay: one fixed image blended with weight α.

The baseline that k-RTIO improves on (Rajabi et al., PETS 2021, §5.2, §6.2):
``x' = α·x + (1 − α)·O`` with the *same* overlay O for every photo. Because O is shared, a
platform that sees many protected photos can estimate and remove it (blind source separation,
ibid., Appendix D); k-RTIO's keyed per-image overlays are the answer to that.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from harness.api.contracts import Context, Defense
from harness.core.errors import DataError
from harness.core.files import file_digest
from harness.core.params import Param
from harness.toolkit.imaging import to_tensor
from harness.toolkit.photos import read_image_rgb
from harness.toolkit.scenes import SCENE_SOURCES, load_scene


def _resized_overlay(source: str, height: int, width: int) -> np.ndarray:
    """The overlay resized to (height, width) with PIL bicubic, as uint8 [H, W, 3]; read again
    when the file changes."""
    path = Path(source).expanduser()
    state = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
    return _resized_overlay_of(source, height, width, state)


@lru_cache(maxsize=64)
def _resized_overlay_of(source: str, height: int, width: int, state: object) -> np.ndarray:
    if source in SCENE_SOURCES:
        img = load_scene(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(
                f"overlay {source!r} is neither a bundled scene "
                f"({', '.join(SCENE_SOURCES)}) nor an image file"
            )
        img = read_image_rgb(path)
    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BICUBIC))


class NaiveOverlay(Defense):
    """Blend every photo with one fixed overlay: ``α·x + (1 − α)·O`` (Rajabi et al., PETS 2021,
    §5.2, with k = 1 and no key). Reversible by anyone who knows O and α, which is the point of the
    baseline."""

    reversible: ClassVar[bool] = True
    family: ClassVar[str | None] = "overlay"
    params: ClassVar[dict[str, Param]] = {
        "alpha": Param(float, 0.45, "weight of the photo", low=0.0, high=1.0, low_open=True),
        "overlay": Param(str, "coffee", "a bundled scene name or an image file path"),
    }

    def dependencies(self) -> dict[str, Any]:
        if self.overlay in SCENE_SOURCES:
            return {}
        path = Path(self.overlay).expanduser()
        return {"overlay": file_digest(path) if path.is_file() else "missing"}

    def _overlay(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        return to_tensor(_resized_overlay(self.overlay, h, w)[None], images.device)

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return self.alpha * images + (1.0 - self.alpha) * self._overlay(images)

    def recover(self, protected: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        out = (protected - (1.0 - self.alpha) * self._overlay(protected)) / self.alpha
        return out.clamp(0.0, 1.0)
