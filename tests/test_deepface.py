"""deepface's recognition models from their ONNX files, without the deepface package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper, save

from harness.api.registry import DATASETS, RECOGNIZERS
from harness.toolkit.imaging import letterbox, resize, to_tensor
from recognizers.deepface_onnx import normalize
from recognizers.onnx_convert import fp32_onnx
from recognizers.opencv_zoo import SFACE, model_path
from tests.conftest import UNIT_ROUNDOFF, gamma


def _nhwc_conv_graph(path: Path, side: int, kernel: np.ndarray) -> None:
    """A channels-last graph like deepface's exports: NHWC → conv → global mean → [N, C]."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xc", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nhwc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", side, side, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", kernel.shape[0]])],
        [numpy_helper.from_array(kernel, "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime reads; deepface's exports are older still
    save(model, str(path))


def _embedding_and_float32_bound(faces: torch.Tensor, kernel: np.ndarray, variant: str = ""):
    """deepface's ArcFace input (letterbox to 112×112, BGR, (255·x − 127.5)/128) through
    conv → global mean → L2 normalisation, in float64; and, per element, a bound on how far a
    float32 evaluation of the same arithmetic can be from it, from the rounding of each step:
    letterbox and normalisation (8 u on the input), the 27-term convolution (γ_27 on Σ|k||x|),
    the 112·112-term mean (γ_12544 on mean |c|), and the L2 normalisation (the vector's error
    over its norm, twice, plus 4 u)."""
    k = torch.from_numpy(kernel).double()
    boxed = letterbox(faces.double(), (112, 112), "nearest" if variant == "nearest" else "bilinear")
    x = (((boxed if variant == "rgb" else boxed.flip(1)) * 255.0) - 127.5) / 128.0
    c = F.conv2d(x, k, padding=1)
    g = c.mean((2, 3))
    per_output = (8 * UNIT_ROUNDOFF + gamma(27)) * F.conv2d(x.abs(), k.abs(), padding=1)
    error_g = per_output.mean((2, 3)) + gamma(112 * 112) * c.abs().mean((2, 3))
    bound = 2 * error_g / g.norm(dim=1, keepdim=True) + 4 * UNIT_ROUNDOFF
    return F.normalize(g, dim=1).numpy(), bound.numpy()


def test_channels_last_graph_sees_letterboxed_bgr_normalised_faces(tmp_path: Path) -> None:
    kernel = np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32)
    _nhwc_conv_graph(tmp_path / "arc.onnx", 112, kernel)
    rec = RECOGNIZERS.create(
        "deepface",
        {"model": "ArcFace", "normalization": "ArcFace", "checkpoint": str(tmp_path / "arc.onnx")},
    )
    faces = torch.rand(3, 3, 40, 30, generator=torch.Generator().manual_seed(1))
    expected, bound = _embedding_and_float32_bound(faces, kernel)
    got = rec.embed(faces).astype(np.float64)
    assert np.all(np.abs(got - expected) <= bound), np.abs(got - expected).max()
    # The bound is tight enough to catch the mistakes that matter: RGB instead of BGR, or
    # nearest instead of bilinear resizing, move the embedding far outside it.
    for variant in ("rgb", "nearest"):
        wrong, _ = _embedding_and_float32_bound(faces, kernel, variant)
        assert np.abs(wrong - expected).max() > 5 * bound.max(), variant


def test_letterbox_centres_the_face_between_black_bars() -> None:
    face = torch.rand(1, 3, 40, 20, generator=torch.Generator().manual_seed(2))
    boxed = letterbox(face, (112, 112))
    assert boxed.shape == (1, 3, 112, 112)
    assert boxed[..., :28].abs().sum() == 0 and boxed[..., 84:].abs().sum() == 0
    # letterbox makes this very resize call on the same tensor, then pads: the same bits
    assert torch.equal(boxed[..., 28:84], resize(face, (112, 56), "bilinear"))


def test_normalizations_follow_deepface() -> None:
    x = np.random.default_rng(3).random((2, 8, 8, 3)).astype(np.float32)
    u, n = UNIT_ROUNDOFF, x[0].size  # float32 throughout; 192 values an image
    assert normalize(x, "base") is x
    np.testing.assert_allclose(normalize(x, "raw"), x * 255, rtol=u)  # one rounding
    z = normalize(x, "Facenet")
    # (x − m')/s' with m' and s' float32 statistics of n values (γ_n relative to mean|x|,
    # and γ_{2n+4} relative for the standard deviation), each z rounded twice (2u·|z|): the
    # exact mean of the z is −Δm'/s', and their float32 mean errs by γ_n·mean|z| ≤ γ_n more
    x255 = x.astype(np.float64) * 255
    spread = x255.std(axis=(1, 2, 3))
    tol_mean = gamma(n) * (np.abs(x255).mean(axis=(1, 2, 3)) / spread + 1) + 2 * u
    assert np.all(np.abs(z.mean(axis=(1, 2, 3))) <= tol_mean)
    np.testing.assert_allclose(z.std(axis=(1, 2, 3)), 1, rtol=0, atol=2 * gamma(2 * n + 4))
    # the same three float32 operations in the same order as normalize: the same bits
    np.testing.assert_array_equal(normalize(x, "Facenet2018"), x * 255 / 127.5 - 1)
    v = normalize(x, "VGGFace")
    # x·255 (≤ 255u), the mean stored as float32 (≤ 130u) and the subtraction (≤ 130u)
    np.testing.assert_allclose(v[..., 2], x[..., 2] * 255 - 129.1863, rtol=0, atol=515 * u)


def test_missing_model_names_the_file_and_where_it_goes() -> None:
    params = {"model": "VGG-Face", **{k: None for k in ("weights", "checkpoint")}}
    lacking = RECOGNIZERS.get("deepface").missing(params)
    assert len(lacking) == 1
    assert "vgg_face_weights.onnx" in lacking[0]
    assert "serengil/deepface_models" in lacking[0]
    assert "privbench weights add deepface-vgg-face" in lacking[0]


def test_sface_through_the_deepface_route_links_clean_faces(ctx) -> None:
    """deepface's SFace needs the dequantised fp32 graph; it then agrees with `sface`."""
    graph = fp32_onnx(model_path(SFACE), SFACE.sha256)
    rec = RECOGNIZERS.create("deepface", {"model": "SFace", "checkpoint": str(graph)})
    split = DATASETS.create("lfw-subset", {"max_probes": 30}).load(seed=0)
    rec.fit(split, ctx)
    probes = to_tensor(split.probe.images)
    # all 30 right on every kernel path: SFace's top-1 cosine leads by ≥ 0.27 on these
    # faces, float32 rounding moves cosines by ~1e-6
    assert (rec.predict(probes, ctx) == split.probe.labels).mean() >= 0.95
    # At the model's own size nothing is resized: the same graph on the same 0–255 RGB input,
    # so the two differ only in float32 rounding. 1 − cos < 1e-4 allows a relative
    # difference of the embeddings of √(2·1e-4) = 1.4%; rounding errors grow like a random
    # walk, ~√(Σ fan-in) ≈ √(50 layers·1000) ≈ 220 times u = 6e-8 (Higham and Mary's
    # probabilistic bound), i.e. ~1e-5 relative, 1 − cos ~1e-10 (1e-7 measured: the float32
    # cosine itself).
    faces = resize(probes, (112, 112), "bicubic")
    direct = RECOGNIZERS.create("sface", {"backend": "onnxruntime"}).embed(faces)
    assert (rec.embed(faces) * direct).sum(1).min() > 0.9999


@pytest.mark.parametrize("model", ["Facenet", "DeepID"])
def test_model_input_shapes(model: str, tmp_path: Path) -> None:
    from recognizers.deepface_onnx import DEEPFACE_MODELS

    w, h = DEEPFACE_MODELS[model].input_wh
    kernel = np.ones((4, 3, 3, 3), dtype=np.float32)
    _nhwc_conv_graph(tmp_path / "m.onnx", max(w, h), kernel)
    rec = RECOGNIZERS.get("deepface")(
        **RECOGNIZERS.resolve("deepface", {"model": model, "checkpoint": str(tmp_path / "m.onnx")})
    )
    assert rec.model_input(torch.rand(2, 3, 25, 25)).shape == (2, h, w, 3)
