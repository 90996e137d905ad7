"""One small generic registry for every pluggable kind (defenses, recognizers, ...).

Built-in methods and outside packages register the same way: an entry point in the group
``privbench.<kind>`` whose name is the method name and whose value is the class. Classes are
imported only when used, so ``privbench validate`` does not pay for torch models it never builds.
Programmatic registration (``Registry.add``) serves tests and notebooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from harness.core.errors import UnknownNameError
from harness.core.params import Param, resolve_params, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → class for one kind of pluggable component, fed by entry points.

    Each registered class declares ``params: dict[str, Param]``; ``create`` validates the given
    parameters against them and calls ``cls(**resolved)``.
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entry_points: dict[str, EntryPoint] | None = None
        self._classes: dict[str, type[T]] = {}

    def _discover(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._entry_points

    def refresh(self) -> None:
        """Forget what was discovered, so that packages installed since are found (the classes
        added with :meth:`add` stay)."""
        loaded = {ep.name for ep in (self._entry_points or {}).values()}
        self._classes = {n: c for n, c in self._classes.items() if n not in loaded}
        self._entry_points = None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(set(self._discover()) | set(self._classes))

    def add(self, name: str, cls: type[T]) -> None:
        """Register ``cls`` under ``name`` in this process (tests, notebooks)."""
        self._classes[name] = cls

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator form of :meth:`add`."""

        def deco(cls: type[T]) -> type[T]:
            self.add(name, cls)
            return cls

        return deco

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; UnknownNameError with suggestions otherwise."""
        if name in self._classes:
            return self._classes[name]
        eps = self._discover()
        if name not in eps:
            raise UnknownNameError(self.unknown_message(name))
        cls = eps[name].load()
        self._classes[name] = cls
        return cls

    def distribution(self, name: str) -> tuple[str, str] | None:
        """(name, version) of the installed distribution whose entry point registers ``name``;
        None for classes added in this process."""
        if name in self._classes and name not in self._discover():
            return None
        ep = self._discover().get(name)
        dist = getattr(ep, "dist", None)
        return (dist.metadata["Name"], dist.version) if dist is not None else None

    def unknown_message(self, name: str) -> str:
        """'unknown defense 'x' (did you mean y?); valid: ...'."""
        valid = self.names()
        return (
            f"unknown {self.kind} {name!r}{suggest(name, valid)}; "
            f"valid {self.kind}s: {', '.join(valid)}"
        )

    def params_of(self, name: str) -> Mapping[str, Param]:
        """The declared parameters of ``name``."""
        return getattr(self.get(name), "params", {})

    def resolve(self, name: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``given`` for ``name`` and fill in defaults; a class may add cross-parameter
        checks in a ``check_params(resolved)`` classmethod that raises ParamError."""
        resolved = resolve_params(name, self.params_of(name), given)
        check = getattr(self.get(name), "check_params", None)
        if callable(check):
            check(resolved)
        return resolved

    def create(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """Instantiate ``name`` with validated parameters."""
        resolved = self.resolve(name, params or {})
        instance = self.get(name)(**resolved)
        return instance

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DEFENSES: Registry[Any] = Registry("defense", "privbench.defenses")
RECOGNIZERS: Registry[Any] = Registry("recognizer", "privbench.recognizers")
ATTACKS: Registry[Any] = Registry("counter-attack", "privbench.attacks")
METRICS: Registry[Any] = Registry("metric", "privbench.metrics")
DATASETS: Registry[Any] = Registry("dataset", "privbench.datasets")

ALL_REGISTRIES: dict[str, Registry[Any]] = {
    "defenses": DEFENSES,
    "recognizers": RECOGNIZERS,
    "attacks": ATTACKS,
    "metrics": METRICS,
    "datasets": DATASETS,
}
