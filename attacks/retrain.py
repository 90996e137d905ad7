"""The platform retrains on protected photos: the adaptive counter-attack every defense must
face.

The platform collects photos protected the owner's way, with their true labels, and adapts its
recognizer to them before classifying the probes: the "robust CNN" counter-attack of Rajabi et
al. (PETS 2021, §6.3) and the robust training of FaceCure (Radiya-Dixit et al., ICLR 2022).
For a conceal suite it asks whether the auxiliary learns to see through the protective
U-Net. The protected photos are the suite's fit split after the defense and the upload (the
runner passes them to :meth:`Retrain.adapt`).

- Classifiers with a torch model: a copy is fine-tuned (Adam, cross-entropy on the true labels,
  ``steps`` batches drawn with replacement under the run seed; batch-norm statistics adapt
  too). The suite's own model is never touched.
- Gallery identifiers: the protected photos are enrolled as further templates of their
  identities (nothing to fine-tune without the training set of the embedding).
- Detectors, and models without gradients: not applicable; their cells are listed as skipped.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from harness.api.contracts import (
    EVERY_DEFENSE,
    Context,
    CounterAttack,
    ImageSet,
    Recognizer,
    derive_seed,
)
from harness.core.params import Param
from harness.toolkit.imaging import to_tensor
from recognizers.gallery import GalleryIdentifier


class Retrain(CounterAttack):
    """Adapt the recognizer to protected photos with their true labels (adaptive)."""

    knows = "parameters"  # labelled photos protected with the deployed defense
    # It retrains on photos protected with whatever defense is deployed, so it adapts to any.
    targets: ClassVar[frozenset[str]] = frozenset({EVERY_DEFENSE})

    version: ClassVar[str] = "1"
    smoke: ClassVar[dict[str, Any]] = {"steps": 5}
    params: ClassVar[dict[str, Param]] = {
        "steps": Param(int, 200, "fine-tuning steps (classifiers)", low=1, high=1_000_000),
        "batch": Param(int, 64, "images per fine-tuning step", low=1, high=4096),
        "lr": Param(float, 1e-3, "Adam learning rate", low=0.0, low_open=True, high=1.0),
    }

    def not_applicable(self, recognizer: Recognizer) -> str | None:
        if isinstance(recognizer, GalleryIdentifier):
            return None
        if recognizer.kind == "detector":
            return "a detector has no labels to retrain on"
        if recognizer.torch_module() is None or not recognizer.has_logits():
            return "the classifier has no trainable torch model"
        return None

    def adapt(self, recognizer: Recognizer, protected_train: ImageSet, ctx: Context) -> Recognizer:
        if isinstance(recognizer, GalleryIdentifier):
            return recognizer.with_templates(protected_train, ctx)
        return self.fine_tune(recognizer, protected_train, ctx)

    def fine_tune(
        self, recognizer: Recognizer, protected_train: ImageSet, ctx: Context
    ) -> Recognizer:
        """A fine-tuned copy of ``recognizer``."""
        adapted = copy.deepcopy(recognizer)
        model = adapted.torch_module()
        assert model is not None
        index = adapted.logit_index(protected_train.labels)
        usable = np.flatnonzero(index >= 0)
        if len(usable) == 0:
            return adapted
        images = to_tensor(protected_train.images[usable], ctx.device)
        target = torch.from_numpy(index[usable]).to(ctx.device)
        gen = ctx.torch_generator("retrain", *protected_train.ids[:1])
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(derive_seed(ctx.seed, "retrain", "dropout"))
            for p in model.parameters():
                p.requires_grad_(True)
            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
            model.train()
            for _ in range(self.steps):
                idx = torch.randint(0, len(images), (self.batch,), generator=gen).to(ctx.device)
                loss = F.cross_entropy(adapted.logits(images[idx]), target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
        return adapted
