"""Protected images made, cached and read a shard at a time: the same results as whole sets,
and never more than one shard loaded by a pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import harness.engine.cells
import harness.engine.protect
from harness.engine.runner import RunOptions, run_suite
from harness.engine.shards import ShardedImages
from harness.engine.suite import load_suite
from tests.conftest import write_suite


class CountingLoader:
    """Rows ``[start, stop)`` of a fixed array, counting loads and the rows alive at once."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.loads = data, []

    def __call__(self, rows: slice) -> np.ndarray:
        self.loads.append((rows.start, rows.stop))
        return self.data[rows].copy()


def test_batches_take_and_whole_read_each_shard_once_per_pass() -> None:
    data = np.arange(23 * 2).reshape(23, 2)
    loader = CountingLoader(data)
    images = ShardedImages(23, 6, loader)
    got = list(images.batches(3))
    assert [(s.start, s.stop) for s, _ in got] == [
        (0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 18), (18, 21), (21, 23),
    ]  # fmt: skip
    assert all(np.array_equal(b, data[s]) for s, b in got)
    assert loader.loads == [(0, 6), (6, 12), (12, 18), (18, 23)]
    loader.loads.clear()
    assert np.array_equal(images.take(np.array([20, 1, 19])), data[[20, 1, 19]])
    assert loader.loads == [(0, 6), (18, 23)]  # only the shards holding those rows
    assert np.array_equal(images.whole(), data)


def test_make_builds_only_the_shards_not_stored() -> None:
    loader = CountingLoader(np.zeros((10, 1)))
    images = ShardedImages(10, 4, loader, stored=lambda rows: rows.start == 4)
    images.make()
    assert loader.loads == [(0, 4), (8, 10)]


def test_without_a_cache_shards_are_kept_after_their_first_load() -> None:
    loader = CountingLoader(np.ones((10, 1)))
    images = ShardedImages(10, 4, loader, keep=True)
    images.make()
    list(images.batches(2))
    images.take(np.array([9]))
    assert loader.loads == [(0, 4), (4, 8), (8, 10)]


SUITE = """\
name: shards
seed: 0
dataset: {name: lfw-subset, params: {max_probes: 10}}
recognizers: [yunet, {name: small-cnn, params: {steps: 10, width: 8, input_size: 16}}]
defenses: [none, {name: krtio, params: {alpha: 0.45, block: 4, k: 3}}]
counter_attacks: [none, bss-ica]
metrics: [fooling_rate, detection_rate, ssim, recovery_ssim]
upload: {format: png}
batch_size: 2
"""


def test_a_sharded_run_writes_what_an_unsharded_run_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards of one batch (2 rows) against one shard for the whole set: the same rows, and the
    same per-image records byte for byte (bss-ica fits on the whole pool; k-RTIO's quality
    recovers every shard)."""
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    runs = {}
    for name, batches in (("whole", 1000), ("sharded", 1)):
        monkeypatch.setattr(harness.engine.protect, "SHARD_BATCHES", batches)
        options = RunOptions(
            tmp_path / "out", cache_root=tmp_path / name, progress=False, run_id=name
        )
        runs[name] = run_suite(suite, options)
    whole, sharded = runs["whole"].run_dir, runs["sharded"].run_dir

    def rows(run_dir: Path) -> list[dict]:
        lines = (run_dir / "results.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    assert rows(sharded) == rows(whole) and len(rows(whole)) > 8
    records = sorted(p.relative_to(whole) for p in whole.rglob("records/**/*") if p.is_file())
    assert records and all((whole / r).read_bytes() == (sharded / r).read_bytes() for r in records)
    n_probes = runs["whole"].manifest["dataset"]["sizes"]["probe"]
    entries = {
        name: len([p for p in (tmp_path / name / "protected").rglob("*.npz")]) for name in runs
    }
    assert entries == {"whole": 2, "sharded": 2 * -(-n_probes // 2)}  # per defense config


def test_cpu_bound_recognizers_on_a_background_thread_give_the_same_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a GPU run does with OpenCV recognizers, forced on the CPU: yunet predicts the
    counter-attacked batches on the background thread while small-cnn predicts them here."""
    import threading

    from recognizers.opencv_faces import YuNetDetector

    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    threads: set[str] = set()
    predict = YuNetDetector.predict

    def recording(self, images, ctx):  # type: ignore[no-untyped-def]
        threads.add(threading.current_thread().name)
        return predict(self, images, ctx)

    monkeypatch.setattr(YuNetDetector, "predict", recording)
    plain = run_suite(suite, RunOptions(tmp_path / "o", cache_root=tmp_path / "a", progress=False))
    assert not any(t.startswith("privbench-host") for t in threads)
    threads.clear()
    monkeypatch.setattr(
        harness.engine.cells, "on_host_thread", lambda device, model: model.runs_on_host()
    )
    overlapped = run_suite(
        suite, RunOptions(tmp_path / "o", cache_root=tmp_path / "b", progress=False)
    )
    assert any(t.startswith("privbench-host") for t in threads)
    assert overlapped.rows == plain.rows
    records = sorted(p.relative_to(plain.run_dir) for p in plain.run_dir.rglob("records/**/*"))
    for r in records:
        if (plain.run_dir / r).is_file():
            assert (plain.run_dir / r).read_bytes() == (overlapped.run_dir / r).read_bytes()


def test_a_recognizer_failing_on_the_background_thread_fails_only_its_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from recognizers.opencv_faces import YuNetDetector

    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    predict = YuNetDetector.predict

    def failing(self, images, ctx):  # type: ignore[no-untyped-def]
        if threading.current_thread().name.startswith("privbench-host"):
            raise RuntimeError("model crashed")
        return predict(self, images, ctx)

    monkeypatch.setattr(YuNetDetector, "predict", failing)
    monkeypatch.setattr(
        harness.engine.cells, "on_host_thread", lambda device, model: model.runs_on_host()
    )
    result = run_suite(suite, RunOptions(tmp_path / "o", cache_root=tmp_path / "c", progress=False))
    failed = sorted(f["name"] for f in result.failures)
    defenses = ("krtio(alpha=0.45, block=4, k=3)", "none")
    assert failed == [f"{d} × {a} × yunet" for d in defenses for a in ("bss-ica", "none")]
    assert all("model crashed" in f["error"] for f in result.failures)
    assert any(str(r["recognizer"]).startswith("small-cnn") for r in result.rows)
