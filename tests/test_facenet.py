"""MTCNN and FaceNet through the optional facenet-pytorch package."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from harness.api.registry import DATASETS, RECOGNIZERS
from harness.core.errors import ModelFileError
from harness.toolkit.imaging import to_tensor
from recognizers import facenet
from tests.conftest import UNIT_ROUNDOFF, gamma

needs_facenet = pytest.mark.skipif(
    find_spec("facenet_pytorch") is None or find_spec("requests") is None,
    reason=f"optional facenet-pytorch not installed ({facenet.INSTALL})",
)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facenet, "find_spec", lambda name: None)
    lacking = RECOGNIZERS.get("mtcnn").missing({})
    assert lacking == [f"needs the optional package facenet-pytorch: {facenet.INSTALL}"]
    with pytest.raises(ModelFileError, match=r"--no-deps facenet-pytorch==2\.6\.0"):
        RECOGNIZERS.create("mtcnn")


@needs_facenet
def test_mtcnn_finds_faces_not_non_faces(ctx) -> None:
    split = DATASETS.create("lfw-subset").load(seed=0)
    mtcnn = RECOGNIZERS.create("mtcnn")
    assert (mtcnn.predict(to_tensor(split.probe.images), ctx) != -1).mean() >= 0.95
    assert (mtcnn.predict(to_tensor(split.negatives.images), ctx) != -1).mean() <= 0.05
    assert (
        RECOGNIZERS.create("mtcnn", {"input_size": 512}).predict(
            to_tensor(data.astronaut()[None]), ctx
        )[0]
        == 1
    )


@needs_facenet
def test_facenet_loads_published_layout_and_is_differentiable(tmp_path: Path, ctx) -> None:
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    state = InceptionResnetV1(pretrained=None, classify=False).state_dict()
    state["logits.weight"] = torch.zeros(8631, 512)  # the published files carry this head
    state["logits.bias"] = torch.zeros(8631)
    torch.save(state, tmp_path / "fn.pt")
    model = RECOGNIZERS.create("facenet", {"checkpoint": str(tmp_path / "fn.pt")})
    split = DATASETS.create("lfw-subset", {"max_probes": 12}).load(seed=0)
    model.fit(split, ctx)
    x = to_tensor(split.probe.images)
    e = model.embed(x)
    # float32 normalisation of 512 values (the norm's γ_512/2 + u, the division u) and the
    # float32 norm here (γ_512/2 + u): within γ_512 + 3u ≈ 3.1e-5 of 1 (the earlier 1e-5 was
    # below that worst case)
    tol = gamma(512) + 3 * UNIT_ROUNDOFF
    assert e.shape == (12, 512) and np.allclose(np.linalg.norm(e, axis=1), 1, rtol=0, atol=tol)
    assert (model.predict(x, ctx) == split.probe.labels).all()  # gallery = the same photos
    x.requires_grad_(True)
    model.embed_torch(x).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="not an InceptionResnetV1 state dict"):
        RECOGNIZERS.create("facenet", {"checkpoint": str(tmp_path / "bad.pt")})
