"""``privbench new-defense NAME DIR``: a new defense as an installable plugin package.

The package registers its class under the ``privbench.defenses`` entry point, so once it is
installed (``pip install -e DIR``) every suite can name it, exactly like a built-in defense.
It comes with a working placeholder method, tests, and a suite that runs the defense under the
quickstart's protocol so that its results merge with a quickstart leaderboard. The files are
rendered from ``harness/templates/new_defense``; path parts ``__package__`` and ``__name__``
are replaced too.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from harness import __version__
from harness.api.registry import DEFENSES
from harness.core.errors import PrivbenchError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
TEMPLATE_SUFFIX = ".tmpl"


def names_for(name: str) -> dict[str, str]:
    """The identifiers derived from a defense name such as ``my-noise``: the Python package
    (``privbench_my_noise``), the distribution (``privbench-my-noise``) and the class
    (``MyNoise``)."""
    if not NAME_PATTERN.fullmatch(name):
        raise PrivbenchError(
            f"{name!r} is not a valid defense name: use lower-case letters and digits, words "
            "joined by '-', starting with a letter (for example my-noise)"
        )
    words = name.split("-")
    values = {
        "name": name,
        "package": "privbench_" + "_".join(words),
        "distribution": "privbench-" + name,
        "cls": "".join(w.capitalize() for w in words),
    }
    taken = _module_names() | set(keyword.kwlist) | set(dir(builtins))
    if values["cls"] in taken:
        raise PrivbenchError(
            f"the defense {name!r} would be the class {values['cls']}, a name Python or the "
            "generated modules already use for something else (a keyword, a built-in, or "
            f"what the modules import); choose another name, for example my-{name}"
        )
    return values


def _module_names() -> set[str]:
    """The names the generated Python modules import, define or assign: a class of the same
    name would shadow one of them (``case`` would make ``Case`` both the conformance
    checks' case and the defense, and its tests would not even import)."""
    stand_in = {"name": "x", "package": "privbench_x", "distribution": "privbench-x"}
    names: set[str] = set()
    for parts, text in _walk(_templates()):
        if not parts[-1].endswith(".py"):
            continue
        tree = ast.parse(Template(text).safe_substitute(stand_in, cls="X_", privbench_version=""))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names - {"X_"}


def _templates() -> Traversable:
    return files("harness") / "templates" / "new_defense"


def _walk(folder: Traversable, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out = []
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if item.is_dir():
            out += _walk(item, (*prefix, item.name))
        elif item.name.endswith(TEMPLATE_SUFFIX):
            out.append(((*prefix, item.name[: -len(TEMPLATE_SUFFIX)]), item.read_text("utf-8")))
    return out


def new_defense(name: str, target: Path) -> list[Path]:
    """Write the plugin package for defense ``name`` into ``target`` (new or empty); returns
    the files written."""
    values = names_for(name)
    if name in DEFENSES:
        found = DEFENSES.distribution(name)
        where = f"by {found[0]} {found[1]}" if found else "in this process"
        raise PrivbenchError(f"a defense named {name!r} is already registered {where}")
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PrivbenchError(f"{target} exists and is not an empty folder; choose a new one")
    values["privbench_version"] = __version__
    written = []
    for parts, text in _walk(_templates()):
        rel = [
            p.replace("__package__", values["package"]).replace("__name__", values["name"])
            for p in parts
        ]
        path = target.joinpath(*rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
        written.append(path)
    return written
