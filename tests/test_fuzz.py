"""Fuzzing: mutated suites and random photo files never end in a traceback.

Hypothesis runs derandomised (the same examples on every machine) and with a bounded number of
examples, so CI time stays fixed.
"""

from __future__ import annotations

import math
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from harness.core.errors import DataError, PrivbenchError
from harness.engine.suite import load_suite
from harness.toolkit.photos import read_photo
from tests.test_owner_cli import privbench

# every test here runs within a memory ceiling and a hang guard (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fuzz_budget")

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

BASE_SUITE: dict[str, Any] = {
    "name": "fuzz",
    "description": "a suite to mutate",
    "seed": 0,
    "device": "auto",
    "objective": "evade",
    "dataset": {"name": "lfw-subset", "params": {"max_probes": 10}},
    "recognizers": ["yunet", {"name": "small-cnn", "params": {"steps": 10}}],
    "defenses": ["none", {"name": "naive-overlay", "params": {"alpha": [0.3, 0.6]}}],
    "counter_attacks": ["none", {"name": "jpeg", "params": {"quality": 75}}],
    "metrics": ["fooling_rate", {"name": "recovery_psnr", "params": {"jpeg_quality": [90]}}],
    "upload": {"format": "png"},
    "batch_size": 8,
    "precision": "fp32",
}

ANY_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(suite: dict, path: tuple, op: str, value: Any, name: str) -> dict:
    import copy

    doc = copy.deepcopy(suite)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "retype":
        parent[last] = value
    elif op == "rename" and isinstance(parent, dict):
        parent[name] = parent.pop(last)
    elif op == "wrap":
        parent[last] = [parent[last], value]
    return doc


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_mutated_suites_are_accepted_or_refused_with_a_suite_error(data, tmp_path: Path) -> None:
    paths = _paths(BASE_SUITE)
    path = data.draw(st.sampled_from(paths))
    op = data.draw(st.sampled_from(["delete", "retype", "rename", "wrap"]))
    value = data.draw(ANY_VALUE)
    name = data.draw(st.text(string.ascii_letters + "_-", min_size=1, max_size=10))
    text = yaml.safe_dump(_mutate(BASE_SUITE, path, op, value, name), sort_keys=False)
    _load_or_suite_error(tmp_path / "s.yaml", text)


@settings(FUZZ, max_examples=300)
@given(
    at=st.floats(0, 1),
    junk=st.text(alphabet=":-[]{}#&*!|>'\"%@`\t\n ,?", min_size=1, max_size=6),
    how=st.sampled_from(["insert", "truncate", "replace"]),
)
def test_broken_yaml_is_refused_with_a_suite_error(at, junk, how, tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE_SUITE, sort_keys=False)
    i = int(at * len(text))
    text = {
        "insert": text[:i] + junk + text[i:],
        "truncate": text[:i],
        "replace": text[:i] + junk + text[i + len(junk) :],
    }[how]
    _load_or_suite_error(tmp_path / "s.yaml", text)


# YAML that is well formed but hostile: tags, aliases (recursive ones too), keys that are not
# strings, scalars a tag's constructor cannot read, control characters, deep nesting.
HOSTILE_FRAGMENTS = [
    "!!binary aGk=", "!!set {a}", "!!omap [a: 1]", "!!python/name:os.system", "!foo x",
    "&x [1]", "*x", "*nope", "&r [*r]", "{a: &a {b: *a}}", "<<: *x", "<<: [1]", "<<: 1",
    "? [a]\n: 1", "{[1]: 2}", "{{a: 1}: 2}", "1: x", "null: x", "yes: 1",
    ".nan", "-.inf", "!!float nan", "!!float x", "!!int x", "!!bool x", "!!null x",
    "!!int 99999999999999999999999", "!!timestamp nope", "2020-01-01", "!!map []", "!!seq {}",
    "\x00", "\ufeff", '"\\ud800"', "%YAML 1.1\n---", "--- \n---", "[" * 70, "{" * 70,
]  # fmt: skip


