"""The bounds on untrusted input (harness/core/limits.py) and the page that states them.

The hostile cases themselves are in tests/test_hostile_writes.py (run ids, overwrite, locks,
outputs), tests/test_hostile_reading.py (YAML, grids, archives, numbers),
tests/test_hostile_faults.py (cache, disk, signals) and tests/test_hostile_plugins.py (label
collisions, plugins, plots, keys); tests/test_fuzz.py fuzzes suites, archives and arguments.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.core.errors import PrivbenchError
from harness.core.limits import LIMITS, MESSAGE_CHARS, YAML_NODES, markdown_rows, shorten

SECURITY = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def _documented_rows() -> list[str]:
    text = SECURITY.read_text(encoding="utf-8")
    block = re.search(r"<!-- limits-table[^>]*-->\n(.*?)<!-- /limits-table -->", text, re.S)
    assert block, "docs/security.md lost its limits table markers"
    return [line for line in block.group(1).splitlines() if line.startswith("| `")]


def test_docs_security_lists_every_limit_as_declared() -> None:
    assert _documented_rows() == markdown_rows(), (
        "docs/security.md's limits table differs from harness/core/limits.py; print the rows "
        "with `python -m harness.core.limits` and paste them between the markers"
    )


def test_limits_are_named_once_with_their_own_environment_variable() -> None:
    assert len({lim.name for lim in LIMITS}) == len(LIMITS)
    assert len({lim.env for lim in LIMITS}) == len(LIMITS)
    assert all(lim.env.startswith("PRIVBENCH_MAX_") and lim.default > 0 for lim in LIMITS)


def test_a_limit_is_read_from_its_flag_then_its_environment_then_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(YAML_NODES.env, raising=False)
    assert YAML_NODES.value() == YAML_NODES.default
    monkeypatch.setenv(YAML_NODES.env, "1_000")
    assert YAML_NODES.value() == 1000
    assert YAML_NODES.value(override=7) == 7


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1e3", "nan"])
def test_a_bad_limit_in_the_environment_is_a_named_error(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(YAML_NODES.env, raw)
    with pytest.raises(PrivbenchError, match=YAML_NODES.env):
        YAML_NODES.value()


def test_shorten_keeps_the_start_and_end_and_says_how_much_it_dropped() -> None:
    text = "suite.yaml:3: defenses: " + "x" * 5000 + " END"
    short = shorten(text, 200)
    assert len(short) <= 200
    assert short.startswith("suite.yaml:3: defenses: ") and short.endswith(" END")
    dropped = int(re.search(r"\[…([\d,]+) characters…\]", short).group(1).replace(",", ""))
    kept = len(short) - len(re.search(r" \[…[\d,]+ characters…\] ", short).group(0))
    assert dropped + kept == len(text)
    assert shorten("short", 200) == "short"
    assert len(shorten("y" * 10_000)) <= MESSAGE_CHARS.default


def test_the_fuzz_budget_turns_an_exhausting_input_into_a_memory_error(fuzz_budget) -> None:
    """What tests/test_fuzz.py relies on: under the budget, asking for more memory than it
    allows fails at once instead of taking the machine."""
    from tests.conftest import FUZZ_MEMORY

    with pytest.raises(MemoryError):
        bytearray(FUZZ_MEMORY + (1 << 30))
    assert len(bytearray(1 << 20)) == 1 << 20  # ordinary allocations still work
