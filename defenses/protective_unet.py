"""The protective U-Net defense (Ye et al., ACM MMSys 2022): a generator that keeps one
trusted *target* classifier right and makes an *auxiliary* classifier, and people, wrong.

Objective ``conceal``. The target and auxiliary are classifiers of the suite, named by their
labels; the generator trains against them as fitted on the split (frozen), on the owner's fit
split with its true labels, of which a seeded ``val_fraction`` is held out to choose the best
epoch. With no auxiliary (or auxiliary = target) the auxiliary term is dropped: the paper's
"no auxiliary" column. The trained generator is cached under the target's and auxiliary's
identities, the fit data and every training parameter, so a sweep over pairs trains each pair
once. Architecture: :mod:`defenses.unet`; loss and schedule: :mod:`defenses.unet_training`.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch

from defenses.unet import ProtectiveUNet, parameter_count
from defenses.unet_training import TrainConfig, train_generator
from harness.api.contracts import Context, Defense, DefenseObjective, ImageSet, SuiteRecognizer
from harness.core.code_version import declare_kind_code
from harness.core.errors import ParamError, PrivbenchError
from harness.core.identity import method_identity
from harness.core.params import Param
from harness.toolkit.imaging import to_tensor

# The cache entries this module computes itself: their keys hold its code version.
declare_kind_code(["protective-unet"], [__name__])

AUGMENTATIONS = ("crop+flip", "crop", "none")


class ProtectiveUNetDefense(Defense):
    """Trains the generator against the suite's ``target`` (and ``auxiliary``) classifier.

    Defaults are the paper's (§4.1.3 and its code): 100 epochs, batches of 256, AdamW at 5e-3
    with weight decay 5e-4, 30% warm-up then cosine per step, SSIM weight 0.5, random crop
    (padding 4) and horizontal flip, width 32 (7,766,051 parameters), mixed precision on CUDA.
    """

    objective: ClassVar[DefenseObjective] = "conceal"
    family: ClassVar[str | None] = "generative"  # a U-Net writes the perturbation
    version: ClassVar[str] = "1"
    smoke: ClassVar[dict[str, Any]] = {"epochs": 1, "batch": 32}
    params: ClassVar[dict[str, Param]] = {
        "target": Param(str, None, "(required) label of the suite classifier that must stay right"),
        "auxiliary": Param(
            str,
            None,
            "label of the suite classifier to blind; none or the target itself: the "
            "no-auxiliary variant",
        ),
        "epochs": Param(int, 100, "training epochs", low=1, high=100_000),
        "batch": Param(
            int,
            256,
            "images per optimiser step (the last partial batch is dropped)",
            low=1,
            high=65536,
        ),
        "lr": Param(float, 5e-3, "peak AdamW learning rate", low=0.0, low_open=True, high=1.0),
        "weight_decay": Param(float, 5e-4, "AdamW weight decay", low=0.0, high=1.0),
        "warmup": Param(float, 0.3, "share of the steps spent warming up", low=0.0, high=1.0),
        "ssim_weight": Param(float, 0.5, "weight of the signed SSIM term", low=0.0, high=100.0),
        "width": Param(
            int, 32, "channels of the first U-Net stage (32 in the paper)", low=1, high=256
        ),
        "augment": Param(
            str,
            "crop+flip",
            "training augmentation: random crop with 4-pixel zero padding, and horizontal flip",
            choices=AUGMENTATIONS,
        ),
        "val_fraction": Param(
            float,
            0.1,
            "share of the fit split held out for validation",
            low=0.0,
            high=0.9,
            low_open=True,
        ),
        "amp": Param(bool, True, "mixed precision (float16) when training on CUDA"),
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if not params.get("target"):
            raise ParamError(
                "protective-unet.target: required; the label of a classifier of the suite"
            )

    @classmethod
    def recognizer_roles(cls, params: dict[str, Any]) -> dict[str, str | None]:
        aux = params.get("auxiliary")
        return {"target": params["target"], "auxiliary": aux if aux != params["target"] else None}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.generator: ProtectiveUNet | None = None
        self._identities: dict[str, str] = {}
        self._report: dict[str, float] = {}

    def dependencies(self) -> dict[str, Any]:
        """The fitted target's and auxiliary's cache identities (set by :meth:`fit`)."""
        return {"recognizers": dict(self._identities)}

    def _suite_model(self, role: str, ctx: Context) -> SuiteRecognizer | None:
        label = self.recognizer_roles(self.config)[role]
        if label is None:
            return None
        found = ctx.recognizers.get(label)
        if found is None:
            raise PrivbenchError(
                f"protective-unet.{role}: the suite has no fitted recognizer labelled {label!r} "
                f"(fitted: {', '.join(ctx.recognizers) or 'none'}); did it fail to fit?"
            )
        if found.model.kind != "classifier" or not found.model.has_logits():
            raise PrivbenchError(
                f"protective-unet.{role}: {label!r} is not a differentiable classifier"
            )
        return found

    def fit(self, train: ImageSet, ctx: Context) -> None:
        target = self._suite_model("target", ctx)
        auxiliary = self._suite_model("auxiliary", ctx)
        assert target is not None
        self._identities = {"target": target.identity}
        if auxiliary is not None:
            self._identities["auxiliary"] = auxiliary.identity
        key = {
            "generator": method_identity(self),
            "fit": train.fingerprint(),
            "seed": ctx.seed,
        }
        state = dict(
            ctx.cache.torch_state(
                "protective-unet", key, lambda: self._train(train, target, auxiliary, ctx)
            )
        )
        self._report = {
            k.removeprefix("_report."): float(state.pop(k))
            for k in list(state)
            if k.startswith("_report.")
        }
        self.generator = ProtectiveUNet(self.width).to(ctx.device)
        self.generator.load_state_dict(state)
        self.generator.eval()

    def _train(
        self,
        train: ImageSet,
        target: SuiteRecognizer,
        auxiliary: SuiteRecognizer | None,
        ctx: Context,
    ) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        order = ctx.rng("protective-unet", "validation").permutation(len(train))
        n_val = max(1, round(self.val_fraction * len(train)))
        parts = (np.sort(order[n_val:]), np.sort(order[:n_val]))

        def tensors(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            labels = train.labels[index]
            t_idx = torch.from_numpy(target.model.logit_index(labels)).to(ctx.device)
            a_idx = None
            if auxiliary is not None:
                a_idx = torch.from_numpy(auxiliary.model.logit_index(labels)).to(ctx.device)
            return to_tensor(train.images[index], ctx.device), t_idx, a_idx

        config = TrainConfig(
            epochs=self.epochs,
            batch=self.batch,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_fraction=self.warmup,
            ssim_weight=self.ssim_weight,
            crop_padding=4 if self.augment != "none" else 0,
            flip=self.augment == "crop+flip",
            amp=self.amp,
        )
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ctx.rng("protective-unet", "init").integers(2**62))
            generator = ProtectiveUNet(self.width).to(ctx.device)
            result = train_generator(
                generator,
                tensors(parts[0]),
                tensors(parts[1]),
                target.model.logits,
                None if auxiliary is None else auxiliary.model.logits,
                config,
                ctx.torch_generator("protective-unet", "batches"),
                (
                    target.model.torch_module(),
                    None if auxiliary is None else auxiliary.model.torch_module(),
                ),
            )
        report = {
            "learn_seconds": time.perf_counter() - t0,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "train_images_per_second": result.images_per_second,
            "parameters": parameter_count(generator),
        }
        return {
            **result.state,
            **{f"_report.{k}": torch.tensor(float(v)) for k, v in report.items()},
        }

    def fit_report(self) -> dict[str, float]:
        return dict(self._report)

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        if self.generator is None:
            raise RuntimeError("protective-unet: fit() must train the generator first")
        with torch.no_grad():
            return self.generator.protect(images.to(ctx.device))
