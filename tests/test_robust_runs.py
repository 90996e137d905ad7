"""Runs that go wrong: failing recognizers and counter-attacks, killed and colliding runs,
suites this machine cannot run, broken pipes; and what the run folder looks like then."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from harness.api.contracts import Context, CounterAttack, Defense, Recognizer
from harness.api.registry import ATTACKS, DEFENSES, RECOGNIZERS
from harness.cli.main import main
from harness.cli.wiring import run_with_leaderboard
from harness.core.errors import PrivbenchError
from harness.engine.run_dir import new_run_id
from harness.engine.runner import RunOptions, Terminated, run_suite
from harness.engine.suite import load_suite
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parent.parent


class BrokenRecognizer(Recognizer):
    """Fails when fitted, as sface's OpenCV backend does on OpenCV 5."""

    kind: ClassVar[str] = "detector"

    def fit(self, data, ctx: Context) -> None:
        raise RuntimeError("cv2.error: (-215:Assertion failed) ninputs == 1")

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        raise AssertionError("never reached")


class DarkFails(Recognizer):
    """Detects a face unless the image is dark, where it fails (a cell-level failure)."""

    kind: ClassVar[str] = "detector"

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        if float(images.mean()) < 0.2:
            raise ValueError("too dark to run")
        return np.ones(len(images), dtype=np.int64)


class BrokenAttack(CounterAttack):
    """Fails whenever it transforms."""

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        raise RuntimeError("the counter-attack broke")


class Darken(Defense):
    """Darkens the photo to 5%."""

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return images * 0.05


class SignalOnProtect(Defense):
    """Sends a signal to its own process when it protects (a killed or terminated run)."""

    signal: ClassVar[int] = signal.SIGTERM

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        os.kill(os.getpid(), self.signal)
        return images


RECOGNIZERS.add("test-broken", BrokenRecognizer)
RECOGNIZERS.add("test-dark-fails", DarkFails)
ATTACKS.add("test-broken-attack", BrokenAttack)
DEFENSES.add("test-darken", Darken)
DEFENSES.add("test-sigterm", SignalOnProtect)

SUITE = """\
name: robust
dataset: {name: lfw-subset, params: {max_probes: 8}}
recognizers: [yunet, test-broken, test-dark-fails]
defenses: [none, test-darken]
counter_attacks: [none, test-broken-attack]
metrics: [fooling_rate, detection_rate]
"""


def _options(tmp_path: Path, **kw) -> RunOptions:
    return RunOptions(out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "c", **kw)


def test_failing_recognizer_cell_and_counter_attack_are_recorded_and_the_rest_finishes(
    tmp_path: Path,
) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    result = run_with_leaderboard(suite, _options(tmp_path))
    failures = {(f["scope"], f["name"]) for f in result.failures}
    assert failures == {
        ("recognizer", "test-broken"),
        ("cell", "test-darken × none × test-dark-fails"),
        ("counter-attack", "none × test-broken-attack"),
        ("counter-attack", "test-darken × test-broken-attack"),
    }
    assert "ninputs == 1" in next(f["error"] for f in result.failures if f["name"] == "test-broken")
    done = {
        (r["defense"], r["counter_attack"], r["recognizer"])
        for r in result.rows
        if r["scope"] == "cell"
    }
    assert done == {
        ("none", "none", "yunet"),
        ("none", "none", "test-dark-fails"),
        ("test-darken", "none", "yunet"),
    }
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and len(manifest["failures"]) == 4
    assert "traceback" not in json.dumps(manifest["failures"])
    board = (result.run_dir / "leaderboard.md").read_text()
    assert "recognizer `test-broken`: RuntimeError" in board


