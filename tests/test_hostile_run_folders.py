"""Run folders and submission archives from others, with their files malformed: a manifest
whose keys have the wrong type or a non-finite number, results and records lines that are not
rows. An archive's digests can be recomputed by anyone, so each is refused by every command
that reads it with a named error (exit 2) naming the file, and line where there is one, never
an internal error (exit 3); a merge that fails leaves its output folder as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.core.errors import JsonLinesError, PrivbenchError
from harness.core.files import read_jsonl
from harness.runs.folder import RunFolder
from tests.conftest import write_suite
from tests.test_owner_cli import privbench

DATA = Path(__file__).resolve().parent / "data" / "runs"
OLD = DATA / "old-blur-v0.1"  # a finished run folder, written before runs recorded digests
ARCHIVE = DATA / "old-pixelate-v0.1.tar.gz"
RECORDS = "records/blur__none__cnn.jsonl"
QUALITY = "records/quality/blur.jsonl"


def _copy(tmp_path: Path, name: str = "old") -> Path:
    folder = tmp_path / name
    shutil.copytree(OLD, folder)
    return folder


def _edit_manifest(folder: Path, edit: Callable[[dict], None]) -> Path:
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")  # allow_nan: NaN written
    return path


def _set_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _refused(args: list[str], *fragments: str) -> str:
    """Run the CLI; assert exit 2 with one line naming each of ``fragments``."""
    result = privbench(*args)
    err = result.stderr.strip()
    assert result.returncode == 2, err
    assert "Traceback" not in err and "bug in privbench" not in err, err
    last = err.splitlines()[-1]  # a run says what it is about to run first
    assert last.startswith("error: ") and err.count("error: ") == 1, err
    for fragment in fragments:
        assert fragment in last, err
    return last


def _commands(folder: Path, tmp_path: Path) -> list[list[str]]:
    """Every command that reads a run folder, with ``folder`` as its input."""
    f = str(folder)
    return [
        ["leaderboard", f],
        ["report", f],
        ["compare", f, str(OLD)],
        ["baseline", f, "-o", str(tmp_path / "baseline.json")],
        ["leaderboard", "--merge", f, str(ARCHIVE), "-o", str(tmp_path / "merged")],
        ["submit", f, "-o", str(tmp_path / "x.tar.gz")],
    ]


MANIFEST_EDITS = {
    "config null": (lambda m: m.update(config=None), "'config' is null; it should be an object"),
    "config list": (lambda m: m.update(config=[1]), "'config' is a list; it should be an object"),
    "suite null": (lambda m: m.update(suite=None), "'suite' is null; it should be an object"),
    "suite list": (lambda m: m.update(suite=["x"]), "'suite' is a list; it should be an object"),
    "suite name": (
        lambda m: m["suite"].update(name=3),
        "'suite.name' is the number 3; it should be a string",
    ),
    "run_id": (lambda m: m.update(run_id={"a": 1}), "'run_id' is an object; it should be a string"),
    "defenses": (lambda m: m["config"].update(defenses={}), "'config.defenses' is an object"),
    "defense": (
        lambda m: m["config"]["defenses"].append(7),
        "'config.defenses[2]' is the number 7",
    ),
    "label": (lambda m: m["config"]["defenses"][0].pop("label"), "no 'config.defenses[0].label'"),
    "failures": (lambda m: m.update(failures=["x"]), "'failures[0]' is a string"),
    "duration NaN": (lambda m: m.update(duration_s=float("nan")), "'duration_s' is nan"),
    "duration inf": (lambda m: m.update(duration_s=float("inf")), "'duration_s' is inf"),
    "param NaN": (
        lambda m: m["config"]["defenses"][1]["params"].update(sigma=float("-inf")),
        "'config.defenses[1].params.sigma' is -inf; it should be a finite number",
    ),
    "duration text": (lambda m: m.update(duration_s="1"), "'duration_s' is a string"),
    "seed": (lambda m: m.update(seed=1.5), "'seed' is the number 1.5; it should be an integer"),
    "digests": (lambda m: m.update(digests={"results.jsonl": 1}), "'digests.results.jsonl'"),
    "floor": (lambda m: m["config"]["quality_floor"].pop("min"), "no 'config.quality_floor.min'"),
    "metric": (lambda m: m["metrics"].update(ssim=None), "'metrics.ssim' is null"),
    "samples": (lambda m: m["dataset"]["samples"].append(1), "'dataset.samples.4' is the number"),
    "plugins": (lambda m: m.update(plugins=[1]), "'plugins.0' is the number 1"),
    "upload": (lambda m: m["config"].update(upload="png"), "'config.upload' is a string"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_a_malformed_manifest_is_refused_by_every_reader(tmp_path: Path, case: str) -> None:
    edit, message = MANIFEST_EDITS[case]
    manifest = _edit_manifest(_copy(tmp_path), edit)
    for args in _commands(manifest.parent, tmp_path):
        _refused(args, str(manifest), message)
    assert not (tmp_path / "merged").exists()


def test_a_huge_integer_in_the_manifest_is_a_named_error(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    path = folder / "manifest.json"
    text = path.read_text(encoding="utf-8").replace('"seed": 0', '"seed": ' + "9" * 5000, 1)
    path.write_text(text, encoding="utf-8")
    _refused(["leaderboard", str(folder)], f"{path}: not valid JSON")


def test_a_deeply_nested_manifest_is_a_named_error(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    path = folder / "manifest.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    _refused(["leaderboard", str(folder)], f"{path}: not valid JSON")


ROW_EDITS = {
    "{}": "no 'scope'",
    "[1, 2]": "the row is a list; it should be an object",
    '"row"': "the row is a string",
    "null": "the row is null",
    '{"a":': "not valid JSON",
    "9" * 5000: "not valid JSON",
    "[" * 100_000: "not valid JSON (nested too deeply)",
    '{"scope": "cell", "defense": "none", "counter_attack": "none", "recognizer": "cnn", '
    '"metric": "fooling_rate", "value": NaN, "n": 3}': "NaN is not a number",
    '{"scope": "cell", "defense": "none", "counter_attack": "none", "recognizer": "cnn", '
    '"metric": "fooling_rate", "value": "high", "n": 3}': "'value' is a string",
    '{"scope": "cell", "defense": "none", "counter_attack": null, "recognizer": "cnn", '
    '"metric": "fooling_rate", "value": 0.5, "n": 3}': "'cell' row has no 'counter_attack'",
    '{"scope": "cell", "defense": "none", "counter_attack": "none", "recognizer": "cnn", '
    '"metric": "fooling_rate", "value": 0.5, "n": 3, "ci_low": 0.1}': (
        "must both be numbers or both null"
    ),
    '{"scope": "defense", "defense": ["none"], "counter_attack": null, "recognizer": null, '
    '"metric": "ssim", "value": 0.5, "n": 3}': "'defense' is a list",
}


@pytest.mark.parametrize("line", sorted(ROW_EDITS), ids=lambda s: s[:30])
def test_a_malformed_results_line_names_its_file_and_line(tmp_path: Path, line: str) -> None:
    folder = _copy(tmp_path)
    _set_line(folder / "results.jsonl", 3, line)
    where = f"{folder / 'results.jsonl'}:3: "
    for args in _commands(folder, tmp_path):
        _refused(args, where, ROW_EDITS[line])


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        (RECORDS, '{"a":', "not valid JSON"),
        (RECORDS, "9" * 5000, "not valid JSON"),
        (RECORDS, "[1]", "the record is a list"),
        (
            RECORDS,
            '{"id": "x", "recognized_clean": 1, "recognized_protected": true}',
            "'recognized_clean' is the number 1",
        ),
        (RECORDS, '{"id": "x", "recognized_clean": true}', "no 'recognized_protected'"),
        (QUALITY, '{"id": "x", "ssim": "0.5"}', "'ssim' is a string"),
        (QUALITY, '{"id": "x", "ssim": Infinity}', "Infinity is not a number"),
        (QUALITY, '{"ssim": 0.5}', "no 'id'"),
    ],
)
def test_a_malformed_records_line_names_its_file_and_line(
    tmp_path: Path, name: str, line: str, message: str
) -> None:
    folder = _copy(tmp_path)
    _set_line(folder / name, 2, line)
    for args in _commands(folder, tmp_path):
        _refused(args, f"{folder / name}:2: ", message)


def test_a_file_that_is_not_utf8_is_a_named_error(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "results.jsonl").write_bytes(b"\xff\xfe{}\n")
    _refused(["leaderboard", str(folder)], f"{folder / 'results.jsonl'}:1: not valid JSON")


def test_read_jsonl_errors_are_privbench_errors_and_value_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a":\n', encoding="utf-8")
    with pytest.raises(JsonLinesError, match=rf"^{path}:3: not valid JSON") as caught:
        read_jsonl(path)
    assert isinstance(caught.value, PrivbenchError) and isinstance(caught.value, ValueError)


# -- archives whose digests were recomputed ----------------------------------------------------
def _repack(archive: Path, target: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """``archive`` with each run member passed through ``edit`` and its index's digests
    recomputed, as anyone can."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]
    files = {m.name: edit(m.name, data) for m, data in members if m.isfile()}
    index = json.loads(files["submission.json"])
    index["files"] = {
        name: hashlib.sha256(files[name]).hexdigest() for name in index["files"] if name in files
    }
    files["submission.json"] = json.dumps(index).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member, _ in members:
            data = files.get(member.name, b"")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    target.write_bytes(gzip.compress(buffer.getvalue()))
    return target


