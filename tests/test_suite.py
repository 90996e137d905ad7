from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import SuiteError
from harness.engine.suite import load_suite
from tests.conftest import write_suite

BASE = """\
name: tiny
dataset: {name: lfw-subset, params: {max_probes: 10}}
recognizers: [yunet]
defenses:
  - none
  - name: naive-overlay
    params: {alpha: [0.3, 0.45], overlay: [coffee, rocket]}
counter_attacks: [none, {name: jpeg, params: {quality: 90}}]
"""


def test_valid_suite_expands_the_grid(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", BASE))
    assert [d.label for d in suite.defenses] == [
        "none",
        "naive-overlay(alpha=0.3, overlay=coffee)",
        "naive-overlay(alpha=0.3, overlay=rocket)",
        "naive-overlay(alpha=0.45, overlay=coffee)",
        "naive-overlay(alpha=0.45, overlay=rocket)",
    ]
    assert suite.defenses[1].params == {"alpha": 0.3, "overlay": "coffee"}
    assert suite.n_cells == 5 * 2 * 1
    assert (
        suite.seed == 0
        and suite.device == "auto"
        and suite.upload == {"format": "png", "quality": 95}
    )
    assert len(suite.sha256) == 64


def test_quickstart_and_shipped_suites_validate() -> None:
    for path in sorted(Path(__file__).parent.parent.joinpath("suites").glob("*.yaml")):
        load_suite(path)


@pytest.mark.parametrize(
    ("text", "line", "pattern"),
    [
        (BASE + "seeds: 3\n", 9, r"seeds: unknown key \(did you mean seed\?\)"),
        (
            BASE.replace("[yunet]", "[yunett]"),
            3,
            r"unknown recognizer 'yunett' \(did you mean yunet\?\)",
        ),
        (
            BASE.replace("alpha: [0.3, 0.45]", "alpha: [0.3, 1.45]"),
            7,
            r"alpha: .*1\.45 is out of range",
        ),
        (
            BASE.replace("alpha: [0.3, 0.45]", "alpah: 0.3"),
            7,
            r"unknown parameter 'alpah' \(did you mean alpha\?\)",
        ),
        (BASE.replace("quality: 90", "quality: high"), 8, r"expected an integer, got 'high'"),
        (BASE + "objective: hide\n", None, r"'hide' is not valid; valid: evade, conceal"),
        (BASE + "device: gpu\n", None, r"'gpu' is not valid; use auto, cpu, cuda"),
        (
            BASE + "upload: {format: jpg}\n",
            9,
            r"upload.format: 'jpg' is not valid.*did you mean jpeg",
        ),
        (
            BASE.replace("  - none\n", "  - {nam: none}\n"),
            5,
            r"unknown key \(did you mean name\?\)",
        ),
        (
            BASE.replace("  - none\n", "  - none\n  - none\n"),
            None,
            r"two entries share the label 'none'",
        ),
        ("dataset: lfw-subset\n", 1, r"missing required key 'recognizers'"),
        (BASE + "batch_size: 0\n", 9, r"batch_size: .*out of range"),
        (
            BASE.replace("[yunet]", "[{name: small-cnn, params: {shape: vgg5, input_size: 16}}]"),
            3,
            r"input_size: 16 is too small for shape vgg5",
        ),
        ("name: x\n  bad: [\n", 2, r"not valid YAML"),
    ],
)
def test_errors_name_file_line_and_valid_choices(
    tmp_path: Path, text: str, line: int | None, pattern: str
) -> None:
    path = write_suite(tmp_path / "broken.yaml", text)
    with pytest.raises(SuiteError, match=pattern) as info:
        load_suite(path)
    assert str(path) in str(info.value)
    if line is not None:
        assert info.value.line == line, str(info.value)


def test_include_composes_and_overrides(tmp_path: Path) -> None:
    write_suite(tmp_path / "base.yaml", BASE)
    child = write_suite(
        tmp_path / "child.yaml", "include: base.yaml\nname: child\ndefenses: [pixelate]\nseed: 7\n"
    )
    suite = load_suite(child)
    assert suite.name == "child" and suite.seed == 7
    assert [d.label for d in suite.defenses] == ["pixelate"]
    assert [r.name for r in suite.recognizers] == ["yunet"]
    assert len(suite.files) == 2


def test_errors_in_an_included_file_name_that_file(tmp_path: Path) -> None:
    base = write_suite(tmp_path / "base.yaml", BASE.replace("[yunet]", "[nope]"))
    child = write_suite(tmp_path / "child.yaml", "include: base.yaml\nname: child\n")
    with pytest.raises(SuiteError) as info:
        load_suite(child)
    assert info.value.path == str(base) and info.value.line == 3


def test_include_cycle_and_missing_include(tmp_path: Path) -> None:
    write_suite(tmp_path / "a.yaml", "include: b.yaml\n")
    write_suite(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(SuiteError, match="include cycle"):
        load_suite(tmp_path / "a.yaml")
    write_suite(tmp_path / "c.yaml", "include: missing.yaml\n")
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite(tmp_path / "c.yaml")
