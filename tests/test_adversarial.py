"""Adversarial defenses against a white-box surrogate (PGD, least-likely, P-FGSM, C&W) and
their composition: agreement with ART and foolbox, budgets after quantisation, target rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defenses.adversarial import kurakin_iterations, sigma_tail
from defenses.art_adapter import art_classifier, batch_seed, quantise_in_ball, seeded_numpy
from harness.api.contracts import Context
from harness.api.registry import DATASETS, DEFENSES
from harness.core.cache import Cache
from harness.core.errors import ParamError
from harness.toolkit.imaging import to_tensor
from tests.conftest import UNIT_ROUNDOFF, small_cnn_logit_bound

SURROGATE = {"surrogate": "small-cnn", "surrogate_params": {"steps": 150}}


@pytest.fixture(scope="module")
def digits():
    return DATASETS.create("digits", {"max_probes": 24}).load(0)


@pytest.fixture(scope="module")
def module_ctx(tmp_path_factory):
    return Context(torch.device("cpu"), 0, Cache(tmp_path_factory.mktemp("adv-cache")), 24)


def _defense(name: str, digits, ctx, **params):
    d = DEFENSES.create(name, {**SURROGATE, **params})
    d.fit(digits.fit, ctx)
    return d


def test_pgd_is_arts_projected_gradient_descent(digits, module_ctx) -> None:
    from art.attacks.evasion import ProjectedGradientDescent

    pgd = _defense("pgd", digits, module_ctx, eps=16, iterations=5)
    x = to_tensor(digits.probe.images, "cpu")
    ours = pgd.perturb(x, module_ctx)
    y = pgd.scores(x).argmax(1).numpy()
    attack = ProjectedGradientDescent(
        art_classifier(pgd.surrogate, tuple(x.shape[1:]), torch.device("cpu")),
        norm=np.inf,
        eps=16 / 255,
        eps_step=4 / 255,
        max_iter=5,
        num_random_init=1,
        batch_size=len(x),
        verbose=False,
    )
    with seeded_numpy(batch_seed(module_ctx, "pgd", x)):
        direct = attack.generate(x=x.numpy(), y=y)
    # The same ART attack on the same surrogate, batch, labels and numpy seed: the same
    # arithmetic in the same shapes, so the same bits (a tolerance would not help anyway: a
    # flipped gradient sign moves a pixel by a whole step of 4/255).
    np.testing.assert_array_equal(ours.numpy(), direct)
    np.testing.assert_array_equal(
        pgd.protect(x, digits.probe.ids, module_ctx).numpy(),
        quantise_in_ball(torch.from_numpy(direct), x, 16).numpy(),
    )


def test_pgd_fooling_agrees_with_foolbox_linf_pgd(digits, module_ctx) -> None:
    import foolbox as fb

    pgd = _defense("pgd", digits, module_ctx, eps=32, iterations=20, random_start=False)
    x = to_tensor(digits.probe.images, "cpu")
    clean = pgd.scores(x).argmax(1)
    ours = (pgd.scores(pgd.protect(x, digits.probe.ids, module_ctx)).argmax(1) != clean).numpy()
    model = fb.PyTorchModel(pgd.surrogate.module().eval(), bounds=(0, 1))
    attack = fb.attacks.LinfPGD(rel_stepsize=0.25, steps=20, random_start=False)
    _, adv, _ = attack(model, x, clean, epsilons=32 / 255)
    theirs = (pgd.scores(adv).argmax(1) != clean).numpy()
    # Same model, budget, step and steps; the two differ only in float details and our
    # rounding to levels (≤ 0.5/255 a pixel, against a 32/255 budget), so the fooled shares
    # must agree to within a few images of 24. (Both fool all 24 on AVX-512, AVX2 and
    # portable kernels: the bars sit 12 and 3 images away.)
    assert ours.mean() > 0.5 and theirs.mean() > 0.5
    assert abs(ours.mean() - theirs.mean()) <= 3 / len(x)


@pytest.mark.parametrize("eps", [0.5, 2.0, 2.5, 7.65, 8.0])
def test_eps_ball_holds_after_uint8_quantisation(eps: float) -> None:
    gen = torch.Generator().manual_seed(1)
    clean = torch.rand(4, 3, 9, 9, generator=gen)  # off the uint8 grid, like a chained input
    adv = (clean + (torch.rand(4, 3, 9, 9, generator=gen) - 0.5) * 0.3).clamp(0, 1)
    q = quantise_in_ball(adv, clean, eps).double() * 255
    levels = torch.round(q)  # what the upload stores
    # a level k ≤ 255 stored as float32(k/255) is within 255·u = 255·2^-24 of k after ·255
    # (the product is exact in float64)
    assert float((q - levels).abs().max()) <= 255 * 2.0**-24
    # quantise_in_ball clips to the levels within eps + 1e-9 of clean·255, which it computes
    # exactly in float64 (a float32 times 255 needs 24 + 8 bits): the bound is its own slack
    assert float((levels - clean.double() * 255).abs().max()) <= eps + 1e-9


def test_defenses_keep_the_budget_on_the_upload(digits, module_ctx) -> None:
    x = to_tensor(digits.probe.images, "cpu")
    for name, params in (("pgd", {"eps": 3}), ("least-likely", {"eps": 3}), ("p-fgsm", {"eps": 3})):
        out = _defense(name, digits, module_ctx, **params).protect(x, digits.probe.ids, module_ctx)
        uploaded = torch.round(out * 255)
        # out·255 is a level exactly (float32(k/255)·255 rounds back to k for every k ≤ 255)
        # and within 3 + 1e-9 of x·255 computed exactly (quantise_in_ball); the float32
        # product x·255 here errs by ≤ 255·2^-24 from that
        assert float((uploaded - x * 255).abs().max()) <= 3 + 1e-9 + 255 * 2.0**-24, name


def test_least_likely_targets_the_argmin_with_kurakins_schedule(digits, module_ctx) -> None:
    ll = _defense("least-likely", digits, module_ctx, eps=8)
    probs = torch.tensor([[0.5, 0.1, 0.3, 0.05, 0.05], [0.01, 0.2, 0.7, 0.08, 0.01]])
    assert ll.targets(probs).tolist() == [3, 0]  # first of the tied minima
    assert ll.schedule() == (1.0, 10, False)
    assert kurakin_iterations(8) == 10 and kurakin_iterations(2) == 2
    assert kurakin_iterations(32) == 36
    x = to_tensor(digits.probe.images, "cpu")
    # the very call strong.protect makes on this batch (the same surrogate weights, from the
    # cache, and shapes): the same class even where two classes are nearly least likely
    target = ll.scores(x).argmin(1)
    # At 1 level a step 16 to 22 of 24 reached the target, depending on the kernels the
    # surrogate was trained with; at 2 levels all 24 on AVX-512, AVX2 and portable kernels.
    strong = _defense("least-likely", digits, module_ctx, eps=64, iterations=40, step=2.0)
    hit = strong.scores(strong.protect(x, digits.probe.ids, module_ctx)).argmax(1) == target
    assert hit.float().mean() > 0.5  # moved toward the least likely class, not just away


def test_sigma_tail_on_a_hand_made_vector() -> None:
    p = np.array([0.05, 0.6, 0.004, 0.3, 0.046])
    # descending: 1 (0.6), 3 (0.9), 0 (0.95), 4 (0.996), 2 (1.0)
    assert sigma_tail(p, 0.99).tolist() == [4, 2]
    assert sigma_tail(p, 0.9).tolist() == [0, 4, 2]
    assert sigma_tail(p, 0.5).tolist() == [3, 0, 4, 2]  # the top class is never a target
    assert sigma_tail(np.array([0.999, 0.0005, 0.0005]), 0.99).tolist() == [1, 2]


def test_p_fgsm_target_rules_and_seeded_draws(digits, module_ctx) -> None:
    x = to_tensor(digits.probe.images[:8], "cpu")
    probs = torch.tensor([[0.05, 0.6, 0.004, 0.3, 0.046]]).repeat(8, 1)
    paper = DEFENSES.create("p-fgsm", {**SURROGATE, "sigma": 0.99})
    released = DEFENSES.create("p-fgsm", {**SURROGATE, "target_rule": "released-code"})
    t_paper = paper.draw_targets(probs, x, module_ctx)
    t_released = released.draw_targets(probs, x, module_ctx)
    assert set(t_paper) <= {4, 2}
    assert set(t_released) <= {0, 2, 3, 4} and 1 not in t_released
    assert np.array_equal(t_paper, paper.draw_targets(probs, x, module_ctx))  # seeded
    many = to_tensor(np.repeat(digits.probe.images[:1], 1, 0), "cpu")
    spread = {
        int(released.draw_targets(probs[:1], many + k / 255.0, module_ctx)[0]) for k in range(40)
    }
    assert len(spread) >= 3  # released-code draws over every non-top class


def test_p_fgsm_stops_at_the_target_probability(digits, module_ctx) -> None:
    pf = _defense("p-fgsm", digits, module_ctx, eps=64, stop=0.9, iterations=60)
    x = to_tensor(digits.probe.images[:8], "cpu")
    target = pf.draw_targets(pf.scores(x), x, module_ctx)
    adv, steps = pf.perturb(x, module_ctx)
    # perturb decided p > 0.9 on its own float32 evaluation at these very pixels (a stopped
    # image no longer moves); this one may differ in the last bits. Their logits differ by
    # ≤ 2δ (float32_logit_bound), so log p_t by ≤ 4δ (log-softmax is 2-Lipschitz in the
    # max norm), and each softmax rounds by ≤ (C + 4)·u relative (C exponentials, a C-term
    # sum, a division).
    _, delta = small_cnn_logit_bound(pf.surrogate.recognizer, adv)
    n_classes = delta.shape[1]
    slack = 4 * delta.max(1).values + 2 * (n_classes + 4) * UNIT_ROUNDOFF
    p = pf.scores(adv)[torch.arange(8), torch.from_numpy(target)].double()
    reached = p > 0.9 * torch.exp(-slack)
    assert steps.max() <= 60
    assert (steps < 60).any()  # some image did stop early, so the next line checks something
    assert bool(reached[torch.from_numpy(steps < 60)].all())  # stops only at its target


def test_cw_l2_runs_through_art_and_stays_on_the_grid(digits, module_ctx) -> None:
    cw = _defense("cw-l2", digits, module_ctx, iterations=3, binary_search_steps=2)
    x = to_tensor(digits.probe.images[:4], "cpu")
    out = cw.protect(x, digits.probe.ids[:4], module_ctx)
    assert out.shape == x.shape and torch.equal(out * 255, torch.round(out * 255))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("pgd", {"eps": 300}, "out of range"),
        ("pgd", {"eps": 0.2}, "out of range"),
        ("pgd", {"surrogate": "yunet"}, "detector"),
        ("pgd", {"surrogate": "haar"}, "detector"),
        ("pgd", {"surrogate": "sface"}, "backend: torch"),
        ("p-fgsm", {"surrogate": "dlib"}, "no gradients"),
        ("least-likely", {"surrogate": "small-cnn", "surrogate_params": {"widht": 8}}, "width"),
        ("pgd", {"surrogate": "smal-cnn"}, "did you mean small-cnn"),
        ("pgd", {"eps": 2, "step": 5}, "twice eps"),
        ("euclidean", {"granularity": [5, 5]}, "three positive integers"),
        ("chain", {"steps": []}, "at least one"),
        ("chain", {"steps": ["ying-contrast", {"name": "pgd", "params": {"eps": -1}}]}, "steps[1]"),
        ("chain", {"steps": [{"name": "chain", "params": {"steps": ["none"]}}]}, "cannot contain"),
    ],
)
def test_bad_parameters_are_refused_at_validation(name, params, message) -> None:
    with pytest.raises(ParamError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DEFENSES.resolve(name, params)


def test_a_suite_with_a_gradient_free_surrogate_names_file_and_field(tmp_path) -> None:
    from harness.core.errors import SuiteError
    from harness.engine.suite import load_suite

    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "dataset: digits\nrecognizers: [small-cnn]\n"
        "defenses:\n  - {name: pgd, params: {surrogate: sface}}\n",
        encoding="utf-8",
    )
    with pytest.raises(SuiteError) as err:
        load_suite(suite)
    assert "bad.yaml" in str(err.value) and "backend: torch" in str(err.value)


def test_chain_applies_steps_in_order_each_on_the_previous_output(ctx) -> None:
    chain = DEFENSES.create(
        "chain",
        {"steps": [{"name": "pixelate", "params": {"block": 4}}, "ying-contrast"]},
    )
    rng = np.random.default_rng(0)
    x = to_tensor(rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8), "cpu")
    pix = DEFENSES.create("pixelate", {"block": 4})
    ying = DEFENSES.create("ying-contrast", {})
    out = chain.protect(x, ["a", "b"], ctx)
    assert torch.equal(out, ying.protect(pix.protect(x, ["a", "b"], ctx), ["a", "b"], ctx))
    assert not torch.equal(out, pix.protect(ying.protect(x, ["a", "b"], ctx), ["a", "b"], ctx))
    assert not chain.keyed and not chain.reversible