@settings(FUZZ, max_examples=300)
@given(
    fragment=st.sampled_from(HOSTILE_FRAGMENTS),
    at=st.floats(0, 1),
    how=st.sampled_from(["line", "value", "inline"]),
)
def test_hostile_yaml_is_refused_with_a_suite_error(fragment, at, how, tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE_SUITE, sort_keys=False)
    lines = text.splitlines(True)
    i = int(at * (len(lines) - 1))
    if how == "line":
        lines.insert(i, fragment + "\n")
    elif how == "value":
        lines[i] = lines[i].split(":")[0] + ": " + fragment + "\n"
    else:
        j = int(at * len(text))
        lines = [text[:j], fragment, text[j:]]
    _load_or_suite_error(tmp_path / "s.yaml", "".join(lines))


def _load_or_suite_error(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_suite(path)
    except PrivbenchError as exc:
        assert str(path) in str(exc), str(exc)  # every refusal names the file


# -- photo files ---------------------------------------------------------------------------

FORMATS = {  # Pillow mode -> formats that store it
    "1": ["png", "bmp", "tiff", "gif"],
    "L": ["png", "bmp", "jpeg", "tiff", "gif"],
    "P": ["png", "gif", "bmp", "tiff"],
    "RGB": ["png", "jpeg", "bmp", "tiff"],
    "RGBA": ["png", "tiff"],
    "LA": ["png"],
    "I;16": ["png", "tiff"],
    "I": ["tiff"],
    "F": ["tiff"],
    "CMYK": ["jpeg", "tiff"],
}
if features.check("webp"):
    for mode in ("RGB", "RGBA", "L"):
        FORMATS[mode].append("webp")


@st.composite
def photo_files(draw) -> tuple[str, bytes]:
    """(file name, bytes): a valid image of a random mode, size and format, or junk bytes
    under an image suffix (empty, random, or a valid file cut short)."""
    index = draw(st.integers(0, 10**6))
    kind = draw(st.sampled_from(["image", "image", "image", "junk", "cut"]))
    mode = draw(st.sampled_from(sorted(FORMATS)))
    fmt = draw(st.sampled_from(FORMATS[mode]))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode in ("I", "F"):
        img = rgb.convert("L").convert(mode)
    else:
        img = rgb.convert(mode)
    import io

    buf = io.BytesIO()
    img.save(buf, format=fmt)
    raw = buf.getvalue()
    suffix = {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")
    if kind == "junk":
        raw = draw(st.binary(max_size=200))
    elif kind == "cut":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    return f"f{index}_{mode.replace(';', '')}{suffix}", raw


@settings(FUZZ, max_examples=25)
@given(files=st.lists(photo_files(), min_size=1, max_size=5, unique_by=lambda f: f[0]))
def test_protect_and_recover_name_every_bad_file_and_recover_every_good_one(files) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "in"
        src.mkdir()
        good, bad = [], []
        for name, raw in files:
            (src / name).write_bytes(raw)
            try:
                read_photo(src / name)
                good.append(name)
            except DataError:
                bad.append(name)
        key = root / "key"
        privbench("keygen", str(key))
        p = privbench("protect", "--key", str(key), "--param", "block=4", str(src), str(root / "o"))
        assert "Traceback" not in p.stderr and "unexpected" not in p.stderr, p.stderr
        # every line is privbench's own: no raw warnings from the decoders
        lines = p.stderr.splitlines()
        assert all(line.startswith(("error: ", "note: ", "privbench: ")) for line in lines), lines
        assert p.returncode == (1 if bad else 0), p.stderr
        for name in bad:
            assert f"error: {src / name}: " in p.stderr, (name, p.stderr)
        if not good:
            return
        r = privbench("recover", "--key", str(key), str(root / "o"), str(root / "r"))
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        for name in good:
            original = read_photo(src / name)
            back = read_photo(root / "r" / Path(name).with_suffix(".png"))
            assert back.pixels.shape == original.pixels.shape, name
            levels = np.iinfo(original.pixels.dtype).max // 255
            bound = math.ceil(0.5 / 0.45) * levels  # k-RTIO at α = 0.45, ⌈0.5/α⌉ grey levels
            diff = np.abs(back.pixels.astype(np.int64) - original.pixels.astype(np.int64))
            assert diff.max() <= bound, (name, diff.max())


def test_the_fuzzers_generate_what_they_claim() -> None:
    """The strategies are not vacuous: they produce both readable and unreadable files, and
    suite mutations that are refused."""
    from hypothesis import find

    find(photo_files(), lambda f: f[1] == b"", settings=FUZZ)
    _, raw = find(photo_files(), lambda f: f[0].endswith(".tif") and len(f[1]) > 50, settings=FUZZ)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.tif"
        path.write_bytes(raw)
        assert read_photo(path).pixels.size > 0
        bad = Path(tmp) / "s.yaml"
        bad.write_text("dataset: [unclosed\n")
        with pytest.raises(PrivbenchError, match=r"s\.yaml"):
            load_suite(bad)


# -- CLI arguments ---------------------------------------------------------------------------
# Each command with its positionals and its flags (flag → number of values; 0 is a switch).
# `run` is given only suites that cannot start, so no example runs a benchmark.
CLI: dict[str, tuple[list[str], dict[str, int]]] = {
    "run": (
        ["SUITE_THAT_CANNOT_RUN"],
        {
            "--out": 1,
            "--device": 1,
            "--run-id": 1,
            "--key": 1,
            "--overwrite": 0,
            "--smoke": 0,
            "--no-cache": 0,
            "--workers": 1,
            "--executor": 1,
        },
    ),
    "validate": (["SUITE"], {"--ready": 0}),
    "list": ([], {}),
    "keygen": (["OUT"], {"--bits": 1}),
    "protect": (
        ["PHOTOS", "OUT"],
        {
            "--key": 1,
            "--defense": 1,
            "--param": 1,
            "--jobs": 1,
            "--jpeg": 1,
            "--png-compression": 1,
            "--overlays": 1,
            "--overwrite": 0,
            "--index": 1,
        },
    ),
    "recover": (
        ["PHOTOS", "OUT"],
        {
            "--key": 1,
            "--defense": 1,
            "--param": 1,
            "--jobs": 1,
            "--id-from-name": 0,
            "--overwrite": 0,
            "--index": 1,
        },
    ),
    "report": (["RUN"], {}),
    "compare": (["RUN", "RUN"], {"--defenses": 2, "--alpha": 1}),
    "baseline": (["RUN"], {"--cells": 2, "-o": 1}),
    "check": (
        ["RUN"],
        {
            "--baseline": 1,
            "--alpha": 1,
            "--tolerance": 1,
            "--ssim-tolerance": 1,
            "--psnr-tolerance": 1,
        },
    ),
    "new-defense": (["NAME", "OUT"], {}),
    "submit": (["RUN"], {"-o": 1, "--with-source": 0}),
    "weights": (["ACTION", "NAME", "FILE"], {}),
    "leaderboard": (["RUN"], {"--merge": 2, "-o": 1, "--name": 1, "--format": 1}),
}
HOSTILE = [
    "nan", "inf", "-inf", "-1", "0", "1e309", "18446744073709551617", "", " ", "ü∂ß😀",
    "../../victim", "a" * 300, "x/" * 40, "--", "-x", "none", "krtio", "sigma=nan", "=",
    "$\\frac{1$", "{missing}", "{dir}", "{junk}", "{run}", "{suite}", "{key}", "{baseline}",
    "{out}", "{photos}", "{json}", "{json_list}",
]  # fmt: skip
SLOTS = {
    "SUITE_THAT_CANNOT_RUN": ["{missing}", "{dir}", "{junk}", "{bad_suite}", "../../victim", ""],
    "SUITE": ["{suite}", "{missing}", "{dir}", "{junk}", "{bad_suite}", "a" * 300, "-x", ""],
    "ACTION": ["list", "status", "add", "nan"],
}


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the fuzzed arguments point at: a finished run, its baseline, a suite, a key, a
    folder of photos, junk; a folder ``victim`` that nothing may touch."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    suite = root / "tiny.yaml"
    suite.write_text(
        "name: tiny\ndataset: {name: digits, params: {max_probes: 8, size: 32}}\n"
        "recognizers: [{name: small-cnn, params: {steps: 4, width: 4}, label: cnn}]\n"
        "defenses: [none, gaussian-blur]\ncounter_attacks: [none]\n",
        encoding="utf-8",
    )
    run = ["run", str(suite), "--out", str(root / "results"), "--run-id", "r", "--quiet"]
    assert privbench(*run).returncode == 0
    assert privbench("keygen", str(root / "key")).returncode == 0
    baseline = ["baseline", str(root / "results" / "tiny" / "r"), "-o", str(root / "base.json")]
    assert privbench(*baseline).returncode == 0
    (root / "photos").mkdir()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(root / "photos" / "p.png")
    (root / "junk").write_bytes(b"\x00{[: not yaml")  # non-UTF-8: see the reply
    (root / "bad.yaml").write_text("name: bad\ndataset: {name: nothing}\n", encoding="utf-8")
    (root / "empty").mkdir()
    (root / "odd.json").write_text('{"cells": 5, "quality": [1], "suite": {}}', encoding="utf-8")
    (root / "list.json").write_text('[1, "x", null]', encoding="utf-8")
    (root / "victim").mkdir()  # what '../../victim' names from an example's working folder
    (root / "victim" / "data").write_text("keep me", encoding="utf-8")
    return {
        "root": str(root),
        "{run}": str(root / "results" / "tiny" / "r"),
        "{suite}": str(suite),
        "{bad_suite}": str(root / "bad.yaml"),
        "{key}": str(root / "key"),
        "{baseline}": str(root / "base.json"),
        "{photos}": str(root / "photos"),
        "{junk}": str(root / "junk"),
        "{dir}": str(root / "empty"),
        "{missing}": str(root / "missing.yaml"),
        "{json}": str(root / "odd.json"),
        "{json_list}": str(root / "list.json"),
    }


def cli_arguments(command: str) -> st.SearchStrategy[list[str]]:
    """Argument lists for ``command``: its positionals, then some of its flags (repeats
    allowed), each slot a real value or a hostile one."""
    positionals, flags = CLI[command]
    value = st.sampled_from(HOSTILE)

    def slot(kind: str) -> st.SearchStrategy[str]:
        real = {"RUN": "{run}", "SUITE": "{suite}", "PHOTOS": "{photos}", "OUT": "{out}"}
        choices = SLOTS.get(kind, [real.get(kind, "krtio")])
        return st.sampled_from(choices) | (st.nothing() if kind in SLOTS else value)

    def flag(name: str) -> st.SearchStrategy[list[str]]:
        return st.lists(value, min_size=flags[name], max_size=flags[name]).map(
            lambda vs: [name, *vs]
        )

    chosen = st.lists(st.sampled_from(sorted(flags)), max_size=4) if flags else st.just([])
    return st.tuples(
        st.tuples(*(slot(k) for k in positionals)) if positionals else st.just(()),
        chosen.flatmap(lambda names: st.tuples(*(flag(n) for n in names))),
    ).map(lambda t: [command, *t[0], *(a for f in t[1] for a in f)])


@pytest.mark.parametrize("command", sorted(CLI))
@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_cli_arguments_end_in_a_result_or_a_named_error(command, data, cli_world) -> None:
    """Any argument list ends in exit 0, 1 or 2 with short error lines (one per named input
    at most) and no traceback, and touches nothing outside its own folder."""
    import contextlib

    args = data.draw(cli_arguments(command))
    pristine = Path(cli_world["root"])
    root = Path(tempfile.mkdtemp(dir=pristine.parent)) / "world"  # what this example may change
    shutil.copytree(pristine, root, symlinks=True)
    work = root / "cwd" / "here"  # '../../victim' from here is the world's victim
    work.mkdir(parents=True)
    where = {k: v.replace(str(pristine), str(root)) for k, v in cli_world.items()}
    argv = [where.get(a, str(work / "out") if a == "{out}" else a) for a in args]
    with contextlib.chdir(work):
        result = privbench(*argv, env={"PRIVBENCH_KEY": "", "PRIVBENCH_KEY_FILE": ""})
    shown = result.stdout + result.stderr
    assert result.returncode in (0, 1, 2), (argv, result.stderr[-2000:])
    assert "Traceback" not in shown and "a bug in privbench" not in shown, (argv, shown[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) <= len(argv) and all(len(line) <= 1000 for line in errors), (argv, errors)
    for world in (root, pristine):
        assert (world / "victim" / "data").read_text(encoding="utf-8") == "keep me"
    shutil.rmtree(root.parent)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "a" * 300], "File name too long"),  # was an internal OSError
        (["recover", "{photos}", "--", "--defense", "--"], "OUT_DIR: expected one value"),
        (["check", "{run}", "--baseline", "{key}"], "not a privbench baseline"),
        (["check", "{run}", "--baseline", "{json_list}"], "a JSON object is expected"),
    ],
)
def test_what_the_cli_fuzzer_found_is_a_named_error(args, message, cli_world) -> None:
    result = privbench(*(cli_world.get(a, a) for a in args))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
