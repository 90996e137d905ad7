"""The README's commands name subcommands and flags that exist (issue 29: docs kept true).

Every ``privbench …`` command in a shell block of README.md, and every inline code span that
starts with ``privbench``, is parsed into its subcommand path and its ``--flags``, and checked
against the real argument parser. A synopsis line (``privbench keygen | protect | recover``)
names alternatives; each one must exist.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from harness.cli.main import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
SHELL_FENCES = ("```bash", "```sh", "```console", "```shell")
COMMAND = re.compile(r"(?:^|\s|&&\s*)(?:\.venv/bin/)?privbench\s+(.*)$")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a shell code block, continuations joined."""
    out: list[tuple[int, str]] = []
    in_shell = in_other = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if in_shell or in_other:
                in_shell = in_other = False
            else:
                in_shell = stripped in SHELL_FENCES
                in_other = not in_shell
            continue
        if not in_shell:
            continue
        if pending is not None:
            line = pending[1] + " " + stripped
            number = pending[0]
            pending = None
        if line.endswith("\\"):
            pending = (number, line[:-1])
            continue
        out.append((number, line))
    return out


def _inline_commands(text: str) -> list[tuple[int, str]]:
    """Inline code spans that are a privbench command line (``privbench run --html``)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        for span in re.findall(r"`([^`]+)`", line):
            if span.startswith(("privbench ", ".venv/bin/privbench ")):
                out.append((number, span))
    return out


def readme_commands() -> list[tuple[int, str]]:
    """(README line, the words after ``privbench``) of every command the README shows."""
    text = README.read_text(encoding="utf-8")
    found = []
    for number, line in _shell_lines(text) + _inline_commands(text):
        code = line.split(" #", 1)[0]
        for part in re.split(r"&&|;|\|\|", code):
            match = COMMAND.search(part.strip())
            if match and not part.strip().startswith(("pip ", "print(")):
                found.append((number, match.group(1).strip()))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _resolve(words: list[str]) -> list[tuple[list[str], argparse.ArgumentParser]]:
    """The subcommand path(s) the words name, with the parser that takes the rest; a
    ``a | b | c`` synopsis names each alternative."""
    root = build_parser()
    words = [w for w in words if not w.startswith("--")] or [""]
    if len(words) > 1 and words[1] == "|":
        names = [w for w in words if w not in ("|", "...", "…")]
        return [([n], _subparsers(root).get(n)) for n in names]  # type: ignore[misc]
    path, parser = [], root
    for word in words:
        children = _subparsers(parser)
        if not children or word not in children:
            break
        path.append(word)
        parser = children[word]
    return [(path, parser)]


def _words(rest: str) -> list[str]:
    cleaned = re.sub(r"[\[\]]", " ", rest).replace("|", " | ")
    try:
        return shlex.split(cleaned)
    except ValueError:
        return cleaned.split()


def test_the_readme_shows_commands() -> None:
    """The scan finds the commands (a broken scan would make the next test vacuous)."""
    commands = readme_commands()
    assert len(commands) >= 30
    assert any(rest.startswith("run suites/quickstart.yaml") for _, rest in commands)
    assert any(rest.startswith("recover --param scheme=legacy") for _, rest in commands)


@pytest.mark.parametrize(("line", "rest"), readme_commands(), ids=lambda v: str(v)[:40])
def test_readme_command_exists(line: int, rest: str) -> None:
    """Each command's subcommand exists, and each flag is one of that subcommand's (or a
    global one)."""
    words = _words(rest)
    if words and words[0].startswith("--") and words[0] not in ("--debug", "--version"):
        pytest.fail(f"README line {line}: {words[0]} before the subcommand")
    global_flags = _options(build_parser())
    for path, parser in _resolve(words):
        assert parser is not None, f"README line {line}: no subcommand {path}"
        assert path or words[0] in ("--debug", "--version"), (
            f"README line {line}: `privbench {rest}` names no subcommand"
        )
        allowed = _options(parser) | global_flags
        for flag in FLAG.findall(rest):
            assert flag in allowed, (
                f"README line {line}: `privbench {' '.join(path)}` has no option {flag}"
            )


def test_the_check_catches_a_wrong_flag() -> None:
    """A flag the parser lacks is found (guards the test above against passing vacuously)."""
    ((path, parser),) = _resolve(_words("run SUITE --no-such-flag"))
    assert path == ["run"]
    assert "--no-such-flag" not in _options(parser)
    assert "--smoke" in _options(parser)
    assert _resolve(_words("no-such-command x"))[0][0] == []
