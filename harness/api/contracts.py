"""The contracts every method implements (docs/architecture.md, "Contracts").

Images travel as float32 tensors in [0, 1], shape [B, 3, H, W], on the run's device. Data sets
hold uint8 arrays; conversion happens in :mod:`harness.toolkit.imaging`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from harness.core.cache import content_key
from harness.core.errors import ModelFileError
from harness.core.files import file_digest
from harness.core.identity import method_identity
from harness.core.params import Param

if TYPE_CHECKING:
    import torch

    from harness.core.cache import Cache
    from harness.core.keys import Keyring

Objective = Literal["evade", "conceal"]
DefenseObjective = Literal["evade", "conceal", "any"]


@dataclass
class ImageSet:
    """Images with labels and stable ids.

    ``images`` is uint8 [N, H, W, C] with C in {1, 3}; ``labels`` int64 [N]; ``ids`` unique
    strings that stay the same across runs and machines (records and keys refer to them).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError("ImageSet.images must be uint8 [N, H, W, C]")
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise ValueError("ImageSet images, labels and ids must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | list[int]) -> ImageSet:
        """The images at ``index``, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(self.images[idx], self.labels[idx], [self.ids[i] for i in idx])

    def fingerprint(self) -> str:
        """sha256 over pixels, labels and ids: identical data gives an identical fingerprint."""
        h = hashlib.sha256()
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()


@dataclass
class DataSplit:
    """What a protocol needs.

    ``fit``: training data for defenses and trainable recognizers. ``enroll``: the gallery of an
    identifier. ``probe``: the photos the owner protects and the platform tries to recognise.
    ``negatives``: images without the target (non-faces), for detectors' false detections.
    """

    fit: ImageSet
    enroll: ImageSet
    probe: ImageSet
    negatives: ImageSet | None = None
    protocol: str = ""
    class_names: list[str] | None = None  # name of label i, where labels are classes
    dropped: int = 0  # probes left out by the protocol (e.g. duplicates of a gallery photo)

    def fingerprint(self) -> str:
        """One hash over every part of the split."""
        parts = [
            self.protocol,
            self.fit.fingerprint(),
            self.enroll.fingerprint(),
            self.probe.fingerprint(),
            self.negatives.fingerprint() if self.negatives is not None else "-",
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


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


def derive_seed(seed: int, *scope: str) -> int:
    """A 63-bit seed from the run seed and a scope path, stable across Python versions."""
    digest = hashlib.sha256(("/".join([str(seed), *scope])).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def apply_smoke(params: dict[str, Any], smoke: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each key of ``smoke`` it has set to the smoke value; numbers are upper
    bounds (``min``), and a number replaces ``None`` (which means "all" for sizes)."""
    out = dict(params)
    for key, value in smoke.items():
        if key not in out:
            continue
        current = out[key]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and isinstance(current, (int, float)) and not isinstance(current, bool):
            out[key] = min(current, value)
        else:
            out[key] = value
    return out


class Method:
    """Common to every pluggable component: declared parameters and a cache version.

    Bump ``version`` whenever a change alters the method's output, so cached artefacts made by
    the old code are not reused.
    """

    params: ClassVar[dict[str, Param]] = {}
    version: ClassVar[str] = "1"
    input_files: tuple[Path, ...] = ()  # files the method reads (model weights), set in __init__
    # ``privbench run --smoke``: the parameters that make the method cheap while every code
    # path still runs (fewest iterations, epochs, steps, probes). A number is an upper bound
    # (a suite's smaller value stays); anything else replaces the suite's value.
    smoke: ClassVar[dict[str, Any]] = {}

    @classmethod
    def smoke_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` (resolved) cut to :attr:`smoke`; methods that nest other methods'
        parameters (a chain's steps, a surrogate's) override this to cut those too."""
        return apply_smoke(params, cls.smoke)

    def __init__(self, **params: Any) -> None:
        self.config = dict(params)
        for key, value in params.items():
            setattr(self, key, value)

    def dependencies(self) -> dict[str, Any]:
        """What the output depends on besides the parameters and the code: the contents of the
        files the method reads (``input_files``, overlay images), as digests. Every cache key
        that holds this method's output includes it (:mod:`harness.engine.cache_keys`)."""
        return {"files": [file_digest(p) for p in self.input_files]} if self.input_files else {}


class Defense(Method, ABC):
    """A privacy protection the photo owner applies before upload."""

    objective: ClassVar[DefenseObjective] = "evade"  # 'any': a baseline for both objectives
    reversible: ClassVar[bool] = False
    keyed: ClassVar[bool] = False  # the output depends on the owner's key (``ctx.keyring``)

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


@dataclass(frozen=True)
class InputSpec:
    """How a recognizer wants its input: travels with the model, like timm's pretrained config.

    ``size`` (H, W) or None for native size; ``channels`` 'rgb', 'bgr' or 'gray'; ``mean``/``std``
    applied after scaling to [0, 1]; ``interpolation`` used to resize.
    """

    size: tuple[int, int] | None = None
    channels: Literal["rgb", "bgr", "gray"] = "rgb"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    interpolation: Literal["bicubic", "bilinear", "nearest", "area"] = "bicubic"


RecognizerKind = Literal["identifier", "detector", "classifier"]


class Recognizer(Method, ABC):
    """The platform's model.

    ``kind``: 'identifier' (embedding + enrolled gallery; label = gallery identity),
    'classifier' (closed-set; trained on the fit split) or 'detector' (is there a face?).
    ``predict`` returns int64 labels, −1 meaning no face found / rejected.
    """

    kind: ClassVar[RecognizerKind] = "classifier"
    input_spec: InputSpec = InputSpec()

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        """What this machine lacks to build the recognizer with ``params`` (files, packages),
        one sentence each saying where to get it; empty when ready. Must not raise."""
        return []

    @classmethod
    def gradient_problem(cls, params: dict[str, Any]) -> str | None:
        """Why this recognizer, built with ``params``, cannot serve as a white-box surrogate
        (no gradients to its input), or None when it can: classifiers expose ``logits``,
        identifiers ``embed_torch``, both differentiable with respect to the image."""
        if callable(getattr(cls, "logits", None)) or callable(getattr(cls, "embed_torch", None)):
            return None
        return "has no gradients with respect to its input (not a torch model)"

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

        model = getattr(self, "model", None)
        return model if isinstance(model, torch.nn.Module) else None

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


KNOWLEDGE_LEVELS = ("nothing", "algorithm", "parameters", "key")


class CounterAttack(Method):
    """What the platform does to beat a defense. Defaults are the identity.

    Each counter-attack declares its threat model (Carlini et al., "On Evaluating Adversarial
    Robustness", 2019, §3): ``knows``, what the platform knows of the defense (``nothing``, its
    ``algorithm``, its ``parameters``, or the owner's ``key``), and ``oblivious``, whether it is
    a generic move made without regard to the defense (False: it is designed against this kind
    of defense, i.e. adaptive). The leaderboard prints both beside every worst case.

    A counter-attack that overrides :meth:`adapt` *retrains*: the runner then protects the fit
    split with the defense, uploads it like the probes, and passes it to ``adapt``.
    """

    knows: ClassVar[str] = "nothing"
    oblivious: ClassVar[bool] = True
    needs_scores: ClassVar[bool] = False  # wraps the recognizer and pools its scores

    @classmethod
    def threat(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``{"knows": …, "adaptive": …}`` of this counter-attack with ``params``."""
        return {"knows": cls.knows, "adaptive": not cls.oblivious}

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


@dataclass(frozen=True)
class MetricValue:
    """A measured value with its sample size and confidence interval (None when undefined).

    ``ci_level`` is the interval's real coverage (0.95 unless too few measurements allow it);
    ``extra`` holds JSON-ready facts the row carries besides (e.g. where a timing was made).
    """

    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    note: str = ""
    ci_level: float = 0.95
    extra: dict[str, Any] = field(default_factory=dict)


MetricScope = Literal["cell", "defense", "recognizer"]
MetricRole = Literal[
    "privacy",
    "recognition",
    "detection",
    "utility_loss",
    "clean",
    "quality",
    "recovery",
    "cost",
    "target",
    "other",
]
PairedTest = Literal["mcnemar", "bootstrap", "none"]


@dataclass(frozen=True)
class MetricFormat:
    """How boards print a metric's values.

    ``style``: ``percent`` (a share, printed ×100), ``number`` or ``flag`` (1 = yes, 0 = NO);
    ``digits``: decimals in tables; ``delta_digits``: decimals of a paired difference
    (``privbench compare``); ``unit_label``: the unit as column headers print it (None: the
    metric's ``unit``).
    """

    style: Literal["percent", "number", "flag"] = "number"
    digits: int = 3
    delta_digits: int = 4
    unit_label: str | None = None


PERCENT = MetricFormat("percent", 1, 1)
NUMBER = MetricFormat()


class Metric(Method, ABC):
    """Takes records, returns a :class:`MetricValue`.

    ``scope`` says which records: 'cell' (per-image recognition outcomes of one defense ×
    counter-attack × recognizer), 'defense' (per-image quality values and timings of one defense
    config), 'recognizer' (clean outcomes of one recognizer). ``parity`` holds the settings that
    define the number (e.g. SSIM window), written into the results.

    What the boards (leaderboard, report, compare, check) do with the metric they read from
    its declaration, which the runner writes into the manifest (:meth:`describe`), never from
    its name:

    - ``role``: what it measures. ``privacy``: the share of probes a defense fools (the evade
      ranking's score; its per-image values are the cell outcomes' fooled bits);
      ``recognition``: the share the platform recognises (the conceal ranking's accuracies);
      ``detection``: the share in which a face is still found; ``utility_loss``: what the
      owner's trusted target loses (the conceal ranking's tolerance); ``clean``: a recognizer
      on clean photos; ``quality``: the upload against the original (the ranking's quality
      column and floor, compare, check); ``recovery``: what the owner gets back against the
      original; ``cost``: time or storage; ``target``: whether a learned defense reached its
      own target (the leaderboard warns when not); ``other``: shown in tables only.
    - ``higher_is_better``: the direction.
    - ``paired_test``: how two runs' values are compared on the same probes. ``mcnemar``: exact
      McNemar on the cell outcomes' fooled bits (the privacy metric); ``bootstrap``: paired
      BCa bootstrap interval and sign-flip permutation test on the per-image values (a
      :class:`QualityMetric`); ``none``: not compared. ``gate_tolerance``: the drop
      ``privbench check`` accepts in a quality mean (None: not checked).
    - ``display``: how values are printed (:class:`MetricFormat`); ``headline``: the metric of
      its role that boards show where there is room for one (the ranking's quality column,
      the conceal ranking's quality and cost columns, the report's trade-off plots).
    """

    scope: ClassVar[MetricScope] = "cell"
    role: ClassVar[MetricRole] = "other"
    higher_is_better: ClassVar[bool] = True
    unit: ClassVar[str] = ""
    paired_test: ClassVar[PairedTest] = "none"
    gate_tolerance: ClassVar[float | None] = None
    display: ClassVar[MetricFormat | None] = None  # None: by scope (see :meth:`display_format`)
    headline: ClassVar[bool] = False
    parity: ClassVar[dict[str, Any]] = {}
    display_order: ClassVar[int] = 100  # position in default metric lists and leaderboards
    needs_timing: ClassVar[bool] = False  # the runner times protect() only if a metric asks
    by_default: ClassVar[bool] = True  # in a suite's metrics when it lists none
    objectives: ClassVar[tuple[str, ...]] = ("evade", "conceal")  # ... of suites with these
    key: str = ""  # the suite label of this metric instance, set by the runner

    @classmethod
    def display_format(cls) -> MetricFormat:
        """The declared :attr:`display`; by default a share in percent for cell and recognizer
        metrics, a number with three decimals for defense metrics."""
        if cls.display is not None:
            return cls.display
        return NUMBER if cls.scope == "defense" else PERCENT

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The declaration boards read (role, paired test, gate tolerance, display, headline),
        JSON-ready: the runner adds it to the manifest's ``metrics``, beside ``scope``,
        ``higher_is_better`` and ``unit``, so a run folder renders without the metric
        installed."""
        return {
            "role": cls.role,
            "paired_test": cls.paired_test,
            "gate_tolerance": cls.gate_tolerance,
            "display": asdict(cls.display_format()),
            "headline": cls.headline,
        }

    @abstractmethod
    def compute(self, records: Any) -> MetricValue:
        """Aggregate records into a value with n and CI."""


class QualityMetric(Metric, ABC):
    """A per-image comparison of original and protected images, averaged with a t-interval.

    With ``recovery = True`` the comparison is between the original and what the owner recovers
    from the upload (reversible defenses only), after an optional JPEG re-encoding.
    """

    scope: ClassVar[MetricScope] = "defense"
    role: ClassVar[MetricRole] = "quality"
    paired_test: ClassVar[PairedTest] = "bootstrap"
    recovery: ClassVar[bool] = False
    jpeg_quality: int | None = None

    @abstractmethod
    def per_image(self, original: torch.Tensor, protected: torch.Tensor) -> np.ndarray:
        """float64 [B] values for a batch."""
