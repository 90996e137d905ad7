from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from harness.api.records import CellRecords, DefenseRecords
from harness.metrics.cost import Latency
from harness.metrics.quality import PSNR, SSIM
from harness.metrics.recognition import DetectionRate, FoolingRate, RecognitionRate
from harness.metrics.stats import mean_interval, median_interval, wilson_interval


def test_wilson_interval_hand_computed() -> None:
    # p = 0.5, n = 10: centre 0.5, half-width z·sqrt(0.025 + z²/400)/(1 + z²/10)
    z = 1.959963984540054
    half = z * math.sqrt(0.025 + z * z / 400) / (1 + z * z / 10)
    lo, hi = wilson_interval(5, 10)
    # float64, a dozen operations on values ≤ 4: rounding ≲ 12·4·2^-53 ≈ 5e-15 ≪ 1e-12
    assert lo == pytest.approx(0.5 - half, abs=1e-12) and hi == pytest.approx(0.5 + half, abs=1e-12)
    # the textbook prints 4 decimals: within half a unit of the last place
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=5e-5)
    # 0 of 100: the upper bound is z²/(n + z²)
    lo, hi = wilson_interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(z * z / (100 + z * z), abs=1e-12)
    assert math.isnan(wilson_interval(0, 0)[0])


def _records(labels, clean, protected, kind="identifier") -> CellRecords:
    labels, clean, protected = map(np.asarray, (labels, clean, protected))
    return CellRecords(
        [f"i{i}" for i in range(len(labels))],
        labels,
        clean,
        protected,
        clean == labels if kind != "detector" else clean != -1,
        protected == labels if kind != "detector" else protected != -1,
        kind,
    )


def test_fooling_rate_counts_only_probes_recognised_when_clean() -> None:
    # 5 probes; clean: 4 right (index 4 wrong); protected: indexes 0 and 1 now wrong, 4 right.
    r = _records([0, 1, 2, 3, 4], [0, 1, 2, 3, 9], [7, 8, 2, 3, 4])
    v = FoolingRate().compute(r)
    assert (v.value, v.n) == (0.5, 4)
    # the same float64 function of the same counts: equal up to its own ~1e-16 rounding
    assert (v.ci_low, v.ci_high) == pytest.approx(wilson_interval(2, 4), abs=1e-12)
    rr = RecognitionRate().compute(r)
    assert (rr.value, rr.n) == (0.6, 5)


def test_detection_rate_and_fooling_for_detectors() -> None:
    r = _records([0, 1, 2, 3], [1, 1, 1, -1], [1, -1, -1, 2], kind="detector")
    assert FoolingRate().compute(r).value == pytest.approx(2 / 3, abs=1e-15)  # one division
    assert DetectionRate().compute(r).value == 0.5


def test_fooling_rate_with_no_eligible_probe_is_undefined() -> None:
    v = FoolingRate().compute(_records([0, 1], [5, 5], [0, 1]))
    assert v.value is None and v.n == 0


