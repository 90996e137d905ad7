"""k-RTIO: PRF schemes, exact recovery, keys and the owner's CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from Crypto.Cipher import AES
from Crypto.Hash import CMAC
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

from defenses.krtio import KRTIO
from defenses.krtio_prf import LegacyPrf, Pets2021Prf, _cfb8_rows
from harness.api.registry import DEFENSES
from harness.core.errors import DataError, PrivbenchError
from harness.core.keys import Keyring, benchmark_key

# Produced by running the authors' 2021 reference script.
VECTORS = json.loads((Path(__file__).parent / "data" / "krtio_legacy_vectors.json").read_text())
KEY = Keyring(bytes(range(32)), None, "test key")


# -- legacy scheme: the 2021 script's own outputs ----------------------------------------------
def test_legacy_prf_ciphertexts_match_the_script() -> None:
    key, iv = bytes.fromhex(VECTORS["key_hex"]), bytes.fromhex(VECTORS["iv_hex"])
    steps = [s for v in VECTORS["permutation_prf"] for s in v["first_5_fisher_yates_steps"]]
    plaintexts = [bytes.fromhex(s["plaintext_hex"]) for s in steps]
    padded = np.zeros((len(plaintexts), max(map(len, plaintexts))), dtype=np.uint8)
    for r, p in enumerate(plaintexts):
        padded[r, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    rows = _cfb8_rows(key, iv, padded)
    got = [row[: len(p)].tobytes() for row, p in zip(rows, plaintexts, strict=True)]
    assert [c.hex() for c in got] == [s["ciphertext_hex"] for s in steps]
    for s in steps:
        assert (
            int.from_bytes(bytes.fromhex(s["ciphertext_hex"]), "big", signed=True)
            % s["modulus_i_plus_1"]
            == s["j"]
        )


def test_legacy_selection_and_permutations_match_the_script() -> None:
    a = VECTORS["astronaut_bl16"]
    prf = LegacyPrf(
        bytes.fromhex(VECTORS["key_hex"]), bytes.fromhex(VECTORS["iv_hex"]), a["prf_id_string"]
    )
    assert prf.select(3, 26) == a["selected_overlay_ids_0based"]
    n = a["block_grid_b1xb2"][0] * a["block_grid_b1xb2"][1]
    for ov in a["selected_overlay_ids_0based"]:
        assert prf.permutation(ov, n).tolist() == a["permutations"][str(ov)]


def _legacy_overlay_folder(folder: Path, count: int) -> Path:
    """``count`` face-free substitute overlays named o1…oN (the script's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for v in range(count):
        arr = rng.integers(0, 256, (48 + v, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"o{v + 1}.jpeg", quality=90)
    return folder


def test_legacy_image_is_bit_exact_with_an_independent_reference(tmp_path: Path) -> None:
    """The 2021 script's overlay construction done by hand with the script's permutations."""
    a = VECTORS["astronaut_bl16"]
    overlays = _legacy_overlay_folder(tmp_path / "overlays", 26)
    ring = Keyring(bytes.fromhex(VECTORS["key_hex"]), bytes.fromhex(VECTORS["iv_hex"]), "vectors")
    d = DEFENSES.create(
        "krtio", {"scheme": "legacy", "block": 16, "alpha": 0.45, "overlays": str(overlays)}
    )
    img = data.astronaut()
    got = d.protect_array(img, "/somewhere/astronaut.png", ring)

    bl, (b1, b2) = 16, a["block_grid_b1xb2"]
    acc = None
    for ov in a["selected_overlay_ids_0based"]:
        big = np.array(Image.open(overlays / f"o{ov + 1}.jpeg").resize((b2 * bl, b1 * bl)))
        perm = a["permutations"][str(ov)]
        new = np.zeros_like(big)
        for i in range(b1 * b2):
            si = perm[i]
            new[(i // b2) * bl : (i // b2 + 1) * bl, (i % b2) * bl : (i % b2 + 1) * bl] = big[
                (si // b2) * bl : (si // b2 + 1) * bl, (si % b2) * bl : (si % b2 + 1) * bl
            ]
        t = new[:512, :512].astype(np.float64)
        acc = t if acc is None else acc + t
    reference = np.uint8(np.round(0.45 * img + (1 - 0.45) * (acc / 3.0)))
    assert np.array_equal(got, reference)
    back = d.recover_array(got, "astronaut.png", ring)
    assert np.abs(back.astype(int) - img).max() <= math.ceil(0.5 / 0.45)


def test_legacy_missing_overlay_is_a_clear_error(tmp_path: Path) -> None:
    folder = _legacy_overlay_folder(tmp_path / "ov", 6)
    (folder / "o3.jpeg").rename(folder / "notes.jpeg")  # still counted, o3 now missing
    d = DEFENSES.create("krtio", {"scheme": "legacy", "overlays": str(folder), "k": 6})
    with pytest.raises(DataError, match=r"overlay o3\.\* is missing"):
        d.protect_array(data.astronaut()[:64, :64], "x.png", KEY)


# -- pets2021 scheme ------------------------------------------------------------------------
def _reference_uniform(image_key: bytes, domain: int, slot: int, index: int, m: int) -> int:
    """The module docstring's encoding, written out with Python integers."""
    retry = 0
    while True:
        x = bytes([domain, slot]) + index.to_bytes(4, "big") + retry.to_bytes(4, "big") + bytes(6)
        v = int.from_bytes(AES.new(image_key, AES.MODE_ECB).encrypt(x), "big")
        if v < (2**128 // m) * m:
            return v % m
        retry += 1


def _reference_image_key(key: bytes, image_id: str) -> bytes:
    import hashlib

    mac = CMAC.new(key, ciphermod=AES)
    mac.update(b"privbench.krtio.pets2021.v1\x00" + hashlib.sha256(image_id.encode()).digest())
    return mac.digest()


@settings(max_examples=25, deadline=None)
@given(
    image_id=st.text(min_size=0, max_size=40),
    n=st.integers(1, 300),
    key=st.binary(min_size=16, max_size=16) | st.binary(min_size=32, max_size=32),
)
def test_pets2021_matches_its_documented_encoding(image_id: str, n: int, key: bytes) -> None:
    prf = Pets2021Prf.for_image(key, image_id)
    ik = _reference_image_key(key, image_id)
    assert prf.image_key == ik
    perm = prf.permutation(1, n)
    a = list(range(n))
    for i in range(n - 1, 0, -1):
        t = _reference_uniform(ik, 0x02, 1, i, i + 1)
        a[i], a[t] = a[t], a[i]
    assert perm.tolist() == a
    assert sorted(perm.tolist()) == list(range(n))  # a bijection
    pool = list(range(10))
    expected = [pool.pop(_reference_uniform(ik, 0x01, j, 0, 10 - j)) for j in range(3)]
    assert prf.select(3, 10) == expected


def test_pets2021_frozen_vector() -> None:
    """Interoperability: these outputs define the scheme; a change here breaks old files."""
    prf = Pets2021Prf.for_image(bytes(range(16)), "photo-0001")
    assert prf.image_key.hex() == _reference_image_key(bytes(range(16)), "photo-0001").hex()
    assert Pets2021Prf.inputs(0x02, 1, np.array([5]), retry=3).tobytes().hex() == (
        "02010000000500000003000000000000"
    )
    assert prf.image_key.hex() == "511bc4d22890cd68f509613db71f9dcb"
    assert prf.select(3, 10) == [2, 8, 9]
    assert prf.permutation(0, 16).tolist() == [15, 0, 7, 13, 3, 10, 5, 11, 12, 4, 14, 8, 2, 1, 9, 6]


def test_pets2021_rejection_sampling_redraws(monkeypatch: pytest.MonkeyPatch) -> None:
    prf = Pets2021Prf.for_image(bytes(16), "x")
    real = Pets2021Prf.blocks
    calls: list[np.ndarray] = []

    def fake(self: Pets2021Prf, x: np.ndarray) -> np.ndarray:
        calls.append(x.copy())
        if x[0, 6:10].tobytes() == bytes(4):  # first try: the top value, which m = 3 rejects
            return np.full((len(x), 16), 0xFF, dtype=np.uint8)
        return real(self, x)

    monkeypatch.setattr(Pets2021Prf, "blocks", fake)
    value = prf.uniform(0x01, 0, np.array([0]), np.array([3]))[0]
    assert len(calls) == 2 and calls[1][0, 6:10].tobytes() == (1).to_bytes(4, "big")
    second = bytes([1, 0]) + bytes(4) + (1).to_bytes(4, "big") + bytes(6)
    expected = int.from_bytes(AES.new(prf.image_key, AES.MODE_ECB).encrypt(second), "big") % 3
    assert value == expected


def test_distinct_ids_get_distinct_overlays_and_ids_are_stable() -> None:
    d = KRTIO(alpha=0.45, k=3, block=8, blocks=None, overlays="scenes", scheme="pets2021")
    o = d.overlay_mean(KEY, ["a", "b", "a"], 64, 64, 3, torch.device("cpu"), torch.float64)
    assert not torch.equal(o[0], o[1]) and torch.equal(o[0], o[2])


# -- exactness --------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.3, 0.45, 0.7])
def test_recovery_within_the_quantisation_bound(alpha: float) -> None:
    d = DEFENSES.create("krtio", {"alpha": alpha})
    img = data.astronaut()[:200, :300]  # not a multiple of the block: border blocks
    protected = d.protect_array(img, "astro", KEY)
    back = d.recover_array(protected, "astro", KEY)
    assert np.abs(back.astype(int) - img).max() <= math.ceil(0.5 / alpha)
    if alpha == 0.45:
        # The upload's rounding error q ~ U(−½, ½) comes back as q/α, then rounded: an error
        # of 1 where |q| > α/2, so MSE ≈ 1 − α = 0.55 and PSNR ≈ 50.7 dB, with a standard
        # error of ~0.01 dB over 180,000 values (integer and float64 arithmetic: the same on
        # every CPU); clipping at 0 and 255 only lowers the MSE
        mse = np.mean((back.astype(float) - img) ** 2)
        assert 10 * math.log10(255**2 / mse) >= 50.0


def test_wrong_key_does_not_recover() -> None:
    d = DEFENSES.create("krtio", {})
    img = data.astronaut()[:128, :128]
    protected = d.protect_array(img, "astro", KEY)
    wrong = d.recover_array(protected, "astro", Keyring(bytes(32), None, "other"))
    # the wrong key subtracts unrelated overlays, scaled by (1 − α)/α: errors of tens of
    # levels (PSNR 12 dB), integer and float64 arithmetic
    mse = np.mean((wrong.astype(float) - img) ** 2)
    assert 10 * math.log10(255**2 / mse) < 20.0


def test_k_larger_than_the_pool_is_rejected() -> None:
    with pytest.raises(PrivbenchError, match="k = 11 but the overlay pool"):
        DEFENSES.create("krtio", {"k": 11}).protect_array(data.astronaut()[:32, :32], "x", KEY)


def test_paper_block_count_sets_the_side() -> None:
    d = DEFENSES.create("krtio", {"blocks": 625})
    assert d.block_side(1000, 1000) == 40  # the paper's "625 blocks of 40×40"


def test_harness_path_matches_the_integer_path(ctx) -> None:
    from harness.toolkit.imaging import to_tensor, to_uint8

    ctx.keyring = KEY
    d = DEFENSES.create("krtio", {})
    img = data.astronaut()[:64, :96]
    float_path = to_uint8(d.protect(to_tensor(img[None]), ["astro"], ctx))[0]
    # The float32 path rounds α·x + (1 − α)·mean(o) once at the end, the integer path the
    # same expression in float64: they differ only where the value lies within float32's
    # ~255·4u ≈ 6e-5 of a half level, and there by exactly one level.
    assert np.abs(float_path.astype(int) - d.protect_array(img, "astro", KEY)).max() <= 1


def test_benchmark_key_is_reproducible_and_redacted() -> None:
    assert benchmark_key(3).key == benchmark_key(3).key != benchmark_key(4).key
    assert benchmark_key(3).key.hex() not in repr(benchmark_key(3))


def test_compiled_reduction_is_exact_at_the_rejection_boundary() -> None:
    from defenses.krtio_prf import reduce_blocks

    rng = np.random.default_rng(0)
    moduli = np.array([1, 2, 3, 7, 26, 4096, 65537, 2**31 - 1, 2**32 - 1], dtype=np.uint64)
    values = [int.from_bytes(rng.bytes(16), "big") for _ in range(200)]
    for m in moduli.tolist():
        limit = (2**128 // m) * m  # the first rejected value
        values += [limit - 1, limit, 2**128 - 1, 0] if limit < 2**128 else [2**128 - 1, 0]
    blocks = np.array([list(v.to_bytes(16, "big")) for v in values], dtype=np.uint8)
    for m in moduli.tolist():
        got, rejected = reduce_blocks(blocks, np.full(len(values), m, dtype=np.uint64))
        assert got.tolist() == [v % m for v in values]
        assert rejected.tolist() == [v >= (2**128 // m) * m for v in values]


def test_compiled_fisher_yates_is_the_textbook_loop() -> None:
    from defenses.krtio_prf import fisher_yates_rows

    rng = np.random.default_rng(1)
    n = 50
    targets = np.zeros((6, n), dtype=np.int64)
    for i in range(1, n):
        targets[:, i] = rng.integers(0, i + 1, size=6)
    expected = []
    for row in targets.tolist():
        a = list(range(n))
        for i in range(n - 1, 0, -1):
            a[i], a[row[i]] = a[row[i]], a[i]
        expected.append(a)
    assert fisher_yates_rows(targets).tolist() == expected


@pytest.mark.parametrize(("alpha", "k"), [(0.45, 3), (0.3, 5), (0.9, 1), (1 / 3, 7)])
def test_tabulated_8bit_path_equals_the_float64_formula(alpha: float, k: int) -> None:
    """Every (pixel, overlay sum) pair of the table against the script's float64 expression
    evaluated per pixel, and whole images (RGB and gray) against it."""
    d = DEFENSES.create("krtio", {"alpha": alpha, "k": k, "block": 5})
    rng = np.random.default_rng(k)
    for shape in ((37, 53, 3), (29, 31, 1)):
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        o = d.overlay_sum_array(KEY, "img", *shape).astype(np.float64) / float(k)
        want = np.clip(np.round(alpha * img.astype(np.float64) + (1 - alpha) * o), 0, 255)
        protected = d.protect_array(img, "img", KEY)
        assert protected.dtype == np.uint8 and np.array_equal(protected, want.astype(np.uint8))
        x = (1 / alpha) * (protected.astype(np.float64) - (1 - alpha) * o)
        back = np.round(np.clip(x, 0, 255)).astype(np.uint8)
        assert np.array_equal(d.recover_array(protected, "img", KEY), back)


def test_numpy_overlay_sum_equals_the_torch_gather() -> None:
    d = DEFENSES.create("krtio", {"k": 4, "block": 6})
    for h, w, c in ((40, 70, 3), (25, 13, 1)):
        ids = ["a", "b"]
        torch_sum = d.overlay_mean(KEY, ids, h, w, c, torch.device("cpu"), torch.int32)
        for i, image_id in enumerate(ids):
            numpy_sum = d.overlay_sum_array(KEY, image_id, h, w, c)
            assert np.array_equal(numpy_sum, torch_sum[i].permute(1, 2, 0).numpy())


def test_the_owner_commands_run_krtio_without_importing_torch(tmp_path: Path) -> None:
    """Importing torch is most of a command's start-up; the exact k-RTIO path needs none."""
    import subprocess
    import sys

    photo = tmp_path / "in" / "a.png"
    photo.parent.mkdir()
    Image.fromarray(data.astronaut()[:64, :64]).save(photo)
    (tmp_path / "key").write_bytes(bytes(range(32)))
    script = (
        "import sys\n"
        "from harness.cli.main import main\n"
        "for verb, src, dst in (('protect', 'in', 'p'), ('recover', 'p', 'r')):\n"
        "    assert main([verb, src, dst, '--key', 'key', '--quiet']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
    back = np.asarray(Image.open(tmp_path / "r" / "a.png"))
    assert np.abs(back.astype(int) - data.astronaut()[:64, :64]).max() <= math.ceil(0.5 / 0.45)


def test_legacy_vectorised_parts_equal_pythons_bytes_and_ints() -> None:
    from defenses.krtio_prf import _decimal_messages, _signed_mod

    numbers = np.array([1, 9, 10, 99, 100, 4096, 123456789])
    messages, lengths = _decimal_messages(b"/a.png\x00", numbers, b"\x00" + b"17")
    for row, n, length in zip(messages, numbers.tolist(), lengths.tolist(), strict=True):
        assert row[:length].tobytes() == b"/a.png\x00" + str(n).encode() + b"\x00" + b"17"
        assert not row[length:].any()
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 24, size=500)
    ct = rng.integers(0, 256, size=(500, 24), dtype=np.uint8)
    ct[:50, 0] = 0x80  # the most negative leading byte
    moduli = rng.integers(1, 2**32, size=500)
    moduli[:20] = 1
    want = [
        int.from_bytes(row[:n].tobytes(), "big", signed=True) % int(m)
        for row, n, m in zip(ct, lengths, moduli, strict=True)
    ]
    assert _signed_mod(ct, lengths, moduli).tolist() == want
