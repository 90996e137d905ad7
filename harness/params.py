"""Deprecated alias of `harness.core.params` (moved in 0.2); it goes in the next release."""

import importlib
import sys
import warnings

warnings.warn(
    "harness.params is deprecated; import harness.core.params instead",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("harness.core.params")
