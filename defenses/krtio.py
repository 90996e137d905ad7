"""k-RTIO: k-Randomized Transparent Image Overlays (Rajabi et al., PETS 2021, §5.2).

Per image, a key picks k overlays from a pool S and a permutation of each overlay's blocks; the
mean of the k permuted overlays O is blended with the photo:
``x' = α·x + (1 − α)·O`` (§5.2, "Perturbation Addition"), and the owner, who can recompute O
from the key and the image id, inverts it: ``x = (1/α)·(x' − (1 − α)·O)``. Machines stop
recognising the face; people still do; every photo gets its own overlay, so methods that rely on
a shared perturbation (blind source separation, median estimation) fail.

Schemes: ``pets2021`` (default; keyed AES PRF with domain separation, shrinking-pool selection,
unbiased Fisher–Yates; see :mod:`defenses.krtio_prf`) and ``legacy`` (bit-exact with the
authors' 2021 script, so its files can be recovered). Recovery never applies the script's
``repair()`` heuristic (docs/methods.md): invert, clip, round.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from defenses.krtio_prf import LegacyPrf, Pets2021Prf
from defenses.overlay_pool import OverlayPool, overlay_pool
from harness.api.contracts import Context, Defense
from harness.core.errors import PrivbenchError
from harness.core.keys import Keyring
from harness.core.params import Param

if TYPE_CHECKING:
    import torch

CHUNK_PIXELS = 1 << 19


PHOTO_ID_LABEL = b"privbench.krtio.photo-id.v1\x00"


def keyed_photo_id(keyring: Keyring, pixels: np.ndarray) -> str:
    """32 hex digits: HMAC-SHA256 under the owner's key of the label, the array's dtype and
    shape, and its pixel bytes (C order), cut to 128 bits. Deterministic (the same photo keeps
    its id and its output), different for different photos, and without the key it reveals
    nothing, not even whether two uploads show a photo the platform already holds."""
    arr = np.ascontiguousarray(pixels)
    header = f"{arr.dtype.str}|{'x'.join(map(str, arr.shape))}\x00".encode()
    mac = hmac.new(keyring.key, PHOTO_ID_LABEL + header + arr.tobytes(), hashlib.sha256)
    return mac.hexdigest()[:32]


def legacy_image_id(image_id: str) -> str:
    """The 2021 script's id: '/' followed by the file name (with extension)."""
    return "/" + Path(image_id.replace("\\", "/")).name


