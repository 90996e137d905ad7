"""What a data set's split measures (its protocol) and the seeded splits the built-in data sets
share: per class a share to fit and enrol, the rest probes, at most so many of them."""

from __future__ import annotations

import numpy as np

from harness.api.contracts import DataSplit, ImageSet
from harness.core.params import Param

# What each protocol measures, written into the manifest and above every leaderboard.
PROTOCOLS: dict[str, str] = {
    "near-duplicate-linking": "the gallery holds each probe's own clean original: can the "
    "platform link a protected photo to the photo it was made from (what reverse image search "
    "does)? This is not face recognition across different photos of a person",
    "recognition": "the gallery holds other photos of each identity than the probes: can the "
    "platform recognise the person in a photo it has never seen?",
    "detection": "probes are faces, negatives are non-faces: is there a face at all?",
    "classification": "closed-set classes; classifiers train on the fit split, which holds "
    "none of the probe photos",
}


def describe_protocol(protocol: str) -> str:
    """The descriptions of a protocol name such as 'near-duplicate-linking+detection'."""
    return "; ".join(f"{p}: {PROTOCOLS.get(p, '(no description)')}" for p in protocol.split("+"))


def _stratified_split(
    labels: np.ndarray, fit_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, probe): per class a ``fit_fraction`` share to fit, at least one each side
    when the class has two or more images; sorted, so the order does not depend on the shuffle."""
    fit, probe = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_fit = round(fit_fraction * len(idx))
        n_fit = min(max(n_fit, 1), len(idx) - 1) if len(idx) >= 2 else len(idx)
        fit.extend(idx[:n_fit])
        probe.extend(idx[n_fit:])
    return np.sort(np.asarray(fit, dtype=np.int64)), np.sort(np.asarray(probe, dtype=np.int64))


SPLIT_PARAMS: dict[str, Param] = {
    "fit_fraction": Param(
        float,
        0.5,
        "share of each class used to fit/enroll",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    ),
    "max_probes": Param(int, None, "use at most this many probes (seeded subset)", low=1),
}


def stratified_split(
    everything: ImageSet,
    fit_fraction: float,
    max_probes: int | None,
    seed: int,
    protocol: str,
    class_names: list[str] | None = None,
) -> DataSplit:
    """Per class, ``fit_fraction`` of the images fit and enroll; the rest are probes (at most
    ``max_probes`` of them, a seeded subset)."""
    rng = np.random.default_rng(seed)
    fit_idx, probe_idx = _stratified_split(everything.labels, fit_fraction, rng)
    fit = everything.subset(fit_idx)
    probe = limit(everything.subset(probe_idx), max_probes, rng)
    return DataSplit(fit=fit, enroll=fit, probe=probe, protocol=protocol, class_names=class_names)


def limit(images: ImageSet, max_count: int | None, rng: np.random.Generator) -> ImageSet:
    if max_count is None or max_count >= len(images):
        return images
    return images.subset(np.sort(rng.choice(len(images), size=max_count, replace=False)))
