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

from harness.api.contracts import CounterAttack, Dataset, Defense, Metric, Recognizer
from harness.api.method import Method
from harness.core.errors import PrivbenchError, UnknownNameError
from harness.core.params import Param, resolve_params, suggest

T = TypeVar("T", bound=Method)


class Registry(Generic[T]):
    """Name → class for one kind of pluggable component, fed by entry points.

    Each registered class is a :class:`~harness.api.method.Method` of the registry's kind and
    declares ``params: dict[str, Param]``; ``create`` validates the given parameters against
    them (and the class's ``check_params``) and calls ``cls(**resolved)``.
    """

    def __init__(self, kind: str, group: str, base: type[T]) -> None:
        self.kind = kind
        self.group = group
        self.base = base
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
        self._classes[name] = self._checked(name, cls, "added in this process")

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
        cls = self._checked(name, eps[name].load(), eps[name].value)
        self._classes[name] = cls
        return cls

    def _checked(self, name: str, cls: Any, origin: str) -> type[T]:
        """``cls`` if it is a class of this registry's kind; PrivbenchError otherwise."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PrivbenchError(
                f"{self.kind} {name!r} ({origin}) is not a {self.base.__name__} subclass"
            )
        return cls

    def distribution(self, name: str) -> tuple[str, str] | None:
        """(name, version) of the installed distribution whose entry point registers ``name``;
        None for classes added in this process."""
        if name in self._classes and name not in self._discover():
            return None
        ep = self._discover().get(name)
        dist = ep.dist if ep is not None else None
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
        return self.get(name).params

    def resolve(self, name: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``given`` for ``name`` and fill in defaults, then run the class's
        cross-parameter checks (:meth:`~harness.api.method.Method.check_params`)."""
        resolved = resolve_params(name, self.params_of(name), given)
        self.get(name).check_params(resolved)
        return resolved

    def create(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """Instantiate ``name`` with validated parameters."""
        return self.get(name)(**self.resolve(name, params or {}))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DEFENSES: Registry[Defense] = Registry("defense", "privbench.defenses", Defense)
RECOGNIZERS: Registry[Recognizer] = Registry("recognizer", "privbench.recognizers", Recognizer)
ATTACKS: Registry[CounterAttack] = Registry("counter-attack", "privbench.attacks", CounterAttack)
METRICS: Registry[Metric] = Registry("metric", "privbench.metrics", Metric)
DATASETS: Registry[Dataset] = Registry("dataset", "privbench.datasets", Dataset)

ALL_REGISTRIES: dict[str, Registry[Any]] = {
    "defenses": DEFENSES,
    "recognizers": RECOGNIZERS,
    "attacks": ATTACKS,
    "metrics": METRICS,
    "datasets": DATASETS,
}
