"""Submitting a defense, round trip: scaffold a plugin, install it with pip, run it, pack the
run into an archive, merge the archive with another run into one leaderboard; and every
refusal on the way (a changed plugin, a damaged archive, runs that cannot share a ranking)."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.analysis.merge import merge_runs
from harness.analysis.submission import pack
from harness.api.registry import DEFENSES
from harness.cli.main import main
from harness.cli.scaffold import new_defense
from harness.core.errors import PrivbenchError
from harness.engine.suite import load_suite
from harness.runs.archive import read_archive
from harness.runs.folder import Run, RunFolder, slug
from tests.conftest import write_suite

NAME = "roundtrip-noise"
DISTRIBUTION = "privbench-roundtrip-noise"
PACKAGE = "privbench_roundtrip_noise"
REPO = Path(__file__).resolve().parent.parent

SUITE = """\
name: {name}
seed: {seed}
dataset: {{name: digits, params: {{max_probes: 30, size: 32}}}}
recognizers: [{{name: small-cnn, params: {{steps: 40, width: 4}}, label: cnn}}]
defenses:
  - none
{defenses}
counter_attacks: {attacks}
metrics: [fooling_rate, ssim, psnr, latency]
quality_floor: {{metric: ssim, min: 0.5}}
"""
ATTACKS = "[none, {name: jpeg, params: {quality: 75}}]"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The scaffolded package, installed into this environment for the module's tests."""
    folder = tmp_path_factory.mktemp("plugin") / NAME
    new_defense(NAME, folder)
    _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(folder))
    importlib.invalidate_caches()
    DEFENSES.refresh()
    try:
        yield folder
    finally:
        _pip("uninstall", "-y", "-q", DISTRIBUTION)
        for module in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[module]
        DEFENSES.refresh()


def _run(root: Path, name: str, defenses: str, seed: int = 0, attacks: str = ATTACKS) -> Path:
    text = SUITE.format(name=name, seed=seed, defenses=defenses, attacks=attacks)
    path = write_suite(root / f"{name}.yaml", text)
    out = root / "results"
    assert main(["run", str(path), "--out", str(out), "--run-id", "r", "--quiet"]) == 0
    return out / name / "r"


@pytest.fixture(scope="module")
def runs(plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "board": _run(root, "board", "  - {name: gaussian-blur, params: {sigma: 1.0}}"),
        "mine": _run(root, "mine", f"  - {{name: {NAME}, params: {{epsilon: [0.03, 0.06]}}}}"),
    }


