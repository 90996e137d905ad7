"""Rotations and translations of image batches, as the spatial attack of Engstrom, Tran,
Tsipras, Schmidt and Madry (ICML 2019, §3) defines them: rotate about the image centre, then
translate, bilinear interpolation, zeros where nothing maps, same size as the input.

Angles are in degrees, counter-clockwise as the image is displayed (y pointing down);
translations are fractions of the width (x, to the right) and height (y, downward).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def rotate_translate(
    images: torch.Tensor, angle_deg: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor
) -> torch.Tensor:
    """Each image [B, C, H, W] rotated by ``angle_deg[b]`` then shifted by
    (``tx[b]``·W, ``ty[b]``·H) pixels. Output pixel p samples the input at
    R(−θ)(p − c − t) + c, with c the centre ((W−1)/2, (H−1)/2)."""
    b, _, h, w = images.shape
    dev, dt = images.device, torch.float64
    theta = torch.as_tensor(angle_deg, dtype=dt, device=dev).reshape(b) * (math.pi / 180.0)
    shift_x = torch.as_tensor(tx, dtype=dt, device=dev).reshape(b) * w
    shift_y = torch.as_tensor(ty, dtype=dt, device=dev).reshape(b) * h
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dt, device=dev), torch.arange(w, dtype=dt, device=dev), indexing="ij"
    )
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    qx = xs[None] - cx - shift_x[:, None, None]
    qy = ys[None] - cy - shift_y[:, None, None]
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    # The forward map on screen (y down) is x' = x·cosθ + y·sinθ, y' = −x·sinθ + y·cosθ;
    # sampling uses its inverse.
    src_x = qx * cos - qy * sin + cx
    src_y = qx * sin + qy * cos + cy
    grid = torch.stack(
        [2.0 * src_x / max(w - 1, 1) - 1.0, 2.0 * src_y / max(h - 1, 1) - 1.0], dim=-1
    )
    out = F.grid_sample(
        images.double(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out.to(images.dtype)


def transform_grid(
    max_translation: float, max_rotation: float, granularity: tuple[int, int, int]
) -> np.ndarray:
    """Every (tx, ty, θ) of ``linspace(−limit, limit, g)`` per dimension: [gx·gy·gθ, 3]."""
    gx, gy, gr = granularity
    txs = np.linspace(-max_translation, max_translation, gx)
    tys = np.linspace(-max_translation, max_translation, gy)
    rot = np.linspace(-max_rotation, max_rotation, gr)
    mesh = np.stack(np.meshgrid(txs, tys, rot, indexing="ij"), axis=-1)
    return mesh.reshape(-1, 3)


def random_transforms(
    rng: np.random.Generator, n: int, max_translation: float, max_rotation: float
) -> np.ndarray:
    """``n`` draws of (tx, ty, θ), each uniform in its limits: [n, 3]."""
    t = rng.uniform(-max_translation, max_translation, size=(n, 2))
    r = rng.uniform(-max_rotation, max_rotation, size=(n, 1))
    return np.concatenate([t, r], axis=1)
