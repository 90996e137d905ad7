"""A defense applied to one photo's pixels, and how close a recovery came."""

from __future__ import annotations

import math

import numpy as np

from harness.api.contracts import Context, Defense
from harness.api.photo_files import ExactArrays
from harness.core.cache import Cache
from harness.core.keys import Keyring
from harness.toolkit.photos import Photo


def apply_to_photo(
    defense: Defense, photo: Photo, image_id: str, keyring: Keyring, recovering: bool
) -> np.ndarray:
    """Protect or recover the pixels: the defense's exact integer path when it has one, else
    its float path (gray photos become RGB there)."""
    if isinstance(defense, ExactArrays):
        exact = defense.recover_array if recovering else defense.protect_array
        return exact(photo.pixels, image_id, keyring)
    # torch is imported here, not at the top: the exact paths (k-RTIO) run without it, and its
    # import is most of an owner command's start-up.
    import torch

    from harness.toolkit.imaging import to_uint8

    ctx = Context(torch.device("cpu"), 0, Cache(enabled=False), 1, keyring)
    scale = float(photo.max_value)
    x = torch.from_numpy(photo.pixels.astype(np.float32) / scale).permute(2, 0, 1)[None]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    fn = defense.recover if recovering else defense.protect
    y = fn(x, [image_id], ctx)
    if photo.pixels.dtype == np.uint8:
        return to_uint8(y)[0]
    return np.round(y.clamp(0, 1)[0].permute(1, 2, 0).numpy() * scale).astype(photo.pixels.dtype)


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """PSNR in dB of ``a`` against ``b`` (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
