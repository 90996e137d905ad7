"""What the runner hands to methods: fresh work to time, protected photos to adapt on, and a
flag on learned defenses that missed their own target."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from harness.api.contracts import Context, CounterAttack, Defense, ImageSet, Recognizer
from harness.api.registry import ATTACKS, DATASETS, DEFENSES
from harness.cli.wiring import run_with_leaderboard
from harness.engine.execute import TIMED_BATCHES
from harness.engine.runner import RunOptions
from harness.engine.suite import load_suite
from harness.toolkit.imaging import to_tensor, to_uint8
from tests.conftest import write_suite


class RecordingDefense(Defense):
    """Brightens by a fixed step and records every protect call."""

    calls: ClassVar[list[tuple[list[str], bool]]] = []

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        RecordingDefense.calls.append((list(ids), ctx.cache.enabled))
        return (images + 0.2).clamp(0, 1)


class RecordingAdaptation(CounterAttack):
    """A model-space counter-attack that records what it is asked to adapt on."""

    seen: ClassVar[list[ImageSet]] = []

    def adapt(self, recognizer: Recognizer, protected_train: ImageSet, ctx: Context) -> Recognizer:
        RecordingAdaptation.seen.append(protected_train)
        return recognizer


DEFENSES.add("test-recording", RecordingDefense)
ATTACKS.add("test-adapt", RecordingAdaptation)

SUITE = """\
name: protocol
dataset: {name: lfw-subset, params: {max_probes: 10}}
recognizers: [{name: small-cnn, params: {steps: 10, width: 4, input_size: 16}}]
defenses: [test-recording]
counter_attacks: [none, test-adapt]
metrics: [fooling_rate, latency]
batch_size: 4
"""


def _run(tmp_path: Path, text: str = SUITE, **options):
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    return run_with_leaderboard(
        suite,
        RunOptions(
            out_root=tmp_path / "r", progress=False, cache_root=tmp_path / "cache", **options
        ),
    )


def test_latency_times_fresh_ids_without_cache_io(tmp_path: Path) -> None:
    RecordingDefense.calls.clear()
    result = _run(tmp_path)
    probe_ids = set(DATASETS.create("lfw-subset", {"max_probes": 10}).load(0).probe.ids)
    production = [c for c in RecordingDefense.calls if set(c[0]) <= probe_ids]
    timing = [c for c in RecordingDefense.calls if "#timing-" in c[0][0]]
    assert sum(len(ids) for ids, _ in production) == 10  # each probe protected once
    # one warm-up and then the timed batches, each of batch_size images never seen before
    assert len(timing) == 1 + TIMED_BATCHES
    timed_ids = [i for ids, _ in timing for i in ids]
    assert len(timed_ids) == len(set(timed_ids)) == 4 * len(timing)
    assert not any(enabled for _, enabled in timing)  # no cache I/O inside the timer
    row = next(r for r in result.rows if r["metric"] == "latency")
    assert row["n"] == TIMED_BATCHES and row["batch_images"] == 4
    assert row["ci_level"] >= 0.95 and row["measured_on"]["cpu"]


def test_no_timing_when_no_metric_asks_for_it(tmp_path: Path) -> None:
    RecordingDefense.calls.clear()
    text = SUITE.replace("metrics: [fooling_rate, latency]", "metrics: [fooling_rate]")
    _run(tmp_path, text.replace("counter_attacks: [none, test-adapt]", "counter_attacks: [none]"))
    assert sum(len(ids) for ids, _ in RecordingDefense.calls) == 10  # the probes, once


def test_an_adaptive_counter_attack_adapts_on_the_protected_fit_split(tmp_path: Path, ctx) -> None:
    RecordingAdaptation.seen.clear()
    _run(tmp_path)
    (seen,) = RecordingAdaptation.seen  # one recognizer, one cell
    fit = DATASETS.create("lfw-subset", {"max_probes": 10}).load(0).fit
    expected = to_uint8(RecordingDefense().protect(to_tensor(fit.images), fit.ids, ctx))
    np.testing.assert_array_equal(seen.images, expected)  # protected and uploaded, not clean
    assert not np.array_equal(seen.images, to_uint8(to_tensor(fit.images)))
    np.testing.assert_array_equal(seen.labels, fit.labels)
    assert seen.ids == fit.ids
    # an oblivious counter-attack never needs it
    assert RecordingAdaptation.adapts() and not ATTACKS.get("jpeg").adapts()


def test_a_learned_defense_that_misses_its_target_is_flagged(tmp_path: Path) -> None:
    text = """\
name: unmet
dataset: {name: lfw-subset, params: {fit_faces: 12, max_probes: 20}}
recognizers: [yunet]
defenses:
  - {name: uep, params: {p: 1.0, size: 16, width: 4, cnn_steps: 20, steps: 2, search_rounds: 1}}
metrics: [fooling_rate, reached_p]
"""
    result = _run(tmp_path, text)
    row = next(r for r in result.rows if r["metric"] == "reached_p")
    assert row["value"] == 0.0 and row["n"] == 12 and row["target_share"] == 1.0
    assert row["fooled_share"] < 1.0
    board = (result.run_dir / "leaderboard.md").read_text()
    assert "reached p = NO" in board and "missed its own target" in board
