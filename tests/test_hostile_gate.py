"""The CI gate and the commands over finished runs, fed hostile or clumsy input: ``check`` reads
its baseline as a bounded regular file and validates every field (a tampered baseline never
passes), and ``check``, ``compare`` and ``baseline`` refuse a run that did not finish."""

from __future__ import annotations

import base64
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.analysis.baseline_file import read_baseline
from tests.test_owner_cli import privbench

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "data" / "runs" / "old-blur-v0.1"  # a complete run, committed
CI_BASELINE = ROOT / "results" / "baselines" / "ci-gate.json"
MEMORY = 4 << 30  # the most a refused baseline may make privbench allocate


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A baseline of the committed run, as ``privbench baseline -o`` writes it."""
    path = tmp_path_factory.mktemp("gate") / "baseline.json"
    result = privbench("baseline", str(OLD), "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path


def _bounded(*args: str) -> subprocess.CompletedProcess[str]:
    """``privbench ARGS`` in a child with at most :data:`MEMORY` of data and 120 s, so that a
    read without bound fails the test instead of hanging or exhausting the machine."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY, MEMORY))

    return subprocess.run(
        [sys.executable, "-m", "harness.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )


def test_a_device_as_baseline_is_refused_at_once() -> None:
    result = _bounded("check", str(OLD), "--baseline", "/dev/zero")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "/dev/zero is a FIFO, device or socket, not a baseline file" in result.stderr


def test_a_fifo_as_baseline_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "baseline.json"
    os.mkfifo(fifo)
    result = _bounded("check", str(OLD), "--baseline", str(fifo))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{fifo} is a FIFO, device or socket" in result.stderr


def test_a_link_to_a_device_is_refused_and_a_link_to_a_baseline_is_followed(
    tmp_path: Path, stored: Path
) -> None:
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    result = privbench("check", str(OLD), "--baseline", str(tmp_path / "zero.json"))
    assert result.returncode == 2 and "not a baseline file" in result.stderr
    (tmp_path / "good.json").symlink_to(stored)
    result = privbench("check", str(OLD), "--baseline", str(tmp_path / "good.json"))
    assert result.returncode == 0, result.stderr
    assert "checks pass" in result.stdout


def test_a_folder_or_a_missing_file_as_baseline_is_a_named_error(tmp_path: Path) -> None:
    result = privbench("check", str(OLD), "--baseline", str(tmp_path))
    assert (
        result.returncode == 2 and f"{tmp_path} is a folder, not a baseline file" in result.stderr
    )
    result = privbench("check", str(OLD), "--baseline", str(tmp_path / "nothing.json"))
    assert result.returncode == 2 and "no such baseline file" in result.stderr


def test_a_baseline_past_the_size_limit_is_refused(tmp_path: Path, stored: Path) -> None:
    size = stored.stat().st_size
    env = {"PRIVBENCH_MAX_BASELINE_BYTES": str(size - 1)}
    result = privbench("check", str(OLD), "--baseline", str(stored), env=env)
    assert result.returncode == 2, result.stderr
    assert f"larger than {size - 1:,} bytes" in result.stderr
    env = {"PRIVBENCH_MAX_BASELINE_BYTES": str(size)}
    assert privbench("check", str(OLD), "--baseline", str(stored), env=env).returncode == 0


def test_a_big_file_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(200 << 20)  # 200 MB (sparse): was read whole, 0.5 GB of memory
    env = {**os.environ, "PRIVBENCH_MAX_BASELINE_BYTES": str(1 << 20)}
    code = (
        "import resource, sys\nfrom pathlib import Path\n"
        "from harness.analysis.baseline_file import read_baseline\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_baseline(Path(sys.argv[1]))\nexcept Exception as exc:\n    print(exc)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(big)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    message, grown_kib = result.stdout.splitlines()
    assert "larger than 1,048,576 bytes" in message
    assert int(grown_kib) < 32 << 10  # the peak grew by far less than the file's 200 MB


def test_deeply_nested_json_is_a_named_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = privbench("check", str(OLD), "--baseline", str(deep))
    assert result.returncode == 2 and "nested too deeply" in result.stderr, result.stderr


def _first(baseline: dict[str, Any]) -> dict[str, Any]:
    return baseline["cells"][sorted(baseline["cells"])[0]]


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: _first(b).__setitem__(field, value)


def _other_rate(b: dict[str, Any]) -> None:
    cell = _first(b)
    cell["fooling_rate"] = round((cell["fooling_rate"] + 0.25) % 1, 6)


def _more_probes(b: dict[str, Any]) -> None:
    _first(b)["n_probes"] += 8


def _fewer_probes(b: dict[str, Any]) -> None:
    _first(b)["n_probes"] -= 1


def _quality(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(b: dict[str, Any]) -> None:
        metrics = b["quality"][sorted(b["quality"])[0]]
        metrics[sorted(metrics)[0]][field] = value

    return change


TAMPERED = {
    "rate NaN": (_set("fooling_rate", float("nan")), "'fooling_rate'"),
    "rate infinite": (_set("fooling_rate", float("inf")), "'fooling_rate'"),
    "rate text": (_set("fooling_rate", "a"), "'fooling_rate'"),
    "rate above 1": (_set("fooling_rate", 1.5), "'fooling_rate'"),
    "rate not the bits'": (_other_rate, "'fooling_rate'"),
    "fooled not base64": (_set("fooled", "!!not base64!!"), "'fooled'"),
    "fooled too long": (_set("fooled", base64.b64encode(b"\0" * 4096).decode()), "'fooled'"),
    "eligible a number": (_set("eligible", 7), "'eligible'"),
    "n_probes larger": (_more_probes, "'eligible'"),
    "n_probes smaller": (_fewer_probes, "'eligible'"),
    "n_probes text": (_set("n_probes", "10"), "'n_probes'"),
    "n_probes negative": (_set("n_probes", -1), "'n_probes'"),
    "n_probes boolean": (_set("n_probes", True), "'n_probes'"),
    "ids digest not hex": (_set("ids_sha256", None), "'ids_sha256'"),
    "defense not text": (_set("defense", ["none"]), "'defense'"),
    "quality mean NaN": (_quality("mean", float("nan")), "'mean'"),
    "quality mean text": (_quality("mean", "0.9"), "'mean'"),
    "quality n negative": (_quality("n", -3), "'n'"),
    "quality mean a 400-digit integer": (_quality("mean", 10**400), "'mean'"),
    "quality interval text": (_quality("ci_low", "0.8"), "'ci_low'"),
    "quality interval infinite": (_quality("ci_high", float("inf")), "'ci_high'"),
}


def _check_tampered(change, stored: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``privbench check`` of the old run against the stored baseline changed by ``change``;
    the tampered file's path and the finished process."""
    baseline = json.loads(stored.read_text(encoding="utf-8"))
    change(baseline)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(baseline), encoding="utf-8")
    return path, privbench("check", str(OLD), "--baseline", str(path))


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_a_tampered_cell_is_refused_naming_file_cell_and_field(
    name: str, tmp_path: Path, stored: Path
) -> None:
    change, field = TAMPERED[name]
    cell = sorted(json.loads(stored.read_text(encoding="utf-8"))["cells"])[0]
    path, result = _check_tampered(change, stored, tmp_path)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert str(path) in result.stderr and field in result.stderr
    if not name.startswith("quality"):
        assert repr(cell) in result.stderr
    assert "bug in privbench" not in result.stderr


WHOLE = {
    "cells null": (lambda b: b.__setitem__("cells", None), "'cells'"),
    "cells empty": (lambda b: b.__setitem__("cells", {}), "'cells'"),
    "a cell a list": (lambda b: b["cells"].__setitem__("x", []), "cell 'x'"),
    "protocol a list": (lambda b: b.__setitem__("protocol", []), "'protocol'"),
    "recognizers text": (lambda b: b.__setitem__("recognizers", "cnn"), "'recognizers'"),
    "a config without params": (
        lambda b: b["counter_attacks"][0].pop("params"),
        "counter_attacks[0]",
    ),
    "quality a list": (lambda b: b.__setitem__("quality", []), "'quality'"),
    "suite a number": (lambda b: b.__setitem__("suite", 3), "'suite'"),
    "schema 2": (lambda b: b.__setitem__("schema", 2), "schema 2 is not 1"),
    "no schema": (lambda b: b.pop("schema"), "schema None is not 1"),
}


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_a_tampered_baseline_is_refused_naming_the_field(
    name: str, tmp_path: Path, stored: Path
) -> None:
    change, field = WHOLE[name]
    path, result = _check_tampered(change, stored, tmp_path)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert str(path) in result.stderr and field in result.stderr, result.stderr


def test_the_committed_baselines_validate() -> None:
    for path in sorted((ROOT / "results" / "baselines").glob("*.json")):
        assert read_baseline(path)["cells"], path
    assert CI_BASELINE.is_file()


def _copy_with_status(tmp_path: Path, status: str) -> Path:
    run = tmp_path / "runs" / "old-blur" / status
    shutil.copytree(OLD, run)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["status"] = status
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


@pytest.mark.parametrize("status", ["running", "interrupted", "terminated"])
def test_an_unfinished_run_is_refused_by_check_compare_and_baseline(
    status: str, tmp_path: Path, stored: Path
) -> None:
    run = _copy_with_status(tmp_path, status)
    for args in (
        ["check", str(run), "--baseline", str(stored)],
        ["compare", str(run), str(OLD)],
        ["compare", str(OLD), str(run)],
        ["compare", str(run), "--defenses", "none", "blur"],
        ["baseline", str(run)],
    ):
        result = privbench(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert f"{run} is {status!r}, not complete" in result.stderr, result.stderr
        assert f"--run-id {status} --resume" in result.stderr


def test_a_failed_run_is_checked_and_compared_but_is_no_baseline(
    tmp_path: Path, stored: Path
) -> None:
    run = _copy_with_status(tmp_path, "failed")
    result = privbench("check", str(run), "--baseline", str(stored))
    assert result.returncode == 0 and "checks pass" in result.stdout, result.stderr
    assert privbench("compare", str(run), str(OLD)).returncode == 0
    result = privbench("baseline", str(run))
    assert result.returncode == 2 and f"{run} is 'failed', not complete" in result.stderr


def test_an_archive_index_nested_too_deeply_is_no_submission(tmp_path: Path) -> None:
    from harness.analysis.submission import INDEX, _is_submission

    deep = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(INDEX)
        info.size = len(deep)
        tar.addfile(info, io.BytesIO(deep))
    assert not _is_submission(path)  # was RecursionError: submit -o over it ended in exit 3
