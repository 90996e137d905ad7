"""dlib's ResNet face descriptor (optional extra [dlib])."""

from __future__ import annotations

from importlib.util import find_spec

import pytest

from harness.api.registry import DATASETS, RECOGNIZERS
from harness.core.errors import ModelFileError
from harness.toolkit.imaging import to_tensor
from recognizers import dlib_faces

needs_dlib = pytest.mark.skipif(
    find_spec("dlib") is None or find_spec("face_recognition_models") is None,
    reason=f"optional dlib extra not installed ({dlib_faces.INSTALL})",
)


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlib_faces, "find_spec", lambda name: None)
    assert RECOGNIZERS.get("dlib").missing({}) == [
        f"the dlib recognizer needs the optional extra: {dlib_faces.INSTALL}"
    ]
    with pytest.raises(ModelFileError, match="optional extra"):
        dlib_faces.dlib_model_file(dlib_faces.RESNET)


@needs_dlib
def test_dlib_links_clean_and_flipped_faces(ctx) -> None:
    split = DATASETS.create("lfw-subset", {"max_probes": 20}).load(seed=0)
    model = RECOGNIZERS.create("dlib")
    model.fit(split, ctx)
    x = to_tensor(split.probe.images)
    assert (model.predict(x, ctx) == split.probe.labels).mean() == 1.0
    assert (model.predict(x.flip(3), ctx) == split.probe.labels).mean() >= 0.9
