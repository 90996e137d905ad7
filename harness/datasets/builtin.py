"""The built-in data sets under their first module path: they now live in
:mod:`harness.datasets.splits` (protocols, splits), :mod:`~harness.datasets.faces`
(``lfw-subset``), :mod:`~harness.datasets.folder` and :mod:`~harness.datasets.small` (digits,
scenes, CIFAR-10). Kept while ``harness.engine.execute`` imports ``describe_protocol`` from here
and for installs whose entry points still name this module; it goes in the next release.
"""

from harness.api.contracts import Dataset
from harness.datasets.faces import LfwSubset, augmented_views
from harness.datasets.folder import Folder
from harness.datasets.small import Cifar10, Digits, Scenes
from harness.datasets.splits import PROTOCOLS, SPLIT_PARAMS, describe_protocol, stratified_split

__all__ = [
    "PROTOCOLS",
    "SPLIT_PARAMS",
    "Cifar10",
    "Dataset",
    "Digits",
    "Folder",
    "LfwSubset",
    "Scenes",
    "augmented_views",
    "describe_protocol",
    "stratified_split",
]
