"""Image sets too large to hold at once: made, cached and read one shard of rows at a time.

A defense's uploaded probes are as large as the data set itself (512 × 512 photos: 786 kB
each), and a unit reads them once for quality and once per counter-attack. Kept whole, a run of
10,000 such photos holds 7.9 GB per defense config and as much again while the cache encodes
them; as shards, it holds one shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

# Rows per shard, in batches: large enough that a shard's cache entry amortises its checksum
# and file, small enough that one shard of 512 × 512 photos at batch 64 stays near 400 MB.
SHARD_BATCHES = 8


class ShardedImages:
    """``n`` rows in shards of ``shard`` rows: ``load(rows)`` makes or reads one shard (a slice
    of row indices) as an array; ``stored(rows)`` says whether it can be read rather than made.
    Each pass loads each shard once and drops it before the next; with ``keep`` (no cache to
    read them back from) shards stay in memory after their first load."""

    def __init__(
        self,
        n: int,
        shard: int,
        load: Callable[[slice], np.ndarray],
        stored: Callable[[slice], bool] = lambda rows: False,
        keep: bool = False,
    ) -> None:
        if shard < 1:
            raise ValueError(f"shard size must be positive, got {shard}")
        self.n, self.shard, self._load, self._stored, self._keep = n, shard, load, stored, keep
        self._kept: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n

    def _rows(self, start: int) -> np.ndarray:
        if start in self._kept:
            return self._kept[start]
        rows = self._load(self._slice(start))
        if self._keep:
            self._kept[start] = rows
        return rows

    def make(self) -> None:
        """Make every shard not stored yet (so that making fails here, not in a later reader),
        without reading the stored ones."""
        for start in range(0, self.n, self.shard):
            if start not in self._kept and not self._stored(self._slice(start)):
                self._rows(start)

    def _slice(self, start: int) -> slice:
        return slice(start, min(start + self.shard, self.n))

    def shards(self) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, their images) for every shard, in order."""
        for start in range(0, self.n, self.shard):
            yield self._slice(start), self._rows(start)

    def batches(self, size: int) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, their images) in batches of ``size`` rows, never crossing a shard boundary
        (shards are whole batches when ``shard`` is a multiple of ``size``)."""
        for rows, images in self.shards():
            for b in range(0, len(images), size):
                part = images[b : b + size]
                yield slice(rows.start + b, rows.start + b + len(part)), part

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows ``index`` (any order), loading only the shards that hold them."""
        index = np.asarray(index, dtype=np.int64)
        out: np.ndarray | None = None
        for start in np.unique(index // self.shard * self.shard).tolist():
            images = self._rows(start)
            if out is None:
                out = np.empty((len(index), *images.shape[1:]), dtype=images.dtype)
            inside = (index >= start) & (index < start + len(images))
            out[inside] = images[index[inside] - start]
        if out is None:
            raise ValueError("take() needs at least one row index")
        return out

    def whole(self) -> np.ndarray:
        """Every row as one array: only for what needs the whole set at once (a counter-attack
        that fits on the protected pool, a recognizer adapted on the protected fit split)."""
        if self.n == 0:
            return self._load(slice(0, 0))
        return np.concatenate([images for _, images in self.shards()])
