"""``privbench run --smoke``: every method of a suite on a handful of probes, marked as smoke,
in a cold cache of its own; what this machine lacks is skipped and listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.submission import pack
from harness.api.contracts import apply_smoke
from harness.api.registry import DEFENSES
from harness.cli.wiring import run_with_leaderboard
from harness.core.errors import PrivbenchError
from harness.engine.runner import RunOptions, run_suite
from harness.engine.smoke import SMOKE_PROBES, SmokeSkipped, smoke_plan
from harness.engine.suite import load_suite
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "suites").glob("*.yaml"))

SMALL = """
name: smoke-small
seed: 0
dataset: {name: lfw-subset, params: {max_probes: 30}}
recognizers: [yunet, small-cnn]
defenses:
  - none
  - {name: pgd, params: {eps: 8, iterations: 10}}
counter_attacks: [none, {name: retrain, params: {steps: 50}}]
metrics: [fooling_rate, detection_rate, ssim, latency]
batch_size: 16
"""


def test_apply_smoke_caps_numbers_and_replaces_the_rest() -> None:
    params = {"iterations": 100, "steps": 3, "learn": None, "grid": [5, 5, 31], "flag": True}
    smoke = {"iterations": 2, "steps": 5, "learn": 8, "grid": [2, 2, 2], "flag": 0, "absent": 1}
    assert apply_smoke(params, smoke) == {
        "iterations": 2,  # cut
        "steps": 3,  # already smaller: kept
        "learn": 8,  # None ("all") becomes the cap
        "grid": [2, 2, 2],
        "flag": 0,  # a bool is not a number to take the minimum of
    }


def test_nested_methods_are_cut_too() -> None:
    chain = DEFENSES.resolve(
        "chain",
        {"steps": ["ying-contrast", {"name": "least-likely", "params": {"eps": 8}}]},
    )
    steps = DEFENSES.get("chain").smoke_params(chain)["steps"]
    assert steps[1]["params"]["iterations"] == 2
    assert steps[1]["params"]["surrogate_params"]["steps"] == 5  # its small-cnn surrogate
    aip = DEFENSES.get("aip").smoke_params(DEFENSES.resolve("aip", {"iterations": 30}))
    assert (aip["iterations"], aip["draws"], aip["surrogate_params"]["steps"]) == (2, 1, 5)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_suite_has_a_valid_smoke_plan(path: Path) -> None:
    """Each cut validates; the cut suite keeps every label; a suite that cannot run here says
    which data set or files it lacks."""
    suite = load_suite(path)
    plan = smoke_plan(suite)
    if plan.suite is None:
        assert plan.skipped and all(s["needs"] for s in plan.skipped)
        return
    cut = plan.suite
    assert cut.smoke and cut.batch_size <= SMOKE_PROBES
    assert [d.label for d in cut.defenses] == [d.label for d in suite.defenses]
    assert [m.label for m in cut.metrics] == [m.label for m in suite.metrics]
    kept = {r.label for r in cut.recognizers} | {s["name"] for s in plan.skipped}
    assert kept >= {r.label for r in suite.recognizers}
    for full, small in zip(suite.defenses, cut.defenses, strict=True):
        for key, value in small.params.items():
            before = full.params[key]
            if isinstance(value, int) and isinstance(before, int) and not isinstance(value, bool):
                assert value <= before, (full.label, key)


def test_a_smoke_run_is_marked_cut_and_leaves_no_cache(tmp_path: Path) -> None:
    home_cache = tmp_path / "home-cache"
    suite = load_suite(write_suite(tmp_path / "s.yaml", SMALL))
    result = run_with_leaderboard(
        suite,
        RunOptions(out_root=tmp_path / "out", cache_root=home_cache, progress=False, smoke=True),
    )
    assert result.failures == []
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["smoke"]["probes"] == SMOKE_PROBES and manifest["config"]["smoke"] is True
    assert manifest["run_id"].startswith("smoke-")
    assert manifest["dataset"]["sizes"]["probe"] == SMOKE_PROBES
    params = {d["label"]: d["params"] for d in manifest["config"]["defenses"]}
    assert params["pgd(eps=8, iterations=10)"]["iterations"] == 2
    assert manifest["config"]["counter_attacks"][1]["params"]["steps"] == 5
    board = (result.run_dir / "leaderboard.md").read_text()
    assert board.startswith("# privbench leaderboard: smoke-small (smoke)")
    assert "SMOKE RUN" in board
    latency = [r for r in result.rows if r["metric"] == "latency"]
    # two timed batches (one if the first outlasts the smoke budget of 2 s)
    assert latency and all(1 <= r["n"] <= 2 for r in latency)
    cells = {(r["defense"], r["counter_attack"], r["recognizer"]) for r in result.rows}
    # every cell of the full suite but retrain × yunet (a detector cannot be retrained)
    assert len({c for c in cells if c[1] is not None}) == 2 * 2 * 2 - 2
    # a cold cache of its own: the given cache folder is never written, and nothing is left
    assert not home_cache.exists()
    assert "PRIVBENCH_CACHE" not in os.environ
    again = run_suite(
        suite,
        RunOptions(out_root=tmp_path / "out", cache_root=home_cache, progress=False, smoke=True),
    )
    assert again.manifest["cache"]["misses"] == manifest["cache"]["misses"] > 0  # cold again
    with pytest.raises(PrivbenchError, match="smoke run"):
        pack(result.run_dir, tmp_path / "s.tar.gz")


def test_missing_weights_are_skipped_and_listed(tmp_path: Path) -> None:
    text = SMALL.replace(
        "recognizers: [yunet, small-cnn]",
        "recognizers: [yunet, {name: torchvision-classifier, "
        "params: {weights: resnet50-places365}}]",
    )
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    result = run_suite(suite, RunOptions(out_root=tmp_path / "out", progress=False, smoke=True))
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    skipped = [s for s in manifest["skipped"] if s["scope"] == "recognizer"]
    assert [s["name"] for s in skipped] == ["torchvision-classifier(weights=resnet50-places365)"]
    assert "resnet50-places365" in " ".join(skipped[0]["needs"])
    assert {r["recognizer"] for r in result.rows if r["recognizer"]} == {"yunet"}


def test_a_suite_whose_data_is_absent_is_skipped_whole(tmp_path: Path) -> None:
    text = SMALL.replace(
        "dataset: {name: lfw-subset, params: {max_probes: 30}}",
        f"dataset: {{name: folder, params: {{root: {tmp_path / 'nowhere'}}}}}",
    )
    path = write_suite(tmp_path / "s.yaml", text)
    with pytest.raises(SmokeSkipped, match="nowhere"):
        run_suite(load_suite(path), RunOptions(out_root=tmp_path / "out", smoke=True))
    assert not (tmp_path / "out").exists()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli.main",
            "run",
            str(path),
            "--smoke",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "smoke: skipped dataset" in done.stderr and "nothing of smoke-small" in done.stderr
