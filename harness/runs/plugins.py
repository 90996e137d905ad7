"""Where a suite's methods come from: privbench itself, or an installed plugin package.

A plugin is any distribution that registers a method under a ``privbench.<kind>`` entry point
(``privbench new-defense`` scaffolds one). A run records, for every plugin it used, the
distribution's name and version and the sha256 of each source file of the Python packages
that hold its methods, so that a submitted result names exactly the code that produced it;
``privbench submit`` checks that the installed plugin is still that code.
"""

from __future__ import annotations

import hashlib
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from harness.api.registry import ALL_REGISTRIES
from harness.core.errors import PrivbenchError
from harness.core.files import sha256_of

PRIVBENCH_DISTRIBUTION = "privbench"
SKIPPED_PARTS = {"__pycache__"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return name.lower().replace("_", "-").replace(".", "-")


def package_root(module_name: str) -> Path:
    """The folder of the top-level package that holds ``module_name`` (or its single file)."""
    top = module_name.split(".")[0]
    if top not in sys.modules:
        __import__(top)
    origin = getattr(sys.modules[top], "__file__", None)
    if not origin:
        raise PrivbenchError(f"cannot locate the source of module {module_name!r}")
    path = Path(origin).resolve()
    return path.parent if path.name == "__init__.py" else path


def source_files(module_name: str) -> dict[str, str]:
    """sha256 of every source file of the top-level package holding ``module_name``, keyed by
    its path relative to the folder that contains the package (``pkg/mod.py``)."""
    root = package_root(module_name)
    if root.is_file():
        return {root.name: sha256_of(root)}
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root.parent)
        wanted = path.suffix not in SKIPPED_SUFFIXES and not SKIPPED_PARTS & set(rel.parts)
        if wanted and path.is_file():
            out[rel.as_posix()] = sha256_of(path)
    return out


def combined_digest(files: dict[str, str]) -> str:
    """One sha256 over (path, file digest) pairs in path order."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]}\n".encode())
    return h.hexdigest()


def plugin_provenance(used: dict[str, list[str]]) -> list[dict[str, Any]]:
    """For the methods ``used`` (registry kind → names), one entry per plugin distribution:
    name, version, what it provides, and the sha256 of its source files. Methods of privbench
    itself are covered by the run's git commit and are not listed."""
    plugins: dict[str, dict[str, Any]] = {}
    for kind, names in used.items():
        registry = ALL_REGISTRIES[kind]
        for name in dict.fromkeys(names):
            found = registry.distribution(name)
            if found is None or normalise(found[0]) == PRIVBENCH_DISTRIBUTION:
                continue
            dist, version = found
            cls = registry.get(name)
            entry = plugins.setdefault(
                dist, {"distribution": dist, "version": version, "provides": {}, "files": {}}
            )
            entry["provides"].setdefault(kind, []).append(
                {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}"}
            )
            entry["files"].update(source_files(cls.__module__))
    for entry in plugins.values():
        entry["sha256"] = combined_digest(entry["files"])
    return [plugins[d] for d in sorted(plugins)]


def suite_methods(config: dict[str, Any]) -> dict[str, list[str]]:
    """Registry kind → method names of a resolved suite configuration (the manifest's
    ``config``)."""
    return {
        "defenses": [m["name"] for m in config.get("defenses", [])],
        "recognizers": [m["name"] for m in config.get("recognizers", [])],
        "attacks": [m["name"] for m in config.get("counter_attacks", [])],
        "metrics": [m["name"] for m in config.get("metrics", [])],
        "datasets": [config["dataset"]["name"]] if config.get("dataset") else [],
    }


def verify_installed(recorded: list[dict[str, Any]]) -> None:
    """PrivbenchError unless every recorded plugin is installed now as the same version with
    the same source files (the code that made the numbers is the code being submitted)."""
    for plugin in recorded:
        dist = plugin["distribution"]
        try:
            installed = installed_version(dist)
        except PackageNotFoundError:
            raise PrivbenchError(
                f"plugin {dist} {plugin['version']} made this run but is not installed here; "
                "install it (pip install PATH) so that its source can be checked"
            ) from None
        if installed != plugin["version"]:
            raise PrivbenchError(
                f"plugin {dist} is {installed} here but {plugin['version']} made this run; "
                "install that version, or run the suite again"
            )
        now: dict[str, str] = {}
        for provided in plugin["provides"].values():
            for method in provided:
                now.update(source_files(method["class"].rsplit(".", 1)[0]))
        changed = sorted(
            rel
            for rel in set(now) | set(plugin["files"])
            if now.get(rel) != plugin["files"].get(rel)
        )
        if changed:
            raise PrivbenchError(
                f"plugin {dist} {installed} has changed since this run ({', '.join(changed)} "
                "differ): its numbers were made by other code; run the suite again"
            )
