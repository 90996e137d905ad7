"""Behaviour of the first defenses and counter-attacks, and the image helpers they share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api.registry import ATTACKS, DEFENSES
from harness.toolkit.imaging import (
    jpeg_roundtrip,
    pixelate,
    rgb_to_gray,
    simulate_upload,
    to_tensor,
    to_uint8,
)


def test_to_tensor_replicates_gray_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (2, 5, 7, 1), dtype=np.uint8)
    t = to_tensor(gray)
    assert t.shape == (2, 3, 5, 7) and torch.equal(t[:, 0], t[:, 2])
    assert np.array_equal(to_uint8(t)[..., 0], gray[..., 0])


def test_png_upload_is_the_uint8_grid_and_jpeg_is_lossy() -> None:
    x = torch.rand(2, 3, 16, 16)
    png = simulate_upload(x, "png", 95)
    # float32(k/255)·255 rounds back to k exactly for every level k ≤ 255 (IEEE arithmetic)
    assert torch.equal(png * 255, torch.round(png * 255))
    # half a level, plus the float32 roundings of x·255 (≤ 255u, i.e. u after /255) and of
    # the division (≤ u): 2u = 1.2e-7 (the earlier 1e-7 was below it)
    assert (png - x).abs().max() <= 0.5 / 255 + 2 * 2.0**-24
    jpg = jpeg_roundtrip(png, 50)
    assert jpg.shape == png.shape and not torch.equal(jpg, png)


def test_none_defense_is_identity(ctx) -> None:
    x = torch.rand(2, 3, 9, 9)
    assert torch.equal(DEFENSES.create("none").protect(x, ["a", "b"], ctx), x)


def test_pixelate_exact_means_including_partial_border_cells() -> None:
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5).expand(1, 3, 5, 5) / 24
    y = pixelate(x, 2)
    # float32 means of ≤ 4 values ≤ 1: ≤ γ_5 ≈ 3e-7 relative, inside approx's rel = 1e-6
    # top-left 2×2 cell holds 0, 1, 5, 6 → mean 3; the last column is a 1-wide cell of (4, 9).
    assert y[0, 0, 0, 0].item() == pytest.approx(3 / 24)
    assert y[0, 0, 1, 4].item() == pytest.approx(6.5 / 24)
    assert y[0, 0, 4, 4].item() == pytest.approx(24 / 24)
    assert y.shape == x.shape


def test_naive_overlay_blend_and_exact_recovery(ctx) -> None:
    d = DEFENSES.create("naive-overlay", {"alpha": 0.5, "overlay": "coffee"})
    x = torch.rand(3, 3, 20, 30)
    y = d.protect(x, ["a", "b", "c"], ctx)
    overlay = (y - 0.5 * x) / 0.5
    # y = 0.5·x + 0.5·o rounds once (≤ u on values ≤ 1; ·0.5 and /0.5 are exact), y − 0.5·x
    # once more (≤ u/2): each overlay is within 3u of o, two within 6u of each other, and
    # the recovery (y − 0.5·o)/0.5 within 3u of x (u = 2^-24)
    u = 2.0**-24
    # the same overlay on every image: the baseline's weakness
    assert torch.allclose(overlay[0], overlay[1], rtol=0, atol=6 * u)
    assert torch.allclose(d.recover(y, ["a", "b", "c"], ctx), x, rtol=0, atol=3 * u)


def test_gaussian_blur_defense_smooths_and_keeps_mean(ctx) -> None:
    x = torch.rand(1, 3, 32, 32)
    y = DEFENSES.create("gaussian-blur", {"sigma": 2.0}).protect(x, ["a"], ctx)
    assert y.std() < 0.5 * x.std()  # σ = 2 on white noise leaves ~0.14 of its spread
    # The kernel sums to 1; only reflect padding re-weights the border, moving the mean of
    # uniform noise by ~1e-3 at most (2.4e-4 here; float32 adds ~1e-7): 0.02 tests the design
    assert y.mean().item() == pytest.approx(x.mean().item(), abs=0.02)


def test_median_filter_removes_salt_noise(ctx) -> None:
    x = torch.full((1, 3, 9, 9), 0.5)
    noisy = x.clone()
    noisy[0, :, 4, 4] = 1.0
    out = ATTACKS.create("median-filter", {"kernel_size": 3}).transform(noisy, ctx)
    assert torch.equal(out, x)


def test_grayscale_uses_bt601_weights(ctx) -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0
    out = ATTACKS.create("grayscale").transform(x, ctx)
    # 1·0.299 + 0·0.587 + 0·0.114 in float32 is float32(0.299) exactly
    assert torch.equal(out, torch.full_like(out, 0.299))
    # on a random image, every channel is the BT.601 luma computed independently
    rgb = np.random.default_rng(0).random((5, 7, 3))
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    gray = rgb_to_gray(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].numpy()
    # both float64 3-term dot products with weights summing to 1 on values ≤ 1: each within
    # γ_3 = 3·2^-53 ≈ 3.3e-16 of the exact luma, so within 6.7e-16 of each other
    for channel in gray:
        np.testing.assert_allclose(channel, luma, rtol=0, atol=1e-15)


def test_jpeg_counter_attack_quality_matters(ctx) -> None:
    from skimage import data

    x = to_tensor(data.astronaut()[None, :64, :64])
    low = ATTACKS.create("jpeg", {"quality": 10}).transform(x, ctx)
    high = ATTACKS.create("jpeg", {"quality": 95}).transform(x, ctx)
    assert (high - x).abs().mean() < (low - x).abs().mean()


def test_deconvolution_with_the_defenses_sigma_undoes_most_of_its_blur(ctx) -> None:
    from skimage.data import lfw_subset

    faces = torch.from_numpy(np.repeat(lfw_subset()[:16, None].astype(np.float32), 3, 1))
    blur = DEFENSES.create("gaussian-blur", {"sigma": 1.5})
    uploaded = simulate_upload(blur.protect(faces, [], ctx), "png", 95)

    def error(sigma: float) -> float:
        attack = ATTACKS.create("deconvolve", {"sigma": sigma, "iterations": 30})
        return float((attack.transform(uploaded, ctx) - faces).abs().mean())

    # Measured on these 16 real faces: 0.065 blurred, 0.047 with the right σ, 0.063 and
    # 0.062 with σ 0.5 and 2.0; knowing the parameter is what makes it work
    blurred = float((uploaded - faces).abs().mean())
    right = error(1.5)
    assert right < 0.8 * blurred
    assert right < error(0.5) and right < error(2.0)
