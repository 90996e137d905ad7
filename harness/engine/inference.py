"""Running a recognizer on images: in batches of the suite's size, without autograd, at the
suite's precision."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from harness.api.contracts import Context, Recognizer
from harness.toolkit.imaging import to_tensor


def batch_slices(n: int, size: int) -> list[slice]:
    """Rows ``0..n`` in consecutive batches of at most ``size``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def autocast(device: torch.device, precision: str) -> Any:
    """Mixed precision for torch recognizers when the suite asks for it (``bf16``, ``fp16``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def predict_batch(
    recognizer: Recognizer, images: torch.Tensor, ctx: Context, precision: str
) -> np.ndarray:
    """``recognizer``'s answers for one batch already on the device, as int64."""
    with torch.inference_mode(), autocast(ctx.device, precision):
        return np.asarray(recognizer.predict(images, ctx), dtype=np.int64)


def predict_all(
    recognizer: Recognizer, images: np.ndarray, ctx: Context, precision: str
) -> np.ndarray:
    """``recognizer``'s answers for uint8 ``images``, batch by batch."""
    parts = [
        predict_batch(recognizer, to_tensor(images[s], ctx.device), ctx, precision)
        for s in batch_slices(len(images), ctx.batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
