"""Run folders made by the release before the restructuring (tests/data/runs/README.md): today's
privbench reads them, draws their leaderboard as that release did, writes their report,
compares them, takes a baseline of them and merges them, and never rewrites them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.runs.folder import Run, RunFolder
from harness.runs.manifest import SCHEMA_VERSION

DATA = Path(__file__).resolve().parent / "data" / "runs"
OLD = DATA / "old-blur-v0.1"  # defenses none and blur, a run folder
ARCHIVE = DATA / "old-pixelate-v0.1.tar.gz"  # defenses none and pixelate, submitted
CELLS = {(d, a, "cnn") for d in ("none", "blur") for a in ("none", "jpeg(quality=75)")}


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module", autouse=True)
def untouched():
    """Nothing a test here does may change the committed folder or archive."""
    before = _digests(DATA)
    yield
    assert _digests(DATA) == before


def test_the_old_folder_reads_as_it_was_written() -> None:
    run = Run.load(OLD)
    assert run.info.schema_version == 2 < SCHEMA_VERSION  # read by the names it was written with
    assert run.info.privbench_version == "0.1.0" and run.info.complete
    assert run.info.git["commit"].startswith("842e2a3")
    assert run.info.defense_labels == ["none", "blur"]
    assert run.info.fingerprint and run.info.protocol == "classification"
    assert len(run.info.sample_ids) == 4
    assert set(run.outcomes) == CELLS
    assert all(len(o.ids) == 24 for o in run.outcomes.values())
    assert set(run.quality) == {"none", "blur"} and len(run.quality["blur"]["ssim"]) == 24
    rows = RunFolder(OLD).read_rows()
    assert run.rows == rows and {r["scope"] for r in rows} == {"cell", "defense"}
    assert run.manifest == Run.load(OLD).info.to_json()


def test_the_archive_reads_verified_with_the_same_data() -> None:
    old, archived = Run.load(OLD), Run.load(ARCHIVE)
    assert archived.source == ARCHIVE and archived.path != ARCHIVE
    assert archived.info.defense_labels == ["none", "pixelate"]
    assert archived.info.fingerprint == old.info.fingerprint
    assert archived.info.plugins == [] and archived.info.suite.name == "old-pixelate"


def _ranking_cells(board: str) -> dict[str, list[str]]:
    """Defense → its cells in the board's ranking table(s), from the first data column on,
    the quality column left out (today's shows its interval too)."""
    section = board.split("## Ranking")[1].split("## Worst case per image")[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()]
    rows = [r for r in rows if len(r) > 2 and r[0] not in ("rank",) and not r[0].startswith("-")]
    return {r[1]: [r[2], r[3], *r[5:]] for r in rows}


def test_todays_leaderboard_of_the_old_folder_is_the_one_it_wrote(capsys) -> None:
    assert main(["leaderboard", str(OLD)]) == 0
    drawn = capsys.readouterr().out
    old = (OLD / "leaderboard.md").read_text(encoding="utf-8")
    # the rows are read as they are (each carries its counter-attack's threat model of the
    # time); on purpose, no defense (`none`) is no longer flagged ⚑, and a sentence under the
    # ranking names the rows that are
    expected = _ranking_cells(old)
    expected["none"][-1] = "nothing"
    assert _ranking_cells(drawn) == expected
    assert (
        " ".join(drawn.split()).count(
            "⚑ Never tried against an adaptive counter-attack (one designed against its kind of "
            "defense): blur. "
        )
        == 1
    )
    tail = "## Worst case per image"
    assert drawn[drawn.index(tail) :].strip() == old[old.index(tail) :].strip()
    assert main(["leaderboard", str(ARCHIVE), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert "pixelate" in csv and "fooling_rate" in csv


def test_the_old_folder_gets_a_report(tmp_path: Path, capsys) -> None:
    copy = tmp_path / "old"
    shutil.copytree(OLD, copy)
    assert main(["report", str(copy)]) == 0
    page = RunFolder(copy).report_file.read_text(encoding="utf-8")
    assert "old-blur" in page and "blur" in page and "data:image/png;base64," in page
    assert "no sample images" not in page


def test_the_old_runs_compare(capsys) -> None:
    assert main(["compare", str(OLD), str(ARCHIVE)]) == 0
    out = capsys.readouterr().out
    assert f"A = {OLD}" in out and f"B = {ARCHIVE}" in out
    assert "| none      | jpeg(quality=75) | cnn" in out
    assert not any(line.startswith(("| blur", "| pixelate")) for line in out.splitlines())
    assert main(["compare", str(OLD), "--defenses", "none", "blur"]) == 0
    out = capsys.readouterr().out
    assert "none → blur" in out and "-0.0972 [-0.1034, -0.0910]" in out
    assert out.count(str(OLD)) == 1 and out.startswith(f"run = {OLD}")  # one run, named once


def test_a_baseline_of_the_old_folder_holds_against_it(tmp_path: Path, capsys) -> None:
    baseline = tmp_path / "baseline.json"
    assert main(["baseline", str(OLD), "-o", str(baseline)]) == 0
    assert main(["check", str(OLD), "--baseline", str(baseline)]) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_the_old_folder_and_archive_merge(tmp_path: Path, capsys) -> None:
    target = tmp_path / "merged"
    argv = ["leaderboard", "--merge", str(OLD), str(ARCHIVE), "-o", str(target)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    merged = Run.load(target)
    assert merged.info.defense_labels == ["none", "blur", "pixelate"]
    assert [s["defenses"] for s in merged.info.extra["merged_from"]] == [
        ["none", "blur"],
        ["pixelate"],
    ]
    assert set(merged.outcomes) == CELLS | {
        ("pixelate", a, "cnn") for a in ("none", "jpeg(quality=75)")
    }
    assert set(merged.quality) == {"none", "blur", "pixelate"}
    # written as this release names files, whatever the sources used
    assert merged.info.schema_version == SCHEMA_VERSION
    assert merged.folder.samples_dir("pixelate", "jpeg(quality=75)").is_dir()
    assert merged.folder.cell_records_file("blur", "jpeg(quality=75)", "cnn").is_file()
    assert printed.strip() == RunFolder(target).leaderboard_file.read_text().strip()
    assert "| 1 ★    | pixelate" in printed
    assert main(["leaderboard", str(target)]) == 0
    assert capsys.readouterr().out == printed


def test_a_folder_of_todays_schema_merges_with_an_old_archive(tmp_path: Path, capsys) -> None:
    """Schema 3 changed only file names, so a run named by it and a 0.1.0 submission share a
    leaderboard: each source is read by its own names, the merge writes today's."""
    today = tmp_path / "today"  # none and blur from the old folder, pixelate from the archive
    assert main(["leaderboard", "--merge", str(OLD), str(ARCHIVE), "-o", str(today)]) == 0
    assert Run.load(today).info.schema_version == SCHEMA_VERSION
    target = tmp_path / "mixed"  # none and pixelate from the archive (schema 2), blur from today
    assert main(["leaderboard", "--merge", str(ARCHIVE), str(today), "-o", str(target)]) == 0
    mixed, old = Run.load(target), Run.load(OLD)
    assert [s["defenses"] for s in mixed.info.extra["merged_from"]] == [
        ["none", "pixelate"],
        ["blur"],
    ]
    assert set(mixed.quality) == {"none", "blur", "pixelate"}
    assert mixed.quality["blur"] == old.quality["blur"]
    for cell in CELLS:
        if cell[0] == "blur":
            got, want = mixed.outcomes[cell], old.outcomes[cell]
            assert list(got.ids) == list(want.ids)
            assert got.eligible.tolist() == want.eligible.tolist()
            assert got.fooled.tolist() == want.fooled.tolist()
    assert len(mixed.outcomes) == 6
    capsys.readouterr()
