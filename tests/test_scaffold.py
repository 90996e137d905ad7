"""The tests ``privbench new-defense`` generates check the method through privbench's
conformance checks at the parameters its class declares, so they keep passing when the
placeholder is replaced by a method with other parameters, and fail on a method that breaks
the contract (they are not tests that cannot fail).

The package is put on the path as an installed distribution (its ``src`` and a dist-info
with the entry point its ``pyproject.toml`` declares), without pip, and its tests run in a
subprocess with the method swapped in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import tomllib

from harness.cli.scaffold import names_for, new_defense
from harness.core.errors import PrivbenchError
from tests.conftest import write_distribution

NAME = "swap-contrast"
NAMES = names_for(NAME)

# A real method with parameters other than the placeholder's: a contrast change about
# mid-grey, with a smoke setting that lowers the gain.
CONTRAST = '''\
"""A contrast change: the method that replaces the placeholder."""

from __future__ import annotations

from typing import ClassVar

import torch
from harness.api import Context, Defense, Param


class {cls}(Defense):
    """(x - 1/2)·gain + 1/2 + offset, clamped to [0, 1]."""

    params: ClassVar[dict[str, Param]] = {{
        "gain": Param(float, 1.5, "contrast gain about mid-grey", 0.0, 4.0),
        "offset": Param(float, 0.05, "brightness added after the gain", -1.0, 1.0),
    }}
    smoke: ClassVar[dict[str, float]] = {{"gain": 1.25}}

    gain: float
    offset: float

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return ((images - 0.5) * self.gain + 0.5 + self.offset){tail}
'''
GOOD = ".clamp(0.0, 1.0)"
# noise from the global generator: not seeded by the run, so two runs differ
UNSEEDED = ".add(0.01 * torch.rand(images.shape)).clamp(0.0, 1.0)"
# one column short: not the shape it was given
NARROW = ".clamp(0.0, 1.0)[..., 1:]"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scaffold") / NAME
    new_defense(NAME, folder)
    return folder


def _installed(plugin: Path, site: Path, tail: str) -> None:
    """The plugin in ``site`` as pip installs it, its defense replaced by the contrast one."""
    package = plugin / "src" / NAMES["package"]
    project = tomllib.loads((plugin / "pyproject.toml").read_text("utf-8"))["project"]
    points = project["entry-points"]["privbench.defenses"]
    lines = "".join(f"{k} = {v}\n" for k, v in points.items())
    init = (package / "__init__.py").read_text("utf-8")
    write_distribution(
        site, NAMES["package"], project["name"], init, f"[privbench.defenses]\n{lines}"
    )
    source = CONTRAST.format(cls=NAMES["cls"], tail=tail)
    (site / NAMES["package"] / "defense.py").write_text(source, encoding="utf-8")


def _generated_tests(plugin: Path, site: Path) -> tuple[int, dict[str, str], str]:
    """The generated tests' exit status, each test's outcome (passed, failed, skipped, error)
    from pytest's JUnit XML, and their output."""
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    report = site / "report.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    done = subprocess.run(
        [*command, f"--junitxml={report}"], capture_output=True, text=True, cwd=plugin, env=env
    )
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        found = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "")] = found[0] if found else "passed"
    return done.returncode, outcomes, done.stdout + done.stderr


def _check(name: str) -> str:
    return f"test_conformance[defense:{NAME}-check_{name}]"


def test_the_generated_tests_pass_on_a_method_with_other_parameters(
    plugin: Path, tmp_path: Path
) -> None:
    _installed(plugin, tmp_path / "site", GOOD)
    status, outcomes, output = _generated_tests(plugin, tmp_path / "site")
    assert status == 0, output
    checks = ["params_declared", "bad_params_refused", "smoke_params_valid", "output_contract"]
    checks += ["seeded_determinism", "batch_independence", "identity_follows_params"]
    expected = [_check(c) for c in checks]
    expected += [
        "test_privbench_finds_the_installed_defense",
        "test_the_defense_changes_the_photos",
    ]
    expected += ["test_the_suite_is_valid_and_runs_the_defense"]
    assert {t: outcomes.get(t) for t in expected} == dict.fromkeys(expected, "passed")
    assert set(outcomes.values()) == {"passed"}, output


@pytest.mark.parametrize(
    ("tail", "failing"),
    [
        (UNSEEDED, {"seeded_determinism", "batch_independence"}),
        (NARROW, {"output_contract"}),
    ],
    ids=["unseeded-noise", "wrong-shape"],
)
def test_the_generated_tests_fail_on_a_broken_method(
    plugin: Path, tmp_path: Path, tail: str, failing: set[str]
) -> None:
    _installed(plugin, tmp_path / "site", tail)
    status, outcomes, output = _generated_tests(plugin, tmp_path / "site")
    assert status == 1, output  # 1: tests failed (not a crash or a collection error)
    failed = {t for t, outcome in outcomes.items() if outcome == "failure"}
    assert {_check(c) for c in failing} <= failed, output
    assert _check("params_declared") not in failed  # the parameters themselves are fine


@pytest.mark.parametrize(
    ("name", "cls"),
    [("case", "Case"), ("path", "Path"), ("true", "True"), ("exception", "Exception")],
)
def test_a_name_whose_class_would_shadow_another_is_refused(
    tmp_path: Path, name: str, cls: str
) -> None:
    """``case`` made the class ``Case``, which its tests also import from privbench (they
    then failed to import); ``true`` made ``class True``, a syntax error."""
    with pytest.raises(PrivbenchError, match=f"would be the class {cls}, .* for example my-{name}"):
        new_defense(name, tmp_path / name)
    assert not (tmp_path / name).exists()
    assert names_for(f"my-{name}")["cls"] == f"My{cls}"


def test_the_next_steps_name_the_environment_that_runs_privbench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Run as ``.venv/bin/privbench`` with the environment not active, the printed next steps
    call that environment's pip, python and privbench (a bare ``pip`` installed the plugin
    into whatever environment the shell found first); active, the bare names."""
    from harness.cli.main import main

    venv_bin = tmp_path / "repo" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for tool in ("python", "privbench"):  # no pip: a venv made --without-pip
        (venv_bin / tool).write_text("#!/bin/sh\n")
        (venv_bin / tool).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert main(["new-defense", "my-noise", str(tmp_path / "a")]) == 0
    steps = capsys.readouterr().out.split("next:\n")[1].splitlines()[:4]
    assert [s.split()[0] for s in steps] == [
        ".venv/bin/python",  # -m pip: the environment has no pip of its own
        ".venv/bin/python",
        ".venv/bin/privbench",
        ".venv/bin/privbench",
    ]
    assert steps[0].startswith("  .venv/bin/python -m pip install -e ")
    monkeypatch.setenv("PATH", str(venv_bin))
    assert main(["new-defense", "my-noise", str(tmp_path / "b")]) == 0
    steps = capsys.readouterr().out.split("next:\n")[1].splitlines()[:4]
    assert [s.split()[0] for s in steps] == ["python", "python", "privbench", "privbench"]
