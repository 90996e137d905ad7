"""The contracts every method implements (docs/architecture.md, "Contracts").

Images travel as float32 tensors in [0, 1], shape [B, 3, H, W], on the run's device. Data sets
hold uint8 arrays; conversion happens in :mod:`harness.toolkit.imaging`. Every hook the engine
or the owner's commands may call is declared here or on :class:`~harness.api.method.Method`,
with its default; nothing is looked up by name. The data types and ``Method`` live in
:mod:`harness.api.types` and :mod:`harness.api.method` and are importable from here too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from harness.api.method import Method, apply_smoke
from harness.api.metric import (
    NUMBER,
    PERCENT,
    Metric,
    MetricFormat,
    MetricRole,
    MetricScope,
    MetricValue,
    PairedTest,
    QualityMetric,
)
from harness.api.threat import DEFENSE_FAMILIES, EVERY_DEFENSE, KNOWLEDGE_LEVELS, OBLIVIOUS
from harness.api.types import DataSplit, ImageSet, InputSpec, WeightFile, derive_seed
from harness.core.cache import content_key
from harness.core.errors import ModelFileError
from harness.core.identity import method_identity
from harness.core.params import Param

if TYPE_CHECKING:
    import torch

    from harness.core.cache import Cache
    from harness.core.keys import Keyring

__all__ = [
    "DEFENSE_FAMILIES",
    "EVERY_DEFENSE",
    "KNOWLEDGE_LEVELS",
    "NUMBER",
    "PERCENT",
    "REFERENCE_PARAM",
    "Context",
    "CounterAttack",
    "DataSplit",
    "Dataset",
    "Defense",
    "DefenseObjective",
    "ImageSet",
    "InputSpec",
    "Method",
    "Metric",
    "MetricFormat",
    "MetricRole",
    "MetricScope",
    "MetricValue",
    "Objective",
    "PairedTest",
    "QualityMetric",
    "Recognizer",
    "RecognizerKind",
    "SuiteRecognizer",
    "WeightFile",
    "apply_smoke",
    "derive_seed",
]

Objective = Literal["evade", "conceal"]
DefenseObjective = Literal["evade", "conceal", "any"]


@dataclass(frozen=True)
class SuiteRecognizer:
    """A recognizer of the suite, fitted on the split, with its cache identity."""

    model: Recognizer
    identity: str


@dataclass
class Context:
    """What a method may use besides its parameters: device, seed, cache, batch size, the
    owner's key for keyed defenses (never written anywhere), and the suite's fitted recognizers
    by label (for defenses trained against named recognizers, such as the protective U-Net's
    target and auxiliary; they are shared and must not change)."""

    device: torch.device
    seed: int
    cache: Cache
    batch_size: int = 64
    keyring: Keyring | None = None
    recognizers: dict[str, SuiteRecognizer] = field(default_factory=dict)

    def rng(self, *scope: str) -> np.random.Generator:
        """A numpy generator seeded by the run seed and ``scope``: independent per use."""
        return np.random.default_rng(derive_seed(self.seed, *scope))

    def torch_generator(self, *scope: str) -> torch.Generator:
        """A CPU torch generator seeded like :meth:`rng`."""
        import torch

        g = torch.Generator()
        g.manual_seed(derive_seed(self.seed, *scope))
        return g


class Defense(Method, ABC):
    """A privacy protection the photo owner applies before upload. The owner's file commands
    also use the capabilities of :mod:`harness.api.photo_files` where a defense has them."""

    objective: ClassVar[DefenseObjective] = "evade"  # 'any': a baseline for both objectives
    reversible: ClassVar[bool] = False
    keyed: ClassVar[bool] = False  # the output depends on the owner's key (``ctx.keyring``)
    # What kind of protection this is (a key of harness.api.threat.DEFENSE_FAMILIES): the
    # counter-attacks that target the family are adaptive against it. None: no family (``none``,
    # or a plugin that declares nothing), so no counter-attack adapts to it by family.
    family: ClassVar[str | None] = None

    @classmethod
    def families(cls, params: dict[str, Any]) -> frozenset[str]:
        """The families of this defense with ``params`` (a chain: every step's)."""
        return frozenset({cls.family}) if cls.family else frozenset()

    @classmethod
    def target_names(cls, name: str, params: dict[str, Any]) -> frozenset[str]:
        """What a counter-attack's ``targets`` may name this defense by: ``name`` (its registry
        name) and its families; a chain adds each step's."""
        return frozenset({name}) | cls.families(params)

    @classmethod
    def recognizer_roles(cls, params: dict[str, Any]) -> dict[str, str | None]:
        """Suite recognizers this defense is built against, by role ('target', 'auxiliary')
        and label; the suite checks the labels, the leaderboard reads the roles."""
        return {}

    def fit(self, train: ImageSet, ctx: Context) -> None:
        """Learn from the owner's own data (UEP, U-Net); most defenses need nothing."""

    def surrogate_weights(self) -> frozenset[str]:
        """:meth:`Recognizer.weights_identity` of every model this defense took gradients from
        (after :meth:`fit`); the runner marks cells judged by such a model ``white_box``."""
        return frozenset()

    def fit_report(self) -> dict[str, float]:
        """Measured facts about the fit, e.g. ``learn_seconds``, ``artefact_bytes`` (the
        owner's stored secret shared by all images) and ``box_bytes`` (per-image metadata)."""
        return {}

    @abstractmethod
    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        """Protected images, float32 [B, 3, H, W] in [0, 1], same shape as ``images``."""

    def recover(self, protected: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        """Undo the protection (reversible defenses only)."""
        raise NotImplementedError(f"{type(self).__name__} is not reversible")


RecognizerKind = Literal["identifier", "detector", "classifier"]


class Recognizer(Method, ABC):
    """The platform's model.

    ``kind``: 'identifier' (embedding + enrolled gallery; label = gallery identity),
    'classifier' (closed-set; trained on the fit split) or 'detector' (is there a face?).
    ``predict`` returns int64 labels, −1 meaning no face found / rejected.
    """

    kind: ClassVar[RecognizerKind] = "classifier"
    input_spec: InputSpec = InputSpec()
    # The network behind the recognizer, where it has one (:meth:`torch_module` returns it when
    # it is a torch module; a recognizer may also use the name for a parameter).
    model: Any = None
    # A classifier trained on the fit split: the data-set labels its outputs stand for, in
    # output order, once fitted; None when the outputs are the labels themselves.
    classes: np.ndarray | None = None

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        """What this machine lacks to build the recognizer with ``params`` (model files,
        packages); every recognizer reports its readiness (:meth:`checks_readiness`)."""
        return []

    @classmethod
    def has_logits(cls) -> bool:
        """Whether this recognizer exposes differentiable :meth:`logits`."""
        return cls.logits is not Recognizer.logits

    @classmethod
    def has_embeddings(cls) -> bool:
        """Whether this recognizer exposes differentiable :meth:`embed_torch`."""
        return cls.embed_torch is not Recognizer.embed_torch

    @classmethod
    def gradient_problem(cls, params: dict[str, Any]) -> str | None:
        """Why this recognizer, built with ``params``, cannot serve as a white-box surrogate
        (no gradients to its input), or None when it can: classifiers expose ``logits``,
        identifiers ``embed_torch``, both differentiable with respect to the image."""
        if cls.has_logits() or cls.has_embeddings():
            return None
        return "has no gradients with respect to its input (not a torch model)"

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Classifiers with a torch model: class scores [B, K], differentiable with respect to
        ``images`` (white-box defenses, retraining). Default: none (:meth:`has_logits`)."""
        raise NotImplementedError(f"{type(self).__name__} has no differentiable logits")

    def embed_torch(self, images: torch.Tensor) -> torch.Tensor:
        """Identifiers with a torch model: L2-normalised embeddings [B, D], differentiable with
        respect to ``images``. Default: none (:meth:`has_embeddings`)."""
        raise NotImplementedError(f"{type(self).__name__} has no differentiable embeddings")

    def require_ready(self) -> None:
        """Raise ModelFileError with everything :meth:`missing` reports, if anything."""
        lacking = self.missing(self.config)
        if lacking:
            raise ModelFileError(" | ".join(lacking))

    def fit(self, data: DataSplit, ctx: Context) -> None:
        """Enroll a gallery (identifier) or train (classifier); detectors need nothing."""

    def weights_identity(self) -> str | None:
        """What fixes this model's weights once fitted: equal strings mean equal weights, so a
        defense whose surrogate has the judge's weights is scored as white-box. Default: the
        digests of its model files (a pretrained network); None when it reads none."""
        files = self.dependencies().get("files")
        return content_key("weights", {"files": files}) if files else None

    @abstractmethod
    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """int64 [B] labels; −1 = no face found or rejected."""

    def runs_on_host(self) -> bool:
        """Whether :meth:`predict` runs on the CPU whatever the run's device (OpenCV, dlib, ONNX
        Runtime): on a GPU run the runner feeds such a recognizer from a background thread, so
        the GPU's recognizers and counter-attacks do not wait for it."""
        return False

    def scores(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """float [B, K] scores, higher meaning more likely, such that
        ``decide(scores(x)) == predict(x)``: class logits of a classifier, cosine similarity
        to each gallery entry of an identifier. Counter-attacks that pool the model's answers
        over several processed copies (summing scores, Oh, Fritz and Schiele, ICCV 2017, §5.2)
        need them; recognizers without them (detectors) do not override this."""
        raise NotImplementedError(f"{type(self).__name__} has no class scores")

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """int64 [B] labels from [B, K] scores (mean scores, for pooled ones)."""
        raise NotImplementedError(f"{type(self).__name__} has no class scores")

    @classmethod
    def has_scores(cls) -> bool:
        """Whether this recognizer exposes :meth:`scores`."""
        return cls.scores is not Recognizer.scores

    def logit_index(self, labels: np.ndarray) -> np.ndarray:
        """Classifiers: the index of each data-set label among the model's class scores, −1
        where the model has no such class (default: labels are indices)."""
        return np.asarray(labels, dtype=np.int64)

    def torch_module(self) -> torch.nn.Module | None:
        """The trainable torch model behind the recognizer (``self.model``), or None."""
        import torch

        return self.model if isinstance(self.model, torch.nn.Module) else None

    def recognized(self, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Whether each prediction counts as the platform succeeding."""
        if self.kind == "detector":
            return predictions != -1
        return predictions == labels

    def reference_labels(self, labels: np.ndarray, clean: np.ndarray) -> np.ndarray:
        """What a prediction is compared with: the true labels, or with ``reference: clean``
        the model's own clean predictions (untargeted fooling as universal perturbations and
        UEP define it, Rajabi et al., PETS 2021, §5.1: y* = argmax Y(x); usable on faces it
        never saw)."""
        return clean if self.config.get("reference") == "clean" else labels

    def state_key(self) -> dict[str, Any]:
        """Everything besides the data that determines a fitted model (for caching); how
        predictions are scored (``reference``) does not change the model."""
        return method_identity(self, exclude=("reference",))


REFERENCE_PARAM: dict[str, Param] = {
    "reference": Param(
        str,
        "truth",
        "recognised means: the true label (truth), or the model's own clean prediction (clean)",
        choices=("truth", "clean"),
    )
}


class CounterAttack(Method):
    """What the platform does to beat a defense. Defaults are the identity.

    Each counter-attack declares its threat model per defense (Carlini et al., "On Evaluating
    Adversarial Robustness", arXiv 2019, §3; Tramèr et al., NeurIPS 2020): ``targets``, the
    defense families (harness.api.threat.DEFENSE_FAMILIES) or defense names it is designed
    against (``every-defense``: whatever is deployed), and ``knows``, what it knows of a defense
    it targets (``nothing``, its ``algorithm``, its ``parameters``, or the owner's ``key``).
    Against a defense it targets it is *adaptive*; against any other it knows nothing and is
    *oblivious* (:meth:`threat_against`). The leaderboard prints the pair's threat model beside
    every worst case. A counter-attack that declares nothing targets nothing.

    A counter-attack that overrides :meth:`adapt` *retrains*: the runner then protects the fit
    split with the defense, uploads it like the probes, and passes it to ``adapt``; it targets
    every defense whatever it declares.
    """

    knows: ClassVar[str] = "nothing"
    targets: ClassVar[frozenset[str]] = frozenset()
    needs_scores: ClassVar[bool] = False  # wraps the recognizer and pools its scores

    @classmethod
    def threat(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``{"knows": …, "adaptive": …}`` of this counter-attack with ``params`` against a
        defense it targets (the engine asks :meth:`threat_against`, which calls this)."""
        return {"knows": cls.knows, "adaptive": bool(cls.targets) or cls.adapts()}

    @classmethod
    def targets_defense(cls, params: dict[str, Any], names: frozenset[str]) -> bool:
        """Whether this counter-attack with ``params`` is designed against a defense known by
        ``names`` (:meth:`Defense.target_names`: its registry name and families)."""
        return cls.adapts() or EVERY_DEFENSE in cls.targets or bool(cls.targets & names)

    @classmethod
    def threat_against(cls, params: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
        """The threat model of the pair: :meth:`threat` against a defense this counter-attack
        targets, else ``knows nothing, oblivious``."""
        return cls.threat(params) if cls.targets_defense(params, names) else dict(OBLIVIOUS)

    def fit(self, protected: torch.Tensor, ctx: Context) -> None:
        """See the protected pool first (blind source separation, perturbation estimation)."""

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Image-space counter-attack; float32 [B, 3, H, W] in [0, 1]."""
        return images

    def adapt(self, recognizer: Recognizer, protected_train: ImageSet, ctx: Context) -> Recognizer:
        """Model-space counter-attack (e.g. retrain on protected photos): ``protected_train`` is
        the fit split after the defense and the upload, with its true labels. Return a new
        recognizer; the one given is shared by every cell and must not change."""
        return recognizer

    def wrap(self, recognizer: Recognizer) -> Recognizer:
        """Inference-time counter-attack on the model side (e.g. voting over transformed
        copies): the recognizer the platform really queries. It must not change the one
        given, and needs no protected data, so it is not adaptive."""
        return recognizer

    def not_applicable(self, recognizer: Recognizer) -> str | None:
        """Why this counter-attack cannot be used with ``recognizer`` (its cells are then
        skipped and listed), or None."""
        return None

    @classmethod
    def adapts(cls) -> bool:
        """Whether this counter-attack changes the recognizer (overrides :meth:`adapt`)."""
        return cls.adapt is not CounterAttack.adapt


class Dataset(Method):
    """A data set and its split into fit / enroll / probe (/ negatives)."""

    protocol: ClassVar[str] = ""

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        """What this machine lacks to load the data set with ``params`` (folders, files), one
        sentence each saying where to get it; empty when ready. Must not raise."""
        return []

    def load(self, seed: int) -> DataSplit:
        """Build the split; the same parameters and seed always give the same split."""
        raise NotImplementedError
