"""Hostile plugins, labels and keys: a broken or shadowing plugin cannot break or replace what
privbench ships, labels cannot make two results share a file or crash a plot, and a key typed
on the command line is never printed back."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.api.registry import ATTACKS, DEFENSES, METRICS
from harness.runs.folder import RunFolder
from tests.conftest import write_distribution, write_suite
from tests.test_owner_cli import privbench

PACKAGE, DISTRIBUTION = "hostile_plug", "myplug"

PLUGIN = '''"""A plugin with one good defense under two names and one metric that cannot import."""

from defenses.baselines import GaussianBlurDefense


class Blur(GaussianBlurDefense):
    """Gaussian blur, from a plugin."""
'''

ENTRY_POINTS = f"""\
[privbench.defenses]
krtio = {PACKAGE}:Blur
myplug:krtio = {PACKAGE}:Blur
privbench:blur = {PACKAGE}:Blur

[privbench.attacks]
wrong-kind = {PACKAGE}:Blur

[privbench.metrics]
broken = {PACKAGE}.missing:Metric
"""

TINY = """\
name: tiny
dataset: {name: digits, params: {max_probes: 8, size: 32}}
recognizers: [{name: small-cnn, params: {steps: 4, width: 4}, label: cnn}]
defenses: DEFENSES
counter_attacks: [none]
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin installed as a distribution on sys.path, the registries refreshed."""
    site = tmp_path / "site"
    write_distribution(site, PACKAGE, DISTRIBUTION, PLUGIN, ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    for registry in (DEFENSES, METRICS, ATTACKS):
        registry.refresh()
    try:
        yield tmp_path
    finally:
        sys.modules.pop(PACKAGE, None)
        for registry in (DEFENSES, METRICS, ATTACKS):
            registry.refresh()


def _suite(root: Path, defenses: str, extra: str = "") -> Path:
    return write_suite(root / "s.yaml", TINY.replace("DEFENSES", defenses) + extra)


def test_a_broken_metric_entry_point_is_reported_once_and_skipped(plugin: Path) -> None:
    result = privbench("validate", str(_suite(plugin, "[none]")))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "'broken'" in line]
    assert len(warnings) == 1
    assert f"plugin {DISTRIBUTION}" in warnings[0] and "ModuleNotFoundError" in warnings[0]
    assert "privbench.metrics" in warnings[0] and "skipped" in warnings[0]
    listed = privbench("list", "metrics")
    assert listed.returncode == 0 and "broken" not in listed.stdout


def test_a_suite_that_names_the_broken_metric_gets_a_named_error(plugin: Path) -> None:
    result = privbench("validate", str(_suite(plugin, "[none]", "metrics: [ssim, broken]\n")))
    assert result.returncode == 2
    assert "metric 'broken'" in result.stderr and "cannot be loaded" in result.stderr
    assert DISTRIBUTION in result.stderr and "s.yaml:" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_entry_point_of_the_wrong_kind_is_skipped_or_a_named_error(plugin: Path) -> None:
    listed = privbench("list", "attacks")
    assert listed.returncode == 0 and "wrong-kind" not in listed.stdout
    [warning] = [line for line in listed.stderr.splitlines() if "'wrong-kind'" in line]
    assert "is not a CounterAttack subclass" in warning and DISTRIBUTION in warning
    text = TINY.replace("DEFENSES", "[none]").replace("attacks: [none]", "attacks: [wrong-kind]")
    result = privbench("validate", str(write_suite(plugin / "w.yaml", text)))
    assert result.returncode == 2 and "is not a CounterAttack subclass" in result.stderr
    assert "w.yaml:5" in result.stderr


def test_a_plugin_cannot_take_a_builtin_name(plugin: Path) -> None:
    from defenses.krtio import KRTIO

    result = privbench("validate", str(_suite(plugin, "[none]")))
    assert DEFENSES.get("krtio") is KRTIO
    assert DEFENSES.distribution("krtio")[0] == "privbench"
    shadow = [line for line in result.stderr.splitlines() if "'krtio'" in line]
    assert len(shadow) == 1 and "myplug:krtio" in shadow[0] and "ignored" in shadow[0]
    assert any("'privbench:blur'" in line for line in result.stderr.splitlines())
    assert "privbench:blur" not in DEFENSES.names()


def test_a_namespaced_plugin_method_runs_and_the_manifest_names_it(plugin: Path) -> None:
    suite = _suite(plugin, "[none, {name: 'myplug:krtio', params: {sigma: 2}, label: plug}]")
    out = plugin / "results"
    result = privbench("run", str(suite), "--out", str(out), "--run-id", "r", "--quiet")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "tiny" / "r" / "manifest.json").read_text("utf-8"))
    [entry] = manifest["plugins"]
    assert entry["distribution"] == DISTRIBUTION
    assert entry["provides"]["defenses"] == [{"name": "myplug:krtio", "class": f"{PACKAGE}.Blur"}]


# -- labels ----------------------------------------------------------------------------------
LONG = "gaussian blur with a label long enough that eighty characters do not tell it apart"


def test_labels_one_file_name_cannot_tell_apart_are_refused_naming_both(tmp_path: Path) -> None:
    defenses = "\n  - {name: gaussian-blur, label: blur a}\n  - {name: pixelate, label: blur/a}"
    result = privbench("validate", str(_suite(tmp_path, defenses)))
    assert result.returncode == 2
    assert "'blur a' (line 5) and 'blur/a'" in result.stderr and "s.yaml:6" in result.stderr
    assert "defenses[1]" in result.stderr


def test_labels_a_file_name_cannot_tell_apart_get_their_own_files(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    for a, b in (("blur a", "blur/a"), (f"{LONG} A", f"{LONG} B")):
        assert folder.cell_records_file(a, "none", "sface") != folder.cell_records_file(
            b, "none", "sface"
        )
        assert folder.quality_file(a) != folder.quality_file(b)
        assert folder.samples_dir(a) != folder.samples_dir(b)


def test_long_labels_equal_in_their_first_80_characters_get_their_own_files(
    tmp_path: Path,
) -> None:
    a, b = f"{LONG} A", f"{LONG} B"
    assert a[:80] == b[:80]
    defenses = (
        f"\n  - {{name: gaussian-blur, params: {{sigma: 0.1}}, label: {a}}}"
        f"\n  - {{name: gaussian-blur, params: {{sigma: 4}}, label: {b}}}"
    )
    out = tmp_path / "results"
    run = ["run", str(_suite(tmp_path, defenses)), "--out", str(out), "--run-id", "r"]
    assert privbench(*run, "--quiet").returncode == 0
    folder = out / "tiny" / "r"
    records = sorted(p.name for p in (folder / "records").glob("*.jsonl"))
    assert len(records) == 2 and records[0] != records[1]
    assert len(list((folder / "records" / "quality").glob("*.jsonl"))) == 2
    assert len([p for p in (folder / "samples").iterdir() if p.name != "clean"]) == 2
    result = privbench("compare", str(folder), "--defenses", a, b)
    assert result.returncode == 0, result.stderr
    ssim = next(line for line in result.stdout.splitlines() if "| ssim " in line)
    assert "+0.000" not in ssim and "0.0000 [" not in ssim, ssim


# -- plots -----------------------------------------------------------------------------------
def test_labels_that_look_like_mathtext_are_drawn_as_text(tmp_path: Path) -> None:
    defenses = (
        "\n  - {name: none, label: '$\\frac{1$'}"
        "\n  - {name: gaussian-blur, label: '_x^2'}"
        "\n  - {name: pixelate, label: 'a\\n$b$'}"
    )
    floor = "metrics: [fooling_rate, ssim]\nquality_floor: {metric: ssim, min: 0.01}\n"
    suite = _suite(tmp_path, defenses, floor).read_text("utf-8")
    suite = suite.replace("label: cnn", "label: '$c_n$'").replace("steps: 4,", "steps: 40,")
    suite = suite.replace("max_probes: 8", "max_probes: 16")  # a recognizer that recognizes
    path = write_suite(tmp_path / "s.yaml", suite)
    out = tmp_path / "results"
    assert (
        privbench("run", str(path), "--out", str(out), "--run-id", "r", "--quiet").returncode == 0
    )
    result = privbench("report", str(out / "tiny" / "r"))
    assert result.returncode == 0, result.stderr
    page = (out / "tiny" / "r" / "report.html").read_text("utf-8")
    assert "<figure>" in page
    for label in ("$\\frac{1$", "_x^2", "a\\n$b$", "$c_n$"):
        assert label in page


# -- keys ------------------------------------------------------------------------------------
SECRET = "9f" * 32  # a key in hex, typed where a path belongs


@pytest.mark.parametrize(
    "command",
    [
        ["run", "SUITE", "--key", SECRET],
        ["protect", "IN", "OUT", "--key", SECRET],
        ["recover", "IN", "OUT", "--key", SECRET],
        ["protect", "IN", "OUT", "--key", SECRET * 40],  # longer than a file name may be
    ],
)
def test_a_key_given_on_the_command_line_is_never_echoed(command, tmp_path: Path) -> None:
    suite = _suite(tmp_path, "[{name: krtio}]")
    (tmp_path / "in").mkdir()
    where = {"SUITE": str(suite), "IN": str(tmp_path / "in"), "OUT": str(tmp_path / "out")}
    args = [where.get(a, a) for a in command]
    if args[0] == "run":
        args += ["--out", str(tmp_path / "results")]
    result = privbench(*args, env={"PRIVBENCH_KEY": "", "PRIVBENCH_KEY_FILE": ""})
    assert result.returncode == 2
    assert "--key names no key file" in result.stderr and "$PRIVBENCH_KEY" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"PRIVBENCH_KEY_FILE": SECRET},
        {"PRIVBENCH_KEY": SECRET[:-1]},
        {"PRIVBENCH_KEY": SECRET[:20]},
    ],
)
def test_a_key_in_the_wrong_variable_or_cut_short_is_never_echoed(env, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    result = privbench("protect", str(tmp_path / "in"), str(tmp_path / "out"), env=env)
    assert result.returncode == 2, result.stderr
    assert SECRET[:20] not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["run", "protect", "recover"])
def test_help_says_keys_belong_in_files_or_the_environment(command: str) -> None:
    text = " ".join(privbench(command, "--help").stdout.split())
    assert "never the key itself" in text and "shell history" in text
