"""The non-gradient parts of the Pixel Privacy runs: Euclidean transforms and the platform's
answers to them, Ying's exposure fusion, CartoonGAN's generator, NIMA, and weights that need
files this machine lacks."""

from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np
import pytest
import torch

from defenses.cartoongan import CartoonGenerator, InstanceNormalization, stylise
from defenses.euclidean import CHUNK_IMAGES
from defenses.ying import (
    camera_response,
    fuse,
    smooth_illumination,
    texture_weights,
    ying_enhance,
)
from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS
from harness.metrics.nima import MobileNetNIMA, keras_mobilenet_state, mean_score
from harness.toolkit.geometry import random_transforms, rotate_translate, transform_grid
from harness.toolkit.imaging import to_tensor, to_uint8
from tests.conftest import UNIT_ROUNDOFF, float32_logit_bound, gamma


def test_rotation_then_translation_against_a_hand_computation() -> None:
    # rotate_translate samples in float64 and rounds once to float32: within u = 2^-24
    # relative of the exact bilinear value (cos 90° is 6e-17 in float64, not 0: negligible),
    # so pytest.approx's default rel = 1e-6 and abs = 1e-6 are ≥ 16 u wide on values ≤ 1
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 4] = 1.0  # right of the centre (2, 2)
    up = rotate_translate(x, torch.tensor([90.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert float(up[0, 0, 0, 2]) == pytest.approx(1.0) and float(up.sum()) == pytest.approx(1.0)
    # rotate first (to the top centre), then move 1 px left and 2 px down
    moved = rotate_translate(x, torch.tensor([90.0]), torch.tensor([-0.2]), torch.tensor([0.4]))
    assert float(moved[0, 0, 2, 1]) == pytest.approx(1.0, abs=1e-6)
    # half a pixel: bilinear splits the mass; what moves in from outside is zero
    half = rotate_translate(x, torch.tensor([0.0]), torch.tensor([0.1]), torch.tensor([0.0]))
    assert float(half[0, 0, 2, 4]) == pytest.approx(0.5, abs=1e-6)
    ones = rotate_translate(
        torch.ones(1, 1, 5, 5), torch.tensor([0.0]), torch.tensor([0.4]), torch.tensor([0.0])
    )
    assert ones[0, 0, :, :2].abs().max() == 0 and bool((ones[0, 0, :, 2:] == 1).all())


def test_grid_and_random_candidates() -> None:
    grid = transform_grid(0.2, 20.0, (5, 5, 31))
    assert grid.shape == (775, 3)
    assert grid[:, 0].min() == -0.2 and grid[:, 0].max() == 0.2
    assert sorted(set(np.round(grid[:, 2], 6)))[:2] == [-20.0, round(-20 + 40 / 30, 6)]
    r = random_transforms(np.random.default_rng(0), 1000, 0.1, 5.0)
    assert np.abs(r[:, :2]).max() <= 0.1 and np.abs(r[:, 2]).max() <= 5.0


def test_euclidean_picks_the_surrogates_worst_transform(ctx) -> None:
    """The rule: the misclassified candidate with the highest cross-entropy against the clean
    prediction, else the candidate with the highest cross-entropy.

    The test feeds the surrogate exactly the batch ``choose`` feeds it (every photo's
    candidates in one pass, in the same order), so both see the same float32 logits on any CPU
    and kernel: what differs between machines cannot make them disagree. It then applies the
    rule without the bonus trick, lexicographically on (misclassified, cross-entropy) in
    float64, and compares the chosen candidate's values with the best ones, not indices, so a
    tie between two candidates cannot decide the verdict. ``choose`` ranks by its float32
    cross-entropy (log-sum-exp over C classes: C exponentials, a C-term sum, a log and two
    subtractions, each rounding by ≤ u = 2^-24 relative, so within (C + 3)·u·(2·max|z| + log C)
    of the exact value) plus 1e6 for a misclassified candidate in float64 (rounding ≤ 2^-33
    near 1e6). Its pick is therefore within twice the first bound plus 2^-33 of the best."""
    split = DATASETS.create("digits", {"max_probes": 16}).load(0)
    d = DEFENSES.create(
        "euclidean",
        {"surrogate_params": {"steps": 150}, "search": "grid", "granularity": [3, 3, 5]},
    )
    d.fit(split.fit, ctx)
    x = to_tensor(split.probe.images, "cpu")
    chosen = d.choose(x, ctx)
    clean = d.scores(x).argmax(1)
    grid = transform_grid(0.2, 20.0, (3, 3, 5))
    b, k = len(x), len(grid)
    assert CHUNK_IMAGES // b >= k  # choose scores all candidates in one pass, as below
    flat = torch.from_numpy(np.broadcast_to(grid, (b, k, 3)).reshape(-1, 3).copy())
    moved = rotate_translate(x.repeat_interleave(k, 0), flat[:, 2], flat[:, 0], flat[:, 1])
    with torch.no_grad():
        logits = d.surrogate.logits(moved).float().double().view(b, k, -1)
    target = clean.view(b, 1).expand(b, k)
    ce = (logits.logsumexp(2) - logits.gather(2, target.unsqueeze(2)).squeeze(2)).numpy()
    wrong = (logits.argmax(2) != target).numpy()
    n_classes = logits.shape[2]
    float32_ce = (n_classes + 3) * 2.0**-24 * (2 * logits.abs().max().item() + math.log(n_classes))
    tolerance = 2 * float32_ce + 2.0**-33
    teeth = 0
    for i in range(b):
        (j,) = np.flatnonzero((grid == chosen[i]).all(1))  # chosen is a copy of a grid row
        pool = wrong[i] if wrong[i].any() else np.ones(k, dtype=bool)
        assert wrong[i, j] == wrong[i].any(), i  # misclassified whenever any candidate is
        assert ce[i, j] >= ce[i][pool].max() - tolerance, (i, ce[i, j], ce[i][pool].max())
        teeth += int((ce[i][pool] < ce[i][pool].max() - tolerance).any())
    assert teeth == b  # on every photo some candidates would have been a wrong pick


def test_spatial_tta_votes_and_face_align_undoes_a_rotation(ctx) -> None:
    from attacks.spatial import _vote

    assert _vote([3, 3, 1, 1, 2], untransformed=1) == 1
    assert _vote([3, 3, 1, 1, 2], untransformed=2) == 1
    assert _vote([4, 4, 4, 2], untransformed=2) == 4
    tta = ATTACKS.create("spatial-tta", {})
    assert len(tta.wrap(object.__new__(_Stub)).grid) == 27  # type: ignore[arg-type]

    faces = DATASETS.create("lfw-subset", {"max_probes": 30}).load(0).probe
    clean = to_tensor(faces.images, "cpu")
    align = ATTACKS.create("face-align", {})
    align.fit(clean, ctx)
    n = len(clean)
    rotated = rotate_translate(clean, torch.full((n,), 15.0), torch.zeros(n), torch.zeros(n))

    def mean_correction(images: torch.Tensor) -> float:
        """Mean rotation (degrees, clockwise on screen) face-align applies."""
        angles = [
            math.degrees(math.atan2(m[1, 0], m[0, 0]))
            for m in map(align.correction, to_uint8(images))
            if m is not None
        ]
        assert len(angles) >= 0.8 * n  # YuNet finds most faces, rotated or not
        return float(np.mean(angles))

    # A 15° counter-clockwise turn is answered by a clockwise correction. On 25-pixel crops
    # YuNet's landmarks lean toward upright faces, so it recovers roughly half of it.
    assert mean_correction(rotated) - mean_correction(clean) > 5.0
    fixed = align.transform(rotated, ctx)
    assert fixed.shape == rotated.shape and not torch.equal(fixed, rotated)


class _Stub:
    config: ClassVar[dict] = {}
    kind = "classifier"


def test_ying_camera_model_weights_and_fusion_by_hand() -> None:
    # float64 throughout; the hand values are printed to 6 decimals, hence abs = 1e-6 (half a
    # unit in the last printed place, 5e-7, plus float64 rounding).
    # γ = 4^−0.3293 = 0.633493, β = exp((1 − γ)·1.1258) = 1.510762, g = β·0.25^γ = 0.627762
    assert camera_response(np.array([0.25]), 4.0)[0] == pytest.approx(0.627762, abs=1e-6)
    assert camera_response(np.array([0.7]), 1.0)[0] == pytest.approx(0.7)  # k = 1: unchanged
    # circular forward differences of [0, 1, 0, 1] are [1, −1, 1, −1]; a 5-wide box sums to
    # [1, 0, 0, −1] in 'same' mode, so w = 1/(|box|·|d| + 0.001)
    wh, _ = texture_weights(np.array([[0.0, 1.0, 0.0, 1.0]]), 5, 0.001)
    np.testing.assert_allclose(wh[0], [1 / 1.001, 1000.0, 1000.0, 1 / 1.001])
    # a constant illumination is its own smoothing (the system's rows sum to one); a float64
    # sparse solve of 42 unknowns with a diagonally dominant matrix (condition number ≲ 10^2)
    # errs by ≲ 42·10^2·2^-53 ≈ 5e-13 on values ≤ 1
    np.testing.assert_allclose(smooth_illumination(np.full((6, 7), 0.3)), 0.3, atol=1e-12)
    # fusion with t = 0.25, μ = 0.5, so W = 0.5: (0.2 + 0.6)/2·255 = 102; 0.3·255 = 76.5 and
    # (0.9 + 0.1)/2·255 = 127.5 are truncated to 76 and 127. With t = 1 (W = 1) the photo
    # itself: 0.9·255 = 229.5 → 229
    image = np.array([[[0.2, 0.3, 0.9]]])
    synthetic = np.array([[[0.6, 0.3, 0.1]]])
    np.testing.assert_array_equal(
        fuse(image, synthetic, np.array([[0.25]]), 0.5), [[[102, 76, 127]]]
    )
    np.testing.assert_array_equal(fuse(image, synthetic, np.array([[1.0]]), 0.5), [[[51, 76, 229]]])


def test_ying_brightens_a_dark_photo() -> None:
    from skimage import data

    photo = data.astronaut()[::4, ::4]
    dark = (photo * 0.35).astype(np.uint8)
    dark[0, 0] = 0
    dark[0, 1] = 255  # keeps the min-max normalisation from stretching it by itself
    out = ying_enhance(dark)
    # float64 throughout (a sparse solve, exponentials), so another CPU moves the mean by
    # ~1e-10 levels; the 1.2 bar sits 1.9 levels below the result (39.8 → 49.6)
    assert out.mean() > 1.2 * dark.mean()


def _cartoongan_parameters() -> int:
    conv = lambda c_in, c_out, k: c_in * c_out * k * k + c_out  # noqa: E731
    norm = lambda c: 2 * c  # noqa: E731
    encoder = conv(3, 64, 7) + norm(64) + conv(64, 128, 3) + conv(128, 128, 3) + norm(128)
    encoder += conv(128, 256, 3) + conv(256, 256, 3) + norm(256)
    residual = 8 * 2 * (conv(256, 256, 3) + norm(256))
    decoder = conv(256, 128, 3) + conv(128, 128, 3) + norm(128) + conv(128, 64, 3)
    decoder += conv(64, 64, 3) + norm(64) + conv(64, 3, 7)
    return encoder + residual + decoder


def test_cartoongan_generator_shape_count_and_norm() -> None:
    g = CartoonGenerator().eval()
    assert sum(p.numel() for p in g.parameters()) == _cartoongan_parameters() == 11_129_667
    with torch.no_grad():
        assert g(torch.zeros(1, 3, 32, 48)).shape == (1, 3, 32, 48)
        x = torch.rand(2, 3, 25, 27)
        assert stylise(g, x, "pad").shape == x.shape
        assert stylise(g, x, "reference").shape == x.shape
    norm = InstanceNormalization(2)
    norm.shift.data = torch.tensor([0.5, -1.0])
    with torch.no_grad():
        y = norm(torch.stack([torch.full((3, 3), 7.0), torch.arange(9.0).view(3, 3)])[None])
    # constant: x − μ is exactly 0 (μ of nine 7s is exact in float32), so y is the shift
    assert torch.equal(y[0, 0], torch.full((3, 3), 0.5))
    # 0..8 normalised: values ≤ 1.55, Σ|y| = 7.75; their float32 mean errs by ≤ γ_9·7.75/9
    # ≈ 4.6e-7 plus the rounding of each y (3u·1.55) and of the shift's sum (u)
    assert float(y[0, 1].mean()) == pytest.approx(-1.0, abs=1e-6)


def test_cartoongan_loads_a_state_dict_and_skips_without_weights(tmp_path, ctx) -> None:
    path = tmp_path / "gen.pth"
    torch.manual_seed(3)
    torch.save(CartoonGenerator().state_dict(), path)
    d = DEFENSES.create("cartoongan", {"checkpoint": str(path)})
    x = torch.rand(2, 3, 16, 16)
    out = d.protect(x, ["a", "b"], ctx)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert "cartoongan-hayao" in DEFENSES.get("cartoongan").missing({"style": "hayao"})[0]


def test_nima_score_arithmetic_and_preprocessing(ctx, tmp_path) -> None:
    p = torch.zeros(3, 10, dtype=torch.float64)
    p[0, 6] = 1.0
    p[1] = 0.1
    p[2, 0] = p[2, 9] = 0.5
    assert mean_score(p).tolist() == pytest.approx([7.0, 5.5, 5.5])
    torch.manual_seed(0)
    net = MobileNetNIMA().eval()
    path = tmp_path / "nima.pt"
    torch.save(net.state_dict(), path)
    metric = METRICS.create("nima", {"checkpoint": str(path), "input_size": 64})
    x = torch.rand(2, 3, 40, 50)
    with torch.no_grad():
        # by hand: bilinear resize to 64×64, x/127.5 − 1 on 0-255 (= 2x − 1), forward, Σ i·p_i
        xr = torch.nn.functional.interpolate(
            x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True
        )
        h = xr * 255.0 / 127.5 - 1.0
        for layer in net.layers.values():
            h = layer(h)
        probs = net.dense(h.mean(dim=(2, 3))).softmax(1).double()
        hand = (probs * torch.arange(1, 11, dtype=torch.float64)).sum(1).numpy()

    # Both are float32 evaluations of the same network on the same resized pixels (the hand's
    # x·255/127.5 and the metric's clamp and 2x are within 3u of each other): each within δ
    # of the exact logits (float32_logit_bound), so within 2δ of each other; then log p by
    # ≤ 4δ (log-softmax is 2-Lipschitz in the max norm), the score Σ i·p_i by a factor
    # e^{4δ} at most, and each float32 softmax rounds by ≤ (C + 4)·u relative.
    def forward(model, images):
        steps = [(images, 3 * UNIT_ROUNDOFF * images.detach().abs())]
        h = images * 2.0 - 1.0
        steps.append((h, UNIT_ROUNDOFF * h.detach().abs()))
        for layer in model.layers.values():
            h = layer(h)
        pooled = h.mean(dim=(2, 3))
        m = h.shape[-1] * h.shape[-2]
        steps.append((pooled, gamma(m + 1) * h.detach().abs().mean(dim=(2, 3))))
        return model.dense(pooled), steps

    _, delta = float32_logit_bound(forward, net, xr)
    slack = np.expm1(4 * delta.max(1).values.numpy()) + 2 * (10 + 4) * UNIT_ROUNDOFF
    assert np.all(np.abs(metric.per_image(x, x) - hand) <= slack * hand)
    change = METRICS.create("nima_change", {"checkpoint": str(path), "input_size": 64})
    # the same photos through the same arithmetic twice, in the same batch: the same bits
    np.testing.assert_array_equal(change.per_image(x, x), 0.0)
    assert hand.min() >= 1.0 and hand.max() <= 10.0


def test_keras_h5_converts_to_the_torch_layout(tmp_path) -> None:
    import h5py

    reference = MobileNetNIMA().state_dict()
    rng = np.random.default_rng(0)
    path = tmp_path / "mobilenet_weights.h5"
    kernels = {}
    with h5py.File(path, "w") as f:
        names = []

        def layer(name: str, arrays: dict[str, np.ndarray]) -> None:
            g = f.create_group(name)
            wnames = [f"{name}/{k}:0" for k in arrays]
            for wn, a in zip(wnames, arrays.values(), strict=True):
                g.create_dataset(wn, data=a)
            g.attrs["weight_names"] = [n.encode() for n in wnames]
            names.append(name)

        layer("input_1", {})
        for key, value in reference.items():
            parts = key.split(".")
            if parts[-1] != "weight" or parts[0] != "layers" or parts[2] != "conv":
                continue
            name, shape = parts[1], tuple(value.shape)
            if name.startswith("conv_dw"):
                k = rng.normal(size=(3, 3, shape[0], 1)).astype(np.float32)
                layer(name, {"depthwise_kernel": k})
            else:
                k = rng.normal(size=(shape[2], shape[3], shape[1], shape[0])).astype(np.float32)
                layer(name, {"kernel": k})
            kernels[name] = k
            c = shape[0]
            stats = ("gamma", "beta", "moving_mean", "moving_variance")
            layer(f"{name}_bn", {s: rng.random(c).astype(np.float32) + 0.5 for s in stats})
        dense = rng.normal(size=(1024, 10)).astype(np.float32)
        layer("dense_1", {"kernel": dense, "bias": np.zeros(10, np.float32)})
        f.attrs["layer_names"] = [n.encode() for n in names]
    state = keras_mobilenet_state(path)
    w = state["layers.conv1.conv.weight"].numpy()
    assert w[5, 2, 0, 1] == kernels["conv1"][0, 1, 2, 5]  # torch [o, i, y, x] = keras [y, x, i, o]
    dw = state["layers.conv_dw_3.conv.weight"].numpy()
    assert dw[7, 0, 2, 1] == kernels["conv_dw_3"][2, 1, 7, 0]
    np.testing.assert_array_equal(state["dense.weight"].numpy(), dense.T)
    MobileNetNIMA().load_state_dict(state, strict=True)

    from harness.toolkit import weights

    stored = weights.add("nima-mobilenet", path)
    assert stored.suffix == ".pt"
    metric = METRICS.create("nima", {"input_size": 32})
    assert not metric.lacking
    scores = metric.per_image(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert np.isfinite(scores).all()
    stored.unlink()
    (weights.weights_dir() / "checksums.json").unlink()


def test_a_run_skips_what_needs_weights_and_says_so(tmp_path) -> None:
    from harness.cli.wiring import run_with_leaderboard
    from harness.engine.runner import RunOptions
    from harness.engine.suite import load_suite

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: skip\ndataset: {name: digits, params: {max_probes: 20}}\n"
        "recognizers: [{name: small-cnn, params: {steps: 20}}]\n"
        "defenses: [none, cartoongan, ying-contrast]\n"
        "metrics: [fooling_rate, psnr, nima]\n",
        encoding="utf-8",
    )
    result = run_with_leaderboard(
        load_suite(suite), RunOptions(out_root=tmp_path / "out", progress=False)
    )
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and not manifest["failures"]
    assert [s["name"] for s in manifest["skipped"]] == ["nima", "cartoongan"]
    assert "privbench weights add cartoongan-hayao" in manifest["skipped"][1]["needs"][0]
    assert "privbench weights add nima-mobilenet" in manifest["skipped"][0]["needs"][0]
    nima = [r for r in result.rows if r["metric"] == "nima"]
    assert nima and all(r["value"] is None and "needs weights" in r["note"] for r in nima)
    board = (result.run_dir / "leaderboard.md").read_text()
    assert "Skipped here" in board and "cartoongan" in board and "metric `nima`" in board
