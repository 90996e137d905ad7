"""Checks of what defenses and counter-attacks do to images: the output contract, seeded
determinism, batch independence, recovery, keys, and a counter-attack's model side."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

from harness.api.contracts import Context, CounterAttack, Recognizer
from harness.api.testing.case import CASE_KEY, CHECK_KEY, Case
from harness.core.errors import PrivbenchError
from harness.core.identity import method_identity
from harness.core.keys import Keyring


def process(case: Case, method: Any, ctx: Context, images: Any, ids: list[str]) -> Any:
    """``protect`` (defense) or ``transform`` (counter-attack)."""
    if case.kind == "defense":
        return method.protect(images, ids, ctx)
    return method.transform(images, ctx)


def assert_image_batch(case: Case, out: Any, like: Any, what: str) -> None:
    """float32 [B, 3, H, W] like ``like``, on its device, finite, within [0, 1]."""
    import torch

    where = f"{case.id}: {what}"
    assert isinstance(out, torch.Tensor), f"{where} returned a {type(out).__name__}"
    assert out.dtype == torch.float32, f"{where} returned {out.dtype}, not float32"
    assert out.shape == like.shape, f"{where} returned {tuple(out.shape)}, not {tuple(like.shape)}"
    assert out.device == like.device, f"{where} moved the images to {out.device}"
    assert bool(torch.isfinite(out).all()), f"{where} returned non-finite values"
    low, high = float(out.min()), float(out.max())
    assert low >= 0.0 and high <= 1.0, f"{where} returned values in [{low}, {high}], not [0, 1]"


def check_output_contract(case: Case) -> None:
    """Protected (transformed) images are float32 [B, 3, H, W] in [0, 1], like the input,
    which stays unchanged; a batch of one photo too."""
    method, ctx = case.ready()
    images, ids = case.inputs()
    kept = images.clone()
    what = "protect" if case.kind == "defense" else "transform"
    out = process(case, method, ctx, images, ids)
    assert_image_batch(case, out, images, what)
    assert bool((images == kept).all()), f"{case.id}: changed its input images in place"
    one = process(case, method, ctx, images[:1], ids[:1])
    assert_image_batch(case, one, images[:1], f"{what} of a single photo")


def check_defense_reports(case: Case) -> None:
    """A fitted defense declares its objective, reports its fit as named finite numbers (the
    records carry them), names its surrogates' weights as strings, and its roles as labels."""
    defense, _ = case.ready()
    assert defense.objective in ("evade", "conceal", "any"), f"{case.id}: {defense.objective!r}"
    report = defense.fit_report()
    assert isinstance(report, dict), f"{case.id}: fit_report is a {type(report).__name__}"
    for key, value in report.items():
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        assert isinstance(key, str) and finite, f"{case.id}: fit_report {key!r}: {value!r}"
    weights = defense.surrogate_weights()
    assert all(isinstance(w, str) for w in weights), f"{case.id}: surrogate_weights {weights}"
    roles = type(defense).recognizer_roles(case.resolve())
    assert all(isinstance(v, (str, type(None))) for v in roles.values()), f"{case.id}: {roles}"


def check_seeded_determinism(case: Case) -> None:
    """Two instances, each fitted with the same seed from an empty cache (the case's shared
    one, first filled by the one the other checks use, and a fresh one), give the same images
    bit for bit (the same computation on the same machine)."""
    method, ctx = case.ready()
    images, ids = case.inputs()
    first = process(case, method, ctx, images, ids)
    fresh = case.context(cache="fresh")
    second = process(case, case.fitted(fresh), fresh, images, ids)
    gap = float((first.double() - second.double()).abs().max())
    assert gap == 0.0, f"{case.id}: two runs with seed {case.seed} differ by up to {gap:.3g}"


def check_batch_independence(case: Case) -> None:
    """A photo's output does not depend on its batch: alone, or in the batch reversed, it
    comes out within the case's ``batch_tolerance`` of its output in the batch."""
    method, ctx = case.ready()
    images, ids = case.inputs()
    together = process(case, method, ctx, images, ids).double()
    reverse = list(range(len(ids)))[::-1]
    flipped = process(case, method, ctx, images[reverse], [ids[i] for i in reverse]).double()
    gaps = [float((flipped[reverse] - together).abs().max())]
    for i in range(len(ids)):
        alone = process(case, method, ctx, images[i : i + 1], ids[i : i + 1]).double()
        gaps.append(float((alone - together[i : i + 1]).abs().max()))
    assert max(gaps) <= case.batch_tolerance, (
        f"{case.id}: a photo processed alone or in another order differs from the batch by "
        f"{max(gaps):.3g} > batch_tolerance {case.batch_tolerance:.3g}"
    )