def _ssim_error_bound(x: torch.Tensor, y: torch.Tensor, rho: float, u: float) -> np.ndarray:
    """Per image, a bound on how far an evaluation of SSIM (the 11-tap σ = 1.5 Gaussian
    window, K = (0.01, 0.03), the formula as pytorch_msssim writes it) can be from the exact
    value when each Gaussian filtering of non-negative values errs by ≤ ρ relative and every
    other operation rounds by ≤ u. From the exact local statistics, computed in float64:
    Δμ ≤ ρ·μ; Δσ² ≤ (ρ + 2u)·G*(x²) + 2μ·Δμ (G*(x²) − μ² and its roundings); likewise σ_xy;
    then the luminance term A and the contrast-structure term B, each a quotient with a
    denominator ≥ C1 or C2, move by their first-order changes plus 4u, SSIM = A·B by
    |ΔA|·|B| + |A|·|ΔB| + u, and the mean over N map values by γ_N more."""
    import torch.nn.functional as F

    c1, c2 = 0.01**2, 0.03**2
    t = torch.arange(11, dtype=torch.float64) - 5
    w = torch.exp(-(t**2) / (2 * 1.5**2))
    w = (w / w.sum()).view(1, 1, 1, 11).expand(x.shape[1], 1, 1, 11)

    def g(v: torch.Tensor) -> torch.Tensor:
        v = F.conv2d(v, w, groups=v.shape[1])
        return F.conv2d(v, w.transpose(2, 3), groups=v.shape[1])

    x, y = x.double(), y.double()
    mx, my, gxx, gyy, gxy = g(x), g(y), g(x * x), g(y * y), g(x * y)
    sx, sy, sxy = gxx - mx**2, gyy - my**2, gxy - mx * my
    dmx, dmy = rho * mx, rho * my
    dsx = (rho + 2 * u) * gxx + 2 * mx * dmx
    dsy = (rho + 2 * u) * gyy + 2 * my * dmy
    dsxy = (rho + 2 * u) * gxy + mx * dmy + my * dmx
    da_denominator = mx**2 + my**2 + c1
    a = (2 * mx * my + c1) / da_denominator
    da = (2 * (dmx * my + mx * dmy) + 2 * a * (mx * dmx + my * dmy)) / da_denominator + 4 * u * a
    db_denominator = sx + sy + c2
    b = (2 * sxy + c2) / db_denominator
    db = (2 * dsxy + b.abs() * (dsx + dsy)) / db_denominator + 4 * u * b.abs()
    ds = da * b.abs() + a * db + u
    n = ds[0].numel()
    return (ds.flatten(1).mean(1) + n * u / (1 - n * u) * (a * b).abs().flatten(1).mean(1)).numpy()


def test_ssim_equals_skimage_wang2004(monkeypatch) -> None:
    import pytorch_msssim
    from skimage import data

    img = data.astronaut()[100:228, 150:278]
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(
        img / 255.0,
        noisy / 255.0,
        channel_axis=-1,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    y = torch.from_numpy(noisy).permute(2, 0, 1)[None].float() / 255
    ours = SSIM().per_image(x, y)[0]
    # The settings, in float64: SSIM's own call with pytorch_msssim evaluating in float64.
    # Its window weights are float32 (exp, sum, division: ≤ 3u32 each, two passes: ρ = 6u32
    # plus float64 sums); skimage's are exact and its arithmetic float64.
    u32, u64 = 2.0**-24, 2.0**-53
    real = pytorch_msssim.ssim
    monkeypatch.setattr(
        pytorch_msssim, "ssim", lambda a, b, **kw: real(a.double(), b.double(), **kw)
    )
    in_float64 = SSIM().per_image(x, y)[0]
    monkeypatch.undo()
    bound64 = _ssim_error_bound(x, y, 6 * u32 + 24 * u64, u64)[0]
    bound_skimage = _ssim_error_bound(x, y, 24 * u64, u64)[0]
    assert in_float64 == pytest.approx(ref, abs=bound64 + bound_skimage)
    # The float32 evaluation: two 11-tap passes (γ_11 each) with float32 weights (3u each)
    # and one more rounding for x·x: ρ = 2·γ_14 + u
    rho32 = 2 * 14 * u32 / (1 - 14 * u32) + u32
    assert ours == pytest.approx(in_float64, abs=_ssim_error_bound(x, y, rho32, u32)[0] + bound64)
    assert _ssim_error_bound(x, y, rho32, u32)[0] < 0.01  # the bound still says something
    same = _ssim_error_bound(x, x, rho32, u32)[0]
    assert SSIM().per_image(x, x)[0] == pytest.approx(1.0, abs=same)


def test_ssim_is_undefined_below_the_window() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert np.isnan(SSIM().per_image(x, x)).all()
    v = SSIM().compute(
        DefenseRecords(["a", "b"], {"ssim": np.array([np.nan, np.nan])}, image_size=(8, 8))
    )
    assert v.value is None and "window" in v.note


def test_psnr_values() -> None:
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[1] += 0.1  # MSE 0.01 → 20 dB
    # float64 arithmetic on float32 pixels: 0.1 is stored as 0.1·(1 + 1.5e-8), so the second
    # PSNR is 20 − 20·log10(1 + 1.5e-8) ≈ 20 − 1.3e-7 dB
    assert PSNR().per_image(x, y) == pytest.approx([100.0, 20.0], abs=1e-6)


def test_mean_interval_hand_computed() -> None:
    mean, lo, hi = mean_interval(np.array([1.0, 2.0, 3.0]))
    # t(0.975, 2)·s/√3 = 4.302653·1/√3 = 2.48414, printed to 4 decimals: half a unit of the
    # last place (the earlier constant 2.4843 was 1.6e-4 off, hidden by abs = 1e-3)
    assert mean == 2.0 and (lo, hi) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=5e-5)


