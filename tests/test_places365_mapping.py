"""Places365 class names with '/' (Zhou et al., TPAMI 2018) against ``folder`` data sets, and the
``reference: clean`` fooling rule of MediaEval 2019 Pixel Privacy (Sakha, MediaEval 2019): any
change of the top-1 class counts, also between classes the data set lacks. All offline: a
resnet18 with random weights saved to tmp_path stands in for ResNet50-Places365."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from harness.api.records import CellRecords
from harness.api.registry import DATASETS, RECOGNIZERS
from harness.core.errors import DataError, PrivbenchError
from harness.runs.outcomes import CellOutcome
from harness.toolkit.imaging import to_tensor
from recognizers.torchvision_classifier import (
    FIRST_UNMAPPED,
    flatten_class_name,
    map_classes,
    read_class_names,
)

# Places365's file format: '/<first letter>/<name> <index>'; three of the names hold a '/'.
CLASS_FILE = (
    "/a/airfield 0\n/b/bedroom 1\n/c/church/indoor 2\n/c/church/outdoor 3\n"
    "/s/swimming_pool/indoor 4\n"
)
MODEL_NAMES = ["airfield", "bedroom", "church/indoor", "church/outdoor", "swimming_pool/indoor"]
PER_CLASS = 3


def _image(path: Path, colour: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (12, 12), (colour, 255 - colour, (7 * colour) % 256))
    img.putpixel((colour % 12, 0), (255, 255, 255))  # no two images equal
    img.save(path)


def _tree(root: Path, folders: list[str]) -> Path:
    """``PER_CLASS`` tiny distinct PNGs in each of ``folders`` (relative, '/'-separated)."""
    for k, folder in enumerate(folders):
        for i in range(PER_CLASS):
            _image(root / folder / f"{i}.png", 20 * k + i)
    return root


def _load(root: Path, **params: object):
    return DATASETS.create("folder", {"root": str(root), **params}).load(seed=0)


def _all_ids_labels(split) -> set[tuple[str, int]]:
    parts = (split.fit, split.probe)
    return {(i, int(lab)) for s in parts for i, lab in zip(s.ids, s.labels, strict=True)}


@pytest.fixture
def class_file(tmp_path: Path) -> Path:
    path = tmp_path / "categories_places365.txt"
    path.write_text(CLASS_FILE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 with 5 outputs and random weights, saved as DataParallel would."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=len(MODEL_NAMES)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "places-tiny.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def _classifier(checkpoint: Path, class_file: Path, reference: str = "truth"):
    return RECOGNIZERS.create(
        "torchvision-classifier",
        {
            "arch": "resnet18",
            "checkpoint": str(checkpoint),
            "num_classes": len(MODEL_NAMES),
            "input_size": 32,
            "classes_file": str(class_file),
            "reference": reference,
        },
    )


def test_places365_class_file_keeps_the_slash_inside_names(class_file: Path) -> None:
    assert read_class_names(class_file) == MODEL_NAMES
    assert flatten_class_name("church/indoor") == "church_indoor"
    assert flatten_class_name("airfield") == "airfield"


def test_nested_folders_are_classes_named_by_their_path(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", ["airfield", "church/indoor", "church/outdoor"])
    split = _load(root, fit_fraction=0.34)
    assert split.class_names == ["airfield", "church/indoor", "church/outdoor"]
    pairs = _all_ids_labels(split)
    assert len(pairs) + split.dropped == 3 * PER_CLASS  # nothing silently dropped
    assert ("church/indoor/0.png", 1) in pairs and ("church/outdoor/2.png", 2) in pairs
    assert {lab for _, lab in pairs} == {0, 1, 2}
    # 'church' holds sub-folders only: a container, not a class


def test_a_folder_with_images_and_sub_folders_is_a_class_and_so_are_they(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path / "data", ["desert", "desert/vegetation", "desert_road"])
    split = _load(root, fit_fraction=0.34)
    assert split.class_names == ["desert", "desert/vegetation", "desert_road"]
    assert ("desert/vegetation/1.png", 1) in _all_ids_labels(split)


def test_a_leaf_folder_without_images_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", ["airfield", "church/indoor"])
    empty = root / "church" / "outdoor"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    with pytest.raises(DataError, match=f"{empty}: a folder with no images"):
        _load(root)
    # validate (missing) says the same before anything runs
    lacking = DATASETS.get("folder").missing({"root": str(root)})
    assert len(lacking) == 1 and str(empty) in lacking[0]
    # also in a one-level tree: an empty class folder is never a silently empty class
    flat = _tree(tmp_path / "flat", ["alice", "bob"])
    (flat / "carol").mkdir()
    with pytest.raises(DataError, match=f"{flat / 'carol'}: a folder with no images"):
        _load(flat)


def test_a_one_level_tree_reads_as_before(tmp_path: Path) -> None:
    names = ["bob", "Alice", "alice_2", "zed"]
    root = _tree(tmp_path / "data", names)
    (root / "bob" / "readme.txt").write_text("ignored, as before")
    _image(root / "stray.png", 1)  # an image directly in root belongs to no class, as before
    split = _load(root)
    classes = sorted(names)  # the previous reader: sorted sub-folder names, one label each
    assert split.class_names == classes
    expected = {(f"{c}/{i}.png", classes.index(c)) for c in names for i in range(PER_CLASS)}
    assert split.dropped == 0 and _all_ids_labels(split) == expected
    assert split.fingerprint() == _load(root).fingerprint()


def test_nested_and_flattened_layouts_map_to_the_model_classes(
    tmp_path: Path, class_file: Path, checkpoint: Path, ctx
) -> None:
    nested = _tree(tmp_path / "nested", ["airfield", "church/indoor", "church/outdoor"])
    flat = _tree(tmp_path / "flat", ["airfield", "church_indoor", "church_outdoor"])
    mappings = []
    for root in (nested, flat):
        split = _load(root, fit_fraction=0.34)
        clf = _classifier(checkpoint, class_file)
        clf.fit(split, ctx)
        # model order: airfield, bedroom, church/indoor, church/outdoor, swimming_pool/indoor
        mapping = clf._to_dataset
        assert mapping.tolist() == [0, FIRST_UNMAPPED, 1, 2, FIRST_UNMAPPED - 1]
        # predictions are the mapped top-1 class, as decide() says
        x = to_tensor(split.probe.images)
        top1 = clf.logits(x).argmax(1).detach().numpy()
        assert np.array_equal(clf.predict(x, ctx), mapping[top1])
        assert np.array_equal(clf.predict(x, ctx), clf.decide(clf.scores(x, ctx)))
        mappings.append(mapping)
    assert np.array_equal(*mappings)


def test_names_that_flatten_to_one_key_are_an_error_naming_both(
    tmp_path: Path, class_file: Path, checkpoint: Path, ctx
) -> None:
    with pytest.raises(PrivbenchError, match=r"'church/indoor' \(#0\) and 'church_indoor' \(#2\)"):
        map_classes(["church/indoor", "airfield", "church_indoor"], ["airfield"])
    # a data set holding one category in both layouts
    root = _tree(tmp_path / "both", ["church/indoor", "church_indoor"])
    split = _load(root, fit_fraction=0.34)
    clf = _classifier(checkpoint, class_file)
    with pytest.raises(PrivbenchError, match=r"data set.*'church/indoor'.*'church_indoor'"):
        clf.fit(split, ctx)


def test_unmapped_model_classes_get_distinct_labels_below_minus_one() -> None:
    data = ["church_indoor", "airfield", "harbour"]  # 'harbour' is no model class
    mapping = map_classes(MODEL_NAMES, data)
    assert mapping.tolist() == [1, -2, 0, -3, -4]
    unmapped = mapping[mapping < 0]
    assert len(set(unmapped.tolist())) == len(unmapped) and (unmapped < -1).all()
    assert not set(unmapped.tolist()) & set(range(len(data)))  # never a true label


def test_logit_index_inverts_decide(
    tmp_path: Path, class_file: Path, checkpoint: Path, ctx
) -> None:
    root = _tree(tmp_path / "data", ["airfield", "church/indoor", "harbour"])
    split = _load(root, fit_fraction=0.34)
    clf = _classifier(checkpoint, class_file)
    clf.fit(split, ctx)
    scores = np.eye(len(MODEL_NAMES), dtype=np.float32)  # row k: top-1 is model class k
    labels = clf.decide(scores)
    assert labels.tolist() == [0, -2, 1, -3, -4]
    assert clf.logit_index(labels).tolist() == list(range(len(MODEL_NAMES)))
    # data-set labels as retrain and the protective U-Net use them: index >= 0 only where the
    # model has the class; 'harbour' (2) and −1 (no face) have none
    assert clf.logit_index(np.array([0, 1, 2, -1])).tolist() == [0, 2, -1, -1]


def test_a_change_between_two_unmapped_classes_is_fooled_with_reference_clean(
    tmp_path: Path, class_file: Path, checkpoint: Path, ctx
) -> None:
    split = _load(_tree(tmp_path / "data", ["airfield", "church/indoor"]), fit_fraction=0.34)
    clean_model = _classifier(checkpoint, class_file, reference="clean")
    truth_model = _classifier(checkpoint, class_file, reference="truth")
    for m in (clean_model, truth_model):
        m.fit(split, ctx)

    def scores(*top1: int) -> np.ndarray:
        s = np.zeros((len(top1), len(MODEL_NAMES)), dtype=np.float32)
        s[np.arange(len(top1)), top1] = 1.0
        return s

    # three photos of church/indoor (label 1): clean top-1 bedroom (unmapped: −2) each time;
    # protected: swimming_pool/indoor (another unmapped class: −4; church/outdoor is −3),
    # bedroom again, church/indoor
    labels = np.array([1, 1, 1])
    expected_fooled = {"clean": [True, False, True], "truth": [False, False, False]}
    for name, m in (("clean", clean_model), ("truth", truth_model)):
        clean = m.decide(scores(1, 1, 1))
        protected = m.decide(scores(4, 1, 2))
        assert clean.tolist() == [-2, -2, -2] and protected.tolist() == [-4, -2, 1]
        reference = m.reference_labels(labels, clean)  # as harness/execute.py scores a cell
        records = CellRecords(
            ids=["a", "b", "c"],
            labels=labels,
            pred_clean=clean,
            pred_protected=protected,
            recognized_clean=m.recognized(clean, reference),
            recognized_protected=m.recognized(protected, reference),
        )
        assert records.detected_protected.all()  # −1 stays "no answer"; ≤ −2 is an answer
        outcome = CellOutcome.from_records(records)
        assert outcome.fooled.tolist() == expected_fooled[name], name
