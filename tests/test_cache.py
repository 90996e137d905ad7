"""The cache: every key holds what its result depends on, and damaged entries are recomputed."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import harness.core.cache as cache_module
from harness.core.cache import DIGEST_SUFFIX, Cache
from harness.core.code_version import source_digest
from harness.core.keys import Keyring
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from tests.conftest import write_suite

KRTIO_SUITE = """\
name: keyed
dataset: {name: lfw-subset, params: {max_probes: 16}}
recognizers: [yunet]
defenses: [{name: krtio, params: {alpha: 0.45, block: 4, overlays: OVERLAYS}}]
metrics: [fooling_rate, recovery_psnr]
"""


def _run(suite_path: Path, root: Path, run_id: str, **options):
    suite = load_suite(suite_path)
    opts = {"out_root": root / "results", "progress": False, "cache_root": root / "cache"}
    return run_suite(suite, RunOptions(run_id=run_id, **{**opts, **options}))


def _values(result, skip=("latency",)) -> dict[tuple, float | None]:
    return {
        (r["scope"], r["defense"], r["counter_attack"], r["recognizer"], r["metric"]): r["value"]
        for r in result.rows
        if r["metric"] not in skip
    }


def _overlays(folder: Path) -> Path:
    folder.mkdir()
    for name in ("coffee", "rocket", "chelsea", "astronaut"):
        Image.fromarray(getattr(data, name)()[:64, :64]).save(folder / f"{name}.png")
    return folder


def test_a_keyed_defense_is_never_served_from_another_key(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "k.yaml", KRTIO_SUITE.replace("OVERLAYS", "scenes"))
    first = _run(suite, tmp_path, "benchmark-key")
    mine = Keyring(bytes(range(32)), source="test key")
    cached = _run(suite, tmp_path, "my-key", keyring=mine)
    fresh = _run(suite, tmp_path, "my-key-fresh", keyring=mine, use_cache=False)
    recovery = ("defense", "krtio(alpha=0.45, block=4, overlays=scenes)", None, None)
    # the protected images of the other key were not reused: recovery with this key is exact
    assert _values(cached)[(*recovery, "recovery_psnr")] > 50
    assert _values(cached) == _values(fresh)
    assert _values(first)[(*recovery, "recovery_psnr")] > 50
    # and the same key does hit the cache
    again = _run(suite, tmp_path, "my-key-again", keyring=mine)
    assert again.manifest["cache"]["misses"] == 0 and _values(again) == _values(fresh)


def test_changed_overlay_images_miss_the_cache(tmp_path: Path) -> None:
    folder = _overlays(tmp_path / "overlays")
    suite = write_suite(tmp_path / "k.yaml", KRTIO_SUITE.replace("OVERLAYS", str(folder)))
    _run(suite, tmp_path, "before")
    Image.fromarray(data.hubble_deep_field()[:64, :64]).save(folder / "rocket.png")
    after = _run(suite, tmp_path, "after")
    fresh = _run(suite, tmp_path, "fresh", use_cache=False)
    assert _values(after) == _values(fresh)
    entries = sorted((tmp_path / "cache" / "protected").rglob("*.npz"))
    assert len(entries) == 2  # the new pool's protected images are a new entry
    with np.load(entries[0]) as a, np.load(entries[1]) as b:
        assert not np.array_equal(a["protected"], b["protected"])


def test_every_key_holds_the_code_and_the_compute_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = Cache(tmp_path, device="cpu")
    other = Cache(tmp_path, device="cpu")
    other.environment = {**other.environment, "compute": {"device": "cuda", "gpu": "H100"}}
    released = Cache(tmp_path, device="cpu")
    released.environment = {**released.environment, "code": {"privbench": "9", "packages": {}}}
    parts = {"defense": "d", "split": "s"}
    calls = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(3)}

    for cache in (cpu, other, released, cpu):
        cache.arrays("k", parts, compute)
    assert len(calls) == 3 and cpu.hits == 1  # only the same code on the same device hits
    before = cpu.key("k", parts)
    # the code version of the modules that compute the kind (edited modules: a new version)
    monkeypatch.setattr(cache_module, "kind_code_version", lambda kind: f"edited {kind}")
    assert cpu.key("k", parts) != before
    cpu.arrays("k", parts, compute)
    assert len(calls) == 4


def test_source_digest_changes_with_any_source_file(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("y = 2\n")
    first = source_digest([pkg])
    (pkg / "b.py").write_text("y = 3\n")
    assert source_digest([pkg]) != first
    (pkg / "b.py").write_text("y = 2\n")
    assert source_digest([pkg]) == first


def test_the_runner_keys_its_cache_by_the_run_device(tmp_path: Path) -> None:
    from harness.core.keys import benchmark_key
    from harness.engine.execute import UnitRunner

    suite = load_suite(write_suite(tmp_path / "k.yaml", KRTIO_SUITE.replace("OVERLAYS", "scenes")))
    runner = UnitRunner(suite, torch.device("cpu"), benchmark_key(suite.seed), tmp_path)
    assert runner.cache.environment["compute"]["device"] == "cpu"
    assert "cpu_capability" in runner.cache.environment["compute"]


def test_a_torch_entry_garbled_into_loadable_garbage_is_recomputed(tmp_path: Path, capsys) -> None:
    cache = Cache(tmp_path)
    state = {"w": torch.linspace(-1, 1, 4096)}
    cache.torch_state("model", {"m": 1}, lambda: state)
    path = next((tmp_path / "model").rglob("*.pt"))
    raw = bytearray(path.read_bytes())
    at = int(len(raw) * 0.3)
    raw[at : at + 256] = bytes((37 * i + 11) % 256 for i in range(256))
    path.write_bytes(bytes(raw))
    # the scenario is real: torch.load accepts the garbled file and returns different weights
    garbage = torch.load(io.BytesIO(bytes(raw)), weights_only=True)["w"]
    assert not torch.equal(garbage, state["w"])
    again = Cache(tmp_path)
    got = again.torch_state("model", {"m": 1}, lambda: state)
    assert torch.equal(got["w"], state["w"]) and again.damaged == [str(path)]
    assert "does not match its checksum; recomputing" in capsys.readouterr().err
    third = Cache(tmp_path)
    third.torch_state("model", {"m": 1}, lambda: pytest.fail("the entry was rewritten"))
    assert third.hits == 1 and third.damaged == []


def test_a_missing_checksum_or_unparsable_entry_is_recomputed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.arrays("a", {"i": 1}, lambda: {"x": np.ones(3)})
    cache.arrays("a", {"i": 2}, lambda: {"x": np.ones(3)})
    one, two = (cache.path("a", cache.key("a", {"i": i}), ".npz") for i in (1, 2))
    one.with_name(one.name + DIGEST_SUFFIX).unlink()
    # an entry whose checksum matches but which is not an npz (written by other code)
    two.write_bytes(b"not a zip")
    two.with_name(two.name + DIGEST_SUFFIX).write_text(
        __import__("hashlib").sha256(b"not a zip").hexdigest()
    )
    again = Cache(tmp_path)
    for i in (1, 2):
        assert not again.arrays("a", {"i": i}, lambda: {"x": np.zeros(3)})["x"].any()
    assert sorted(again.damaged) == sorted([str(one), str(two)]) and again.misses == 2


TINY = """\
name: tiny-cache
dataset: {name: lfw-subset, params: {max_probes: 12}}
recognizers:
  - sface
  - {name: small-cnn, params: {steps: 20, width: 8, input_size: 16}}
