"""Finding a protected photo's index entry by its look, when a platform stripped its metadata,
re-encoded it or resized it; and bringing it back to the size it was protected at.

The fingerprint is two 64-bit perceptual hashes of the protected pixels, from the
:mod:`imagehash` library: pHash (the sign of the low-frequency 8×8 DCT coefficients of a 32×32
grey copy, against their median) and dHash (the signs of horizontal gradients of a 9×8 grey
copy). Their Hamming distances are added: 0 to 128 bits. Both see only coarse structure, which
JPEG and downscaling keep. The threshold and the ambiguity gap below were measured (docs/
methods.md, "Recovery without metadata"): on the 100 lfw-subset faces protected with k-RTIO,
and on 76 crops (64 to 512 pixels) of 19 scikit-image photos at blocks 4, 8 and 16, a protected
output re-encoded as JPEG at quality 75 or 90, halved in size (Lanczos, bilinear or box), or
both, stayed within 20 bits of its entry (at most 11 for crops of 64 pixels and more, 5 for
faces upscaled to 100 pixels); the entry of another face, and a face never protected, were at
least 23 bits away. Only overlapping crops of one photo (near duplicates) came nearer, from 17
bits; when both are in the index the gap refuses instead of guessing.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import imagehash
import numpy as np
from PIL import Image

from harness.core.errors import PrivbenchError
from harness.owner.index import Entry

THRESHOLD = 21  # bits of 128: the most a true match may differ (measured max 20; others ≥ 22)
AMBIGUITY_GAP = 8  # bits: a second entry closer than this to the nearest one is as plausible
SMALLEST_SCALE = 0.5  # the smallest resize measured; smaller ones are tried with a note
MIN_SIDE = 12  # pixels: the smallest side measured (25-pixel faces halved); below, no lookup
_FAR = 129  # one more than any distance of two fingerprints: what an ineligible entry is at


class NoMatchError(PrivbenchError):
    """No entry of the index is within :data:`THRESHOLD` of the photo."""


class AmbiguousMatchError(PrivbenchError):
    """Two entries that recover the photo differently are about equally near."""


def fingerprint(pixels: np.ndarray) -> tuple[str, str]:
    """(pHash, dHash) of ``pixels`` (uint8 or uint16 [H, W, C], C = 1 or 3), 16 hex digits
    each, of the 8-bit grey image (16-bit pixels keep their top 8 bits)."""
    arr = pixels if pixels.dtype == np.uint8 else (pixels >> 8).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))
    return str(imagehash.phash(image)), str(imagehash.dhash(image))


def _words(hex_digits: list[str]) -> np.ndarray:
    """uint64 [N]: each 16-hex-digit hash as one 64-bit word."""
    return np.frombuffer(bytes.fromhex("".join(hex_digits)), ">u8").astype(np.uint64)


class HashTable(NamedTuple):
    """Every entry's hashes (uint64 [N, 2]: pHash, dHash) and size (int64 [N, 2]: height,
    width)."""

    hashes: np.ndarray
    sizes: np.ndarray


def hash_table(entries: list[Entry]) -> HashTable:
    """The :class:`HashTable` of ``entries``, made once per index rather than per photo (about
    80 ms for 100,000 entries; a lookup among them then takes about 7 ms)."""
    hashes = [_words([e.phash for e in entries]), _words([e.dhash for e in entries])]
    return HashTable(np.stack(hashes, 1), np.array([e.size for e in entries], np.int64))


def _eligible(shape: tuple[int, ...], sizes: np.ndarray) -> np.ndarray:
    """bool [N]: the entries a photo of ``shape`` may be a resized copy of. Each side of the
    entry is at least :data:`MIN_SIDE` (a smaller photo leaves the hashes almost nothing: a
    1×1 one hashes like any flat photo), and the proportions agree: a resize by ``s`` rounds
    each side, h = s·H + e₁ and w = s·W + e₂ with |e| ≤ 1, so |h·W − w·H| = |e₁·W − e₂·H| is at
    most H + W."""
    big, wide = sizes[:, 0], sizes[:, 1]
    skew = np.abs(shape[0] * wide - shape[1] * big)
    return (np.minimum(big, wide) >= MIN_SIDE) & (skew <= big + wide)


def _ones(words: np.ndarray) -> np.ndarray:
    """The number of set bits of each uint64 (numpy's popcount where it has one, 2.0 on)."""
    count = getattr(np, "bitwise_count", None)
    if count is not None:
        return count(words)
    as_bytes = words.astype(">u8").view(np.uint8).reshape(*words.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def distances(pixels: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """int [N]: the pHash + dHash Hamming distance of ``pixels`` to every row of ``hashes``
    (uint64 [N, 2])."""
    ours = _words(list(fingerprint(pixels))).reshape(1, 2)
    return _ones(ours ^ hashes).sum(axis=1, dtype=np.int64)


def _candidate_distances(pixels: np.ndarray, table: HashTable, where: str) -> np.ndarray:
    """:func:`distances`, with :data:`_FAR` for every entry ``pixels`` cannot be a copy of;
    :class:`NoMatchError` for a photo too small to be looked up, or one of proportions that
    no entry has."""
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise NoMatchError(
            f"{where}: carries no privbench metadata and is {width}×{height}, too small to be "
            f"recognised by its look (the index finds photos of {MIN_SIDE} pixels a side or "
            "more): recover it from a copy that keeps its metadata"
        )
    eligible = _eligible(pixels.shape, table.sizes)
    if not eligible.any():
        raise NoMatchError(
            f"{where}: carries no privbench metadata and no photo of the index has its "
            f"proportions ({width}×{height}, or a resized copy of it): it was not protected "
            "with this key and index, or was cropped"
        )
    return np.where(eligible, distances(pixels, table.hashes), _FAR)


def nearest_entry(
    pixels: np.ndarray, entries: list[Entry], where: str, table: HashTable | None = None
) -> tuple[Entry, int]:
    """The entry ``pixels`` (the photo at ``where``) matches, and at what distance in bits;
    :class:`NoMatchError` when no entry is within :data:`THRESHOLD`;
    :class:`AmbiguousMatchError` when a second entry that
    recovers it differently is within the threshold and within :data:`AMBIGUITY_GAP` of the
    nearest (two near-duplicate photos: guessing would write the wrong one's recovery). Only
    entries of the photo's proportions are candidates, and only for a photo of at least
    :data:`MIN_SIDE` pixels a side.
    ``table``: :func:`hash_table` of ``entries``, if the caller keeps it."""
    if not entries:
        raise NoMatchError(f"{where}: carries no privbench metadata and the index is empty")
    dist = _candidate_distances(pixels, hash_table(entries) if table is None else table, where)
    near = np.flatnonzero(dist <= THRESHOLD)  # few; sorting all would cost more than the rest
    order = near[np.argsort(dist[near], kind="stable")] if near.size else [int(dist.argmin())]
    best, best_d = entries[order[0]], int(dist[order[0]])
    if best_d > THRESHOLD:
        raise NoMatchError(
            f"{where}: carries no privbench metadata and matches no photo in the index (the "
            f"nearest differs in {best_d} of 128 hash bits; a match differs in at most "
            f"{THRESHOLD}): it was not protected with this key and index, or was changed more "
            "than re-encoding (JPEG quality 75 or more) and resizing (to half size or more) "
            "change a photo"
        )
    for i in order[1:]:
        other, other_d = entries[i], int(dist[i])
        if other_d > THRESHOLD or other_d - best_d >= AMBIGUITY_GAP:
            break
        if other.identity() != best.identity():
            raise AmbiguousMatchError(
                f"{where}: carries no privbench metadata and looks like two photos of the "
                f"index, protected as {best.file} ({best_d} bits apart) and {other.file} "
                f"({other_d} bits apart); privbench does not guess: recover it from a copy "
                "that keeps its metadata"
            )
    return best, best_d


def to_recorded_size(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``pixels`` resized to ``size`` (height, width), the size the photo was protected at:
    Lanczos (8×8) when enlarging, pixel-area averaging when shrinking; unchanged if already
    that size. Undoing k-RTIO at any other size would subtract a misplaced overlay."""
    height, width = size
    if pixels.shape[:2] == (height, width):
        return pixels
    grow = height * width > pixels.shape[0] * pixels.shape[1]
    method = cv2.INTER_LANCZOS4 if grow else cv2.INTER_AREA
    out = cv2.resize(pixels, (width, height), interpolation=method)
    return out.reshape(height, width, -1)


def resize_note(shape: tuple[int, ...], size: tuple[int, int], where: str) -> str | None:
    """A note for a photo that is not at its recorded size: what it was resized to, and whether
    that is beyond what was measured."""
    if tuple(shape[:2]) == tuple(size):
        return None
    # one pixel of slack: halving an odd side rounds down (25 -> 12 is a half, not 0.48)
    scale = min((shape[0] + 1) / size[0], (shape[1] + 1) / size[1])
    text = (
        f"note: {where} is {shape[1]}×{shape[0]}, protected at {size[1]}×{size[0]}: resized "
        "back before recovery, which then loses detail"
    )
    if scale < SMALLEST_SCALE:
        text += f" (below {SMALLEST_SCALE}× the recovery was not measured)"
    return text
