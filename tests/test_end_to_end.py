"""A tiny suite run end to end: result files, their schema, caching, CLI behaviour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.cli.wiring import run_with_leaderboard
from harness.core.errors import PrivbenchError, SuiteError
from harness.core.files import read_jsonl
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from tests.conftest import write_suite

TINY = """\
name: tiny
description: a tiny end-to-end suite
seed: 0
dataset: {name: lfw-subset, params: {max_probes: 12}}
recognizers:
  - sface
  - yunet
  - {name: small-cnn, params: {steps: 20, width: 8, input_size: 16}}
defenses:
  - none
  - {name: naive-overlay, params: {alpha: [0.3, 0.6]}}
counter_attacks: [none, {name: jpeg, params: {quality: 75}}]
batch_size: 5
"""

ROW_KEYS = {
    "scope",
    "defense",
    "defense_name",
    "defense_params",
    "counter_attack",
    "recognizer",
    "metric",
    "value",
    "n",
    "ci_low",
    "ci_high",
    "higher_is_better",
    "unit",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("e2e")
    suite = load_suite(write_suite(tmp / "tiny.yaml", TINY))
    result = run_with_leaderboard(
        suite,
        RunOptions(
            out_root=tmp / "results", progress=False, cache_root=tmp / "cache", run_id="first"
        ),
    )
    return suite, result, tmp


def test_result_files_and_schema(tiny_run) -> None:
    suite, result, _ = tiny_run
    run_dir = result.run_dir
    assert run_dir.name == "first" and run_dir.parent.name == "tiny"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["failures"] == []
    for key in (
        "suite",
        "config",
        "git",
        "packages",
        "machine",
        "seed",
        "dataset",
        "started",
        "finished",
        "metrics",
        "schema_version",
    ):
        assert key in manifest, key
    assert manifest["suite"]["sha256"] == suite.sha256
    # the classifiers' fit split is 8 altered views of each of the 12 faces, never the probes
    assert manifest["dataset"]["sizes"] == {"fit": 96, "enroll": 12, "probe": 12, "negatives": 100}
    assert manifest["dataset"]["protocol"] == "near-duplicate-linking+detection"
    assert "reverse image search" in manifest["dataset"]["protocol_description"]
    assert manifest["metrics"]["ssim"]["parity"]["sigma"] == 1.5
    assert manifest["packages"]["torch"]
    rows = read_jsonl(run_dir / "results.jsonl")
    assert all(set(r) >= ROW_KEYS for r in rows)
    cells = {
        (r["defense"], r["counter_attack"], r["recognizer"]) for r in rows if r["scope"] == "cell"
    }
    assert len(cells) == suite.n_cells == 3 * 2 * 3
    records = sorted((run_dir / "records").glob("*.jsonl"))
    assert len(records) == suite.n_cells
    assert len(read_jsonl(records[0])) == 12
    board = (run_dir / "leaderboard.md").read_text()
    assert (
        "Ranking: worst case over counter-attacks" in board and "naive-overlay(alpha=0.3)" in board
    )


def test_numbers_are_consistent(tiny_run) -> None:
    _, result, _ = tiny_run
    rows = result.rows

    def get(metric, defense=None, attack=None, recognizer=None):
        return next(
            r
            for r in rows
            if r["metric"] == metric
            and r["defense"] == defense
            and r["counter_attack"] == attack
            and r["recognizer"] == recognizer
        )

    # no defense, no counter-attack: the platform sees the clean photo, so nothing is fooled
    # (exactly: clean and protected predictions run the same uint8 pixels through the same
    # recognizer in the same batch_size slices, so even a near-tie breaks the same way)
    labels = [r["label"] for r in result.manifest["config"]["recognizers"]]
    assert labels == ["sface", "yunet", "small-cnn(steps=20, width=8, input_size=16)"]
    for rec in labels:
        assert get("fooling_rate", "none", "none", rec)["value"] == 0.0
    # SSIM(x, x): every factor of the map is a quotient of two equal float32 expressions,
    # so 1 up to the float32 mean of ones (approx's rel = 1e-6 is 16u wide)
    assert get("ssim", "none")["value"] == pytest.approx(1.0)
    assert get("psnr", "none")["value"] == 100.0
    assert get("clean_recognition_rate", recognizer="sface")["value"] == 1.0
    # a heavier overlay (lower alpha) costs more image quality
    assert (
        get("ssim", "naive-overlay(alpha=0.3)")["value"]
        < get("ssim", "naive-overlay(alpha=0.6)")["value"]
    )
    for r in rows:
        if r["value"] is not None and r["ci_low"] is not None:
            assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_rerun_hits_the_cache_and_gives_identical_numbers(tiny_run) -> None:
    suite, first, tmp = tiny_run
    second = run_suite(
        suite,
        RunOptions(
            out_root=tmp / "results", progress=False, cache_root=tmp / "cache", run_id="second"
        ),
    )
    assert second.manifest["cache"]["misses"] == 0

    def strip(rows):
        return [r for r in rows if r["metric"] != "latency"]

    assert strip(second.rows) == strip(first.rows)


def test_uncached_rerun_is_deterministic(tiny_run) -> None:
    suite, first, tmp = tiny_run
    third = run_suite(
        suite, RunOptions(out_root=tmp / "results", progress=False, use_cache=False, run_id="third")
    )

    def pick(rows):
        return [
            (r["defense"], r["counter_attack"], r["recognizer"], r["metric"], r["value"])
            for r in rows
            if r["metric"] != "latency"
        ]

    assert pick(third.rows) == pick(first.rows)


def test_leaderboard_command_re_renders(tiny_run, capsys) -> None:
    _, result, _ = tiny_run
    assert main(["leaderboard", str(result.run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (result.run_dir / "leaderboard.md").read_text().strip()
    assert main(["leaderboard", str(result.run_dir), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("scope,defense,counter_attack,recognizer,metric")


def test_a_failing_defense_keeps_the_other_cells(tmp_path: Path) -> None:
    text = TINY.replace(
        "  - none\n", "  - none\n  - {name: naive-overlay, params: {overlay: /no/such.png}}\n"
    )
    suite = load_suite(write_suite(tmp_path / "tiny.yaml", text))
    result = run_suite(
        suite, RunOptions(out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "cache")
    )
    assert result.manifest["status"] == "failed"
    assert "no/such.png" in result.failures[0]["error"]
    done = {r["defense"] for r in result.rows if r["scope"] == "cell"}
    assert "none" in done and "naive-overlay(alpha=0.6)" in done


def test_cli_broken_suite_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = write_suite(tmp_path / "bad.yaml", TINY.replace("alpha: [0.3, 0.6]", "alpha: 2"))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{bad}:11: defenses[1].params.alpha: 2.0 is out of range" in proc.stderr


def test_cli_validate_and_list(capsys) -> None:
    root = Path(__file__).parent.parent
    assert main(["validate", str(root / "suites" / "quickstart.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    assert "naive-overlay" in out and "alpha: float, in (0, 1], default 0.45" in out


def test_recovery_metrics_for_reversible_defenses(tmp_path: Path) -> None:
    text = """\
