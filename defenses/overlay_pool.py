"""The pool S of overlay images a transparent-overlay defense draws from (Rajabi et al., PETS
2021, §5.2).

Sources: the bundled face-free ``scenes`` (default), a folder of images (sorted by name), or the
2021 k-RTIO script's folder layout (``legacy`` naming: N = number of image files, overlay v is
the file ``o{v+1}.*``; a missing one is an error naming it, where the script quit silently with
exit status 0). Resized overlays are cut into blocks once per (grid, block, channels, device)
and kept, so protecting a batch is one gather.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from harness.core.errors import DataError
from harness.core.files import file_digest
from harness.toolkit.photos import IMAGE_SUFFIXES
from harness.toolkit.scenes import SCENE_SOURCES, load_scene

if TYPE_CHECKING:
    import torch

# The 2021 script counts every file whose path contains one of these (KRTIO_UEP.py list_files).
_LEGACY_MARKERS = (".jpeg", ".jpg", ".png", ".JPEG", ".JPG", ".PNG")


class OverlayPool:
    """An ordered set of overlay images; index v is the overlay's global id."""

    def __init__(self, source: str = "scenes", naming: str = "sorted") -> None:
        self.source, self.naming = source, naming
        if source == "scenes":
            self.names = list(SCENE_SOURCES)
            self._paths: list[Path | None] = [None] * len(self.names)
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise DataError(
                    f"overlay folder {folder} does not exist (use 'scenes' for the "
                    "bundled photos, or a folder of face-free images)"
                )
            if naming == "legacy":
                count = sum(
                    1
                    for f in folder.iterdir()
                    if f.is_file() and any(m in f.name for m in _LEGACY_MARKERS)
                )
                self.names = [f"o{v + 1}" for v in range(count)]
                self._paths = [self._legacy_file(folder, v) for v in range(count)]
            else:
                files = sorted(
                    f
                    for f in folder.iterdir()
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                )
                self.names = [f.name for f in files]
                self._paths = list(files)
            if not self.names:
                raise DataError(f"overlay folder {folder} holds no images")
        self._block_arrays: dict[tuple[int, int, int, str], np.ndarray] = {}
        self._blocks: dict[tuple[int, int, int, str, str], torch.Tensor] = {}

    @staticmethod
    def _legacy_file(folder: Path, v: int) -> Path | None:
        matches = sorted(folder.glob(f"o{v + 1}.*"))
        return matches[0] if matches else None

    def __len__(self) -> int:
        return len(self.names)

    def fingerprint(self) -> str:
        """sha256 over names and contents: changes whenever any overlay does."""
        h = hashlib.sha256(f"{self.source}|{self.naming}".encode())
        for name, path in zip(self.names, self._paths, strict=True):
            h.update(f"\0{name}\0".encode())
            if path is not None:
                h.update(file_digest(path).encode())
        return h.hexdigest()

    def image(self, v: int) -> Image.Image:
        """Overlay v as a PIL image (as the 2021 script opens it)."""
        if self.source == "scenes":
            return Image.fromarray(load_scene(self.names[v]))
        path = self._paths[v]
        if path is None:
            raise DataError(
                f"overlay {self.names[v]}.* is missing from {self.source}: the pool "
                f"counts {len(self)} image files, so ids o1…o{len(self)} must all "
                "exist (the 2021 script aborted here with exit status 0)"
            )
        return Image.open(path)

    def resized(self, v: int, width: int, height: int, mode: str) -> np.ndarray:
        """Overlay v resized with PIL's bicubic filter to width × height, in ``mode`` (RGB or L)."""
        return _resized(self, v, width, height, mode)

    def block_array(self, grid: tuple[int, int], side: int, mode: str) -> np.ndarray:
        """uint8 [N, b1·b2, side, side, C] (read-only): every overlay resized to the padded
        grid and cut into row-major blocks, pixels channel-last."""
        b1, b2 = grid
        c = 1 if mode == "L" else 3
        key = (b1, b2, side, mode)
        if key not in self._block_arrays:
            arrays = np.stack(
                [
                    self.resized(v, b2 * side, b1 * side, mode).reshape(b1 * side, b2 * side, c)
                    for v in range(len(self))
                ]
            )
            cut = arrays.reshape(len(self), b1, side, b2, side, c).transpose(0, 1, 3, 2, 4, 5)
            blocks = np.ascontiguousarray(cut).reshape(len(self), b1 * b2, side, side, c)
            blocks.setflags(write=False)
            self._block_arrays[key] = blocks
        return self._block_arrays[key]

    def blocks(
        self, grid: tuple[int, int], side: int, mode: str, device: torch.device
    ) -> torch.Tensor:
        """uint8 [N, b1·b2, C, side, side]: :meth:`block_array` channel-first, on ``device``."""
        import torch  # not at the top: the owner's exact numpy path runs without torch

        key = (*grid, side, mode, str(device))
        if key not in self._blocks:
            arrays = torch.from_numpy(self.block_array(grid, side, mode).copy())
            self._blocks[key] = arrays.permute(0, 1, 4, 2, 3).contiguous().to(device)
        return self._blocks[key]


@lru_cache(maxsize=256)
def _resized(pool: OverlayPool, v: int, width: int, height: int, mode: str) -> np.ndarray:
    with pool.image(v) as img:
        out = img.resize((width, height), Image.Resampling.BICUBIC).convert("RGB")
    if mode == "L":
        out = out.convert("L")
    return np.asarray(out)


def overlay_pool(source: str, naming: str) -> OverlayPool:
    """A shared pool per (source, naming), so its resized blocks are cut only once; a new one
    when a file of the folder changes (name, size or modification time)."""
    return _shared_pool(source, naming, _folder_state(source))


def _folder_state(source: str) -> tuple[tuple[str, int, int], ...]:
    folder = Path(source).expanduser()
    if source == "scenes" or not folder.is_dir():
        return ()
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir()))


@lru_cache(maxsize=16)
def _shared_pool(source: str, naming: str, state: tuple) -> OverlayPool:
    return OverlayPool(source, naming)
