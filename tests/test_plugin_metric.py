"""A metric from outside privbench, registered through the ``privbench.metrics`` entry point
group, goes everywhere a built-in one goes: a suite lists it, the run writes its rows and its
declaration, and the leaderboard, report.html, ``privbench compare`` and ``privbench check``
show it as it declares itself (a quality metric where lower is better, four decimals, its own
gate tolerance), without the plugin installed where the run folder is read."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.api.registry import METRICS
from harness.cli.main import main
from tests.conftest import write_distribution, write_suite

DISTRIBUTION, PACKAGE, NAME = "privbench-mae-metric", "privbench_mae_metric", "mae"
REPO = Path(__file__).resolve().parent.parent

PLUGIN = '''"""Mean absolute pixel error of the upload: a metric privbench does not ship."""

from typing import ClassVar

import numpy as np

from harness.api.contracts import MetricFormat, MetricValue, QualityMetric
from harness.metrics.stats import mean_interval


class MeanAbsoluteError(QualityMetric):
    """Mean |original - upload| over the pixels of each image, on the 0-1 scale."""

    higher_is_better = False
    by_default: ClassVar[bool] = False
    gate_tolerance: ClassVar[float | None] = 0.002
    display: ClassVar[MetricFormat | None] = MetricFormat(digits=4, delta_digits=5)

    def per_image(self, original, protected):
        diff = (original.double() - protected.double()).abs()
        return diff.flatten(1).mean(1).cpu().numpy()

    def compute(self, records):
        values = np.asarray(records.quality.get(self.key, np.zeros(0)), dtype=np.float64)
        mean, lo, hi = mean_interval(values)
        return MetricValue(mean, len(values), lo, hi)
'''

SUITE = """\
name: plugin-metric
dataset: {{name: digits, params: {{max_probes: 40, size: 32}}}}
recognizers: [{{name: small-cnn, params: {{steps: 40, width: 4}}, label: cnn}}]
defenses:
  - none
  - {{name: naive-overlay, params: {{alpha: {alpha}}}, label: overlay}}
counter_attacks: [none, {{name: jpeg, params: {{quality: 75}}}}]
metrics: [fooling_rate, ssim, {name}]
quality_floor: {{metric: ssim, min: 0.1}}
"""


def _distribution(root: Path) -> None:
    """The plugin as an installed distribution would leave it: a package and its dist-info."""
    entry_points = f"[privbench.metrics]\n{NAME} = {PACKAGE}:MeanAbsoluteError\n"
    write_distribution(root, PACKAGE, DISTRIBUTION, PLUGIN, entry_points)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Two runs listing the plugin metric: the overlay at 0.3, and a far weaker one (0.97,
    nearer the original) under the same label."""
    root = tmp_path_factory.mktemp("plugin-metric")
    _distribution(root / "site")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root / "site"))
        METRICS.refresh()
        try:
            assert NAME in METRICS.names()
            out = {}
            for key, alpha in (("strong", 0.3), ("weak", 0.97)):
                path = write_suite(root / f"{key}.yaml", SUITE.format(alpha=alpha, name=NAME))
                args = ["run", str(path), "--out", str(root / "results"), "--run-id", key]
                assert main([*args, "--quiet"]) == 0
                out[key] = root / "results" / "plugin-metric" / key
            yield out
        finally:
            sys.modules.pop(PACKAGE, None)
            METRICS.refresh()


def _rows(run: Path, metric: str) -> dict[str, dict]:
    lines = (run / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["defense"]: r for r in map(json.loads, lines) if r["metric"] == metric}


def test_the_run_writes_the_plugin_metrics_rows_and_declaration(runs) -> None:
    rows = _rows(runs["strong"], NAME)
    assert set(rows) == {"none", "overlay"}
    assert rows["none"]["value"] == 0.0 and rows["overlay"]["value"] > 0.0
    assert all(r["scope"] == "defense" and r["higher_is_better"] is False for r in rows.values())
    manifest = json.loads((runs["strong"] / "manifest.json").read_text(encoding="utf-8"))
    declared = manifest["metrics"][NAME]
    assert (declared["role"], declared["paired_test"], declared["gate_tolerance"]) == (
        "quality",
        "bootstrap",
        0.002,
    )
    assert declared["display"]["digits"] == 4
    [plugin] = manifest["plugins"]
    assert plugin["distribution"] == DISTRIBUTION
    assert plugin["provides"]["metrics"][0]["name"] == NAME


def test_the_leaderboard_and_report_show_it_in_its_declared_format(runs) -> None:
    value = f"{_rows(runs['strong'], NAME)['overlay']['value']:.4f}"
    board = (runs["strong"] / "leaderboard.md").read_text(encoding="utf-8")
    quality = board.split("## Image quality and cost, with intervals")[1].split("##")[0]
    header, _, *lines = quality.strip().splitlines()
    assert header.split("|")[3].strip() == NAME
    overlay = next(line for line in lines if line.startswith("| overlay"))
    assert overlay.split("|")[3].strip().startswith(value + " [")
    assert f"plugin {DISTRIBUTION} 1.0" in board and f"provides {NAME}" in board
    assert main(["report", str(runs["strong"])]) == 0
    page = (runs["strong"] / "report.html").read_text(encoding="utf-8")
    assert f"<th>{NAME}</th>" in page and f"<td>{value} [" in page


def test_compare_tests_it_per_image(runs, capsys) -> None:
    assert main(["compare", str(runs["strong"]), str(runs["weak"])]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if f"| {NAME} " in line]
    assert [line.split("|")[1].strip() for line in lines] == ["none", "overlay"]
    delta = lines[1].split("|")[7].strip()
    assert re.fullmatch(r"-\d\.\d{5} \[-\d\.\d{5}, -\d\.\d{5}\]", delta)  # B is nearer the photo


def test_check_gates_it_in_its_direction(runs, tmp_path, capsys) -> None:
    baseline = tmp_path / "strong.json"
    assert main(["baseline", str(runs["strong"]), "-o", str(baseline)]) == 0
    stored = json.loads(baseline.read_text(encoding="utf-8"))["quality"]
    assert set(stored["overlay"]) == {"ssim", NAME}
    assert main(["check", str(runs["strong"]), "--baseline", str(baseline)]) == 0
    assert f"ok   overlay: {NAME}" in capsys.readouterr().out
    # lower error is better: the weaker overlay fails on its fooling rate, never on the metric
    assert main(["check", str(runs["weak"]), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "FAIL overlay × none × cnn: fooling_rate" in out and f"ok   overlay: {NAME}" in out
    weak = tmp_path / "weak.json"
    assert main(["baseline", str(runs["weak"]), "-o", str(weak)]) == 0
    assert main(["check", str(runs["strong"]), "--baseline", str(weak)]) == 1
    assert f"FAIL overlay: {NAME}" in capsys.readouterr().out


def test_the_folder_renders_the_same_where_the_plugin_is_not_installed(runs, capsys) -> None:
    assert main(["leaderboard", str(runs["strong"])]) == 0
    here = capsys.readouterr().out
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "harness.cli", "leaderboard", str(runs["strong"])]
    elsewhere = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert (
        NAME
        not in subprocess.run(
            [sys.executable, "-m", "harness.cli", "list"], env=env, capture_output=True, text=True
        ).stdout.split()
    )
    assert elsewhere.stdout == here