def _manifest_edit(change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if name != "run/manifest.json":
            return data
        manifest = json.loads(data)
        change(manifest)
        return json.dumps(manifest).encode()

    return edit


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(config=None), "'config' is null"),
        (lambda m: m.update(suite=[]), "'suite' is a list"),
    ],
)
def test_an_archive_with_a_malformed_manifest_and_fresh_digests(
    tmp_path: Path, change: Callable[[dict], None], message: str
) -> None:
    archive = _repack(ARCHIVE, tmp_path / "bad.tar.gz", _manifest_edit(change))
    for args in _commands(archive, tmp_path):
        if args[0] not in ("report", "submit"):  # these take a folder, never an archive
            _refused(args, f"{archive}: run/manifest.json: ", message)


def test_an_archive_with_a_bad_results_line_and_fresh_digests(tmp_path: Path) -> None:
    def edit(name: str, data: bytes) -> bytes:
        return b"[1, 2]\n" + data if name == "run/results.jsonl" else data

    archive = _repack(ARCHIVE, tmp_path / "bad.tar.gz", edit)
    where = f"{archive}: run/results.jsonl:1: "
    _refused(["leaderboard", str(archive)], where, "the row is a list")
    _refused(["compare", str(archive), str(OLD)], where)


# -- a merge that fails leaves -o as it was ----------------------------------------------------
def test_a_nan_duration_in_an_archive_is_refused_and_merge_writes_nothing(
    tmp_path: Path,
) -> None:
    """The reviewer's D3: the merge read the manifest, then failed writing NaN and left a
    partial -o folder that the next merge into it refused."""
    target = tmp_path / "merged"
    for value in (float("nan"), float("-inf"), "NaN"):
        change = _manifest_edit(lambda m, v=value: m.update(duration_s=v))
        archive = _repack(ARCHIVE, tmp_path / "nan.tar.gz", change)
        _refused(
            ["leaderboard", "--merge", str(OLD), str(archive), "-o", str(target)], "duration_s"
        )
        assert not target.exists()
    merged = privbench("leaderboard", "--merge", str(OLD), str(ARCHIVE), "-o", str(target))
    assert merged.returncode == 0, merged.stderr