def test_the_scaffold_is_clean_and_its_own_tests_pass(plugin: Path) -> None:
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "check", "-q", str(plugin)], check=True)
    subprocess.run([*ruff, "format", "--check", "-q", str(plugin)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(plugin / "tests")],
        capture_output=True,
        text=True,
        cwd=plugin,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # its own tests and privbench's conformance checks (harness.api.testing), all run
    passed = {line.split(" PASSED")[0].split("::")[-1] for line in done.stdout.splitlines()}
    conformance = ["params_declared", "bad_params_refused", "output_contract"]
    conformance += ["seeded_determinism", "batch_independence", "identity_follows_params"]
    for check in conformance:
        assert f"test_conformance[defense:{NAME}-check_{check}]" in passed, done.stdout
    assert "test_privbench_finds_the_installed_defense" in passed
    assert " failed" not in done.stdout and " skipped" not in done.stdout, done.stdout


def test_the_scaffolded_suite_uses_the_quickstart_protocol(plugin: Path) -> None:
    mine = load_suite(plugin / "suites" / f"{NAME}.yaml").resolved()
    quickstart = load_suite(REPO / "suites" / "quickstart.yaml").resolved()
    for key in ("name", "description", "defenses"):
        del mine[key], quickstart[key]
    assert mine == quickstart  # so its run merges with a quickstart run


def test_new_defense_refuses_bad_names_taken_names_and_used_folders(tmp_path: Path) -> None:
    for bad in ("MyNoise", "my_noise", "1noise", "noise-", ""):
        with pytest.raises(PrivbenchError, match="not a valid defense name"):
            new_defense(bad, tmp_path / "x")
    with pytest.raises(PrivbenchError, match="already registered by privbench"):
        new_defense("krtio", tmp_path / "x")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(PrivbenchError, match="not an empty folder"):
        new_defense("fresh-name", tmp_path / "used")


def test_a_run_records_the_plugin_and_submit_packs_a_verified_archive(
    plugin: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    manifest = json.loads((runs["mine"] / "manifest.json").read_text())
    [recorded] = manifest["plugins"]
    assert (recorded["distribution"], recorded["version"]) == (DISTRIBUTION, "0.1.0")
    sources = {
        f"{PACKAGE}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (plugin / "src" / PACKAGE).glob("*.py")
    }
    assert recorded["files"] == sources  # what was installed is what was scaffolded
    assert json.loads((runs["board"] / "manifest.json").read_text())["plugins"] == []

    archive = tmp_path / "mine.tar.gz"
    assert main(["submit", str(runs["mine"]), "-o", str(archive), "--with-source"]) == 0
    index, members = read_archive(archive)
    assert index["plugins"] == manifest["plugins"]
    assert index["suite"]["sha256"] == manifest["suite"]["sha256"]
    assert index["data"]["fingerprint"] == manifest["dataset"]["fingerprint"]
    assert index["environment"]["packages"]["torch"] == manifest["packages"]["torch"]
    assert "suite/mine.yaml" in members and "run/manifest.json" in members
    assert any(n.startswith("run/records/") for n in members)
    source = members[f"source/{DISTRIBUTION}/{PACKAGE}/defense.py"]
    assert hashlib.sha256(source).hexdigest() == sources[f"{PACKAGE}/defense.py"]


def test_merge_builds_one_leaderboard_from_a_run_and_an_archive(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = pack(runs["mine"], tmp_path / "mine.tar.gz")
    merged_dir = tmp_path / "merged"
    command = ["leaderboard", "--merge", str(runs["board"]), str(archive), "-o", str(merged_dir)]
    assert main(command) == 0
    page = capsys.readouterr().out
    assert f"plugin {DISTRIBUTION} 0.1.0" in page and "merged from 2 runs" in page
    merged = Run.load(merged_dir)
    labels = [d["label"] for d in merged.manifest["config"]["defenses"]]
    assert labels == [
        "none",
        "gaussian-blur(sigma=1.0)",
        f"{NAME}(epsilon=0.03)",
        f"{NAME}(epsilon=0.06)",
    ]
    board, mine = Run.load(runs["board"]), Run.load(archive)
    for key, outcome in merged.outcomes.items():  # every row is its source's, bit for bit
        source = board if key[0] in ("none", "gaussian-blur(sigma=1.0)") else mine
        assert (outcome.fooled == source.outcomes[key].fooled).all()
    assert len(merged.outcomes) == 4 * 2
    assert main(["report", str(merged_dir)]) == 0
    assert (merged_dir / "report.html").stat().st_size > 0


def test_merge_refuses_runs_that_cannot_share_a_ranking(
    plugin: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    board = Run.load(runs["board"])
    fewer = _run(tmp_path, "fewer", "", attacks="[none]")
    with pytest.raises(PrivbenchError, match=r"has no counter-attack 'jpeg\(quality=75\)'"):
        merge_runs([board, Run.load(fewer)])
    other_seed = _run(tmp_path, "seeded", "", seed=1)
    with pytest.raises(PrivbenchError, match="differ in data fingerprint"):
        merge_runs([board, Run.load(other_seed)])
    with pytest.raises(PrivbenchError, match="at least two"):
        merge_runs([board])
    changed = tmp_path / "changed"
    shutil.copytree(runs["mine"], changed)
    records = sorted((changed / "records").glob(f"{slug('none')}__*.jsonl"))[0]
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    flipped = next(r for r in rows if r["recognized_clean"])
    flipped["recognized_protected"] = not flipped["recognized_protected"]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PrivbenchError, match="has changed since the run finished"):
        merge_runs([board, Run.load(changed)])
    # as a run of other code would have recorded it: its records match its own manifest
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["digests"] = RunFolder(changed).digests()
    (changed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrivbenchError, match="different per-image outcomes"):
        merge_runs([board, Run.load(changed)])


def test_a_damaged_or_padded_archive_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    archive = pack(runs["mine"], tmp_path / "mine.tar.gz")
    _, members = read_archive(archive)
    with tarfile.open(archive) as tar:
        index = tar.extractfile("submission.json").read()  # type: ignore[union-attr]
    for name, change, message in (
        ("run/results.jsonl", b"{}\n", "does not match its sha256"),
        ("run/extra.txt", b"x", "not listed"),
    ):
        bad = tmp_path / f"bad-{len(message)}.tar.gz"
        with tarfile.open(bad, "w:gz") as tar:
            for member, data in [("submission.json", index), *members.items()]:
                if member == name:
                    data = data + change
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            if name not in members:
                info = tarfile.TarInfo(name)
                info.size = len(change)
                tar.addfile(info, io.BytesIO(change))
        with pytest.raises(PrivbenchError, match=message):
            Run.load(bad)


def test_submit_refuses_a_plugin_changed_since_the_run(plugin: Path, runs: dict[str, Path]) -> None:
    module = importlib.import_module(f"{PACKAGE}.defense")
    installed = Path(module.__file__)
    original = installed.read_bytes()
    installed.write_bytes(original + b"# tuned after the run\n")
    try:
        with pytest.raises(PrivbenchError, match=r"has changed since this run \(.*defense\.py"):
            pack(runs["mine"], runs["mine"].parent / "x.tar.gz")
    finally:
        installed.write_bytes(original)


def test_submit_refuses_an_unfinished_run(runs: dict[str, Path], tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["board"], unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    manifest["status"] = "running"
    (unfinished / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrivbenchError, match="not complete"):
        pack(unfinished, tmp_path / "u.tar.gz")
