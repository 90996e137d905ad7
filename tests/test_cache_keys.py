"""The engine's cache keys: every kind listed once with what it depends on, made only in
harness/engine/cache_keys.py, and each kind's parts as they have always been (a change would
orphan every cached result: a cached run must still hit)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import harness.engine.cache_keys as cache_keys
from harness.core.cache import content_key
from harness.engine.cache_keys import KEY_KINDS

ROOT = Path(__file__).resolve().parent.parent
# Cache methods whose first argument is a kind and whose second is the key's parts (or a key).
CACHE_CALLS = {"arrays", "cached_arrays", "store_arrays", "stored_arrays", "torch_state", "file"}
KEY_CALLS = CACHE_CALLS | {"key", "content_key"}
# Keys made below the engine's layer, which cannot import it (methods make their own, too).
OUTSIDE = {("harness/api/contracts.py", "weights")}


def _key_calls(path: Path) -> list[tuple[str, ast.Call]]:
    """(kind, call) for every call of a cache method or content_key with a literal kind."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        kind = node.args[0]
        if name in KEY_CALLS and isinstance(kind, ast.Constant) and isinstance(kind.value, str):
            found.append((kind.value, node))
    return found


def test_every_kind_is_listed_once_with_what_it_depends_on() -> None:
    kinds = [k.kind for k in KEY_KINDS]
    assert len(kinds) == len(set(kinds))
    assert {"recognizer", "predictions", "protected", "quality", "timing", "cell"} <= set(kinds)
    for k in KEY_KINDS:
        assert k.description.strip(), k.kind
        assert callable(k.make) and k.make.__module__ == cache_keys.__name__, k.kind


def test_the_engine_stores_only_the_kinds_listed() -> None:
    listed = {k.kind for k in KEY_KINDS}
    used = {
        kind
        for path in sorted((ROOT / "harness" / "engine").glob("*.py"))
        for kind, _ in _key_calls(path)
    }
    assert used and used <= listed, used - listed


def test_no_key_is_assembled_outside_cache_keys() -> None:
    """In harness/, keys are hashed (content_key) and parts written out only in cache_keys.py;
    a cache call elsewhere passes parts that a function there made."""
    found = set()
    for path in sorted((ROOT / "harness").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("harness/core/cache.py", "harness/engine/cache_keys.py"):
            continue
        for kind, call in _key_calls(path):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            literal = len(call.args) > 1 and isinstance(call.args[1], (ast.Dict, ast.DictComp))
            if name == "content_key" or literal:
                found.add((rel, kind))
    assert found == OUTSIDE


@pytest.fixture
def identities(monkeypatch: pytest.MonkeyPatch) -> None:
    """A method's identity as a readable string, so the parts can be written out."""

    def identity(method: object, exclude: tuple[str, ...] = ()) -> str:
        return f"id({method}, exclude={list(exclude)})"

    monkeypatch.setattr(cache_keys, "method_identity", identity)


def test_each_kind_has_the_parts_it_always_had(identities: None) -> None:
    keyring = SimpleNamespace(key_id=lambda: "kid")
    ctx = SimpleNamespace(seed=7, keyring=keyring)
    keyed = SimpleNamespace(keyed=True)
    upload = {"format": "png", "quality": None}
    parts = cache_keys.protected_parts(keyed, "fp", "probe", ctx, upload)
    assert parts == {
        "defense": f"id({keyed}, exclude=[])",
        "split": "fp",
        "role": "probe",
        "seed": 7,
        "upload": upload,
        "key_id": "kid",
    }
    plain = SimpleNamespace(keyed=False)
    assert "key_id" not in cache_keys.protected_parts(plain, "fp", "fit", ctx, upload)
    assert cache_keys.protected_identity(parts) == content_key("protected", parts)
    assert cache_keys.protected_shard_parts(parts, slice(8, 16)) == {**parts, "rows": [8, 16]}
    assert cache_keys.predictions_parts("r", "negatives") == {"recognizer": "r", "on": "negatives"}
    assert cache_keys.quality_parts("p", {"ssim": "m"}) == {
        "protected": "p",
        "metrics": {"ssim": "id(m, exclude=[])"},
    }
    assert cache_keys.timing_parts("p", {"cpu": "x"}, {"version": 2}) == {
        "protected": "p",
        "host": {"cpu": "x"},
        "protocol": {"version": 2},
    }
    idx = np.array([1, 5], dtype=np.int64)
    assert cache_keys.sample_parts("p", idx) == {"protected": "p", "idx": [1, 5]}
    assert cache_keys.countered_sample_parts("p", "a", idx) == {
        "protected": "p",
        "attack": "id(a, exclude=[])",
        "idx": [1, 5],
    }
    assert cache_keys.cell_parts("p", "a", "r", None) == {
        "protected": "p",
        "attack": "id(a, exclude=[])",
        "recognizer": "r",
        "adapted_on": None,
    }
    assert cache_keys.recognizer_identity("m", "fp", 7, "fp32") == content_key(
        "recognizer",
        {"state": "id(m, exclude=['reference'])", "split": "fp", "seed": 7, "precision": "fp32"},
    )


def test_a_keyed_defense_without_a_key_is_refused(identities: None) -> None:
    from harness.core.errors import PrivbenchError

    ctx = SimpleNamespace(seed=0, keyring=None)
    with pytest.raises(PrivbenchError, match="keyed but the run has no key"):
        cache_keys.protected_parts(SimpleNamespace(keyed=True), "fp", "probe", ctx, {})


def test_the_hash_of_parts_is_pinned() -> None:
    """content_key itself: canonical JSON of the kind and parts, sha256."""
    parts = {"defense": "d", "split": "s", "role": "probe", "seed": 0, "upload": {"format": "png"}}
    assert cache_keys.protected_identity(parts) == PINNED


PINNED = "f371c86af5ef982e92217913688a4bed8450f9b9274ae215816e346497e3df65"