def _order_statistic_coverage(n: int, k: int) -> float:
    """P(v_(k) ≤ median ≤ v_(n+1−k)) for a continuous distribution, by direct summation:
    1 − 2·P(B ≤ k − 1), B ~ Binomial(n, ½)."""
    from math import comb

    return 1 - 2 * sum(comb(n, i) for i in range(k)) / 2**n


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 10, 20, 40])
def test_median_interval_reports_its_real_coverage(n: int) -> None:
    values = np.random.default_rng(n).permutation(np.arange(float(n)))
    med, lo, hi, coverage = median_interval(values)
    assert med == (n - 1) / 2
    k = int(lo) + 1  # values are 0..n−1, so v_(k) = k − 1
    assert hi == n - k  # symmetric: v_(n+1−k)
    # two float64 sums of ≤ 40 binomial terms ≤ 1: rounding ≤ 80·2^-53 ≈ 9e-15
    assert coverage == pytest.approx(_order_statistic_coverage(n, k), abs=1e-12)
    if k > 1 or coverage >= 0.95:
        assert coverage >= 0.95  # the promised level is met ...
        # ... by the narrowest symmetric interval that meets it
        assert _order_statistic_coverage(n, k + 1) < 0.95 or k + 1 > (n + 1) // 2
    else:
        assert (lo, hi) == (0.0, n - 1.0)  # too few: the full range, labelled with what it covers
    # the cases the earlier code mislabelled as 95%: n = 5 covers 93.75%, n = 6 is the first
    # sample size whose full range reaches 95%
    if n == 5:
        assert coverage == 0.9375
    if n == 6:
        assert coverage == pytest.approx(0.96875, abs=1e-12)  # 31/32, as the line above


def test_median_interval_of_one_value_has_no_interval() -> None:
    assert median_interval(np.array([3.0])) == (3.0, None, None, 0.0)


def test_latency_states_its_coverage_and_where_it_was_measured() -> None:
    timing = {
        "ms_per_image": np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        "batch_images": 64,
        "measured_at": "2026-11-22T10:00:00+00:00",
        "host": {"device": "cpu", "cpu": "test CPU"},
        "cached": True,
    }
    v = Latency().compute(DefenseRecords(["a"], timing=timing))
    assert (v.value, v.n, v.ci_low, v.ci_high, v.ci_level) == (3.0, 5, 1.0, 5.0, 0.9375)
    assert "covers 93.75%" in v.note and "reused from the cache" in v.note
    assert v.extra["measured_on"] == {"device": "cpu", "cpu": "test CPU"}
    assert v.extra["measured_at"] == "2026-11-22T10:00:00+00:00" and v.extra["cached"]
    one = Latency().compute(DefenseRecords(["a"], timing={**timing, "ms_per_image": [2.0]}))
    assert one.ci_low is None and "no interval" in one.note
