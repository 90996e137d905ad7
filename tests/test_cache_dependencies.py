"""A cached result's code version covers the modules that compute it and nothing else: editing an
unrelated module keeps every entry, editing the method's module or the engine module of its
kind (or anything either imports) makes a new key. Checked on a copy of privbench's source."""

from __future__ import annotations

import ast
import importlib
import shutil
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import harness.core.code_version as code_version
from harness.api.registry import ALL_REGISTRIES
from harness.core.code_version import PROJECT_PACKAGES, SourceTree, kind_modules, project_tree
from harness.engine.cache_keys import KEY_KINDS
from tests.conftest import write_distribution, write_suite
from tests.test_cache_keys import CACHE_CALLS, ROOT

KINDS = {k.kind: k.code for k in KEY_KINDS}


def test_every_builtin_method_and_engine_kind_has_a_closure_of_its_own() -> None:
    """No built-in method's module and no engine kind falls back to the whole source (which
    would be correct but would recompute on every edit)."""
    tree = project_tree()
    modules = {
        point.module
        for registry in ALL_REGISTRIES.values()
        for point in entry_points(group=registry.group)
        if point.dist is not None and point.dist.name == "privbench"
    }
    assert len(modules) > 10
    for module in sorted(modules):
        assert tree.closure([module]).unresolved == (), module
    for kind, code in KINDS.items():
        found = tree.closure(code)
        assert found.unresolved == () and set(code) <= found.modules, kind
        assert kind_modules(kind) == frozenset(code)