def _levels(images: Any) -> Any:
    import torch

    return torch.round(images.detach().clamp(0.0, 1.0).double() * 255.0)


def check_recovery(case: Case) -> None:
    """Reversible defenses: recover(protect(x)) lands on x's 8-bit levels exactly, and after
    an 8-bit upload misses them by at most the case's ``recovery_levels``."""
    defense, ctx = case.ready()
    images, ids = case.inputs()  # on the 8-bit grid
    protected = defense.protect(images, ids, ctx)
    original = _levels(images)
    recovered = _levels(defense.recover(protected, ids, ctx))
    off = float((recovered - original).abs().max())
    assert off == 0.0, f"{case.id}: recover(protect(x)) misses x by {off:.0f} levels"
    if case.recovery_levels is None:
        return
    upload = _levels(protected).float() / 255.0
    off = float((_levels(defense.recover(upload, ids, ctx)) - original).abs().max())
    assert off <= case.recovery_levels, (
        f"{case.id}: after an 8-bit upload the recovery misses x by {off:.0f} levels "
        f"> the promised {case.recovery_levels}"
    )


def key_needles(key: bytes) -> list[str]:
    """How a key could show in text: hex (either case, or its first half), base64, bytes repr."""
    text = [key.hex(), key.hex().upper(), key[:8].hex(), base64.b64encode(key).decode()]
    return [*text, repr(key)[2:-1]]


def check_no_key_leaks(case: Case) -> None:
    """Keyed defenses: the output depends on the key; without a key protect refuses with a
    PrivbenchError; and the key shows in none of repr, str, attributes, identity,
    dependencies, fit report, context or that error."""
    keyring = Keyring(CHECK_KEY, None, source="conformance check key")
    ctx = case.context(cache="keyed", keyring=keyring)
    defense = case.fitted(ctx)
    images, ids = case.inputs()
    protected = defense.protect(images, ids, ctx)
    texts = {
        "repr": repr(defense),
        "str": str(defense),
        "attributes": repr(vars(defense)),
        "identity": json.dumps(method_identity(defense), default=repr),
        "dependencies": repr(defense.dependencies()),
        "fit report": repr(defense.fit_report()),
        "context": repr(ctx),
    }
    try:
        defense.protect(images, ids, case.context(cache="keyed", keyring=None))
    except PrivbenchError as exc:
        texts["error without a key"] = str(exc)
    else:
        raise AssertionError(f"{case.id}: keyed, yet it protects without a key")
    other = defense.protect(images, ids, case.context(cache="keyed", keyring=CASE_KEY))
    assert not bool((other == protected).all()), f"{case.id}: keyed, yet the key changes nothing"
    for where, text in texts.items():
        for needle in key_needles(CHECK_KEY):
            assert needle not in text, f"{case.id}: the key shows in its {where}"


def _weights(recognizer: Recognizer) -> dict[str, Any]:
    module = recognizer.torch_module()
    return {} if module is None else {k: v.clone() for k, v in module.state_dict().items()}


def model_side_applies(case: Case) -> bool:
    cls = case.method_class
    return case.recognizer is not None and (cls.adapts() or cls.wrap is not CounterAttack.wrap)


def check_model_side(case: Case) -> None:
    """``adapt`` and ``wrap`` give a recognizer whose predictions keep the contract, and leave
    the given recognizer as it was (it is shared by every cell); ``not_applicable`` is a reason
    or None."""
    attack, ctx = case.ready()
    assert case.recognizer is not None
    given = case.recognizer(ctx)
    images, _ = case.inputs()
    before, weights = given.predict(images, ctx), _weights(given)
    reason = attack.not_applicable(given)
    if reason is not None:
        assert isinstance(reason, str) and reason.strip(), f"{case.id}: not_applicable {reason!r}"
        return
    model = attack.adapt(given, case.data().fit, ctx) if type(attack).adapts() else given
    model = attack.wrap(model)
    assert isinstance(model, Recognizer), f"{case.id}: gave a {type(model).__name__}"
    predictions = model.predict(images, ctx)
    assert isinstance(predictions, np.ndarray) and predictions.dtype == np.int64, (
        f"{case.id}: its recognizer's predictions are not an int64 array"
    )
    assert predictions.shape == (len(images),), f"{case.id}: predictions {predictions.shape}"
    after = _weights(given)
    assert all(bool((after[k] == v).all()) for k, v in weights.items()), (
        f"{case.id}: changed the weights of the recognizer it was given"
    )
    assert np.array_equal(given.predict(images, ctx), before), (
        f"{case.id}: changed the predictions of the recognizer it was given"
    )
