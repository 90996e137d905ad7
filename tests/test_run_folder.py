"""The run folder's one owner (harness.runs.folder) and the typed manifest (harness.runs.manifest):
where each file is, manifests of older releases upgraded in memory, and the engine that writes
a folder without knowing the boards (the leaderboard is a sink its caller chooses)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.core.errors import PrivbenchError
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from harness.runs.folder import Run, RunFolder, legacy_slug, slug
from harness.runs.manifest import SCHEMA_VERSION, Manifest, upgrade
from tests.conftest import write_suite

OLD = Path(__file__).resolve().parent / "data" / "runs" / "old-blur-v0.1"
TINY = """\
name: tiny-folder
dataset: {name: lfw-subset, params: {max_probes: 4}}
recognizers: [yunet]
defenses: [none, {name: pixelate, params: {block: 4}, label: "px / 4"}]
counter_attacks: [none, {name: jpeg, params: {quality: 75}}]
metrics: [detection_rate, ssim]
"""


def _old_manifest() -> dict:
    return json.loads((OLD / "manifest.json").read_text(encoding="utf-8"))


def test_the_folder_names_every_file(tmp_path: Path) -> None:
    f = RunFolder(tmp_path)
    assert (f.manifest_file.name, f.results_file.name) == ("manifest.json", "results.jsonl")
    assert (f.leaderboard_file.name, f.report_file.name) == ("leaderboard.md", "report.html")
    px, jpeg, yunet, none = (slug(x) for x in ("px / 4", "jpeg(quality=75)", "yunet", "none"))
    assert px == "px_4-" + hashlib.sha256(b"px / 4").hexdigest()[:8]
    cell = f.cell_records_file("px / 4", "jpeg(quality=75)", "yunet")
    assert cell == tmp_path / "records" / f"{px}__{jpeg}__{yunet}.jsonl"
    assert f.quality_file("px / 4") == tmp_path / "records" / "quality" / f"{px}.jsonl"
    assert f.samples_dir("px / 4", "none") == tmp_path / "samples" / px / none
    assert f.clean_samples_dir == tmp_path / "samples" / "clean"
    assert slug("///").startswith("x-") and len(slug("a" * 200)) == 69
    old = RunFolder(tmp_path, schema=2)  # folders before schema 3 keep the names they have
    cell = old.cell_records_file("px / 4", "jpeg(quality=75)", "yunet")
    assert cell == tmp_path / "records" / "px_4__jpeg_quality=75__yunet.jsonl"
    assert old.samples_dir("px / 4", "none") == tmp_path / "samples" / "px_4" / "none"
    assert legacy_slug("///") == "x" and len(legacy_slug("a" * 200)) == 80
    with pytest.raises(PrivbenchError, match="not a privbench run folder"):
        f.read_manifest()


def test_a_manifest_writes_back_byte_for_byte() -> None:
    raw = _old_manifest()
    manifest = Manifest.from_json(raw)
    assert json.dumps(manifest.to_json(), indent=2) == json.dumps(raw, indent=2)
    assert manifest.extra == {} and manifest.cache is not None and manifest.cache.misses > 0


def test_an_older_manifest_is_upgraded_in_memory_only() -> None:
    raw = _old_manifest()
    for key in ("schema_version", "recognizer_kinds", "roles", "plugins", "plan", "key"):
        del raw[key]  # what the first releases did not record
    raw["failures"] = [{"defense": "(run)", "error": "RuntimeError: x"}]
    raw["merged_from"] = [{"run_id": "a"}]
    kept = copy.deepcopy(raw)
    manifest = Manifest.from_json(raw)
    assert raw == kept
    assert manifest.schema_version == 1  # the rows are read as that schema wrote them
    assert manifest.recognizer_kinds == {"cnn": "classifier"}  # from the installed method
    assert manifest.roles == {} and manifest.plan == {} and manifest.plugins is None
    assert manifest.failures == [{"scope": "run", "name": "(run)", "error": "RuntimeError: x"}]
    assert manifest.extra == {"merged_from": [{"run_id": "a"}]}
    written = manifest.to_json()
    assert "plugins" not in written and list(written)[-1] == "merged_from"
    assert upgrade(manifest.to_json()) == written  # upgrading twice changes nothing more


def test_a_newer_or_foreign_manifest_is_refused_by_name() -> None:
    raw = {**_old_manifest(), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(PrivbenchError, match=r"newer privbench.*upgrade privbench"):
        Manifest.from_json(raw, "x/manifest.json")
    with pytest.raises(PrivbenchError, match="not a privbench manifest"):
        Manifest.from_json({"name": "something else"})
    with pytest.raises(PrivbenchError, match="not a privbench manifest"):
        Manifest.from_json({**_old_manifest(), "suite": "quickstart"})


def _table_cells(text: str) -> list[list[str]]:
    """The body cells of the first Markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_a_folder_of_the_first_releases_renders_and_is_not_submitted(
    tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "first"
    shutil.copytree(OLD, folder)
    raw = _old_manifest()
    for key in ("schema_version", "recognizer_kinds", "roles", "plugins", "plan"):
        del raw[key]
    (folder / "manifest.json").write_text(json.dumps(raw))
    board = (OLD / "leaderboard.md").read_text(encoding="utf-8")
    ranking = _table_cells(board[board.index("| rank") : board.index("## Worst case")])
    assert main(["leaderboard", str(folder)]) == 0
    out = capsys.readouterr().out
    now = _table_cells(out[out.index("### Classifiers: cnn") : out.index("## Worst case")])
    # rank, defense, worst case and score as that release drew them (its one recognizer is
    # its one role; the quality column now carries its interval)
    assert len(ranking) == 2 and [row[:4] for row in now] == [row[:4] for row in ranking]
    assert main(["submit", str(folder), "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert "did not record its plugins" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()
    assert json.loads((folder / "manifest.json").read_text()) == raw  # never rewritten


def test_the_engine_writes_no_leaderboard_and_imports_no_boards(tmp_path: Path) -> None:
    code = (
        "import sys, harness.engine.runner\n"
        "print(any(m.startswith('harness.boards') for m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    suite = load_suite(write_suite(tmp_path / "s.yaml", TINY))
    options = RunOptions(out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "c")
    result = run_suite(suite, options)
    folder = RunFolder(result.run_dir)
    assert folder.manifest_file.is_file() and not folder.leaderboard_file.exists()
    drawn = []

    def board(manifest: dict, rows: list, outcomes: dict) -> str:
        drawn.append((manifest["status"], len(rows), sorted(outcomes)))
        return f"{manifest['run_id']}: {len(rows)} rows\n"

    again = run_suite(suite, RunOptions(**{**vars(options), "board": board, "run_id": "b"}))
    status, n_rows, cells = drawn[-1]
    assert status == "complete" and n_rows == len(again.rows)
    assert cells == sorted(
        (d, a, "yunet") for d in ("none", "px / 4") for a in ("none", "jpeg(quality=75)")
    )
    assert RunFolder(again.run_dir).leaderboard_file.read_text() == f"b: {n_rows} rows\n"
    written = json.loads(folder.manifest_file.read_text())
    assert written == result.manifest and list(written) == list(result.info.to_json())
    assert Run.load(result.run_dir).info.to_json() == written
