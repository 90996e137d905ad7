"""UEP (Rajabi et al., PETS 2021, §5.1): tanh-space round trip, learning on the local ensemble, the
c search, face-box mode, reproducibility; and the held-out lfw-subset split it is evaluated on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from defenses.uep_delta import learn_delta, margin_loss, tanh_apply, tanh_remove
from harness.api.contracts import Context
from harness.api.registry import DATASETS, DEFENSES
from harness.core.cache import Cache
from harness.core.errors import PrivbenchError
from harness.toolkit.imaging import quantise, resize, to_tensor

# Small enough to learn in seconds on 2 CPU cores; same code path as the defaults.
FAST = {"size": 32, "width": 8, "cnn_steps": 150, "steps": 40, "search_rounds": 4}


@pytest.fixture(scope="module")
def split():
    return DATASETS.create("lfw-subset", {"fit_faces": 24}).load(seed=0)


@pytest.fixture(scope="module")
def learned(split, tmp_path_factory):
    ctx = Context(torch.device("cpu"), 0, Cache(tmp_path_factory.mktemp("uep-cache")), 64)
    uep = DEFENSES.create("uep", FAST)
    uep.fit(split.fit, ctx)
    return uep, ctx


def test_tanh_round_trip_is_exact_and_within_quantisation_after_upload() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 40, 40), generator=gen).float() / 255
    delta = torch.randn(3, 40, 40, generator=gen) * 0.1  # RMS of a learned δ (0.11)
    y = tanh_apply(x, delta, 3.0)
    assert (y - x).abs().mean() > 0.05  # it does perturb
    # The inverse is exact (float64 end to end; float32 storage of a saturated x' is not):
    # arctanh's condition number at the edge 1 − 1e-6 is ≤ 1/(2e-6), so ≤ 5e5·2^-53 ≈ 6e-11.
    exact = tanh_remove(tanh_apply(x.double(), delta, 3.0), delta, 3.0)
    torch.testing.assert_close(exact, x.double(), atol=1e-9, rtol=0)
    # δ = 0 changes x only by the edge scaling 1 − 1e-6 of arctanh's argument: ≤ 5e-7; the
    # float64 maps then round once to float32 (≤ u = 6e-8 on values ≤ 1)
    torch.testing.assert_close(tanh_apply(x, torch.zeros_like(delta), 3.0), x, atol=1e-6, rtol=0)
    # After rounding the upload to 8 bits: both maps compute in float64 and round once to
    # float32 (≤ u), so the float32 y is within u of the exact x', and quantise(y) within
    # h = 0.5/255 + 3u of it (the rounding to a level and two float32 roundings). The
    # inverse map g = tanh_remove is increasing and g(exact x') = x, so the recovered pixel
    # lies within max(g(y + h + u) − g(y − u), g(y + u) − g(y − h − u)) of x, plus its own
    # rounding to float32. That is the half-level step times the slope ratio of the map,
    # x(1 − x)/(x'(1 − x')), to first order. Checked where the slope is moderate (≤ 2): near
    # saturation float64's own rounding of arctanh(1 − 1e-15) is no longer negligible.
    u = 2.0**-24
    h = 0.5 / 255 + 3 * u
    yd = y.double()

    def g(v: torch.Tensor) -> torch.Tensor:
        return tanh_remove(v.clamp(0.0, 1.0), delta, 3.0)

    up = g(yd + h + u) - g(yd - u)
    down = g(yd + u) - g(yd - h - u)
    allowed = (torch.maximum(up, down) + u) * 255
    err = (tanh_remove(quantise(y), delta, 3.0).double() - x.double()).abs() * 255
    slope = (x * (1 - x)) / (y * (1 - y)).clamp(min=1e-12)
    moderate = slope <= 2.0
    assert bool(moderate.float().mean() > 0.9)  # the check covers most pixels
    assert bool((err[moderate] <= allowed[moderate]).all())
    # rounding errors spread evenly over ±0.5 levels average 0.25 levels times the slope
    # ratio (0.28 here, the same on every kernel: these are float64 maps of seeded data)
    assert float(err.mean()) < 0.5


def test_margin_is_the_untargeted_cw_margin_on_probabilities() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    prob = logits.softmax(1)  # float32 both sides: a few roundings of values ≤ 1, ≪ 1e-6
    got = margin_loss(logits, torch.tensor([0, 0]), kappa=0.2)
    assert math.isclose(float(got[0]), float(prob[0, 0] - prob[0, 1]), rel_tol=1e-6)
    assert math.isclose(float(got[1]), -0.2, rel_tol=1e-6)  # already fooled by more than κ: clamped


def test_learned_delta_fools_every_local_cnn_on_p_of_its_images(learned, split) -> None:
    uep, ctx = learned
    report = uep.fit_report()
    # p = 0.7 is the search's own target (reached: 20 or 21 of 24 fooled on AVX-512, AVX2
    # and portable kernels, each training slightly different local CNNs): 3 images above
    assert report["reached_p"] == 1.0 and report["fooled_share"] >= 0.7
    # Check independently: each local model's prediction changes on the same ≥ p·N images.
    x = resize(to_tensor(split.fit.images), (FAST["size"], FAST["size"]), "bicubic")
    perturbed = tanh_apply(x, uep.delta, 1.0)
    fooled = torch.ones(len(x), dtype=torch.bool)
    for model in uep.local_models():
        model.fit(type(split)(split.fit, split.fit, split.fit, protocol="uep-local"), ctx)
        with torch.no_grad():
            fooled &= model.logits(perturbed).argmax(1) != model.logits(x).argmax(1)
    assert int(fooled.sum()) >= math.ceil(0.7 * len(x))
    assert report["learn_seconds"] > 0 and report["artefact_bytes"] > 1000


def test_whole_image_recovery_is_exact_up_to_quantisation(learned, split) -> None:
    uep, ctx = learned
    x = to_tensor(split.probe.images)
    y = quantise(uep.protect(x, split.probe.ids, ctx))
    r = quantise(uep.recover(y, split.probe.ids, ctx))
    assert (y - x).abs().mean() * 255 > 3  # visibly perturbed at β = 3
    err = (r - x).abs() * 255
    # half-level rounding scaled by the slope ratio of the map (see the round-trip test):
    # 0.08-0.09 levels on average and 99.7% within one level on every kernel path
    assert float(err.mean()) < 1.0 and float((err <= 1.0).float().mean()) > 0.9


class _Unfoolable(torch.nn.Module):
    """Always predicts class 0 with certainty, whatever the input."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[10.0, 0.0]]).expand(len(x), 2) + 0.0 * x.sum()


