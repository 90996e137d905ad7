"""Hostile and clumsy input read within bounds (issue 28, cases 4, 5 and 8's malformed
inputs): suite YAML (size, files, values with aliases expanded, depth, keys, tags, encodings),
grids sized before they are expanded, submission archives streamed within their limits, numbers
checked at the border, long messages shortened. Every case ends in a named error, never exit 3.

The alias bomb and the large archives run in a subprocess under ``RLIMIT_AS`` and a timeout:
before these bounds they took gigabytes (12.5 GB, 1.19 GB) or ended in MemoryError.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.errors import ParamError, PrivbenchError, SuiteError
from harness.core.limits import shorten
from harness.core.params import Param
from harness.engine.suite import load_suite
from harness.runs.archive import read_archive
from tests.test_owner_cli import privbench

ROOT = Path(__file__).resolve().parent.parent
OLD_ARCHIVE = ROOT / "tests" / "data" / "runs" / "old-pixelate-v0.1.tar.gz"
BASE = "dataset: {name: digits}\nrecognizers: [small-cnn]\n"
GIB = 1 << 30


def _suite(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _refused(path: Path, *fragments: str, line: int | None = None) -> SuiteError:
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    message = str(caught.value)
    where = f"{path}:{line}:" if line is not None else f"{path}"
    assert message.startswith(where), message
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


def _bounded(code: str, memory: int = 2 * GIB, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter limited to ``memory`` bytes of address space and a
    minute; its stdout (it prints the outcome)."""
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# -- suite YAML ----------------------------------------------------------------------------


def _alias_bomb(levels: int = 8) -> str:
    """9**(levels+1) values in well under a kilobyte."""
    chain = "[&a0 [1,1,1,1,1,1,1,1,1]"
    for i in range(1, levels + 1):
        chain += f", &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
    return BASE + "defenses: [none]\nquality_floor: {metric: ssim, min: " + chain + "]}\n"


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    path = _suite(tmp_path, _alias_bomb())
    assert path.stat().st_size < 700
    out = _bounded(
        f"""
        from harness.core.errors import SuiteError
        from harness.engine.suite import load_suite
        try:
            load_suite({str(path)!r})
        except SuiteError as exc:
            print(exc)
        """
    )
    assert out.startswith(f"{path}:4: more than 100,000 values once aliases are expanded"), out
    assert "$PRIVBENCH_MAX_YAML_NODES" in out


def test_the_value_budget_counts_aliases_again_and_follows_its_variable(tmp_path: Path) -> None:
    path = _suite(tmp_path, _alias_bomb(levels=2))  # 9**3 = 729 leaves, 820 values
    result = privbench("validate", str(path), env={"PRIVBENCH_MAX_YAML_NODES": "500"})
    assert result.returncode == 2
    assert "more than 500 values once aliases are expanded" in result.stderr
    plain = _suite(tmp_path, BASE + "defenses: [" + ",".join(["none"] * 600) + "]\n", "p.yaml")
    result = privbench("validate", str(plain), env={"PRIVBENCH_MAX_YAML_NODES": "500"})
    assert result.returncode == 2 and "more than 500 values" in result.stderr


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = _suite(tmp_path, BASE + "defenses: " + "[" * 5000 + "]" * 5000 + "\n")
    _refused(path, "nested more than 64 levels deep", "$PRIVBENCH_MAX_YAML_DEPTH", line=3)
    result = privbench("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "line", "shown"),
    [
        ("defenses: [none]\n? [a]\n: 1\n", 4, "got a list"),
        ("defenses: [{name: none, params: {[1]: x}}]\n", 3, "got a list"),
        ("defenses: [{name: none, params: {{a: 1}: x}}]\n", 3, "got a mapping"),
        ("defenses: [none]\n1: x\n", 4, "got 1"),
        ("defenses: [none]\nnull: x\n", 4, "got None"),
        ("defenses: [{name: none, params: {yes: 1}}]\n", 3, "got True"),
    ],
)
def test_keys_that_are_not_strings_are_named_with_their_line(
    tmp_path: Path, text: str, line: int, shown: str
) -> None:
    path = _suite(tmp_path, BASE + text)
    _refused(path, f"a key must be a string, {shown}; quote it", line=line)


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!set {a, b}", "!!set"),
        ("!!omap [a: 1]", "!!omap"),
        ("!!pairs [a: 1]", "!!pairs"),
        ("!foo x", "!foo"),
        ("!!python/object:os.system x", "!!python/object:os.system"),
    ],
)
def test_odd_tags_are_refused_with_their_line(tmp_path: Path, value: str, tag: str) -> None:
    path = _suite(tmp_path, BASE + f"defenses: [none]\ndescription: {value}\n")
    _refused(path, f"the tag {tag} is not allowed in a suite", line=4)


