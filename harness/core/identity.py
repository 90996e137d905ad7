"""A method's identity: what determines its output, as plain data a cache key can hash.

It lives in core, below the contracts, because the contracts (a recognizer's ``state_key``) and
the engine's key kinds (:mod:`harness.engine.cache_keys`) both need it.
"""

from __future__ import annotations

from typing import Any, Protocol

from harness.core.code_version import module_code_version


class Identifiable(Protocol):
    """What :func:`method_identity` reads of a method (every ``harness.api`` method has it)."""

    version: Any
    config: dict[str, Any]

    def dependencies(self) -> dict[str, Any]: ...


def method_identity(method: Identifiable, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A method as it determines its output: class, version, parameters (less ``exclude``, the
    ones that only change how an output is scored), the code version of its module (its source
    and what it imports, :func:`~harness.core.code_version.module_code_version`) and its
    dependencies."""
    cls = type(method)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "version": cls.version,
        "config": {k: v for k, v in method.config.items() if k not in exclude},
        "source": module_code_version(cls.__module__),
        "dependencies": method.dependencies(),
    }
