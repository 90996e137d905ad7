"""The house's shape: deprecated import paths still work for a release, and the size limits
that .ci/run checks are measured as documented (docs/architecture.md, "Layers")."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ALIASES = {
    "harness.contracts": "harness.api.contracts",
    "harness.params": "harness.core.params",
    "harness.errors": "harness.core.errors",
    "harness.registry": "harness.api.registry",
}


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_old_import_paths_warn_and_give_the_same_objects(old: str) -> None:
    new = ALIASES[old]
    code = (
        "import warnings, importlib\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module('{old}')\n"
        f"new = importlib.import_module('{new}')\n"
        "assert old is new, (old, new)\n"
        "messages = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        f"assert any('{new}' in m for m in messages), messages\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_plugin_written_against_the_old_paths_still_subclasses_the_new_contracts() -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from harness.contracts import Defense\n"
        "from harness.params import Param\n"
        "from harness.errors import ParamError\n"
        "from harness.registry import DEFENSES\n"
        "import harness.api.contracts as api\n"
        "class Mine(Defense):\n"
        "    params = {'strength': Param(float, 0.5, 'how much', low=0.0, high=1.0)}\n"
        "    def protect(self, images, ids, ctx):\n"
        "        return images\n"
        "DEFENSES.add('mine', Mine)\n"
        "assert issubclass(DEFENSES.get('mine'), api.Defense)\n"
        "try:\n"
        "    DEFENSES.create('mine', {'strength': 2.0})\n"
        "except ParamError as exc:\n"
        "    assert 'strength' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('a value out of range was accepted')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _check_structure():
    spec = importlib.util.spec_from_file_location(
        "check_structure", ROOT / "tools/check_structure.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_size_check_counts_decorators_and_bodies_and_names_each_breach(tmp_path: Path) -> None:
    check = _check_structure()
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    at_limit = f"@staticmethod\ndef fits():\n{body}\n"  # 1 + 1 + 58 = 60 lines
    over = f"@staticmethod\n@staticmethod\ndef too_long():\n{body}\n"  # 61 lines
    path = tmp_path / "m.py"
    path.write_text(at_limit + "\n" + over)
    found = check.breaches(path)
    # the first function ends on line 60, a blank line, two decorators: the def is on line 64
    assert found == [f"{path}:64: function too_long of 61 lines (limit 60)"]
    path.write_text("\n" * check.MAX_MODULE_LINES + "x = 1\n")
    assert check.breaches(path) == [
        f"{path}:1: module of {check.MAX_MODULE_LINES + 1} lines (limit {check.MAX_MODULE_LINES})"
    ]


def test_every_cache_key_kind_is_in_the_architecture_page_table() -> None:
    from harness.engine.cache_keys import KEY_KINDS

    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page[page.index("| kind | parts |") :].split("\n\n")[0]
    documented = {
        name.strip().strip("`")
        for line in table.splitlines()[2:]
        for name in line.split("|")[1].split(",")
    }
    assert {k.kind for k in KEY_KINDS} == documented