def test_text_encodings(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(BASE.encode() + b"description: caf\xe9\ndefenses: [none]\n")
    _refused(latin, "not UTF-8 text (byte 0xe9", line=3)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(BASE.encode() + b"\x00\x01defenses: [none]\n")
    _refused(binary, "not valid YAML: special characters are not allowed", line=3)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + BASE.encode() + b"defenses: [none]\n")
    assert load_suite(bom).defenses[0].name == "none"
    dated = _suite(tmp_path, BASE + "defenses: [none]\ndescription: 2020-01-01\n", "d.yaml")
    assert load_suite(dated).description == "2020-01-01"  # a date stays the text it is


def test_file_size_and_include_count_are_bounded(tmp_path: Path) -> None:
    big = _suite(tmp_path, BASE + "defenses: [none]\ndescription: " + "x" * (1 << 20) + "\n")
    _refused(big, "larger than 1,048,576 bytes", "$PRIVBENCH_MAX_SUITE_BYTES")
    # a diamond of includes: no cycle, but 2**12 reads of the same files
    for level in range(12):
        nxt = f"l{level + 1}.yaml" if level < 11 else None
        body = f"include: [{nxt}, {nxt}]\n" if nxt else "defenses: [none]\n"
        _suite(tmp_path, body, f"l{level}.yaml")
    top = _suite(tmp_path, BASE + "include: [l0.yaml]\n", "top.yaml")
    with pytest.raises(SuiteError, match=r"l\d+\.yaml: the suite reads more than 64 files"):
        load_suite(top)
    result = privbench("validate", str(top), env={"PRIVBENCH_MAX_SUITE_FILES": "5000"})
    assert result.returncode == 0, result.stderr


# -- grids ---------------------------------------------------------------------------------

SIGMAS = "[" + ",".join(f"{0.1 + i * 1e-3:.4f}" for i in range(1000)) + "]"
QUALITIES = "[" + ",".join(str(q) for q in range(1, 101)) + "]"


def _grid(tmp_path: Path, recognizer_steps: int = 1) -> Path:
    steps = "[" + ",".join(str(s) for s in range(1, recognizer_steps + 1)) + "]"
    return _suite(
        tmp_path,
        "dataset: {name: digits}\n"
        f"recognizers: [{{name: small-cnn, params: {{steps: {steps}}}}}]\n"
        f"defenses: [none, {{name: gaussian-blur, params: {{sigma: {SIGMAS}}}}}]\n"
        f"counter_attacks: [{{name: jpeg, params: {{quality: {QUALITIES}}}}}]\n",
        f"grid{recognizer_steps}.yaml",
    )


def test_a_grid_is_sized_before_it_is_expanded(tmp_path: Path) -> None:
    million = _grid(tmp_path, 10)
    _refused(
        million,
        "defenses (1,001) × counter_attacks (100) × recognizers (10) = 1,001,000 cells > "
        "20,000; pass --max-cells (or set $PRIVBENCH_MAX_CELLS) to raise it",
        line=3,
    )
    result = privbench("validate", str(million), "--max-cells", "1000")
    assert result.returncode == 2 and "1,001,000 cells > 1,000" in result.stderr
    small = _grid(tmp_path, 1)
    result = privbench("validate", str(small), env={"PRIVBENCH_MAX_CELLS": "100100"})
    assert result.returncode == 0, result.stderr
    assert "100100 cells = 1001 defense configs × 100 counter-attacks" in result.stdout
    assert load_suite(small, max_cells=100_100).n_cells == 100_100
    with pytest.raises(SuiteError, match="100,100 cells > 100,099"):
        load_suite(small, max_cells=100_099)


