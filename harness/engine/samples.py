"""The report's sample images: a few seeded probes, shown clean, protected, recovered (for a
reversible defense) and after each counter-attack. Cached apart from the protected images, so a
re-run reads no shard of the probes for them."""

from __future__ import annotations

import numpy as np

from harness.api.contracts import Context, Defense
from harness.engine.cache_keys import sample_parts
from harness.engine.shards import ShardedImages
from harness.runs.folder import slug
from harness.toolkit.imaging import quantise, to_tensor, to_uint8

SAMPLE_IMAGES = 4  # seeded sample probes whose images the report shows


def draw_samples(ctx: Context, n_probes: int) -> np.ndarray:
    """The probe rows the report shows, sorted (seeded by the run)."""
    k = min(SAMPLE_IMAGES, n_probes)
    return np.sort(ctx.rng("report", "samples").choice(n_probes, k, False))


def defense_samples(
    label: str,
    defense: Defense,
    protected: ShardedImages,
    protected_key: str,
    idx: np.ndarray,
    ids: list[str],
    ctx: Context,
) -> dict[str, np.ndarray]:
    """The sample images of the defense config ``label`` by their file in the run folder:
    uploaded, and recovered (cached). ``idx`` are the sample rows, ``ids`` the probes' ids."""
    if not len(idx):
        return {}
    folder = f"samples/{slug(label)}"
    parts = sample_parts(protected_key, idx)
    rows = ctx.cache.arrays("protected-samples", parts, lambda: {"images": protected.take(idx)})[
        "images"
    ]
    samples = {f"{folder}/protected": rows}
    if defense.reversible:
        sample_ids = [ids[i] for i in idx]

        def recover() -> dict[str, np.ndarray]:
            recovered = defense.recover(to_tensor(rows, ctx.device), sample_ids, ctx)
            return {"images": to_uint8(quantise(recovered))}

        stored = ctx.cache.arrays("recovered-samples", parts, recover)
        samples[f"{folder}/recovered"] = stored["images"]
    return samples
