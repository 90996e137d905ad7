"""Keyed choices of k-RTIO: which k overlays an image gets and how each one's blocks are shuffled.

k-RTIO (Rajabi et al., PETS 2021, §5.2, Fig. 7) draws, per image id, k overlays from a
pool S without replacement and a Fisher–Yates permutation of each overlay's blocks, all from AES
used as a PRF under the owner's key. Two schemes:

``pets2021`` (privbench's construction; the default). Exact encoding, for interoperability::

    K         the owner's key, 16 or 32 bytes (AES-128 or AES-256)
    K_id      = AES-CMAC(K, b"privbench.krtio.pets2021.v1" || 0x00 || SHA-256(UTF-8(id)))
                16 bytes: a per-image AES-128 key; the SHA-256 digest lets any id be used
    block(x)  = AES-128-ECB(K_id, x) for a 16-byte input x:
                x[0]      domain: 0x01 overlay selection, 0x02 block permutation
                x[1]      slot j, 0-based (k ≤ 255)
                x[2:6]    index i, uint32 big-endian (0 for selection; Fisher–Yates position
                          for permutations)
                x[6:10]   retry counter r, uint32 big-endian, starting at 0
                x[10:16]  zero
    uniform(m) over one (domain, j, i): v = int.from_bytes(block(x), "big"); if
                v < floor(2^128 / m)·m return v mod m, else retry with r + 1 (no modulo bias)
    selection: pool = [0, …, N−1]; for j in 0…k−1: t = uniform(N − j) at (0x01, j, 0);
                selected.append(pool.pop(t))            (shrinking pool, as the paper's Fig. 7)
    permutation of slot j over n blocks: a = [0, …, n−1]; for i = n−1 down to 1:
                t = uniform(i + 1) at (0x02, j, i); swap a[i], a[t]
                destination block d (row-major on the ceil(H/s) × ceil(W/s) grid) takes source
                block a[d]

All inputs are distinct, so every block is an independent PRF output; selection and permutation
are domain-separated; all AES blocks for one image are computed in one ECB call.

``legacy``: bit-exact with the authors' 2021 script (docs/methods.md):
AES-CFB-8 with the script's 32-byte ``aeskey.bin`` and 16-byte ``iv.bin``; the id is ``'/' +
file name``; selection uses ONE cipher object carried over j = 0, 1, … on plaintext
``id‖0x00‖str(j)`` with duplicates rejected and a fixed modulus N; each permutation step uses a
fresh cipher on ``id‖0x00‖str(i+1)‖0x00‖str(ov_id)``; ciphertexts are read as signed big-endian
integers and reduced with Python's floor-mod.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from Crypto.Cipher import AES
from Crypto.Hash import CMAC
from numba import njit

from harness.core.errors import PrivbenchError

DOMAIN_SELECT = 0x01
DOMAIN_PERMUTE = 0x02
PETS2021_LABEL = b"privbench.krtio.pets2021.v1"


@njit(cache=True)
def _fisher_yates_rows(targets: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    rows, n = targets.shape
    out = np.empty((rows, n), dtype=np.int64)
    for r in range(rows):
        for i in range(n):
            out[r, i] = i
        for i in range(n - 1, 0, -1):
            j = targets[r, i]
            out[r, i], out[r, j] = out[r, j], out[r, i]
    return out


def fisher_yates_rows(targets: np.ndarray) -> np.ndarray:
    """Fisher–Yates of every row of ``targets`` [R, n] (``targets[r, i]`` the swap partner of
    position i, i = n−1 … 1; column 0 unused). The swaps of one row are sequential by nature, so
    the loop is compiled (numba): a Python loop costs about a microsecond per swap, 12 ms for one
    512 × 512 photo at block 8 and k = 3, and numpy cannot vectorise it."""
    return _fisher_yates_rows(np.ascontiguousarray(targets, dtype=np.int64))


@njit(cache=True)
def _reduce(blocks: np.ndarray, moduli: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # pragma: no cover - compiled
    rows = blocks.shape[0]
    value = np.empty(rows, dtype=np.int64)
    rejected = np.zeros(rows, dtype=np.bool_)
    top = np.uint64(0xFFFFFFFFFFFFFFFF)
    for r in range(rows):
        hi = np.uint64(0)
        lo = np.uint64(0)
        for c in range(8):
            hi = (hi << np.uint64(8)) | np.uint64(blocks[r, c])
            lo = (lo << np.uint64(8)) | np.uint64(blocks[r, 8 + c])
        m = np.uint64(moduli[r])
        # v = hi·2^64 + lo; v mod m without 128-bit ints (m < 2^32 keeps products < 2^64)
        two64_mod = (top % m + np.uint64(1)) % m
        value[r] = np.int64(((hi % m) * two64_mod % m + lo % m) % m)
        # reject the top (2^128 mod m) values: v ≥ 2^128 − (2^128 mod m)
        tail = two64_mod * two64_mod % m
        if tail > 0 and hi == top and lo >= (top - tail + np.uint64(1)):
            rejected[r] = True
    return value, rejected


def reduce_blocks(blocks: np.ndarray, moduli: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each 16-byte AES output (read as a big-endian 128-bit v) and modulus m < 2^32:
    (v mod m, whether v falls in the top 2^128 mod m values that rejection sampling refuses).
    Compiled (numba): the exact 128-bit reduction takes a dozen numpy passes otherwise."""
    return _reduce(
        np.ascontiguousarray(blocks, dtype=np.uint8), np.ascontiguousarray(moduli, np.uint64)
    )


