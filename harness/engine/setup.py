"""What every unit of a run shares, set up once per process: the data split and the suite's
recognizers with their clean predictions (cached). A recognizer is fitted only when something
needs the fitted model, so a run whose cells are all cached fits none."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.api.contracts import (
    Context,
    CounterAttack,
    DataSplit,
    Recognizer,
    SuiteRecognizer,
)
from harness.api.records import RecognizerRecords
from harness.api.registry import DATASETS, RECOGNIZERS
from harness.datasets.splits import describe_protocol
from harness.engine.cache_keys import predictions_parts, recognizer_identity
from harness.engine.inference import predict_all
from harness.engine.results import RecognizerResult, failure
from harness.engine.samples import draw_samples
from harness.engine.suite import MethodConfig, Suite


def load_split(suite: Suite) -> tuple[DataSplit, dict[str, Any]]:
    """The suite's data split, and what the manifest says about it (``dataset``)."""
    dataset = DATASETS.create(suite.dataset.name, suite.dataset.params)
    split = dataset.load(suite.seed)
    info = {
        "fingerprint": split.fingerprint(),
        "protocol": split.protocol,
        "protocol_description": describe_protocol(split.protocol),
        "probes_dropped": split.dropped,
        "sizes": {
            "fit": len(split.fit),
            "enroll": len(split.enroll),
            "probe": len(split.probe),
            "negatives": len(split.negatives) if split.negatives else 0,
        },
        "probe_image_size": list(split.probe.images.shape[1:3]),
    }
    return split, info


class FittedRecognizer:
    """A recognizer of the suite: its clean predictions, its cache identity, and the model,
    fitted on the split the first time something needs it (a cached run never does)."""

    def __init__(self, cfg: MethodConfig, model: Recognizer, identity: str, fit: Callable) -> None:
        self.cfg = cfg
        self.identity = identity
        self.kind = model.kind
        self.clean = np.zeros(0, dtype=np.int64)
        self._model = model
        self._fit = fit
        self._fitted = False

    @property
    def unfitted(self) -> Recognizer:
        """The model for what does not depend on its fit (``recognized``, ``reference_labels``)."""
        return self._model

    @property
    def model(self) -> Recognizer:
        if not self._fitted:
            self._fit(self._model)
            self._fitted = True
        return self._model

    def weights_identity(self) -> str | None:
        """:meth:`Recognizer.weights_identity`, fitting only a model whose identity is its fit."""
        if type(self._model).weights_identity is Recognizer.weights_identity:
            return self._model.weights_identity()
        return self.model.weights_identity()

    def not_applicable(self, attack: CounterAttack) -> str | None:
        if type(attack).not_applicable is CounterAttack.not_applicable:
            return None
        return attack.not_applicable(self.model)


class LazyRecognizers(Mapping[str, SuiteRecognizer]):
    """``Context.recognizers``: a defense that names a recognizer gets it fitted."""

    def __init__(self, fitted: list[FittedRecognizer]) -> None:
        self._by_label = {fr.cfg.label: fr for fr in fitted}

    def __getitem__(self, label: str) -> SuiteRecognizer:
        fr = self._by_label[label]
        return SuiteRecognizer(fr.model, fr.identity)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_label)

    def __len__(self) -> int:
        return len(self._by_label)


def set_up_recognizer(
    cfg: MethodConfig,
    split: DataSplit,
    split_fingerprint: str,
    suite: Suite,
    ctx: Context,
    timings: dict[str, float],
) -> tuple[FittedRecognizer, RecognizerRecords]:
    """One recognizer of the suite with its clean predictions on the probes (and on the
    negatives, for a detector), and its clean records; its fit, if it happens, is timed into
    ``timings``."""
    model: Recognizer = RECOGNIZERS.create(cfg.name, cfg.params)
    identity = recognizer_identity(model, split_fingerprint, suite.seed, suite.precision)

    def fit(m: Recognizer) -> None:
        t0 = time.perf_counter()
        m.fit(split, ctx)
        timings[f"fit:{cfg.label}"] = time.perf_counter() - t0

    fr = FittedRecognizer(cfg, model, identity, fit)
    fr.clean = _cached_predictions(fr, "probe", split.probe.images, suite, ctx)
    negatives = None
    if split.negatives is not None and fr.kind == "detector":
        predicted = _cached_predictions(fr, "negatives", split.negatives.images, suite, ctx)
        negatives = predicted != -1
    reference = model.reference_labels(split.probe.labels, fr.clean)
    records = RecognizerRecords(model.recognized(fr.clean, reference), negatives, fr.kind)
    return fr, records


def _cached_predictions(
    fr: FittedRecognizer, on: str, images: np.ndarray, suite: Suite, ctx: Context
) -> np.ndarray:
    return ctx.cache.arrays(
        "predictions",
        predictions_parts(fr.identity, on),
        lambda: {"pred": predict_all(fr.model, images, ctx, suite.precision)},
    )["pred"]


@dataclass
class Prepared:
    """What every unit of a run shares on one process: the split, what the manifest says about
    it (``info``), the report's sample rows, and the recognizers that could be set up."""

    split: DataSplit
    info: dict[str, Any]
    sample_index: np.ndarray
    fitted: list[FittedRecognizer]

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]


def load(suite: Suite, ctx: Context, timings: dict[str, float]) -> Prepared:
    """Load the split and draw the report's sample probes; no recognizer yet."""
    t0 = time.perf_counter()
    split, info = load_split(suite)
    timings["dataset"] = time.perf_counter() - t0
    sample_index = draw_samples(ctx, len(split.probe))
    info["samples"] = [split.probe.ids[i] for i in sample_index]
    return Prepared(split, info, sample_index, [])


def set_up_recognizers(
    prepared: Prepared, suite: Suite, ctx: Context, timings: dict[str, float]
) -> tuple[list[RecognizerResult], list[dict[str, str]]]:
    """Set up every recognizer of the suite with its clean predictions (cached) into
    ``prepared.fitted`` and ``ctx.recognizers``. Returns their clean records and the
    recognizers that failed."""
    results, failures = [], []
    for cfg in suite.recognizers:
        t0 = time.perf_counter()
        try:
            fr, records = set_up_recognizer(
                cfg, prepared.split, prepared.fingerprint, suite, ctx, timings
            )
        except Exception as exc:  # its cells fail; the other recognizers' cells go on
            failures.append(failure("recognizer", cfg.label, exc))
            continue
        timings[f"fit+clean:{cfg.label}"] = time.perf_counter() - t0
        prepared.fitted.append(fr)
        results.append(RecognizerResult(cfg, records))
    ctx.recognizers = LazyRecognizers(prepared.fitted)
    return results, failures