def test_cli_reports_failures_without_tracebacks_unless_debug(tmp_path: Path, capsys) -> None:
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    args = ["run", str(suite), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "recognizer 'test-broken' failed: RuntimeError" in err and "Traceback" not in err
    assert "--debug" in err
    assert main(["--debug", *args]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_sface_on_opencv_5_is_refused_before_the_run_with_what_to_do(
    tmp_path: Path, monkeypatch
) -> None:
    import recognizers.opencv_faces as faces

    monkeypatch.setattr(faces, "opencv_major", lambda: 5)
    lacking = RECOGNIZERS.get("sface").missing(RECOGNIZERS.resolve("sface", {}))
    assert any("backend: torch" in m and "<5" in m for m in lacking)
    assert (
        RECOGNIZERS.get("sface").missing(RECOGNIZERS.resolve("sface", {"backend": "torch"})) == []
    )
    text = SUITE.replace("[yunet, test-broken, test-dark-fails]", "[sface]")
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    with pytest.raises(PrivbenchError, match="cannot run the suite yet"):
        run_suite(suite, _options(tmp_path))
    assert not (tmp_path / "r").exists()  # refused before any folder is made


def test_manifest_is_written_first_and_sigterm_keeps_what_finished(tmp_path: Path) -> None:
    text = SUITE.replace("[yunet, test-broken, test-dark-fails]", "[yunet]").replace(
        "[none, test-darken]", "[none, test-sigterm, test-darken]"
    )
    text = text.replace("[none, test-broken-attack]", "[none]")
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    with pytest.raises(Terminated):
        run_with_leaderboard(suite, _options(tmp_path, run_id="t"))
    run_dir = tmp_path / "r" / "robust" / "t"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["finished"]
    assert manifest["interrupted_by"] == "SIGTERM"
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {r["defense"] for r in rows if r["scope"] == "cell"} == {"none"}
    assert "This run was interrupted (SIGTERM)" in (run_dir / "leaderboard.md").read_text()
    # the default handler is back once the run is over
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_run_killed_outright_leaves_a_readable_folder(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "s.yaml",
        "name: killed\ndataset: {name: lfw-subset, params: {max_probes: 6}}\n"
        "recognizers: [yunet]\ndefenses: [none, test-sigkill]\nmetrics: [fooling_rate]\n",
    )
    script = textwrap.dedent(
        f"""
        import signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_robust_runs import SignalOnProtect
        from harness.api.registry import DEFENSES
        from harness.cli.main import main
        DEFENSES.add("test-sigkill", type("Kill", (SignalOnProtect,), {{"signal": signal.SIGKILL}}))
        sys.exit(main(["run", {str(suite)!r}, "--out", {str(tmp_path / "r")!r}, "--quiet"]))
        """
    )
    env = {**os.environ, "PRIVBENCH_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    # beside it, the lock it held (hidden; the kernel released it when the process died)
    (run_dir,) = (p for p in (tmp_path / "r" / "killed").iterdir() if not p.name.startswith("."))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["updated"]
    assert main(["leaderboard", str(run_dir)]) == 0


def test_run_ids_are_unique_and_an_existing_run_folder_is_refused(
    tmp_path: Path, monkeypatch
) -> None:
    import datetime as dt

    import harness.engine.runner

    text = "name: ids\ndataset: {name: lfw-subset, params: {max_probes: 4}}\n"
    text += "recognizers: [yunet]\ndefenses: [none]\nmetrics: [detection_rate]\n"
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    assert new_run_id(suite).split("-")[1] == suite.sha256[:8]

    class Frozen(dt.datetime):  # two runs started in the same second
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 11, 22, 23, 30, 29, tzinfo=tz)

    # ... and even drawing the same random suffix: the second draws again
    suffixes = iter(["beef", "beef", "f00d"])
    monkeypatch.setattr(harness.engine.run_dir, "datetime", Frozen)
    monkeypatch.setattr(harness.engine.run_dir.secrets, "token_hex", lambda n: next(suffixes))
    a = run_suite(suite, _options(tmp_path))
    b = run_suite(suite, _options(tmp_path))
    assert a.run_dir != b.run_dir and a.run_dir.name[:16] == b.run_dir.name[:16]
    assert (a.run_dir.name[-4:], b.run_dir.name[-4:]) == ("beef", "f00d")
    assert json.loads((a.run_dir / "manifest.json").read_text())["run_id"] == a.run_dir.name
    monkeypatch.undo()
    run_suite(suite, _options(tmp_path, run_id="fixed"))
    (tmp_path / "r" / "ids" / "fixed" / "records" / "stale.jsonl").write_text("from an older run")
    with pytest.raises(PrivbenchError, match=r"already holds a run.*--overwrite"):
        run_suite(suite, _options(tmp_path, run_id="fixed"))
    again = run_suite(suite, _options(tmp_path, run_id="fixed", overwrite=True))
    assert not (again.run_dir / "records" / "stale.jsonl").exists()


def test_result_files_are_readable_by_others(tmp_path: Path) -> None:
    text = "name: modes\ndataset: {name: lfw-subset, params: {max_probes: 4}}\n"
    text += "recognizers: [yunet]\ndefenses: [none]\nmetrics: [detection_rate]\n"
    old = os.umask(0o022)
    try:
        suite = load_suite(write_suite(tmp_path / "s.yaml", text))
        result = run_with_leaderboard(suite, _options(tmp_path))
    finally:
        os.umask(old)
    for name in ("manifest.json", "results.jsonl", "leaderboard.md"):
        assert stat.S_IMODE((result.run_dir / name).stat().st_mode) == 0o644, name


def test_validate_says_which_suites_cannot_run_here(capsys) -> None:
    lfw = str(ROOT / "suites" / "lfw.yaml")
    assert main(["validate", lfw]) == 0
    out = capsys.readouterr().out
    assert "NOT READY" in out and "does not exist" in out and ": ok" not in out
    assert main(["validate", "--ready", lfw]) == 1
    assert main(["validate", "--ready", str(ROOT / "suites" / "quickstart.yaml")]) == 0
    assert "ok, ready" in capsys.readouterr().out


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m harness.cli.main list | head -2",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert len(proc.stdout.splitlines()) == 2 and "Traceback" not in proc.stderr
