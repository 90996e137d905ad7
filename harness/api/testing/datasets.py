"""Checks of data sets: every part of the split is uint8 images with int64 labels and unique
string ids, of one shape; the same parameters and seed give the same split."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.api.contracts import DataSplit, ImageSet
from harness.api.testing.case import Case


def assert_image_set(case: Case, part: str, s: Any) -> None:
    where = f"{case.id}: {part}"
    assert isinstance(s, ImageSet), f"{where} is a {type(s).__name__}, not an ImageSet"
    assert s.images.dtype == np.uint8 and s.images.ndim == 4, f"{where}: images not uint8 NHWC"
    assert s.images.shape[-1] in (1, 3), f"{where}: {s.images.shape[-1]} channels, not 1 or 3"
    labels = np.asarray(s.labels)
    assert labels.dtype == np.int64 and labels.shape == (len(s.images),), (
        f"{where}: labels {labels.dtype} {labels.shape}, not int64 [{len(s.images)}]"
    )
    assert all(isinstance(i, str) and i for i in s.ids), f"{where}: an id is not a string"
    assert len(set(s.ids)) == len(s.ids), f"{where}: ids repeat"


def check_split_contract(case: Case) -> None:
    """load(seed) gives a DataSplit with a protocol, at least one probe, parts of one image
    shape, and class names (if any) for every label."""
    split = case().load(case.seed)
    assert isinstance(split, DataSplit), f"{case.id}: load returned a {type(split).__name__}"
    assert isinstance(split.protocol, str) and split.protocol, f"{case.id}: no protocol"
    parts = {"fit": split.fit, "enroll": split.enroll, "probe": split.probe}
    if split.negatives is not None:
        parts["negatives"] = split.negatives
    for name, part in parts.items():
        assert_image_set(case, name, part)
    assert len(split.probe) >= 1, f"{case.id}: no probes"
    shapes = {name: p.images.shape[1:] for name, p in parts.items() if len(p)}
    assert len(set(shapes.values())) == 1, f"{case.id}: parts differ in shape: {shapes}"
    if split.class_names is not None:
        top = max(int(p.labels.max()) for n, p in parts.items() if len(p) and n != "negatives")
        assert top < len(split.class_names), (
            f"{case.id}: label {top} but only {len(split.class_names)} class names"
        )


def check_load_determinism(case: Case) -> None:
    """Two fresh instances load the same split (fingerprint and ids) for the same seed."""
    first, second = case().load(case.seed), case().load(case.seed)
    assert first.fingerprint() == second.fingerprint(), f"{case.id}: two loads differ"
    assert first.probe.ids == second.probe.ids, f"{case.id}: probe ids differ between loads"