@pytest.mark.parametrize("before", ["missing", "empty", "merged"])
def test_a_merge_that_fails_writing_leaves_its_output_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str
) -> None:
    target = tmp_path / "merged"
    if before == "empty":
        target.mkdir()
    elif before == "merged":
        assert (
            privbench(
                "leaderboard", "--merge", str(OLD), str(ARCHIVE), "-o", str(target)
            ).returncode
            == 0
        )
    snapshot = _tree(tmp_path)

    def full(self: RunFolder, rows: list) -> None:
        (self.path / "results.jsonl").write_text("partial", encoding="utf-8")
        raise PrivbenchError("disk full (simulated)")

    monkeypatch.setattr(RunFolder, "write_rows", full)
    _refused(["leaderboard", "--merge", str(OLD), str(ARCHIVE), "-o", str(target)], "disk full")
    assert _tree(tmp_path) == snapshot


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
        if ".lock" not in p.name and "privbench" not in p.name
    }


# -- run --resume and --overwrite read the earlier manifest too --------------------------------
SUITE = """\
name: hostile
dataset: {name: digits, params: {max_probes: 4}}
recognizers: [{name: small-cnn, label: cnn}]
defenses: [none]
counter_attacks: [none]
"""


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_run_refuses_an_earlier_folder_with_a_malformed_manifest(tmp_path: Path, flag: str) -> None:
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    folder = tmp_path / "results" / "hostile" / "old"
    folder.parent.mkdir(parents=True)
    shutil.copytree(OLD, folder)
    manifest = _edit_manifest(folder, lambda m: m.update(config=[]))
    before = _tree(folder)
    args = ["run", str(suite), "--run-id", "old", flag, "--out", str(tmp_path / "results")]
    _refused(args, str(manifest), "'config' is a list")
    assert _tree(folder) == before


def test_a_label_with_an_escape_sequence_in_a_received_run_is_refused(tmp_path: Path) -> None:
    """A manifest or results row from someone else cannot send escape sequences to the
    terminal of whoever draws its leaderboard."""
    run_dir = tmp_path / "run"
    shutil.copytree(OLD, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["defenses"][1]["label"] = "blur\x1b]0;pwned\x07"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    done = privbench("leaderboard", str(run_dir))
    assert done.returncode == 2 and "control character U+001B" in done.stderr
    assert "\x1b" not in done.stdout + done.stderr
