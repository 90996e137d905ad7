"""Contrast enhancement by exposure fusion (Ying, Li, Ren, Wang and Wang, CAIP 2017), the
enhancement step of Sakha's third Pixel Privacy run (MediaEval 2019).

Steps, per photo (values in [0, 1] after min-max normalisation of the whole photo):

1. Illumination: the largest channel value per pixel, t_b.
2. Smoothing: t = the edge-aware smoothing of t_b computed at half size (bicubic, then
   min-max normalised) and resized back (area): the relative-total-variation style solver,
   min_S ‖S − t_b‖² + λ Σ w·|∇S|²,
   with weights w = 1 / (|box_σ(∇t_b)|·|∇t_b| + sharpness) from circular forward
   differences, solved as one sparse linear system (λ 0.5, σ 5, sharpness 0.001).
3. Exposure ratio k ∈ [1, 7]: the one that maximises the entropy of the enhanced brightness of
   the badly exposed pixels (t < 0.5), brightness being the geometric mean of R, G and B on a
   50×50 area-resized copy (bounded scalar search).
4. Camera response g(P, k) = β·P^γ with γ = k^a, β = exp((1 − k^a)·b), a = −0.3293,
   b = 1.1258; the synthetic exposure J = g(I, k) − 0.01.
5. Fusion with weights W = t^μ (μ 0.5): out = I·W + J·(1 − W), scaled to 0-255, clipped and
   truncated (the reference port truncates; ``rounding: round`` rounds instead).

The reference Python port used ``scipy.misc.imresize``, removed from SciPy; here bicubic
resizing is OpenCV's. Photos that do not span 0-255 change by the normalisation alone.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import scipy.optimize
import scipy.signal
import scipy.sparse
import scipy.sparse.linalg
import torch

from harness.api.contracts import Context, Defense
from harness.core.params import Param
from harness.toolkit.imaging import to_tensor, to_uint8

CAMERA_A = -0.3293
CAMERA_B = 1.1258


def camera_response(
    p: np.ndarray, k: float, a: float = CAMERA_A, b: float = CAMERA_B
) -> np.ndarray:
    """g(P, k) = β·P^γ, γ = k^a, β = exp((1 − k^a)·b)."""
    gamma = k**a
    beta = np.exp((1.0 - gamma) * b)
    return beta * np.power(p, gamma)


def texture_weights(t: np.ndarray, sigma: int, sharpness: float) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical smoothing weights from circular forward differences."""
    dh = np.roll(t, -1, axis=1) - t
    dv = np.roll(t, -1, axis=0) - t
    box_h = scipy.signal.convolve2d(dh, np.ones((1, sigma)), mode="same")
    box_v = scipy.signal.convolve2d(dv, np.ones((sigma, 1)), mode="same")
    return 1.0 / (np.abs(box_h) * np.abs(dh) + sharpness), 1.0 / (
        np.abs(box_v) * np.abs(dv) + sharpness
    )


def smooth_illumination(
    t: np.ndarray, lam: float = 0.5, sigma: int = 5, sharpness: float = 0.001
) -> np.ndarray:
    """Solve (I + λ(Dₕᵀ Wₕ Dₕ + Dᵥᵀ Wᵥ Dᵥ)) S = t, with D the forward differences inside
    the image (the weights across the wrap-around edge are zero) and W the texture weights."""
    h, w = t.shape
    wh, wv = texture_weights(t, sigma, sharpness)
    wh[:, -1] = 0.0
    wv[-1, :] = 0.0
    n = h * w
    index = np.arange(n).reshape(h, w)

    def difference(axis: int) -> scipy.sparse.csr_matrix:
        nxt = np.roll(index, -1, axis=axis).ravel()
        rows = np.concatenate([np.arange(n), np.arange(n)])
        cols = np.concatenate([nxt, index.ravel()])
        vals = np.concatenate([np.ones(n), -np.ones(n)])
        return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n, n))

    dh, dv = difference(1), difference(0)
    a = (
        scipy.sparse.identity(n)
        + lam * (dh.T @ scipy.sparse.diags(wh.ravel()) @ dh)
        + lam * (dv.T @ scipy.sparse.diags(wv.ravel()) @ dv)
    )
    return scipy.sparse.linalg.spsolve(a.tocsc(), t.ravel()).reshape(h, w)


def entropy_of(values: np.ndarray) -> float:
    """Shannon entropy (bits) of ``values`` scaled to 0-255, clipped and truncated."""
    levels = np.clip(values * 255.0, 0.0, 255.0).astype(np.uint8)
    _, counts = np.unique(levels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def best_exposure(image: np.ndarray, dark: np.ndarray) -> float | None:
    """k ∈ [1, 7] maximising the entropy of the enhanced brightness of dark pixels, or None
    when no pixel is dark."""
    small = cv2.resize(image, (50, 50), interpolation=cv2.INTER_AREA).clip(min=0.0)
    lo, hi = small.min(), small.max()
    small = (small - lo) / (hi - lo) if hi > lo else np.zeros_like(small)
    brightness = np.cbrt(np.abs(small[..., 0] * small[..., 1] * small[..., 2]))
    mask = cv2.resize(dark.astype(np.float64), (50, 50), interpolation=cv2.INTER_CUBIC) >= 0.5
    y = brightness[mask]
    if y.size == 0:
        return None
    return float(scipy.optimize.fminbound(lambda k: -entropy_of(camera_response(y, k)), 1.0, 7.0))


def ying_enhance(photo: np.ndarray, mu: float = 0.5, rounding: str = "truncate") -> np.ndarray:
    """The enhanced photo, uint8 [H, W, 3], from uint8 [H, W, 3]."""
    x = photo.astype(np.float64)
    lo, hi = x.min(), x.max()
    image = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    h, w = image.shape[:2]
    t_b = image.max(axis=2)
    half = cv2.resize(
        t_b, (max(1, round(w / 2)), max(1, round(h / 2))), interpolation=cv2.INTER_CUBIC
    )
    span = half.max() - half.min()
    half = (half - half.min()) / span if span > 0 else np.zeros_like(half)
    t = cv2.resize(smooth_illumination(half), (w, h), interpolation=cv2.INTER_AREA)
    k = best_exposure(image, t < 0.5)
    synthetic = image if k is None else camera_response(image, k) - 0.01
    return fuse(image, synthetic, t, mu, rounding)


def fuse(
    image: np.ndarray, synthetic: np.ndarray, t: np.ndarray, mu: float, rounding: str = "truncate"
) -> np.ndarray:
    """uint8 of 255·(I·W + J·(1 − W)), W = t^μ, clipped to 0-255, truncated or rounded."""
    weight = np.power(np.clip(t, 0.0, None), mu)[..., None]
    out = np.clip((image * weight + synthetic * (1.0 - weight)) * 255.0, 0.0, 255.0)
    return (np.round(out) if rounding == "round" else out).astype(np.uint8)


class YingContrast(Defense):
    """Exposure-fusion contrast enhancement (Ying et al., CAIP 2017); see the module notes."""

    family: ClassVar[str | None] = "generative"  # re-renders the exposure
    params: ClassVar[dict[str, Param]] = {
        "mu": Param(float, 0.5, "fusion exponent: W = t^μ", low=0.0, high=10.0),
        "rounding": Param(
            str,
            "truncate",
            "to uint8: truncate (reference) or round",
            choices=("truncate", "round"),
        ),
    }

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        photos = to_uint8(images)
        out = np.stack([ying_enhance(p, self.mu, self.rounding) for p in photos])
        return to_tensor(out, images.device)
