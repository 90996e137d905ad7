"""privbench's plugin SDK: everything a defense, recognizer, counter-attack, metric or data set
needs from privbench, importable as ``from harness.api import Defense, Context, Param``.

The contracts (:mod:`harness.api.contracts`), the data they exchange (:mod:`harness.api.types`),
declared parameters and the errors a method raises (from :mod:`harness.core`), the owner's
optional file hooks (:mod:`harness.api.photo_files`), per-image records for metrics
(:mod:`harness.api.records`) and the registries a plugin's entry points feed
(:mod:`harness.api.registry`). Helpers for methods (image conversions, weight files, torch
modules) are in :mod:`harness.toolkit`.
"""

from harness.api.contracts import (
    KNOWLEDGE_LEVELS,
    REFERENCE_PARAM,
    Context,
    CounterAttack,
    Dataset,
    Defense,
    DefenseObjective,
    Metric,
    MetricScope,
    MetricValue,
    Objective,
    QualityMetric,
    Recognizer,
    RecognizerKind,
    SuiteRecognizer,
)
from harness.api.method import Method, apply_smoke
from harness.api.photo_files import ExactArrays, PhotoIds
from harness.api.records import CellRecords, DefenseRecords, RecognizerRecords
from harness.api.registry import (
    ALL_REGISTRIES,
    ATTACKS,
    DATASETS,
    DEFENSES,
    METRICS,
    RECOGNIZERS,
    Registry,
)
from harness.api.types import DataSplit, ImageSet, InputSpec, WeightFile, derive_seed
from harness.core.errors import DataError, ModelFileError, ParamError, PrivbenchError
from harness.core.params import Param

__all__ = [
    "ALL_REGISTRIES",
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "KNOWLEDGE_LEVELS",
    "METRICS",
    "RECOGNIZERS",
    "REFERENCE_PARAM",
    "CellRecords",
    "Context",
    "CounterAttack",
    "DataError",
    "DataSplit",
    "Dataset",
    "Defense",
    "DefenseObjective",
    "DefenseRecords",
    "ExactArrays",
    "ImageSet",
    "InputSpec",
    "Method",
    "Metric",
    "MetricScope",
    "MetricValue",
    "ModelFileError",
    "Objective",
    "Param",
    "ParamError",
    "PhotoIds",
    "PrivbenchError",
    "QualityMetric",
    "Recognizer",
    "RecognizerKind",
    "RecognizerRecords",
    "Registry",
    "SuiteRecognizer",
    "WeightFile",
    "apply_smoke",
    "derive_seed",
]
