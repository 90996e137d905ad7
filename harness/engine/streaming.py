"""Feeding a counter-attack's batches to the recognizers still to predict them: one pass over
the counter-attacked probes, each batch moved to the device once and given to every recognizer,
the CPU-bound ones of a GPU run on a background thread."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from harness.api.contracts import Context, CounterAttack, Recognizer
from harness.engine.inference import predict_batch
from harness.engine.results import failure
from harness.engine.shards import ShardedImages
from harness.toolkit.imaging import to_tensor, to_uint8

# How many counter-attacked batches a CPU-bound recognizer of a GPU run may lag behind
# (each waiting batch stays on the GPU).
HOST_BATCHES_AHEAD = 2


class CounterAttackFailed(Exception):
    """The error recorded when the counter-attack itself failed while its batches were made,
    so that the failure is recorded against the counter-attack and not against a recognizer."""


def on_host_thread(device: torch.device, recognizer: Recognizer) -> bool:
    """Whether ``recognizer`` is fed from the background thread: on a GPU run, one whose
    predictions run on the CPU anyway (OpenCV), so the GPU does not wait for it."""
    return device.type == "cuda" and recognizer.runs_on_host()


def countered_batches(
    attack: CounterAttack, protected: ShardedImages, ctx: Context
) -> Iterator[tuple[slice, torch.Tensor]]:
    """The counter-attacked probes, one batch at a time on the run's device, read a shard
    at a time: only a counter-attack that fits on the whole protected pool (blind source
    separation) ever holds it whole, as one float tensor."""
    if type(attack).fit is not CounterAttack.fit:
        attack.fit(to_tensor(protected.whole(), ctx.device), ctx)
    for s, uploaded in protected.batches(ctx.batch_size):
        yield s, attack.transform(to_tensor(uploaded, ctx.device), ctx).clamp(0, 1)


@dataclass
class Streamed:
    """What a pass produced: each recognizer's predictions by its index (those that finished),
    the sample rows after the counter-attack, the recognizers that failed, and the
    counter-attack's own failure (then there are no predictions and no samples)."""

    predictions: dict[int, np.ndarray]
    samples: np.ndarray | None
    errors: dict[int, dict[str, str]]
    attack_error: dict[str, str] | None = None


class Stream:
    """One pass over a counter-attack's batches. ``names`` are the cells' names of the
    recognizers fed (by index), for their failures; ``sample_index`` the rows the report
    shows."""

    def __init__(
        self, ctx: Context, precision: str, sample_index: np.ndarray, names: dict[int, str]
    ) -> None:
        self.ctx, self.precision, self.idx, self.names = ctx, precision, sample_index, names
        self.parts: dict[int, list[np.ndarray]] = {i: [] for i in names}
        self.errors: dict[int, dict[str, str]] = {}
        self.sample_rows: dict[int, np.ndarray] = {}

    def run(
        self,
        batches: Iterator[tuple[slice, torch.Tensor]],
        main: dict[int, Recognizer],
        host: dict[int, Recognizer],
        attack_name: str,
    ) -> Streamed:
        """Every recognizer of ``main`` (here) and ``host`` (on the background thread, at most
        :data:`HOST_BATCHES_AHEAD` batches behind, in batch order) predicts each batch; one
        that fails drops out with its error, and the sample rows are kept."""
        in_flight: deque[Future[None]] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="privbench-host") as background:
            try:
                attack_error = self._feed(batches, main, host, background, in_flight, attack_name)
            finally:
                for done in in_flight:  # the thread's own errors are recorded in ``errors``
                    done.result()
        if attack_error is not None:
            return Streamed({}, None, self.errors, attack_error)
        computed = {
            i: np.concatenate(p) if p else np.zeros(0, np.int64) for i, p in self.parts.items()
        }
        idx = self.idx
        samples = np.stack([self.sample_rows[int(j)] for j in idx]) if self.sample_rows else None
        return Streamed(computed, samples, self.errors)

    def _feed(
        self,
        batches: Iterator[tuple[slice, torch.Tensor]],
        main: dict[int, Recognizer],
        host: dict[int, Recognizer],
        background: ThreadPoolExecutor,
        in_flight: deque[Future[None]],
        attack_name: str,
    ) -> dict[str, str] | None:
        """Hand every batch to the recognizers; the counter-attack's failure if it fails."""
        while True:
            try:
                item = next(batches, None)
            except Exception as exc:
                error = CounterAttackFailed(f"{type(exc).__name__}: {exc}")
                return failure("counter-attack", attack_name, error)
            if item is None:
                return None
            s, x = item
            self._keep_samples(s, x)
            if host:
                while len(in_flight) >= HOST_BATCHES_AHEAD:
                    in_flight.popleft().result()
                in_flight.append(background.submit(self._predict, host, x))
            self._predict(main, x)

    def _keep_samples(self, s: slice, x: torch.Tensor) -> None:
        idx = self.idx
        for j in idx[(idx >= s.start) & (idx < s.stop)]:
            row = x[int(j) - s.start : int(j) - s.start + 1]
            self.sample_rows[int(j)] = to_uint8(row)[0]

    def _predict(self, models: dict[int, Recognizer], x: torch.Tensor) -> None:
        for i, model in list(models.items()):
            try:
                pred = predict_batch(model, x, self.ctx, self.precision)
                self.parts[i].append(pred)
            except Exception as exc:  # this recognizer failed on these images: one cell
                self.errors[i] = failure("cell", self.names[i], exc)
                del models[i], self.parts[i]