def fisher_yates(swap_targets: np.ndarray) -> np.ndarray:
    """The permutation made by Fisher–Yates with ``swap_targets[i]`` the swap partner of position
    i (i = n−1 … 1; entry 0 unused)."""
    return fisher_yates_rows(np.asarray(swap_targets)[None])[0]


@lru_cache(maxsize=16)
def draw_plan(
    k: int, pool_size: int, n_blocks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bytes]:
    """The PRF inputs of one image's draw, the same for every image (only the key differs):
    (domain, slot, index, moduli, the retry-0 inputs encoded). Read-only; computed once per
    shape."""
    slots = np.arange(k)
    positions = np.arange(1, n_blocks)
    domain = np.concatenate(
        [np.full(k, DOMAIN_SELECT), np.full(k * len(positions), DOMAIN_PERMUTE)]
    ).astype(np.uint8)
    slot = np.concatenate([slots, np.repeat(slots, len(positions))]).astype(np.uint8)
    index = np.concatenate([np.zeros(k, dtype=np.int64), np.tile(positions, k)])
    moduli = np.concatenate([pool_size - slots, np.tile(positions + 1, k)]).astype(np.uint64)
    first = Pets2021Prf.inputs(domain, slot, index, 0).tobytes()
    for a in (domain, slot, index, moduli):
        a.flags.writeable = False
    return domain, slot, index, moduli, first