def test_c_search_terminates_and_reports_failure() -> None:
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(kappa=0.1, steps=3, lr=0.01, p=0.7, c_low=0.001, c_high=1e5)
    result = learn_delta(
        [_Unfoolable()], x, search="arithmetic", search_rounds=50, tolerance=0.01, **kwargs
    )
    assert not result.reached and result.fooled_share == 0.0
    # Never fooled, so c only grows: the arithmetic bracket [c, 1e5] closes within 1% fast.
    assert result.rounds < 50
    geometric = learn_delta(
        [_Unfoolable()], x, search="geometric", search_rounds=6, tolerance=1e-9, **kwargs
    )
    assert geometric.rounds == 6  # the round limit ends a search that cannot converge


def test_learning_is_reproducible_under_a_seed(split, tmp_path) -> None:
    deltas = []
    for _ in range(2):
        ctx = Context(torch.device("cpu"), 7, Cache(enabled=False), 64)
        uep = DEFENSES.create("uep", {**FAST, "cnn_steps": 20, "steps": 5, "search_rounds": 2})
        uep.fit(split.fit, ctx)
        deltas.append(uep.delta)
    assert torch.equal(deltas[0], deltas[1])


def test_face_mode_perturbs_only_haar_boxes_and_recovers_from_stored_boxes(
    learned, tmp_path
) -> None:
    uep, _ = learned
    ctx = Context(torch.device("cpu"), 0, Cache(tmp_path / "cache"), 8)
    faces = DEFENSES.create("uep", {**FAST, "region": "faces"})
    faces.delta, faces._key = uep.delta, "test"
    x = to_tensor(data.astronaut()[None])
    y = quantise(faces.protect(x, ["astronaut"], ctx))
    boxes = faces._boxes["astronaut"]
    assert len(boxes) >= 1
    inside = torch.zeros_like(x, dtype=torch.bool)
    for bx, by, bw, bh in boxes:
        inside[..., by : by + bh, bx : bx + bw] = True
    assert torch.equal(y[~inside], x[~inside])
    assert (y[inside] - x[inside]).abs().mean() * 255 > 2
    # A fresh instance (the owner, later) finds the boxes in the store and recovers.
    owner = DEFENSES.create("uep", {**FAST, "region": "faces"})
    owner.delta, owner._key = uep.delta, "test"
    r = quantise(owner.recover(y, ["astronaut"], ctx))
    # within the boxes only, half-level rounding times the map's slope ratio: 0.004 levels
    # on average over the whole photo (21.8 inside the box before recovery)
    assert float(((r - x).abs() * 255).mean()) < 0.2
    with pytest.raises(PrivbenchError, match="no face boxes stored for 'other'"):
        owner.recover(y, ["other"], ctx)
    assert owner.fit_report()["box_bytes"] == 16 * len(boxes)


def test_held_out_split_is_disjoint() -> None:
    s = DATASETS.create("lfw-subset", {"fit_faces": 30}).load(seed=0)
    assert len(s.fit) == 30 and len(s.probe) == 70
    assert not set(s.fit.ids) & set(s.probe.ids)
    assert s.enroll.ids == s.probe.ids
    np.testing.assert_array_equal(
        DATASETS.create("lfw-subset", {"fit_faces": 30}).load(seed=0).fit.labels, s.fit.labels
    )


def test_face_mode_latency_times_fresh_detection(learned, split, tmp_path, monkeypatch) -> None:
    """The timing protects ids never seen before: every timed image runs the face detector,
    even after the probes were protected (and their boxes remembered) once already."""
    import defenses.uep as uep_module
    from harness.core.keys import benchmark_key
    from harness.engine.execute import UnitRunner
    from harness.engine.latency import TIMED_BATCHES, time_protect
    from harness.engine.suite import load_suite
    from tests.conftest import write_suite

    uep, ctx = learned
    faces = DEFENSES.create("uep", {**FAST, "region": "faces"})
    faces.delta, faces._key = uep.delta, "test"
    probe = split.probe.subset(range(8))
    faces.protect(to_tensor(probe.images), probe.ids, ctx)  # boxes now remembered per id
    calls = []
    detect = uep_module.haar_face_boxes
    monkeypatch.setattr(uep_module, "haar_face_boxes", lambda img: calls.append(1) or detect(img))
    text = "dataset: lfw-subset\nrecognizers: [yunet]\ndefenses: [none]\nbatch_size: 4\n"
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    runner = UnitRunner(suite, torch.device("cpu"), benchmark_key(suite.seed))
    timing = time_protect(faces, probe, runner.ctx, suite.smoke)
    assert len(timing["ms_per_image"]) == TIMED_BATCHES
    assert len(calls) == (1 + TIMED_BATCHES) * 4
