"""Deprecated alias of `harness.api.registry` (moved in 0.2); it goes in the next release."""

import importlib
import sys
import warnings

warnings.warn(
    "harness.registry is deprecated; import harness.api.registry instead",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("harness.api.registry")