def test_every_kind_a_method_stores_is_declared_by_its_module() -> None:
    """A method's own kinds (a gallery, a trained CNN) are keyed by its module's code version,
    not by the whole source."""
    stored = set()
    for package in ("defenses", "recognizers", "attacks"):
        for path in sorted((ROOT / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                func = getattr(node, "func", None)
                kind = node.args[0] if isinstance(node, ast.Call) and node.args else None
                called = isinstance(func, ast.Attribute) and func.attr in CACHE_CALLS
                if called and isinstance(kind, ast.Constant) and isinstance(kind.value, str):
                    stored.add((f"{package}.{path.stem}", kind.value))
    assert {kind for _, kind in stored} >= {"gallery", "small-cnn", "uep", "onnx-fp32"}
    for module, kind in sorted(stored):
        importlib.import_module(module)
        assert module in (kind_modules(kind) or ()), (module, kind)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of privbench's four packages (their .py files) to edit."""
    root = tmp_path / "src"
    for name, folder in project_tree().roots.items():
        shutil.copytree(folder, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _tree(root: Path) -> SourceTree:
    """A fresh tree over ``root``: what a new process reads."""
    return SourceTree({name: root / name for name in PROJECT_PACKAGES})


def _edit(root: Path, rel: str, text: str = "\n# an edit\n") -> None:
    with (root / rel).open("a", encoding="utf-8") as f:
        f.write(text)


def _krtio_protect(tree: SourceTree) -> tuple[str, str]:
    """The code versions in the key of the krtio defense's protected images: the engine's
    protect kind and the defense's own module."""
    return tree.version(KINDS["protected"]), tree.version(["defenses.krtio"])


def test_an_unrelated_edit_keeps_the_code_version(source: Path) -> None:
    before = _krtio_protect(_tree(source))
    _edit(source, "harness/boards/report.py")
    _edit(source, "defenses/uep.py")
    _edit(source, "harness/cli/main.py")
    assert _krtio_protect(_tree(source)) == before
    # the whole-source digest (an undeclared kind's) does change
    assert _tree(source).whole() != SourceTree(project_tree().roots).whole()


@pytest.mark.parametrize(
    ("rel", "changed"),
    [
        ("defenses/krtio.py", (False, True)),  # the method's own module
        ("defenses/krtio_prf.py", (False, True)),  # imported by it
        ("harness/engine/protect.py", (True, False)),  # the engine module of the kind
        ("harness/engine/shards.py", (True, False)),  # imported by it
        ("harness/api/contracts.py", (True, True)),  # imported by both
    ],
)
def test_an_edit_the_unit_depends_on_changes_it(
    source: Path, rel: str, changed: tuple[bool, bool]
) -> None:
    kind, method = _krtio_protect(_tree(source))
    _edit(source, rel)
    new_kind, new_method = _krtio_protect(_tree(source))
    assert (new_kind != kind, new_method != method) == changed


def test_a_module_imported_inside_a_function_is_followed(source: Path) -> None:
    """harness.core.cache imports provenance (and so torch) only inside code_identity."""
    top_level = _tree(source)
    assert "harness.core.cache" in top_level.closure(KINDS["protected"]).modules
    before = top_level.version(KINDS["protected"])
    _edit(source, "harness/core/provenance.py")
    assert _tree(source).version(KINDS["protected"]) != before


def test_each_kind_of_cell_follows_its_own_modules(source: Path) -> None:
    tree = _tree(source)
    versions = {kind: tree.version(code) for kind, code in KINDS.items()}
    _edit(source, "harness/engine/quality.py")
    tree = _tree(source)
    changed = {kind for kind, code in KINDS.items() if tree.version(code) != versions[kind]}
    assert changed == {"quality"}
    _edit(source, "harness/engine/protect.py")
    tree = _tree(source)
    changed = {kind for kind, code in KINDS.items() if tree.version(code) != versions[kind]}
    # everything made from protected images; a recognizer's fit and predictions are not
    assert changed == set(KINDS) - {"recognizer", "predictions"}


def _package(root: Path, files: dict[str, str]) -> SourceTree:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return SourceTree({"harness": root / "harness"})


def test_relative_deferred_and_type_checking_imports(tmp_path: Path) -> None:
    tree = _package(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/a.py": "from . import b\nfrom .sub.c import f\n",
            "harness/b.py": "def g():\n    from harness import d\n    return d\n",
            "harness/sub/__init__.py": "",
            "harness/sub/c.py": "from ..e import x\ndef f(): ...\n",
            "harness/d.py": "import importlib\nM = importlib.import_module('harness.e')\n",
            "harness/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from harness import unused\nelse:\n    from harness import f\nx = 1\n",
            "harness/f.py": "",
            "harness/unused.py": "",
        },
    )
    found = tree.closure(["harness.a"])
    expected = {"harness", "harness.a", "harness.b", "harness.sub", "harness.sub.c"}
    assert found.modules == expected | {"harness.d", "harness.e", "harness.f"}
    assert found.unresolved == ()
    before = tree.version(["harness.a"])
    (tmp_path / "harness/unused.py").write_text("x = 2\n", encoding="utf-8")
    assert _package(tmp_path, {}).version(["harness.a"]) == before
    (tmp_path / "harness/f.py").write_text("x = 2\n", encoding="utf-8")
    assert _package(tmp_path, {}).version(["harness.a"]) != before


@pytest.mark.parametrize(
    ("text", "unresolved"),
    [
        ("import importlib\nM = importlib.import_module(NAME)\n", "harness.a (dynamic import)"),
        ("M = __import__(NAME)\n", "harness.a (dynamic import)"),
        ("from harness.gone import x\n", "harness.gone (imported by harness.a)"),
        ("import harness.gone.deeper\n", "harness.gone (imported by harness.a)"),
    ],
)
def test_what_cannot_be_followed_falls_back_to_the_whole_source(
    tmp_path: Path, text: str, unresolved: str
) -> None:
    files = {"harness/__init__.py": "", "harness/a.py": text, "harness/other.py": ""}
    tree = _package(tmp_path, files)
    assert tree.closure(["harness.a"]).unresolved == (unresolved,)
    before = tree.version(["harness.a"])
    # an edit anywhere in the source is a new version, as every key was before
    (tmp_path / "harness/other.py").write_text("x = 1\n", encoding="utf-8")
    assert _package(tmp_path, {}).version(["harness.a"]) != before


def test_a_name_imported_from_a_module_is_not_a_missing_module(tmp_path: Path) -> None:
    files = {"harness/__init__.py": "", "harness/a.py": "from harness.b import name\n"}
    tree = _package(tmp_path, {**files, "harness/b.py": "name = 1\n"})
    assert tree.closure(["harness.a"]).unresolved == ()


def test_a_plugin_has_its_source_and_distribution_in_its_version(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    plugin = "from defenses.baselines import GaussianBlurDefense\nfrom cv_plug import extra\n"
    entry = "[privbench.defenses]\ncv-blur = cv_plug:GaussianBlurDefense\n"
    write_distribution(site, "cv_plug", "cv-plug", plugin, entry)
    (site / "cv_plug" / "extra.py").write_text("x = 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    tree = _tree(source)
    found = tree.closure(["cv_plug"])
    assert {"cv_plug", "cv_plug.extra", "defenses.baselines"} <= found.modules
    assert found.unresolved == ()
    before = tree.version(["cv_plug"])
    _edit(source, "harness/boards/report.py")
    assert _tree(source).version(["cv_plug"]) == before
    (site / "cv_plug" / "extra.py").write_text("x = 2\n", encoding="utf-8")
    edited = _tree(source).version(["cv_plug"])
    assert edited != before
    metadata = next(site.glob("*.dist-info")) / "METADATA"
    metadata.write_text(metadata.read_text().replace("1.0", "1.1"), encoding="utf-8")
    assert _tree(source).version(["cv_plug"]) != edited


@pytest.mark.parametrize(
    ("name", "params", "made"),
    [
        ("chain", {"steps": [{"name": "gaussian-blur", "params": {"sigma": 1.0}}]}, "baselines"),
        ("pgd", {"surrogate": "small-cnn"}, "../recognizers/small_cnn"),
    ],
)
def test_a_method_made_by_name_is_in_the_identity_of_what_makes_it(
    source: Path, monkeypatch: pytest.MonkeyPatch, name: str, params: dict, made: str
) -> None:
    """A chain's steps and a surrogate defense's recognizer come from entry points, not
    imports: their code is in its identity all the same."""
    from harness.api.registry import DEFENSES
    from harness.core.identity import method_identity

    method = DEFENSES.create(name, params)
    monkeypatch.setattr(code_version, "project_tree", lambda: _tree(source))
    before = method_identity(method)
    made_by = source / "defenses" / f"{made}.py"
    assert made_by.resolve().stem not in {m.rpartition(".")[2] for m in _imports_of(method)}
    _edit(source, "harness/boards/report.py")
    assert method_identity(method) == before
    _edit(source, made_by.resolve().relative_to(source.resolve()).as_posix())
    assert method_identity(method) != before


def _imports_of(method: object) -> frozenset[str]:
    return project_tree().closure([type(method).__module__]).modules


DIGITS = """\
name: deps
dataset: {name: digits, params: {max_probes: 16, size: 32}}
recognizers: [{name: small-cnn, params: {steps: 4, width: 4}, label: cnn}]
defenses: [{name: pixelate, params: {block: 4}}]
counter_attacks: [none]
metrics: [fooling_rate, ssim]
"""


def test_a_run_after_an_unrelated_edit_is_all_cache_hits(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.engine.runner import RunOptions, run_suite
    from harness.engine.suite import load_suite

    suite = load_suite(write_suite(tmp_path / "deps.yaml", DIGITS))
    current: list[SourceTree] = [_tree(source)]
    monkeypatch.setattr(code_version, "project_tree", lambda: current[0])

    def run(run_id: str, edit: Callable[[], None] | None = None) -> dict:
        if edit is not None:
            edit()
            current[0] = _tree(source)
        opts = RunOptions(
            run_id=run_id, out_root=tmp_path / "runs", progress=False, cache_root=tmp_path / "c"
        )
        return run_suite(suite, opts).manifest["cache"]

    first = run("cold")
    assert first["misses"] > 0
    again = run("unrelated", lambda: _edit(source, "harness/boards/report.py"))
    assert again["misses"] == 0 and again["hits"] > 0
    # the runs did read the copy: an edit of the engine's protect module misses
    engine = run("engine", lambda: _edit(source, "harness/engine/protect.py"))
    assert engine["misses"] > 0