def test_metric_grids_are_bounded_too(tmp_path: Path) -> None:
    grid = "[" + ",".join(str(q) for q in range(1, 101)) + "]"
    path = _suite(
        tmp_path,
        BASE + f"defenses: [none]\nmetrics: [{{name: recovery_psnr, params: "
        f"{{jpeg_quality: {grid}}}}}]\n",
    )
    with pytest.raises(SuiteError, match="100 metric configs > 50"):
        load_suite(path, max_cells=50)


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (Param(float, 1.0, low=0, high=1), math.nan, "nan is not a finite number"),
        (Param(float, 1.0), math.inf, "inf is not a finite number"),
        (Param(float, 1.0), -math.inf, "-inf is not a finite number"),
        (Param(int, 1, low=0, high=10), 10**30, "is out of range (int, in [0, 10]"),
        (Param(int, 1), 10**30, "larger than a 64-bit integer"),
        (Param(int, 1), True, "expected an integer, got True (bool)"),
        (Param(int, 1), 3.0, "expected an integer, got 3.0 (float)"),
        (Param(list, []), [1.0, [math.nan]], "holds nan; every number must be finite"),
        (Param(dict, {}), {"a": math.inf}, "holds inf; every number must be finite"),
    ],
)
def test_parameters_refuse_what_is_not_a_number_in_range(
    param: Param, value: object, message: str
) -> None:
    with pytest.raises(ParamError, match=re.escape(message)) as caught:
        param.validate("x", value)
    assert str(caught.value).startswith("x: ")


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("defenses: [{name: gaussian-blur, params: {sigma: .nan}}]\n", "sigma", 3),
        ("defenses: [{name: gaussian-blur, params: {sigma: [1.0, .inf]}}]\n", "sigma", 3),
        ("defenses: [none]\nseed: 4294967296\n", "seed", 4),
        ("defenses: [none]\nseed: -1\n", "seed", 4),
        ("defenses: [none]\nseed: .nan\n", "seed", 4),
        ("defenses: [none]\nbatch_size: 1000000000000000000000000000000\n", "batch_size", 4),
        ("defenses: [none]\nquality_floor: {metric: ssim, min: .nan}\n", "min", None),
    ],
)
def test_a_suite_refuses_numbers_that_are_not_numbers(
    tmp_path: Path, text: str, field: str, line: int | None
) -> None:
    error = _refused(_suite(tmp_path, BASE + text), line=line)
    assert field in str(error.field) or field in error.message


def test_seeds_are_in_numpys_range(tmp_path: Path) -> None:
    path = _suite(tmp_path, BASE + "defenses: [none]\nseed: 4294967295\n")
    assert load_suite(path).seed == 2**32 - 1
    seeded = (
        "dataset: {name: digits}\ndefenses: [none]\n"
        "recognizers: [{name: small-cnn, params: {seed: %d}}]\n"
    )
    error = _refused(_suite(tmp_path, seeded % 2**32, "r.yaml"), "is out of range", line=3)
    assert error.field == "recognizers[0].params.seed"
    assert load_suite(_suite(tmp_path, seeded % (2**32 - 1), "ok.yaml")).recognizers


@pytest.mark.parametrize(
    ("args", "option", "why"),
    [
        (
            ["check", "r", "--baseline", "b", "--alpha", "nan", "--tolerance", "nan"],
            "--alpha",
            "not a finite number",
        ),
        (
            ["check", "r", "--baseline", "b", "--tolerance", "nan"],
            "--tolerance",
            "not a finite number",
        ),
        (["check", "r", "--baseline", "b", "--alpha", "1"], "--alpha", "give a number in (0, 1)"),
        (["check", "r", "--baseline", "b", "--alpha", "0"], "--alpha", "give a number in (0, 1)"),
        (["check", "r", "--baseline", "b", "--tolerance", "-0.1"], "--tolerance", "≥ 0"),
        (
            ["check", "r", "--baseline", "b", "--ssim-tolerance", "inf"],
            "--ssim-tolerance",
            "finite",
        ),
        (["check", "r", "--baseline", "b", "--psnr-tolerance", "-1"], "--psnr-tolerance", "≥ 0"),
        (["compare", "a", "b", "--alpha", "2"], "--alpha", "give a number in (0, 1)"),
        (["run", "s.yaml", "--workers", "0"], "--workers", "give a number ≥ 1"),
        (["run", "s.yaml", "--max-cells", "0"], "--max-cells", "give a number ≥ 1"),
        (["validate", "s.yaml", "--max-cells", "x"], "--max-cells", "not a whole number"),
        (["protect", "a", "b", "--jobs", "0"], "--jobs", "give a number ≥ 1"),
        (["protect", "a", "b", "--jpeg", "101"], "--jpeg", "give a number [1, 100]"),
    ],
)
def test_numeric_options_are_checked_by_the_parser(args: list[str], option: str, why: str) -> None:
    result = privbench(*args)
    assert result.returncode == 2
    assert f"argument {option}" in result.stderr and why in result.stderr, result.stderr


