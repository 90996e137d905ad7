"""Overlay-removal counter-attacks: they must break a shared overlay and fail on k-RTIO."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api.registry import ATTACKS, DATASETS, DEFENSES
from harness.core.keys import benchmark_key
from harness.toolkit.imaging import quantise, to_tensor


@pytest.fixture(scope="module")
def faces() -> tuple[torch.Tensor, list[str]]:
    split = DATASETS.create("lfw-subset", {"max_probes": 60}).load(seed=0)
    return to_tensor(split.probe.images), split.probe.ids


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image Pearson correlation (scale-free: separated photos are stretched)."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())


def test_bss_ica_separates_a_shared_overlay_but_not_krtio(faces, ctx) -> None:
    x, ids = faces
    ctx.keyring = benchmark_key(0)
    naive = quantise(DEFENSES.create("naive-overlay", {"alpha": 0.45}).protect(x, ids, ctx))
    krtio = quantise(DEFENSES.create("krtio", {"alpha": 0.45, "block": 4}).protect(x, ids, ctx))
    results = {}
    for name, protected in (("naive", naive), ("krtio", krtio)):
        attack = ATTACKS.create("bss-ica")
        attack.fit(protected, ctx)
        recovered = attack.transform(protected, ctx)
        results[name] = (_corr(protected, x), _corr(recovered, x), attack.consistency)
    before, after, consistency = results["naive"]
    # (Seeded data through float64 and float32 arithmetic: these agree to ~1e-5 on AVX-512,
    # AVX2 and portable kernels; the bars are ≥ 0.045 and a factor 1.7 away from them.)
    assert after > 0.8 and after > before + 0.25  # measured: 0.53 → 0.85
    k_before, k_after, k_consistency = results["krtio"]
    assert k_after < k_before  # nothing shared to remove (measured: 0.78 → 0.60)
    assert consistency > 5 * k_consistency


def test_bss_ica_needs_a_pool(ctx) -> None:
    from harness.core.errors import PrivbenchError

    with pytest.raises(PrivbenchError, match="at least two"):
        ATTACKS.create("bss-ica").fit(torch.rand(1, 3, 8, 8), ctx)


def test_overlay_guess_inverts_a_known_single_overlay_and_fails_on_krtio(faces, ctx) -> None:
    x, ids = faces
    ctx.keyring = benchmark_key(0)
    naive = DEFENSES.create("naive-overlay", {"alpha": 0.45, "overlay": "rocket"}).protect(
        x, ids, ctx
    )
    guess = ATTACKS.create("overlay-guess", {"k": 1, "alpha": 0.45}).transform(naive, ctx)
    assert _psnr(guess, x) > 40  # the exact overlay was among the candidates (150 dB)
    krtio = DEFENSES.create("krtio", {"alpha": 0.45, "k": 3, "block": 4}).protect(x, ids, ctx)
    guess_k = ATTACKS.create("overlay-guess", {"k": 3, "alpha": 0.45}).transform(krtio, ctx)
    assert _psnr(guess_k, x) < 25  # 14 dB


def test_overlay_guess_refuses_huge_candidate_sets(ctx) -> None:
    from harness.core.errors import PrivbenchError

    with pytest.raises(PrivbenchError, match="candidate averages"):
        ATTACKS.create("overlay-guess", {"k": 5, "max_candidates": 10}).transform(
            torch.rand(1, 3, 8, 8), ctx
        )


def test_box_blur_is_the_window_mean(ctx) -> None:
    x = torch.zeros(1, 3, 5, 5)
    x[0, :, 2, 2] = 9.0
    y = ATTACKS.create("box-blur", {"kernel_size": 3}).transform(x, ctx)
    # each output is 9 (or 0) times a weight 1/9 rounded to float32, or a 9-term sum divided
    # by 9: within 4u of the exact 1 (u = 2^-24); their float32 sum over 75 values (27 of
    # them ≈ 1) errs by ≤ γ_75·27 more
    u = 2.0**-24
    assert torch.allclose(y[0, 0, 1:4, 1:4], torch.ones(3, 3), rtol=0, atol=4 * u)
    assert float(y[0, 0, 0, 0]) == 0.0 and np.isclose(float(y.sum()), 27.0, rtol=80 * u, atol=0)
