"""Writes stay where they belong (issue 28, cases 1 and 2): a run id or suite name is one folder
name, ``--overwrite`` replaces only a run folder privbench made, one run writes a run folder at
a time, ``submit`` and ``merge`` take only a finished run whose files are the ones it wrote,
and every command that writes keeps its output apart from its inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from harness.analysis.merge import merge_runs, write_merged
from harness.analysis.submission import pack
from harness.api.contracts import Context, Defense
from harness.api.registry import DEFENSES
from harness.core.errors import PrivbenchError
from harness.engine import runner
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from harness.runs.archive import read_archive
from harness.runs.folder import Run, RunFolder
from harness.runs.lock import RunLock, holder
from tests.conftest import write_suite
from tests.test_owner_cli import photos, privbench  # noqa: F401 (photos: a fixture)

ROOT = Path(__file__).resolve().parent.parent
SUITE = """\
name: ids
dataset: {name: lfw-subset, params: {max_probes: 4}}
recognizers: [yunet]
defenses: [none]
metrics: [detection_rate]
"""


def _tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links as their target), with each file's sha256."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _run(tmp: Path, *extra: str) -> tuple[int, str]:
    """``privbench run`` of the tiny suite into ``tmp/results``; exit status and stderr."""
    suite = tmp / "s.yaml"
    if not suite.exists():
        write_suite(suite, SUITE)
    done = privbench("run", str(suite), "--out", str(tmp / "results"), "--quiet", *extra)
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run folder of the tiny suite (copy it before changing it)."""
    tmp = tmp_path_factory.mktemp("finished")
    code, err = _run(tmp, "--run-id", "done")
    assert code == 0, err
    return tmp / "results" / "ids" / "done"


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """Someone's folder beside the results root; it must end the test as it began."""
    folder = tmp_path / "victim"
    (folder / "deep").mkdir(parents=True)
    (folder / "data.txt").write_text("precious")
    (folder / "deep" / "more.bin").write_bytes(bytes(range(256)))
    before = _tree(folder)
    yield folder
    assert _tree(folder) == before


