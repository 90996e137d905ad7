"""One small generic registry for every pluggable kind (defenses, recognizers, ...).

Built-in methods and outside packages register the same way: an entry point in the group
``privbench.<kind>`` whose name is the method name and whose value is the class. Classes are
imported only when used, so ``privbench validate`` does not pay for torch models it never builds.
Programmatic registration (``Registry.add``) serves tests and notebooks.

A plugin cannot break what does not use it, nor replace a built-in: an entry point that fails
to load is reported once (a warning naming it, its distribution and the error) and skipped by
everything that enumerates methods, and is a :class:`PluginError` only where it is asked for by
name; an entry point of another distribution that takes the name of one of privbench's own is
ignored (the built-in is used) with a warning. A plugin adds a method under a name of its own
by namespacing it, ``package:name``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from harness.api.contracts import CounterAttack, Dataset, Defense, Metric, Recognizer
from harness.api.method import Method
from harness.core.errors import PluginError, UnknownNameError
from harness.core.limits import shorten
from harness.core.params import Param, resolve_params, suggest

T = TypeVar("T", bound=Method)

BUILTIN_DISTRIBUTION = "privbench"  # the distribution whose entry points are the built-ins


def distribution_of(ep: EntryPoint) -> str:
    """The name of the distribution that declares ``ep`` ('?' where it is not known)."""
    dist = ep.dist
    return str(dist.metadata["Name"]) if dist is not None else "?"


def is_builtin(ep: EntryPoint) -> bool:
    """Whether ``ep`` is declared by privbench itself."""
    return normalised(distribution_of(ep)) == BUILTIN_DISTRIBUTION


def normalised(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return name.lower().replace("_", "-").replace(".", "-")


def warn_plugin(message: str) -> None:
    """A plugin problem that does not stop privbench, on stderr."""
    print(f"privbench: warning: {shorten(message)}", file=sys.stderr)


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
        self._broken: dict[str, str] = {}  # name → why its entry point cannot be used
        self._reported: set[str] = set()

    def _discover(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = self._usable(list(entry_points(group=self.group)))
        return self._entry_points

    def _usable(self, eps: list[EntryPoint]) -> dict[str, EntryPoint]:
        """Name → entry point: privbench's own first, then every plugin entry point whose name
        is not taken (a taken name is reported once and ignored)."""
        builtin = {ep.name: ep for ep in eps if is_builtin(ep)}
        out = dict(builtin)
        for ep in sorted(eps, key=lambda e: (distribution_of(e).lower(), e.name)):
            if ep.name in builtin and is_builtin(ep):
                continue
            dist, prefix = distribution_of(ep), ep.name.partition(":")[0]
            if ep.name in out or (":" in ep.name and prefix.lower() == BUILTIN_DISTRIBUTION):
                owner = distribution_of(out[ep.name]) if ep.name in out else BUILTIN_DISTRIBUTION
                self._report(
                    ep.name,
                    f"plugin {dist} registers {self.kind} {ep.name!r} ({self.group}), a name "
                    f"{owner} already provides; it is ignored and {owner}'s is used (a plugin "
                    f"names its own methods 'package:name', e.g. '{normalised(dist)}:"
                    f"{ep.name.rpartition(':')[2]}')",
                )
                continue
            out[ep.name] = ep
        return out

    def _report(self, name: str, message: str) -> None:
        """Warn about ``name`` once per discovery."""
        if name not in self._reported:
            self._reported.add(name)
            warn_plugin(message)

    def refresh(self) -> None:
        """Forget what was discovered, so that packages installed since are found (the classes
        added with :meth:`add` stay)."""
        loaded = {ep.name for ep in (self._entry_points or {}).values()}
        self._classes = {n: c for n, c in self._classes.items() if n not in loaded}
        self._entry_points = None
        self._broken, self._reported = {}, set()

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
        """The class registered as ``name``; UnknownNameError with suggestions otherwise, and
        PluginError where its entry point cannot be loaded."""
        if name in self._classes:
            return self._classes[name]
        eps = self._discover()
        if name not in eps:
            raise UnknownNameError(self.unknown_message(name))
        if name in self._broken:
            raise PluginError(self._broken[name])
        ep = eps[name]
        origin = f"{ep.value} of plugin {distribution_of(ep)}"
        try:
            loaded = ep.load()
        except Exception as exc:  # a plugin's import can fail in any way
            self._broken[name] = shorten(
                f"{self.kind} {name!r} ({origin}, entry point group {self.group}) cannot be "
                f"loaded: {type(exc).__name__}: {exc}; fix or uninstall {distribution_of(ep)}"
            )
            raise PluginError(self._broken[name]) from None
        try:
            cls = self._checked(name, loaded, origin)
        except PluginError as exc:
            self._broken[name] = str(exc)
            raise
        self._classes[name] = cls
        return cls

    def loadable(self) -> dict[str, type[T]]:
        """Name → class of every registered method that loads, sorted by name; each one that
        does not is reported once on stderr and left out."""
        out: dict[str, type[T]] = {}
        for name in self.names():
            try:
                out[name] = self.get(name)
            except PluginError as exc:
                self._report(name, f"{exc} (skipped)")
        return out

    def _checked(self, name: str, cls: Any, origin: str) -> type[T]:
        """``cls`` if it is a class of this registry's kind; PluginError otherwise."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
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
