"""The machine's faults (issue 28, case 7): a cache folder that cannot be written, a disk that
fills up during a run (and ``--resume`` once it has room), SIGTERM in any command (temporary
folders removed), and a run killed outright during its set-up (read as incomplete)."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import harness.core.cache as cache_module
import harness.core.files
from harness.api.registry import DEFENSES
from harness.core.errors import PrivbenchError
from harness.engine.recorder import RESERVE_FILE, RESERVE_MIN_BYTES
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from harness.runs.folder import RunFolder, slug
from tests.conftest import write_suite
from tests.test_old_runs import ARCHIVE, OLD
from tests.test_owner_cli import privbench
from tests.test_robust_runs import SignalOnProtect

ROOT = Path(__file__).resolve().parent.parent
SUITE = """\
name: faults
dataset: {name: lfw-subset, params: {max_probes: 4}}
recognizers: [yunet]
defenses: [none, gaussian-blur]
metrics: [detection_rate]
"""
SIGINT_ON_PROTECT = "test-sigint"


class SigintOnProtect(SignalOnProtect):
    """Sends SIGINT to its own process when it protects (Ctrl-C in the middle of a run)."""

    signal = signal.SIGINT


DEFENSES.add(SIGINT_ON_PROTECT, SigintOnProtect)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.*")}


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _run(tmp_path: Path, *args: str):
    """``privbench run`` of the suite in ``tmp_path`` in this process, its cache in
    ``tmp_path/cache``."""
    suite = tmp_path / "s.yaml"
    if not suite.exists():
        write_suite(suite, SUITE)
    out = str(tmp_path / "r")
    env = {"PRIVBENCH_CACHE": str(tmp_path / "cache")}
    return privbench("run", str(suite), "--out", out, "--quiet", *args, env=env)


# -- a cache folder that cannot be written ------------------------------------------------------
@pytest.fixture
def read_only(monkeypatch) -> Iterator:
    """Make a folder read-only. chmod does that for a user, not for root (the tests may run as
    root, in a container): there, every write below the folder also fails as on a read-only
    mount, with EROFS (os.open for writing, os.mkdir, open() in a writing mode)."""
    chmodded: list[Path] = []
    roots: list[str] = []

    def below(path) -> bool:
        return any(os.path.abspath(os.fspath(path)).startswith(r) for r in roots)

    def refuse(path) -> OSError:
        return OSError(errno.EROFS, "Read-only file system", os.fspath(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def guarded_open(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and below(file):
            raise refuse(file)
        return real_open(file, mode, *a, **k)

    def guarded_os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and below(path):
            raise refuse(path)
        return real_os_open(path, flags, *a, **k)

    def guarded_mkdir(path, *a, **k):
        if below(path):
            raise refuse(path)
        return real_mkdir(path, *a, **k)

    def make(folder: Path) -> None:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
                chmodded.append(p)
        roots.append(os.path.abspath(folder))
        if os.geteuid() == 0:
            monkeypatch.setattr(builtins, "open", guarded_open)
            monkeypatch.setattr(io, "open", guarded_open)
            monkeypatch.setattr(os, "open", guarded_os_open)
            monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    yield make
    monkeypatch.undo()
    for p in chmodded:
        p.chmod(0o755)


def test_a_read_only_cache_warns_once_and_the_run_goes_on_storing_nothing(
    tmp_path: Path, read_only
) -> None:
    first = _run(tmp_path, "--run-id", "warm")
    assert first.returncode == 0, first.stderr
    cache = tmp_path / "cache"
    (next(p for p in cache.rglob("*.npz") if "protected" in p.parts)).unlink()  # one to compute
    before = _files(cache)
    read_only(cache)
    r = _run(tmp_path, "--run-id", "ro")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("cannot be written (Read-only file system)") == 1
    assert "going on without storing" in r.stderr and "failed" not in r.stderr
    manifest = _manifest(tmp_path / "r" / "faults" / "ro")
    assert manifest["status"] == "complete" and manifest["failures"] == []
    assert manifest["cache_not_stored"] == "Read-only file system"
    assert manifest["cache"]["hits"] > 0  # what the cache holds is still read
    assert _files(cache) == before


def test_cache_required_refuses_an_unwritable_cache_before_any_folder(
    tmp_path: Path, read_only
) -> None:
    (tmp_path / "cache").mkdir()
    read_only(tmp_path / "cache")
    r = _run(tmp_path, "--cache", "required")
    assert r.returncode == 2
    assert "cache folder" in r.stderr and "cannot be written" in r.stderr
    assert "--cache auto" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()
    off = _run(tmp_path, "--no-cache", "--run-id", "off")  # the old flag: --cache off
    assert off.returncode == 0 and "cache folder" not in off.stderr
    assert _manifest(tmp_path / "r" / "faults" / "off")["cache"]["enabled"] is False


def test_a_cache_disk_that_fills_up_stops_storing_and_leaves_no_unverified_entry(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    cache = cache_module.Cache(tmp_path / "cache")
    real, calls = cache_module.atomic_write_bytes, []

    def fills_up(path: Path, data: bytes) -> None:  # the entry fits, its checksum does not
        calls.append(path)
        if path.name.endswith(".sha256"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(cache_module, "atomic_write_bytes", fills_up)
    for i in range(3):
        value = cache.arrays("test", {"i": i}, lambda i=i: {"x": np.full(2, i)})
        assert value["x"].tolist() == [i, i]
    assert len(calls) == 2  # the first entry and its checksum; then nothing is stored
    assert cache.unwritable == "No space left on device"
    assert not [p for p in (tmp_path / "cache").rglob("*.npz")]
    assert capsys.readouterr().err.count("cannot be written (No space left on device)") == 1


def test_a_file_from_a_cache_that_stores_nothing_is_a_temporary_copy(
    tmp_path: Path, capsys
) -> None:
    cache = cache_module.Cache(tmp_path / "cache")
    stored = cache.file("model", {"m": 1}, lambda: b"stored", ".onnx")
    cache.stop_writing("Read-only file system")
    assert cache.file("model", {"m": 1}, lambda: b"never", ".onnx") == stored  # a verified hit
    fresh = cache.file("model", {"m": 2}, lambda: b"fresh", ".onnx")
    assert fresh.read_bytes() == b"fresh" and not fresh.is_relative_to(tmp_path / "cache")
    assert not cache.path("model", cache.key("model", {"m": 2}), ".onnx").exists()
    assert capsys.readouterr().err.count("cannot be written") == 1


# -- a full disk --------------------------------------------------------------------------------
def _disk_full_at(monkeypatch, name_starts: str) -> None:
    """Every atomic write of a run-folder file whose name starts with ``name_starts`` fails as on
    a full disk, naming the file as :func:`atomic_write_bytes` does (the cache's writes are not
    touched)."""
    real = harness.core.files.atomic_write_bytes

    def full(path: Path, data: bytes) -> None:
        if path.name.startswith(name_starts):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(harness.core.files, "atomic_write_bytes", full)


def test_a_failed_atomic_write_names_its_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text("before\n")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        harness.core.files.atomic_write_text(target, "after\n")
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(target))
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]
    assert target.read_text() == "before\n"


def test_a_full_disk_is_a_named_error_and_resume_finishes_the_run(
    tmp_path: Path, monkeypatch
) -> None:
    _disk_full_at(monkeypatch, slug("gaussian-blur") + "__")  # the second unit's records
    r = _run(tmp_path, "--run-id", "full")
    assert r.returncode == 2, r.stderr
    run_dir = tmp_path / "r" / "faults" / "full"
    records = RunFolder(run_dir).cell_records_file("gaussian-blur", "none", "yunet")
    assert f"cannot write {records}: No space left on device" in r.stderr
    assert "Free space" in r.stderr and "--run-id full --resume" in r.stderr
    manifest = _manifest(run_dir)
    assert manifest["status"] == "failed"
    assert "No space left on device" in manifest["failures"][0]["error"]
    kept = RunFolder(run_dir).cell_records_file("none", "none", "yunet").read_bytes()
    assert not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / RESERVE_FILE).exists()  # the room kept for the manifest is given back
    monkeypatch.undo()  # space is freed

    again = _run(tmp_path, "--run-id", "full", "--resume")
    assert again.returncode == 0, again.stderr
    manifest = _manifest(run_dir)
    assert manifest["status"] == "complete" and manifest["failures"] == []
    assert manifest["resumed_from"][0]["status"] == "failed"
    assert "No space left" in manifest["resumed_from"][0]["reason"]
    assert RunFolder(run_dir).cell_records_file("none", "none", "yunet").read_bytes() == kept
    assert records.is_file()
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    keys = [(r["scope"], r["defense"], r["counter_attack"], r["recognizer"]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing written twice
    fresh = _run(tmp_path, "--run-id", "fresh")
    assert fresh.returncode == 0
    assert (tmp_path / "r" / "faults" / "fresh" / "results.jsonl").read_text().count("\n") == len(
        rows
    )


def test_a_disk_full_at_the_last_write_leaves_the_run_failed_and_resumable(
    tmp_path: Path, monkeypatch
) -> None:
    real, writes = harness.core.files.atomic_write_bytes, []

    def full_after_two(path: Path, data: bytes) -> None:  # results.jsonl: one write per unit
        if path.name == "results.jsonl":
            writes.append(path)
            if len(writes) > 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(harness.core.files, "atomic_write_bytes", full_after_two)
    r = _run(tmp_path, "--run-id", "last")
    assert r.returncode == 2 and "results.jsonl: No space left on device" in r.stderr
    run_dir = tmp_path / "r" / "faults" / "last"
    manifest = _manifest(run_dir)
    assert manifest["status"] == "failed" and "No space" in manifest["failures"][0]["error"]
    monkeypatch.undo()
    assert _run(tmp_path, "--run-id", "last", "--resume").returncode == 0
    assert _manifest(run_dir)["status"] == "complete"


def test_a_read_only_results_folder_is_a_named_error(tmp_path: Path, monkeypatch) -> None:
    def read_only(path: Path, data: bytes) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(harness.core.files, "atomic_write_bytes", read_only)
    r = _run(tmp_path, "--run-id", "ro")
    assert r.returncode == 2, r.stderr
    # the first file a run writes is its lock's holder record, then its manifest
    assert re.search(r"cannot write \S+/(\.ro\.lock\.json|manifest\.json): Read-only", r.stderr)
    assert "bug" not in r.stderr


def test_a_full_disk_in_any_command_is_a_named_error(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "old"
    shutil.copytree(OLD, run_dir)
    before = _files(run_dir)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    r = privbench("report", str(run_dir))
    assert r.returncode == 2, r.stderr
    assert "report.html: No space left on device; free space on that disk" in r.stderr
    assert "bug" not in r.stderr and _files(run_dir) == before  # no partial report


def test_a_submission_stopped_by_a_full_disk_leaves_no_partial_archive(
    tmp_path: Path, monkeypatch
) -> None:
    assert _run(tmp_path, "--run-id", "done").returncode == 0
    out = tmp_path / "out" / "done.tar.gz"

    def no_space(*args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", no_space)
    r = privbench("submit", str(tmp_path / "r" / "faults" / "done"), "-o", str(out))
    assert r.returncode == 2 and "No space left on device" in r.stderr, r.stderr
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_resume_refuses_what_it_cannot_finish(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    options = RunOptions(out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "c")
    run_suite(suite, options)

    def resume(run_id: str | None, text: str = SUITE) -> str:
        other = load_suite(write_suite(tmp_path / "t.yaml", text))
        with pytest.raises(PrivbenchError) as info:
            run_suite(other, RunOptions(**{**vars(options), "run_id": run_id, "resume": True}))
        return str(info.value)

    assert "needs the --run-id" in resume(None)
    assert "one folder name" in resume("../r")
    assert "does not exist" in resume("nope")
    done = next((tmp_path / "r" / "faults").iterdir()).name
    assert "is complete" in resume(done)
    (tmp_path / "r" / "faults" / "empty").mkdir()  # a run killed before it wrote anything
    assert "is empty" in resume("empty") and "--overwrite" in resume("empty")
    (tmp_path / "r" / "faults" / "foreign").mkdir()
    (tmp_path / "r" / "faults" / "foreign" / "notes.txt").write_text("mine")
    assert "no manifest.json" in resume("foreign")
    manifest = tmp_path / "r" / "faults" / done / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "status": "running"}))
    assert "another suite" in resume(done, SUITE.replace("max_probes: 4", "max_probes: 3"))
    r = privbench("run", str(tmp_path / "s.yaml"), "--resume")
    assert r.returncode == 2 and "--run-id" in r.stderr


# -- signals ------------------------------------------------------------------------------------
def test_ctrl_c_and_sigterm_end_a_run_interrupted_naming_the_signal(tmp_path: Path) -> None:
    text = SUITE.replace("[none, gaussian-blur]", f"[none, {SIGINT_ON_PROTECT}]")
    write_suite(tmp_path / "s.yaml", text)
    r = _run(tmp_path, "--run-id", "c")
    assert r.returncode == 130 and "--resume" in r.stderr
    manifest = _manifest(tmp_path / "r" / "faults" / "c")
    assert (manifest["status"], manifest["interrupted_by"]) == ("interrupted", "SIGINT")
    board = (tmp_path / "r" / "faults" / "c" / "leaderboard.md").read_text()
    assert "interrupted (SIGINT)" in board and "--run-id c --resume" in board


SLOW_LEADERBOARD = """
import os, sys, time
sys.path.insert(0, {root!r})
import harness.boards.leaderboard as boards
from harness.cli.main import main