def _holding_child(parent: Path, run_id: str) -> subprocess.Popen[str]:
    """A process that takes the lock of ``parent/run_id`` through RunLock and keeps it until
    its stdin closes."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from harness.runs.lock import RunLock
        with RunLock(Path({str(parent)!r}), {run_id!r}):
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def _end(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=30) == 0


# -- run ids and suite names -------------------------------------------------------------------
@pytest.mark.parametrize("run_id", ["../../victim", "ABS", ".", "..", "a/b", "", ".hidden"])
def test_a_run_id_that_is_not_one_folder_name_touches_nothing(
    tmp_path: Path, victim: Path, run_id: str
) -> None:
    (tmp_path / "results" / "ids").mkdir(parents=True)  # as in the issue: results/SUITE/ exists
    run_id = str(victim) if run_id == "ABS" else run_id
    code, err = _run(tmp_path, "--run-id", run_id, "--overwrite")
    assert code == 2 and "argument --run-id" in err and "is not one folder name" in err
    assert list((tmp_path / "results" / "ids").iterdir()) == []


def test_the_engine_checks_run_ids_and_suite_names_before_making_anything(
    tmp_path: Path, victim: Path
) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    out = tmp_path / "results" / "ids"
    for bad in ("../victim", str(victim), "..", "x" * 129):
        options = RunOptions(out_root=out, progress=False, run_id=bad, overwrite=True)
        with pytest.raises(PrivbenchError, match=r"run id .* is not one folder name"):
            run_suite(suite, options)
    suite.name = ".."  # a Suite built by hand, not read from a file
    with pytest.raises(PrivbenchError, match=r"suite name '\.\.' is not one folder name"):
        run_suite(suite, RunOptions(out_root=out, progress=False))
    assert not out.exists()


@pytest.mark.parametrize("name", ["..", ".", "a/b", ".hidden"])
def test_validate_refuses_a_suite_name_that_is_not_one_folder_name(
    tmp_path: Path, name: str
) -> None:
    path = write_suite(tmp_path / "s.yaml", SUITE.replace("name: ids", f"name: {name!r}"))
    done = privbench("validate", str(path))
    assert done.returncode == 2 and "name:" in done.stderr
    assert "is not one folder name" in done.stderr


# -- --overwrite -------------------------------------------------------------------------------
def test_overwrite_leaves_alone_what_privbench_did_not_make(tmp_path: Path, victim: Path) -> None:
    suite_dir = tmp_path / "results" / "ids"
    (suite_dir / "mine").mkdir(parents=True)
    (suite_dir / "mine" / "notes.txt").write_text("mine")
    (suite_dir / "fake").mkdir()
    (suite_dir / "fake" / "manifest.json").write_text("{}")
    (suite_dir / "link").symlink_to(victim)
    (suite_dir / "afile").write_text("a file")
    before = _tree(suite_dir)
    for run_id, found in (
        ("mine", "a folder privbench did not make (no manifest.json in it)"),
        ("fake", "its manifest.json is not a privbench run manifest"),
        ("link", f"a symbolic link (to {victim})"),
        ("afile", "is a file"),
    ):
        code, err = _run(tmp_path, "--run-id", run_id, "--overwrite")
        assert code == 2 and found in err and "replaces only run folders it made" in err, err
        assert "choose another --run-id" in err
    assert _tree(suite_dir) == before


def test_overwrite_replaces_a_run_folder_privbench_made(tmp_path: Path) -> None:
    assert _run(tmp_path, "--run-id", "again")[0] == 0
    run_dir = tmp_path / "results" / "ids" / "again"
    (run_dir / "records" / "stale.jsonl").write_text("from the older run")
    code, err = _run(tmp_path, "--run-id", "again")
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    assert _run(tmp_path, "--run-id", "again", "--overwrite")[0] == 0
    assert not (run_dir / "records" / "stale.jsonl").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    # nothing left beside it: no folder moved aside, no lock
    assert [p.name for p in run_dir.parent.iterdir()] == ["again"]


def test_a_replaced_folder_is_put_back_when_the_new_run_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    options = RunOptions(out_root=tmp_path / "results", progress=False, run_id="r")
    run_suite(suite, options)
    run_dir = tmp_path / "results" / "ids" / "r"
    before = _tree(run_dir)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the start failed")

    monkeypatch.setattr(runner, "start_manifest", broken)
    with pytest.raises(RuntimeError, match="the start failed"):
        run_suite(suite, RunOptions(**{**vars(options), "overwrite": True}))
    assert _tree(run_dir) == before
    assert [p.name for p in run_dir.parent.iterdir()] == ["r"]
    with pytest.raises(RuntimeError, match="the start failed"):  # a new folder: removed
        run_suite(suite, RunOptions(**{**vars(options), "run_id": None}))
    assert [p.name for p in run_dir.parent.iterdir()] == ["r"]


# -- one writer per run folder -----------------------------------------------------------------
def test_a_second_run_with_the_same_id_is_refused_at_once_naming_the_holder(
    tmp_path: Path,
) -> None:
    assert _run(tmp_path, "--run-id", "busy")[0] == 0
    run_dir = tmp_path / "results" / "ids" / "busy"
    before = _tree(run_dir)
    child = _holding_child(run_dir.parent, "busy")
    try:
        code, err = _run(tmp_path, "--run-id", "busy", "--overwrite")
        assert code == 2 and f"is being written by pid {child.pid} on host" in err, err
        assert _tree(run_dir) == before
        assert holder(run_dir.parent, "busy")["pid"] == child.pid  # type: ignore[index]
    finally:
        _end(child)
    assert holder(run_dir.parent, "busy") is None
    assert _run(tmp_path, "--run-id", "busy", "--overwrite")[0] == 0


class SeesItsLock(Defense):
    """Records, when it protects, who holds the locks in the folder it is told to look at."""

    folder: ClassVar[Path] = Path()
    seen: ClassVar[list[dict[str, object]]] = []

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        for lock in self.folder.glob(".*.lock.json"):
            SeesItsLock.seen.append(json.loads(lock.read_text()))
        return images


DEFENSES.add("test-sees-its-lock", SeesItsLock)


def test_a_run_without_a_run_id_holds_its_lock_too(tmp_path: Path) -> None:
    text = SUITE.replace("defenses: [none]", "defenses: [test-sees-its-lock]")
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    SeesItsLock.folder, SeesItsLock.seen = tmp_path / "results" / "ids", []
    result = run_suite(suite, RunOptions(out_root=tmp_path / "results", progress=False))
    assert SeesItsLock.seen and {w["pid"] for w in SeesItsLock.seen} == {os.getpid()}
    assert [p.name for p in SeesItsLock.folder.iterdir()] == [result.run_dir.name]


# -- submit and merge take only sealed runs ----------------------------------------------------
def _copy(finished: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / "results" / "ids" / name
    shutil.copytree(finished, target)
    return target


def _set_status(run_dir: Path, status: str) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["status"] = status
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_submit_refuses_an_unfinished_run_saying_what_to_do(finished: Path, tmp_path: Path) -> None:
    for status, advice in (
        ("running", "it did not finish: it was stopped before it could say so"),
        ("failed", "some of its cells or methods failed, or its disk filled up"),
        ("interrupted", "it was interrupted (Ctrl-C or SIGTERM)"),
    ):
        run_dir = _copy(finished, tmp_path, status)
        _set_status(run_dir, status)
        done = privbench("submit", str(run_dir), "-o", str(tmp_path / "x.tar.gz"))
        assert done.returncode == 2 and f"is {status!r}, not complete" in done.stderr
        assert advice in done.stderr
    child = _holding_child(tmp_path / "results" / "ids", "running")
    try:
        done = privbench("submit", str(tmp_path / "results" / "ids" / "running"))
        assert done.returncode == 2 and f"still being written by pid {child.pid}" in done.stderr
    finally:
        _end(child)
    assert not (tmp_path / "x.tar.gz").exists()


NONE_CELL = RunFolder(Path(".")).cell_records_file("none", "none", "yunet").name


def _tamper(run_dir: Path) -> None:
    (records,) = (run_dir / "records").glob("*.jsonl")
    records.write_text(records.read_text().replace("true", "false"))


@pytest.mark.parametrize(
    "change, message",
    [
        (_tamper, rf"records/{NONE_CELL} has changed since the run finished"),
        (lambda d: (d / "records" / "extra.jsonl").write_text("{}\n"), "was not there"),
        (lambda d: (d / "results.jsonl").unlink(), "not found"),
        (lambda d: (d / "records" / NONE_CELL).unlink(), "is missing"),
        (lambda d: (d / "samples" / "x.png").symlink_to("/etc/hostname"), "symbolic link"),
    ],
)
def test_submit_and_merge_refuse_a_folder_changed_after_its_run(
    finished: Path, tmp_path: Path, change, message: str
) -> None:
    run_dir = _copy(finished, tmp_path, "changed")
    change(run_dir)
    with pytest.raises(PrivbenchError, match=message):
        pack(run_dir, tmp_path / "x.tar.gz")
    if message != "not found":  # a folder without results.jsonl is no run folder at all
        with pytest.raises(PrivbenchError, match=message):
            merge_runs([Run.load(finished), Run.load(run_dir)])
    assert not (tmp_path / "x.tar.gz").exists()


def test_merge_refuses_an_unfinished_run(finished: Path, tmp_path: Path) -> None:
    run_dir = _copy(finished, tmp_path, "running")
    _set_status(run_dir, "running")
    with pytest.raises(PrivbenchError, match="is 'running', not complete, so it cannot be merged"):
        merge_runs([Run.load(finished), Run.load(run_dir)])


# -- every command that writes -----------------------------------------------------------------
def test_submit_writes_a_new_archive_outside_the_run_and_replaces_only_archives(
    finished: Path, tmp_path: Path
) -> None:
    inside = privbench("submit", str(finished), "-o", str(finished / "x.tar.gz"))
    assert inside.returncode == 2 and "privbench never writes into what it reads" in inside.stderr
    other = tmp_path / "other.tar.gz"
    other.write_text("someone else's file")
    done = privbench("submit", str(finished), "-o", str(other))
    assert done.returncode == 2 and "is not a privbench submission archive" in done.stderr
    assert other.read_text() == "someone else's file"
    archive = tmp_path / "mine.tar.gz"
    assert privbench("submit", str(finished), "-o", str(archive)).returncode == 0
    assert privbench("submit", str(finished), "-o", str(archive)).returncode == 0  # replaced
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it
    report = privbench("report", str(archive))
    assert report.returncode == 2 and "is a submission archive" in report.stderr


def test_submit_packs_the_files_the_suite_reads_never_those_its_manifest_names(
    finished: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    run_dir = _copy(finished, tmp_path, "named")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["suite"]["files"] = [str(secret)]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    _, members = read_archive(pack(run_dir, tmp_path / "named.tar.gz"))
    assert "suite/s.yaml" in members and "suite/id_rsa" not in members
    assert not any(b"PRIVATE KEY" in data for data in members.values())


def test_merge_output_is_new_or_an_earlier_merge_and_never_a_source(
    finished: Path, tmp_path: Path
) -> None:
    merged = merge_runs([Run.load(finished), Run.load(_copy(finished, tmp_path, "b"))])
    for inside in (finished, finished / "merged", finished.parent):
        with pytest.raises(PrivbenchError, match=r"never (writes into|reads) what it"):
            write_merged(merged, inside)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("keep")
    with pytest.raises(PrivbenchError, match="privbench did not make"):
        write_merged(merged, foreign)
    with pytest.raises(PrivbenchError, match="not one that privbench leaderboard --merge wrote"):
        write_merged(merged, _copy(finished, tmp_path, "a-run"))
    out = write_merged(merged, tmp_path / "m")
    (out / "records" / "stale.jsonl").write_text("old")
    assert write_merged(merged, out) == out and not (out / "records" / "stale.jsonl").exists()
    assert (foreign / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # the merged folder is sealed in turn: its digests are its own files'
    pack(out, tmp_path / "merged.tar.gz")


def test_baseline_output_replaces_only_a_baseline(finished: Path, tmp_path: Path) -> None:
    other = tmp_path / "notes.json"
    other.write_text('{"mine": true}')
    done = privbench("baseline", str(finished), "-o", str(other))
    assert done.returncode == 2 and "is not a privbench baseline" in done.stderr
    assert other.read_text() == '{"mine": true}'
    inside = privbench("baseline", str(finished), "-o", str(finished / "b.json"))
    assert inside.returncode == 2 and "never writes into what it reads" in inside.stderr
    assert privbench("baseline", str(finished), "-o", str(tmp_path / "b.json")).returncode == 0
    assert privbench("baseline", str(finished), "-o", str(tmp_path / "b.json")).returncode == 0


def test_protect_output_never_inside_its_input_nor_the_input_inside_it(
    tmp_path: Path,
    photos: Path,  # noqa: F811 (the fixture)
) -> None:
    key = tmp_path / "key.bin"
    privbench("keygen", str(key))
    before = _tree(photos)
    inside = privbench("protect", "--key", str(key), str(photos), str(photos / "out"))
    assert inside.returncode == 2 and "is inside the input folder" in inside.stderr
    holds = privbench("protect", "--key", str(key), str(photos), str(photos.parent))
    assert holds.returncode == 2 and "is inside OUT_DIR" in holds.stderr
    assert _tree(photos) == before
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "nested").symlink_to(elsewhere)
    linked = privbench("protect", "--key", str(key), str(photos), str(out))
    assert linked.returncode == 1 and "leads out of OUT_DIR" in linked.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_results_folder_that_cannot_hold_run_folders_is_a_named_error(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ids").write_text("a file where the suite's folder would be")
    code, err = _run(tmp_path, "--run-id", "x")
    assert code == 2 and "cannot write a run folder in" in err, err
    (tmp_path / "results" / "ids").unlink()
    (tmp_path / "results").chmod(0o500)
    try:
        code, err = _run(tmp_path)
        writable = os.access(tmp_path / "results", os.W_OK)  # root may write anyway
        assert code == 0 if writable else (code == 2 and "cannot write a run folder" in err)
    finally:
        (tmp_path / "results").chmod(0o700)


def test_the_lock_is_one_writer_even_within_one_process(tmp_path: Path) -> None:
    busy = f"being written by pid {os.getpid()}"
    with RunLock(tmp_path, "x"), pytest.raises(PrivbenchError, match=busy):
        RunLock(tmp_path, "x").acquire()
    assert list(tmp_path.iterdir()) == []


# -- what a reviewer's attack found (issue 28, second round) ------------------------------------
def test_an_empty_folder_left_by_a_run_killed_at_once_is_reused_only_with_overwrite(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "results" / "ids" / "k"
    empty.mkdir(parents=True)
    code, err = _run(tmp_path, "--run-id", "k")
    assert code == 2 and "empty folder of a run killed" in err and "--overwrite" in err
    code, err = _run(tmp_path, "--run-id", "k", "--resume")
    assert code == 2 and "is empty" in err and "--overwrite instead of --resume" in err
    done = privbench("leaderboard", str(empty))
    assert done.returncode == 2 and "is empty" in done.stderr
    assert _run(tmp_path, "--run-id", "k", "--overwrite")[0] == 0
    assert json.loads((empty / "manifest.json").read_text())["status"] == "complete"


def test_overwrite_leaves_a_folder_holding_files_no_run_writes(
    finished: Path, tmp_path: Path
) -> None:
    """A copied manifest beside the user's own files does not make a folder privbench's."""
    run_dir = tmp_path / "results" / "ids" / "thesis"
    shutil.copytree(finished, run_dir)
    (run_dir / "thesis.tex").write_text("months of work")
    before = _tree(run_dir)
    code, err = _run(tmp_path, "--run-id", "thesis", "--overwrite")
    assert code == 2 and "it holds 'thesis.tex', which no run writes" in err
    assert _tree(run_dir) == before


def test_the_finishing_hint_names_the_results_root(finished: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "elsewhere" / "ids" / "stopped"
    shutil.copytree(finished, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    done = privbench("submit", str(run_dir), "-o", str(tmp_path / "x.tar.gz"))
    assert done.returncode == 2
    assert f"--out {tmp_path / 'elsewhere'} --run-id stopped --resume" in done.stderr
    # following a hint with the wrong --out makes nothing
    code, err = _run(tmp_path, "--run-id", "stopped", "--resume")
    assert code == 2 and "check --out" in err
    assert not (tmp_path / "results").exists()
