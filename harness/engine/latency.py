"""Protect latency: a defense timed on fresh work, cached per machine and timing protocol
(docs/architecture.md, "Latency")."""

from __future__ import annotations

import math
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from harness.api.contracts import Context, Defense, ImageSet
from harness.core.cache import Cache
from harness.core.provenance import host_identity
from harness.engine.cache_keys import timing_parts
from harness.toolkit.imaging import to_tensor

# Latency: one warm-up batch, then fresh batches until this many are timed (6 batches give an
# order-statistic interval of at least 95% coverage) or the budget is spent (at least one).
TIMED_BATCHES = 6
TIMING_BUDGET_S = 10.0
TIMING_PROTOCOL = {
    "version": 2,
    "warmup_batches": 1,
    "timed_batches": TIMED_BATCHES,
    "budget_s": TIMING_BUDGET_S,
    "ids": "fresh per batch",
    "cache": "disabled inside the timer",
}
# --smoke: two timed batches of two images still take every step of the timing path
SMOKE_TIMING = {"timed_batches": 2, "budget_s": 2.0, "batch_images": 2}


def timing_protocol(smoke: bool = False) -> dict[str, Any]:
    """The latency protocol of a run (a smoke run times two batches only)."""
    return {**TIMING_PROTOCOL, **SMOKE_TIMING} if smoke else TIMING_PROTOCOL


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_protect(
    defense: Defense, probe: ImageSet, ctx: Context, smoke: bool = False
) -> dict[str, np.ndarray]:
    """Protect latency in ms per image, measured on fresh work only.

    Batches of ``batch_size`` probes cycle through the probe set under ids never used
    before (so nothing a defense remembers per id is reused), with the disk cache disabled
    (so no cache I/O is timed). One warm-up batch, then timed batches until TIMED_BATCHES
    or TIMING_BUDGET_S; CUDA is synchronised before each clock read."""
    device = ctx.device
    fresh = Context(device, ctx.seed, Cache(enabled=False), ctx.batch_size, ctx.keyring)
    protocol = timing_protocol(smoke)
    n = len(probe)
    b = min(protocol.get("batch_images", ctx.batch_size), n)
    nonce = uuid.uuid4().hex[:12]
    timings: list[float] = []
    budget_end = math.inf
    for j in range(protocol["timed_batches"] + 1):
        idx = [(j * b + i) % n for i in range(b)]
        x = to_tensor(probe.images[idx], device)
        ids = [f"{probe.ids[i]}#timing-{nonce}-{j}" for i in idx]
        _sync(device)
        t0 = time.perf_counter()
        defense.protect(x, ids, fresh)
        _sync(device)
        elapsed = time.perf_counter() - t0
        if j == 0:
            budget_end = time.perf_counter() + protocol["budget_s"]
            continue
        timings.append(1000.0 * elapsed / b)
        if time.perf_counter() >= budget_end:
            break
    return {
        "ms_per_image": np.asarray(timings),
        "batch_images": np.int64(b),
        "measured_at": np.str_(datetime.now(timezone.utc).isoformat(timespec="seconds")),
    }


def protect_timing(
    defense: Defense, probe: ImageSet, protected_key: str, ctx: Context, smoke: bool
) -> dict[str, Any]:
    """The defense's protect latency on this host (measured, or read from the cache) with
    when and where it was measured: a defense's ``timing`` records."""
    host = host_identity(ctx.device)
    measured_now: list[bool] = []

    def measure() -> dict[str, np.ndarray]:
        measured_now.append(True)
        return time_protect(defense, probe, ctx, smoke)

    key = timing_parts(protected_key, host, timing_protocol(smoke))
    stored = ctx.cache.arrays("timing", key, measure)
    return {
        "ms_per_image": stored["ms_per_image"],
        "batch_images": int(stored["batch_images"]),
        "measured_at": str(stored["measured_at"]),
        "host": host,
        "cached": not measured_now,
    }