def slow(*args, **kwargs):  # the archive is unpacked by now: say so, then take forever
    open({mark!r}, "w").close()
    time.sleep(120)

boards.render_markdown = slow
sys.exit(main(["leaderboard", {archive!r}]))
"""


def test_sigterm_removes_the_temporary_folder_of_an_archive(tmp_path: Path) -> None:
    tmp, mark = tmp_path / "tmp", tmp_path / "unpacked"
    tmp.mkdir()
    script = SLOW_LEADERBOARD.format(root=str(ROOT), mark=str(mark), archive=str(ARCHIVE))
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.exists() and [p.name[:21] for p in tmp.iterdir()] == ["privbench-submission-"]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert b"terminated (SIGTERM)" in err and b"Traceback" not in err
    assert list(tmp.iterdir()) == []


KILLED_IN_SET_UP = """
import os, signal, sys
sys.path.insert(0, {root!r})
from harness.engine.execute import UnitRunner
from harness.cli.main import main

def killed(self):
    os.kill(os.getpid(), signal.SIGKILL)

UnitRunner.prepare = killed
sys.exit(main(["run", {suite!r}, "--out", {out!r}, "--quiet", "--run-id", "k"]))
"""


def test_a_run_killed_during_set_up_is_incomplete_not_refused(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    script = KILLED_IN_SET_UP.format(root=str(ROOT), suite=str(suite), out=str(tmp_path / "r"))
    env = {**os.environ, "PRIVBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    run_dir = tmp_path / "r" / "faults" / "k"
    assert not (run_dir / "results.jsonl").exists()
    assert (run_dir / RESERVE_FILE).stat().st_size >= RESERVE_MIN_BYTES  # room kept, running
    board = privbench("leaderboard", str(run_dir))
    assert board.returncode == 0 and "This run has not finished" in board.stdout
    assert f"privbench run {suite} --run-id k --resume" in board.stdout.replace("\n", " ")
    for args in (["compare", str(run_dir), str(run_dir)], ["baseline", str(run_dir)]):
        r = privbench(*args)
        assert r.returncode == 2 and "is incomplete (status 'running', no results" in r.stderr
        assert "--run-id k --resume" in r.stderr
    assert privbench("report", str(run_dir)).returncode == 0
    (run_dir / "report.html").unlink()
    (run_dir / ".results.jsonl.x1y2.tmp").write_text('{"half": ')  # as a killed writer leaves it
    resumed = _run(tmp_path, "--run-id", "k", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _manifest(run_dir)["status"] == "complete"
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / RESERVE_FILE).exists()