@dataclass(frozen=True)
class Pets2021Prf:
    """The ``pets2021`` scheme for one image (see the module docstring for the encoding)."""

    image_key: bytes = field(repr=False)

    @classmethod
    def for_image(cls, key: bytes, image_id: str) -> Pets2021Prf:
        """Derive the per-image key from the owner's key and the image id."""
        if len(key) not in (16, 32):
            raise PrivbenchError(f"k-RTIO keys are 16 or 32 bytes; this key has {len(key)}")
        mac = CMAC.new(key, ciphermod=AES)
        mac.update(PETS2021_LABEL + b"\x00" + hashlib.sha256(image_id.encode("utf-8")).digest())
        return cls(mac.digest())

    @staticmethod
    def inputs(
        domain: int | np.ndarray, slot: int | np.ndarray, index: np.ndarray, retry: int = 0
    ) -> np.ndarray:
        """The 16-byte PRF inputs, one row per ``index`` (domain and slot broadcast)."""
        index = np.asarray(index)
        x = np.zeros((len(index), 16), dtype=np.uint8)
        x[:, 0] = domain
        x[:, 1] = slot
        x[:, 2:6] = index.astype(">u4").view(np.uint8).reshape(-1, 4)
        x[:, 6:10] = np.frombuffer(int(retry).to_bytes(4, "big"), dtype=np.uint8)
        return x

    def blocks(self, x: np.ndarray | bytes) -> np.ndarray:
        """AES-ECB of every 16-byte row of ``x`` in one call; uint8 [m, 16]."""
        data = x if isinstance(x, bytes) else np.ascontiguousarray(x).tobytes()
        out = AES.new(self.image_key, AES.MODE_ECB).encrypt(data)
        return np.frombuffer(out, dtype=np.uint8).reshape(-1, 16)

    def uniform(
        self,
        domain: int | np.ndarray,
        slot: int | np.ndarray,
        index: np.ndarray,
        moduli: np.ndarray,
        first_inputs: bytes | None = None,
    ) -> np.ndarray:
        """Unbiased integers in [0, moduli) by rejection sampling, one per row; all rows in one
        AES call (plus one more per round of the astronomically rare rejections).
        ``first_inputs``: the retry-0 inputs already encoded, when the caller has them."""
        index = np.asarray(index, dtype=np.int64)
        domain = np.broadcast_to(np.asarray(domain, dtype=np.uint8), index.shape)
        slot = np.broadcast_to(np.asarray(slot, dtype=np.uint8), index.shape)
        moduli = np.asarray(moduli, dtype=np.uint64)
        result = np.empty(len(index), dtype=np.int64)
        todo = np.arange(len(index))
        retry = 0
        while len(todo):
            if retry == 0 and first_inputs is not None:
                b = self.blocks(first_inputs)
            else:
                b = self.blocks(self.inputs(domain[todo], slot[todo], index[todo], retry))
            value, rejected = reduce_blocks(b, moduli[todo])
            result[todo[~rejected]] = value[~rejected]
            todo = todo[rejected]
            retry += 1
        return result

    def draw(self, k: int, pool_size: int, n_blocks: int) -> tuple[list[int], np.ndarray]:
        """Selection and all k permutations of one image from one batch of AES blocks:
        (k distinct pool indices, permutations [k, n_blocks])."""
        if not 1 <= k <= min(pool_size, 255):
            raise PrivbenchError(f"k-RTIO needs 1 ≤ k ≤ pool size; k = {k}, pool = {pool_size}")
        domain, slot, index, moduli, first = draw_plan(k, pool_size, n_blocks)
        values = self.uniform(domain, slot, index, moduli, first)
        pool = list(range(pool_size))
        selected = [pool.pop(t) for t in values[:k].tolist()]
        targets = np.zeros((k, n_blocks), dtype=np.int64)
        targets[:, 1:] = values[k:].reshape(k, n_blocks - 1)
        return selected, fisher_yates_rows(targets)

    def select(self, k: int, pool_size: int) -> list[int]:
        """k distinct pool indices, drawn from a shrinking pool (the first part of ``draw``)."""
        return self.draw(k, pool_size, 1)[0]

    def permutation(self, slot: int, n_blocks: int) -> np.ndarray:
        """The block permutation of one slot alone (equal to row ``slot`` of ``draw``)."""
        positions = np.arange(1, n_blocks)
        targets = np.zeros(n_blocks, dtype=np.int64)
        targets[1:] = self.uniform(DOMAIN_PERMUTE, slot, positions, positions + 1)
        return fisher_yates(targets)


def _cfb8_rows(key: bytes, iv: bytes, plaintexts: np.ndarray) -> np.ndarray:
    """AES-CFB-8 of every row of ``plaintexts`` (uint8 [m, width]) with a fresh cipher each
    (same key and IV), computed together; bytes past a shorter message's end are encrypted too
    and must be ignored.

    Byte t of every message needs the AES of its own shift register, which is the 16 bytes
    before it in ``IV ‖ ciphertext``; so the messages advance in lockstep, one ECB call per byte
    position for all of them. pycryptodome has no batched CFB (one cipher object per message
    costs about 6 µs, 25 ms for one 512 × 512 photo at block 8), hence this by hand."""
    m, width = plaintexts.shape
    stream = np.empty((m, 16 + width), dtype=np.uint8)  # IV ‖ ciphertext, per row
    stream[:, :16] = np.frombuffer(iv, dtype=np.uint8)
    ecb = AES.new(key, AES.MODE_ECB)
    for t in range(width):
        registers = np.ascontiguousarray(stream[:, t : t + 16]).tobytes()
        first = np.frombuffer(ecb.encrypt(registers), dtype=np.uint8)[::16]
        stream[:, 16 + t] = first ^ plaintexts[:, t]
    return stream[:, 16:]


