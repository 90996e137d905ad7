"""Per-image quality of a defense's uploaded images against the originals, and of what the
owner recovers from them (reversible defenses, optionally after a JPEG re-upload)."""

from __future__ import annotations

import numpy as np
import torch

from harness.api.contracts import Context, Defense, ImageSet, Metric, QualityMetric
from harness.engine.cache_keys import quality_parts
from harness.engine.shards import ShardedImages
from harness.toolkit.imaging import jpeg_roundtrip, quantise, to_tensor


def quality_metrics(metrics: dict[str, Metric], defense: Defense) -> dict[str, QualityMetric]:
    """The suite's quality metrics that apply to ``defense`` (recovery ones if reversible)."""
    return {
        n: m
        for n, m in metrics.items()
        if isinstance(m, QualityMetric) and (not m.recovery or defense.reversible)
    }


def quality_values(
    metrics: dict[str, Metric],
    defense: Defense,
    probe: ImageSet,
    protected: ShardedImages,
    protected_key: str,
    ctx: Context,
) -> dict[str, np.ndarray]:
    """Every applicable quality metric's per-image values by its label; cached with the
    protected images and the metrics' identities."""
    quality = quality_metrics(metrics, defense)
    if not quality:
        return {}

    def compute() -> dict[str, np.ndarray]:
        values: dict[str, list[np.ndarray]] = {n: [] for n in quality}
        for s, uploaded in protected.batches(ctx.batch_size):
            x = to_tensor(probe.images[s], ctx.device)
            y = to_tensor(uploaded, ctx.device)
            recovered: dict[int | None, torch.Tensor] = {}
            for n, m in quality.items():
                judged = y
                if m.recovery:
                    judged = _recovered(defense, y, probe.ids[s], m.jpeg_quality, recovered, ctx)
                values[n].append(m.per_image(x, judged))
        return {n: np.concatenate(v) if v else np.zeros(0) for n, v in values.items()}

    return ctx.cache.arrays("quality", quality_parts(protected_key, quality), compute)


def _recovered(
    defense: Defense,
    uploaded: torch.Tensor,
    ids: list[str],
    jpeg_quality: int | None,
    done: dict[int | None, torch.Tensor],
    ctx: Context,
) -> torch.Tensor:
    """What the owner recovers from ``uploaded`` after a re-upload at ``jpeg_quality`` (None:
    as uploaded), recovered once per quality per batch (``done``)."""
    if jpeg_quality not in done:
        again = jpeg_roundtrip(uploaded, jpeg_quality) if jpeg_quality is not None else uploaded
        done[jpeg_quality] = quantise(defense.recover(again, ids, ctx))
    return done[jpeg_quality]
