"""The code a cached result depends on: the source of the modules that compute it.

A result's *code version* is a sha256 over the source of the modules that compute it and of
every module they import, transitively, within privbench's packages (``harness``, ``defenses``,
``recognizers``, ``attacks``) and within the package of the module it starts from (a plugin's).
Editing a module outside that closure (a leaderboard, the CLI, another defense) leaves the
version, and every cached result keyed by it, as it was.

Two things start a closure:

- a method's class: :func:`module_code_version` of its module, which
  :func:`harness.core.identity.method_identity` puts in every key that names the method;
- a kind of cache entry: the modules that compute it, declared once per kind with
  :func:`declare_kind_code` (the engine's kinds in :mod:`harness.engine.cache_keys`, a method's
  own kinds next to the method). :func:`kind_code_version` of a kind nobody declared is the
  digest of *all* of privbench's source files, as every key was before.

Imports are found with :mod:`ast` over each module's source, not with :mod:`modulefinder`:
modulefinder follows every import into the standard library and third-party packages (torch
alone is thousands of modules) and keeps ``if TYPE_CHECKING:`` imports, while ``ast`` reads only
privbench's own files, sees imports deferred into function bodies (every node of the tree is
walked) and lets those under ``if TYPE_CHECKING:`` be skipped, since they never run.

Conservative where the source cannot say: a closure holding a module that calls
``importlib.import_module`` or ``__import__`` with a name that is not a literal, or that imports a
module of the project that has no source file, has the whole-source digest for its version
(plus its own files, for a plugin). Entry points (:mod:`harness.api.registry` loads methods
through them) are not followed: what they load is a method, which carries its own version.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

# privbench's own packages: its code, whose import closures are followed.
PROJECT_PACKAGES = ("harness", "defenses", "recognizers", "attacks")
# Calls that import a module named at run time; a literal name is followed like an import.
DYNAMIC_IMPORTS = {"import_module", "__import__"}


def source_digest(package_dirs: Iterable[Path]) -> str:
    """sha256 over the relative paths and bytes of every ``.py`` file below ``package_dirs``."""
    h = hashlib.sha256()
    for root in package_dirs:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            h.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Modules:
    """Modules within the followed packages (what one module's source imports, or the closure
    of a set of modules), and what could not be followed: a project module without a source
    file, a dynamic import."""

    modules: frozenset[str]
    unresolved: tuple[str, ...]


class SourceTree:
    """The source files of a set of top-level packages, read from disk once: each module's
    imports, the closure of a set of modules and its code version (each computed once)."""

    def __init__(self, roots: Mapping[str, Path]) -> None:
        self.roots = dict(roots)  # top-level package name -> its folder (or single .py file)
        self._imports: dict[str, Modules] = {}
        self._versions: dict[frozenset[str], str] = {}
        self._outside: dict[str, Path | None] = {}
        self._files: dict[str, Path | None] = {}
        self._dists: dict[str, str] = {}
        self._whole: str | None = None

    def file(self, module: str) -> Path | None:
        """The source file of ``module`` (a package's ``__init__.py``), or None."""
        if module not in self._files:
            self._files[module] = self._find(module)
        return self._files[module]

    def _find(self, module: str) -> Path | None:
        top, *rest = module.split(".")
        if top not in self.roots and top not in self._outside:
            self._outside[top] = _outside_root(top)
        root = self.roots.get(top) or self._outside[top]
        if root is None or (root.suffix == ".py" and rest):
            return None
        if root.suffix == ".py":
            return root
        base = root.joinpath(*rest)
        for candidate in (base / "__init__.py", base.with_name(base.name + ".py")):
            if candidate.is_file() and (rest or candidate.name == "__init__.py"):
                return candidate
        return None

    def imports(self, module: str) -> Modules:
        """The modules that ``module``'s source imports from the tree's packages or its own, with
        their parent packages, wherever the import statement is, except under
        ``if TYPE_CHECKING:``."""
        if module not in self._imports:
            path = self.file(module)
            assert path is not None, module
            source = path.read_bytes()
            tree = ast.parse(source, filename=str(path))
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            named, dynamic = _imported_names(tree, package, source)
            tops = {*self.roots, module.split(".")[0]}
            found: set[str] = set()
            unresolved = [f"{module} (dynamic import)"] if dynamic else []
            for name, must_exist in sorted(named):
                if name.split(".")[0] in tops:
                    missing = self._add_modules(name, must_exist, found)
                    unresolved += [f"{missing} (imported by {module})"] if missing else []
            self._imports[module] = Modules(frozenset(found), tuple(unresolved))
        return self._imports[module]

    def _add_modules(self, name: str, must_exist: bool, found: set[str]) -> str | None:
        """Add ``a``, ``a.b``, ``a.b.c`` of ``name`` to ``found`` as far as each has a source file;
        return the first that has none, unless it is the last part of a name that need not be
        a module (``from a.b import c``, where ``c`` may be a name defined in ``a.b``)."""
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if self.file(prefix) is None:
                return prefix if must_exist or i < len(parts) else None
            found.add(prefix)
        return None

    def closure(self, modules: Iterable[str]) -> Modules:
        """``modules`` and everything they import, transitively, within privbench's packages
        and the top-level packages of ``modules`` themselves."""
        found: set[str] = set()
        unresolved = [m for m in modules if self._add_modules(m, True, found)]
        seen: set[str] = set()
        todo = sorted(found)
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            imported = self.imports(module)
            unresolved += imported.unresolved
            todo.extend(imported.modules - seen)
        return Modules(frozenset(seen), tuple(sorted(set(unresolved))))

    def version(self, modules: Iterable[str]) -> str:
        """The code version of ``modules``: sha256 over the names and source of their closure
        and the distribution of each top-level package outside privbench's; the whole-source
        digest joins it where the closure could not be followed."""
        wanted = frozenset(modules)
        if wanted not in self._versions:
            found = self.closure(wanted)
            h = hashlib.sha256()
            for module in sorted(found.modules):
                path = self.file(module)
                assert path is not None, module
                h.update(f"{module}\0".encode() + path.read_bytes() + b"\0")
            for top in sorted({m.split(".")[0] for m in found.modules} - set(self.roots)):
                if top not in self._dists:
                    self._dists[top] = _distributions(top)
                h.update(f"dist:{top}={self._dists[top]}\0".encode())
            if found.unresolved:
                h.update(f"whole:{self.whole()}\0".encode())
            self._versions[wanted] = h.hexdigest()
        return self._versions[wanted]

    def whole(self) -> str:
        """The digest of every source file of privbench's packages (what every key held
        before code versions were per module)."""
        if self._whole is None:
            self._whole = source_digest(self.roots[name] for name in sorted(self.roots))
        return self._whole


def _imported_names(
    tree: ast.Module, package: str, source: bytes
) -> tuple[set[tuple[str, bool]], bool]:
    """(absolute module name, whether it must be a module) for each import statement anywhere
    in ``tree`` outside ``if TYPE_CHECKING:`` blocks (``package`` resolves relative imports);
    and whether a module is imported by a name computed at run time."""
    names: set[tuple[str, bool]] = set()
    for node in _runtime_statements(tree):
        if isinstance(node, ast.Import):
            names.update((alias.name, True) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            names.add((base, True))
            names.update((f"{base}.{a.name}", False) for a in node.names if a.name != "*")
    dynamic = False
    # import calls are expressions: walked only where the text has one (walking every
    # expression of every module would cost more than parsing it)
    if any(call.encode() in source for call in DYNAMIC_IMPORTS):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called_name(node) in DYNAMIC_IMPORTS:
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add((first.value, True))
                else:
                    dynamic = True
    return names, dynamic


def _runtime_statements(tree: ast.Module) -> Iterator[ast.AST]:
    """Every statement of ``tree``, nested ones included (function and class bodies, branches,
    handlers), except the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs, so it is
    kept)."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(
            child
            for child in ast.iter_child_nodes(node)
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case))
        )


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``package``."""
    if level == 0:
        return module or ""
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _outside_root(top: str) -> Path | None:
    """The folder (or file) of a top-level package that is not privbench's (a plugin's, or a
    module that defines a method elsewhere), or None where it has no source on disk."""
    module = sys.modules.get(top)
    origin = getattr(module, "__file__", None)
    if origin is None:
        try:
            spec = find_spec(top)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py"):
        return None
    path = Path(origin).resolve()
    return path.parent if path.name == "__init__.py" else path


def _distributions(top: str) -> str:
    """``name==version`` of each installed distribution whose ``privbench.*`` entry points name
    a module of top-level package ``top`` (a plugin's), or "-" where none does. Entry points,
    not ``packages_distributions()``, which reads every distribution's file list."""
    found = set()
    points = entry_points()
    for group in sorted(g for g in points.groups if g.startswith("privbench.")):
        for point in points.select(group=group):
            if point.module.split(".")[0] == top:
                dist = point.dist
                found.add(f"{dist.name}=={dist.version}" if dist is not None else "?")
    return ",".join(sorted(found)) or "-"


@cache
def project_tree() -> SourceTree:
    """privbench's packages as this process imports them (one tree per process)."""
    roots = {}
    for name in PROJECT_PACKAGES:
        spec = find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots[name] = Path(next(iter(spec.submodule_search_locations)))
    return SourceTree(roots)


# kind of cache entry -> the modules that compute it (declare_kind_code)
_KIND_MODULES: dict[str, frozenset[str]] = {}


def declare_kind_code(kinds: Iterable[str], modules: Iterable[str]) -> None:
    """Cache entries of ``kinds`` are computed by ``modules`` (and what they import): their
    keys hold the code version of those modules rather than of all of privbench's source. A
    kind declared twice gets the union (declare each kind in one place)."""
    found = frozenset(modules)
    for kind in kinds:
        _KIND_MODULES[kind] = _KIND_MODULES.get(kind, frozenset()) | found


def kind_modules(kind: str) -> frozenset[str] | None:
    """The modules declared to compute ``kind``, or None where nobody declared it."""
    return _KIND_MODULES.get(kind)


def kind_code_version(kind: str) -> str:
    """The code version of the modules that compute ``kind``; for an undeclared kind, the
    digest of all of privbench's source files."""
    tree = project_tree()
    modules = _KIND_MODULES.get(kind)
    return tree.version(modules) if modules is not None else tree.whole()


def module_code_version(module: str) -> str:
    """The code version of ``module`` and what it imports (a method's module)."""
    return project_tree().version((module,))