# -- messages ------------------------------------------------------------------------------


def test_long_messages_are_shortened_keeping_where(tmp_path: Path) -> None:
    name = "k" * 5000
    path = _suite(tmp_path, BASE + f"defenses: [{name}]\n")
    for command in (["validate", str(path)], ["run", str(path)]):
        result = privbench(*command)
        assert result.returncode == 2
        line = result.stderr.strip()
        assert line.startswith(f"error: {path}:3: defenses[0]") and len(line) < 700, line
        assert "characters…]" in line
    assert shorten("a" * 1000, 100).startswith("a" * 40) and len(shorten("a" * 1000, 100)) < 110


# -- submission archives -------------------------------------------------------------------


def _old_members() -> dict[str, bytes]:
    with tarfile.open(OLD_ARCHIVE) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def _tar(path: Path, entries: Iterable[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            name, data = entry
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _with_index(index: object, extra: dict[str, bytes] | None = None) -> list[tuple[str, bytes]]:
    members = {"submission.json": json.dumps(index).encode(), **(extra or {})}
    return list(members.items())


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _zeros_archive(path: Path, size: int) -> Path:
    """An archive of one member of ``size`` zero bytes, written as a stream (1 GiB in about
    two seconds, 4.7 MB on disk)."""
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w|") as tar,
    ):
        info = tarfile.TarInfo("run/zeros.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size), 1 << 20))
    return path


def _read_bounded(archive: Path, memory: int, env: dict[str, str] | None = None) -> str:
    return _bounded(
        f"""
        from harness.core.errors import PrivbenchError
        from harness.runs.archive import read_archive
        try:
            read_archive({str(archive)!r})
        except PrivbenchError as exc:
            print(exc)
        """,
        memory,
        env,
    )


def test_a_gigabyte_member_is_refused_by_its_header(tmp_path: Path) -> None:
    archive = _zeros_archive(tmp_path / "gib.tar.gz", GIB)
    out = _read_bounded(archive, 512 << 20)
    assert "member 'run/zeros.bin' declares 1,073,741,824 bytes (the limit is 268,435,456" in out
    assert "$PRIVBENCH_MAX_ARCHIVE_MEMBER_BYTES" in out


def test_a_member_is_streamed_not_read_whole(tmp_path: Path) -> None:
    """A 256 MiB member under raised limits is hashed while copied, in 150 MiB of address
    space in all (read whole into memory, as before, it ends in MemoryError)."""
    archive = _zeros_archive(tmp_path / "big.tar.gz", 256 << 20)
    env = {"PRIVBENCH_MAX_ARCHIVE_MEMBER_BYTES": str(GIB), "TMPDIR": str(tmp_path)}
    out = _read_bounded(archive, 150 << 20, env)
    assert out.strip() == f"{archive}: no valid submission.json; not a privbench submission"


def test_a_member_declaring_a_tebibyte_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("run/huge.bin")
    info.size = 1 << 40
    archive = tmp_path / "tib.tar.gz"
    with gzip.open(archive, "wb") as gz:
        gz.write(info.tobuf(tarfile.GNU_FORMAT) + bytes(4096))
    out = _read_bounded(archive, 512 << 20)
    assert "member 'run/huge.bin' declares 1,099,511,627,776 bytes" in out


def _pax_bomb(path: Path) -> Path:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 1 << 32
    with gzip.open(path, "wb") as gz:
        gz.write(info.tobuf(tarfile.USTAR_FORMAT) + bytes(4096))
    return path


def _malformed(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Archives that are not what they claim, and the message each must end in."""
    members = _old_members()
    index = json.loads(members["submission.json"])
    files = {n: d for n, d in members.items() if n != "submission.json"}
    good = tmp_path / "good.tar.gz"
    _tar(good, members.items())
    raw = good.read_bytes()
    cases: dict[str, tuple[list | bytes, str]] = {
        "truncated gzip": (raw[: len(raw) // 2], "not a readable .tar.gz"),
        "not gzip": (b"hello, world\n" * 100, "not a readable .tar.gz"),
        "bad tar header": (gzip.compress(bytes(range(256)) * 2 + bytes(1024)), "not a readable"),
        "index a list": (_with_index([1, 2]), "no valid submission.json"),
        "index not json": ([("submission.json", b"{nope")], "no valid submission.json"),
        "index nested": (
            [("submission.json", b"[" * 100_000 + b"]" * 100_000)],
            "no valid submission.json",
        ),
        "no index": (list(files.items()), "no valid submission.json"),
        "files a list": (_with_index({**index, "files": []}), "'files' must map member names"),
        "digest a number": (
            _with_index({**index, "files": {"run/x": 1}}, {"run/x": b"x"}),
            "'files' must map member names",
        ),
        "wrong format": (_with_index({**index, "format": "x" * 5000}), "says format 'xxxx"),
        "digest mismatch": (
            _with_index(index, {**files, "run/results.jsonl": b"{}\n"}),
            "run/results.jsonl does not match its sha256",
        ),
        "unlisted": (_with_index(index, {**files, "run/extra": b"x"}), "run/extra is not listed"),
        "missing": (
            _with_index(index, {n: d for n, d in files.items() if n != "run/manifest.json"}),
            "run/manifest.json is listed in submission.json but missing",
        ),
        "unsafe name": (_with_index(index, {"../evil": b"x"}), "unsafe member name '../evil'"),
        "twice": (
            [*_with_index(index, files), ("run/manifest.json", b"{}")],
            "member 'run/manifest.json' appears twice",
        ),
    }
    link = tarfile.TarInfo("run/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("run/dev")
    device.type = tarfile.CHRTYPE
    cases["link"] = ([*_with_index(index), link], "member 'run/link' is not a regular file")
    cases["device"] = ([*_with_index(index), device], "member 'run/dev' is not a regular file")
    out = {}
    for name, (content, message) in cases.items():
        path = tmp_path / (name.replace(" ", "-") + ".tar.gz")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _tar(path, content)
        out[name] = (path, message)
    out["pax bomb"] = (_pax_bomb(tmp_path / "pax.tar.gz"), "an extended header declares")
    return out


def test_malformed_archives_are_named_errors(tmp_path: Path) -> None:
    for name, (path, message) in _malformed(tmp_path).items():
        with pytest.raises(PrivbenchError) as caught:
            read_archive(path)
        assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value), name
        result = privbench("leaderboard", str(path))
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr and len(result.stderr) < 700, (name, result.stderr)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PRIVBENCH_MAX_ARCHIVE_MEMBERS", "3", "more than 3 members"),
        ("PRIVBENCH_MAX_ARCHIVE_MEMBER_BYTES", "100", "declares"),
        ("PRIVBENCH_MAX_ARCHIVE_BYTES", "1000", "its members hold more than 1,000 bytes"),
        ("PRIVBENCH_MAX_ARCHIVE_INDEX_BYTES", "100", "member 'submission.json' declares"),
    ],
)
def test_archive_limits_follow_their_variables(variable: str, value: str, message: str) -> None:
    result = privbench("leaderboard", str(OLD_ARCHIVE), env={variable: value})
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert f"${variable}" in result.stderr


def test_a_valid_archive_reads_back_verified() -> None:
    index, members = read_archive(OLD_ARCHIVE)
    original = _old_members()
    assert set(members) == set(original) - {"submission.json"}
    for name, data in original.items():
        if name != "submission.json":
            assert members[name] == data
            assert (
                hashlib.sha256(members.path(name).read_bytes()).hexdigest()
                == (index["files"][name])
            )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("&r [*r]", "an alias refers to a value that holds it"),
        ("{a: &a {b: *a}}", "an alias refers to a value that holds it"),
        ("!!bool x", "cannot read 'x' as !!bool"),
        ("!!int x", "cannot read 'x' as !!int"),
        ("!!float x", "cannot read 'x' as !!float"),
    ],
)
def test_recursive_aliases_and_unreadable_scalars(tmp_path: Path, value: str, message: str) -> None:
    path = _suite(tmp_path, BASE + f"defenses: [none]\ndescription: {value}\n")
    _refused(path, message, line=4)


@pytest.mark.usefixtures("fuzz_budget")  # tests/conftest.py
@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.sampled_from(["set", "cut", "insert"]),
            st.binary(min_size=1, max_size=16),
        ),
        min_size=1,
        max_size=4,
    ),
    head=st.booleans(),
)
def test_damaged_archives_are_refused_with_a_named_error(edits, head: bool) -> None:
    """Bytes of the committed archive's tar stream changed, cut or inserted (in its headers,
    or anywhere): a PrivbenchError naming the archive, or, rarely, an archive that still
    verifies, never another exception."""
    raw = bytearray(gzip.decompress(OLD_ARCHIVE.read_bytes()))
    for at, how, data in edits:
        i = int(at * (2048 if head else len(raw) - 1))
        if how == "set":
            raw[i : i + len(data)] = data
        elif how == "cut":
            del raw[i : i + len(data) * 37]
        else:
            raw[i:i] = data
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.tar.gz"
        path.write_bytes(gzip.compress(bytes(raw), 1))
        try:
            read_archive(path)
        except PrivbenchError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), str(exc)


# -- what a reviewer's attack found (issue 28, second round) ------------------------------------
@pytest.mark.parametrize(
    "include, problem",
    [
        ("/etc/passwd", "is an absolute path"),
        ("../../../etc/x.yaml", "outside"),
        ("notes.txt", "is not a .yaml or .yml file"),
    ],
)
def test_includes_stay_among_the_suites_files(tmp_path: Path, include: str, problem: str) -> None:
    """A suite from someone else cannot make privbench read, and quote in an error, any file:
    an include is a relative .yaml path within the suite's folder or the one above it."""
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("secret: 1\n")
    path = folder / "s.yaml"
    path.write_text(f"name: x\ninclude: [{include}]\n")
    with pytest.raises(SuiteError, match=re.escape(problem)) as info:
        load_suite(path)
    assert "secret" not in str(info.value)
    assert f"{path}:2: include:" in str(info.value)


def test_an_include_of_the_folder_above_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "base.yaml").write_text(BASE + "defenses: [none]\n")
    child = tmp_path / "examples" / "child.yaml"
    child.write_text("include: [../base.yaml]\nname: child\n")
    assert load_suite(child).name == "child"


def test_a_suite_path_that_is_no_file_says_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="not a regular file"):
        load_suite(tmp_path)
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite(tmp_path / "missing.yaml")


