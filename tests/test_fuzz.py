"""Fuzzing: mutated suites and random photo files never end in a traceback.

Hypothesis runs derandomised (the same examples on every machine) and with a bounded number of
examples, so CI time stays fixed.
"""

from __future__ import annotations

import math
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


@settings(FUZZ, max_examples=60)
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
