"""The house's size limits (docs/architecture.md, "Size limits"), checked in .ci/run.

No function over 60 lines, no class over 250, no module over 400 (source lines, docstrings and
comments included: what a reader has to hold). Cyclomatic complexity is checked by xenon
(radon's grades, no function worse than C) beside this script; line counts are not something
radon or xenon bound, hence these few lines. Exit 1 with one line per breach.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("harness", "defenses", "recognizers", "attacks")
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250
MAX_MODULE_LINES = 400


def breaches(path: Path) -> list[str]:
    """Every limit ``path`` breaks, as ``file:line: what``."""
    text = path.read_text(encoding="utf-8")
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{path}:1: module of {lines} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - start + 1
            is_class = isinstance(node, ast.ClassDef)
            limit = MAX_CLASS_LINES if is_class else MAX_FUNCTION_LINES
            if length > limit:
                kind = "class" if is_class else "function"
                found.append(
                    f"{path}:{node.lineno}: {kind} {node.name} of {length} lines (limit {limit})"
                )
    return found


def main(root: Path) -> int:
    found = [b for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py")) for b in breaches(p)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")))
