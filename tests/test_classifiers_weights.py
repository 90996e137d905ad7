"""Weights registry (no downloads; checksums) and torchvision classifiers from local files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from harness.api.registry import DATASETS, RECOGNIZERS
from harness.cli.main import main
from harness.core.errors import ModelFileError, UnknownNameError
from harness.toolkit import weights
from harness.toolkit.imaging import apply_input_spec, to_tensor


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRIVBENCH_HOME", str(tmp_path / "home"))
    return tmp_path


def _checkpoint(path: Path, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """A resnet18 saved as DataParallel would: {'state_dict': {'module.…': …}}."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model


def test_missing_weights_say_which_file_where_and_from_where(home: Path) -> None:
    state, detail = weights.status("resnet50-places365")
    assert state == "missing"
    assert str(home / "home" / "weights" / "resnet50_places365.pth.tar") in detail
    assert "places2.csail.mit.edu" in detail and "privbench weights add" in detail
    with pytest.raises(ModelFileError, match="not found: expected"):
        weights.locate("resnet50-places365")
    lacking = RECOGNIZERS.get("places365-resnet50").missing(
        RECOGNIZERS.resolve("places365-resnet50", {})
    )
    assert lacking and "resnet50_places365.pth.tar" in lacking[0]


def test_add_checks_published_hash_prefixes(home: Path) -> None:
    bogus = home / "resnet18-f37072fd.pth"
    bogus.write_bytes(b"not the real file")
    with pytest.raises(ModelFileError, match="does not start with f37072fd"):
        weights.add("resnet18-imagenet", bogus)
    assert weights.status("resnet18-imagenet")[0] == "missing"


def test_add_records_a_checksum_when_none_is_published(home: Path) -> None:
    ckpt = home / "places.pth.tar"
    _checkpoint(ckpt, num_classes=365)
    target = weights.add("resnet50-places365", ckpt)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert target.read_bytes() == ckpt.read_bytes()
    state, detail = weights.status("resnet50-places365")
    assert state == "ready" and "recorded when it was added" in detail
    target.write_bytes(b"tampered")
    state, detail = weights.status("resnet50-places365")
    assert state == "mismatch" and digest in detail
    with pytest.raises(UnknownNameError, match="did you mean resnet50-places365"):
        weights.get("resnet50-place365")


def test_weights_cli(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list"]) == 0
    assert "resnet50-places365" in capsys.readouterr().out
    assert main(["weights", "status"]) == 1  # nothing is installed here
    assert "missing" in capsys.readouterr().out
    assert main(["list", "recognizers"]) == 0
    out = capsys.readouterr().out
    assert "NOT READY" in out and "ready on this machine" in out


def test_checkpoint_classifier_matches_the_model_and_strips_module_prefix(home: Path, ctx) -> None:
    ckpt = home / "r18.pth"
    reference = _checkpoint(ckpt, num_classes=10)
    clf = RECOGNIZERS.create(
        "torchvision-classifier",
        {"arch": "resnet18", "checkpoint": str(ckpt), "num_classes": 10, "input_size": 32},
    )
    split = DATASETS.create("digits", {"max_probes": 20}).load(seed=0)
    x = to_tensor(split.probe.images)
    with torch.inference_mode():  # the same network, loaded directly, on the same input
        expected = reference(apply_input_spec(x, clf.input_spec)).argmax(1).numpy()
    # predict runs the same layers on the same batch of 20 in one pass: the same float32
    # arithmetic, so a near-tie breaks the same way
    assert np.array_equal(clf.predict(x, ctx), expected)


def test_class_names_map_model_classes_to_the_data_set(home: Path, ctx, tmp_path: Path) -> None:
    ckpt = home / "r18.pth"
    _checkpoint(ckpt, num_classes=3)
    names = tmp_path / "classes.txt"
    names.write_text("/a/9 0\n/b/3 1\n/c/airfield 2\n")  # Places365's file format
    clf = RECOGNIZERS.create(
        "torchvision-classifier",
        {
            "arch": "resnet18",
            "checkpoint": str(ckpt),
            "num_classes": 3,
            "input_size": 32,
            "classes_file": str(names),
        },
    )
    split = DATASETS.create("digits", {"max_probes": 30}).load(seed=0)
    clf.fit(split, ctx)
    raw = clf.logits(to_tensor(split.probe.images)).argmax(1).detach().numpy()
    mapped = clf.predict(to_tensor(split.probe.images), ctx)  # the same logits, same batch
    assert np.array_equal(mapped, np.array([9, 3, -2])[raw])


def test_wrong_architecture_is_a_clear_error(home: Path) -> None:
    ckpt = home / "r18.pth"
    _checkpoint(ckpt, num_classes=10)
    with pytest.raises(ModelFileError, match=r"does not fit resnet34\(num_classes=10\)"):
        RECOGNIZERS.create(
            "torchvision-classifier",
            {"arch": "resnet34", "checkpoint": str(ckpt), "num_classes": 10},
        )


def test_haar_finds_faces_not_non_faces(ctx) -> None:
    from skimage import data

    split = DATASETS.create("lfw-subset").load(seed=0)
    haar = RECOGNIZERS.create("haar")
    assert (haar.predict(to_tensor(split.probe.images), ctx) != -1).mean() >= 0.8
    assert (haar.predict(to_tensor(split.negatives.images), ctx) != -1).mean() <= 0.05
    big = RECOGNIZERS.create("haar", {"input_size": 512})
    assert big.predict(to_tensor(data.astronaut()[None]), ctx)[0] == 1
