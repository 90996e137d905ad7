"""The unit runner's pieces: one pass over a counter-attack's batches (what a failing
recognizer or counter-attack leaves behind), and the surface the runner imports."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

import harness.engine.execute as execute
from harness.api.contracts import Context, CounterAttack, Recognizer
from harness.api.registry import ATTACKS
from harness.engine.runner import RunOptions, run_suite
from harness.engine.streaming import Stream
from harness.engine.suite import load_suite
from tests.conftest import write_suite


class Brightest(Recognizer):
    """Answers the row of its batch's brightest image for every image (any deterministic
    function of the batch would do); fails on a batch whose first pixel is ``fail_from`` or
    brighter."""

    kind: ClassVar[str] = "classifier"

    def __init__(self, fail_from: float | None = None) -> None:
        self.fail_from = fail_from
        self.threads: set[str] = set()

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        if self.fail_from is not None and float(images[0, 0, 0, 0]) >= self.fail_from:
            raise ValueError("cannot see")
        return np.full(len(images), int(images.flatten(1).mean(1).argmax()))


def _batches(n: int, fail_at: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """``n`` batches of two 2×2 images, image ``2b + i`` filled with ``(2b + i) / 10``; the
    counter-attack fails when making batch ``fail_at``."""
    for b in range(n):
        if b == fail_at:
            raise RuntimeError("the counter-attack broke")
        values = torch.tensor([2 * b, 2 * b + 1], dtype=torch.float32) / 10
        yield slice(2 * b, 2 * b + 2), values.view(2, 1, 1, 1).expand(2, 3, 2, 2).clone()


def _stream(ctx: Context, names: dict[int, str]) -> Stream:
    return Stream(ctx, "fp32", np.array([1, 4], dtype=np.int64), names)


def test_a_pass_gives_each_recognizer_its_predictions_and_keeps_the_sample_rows(ctx) -> None:
    here, there = Brightest(), Brightest()
    streamed = _stream(ctx, {0: "a", 2: "b"}).run(_batches(3), {0: here}, {2: there}, "x")
    assert streamed.attack_error is None and streamed.errors == {}
    assert {i: p.tolist() for i, p in streamed.predictions.items()} == {
        0: [1, 1, 1, 1, 1, 1],
        2: [1, 1, 1, 1, 1, 1],
    }
    assert streamed.samples is not None and streamed.samples.shape == (2, 2, 2, 3)
    assert streamed.samples[:, 0, 0, 0].tolist() == [round(0.1 * 255), round(0.4 * 255)]
    assert all(t.startswith("privbench-host") for t in there.threads)
    assert not any(t.startswith("privbench-host") for t in here.threads)


def test_a_recognizer_that_fails_drops_out_and_the_others_go_on(ctx) -> None:
    failing, fine = Brightest(fail_from=0.15), Brightest()
    names = {0: "d × a × failing", 1: "d × a × fine"}
    streamed = _stream(ctx, names).run(_batches(3), {0: failing, 1: fine}, {}, "d × a")
    assert list(streamed.predictions) == [1] and len(streamed.predictions[1]) == 6
    error = streamed.errors[0]
    assert (error["scope"], error["name"]) == ("cell", "d × a × failing")
    assert error["error"] == "ValueError: cannot see"


def test_a_counter_attack_that_fails_leaves_no_predictions_and_says_so(ctx) -> None:
    """Recorded, not raised: the failure is the counter-attack's, and a recognizer that failed
    on an earlier batch keeps its own failure."""
    failing, fine = Brightest(fail_from=0.0), Brightest()
    names = {0: "d × a × failing", 1: "d × a × fine"}
    streamed = _stream(ctx, names).run(_batches(3, fail_at=1), {0: failing}, {1: fine}, "d × a")
    assert streamed.predictions == {} and streamed.samples is None
    assert streamed.attack_error is not None
    assert (streamed.attack_error["scope"], streamed.attack_error["name"]) == (
        "counter-attack",
        "d × a",
    )
    assert streamed.attack_error["error"] == (
        "CounterAttackFailed: RuntimeError: the counter-attack broke"
    )
    assert list(streamed.errors) == [0]


class BreaksOnTransform(CounterAttack):
    """Fails whenever it transforms."""

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        raise RuntimeError("the counter-attack broke")


ATTACKS.add("test-execute-breaks", BreaksOnTransform)


def test_a_run_records_a_broken_counter_attack_as_it_always_did(tmp_path: Path) -> None:
    text = (
        "name: broken\ndataset: {name: lfw-subset, params: {max_probes: 4}}\n"
        "recognizers: [yunet]\ndefenses: [none]\ncounter_attacks: [none, test-execute-breaks]\n"
        "metrics: [detection_rate]\n"
    )
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    options = RunOptions(tmp_path / "out", cache_root=tmp_path / "c", progress=False)
    result = run_suite(suite, options)
    assert [(f["scope"], f["name"], f["error"]) for f in result.failures] == [
        (
            "counter-attack",
            "none × test-execute-breaks",
            "CounterAttackFailed: RuntimeError: the counter-attack broke",
        )
    ]
    assert {r["counter_attack"] for r in result.rows if r["scope"] == "cell"} == {"none"}


@pytest.mark.parametrize("name", execute.__all__)
def test_what_the_runner_imports_from_execute_is_there(name: str) -> None:
    assert getattr(execute, name) is not None
