"""Deprecated alias of `harness.api.contracts` (moved in 0.2); it goes in the next release."""

import importlib
import sys
import warnings

warnings.warn(
    "harness.contracts is deprecated; import harness.api.contracts instead",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("harness.api.contracts")