def _decimal_messages(
    prefix: bytes, numbers: np.ndarray, suffix: bytes
) -> tuple[np.ndarray, np.ndarray]:
    """``prefix ‖ str(x) ‖ suffix`` for every positive x of ``numbers``: (uint8 [m, width]
    zero-padded, lengths [m])."""
    numbers = np.asarray(numbers, dtype=np.int64)
    digits = np.ones(len(numbers), dtype=np.int64)
    while (big := numbers >= 10**digits).any():
        digits += big
    lengths = len(prefix) + digits + len(suffix)
    out = np.zeros((len(numbers), int(lengths.max(initial=0))), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    rows = np.arange(len(numbers))
    for place in range(int(digits.max(initial=0))):  # place 0 = the leftmost digit
        has = place < digits
        power = 10 ** (digits[has] - 1 - place)
        out[rows[has], len(prefix) + place] = 48 + numbers[has] // power % 10
    for q, byte in enumerate(suffix):
        out[rows, len(prefix) + digits + q] = byte
    return out, lengths


def _signed_mod(ct: np.ndarray, lengths: np.ndarray, moduli: np.ndarray) -> np.ndarray:
    """``int.from_bytes(c, "big", signed=True) % m`` (Python's floor-mod, never negative) for
    each row's first ``length`` bytes, with m < 2^32: Horner's rule modulo m over the bytes,
    and a negative value (top bit set) is u − 256^L, so subtract 256^L mod m."""
    m = np.asarray(moduli, dtype=np.int64)
    value = np.zeros(len(m), dtype=np.int64)
    power = np.ones(len(m), dtype=np.int64) % m  # 256^L mod m
    for t in range(ct.shape[1]):
        live = t < lengths
        value = np.where(live, (value * 256 + ct[:, t]) % m, value)
        power = np.where(live, power * 256 % m, power)
    negative = ct[:, 0] >= 128
    return np.where(negative, (value - power) % m, value)


@dataclass(frozen=True)
class LegacyPrf:
    """The 2021 script's PRF for one image id (``'/' + file name``), bit-exact."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    image_id: str

    def __post_init__(self) -> None:
        if len(self.key) not in (16, 24, 32) or len(self.iv) != 16:
            raise PrivbenchError(
                "legacy k-RTIO needs an AES key (16/24/32 bytes) and a 16-byte "
                f"IV; got {len(self.key)} and {len(self.iv)} bytes"
            )

    def select(self, k: int, pool_size: int, max_draws: int = 100_000) -> list[int]:
        """Overlay ids 0…N−1: one stateful CFB-8 cipher, duplicates rejected (the script's loop)."""
        if not 1 <= k <= pool_size:
            raise PrivbenchError(
                f"legacy k-RTIO needs k ≤ number of overlays; k = {k}, "
                f"overlays = {pool_size} (the 2021 script loops forever here)"
            )
        cipher = AES.new(self.key, AES.MODE_CFB, self.iv)
        chosen: list[int] = []
        for j in range(max_draws):
            ct = cipher.encrypt(self.image_id.encode() + b"\x00" + str(j).encode())
            v = int.from_bytes(ct, byteorder="big", signed=True) % pool_size
            if v not in chosen:
                chosen.append(v)
                if len(chosen) == k:
                    return chosen
        raise PrivbenchError(
            f"legacy selection found only {len(chosen)} distinct overlays in {max_draws} draws"
        )

    def permutation(self, overlay_id: int, n_blocks: int) -> np.ndarray:
        """The script's Fisher–Yates for overlay ``overlay_id`` (its 0-based global id)."""
        sizes = np.arange(n_blocks, 1, -1)  # i + 1 for i = n − 1 … 1
        messages, lengths = _decimal_messages(
            self.image_id.encode() + b"\x00", sizes, b"\x00" + str(overlay_id).encode()
        )
        targets = np.zeros(n_blocks, dtype=np.int64)
        if len(sizes):
            ct = _cfb8_rows(self.key, self.iv, messages)
            targets[sizes - 1] = _signed_mod(ct, lengths, sizes)
        return fisher_yates(targets)