def test_a_label_with_control_characters_is_refused(tmp_path: Path) -> None:
    path = _suite(
        tmp_path, "name: t\n" + BASE + 'defenses: [{name: none, label: "\\e[31mred\\a"}]\n'
    )
    with pytest.raises(SuiteError, match=r"control character U\+001B") as info:
        load_suite(path)
    assert "\x1b" not in str(info.value)


def test_error_messages_reach_the_terminal_without_control_characters(tmp_path: Path) -> None:
    bad = tmp_path / "x\x1b[2Jy.yaml"
    done = privbench("validate", str(bad))
    assert done.returncode == 2 and "\x1b" not in done.stderr and "\\x1b[2J" in done.stderr


def test_a_depth_limit_past_the_stack_is_a_named_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIVBENCH_MAX_YAML_DEPTH", "99999999")
    path = _suite(tmp_path, BASE + "defenses: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(SuiteError, match="nested deeper than this Python can parse"):
        load_suite(path)


def test_a_photo_past_the_pixel_limit_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from harness.core.errors import DataError
    from harness.toolkit.photos import read_photo

    Image.new("RGB", (300, 200)).save(tmp_path / "x.png")
    monkeypatch.setenv("PRIVBENCH_MAX_PHOTO_PIXELS", "59999")
    with pytest.raises(DataError, match=r"300×200 is 60,000 pixels, more than the 59,999"):
        read_photo(tmp_path / "x.png")
    monkeypatch.setenv("PRIVBENCH_MAX_PHOTO_PIXELS", "60000")
    assert read_photo(tmp_path / "x.png").pixels.shape[:2] == (200, 300)