name: recov
dataset: {name: lfw-subset, params: {max_probes: 16}}
recognizers: [yunet]
defenses: [none, {name: krtio, params: {alpha: 0.45, block: 4}}]
metrics:
  - ssim
  - recovery_ssim
  - recovery_psnr
  - {name: recovery_psnr, params: {jpeg_quality: 75}}
"""
    suite = load_suite(write_suite(tmp_path / "r.yaml", text))
    result = run_suite(
        suite, RunOptions(out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "cache")
    )
    got = {(r["defense"], r["metric"]): r for r in result.rows if r["scope"] == "defense"}
    krtio = "krtio(alpha=0.45, block=4)"
    # the upload's rounding comes back divided by α and rounded: MSE ≈ 1 − α = 0.55 levels²,
    # PSNR ≈ 50.7 dB (see test_krtio), a standard error of ~0.02 dB over 30,000 values;
    # clipping at 0 and 255 only lowers the MSE
    assert got[(krtio, "recovery_psnr")]["value"] >= 50.0
    assert got[(krtio, "recovery_ssim")]["value"] > 0.99 > got[(krtio, "ssim")]["value"]
    assert got[(krtio, "recovery_psnr(jpeg_quality=75)")]["value"] < 40.0
    assert ("none", "recovery_psnr") not in got  # not reversible: no recovery numbers
    assert result.manifest["key"]["source"].startswith("benchmark key derived from seed 0")


def test_a_suite_that_cannot_run_here_is_refused_before_any_folder(tmp_path: Path) -> None:
    text = TINY.replace(
        "  - sface\n",
        "  - sface\n  - {name: torchvision-classifier, params: "
        "{weights: resnet50-places365, num_classes: 365}}\n",
    )
    suite = load_suite(write_suite(tmp_path / "t.yaml", text))
    with pytest.raises(
        PrivbenchError, match=r"cannot run the suite yet:\n  - torchvision-classifier"
    ):
        run_suite(
            suite,
            RunOptions(
                out_root=tmp_path / "r", progress=False, run_id="x", cache_root=tmp_path / "cache"
            ),
        )
    assert not (tmp_path / "r").exists()


def test_bf16_precision_runs_torch_recognizers_under_autocast(tmp_path: Path) -> None:
    text = """\
name: mixed
dataset: {name: lfw-subset, params: {max_probes: 10}}
recognizers: [{name: small-cnn, params: {steps: 30, width: 8, input_size: 16}}]
defenses: [none]
precision: bf16
"""
    suite = load_suite(write_suite(tmp_path / "m.yaml", text))
    result = run_suite(
        suite, RunOptions(out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "cache")
    )
    assert result.manifest["config"]["precision"] == "bf16"
    fp32 = load_suite(write_suite(tmp_path / "f.yaml", text.replace("bf16", "fp32")))
    again = run_suite(
        fp32, RunOptions(out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "cache")
    )
    assert again.manifest["cache"]["misses"] > 0  # bf16 predictions are not reused for fp32
    with pytest.raises(SuiteError, match="precision: 'fp8' is not valid"):
        load_suite(write_suite(tmp_path / "x.yaml", text.replace("bf16", "fp8")))


def test_leaderboard_reads_in_a_terminal(tiny_run) -> None:
    _, result, _ = tiny_run
    board = (result.run_dir / "leaderboard.md").read_text()
    assert max(len(line) for line in board.splitlines()) <= 160
    # no table column is empty in every row
    tables: list[list[list[str]]] = []
    prev_blank = True
    for line in board.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            if tables and len(tables[-1][-1]) == len(cells) and not prev_blank:
                tables[-1].append(cells)
            else:
                tables.append([cells])
            prev_blank = False
        else:
            prev_blank = True
    assert tables
    for table in tables:
        for col in range(len(table[0])):
            assert any(row[col] != "–" for row in table[1:]), (table[0], col)
    assert (
        "Counter-attacks: a = none (knows nothing, oblivious), b = jpeg(quality=75) (knows "
        "nothing, oblivious)." in " ".join(board.split())
    )
