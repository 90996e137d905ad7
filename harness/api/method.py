"""What every pluggable component declares: parameters, a cache version, smoke settings, the
weight files it reads, and the optional hooks the engine asks every method the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from harness.api.types import WeightFile
from harness.core.files import file_digest
from harness.core.params import Param


def apply_smoke(params: dict[str, Any], smoke: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each key of ``smoke`` it has set to the smoke value; numbers are upper
    bounds (``min``), and a number replaces ``None`` (which means "all" for sizes)."""
    out = dict(params)
    for key, value in smoke.items():
        if key not in out:
            continue
        current = out[key]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and isinstance(current, (int, float)) and not isinstance(current, bool):
            out[key] = min(current, value)
        else:
            out[key] = value
    return out


class Method:
    """Common to every pluggable component: declared parameters and a cache version.

    Bump ``version`` whenever a change alters the method's output, so cached artefacts made by
    the old code are not reused.
    """

    params: ClassVar[dict[str, Param]] = {}
    version: ClassVar[str] = "1"
    input_files: tuple[Path, ...] = ()  # files the method reads (model weights), set in __init__
    # ``privbench run --smoke``: the parameters that make the method cheap while every code
    # path still runs (fewest iterations, epochs, steps, probes). A number is an upper bound
    # (a suite's smaller value stays); anything else replaces the suite's value.
    smoke: ClassVar[dict[str, Any]] = {}
    # The pretrained weight files the method may read (``privbench weights`` lists them by
    # walking the registries; :mod:`harness.toolkit.weights` finds and checks them). Not
    # ``weights``: several methods take a parameter of that name (which weight file to use).
    weight_files: ClassVar[tuple[WeightFile, ...]] = ()

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Cross-parameter checks on resolved ``params`` (each value is already valid alone);
        raise ParamError naming the parameters. Default: none."""

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        """What this machine lacks to build the method with ``params`` (files, packages,
        folders), one sentence each saying where to get it; empty when ready. Must not raise.
        Default: nothing."""
        return []

    @classmethod
    def checks_readiness(cls) -> bool:
        """Whether the class says what a machine needs for it (overrides :meth:`missing`, as
        every recognizer and data set does); ``privbench list`` prints readiness for these."""
        return any("missing" in vars(k) for k in cls.__mro__[: cls.__mro__.index(Method)])

    @classmethod
    def smoke_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` (resolved) cut to :attr:`smoke`; methods that nest other methods'
        parameters (a chain's steps, a surrogate's) override this to cut those too."""
        return apply_smoke(params, cls.smoke)

    def __init__(self, **params: Any) -> None:
        self.config = dict(params)
        for key, value in params.items():
            setattr(self, key, value)

    def dependencies(self) -> dict[str, Any]:
        """What the output depends on besides the parameters and the code: the contents of the
        files the method reads (``input_files``, overlay images), as digests. Every cache key
        that holds this method's output includes it (:mod:`harness.engine.cache_keys`)."""
        return {"files": [file_digest(p) for p in self.input_files]} if self.input_files else {}