class KRTIO(Defense):
    """k-RTIO (PETS 2021, §5.2): k keyed, block-shuffled overlays blended at weight α.

    ``block`` is the block side in pixels (the 2021 script's ``bl_size``); ``blocks`` instead
    gives the paper's number of blocks b per overlay, and the side becomes ceil(√(H·W/b)).
    Border blocks: overlays are resized to the padded grid ceil(H/s)·s × ceil(W/s)·s and the
    result is cropped. The key comes from the run context (never from the suite).
    """

    reversible: ClassVar[bool] = True
    keyed: ClassVar[bool] = True
    family: ClassVar[str | None] = "overlay"
    version: ClassVar[str] = "1"
    params: ClassVar[dict[str, Param]] = {
        "alpha": Param(float, 0.45, "weight of the photo", low=0.0, high=1.0, low_open=True),
        "k": Param(int, 3, "overlays per image", low=1, high=255),
        "block": Param(int, 8, "block side in pixels", low=1, high=4096),
        "blocks": Param(
            int, None, "the paper's number of blocks per overlay (overrides block)", low=1
        ),
        "overlays": Param(str, "scenes", "overlay pool: 'scenes' or a folder of images"),
        "scheme": Param(str, "pets2021", "PRF construction", choices=("pets2021", "legacy")),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._pool: OverlayPool | None = None

    @property
    def pool(self) -> OverlayPool:
        """The overlay pool (legacy naming o1…oN for a folder in the legacy scheme)."""
        if self._pool is None:
            naming = "legacy" if self.scheme == "legacy" and self.overlays != "scenes" else "sorted"
            self._pool = overlay_pool(self.overlays, naming)
            if self.k > len(self._pool):
                raise PrivbenchError(
                    f"krtio: k = {self.k} but the overlay pool {self.overlays!r} "
                    f"has only {len(self._pool)} images"
                )
        return self._pool

    def dependencies(self) -> dict[str, Any]:
        return {"overlays": self.pool.fingerprint()}

    def photo_id(self, relative: Path, pixels: np.ndarray, keyring: Keyring) -> str:
        """The id of a photo file protected by ``privbench protect``, stored in its metadata.

        pets2021: :func:`keyed_photo_id` of the pixels, unique per photo whatever its name or
        folder (two photos named IMG_0001 on two memory cards get different overlays; two
        uploads sharing an overlay would cancel it: (y_a − y_b)/α = x_a − x_b). legacy: '/' + the
        file name, as the 2021 script; the caller refuses two such ids in one call."""
        if self.scheme == "legacy":
            return legacy_image_id(relative.name)
        return keyed_photo_id(keyring, pixels)

    def id_from_file_name(self, path: Path) -> str | None:
        """The id of a file without privbench metadata: in the legacy scheme the 2021 script's
        rule; the pets2021 id cannot be derived from the name (None)."""
        return legacy_image_id(path.name) if self.scheme == "legacy" else None

    def block_side(self, height: int, width: int) -> int:
        """Block side in pixels for an image of this size."""
        if self.blocks:
            return max(1, math.ceil(math.sqrt(height * width / self.blocks)))
        return self.block

    def grid(self, height: int, width: int) -> tuple[int, int, int]:
        """(block side, block rows, block columns) of the padded grid over a height × width
        image."""
        side = self.block_side(height, width)
        return side, math.ceil(height / side), math.ceil(width / side)

    def choices(
        self, keyring: Keyring, image_id: str, n_blocks: int
    ) -> tuple[list[int], np.ndarray]:
        """(overlay ids in selection order, permutations [k, n_blocks]) for one image."""
        pool_size = len(self.pool)
        if self.scheme == "legacy":
            prf = LegacyPrf(keyring.key, keyring.legacy_iv(), legacy_image_id(image_id))
            selected = prf.select(self.k, pool_size)
            perms = [prf.permutation(v, n_blocks) for v in selected]
        else:
            return Pets2021Prf.for_image(keyring.key, image_id).draw(self.k, pool_size, n_blocks)
        return selected, np.stack(perms)

    def overlay_mean(
        self,
        keyring: Keyring,
        ids: list[str],
        height: int,
        width: int,
        channels: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """O for each image: [B, C, H, W] on the 0–255 scale, the mean of the k permuted overlays
        (with an integer ``dtype``: the exact sum, not yet divided by k).

        The overlays are integers, so their sum is accumulated exactly in int32 and divided by k
        once in ``dtype``: bit-identical to the 2021 script's float64 ``(t0 + t1 + t2) / k``,
        at a fraction of the memory traffic."""
        import torch  # here, not at the top: the owner's exact numpy path runs without torch

        side, b1, b2 = self.grid(height, width)
        n = b1 * b2
        blocks = self.pool.blocks((b1, b2), side, "L" if channels == 1 else "RGB", device)
        picks = [self.choices(keyring, i, n) for i in ids]
        selected = torch.tensor([s for s, _ in picks], device=device)  # [B, k]
        perms = torch.from_numpy(np.stack([p for _, p in picks])).to(device)  # [B, k, n]
        b = len(ids)
        flat = blocks.view(len(self.pool) * n, -1)  # one row per (overlay, block)
        rows = (selected[:, :, None] * n + perms).reshape(-1)  # [B·k·n]
        layers = flat.index_select(0, rows).view(b, self.k, n, -1)
        exact = torch.int16 if self.k <= 128 else torch.int32  # k·255 must fit
        acc = layers.sum(1, dtype=exact)  # [B, n, C·s·s]
        out = acc.view(b, b1, b2, channels, side, side).permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(b, channels, b1 * side, b2 * side)[:, :, :height, :width]
        return out.to(dtype) / float(self.k) if dtype.is_floating_point else out

    # -- the harness path: float images in [0, 1] -----------------------------------------
    def _keyring(self, ctx: Context) -> Keyring:
        if ctx.keyring is None:
            raise PrivbenchError("krtio needs a key: pass --key FILE or set $PRIVBENCH_KEY")
        return ctx.keyring

    def _overlay_sum(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        import torch

        return self.overlay_mean(
            self._keyring(ctx),
            ids,
            images.shape[-2],
            images.shape[-1],
            images.shape[1],
            images.device,
            torch.int32,
        )

    def _chunks(self, images: torch.Tensor) -> list[slice]:
        # Large images in large batches are memory-bound on a CPU: work in cache-sized chunks.
        per = max(1, CHUNK_PIXELS // (images.shape[-2] * images.shape[-1]))
        per = len(images) if images.device.type == "cuda" else per
        return [slice(i, i + per) for i in range(0, len(images), per)]

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        import torch

        out = torch.empty_like(images)
        for s in self._chunks(images):
            # α·x + (1 − α)·Σ/(255·k), fused: one pass over the batch
            total = self._overlay_sum(images[s], ids[s], ctx).to(images.dtype)
            weight = (1.0 - self.alpha) / (255.0 * self.k)
            torch.add(images[s] * self.alpha, total, alpha=weight, out=out[s])
        return out

    def recover(self, protected: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        import torch

        out = torch.empty_like(protected)
        for s in self._chunks(protected):
            # (1/α)·(y − (1 − α)·Σ/(255·k)), fused
            total = self._overlay_sum(protected[s], ids[s], ctx).to(protected.dtype)
            weight = -(1.0 - self.alpha) / (255.0 * self.k)
            out[s] = (
                torch.add(protected[s], total, alpha=weight).mul_(1.0 / self.alpha).clamp_(0, 1)
            )
        return out

    # -- the exact integer path (files): uint8 or uint16 [H, W, C], C in {1, 3} -------------
    def overlay_sum_array(
        self, keyring: Keyring, image_id: str, height: int, width: int, channels: int
    ) -> np.ndarray:
        """Σ of the k permuted overlays of one image, exact: uint16 [H, W, C] (numpy only; the
        values of :meth:`overlay_mean` with an integer dtype, channel-last)."""
        side, b1, b2 = self.grid(height, width)
        n = b1 * b2
        blocks = self.pool.block_array((b1, b2), side, "L" if channels == 1 else "RGB")
        selected, perms = self.choices(keyring, image_id, n)
        flat = blocks.reshape(len(self.pool) * n, -1)  # one row per (overlay, block)
        acc = np.zeros((n, flat.shape[1]), dtype=np.uint16)  # k·255 ≤ 65,025 fits
        for v, perm in zip(selected, perms, strict=True):
            acc += flat[v * n + perm]
        out = acc.reshape(b1, b2, side, side, channels).transpose(0, 2, 1, 3, 4)
        return out.reshape(b1 * side, b2 * side, channels)[:height, :width]

    def _array_overlay(self, array: np.ndarray, image_id: str, keyring: Keyring) -> np.ndarray:
        h, w, c = array.shape
        o = self.overlay_sum_array(keyring, image_id, h, w, c).astype(np.float64) / float(self.k)
        scale = np.iinfo(array.dtype).max / 255.0
        return o if scale == 1.0 else o * scale

    def protect_array(self, array: np.ndarray, image_id: str, keyring: Keyring) -> np.ndarray:
        """Protect one integer image exactly as the 2021 script does for 8-bit RGB:
        ``round_half_even(α·I + (1 − α)·O)``; 16-bit images use overlays scaled by 257."""
        if array.dtype == np.uint8:
            return self._tabulated(array, image_id, keyring, recovering=False)
        o = self._array_overlay(array, image_id, keyring)
        y = np.round(self.alpha * array.astype(np.float64) + (1 - self.alpha) * o)
        return np.clip(y, 0, np.iinfo(array.dtype).max).astype(array.dtype)

    def recover_array(self, array: np.ndarray, image_id: str, keyring: Keyring) -> np.ndarray:
        """Invert, clip, round: ``round(clip((1/α)·(I' − (1 − α)·O)))`` (no ``repair()``)."""
        if array.dtype == np.uint8:
            return self._tabulated(array, image_id, keyring, recovering=True)
        o = self._array_overlay(array, image_id, keyring)
        x = (1 / self.alpha) * (array.astype(np.float64) - (1 - self.alpha) * o)
        return np.round(np.clip(x, 0, np.iinfo(array.dtype).max)).astype(array.dtype)

    def _tabulated(
        self, array: np.ndarray, image_id: str, keyring: Keyring, recovering: bool
    ) -> np.ndarray:
        """An 8-bit image's output depends only on (pixel, overlay sum), both integers: look it
        up in :func:`blend_table`, the float64 formula evaluated once for every pair."""
        h, w, c = array.shape
        total = self.overlay_sum_array(keyring, image_id, h, w, c)
        table = blend_table(self.alpha, self.k, recovering)
        return np.take(table.ravel(), array.astype(np.int32) * table.shape[1] + total)


@lru_cache(maxsize=32)
def blend_table(alpha: float, k: int, recovering: bool) -> np.ndarray:
    """uint8 [256, 255·k + 1] (read-only): row = pixel I (or I'), column = the overlay sum Σ.

    Each entry is the exact float64 expression of :meth:`KRTIO.protect_array` (or
    :meth:`KRTIO.recover_array`) with O = Σ/k, so a lookup is bit-identical to evaluating it
    per pixel, at a fraction of the cost."""
    pixel = np.arange(256, dtype=np.float64)[:, None]
    o = np.arange(255 * k + 1, dtype=np.float64)[None, :] / float(k)
    if recovering:
        x = (1 / alpha) * (pixel - (1 - alpha) * o)
        table = np.round(np.clip(x, 0, 255)).astype(np.uint8)
    else:
        table = np.clip(np.round(alpha * pixel + (1 - alpha) * o), 0, 255).astype(np.uint8)
    table.setflags(write=False)
    return table
