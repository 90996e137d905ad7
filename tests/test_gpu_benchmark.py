"""benchmarks/gpu.py, the prepared GPU check, at its tiny sizes on this machine: one table with
every row, CPU figures that were measured, and CUDA cells marked absent when there is no GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"
ROWS = "abcdef"
# What each row must measure (JSON ``measure`` prefixes; row e once per defense of its suite).
EXPECTED = {
    "a": ["quickstart", "fully cached re-run", "cold ÷ cached"],
    "b": ["k-RTIO protect", "k-RTIO recover"],
    "c": ["AIP gaman", "PGD ε 8"],
    "d": ["U-Net width", "same epoch"],
    "e": [
        "gaussian-blur(sigma=1.5): synchronised",
        "gaussian-blur(sigma=1.5): no synchronisation",
        "gaussian-blur(sigma=1.5): no sync ÷ sync",
        "krtio(alpha=0.45, block=8, k=3): synchronised",
        "krtio(alpha=0.45, block=8, k=3): no synchronisation",
        "krtio(alpha=0.45, block=8, k=3): no sync ÷ sync",
    ],
    "f": ["dask LocalCluster"],
}


def _table_rows(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The printed table's header and data rows (GitHub Markdown)."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("gpu-benchmark") / "table.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-4000:]}"
    return run, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_the_table_has_every_row_and_nothing_failed(tiny_run) -> None:
    run, table = tiny_run
    assert table["failures"] == []
    assert not any(line["failed"] for line in table["lines"])
    for row, prefixes in EXPECTED.items():
        measures = [line["measure"] for line in table["lines"] if line["row"] == row]
        for prefix in prefixes:
            assert any(m.startswith(prefix) for m in measures), (row, prefix, measures)
    _, printed = _table_rows(run.stdout)
    assert [r[0] for r in printed] == [line["row"] for line in table["lines"]]
    assert {r[0] for r in printed} == set(ROWS)


@pytest.mark.slow
def test_cpu_figures_are_measured_positive_numbers(tiny_run) -> None:
    run, table = tiny_run
    header, printed = _table_rows(run.stdout)
    assert header[3].startswith("CPU: ")
    for line in table["lines"]:
        assert isinstance(line["cpu"], float), line
        assert math.isfinite(line["cpu"]) and line["cpu"] > 0, line
        assert line["cpu_device"] == table["devices"]["cpu"]
    for cells in printed:
        assert float(cells[3]) > 0, cells


@pytest.mark.slow
def test_cuda_cells_are_absent_without_a_gpu(tiny_run) -> None:
    run, table = tiny_run
    header, printed = _table_rows(run.stdout)
    if torch.cuda.is_available():
        assert table["devices"]["cuda"] == torch.cuda.get_device_name(0)
        assert all(line["cuda"] > 0 for line in table["lines"])
        return
    assert table["devices"]["cuda"] is None
    assert header[4] == "CUDA: —"
    for line in table["lines"]:
        assert line["cuda"] is None and line["ratio"] is None, line
        assert line["cuda_absent"] == "no CUDA device"
    for cells in printed:
        assert cells[4] == "—" and cells[5] == "—", cells  # no figure, no ratio
        assert "no CUDA device" in cells[6], cells


def test_a_failing_row_is_printed_and_the_rest_still_run(tmp_path: Path) -> None:
    """Row e with an invalid scene size fails; row b still measures; the exit status is 1."""
    out = tmp_path / "table.json"
    args = ["--tiny", "--rows", "be", "--latency-size", "4", "--no-cuda", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    table = json.loads(out.read_text(encoding="utf-8"))
    assert [(f["row"], f["device"]) for f in table["failures"]] == [("e", "cpu")]
    assert "out of range" in table["failures"][0]["error"]
    _, printed = _table_rows(run.stdout)
    failed = [r for r in printed if r[1] == "FAILED on cpu"]
    assert len(failed) == 1 and failed[0][0] == "e" and "dataset.params.size" in failed[0][6]
    assert all(float(r[3]) > 0 for r in printed if r[0] == "b") and len(printed) == 3
