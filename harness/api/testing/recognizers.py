"""Checks of recognizers: the prediction contract, scores that decide like predict, seeded
determinism, and gradients for those that offer themselves as white-box surrogates."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.api.testing.case import Case

RECOGNIZER_KINDS = ("identifier", "detector", "classifier")


def assert_labels(case: Case, predictions: Any, n: int) -> None:
    """int64 [n], each a label (≥ 0) or −1 (no face found / rejected)."""
    where = f"{case.id}: predict"
    assert isinstance(predictions, np.ndarray), f"{where} returned a {type(predictions).__name__}"
    assert predictions.dtype == np.int64, f"{where} returned {predictions.dtype}, not int64"
    assert predictions.shape == (n,), f"{where} returned shape {predictions.shape}, not ({n},)"
    assert bool((predictions >= -1).all()), f"{where} returned labels below −1: {predictions}"


def check_predictions(case: Case) -> None:
    """predict gives int64 [B] labels, −1 allowed, for a batch and for a single photo, and
    leaves its input unchanged; the kind is declared; with scores, decide(scores(x)) ==
    predict(x) and the scores are finite [B, K]."""
    recognizer, ctx = case.ready()
    images, _ = case.inputs()
    kept = images.clone()
    predictions = recognizer.predict(images, ctx)
    assert_labels(case, predictions, len(images))
    assert bool((images == kept).all()), f"{case.id}: predict changed its input in place"
    assert_labels(case, recognizer.predict(images[:1], ctx), 1)
    assert recognizer.kind in RECOGNIZER_KINDS, f"{case.id}: kind {recognizer.kind!r}"
    assert isinstance(recognizer.runs_on_host(), bool), f"{case.id}: runs_on_host not a bool"
    if not type(recognizer).has_scores():
        return
    scores = np.asarray(recognizer.scores(images, ctx))
    assert scores.ndim == 2 and len(scores) == len(images), f"{case.id}: scores {scores.shape}"
    assert np.isfinite(scores).all(), f"{case.id}: non-finite scores"
    decided = recognizer.decide(scores)
    assert np.array_equal(decided, predictions), (
        f"{case.id}: decide(scores(x)) = {decided} but predict(x) = {predictions}"
    )


def check_predict_determinism(case: Case) -> None:
    """Two instances, each fitted with the same seed from an empty cache (the one the other
    checks use and a fresh one), predict the same labels."""
    recognizer, ctx = case.ready()
    images, _ = case.inputs()
    fresh = case.context(cache="fresh")
    answers = [recognizer.predict(images, ctx), case.fitted(fresh).predict(images, fresh)]
    assert np.array_equal(*answers), f"{case.id}: two runs predict {answers[0]} and {answers[1]}"


def offers_gradients(case: Case) -> bool:
    """Whether the configuration says it can be a white-box surrogate."""
    return case.method_class.gradient_problem(case.resolve()) is None


def check_gradients_reach_the_input(case: Case) -> None:
    """A recognizer without a ``gradient_problem`` gives differentiable ``logits``
    (classifiers) or ``embed_torch`` (identifiers) [B, K] with a finite, non-zero gradient
    with respect to the image."""
    import torch

    recognizer, _ = case.ready()
    images, _ = case.inputs()
    x = images.clone().requires_grad_(True)
    # by kind: where the contracts declare both hooks with defaults, both are callable
    name = "logits" if recognizer.kind == "classifier" else "embed_torch"
    hook = recognizer.logits if recognizer.kind == "classifier" else recognizer.embed_torch
    with torch.enable_grad():
        out = hook(x)
        assert out.ndim == 2 and len(out) == len(x), f"{case.id}: {name} gave {tuple(out.shape)}"
        # a fixed random direction: a normalised embedding's squared norm would have none
        direction = torch.randn(out.shape, generator=torch.Generator().manual_seed(case.seed))
        (out.float() * direction).sum().backward()
    grad = x.grad
    assert grad is not None, f"{case.id}: no gradient of {name} reaches the input"
    assert bool(torch.isfinite(grad).all()), f"{case.id}: non-finite gradient of {name}"
    assert float(grad.abs().sum()) > 0.0, f"{case.id}: the gradient of {name} is zero"
