"""Deprecated alias of `harness.core.errors` (moved in 0.2); it goes in the next release."""

import importlib
import sys
import warnings

warnings.warn(
    "harness.errors is deprecated; import harness.core.errors instead",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("harness.core.errors")