defenses: [none, {name: naive-overlay, params: {alpha: 0.5}}]
counter_attacks: [none]
metrics: [fooling_rate, ssim, latency]
batch_size: 6
"""


def test_damaged_entries_of_every_kind_are_recomputed_and_the_run_completes(
    tmp_path: Path, capsys
) -> None:
    suite = write_suite(tmp_path / "t.yaml", TINY)
    clean = _run(suite, tmp_path, "clean")
    cache = tmp_path / "cache"
    damaged = []

    def one(kind: str, suffix: str) -> Path:
        path = sorted((cache / kind).rglob(f"*{suffix}"))[0]
        damaged.append(str(path))
        return path

    model = one("small-cnn", ".pt")  # garbled inside: torch.load would accept it
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 256] = bytes(range(256))
    model.write_bytes(bytes(raw))
    gallery = one("gallery", ".npz")
    gallery.write_bytes(b"")  # emptied
    cell = one("cell", ".npz")
    cell.write_bytes(cell.read_bytes()[:100])  # truncated
    # every other cell is dropped, so every defense's protected images are read again (a
    # damaged entry is found only when read; which defense's entries sort first is up to
    # the hashes of the keys, which hold the code's digest)
    for other in (cache / "cell").rglob("*"):
        if other.is_file() and other.name not in (cell.name, cell.name + DIGEST_SUFFIX):
            other.unlink()
    protected = one("protected", ".npz")
    protected.with_name(protected.name + DIGEST_SUFFIX).unlink()  # checksum lost
    timing = one("timing", ".npz")
    raw = bytearray(timing.read_bytes())
    raw[-40] ^= 0xFF
    timing.write_bytes(bytes(raw))
    # a model is read only to predict what is not cached: drop the clean predictions
    shutil.rmtree(cache / "predictions")
    capsys.readouterr()
    repaired = _run(suite, tmp_path, "repaired")
    err = capsys.readouterr().err
    assert repaired.manifest["status"] == "complete" and not repaired.failures
    assert sorted(repaired.manifest["cache"]["damaged_and_recomputed"]) == sorted(damaged)
    assert all(f"{p} " in err for p in damaged) and "Traceback" not in err
    assert _values(repaired) == _values(clean)
    third = _run(suite, tmp_path, "third")
    assert third.manifest["cache"]["damaged_and_recomputed"] == []
    assert third.manifest["cache"]["misses"] == 0


def test_a_timing_is_remeasured_on_another_host_and_says_where_it_was_made(
    tmp_path: Path, monkeypatch
) -> None:
    suite = write_suite(tmp_path / "t.yaml", TINY)
    first = _run(suite, tmp_path, "first")
    again = _run(suite, tmp_path, "again")

    def latency(result) -> dict:
        return next(r for r in result.rows if r["metric"] == "latency" and r["defense"] == "none")

    assert not latency(first)["cached"] and latency(again)["cached"]
    assert latency(again)["measured_at"] == latency(first)["measured_at"]
    assert latency(again)["value"] == latency(first)["value"]
    import harness.engine.latency

    elsewhere = {"device": "cpu", "cpu": "another CPU", "cores": 64, "torch_threads": 64}
    monkeypatch.setattr(harness.engine.latency, "host_identity", lambda device: elsewhere)
    moved = _run(suite, tmp_path, "moved")
    assert not latency(moved)["cached"] and latency(moved)["measured_on"] == elsewhere
    # only the timings were measured again: images, models and cells came from the cache
    assert moved.manifest["cache"]["misses"] == 2  # one timing per defense config
    manifest = json.loads((moved.run_dir / "manifest.json").read_text())
    assert manifest["cache"]["hits"] > 0


def test_a_fully_cached_run_fits_no_recognizer_and_its_plan_knew_every_cell(
    tmp_path: Path, monkeypatch
) -> None:
    """The plan derives every cell's key without fitting anything; after a cold run the cache
    holds exactly those keys, and a re-run reads them without fitting a single model."""
    from harness.api.contracts import Recognizer
    from harness.api.registry import RECOGNIZERS

    suite = write_suite(tmp_path / "t.yaml", TINY)
    cold = _run(suite, tmp_path, "cold")
    assert cold.manifest["plan"]["cells_cached_at_start"] == 0
    fitted: list[str] = []
    for name in ("sface", "small-cnn"):
        cls = RECOGNIZERS.get(name)
        original = cls.fit

        def fit(self: Recognizer, *args, _original=original, _name=name) -> None:
            fitted.append(_name)
            _original(self, *args)

        monkeypatch.setattr(cls, "fit", fit)
    warm = _run(suite, tmp_path, "warm")
    assert warm.manifest["plan"]["cells_cached_at_start"] == load_suite(suite).n_cells == 4
    assert warm.manifest["cache"]["misses"] == 0 and fitted == []
    assert _values(warm) == _values(cold)
    shutil.rmtree(tmp_path / "cache" / "cell")  # now the cells need the models again
    again = _run(suite, tmp_path, "again")
    assert sorted(fitted) == ["sface", "small-cnn"] and _values(again) == _values(cold)
