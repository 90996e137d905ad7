"""Protecting a split's images as an upload would store them: the defense in batches, then the
upload's format (PNG, JPEG at a quality, RGB565) and uint8 quantisation; made, cached and read
a shard at a time (:class:`~harness.engine.shards.ShardedImages`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.api.contracts import Context, Defense, ImageSet
from harness.core.errors import PrivbenchError
from harness.engine.cache_keys import protected_identity, protected_parts, protected_shard_parts
from harness.engine.inference import batch_slices
from harness.engine.shards import SHARD_BATCHES, ShardedImages
from harness.toolkit.imaging import simulate_upload, to_tensor, to_uint8


@dataclass
class Defended:
    """A defense config that protected the probes: the defense, its uploaded probes and their
    identity (what the keys of everything made from them name)."""

    defense: Defense
    protected: ShardedImages
    protected_key: str


def protect_rows(
    defense: Defense, images: ImageSet, rows: slice, upload: dict[str, Any], ctx: Context
) -> np.ndarray:
    """Protect ``images[rows]`` in batches and quantise them like an upload: uint8
    [rows, H, W, 3]."""
    pixels, ids = images.images[rows], images.ids[rows]
    out = np.empty((len(pixels), *pixels.shape[1:3], 3), dtype=np.uint8)
    for s in batch_slices(len(pixels), ctx.batch_size):
        x = to_tensor(pixels[s], ctx.device)
        protected = defense.protect(x, ids[s], ctx)
        if protected.shape != x.shape:
            raise PrivbenchError(
                f"defense returned shape {tuple(protected.shape)} for input "
                f"{tuple(x.shape)}; protect() must keep the shape"
            )
        out[s] = to_uint8(simulate_upload(protected.detach(), upload["format"], upload["quality"]))
    return out


def uploaded(
    defense: Defense,
    images: ImageSet,
    role: str,
    split_fingerprint: str,
    upload: dict[str, Any],
    ctx: Context,
) -> tuple[ShardedImages, str]:
    """``images`` (the split's ``role``) after the defense and the upload, made and cached a
    shard at a time when first read; and the identity of the whole result. The shards are
    whole batches, so every batch the defense sees is the one it would see unsharded."""
    parts = protected_parts(defense, split_fingerprint, role, ctx, upload)
    cache = ctx.cache

    def load(rows: slice) -> np.ndarray:
        return cache.arrays(
            "protected",
            protected_shard_parts(parts, rows),
            lambda: {"protected": protect_rows(defense, images, rows, upload, ctx)},
        )["protected"]

    def stored(rows: slice) -> bool:
        key = cache.key("protected", protected_shard_parts(parts, rows))
        return cache.contains("protected", key)

    result = ShardedImages(
        len(images), ctx.batch_size * SHARD_BATCHES, load, stored, keep=not cache.enabled
    )
    result.make()
    return result, protected_identity(parts)
