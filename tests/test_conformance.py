"""Every registered method passes the conformance checks of harness.api.testing, with small
seeded inputs; and the checks themselves fail on methods that break what they check.

Methods whose weights are not on this machine run with random-weight stand-ins written by
the same code path a real file takes (a ``checkpoint`` of the architecture, a tiny ONNX graph
of the right input); data sets that read folders read a tiny generated tree. Batch tolerances
are derived next to each case from the float32 rounding of the arithmetic involved.
"""

from __future__ import annotations

import atexit
import pickle
import re
import shutil
import tempfile
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api.contracts import (
    Context,
    CounterAttack,
    Dataset,
    DataSplit,
    Defense,
    Metric,
    MetricValue,
    Recognizer,
    SuiteRecognizer,
)
from harness.api.registry import ALL_REGISTRIES
from harness.api.testing import (
    Case,
    check_method,
    common,
    datasets,
    images,
    metrics,
    parametrize_with_checks,
    recognizers,
    synthetic_split,
    threat,
)
from harness.core.errors import PrivbenchError
from harness.core.params import Param
from tests.conftest import UNIT_ROUNDOFF, gamma

u = UNIT_ROUNDOFF
STAND_INS = Path(tempfile.mkdtemp(prefix="privbench-stand-ins-"))  # named by the cases below
atexit.register(shutil.rmtree, STAND_INS, True)
SMALL_CNN = {"steps": 10, "width": 4, "input_size": 16, "train_batch": 8}
SURROGATE = {"surrogate": "small-cnn", "surrogate_params": SMALL_CNN}
PER_IMAGE = {"batch_independent": True}


def _fitted_cnn(ctx: Context) -> Any:
    from harness.api.registry import RECOGNIZERS

    cnn = RECOGNIZERS.create("small-cnn", SMALL_CNN)
    cnn.fit(synthetic_split(), ctx)
    return cnn


def _suite_cnn(ctx: Context) -> dict[str, SuiteRecognizer]:
    return {"cnn": SuiteRecognizer(_fitted_cnn(ctx), "small-cnn stand-in")}


def _stand_in(name: str) -> str:
    return str(STAND_INS / name)


def _lacking(kind: str, name: str, params: dict[str, Any]) -> str | None:
    """What this machine lacks for the method besides the stand-ins written below."""
    registry = ALL_REGISTRIES[{"attack": "attacks"}.get(kind, kind + "s")]
    cls = registry.get(name)
    lacking = [m for m in cls.missing(params) if str(STAND_INS) not in m]
    return " | ".join(lacking) or None


def _case(kind: str, name: str, params: dict[str, Any] | None = None, **kw: Any) -> Case:
    params = params or {}
    return Case(kind, name, params, skip=_lacking(kind, name, params), **kw)


DEFENSES = [
    # a copy: bit for bit the same in any batch
    Case("defense", "none", declared=PER_IMAGE, batch_tolerance=0.0),
    # torchvision's blur is one conv of the 7×7 kernel (σ = 1), weights ≥ 0 summing to 1 up to
    # their own rounding, on values in [0, 1]: each evaluation within γ_49·Σw·x < γ_50 of the
    # exact sum, two within 2γ_50
    Case(
        "defense",
        "gaussian-blur",
        {"sigma": 1.0},
        declared=PER_IMAGE,
        batch_tolerance=2 * gamma(50),
    ),
    # a mean of 16 values in [0, 1] (avg_pool: a sum, γ_15, and a division, u): γ_17 bounds
    # each, 2γ_17 two evaluations
    Case("defense", "pixelate", {"block": 4}, declared=PER_IMAGE, batch_tolerance=2 * gamma(17)),
    # α·x + (1 − α)·O: three roundings of values ≤ 1, ≤ 3u each evaluation, 6u apart. After an
    # 8-bit upload (±0.5 level) recovery divides by α = 0.45: within 0.5/α ≈ 1.11 levels,
    # which rounds to at most 1 level off (0.5/α + 0.5 = 1.61 is far from a tie)
    Case("defense", "naive-overlay", declared=PER_IMAGE, batch_tolerance=6 * u, recovery_levels=1),
    # α·x + w·Σ with Σ an exact integer sum and w the same float32 in both: three roundings
    # of values ≤ 1 (fused or not), 6u apart; recovery as naive-overlay's (α = 0.45)
    Case("defense", "krtio", declared=PER_IMAGE, batch_tolerance=6 * u, recovery_levels=1),
    # two blends undone in turn (in float, no rounding between): 0.5/α² ≈ 2.47 levels after
    # the upload, at most 2 after rounding (2.97 is far from a tie)
    Case(
        "defense",
        "chain",
        {"steps": ["naive-overlay", "krtio"]},
        recovery_levels=2,
        label="chain(naive-overlay,krtio)",
    ),
    # each photo enhanced alone in float64 numpy, to uint8, then k/255: the same bits
    Case("defense", "ying-contrast", declared=PER_IMAGE, batch_tolerance=0.0),
    # float64 maps of each pixel (tanh, atanh: vectorised or not they may differ in float64's
    # last bits), rounded once to float32: at most one float32 ulp apart (≤ u below 1), and
    # no uint8 promise after an upload (the inverse's slope is unbounded near 0 and 1)
    Case(
        "defense",
        "uep",
        {"size": 16, "width": 4, "cnn_steps": 3, "steps": 2, "search_rounds": 1, "learn_images": 8},
        declared=PER_IMAGE,
        batch_tolerance=2 * u,
        recovery_levels=None,
    ),
    _case("defense", "cartoongan", {"checkpoint": _stand_in("cartoongan.pt")}),
    Case(
        "defense",
        "protective-unet",
        {"target": "cnn", "epochs": 1, "batch": 8, "width": 2},
        recognizers=_suite_cnn,
    ),
    Case("defense", "pgd", {**SURROGATE, "iterations": 2}),
    Case("defense", "least-likely", {**SURROGATE, "iterations": 2}),
    Case("defense", "p-fgsm", {**SURROGATE, "iterations": 2}),
    Case("defense", "cw-l2", {**SURROGATE, "binary_search_steps": 1, "iterations": 2}),
    Case("defense", "euclidean", {**SURROGATE, "tries": 2}),
    Case("defense", "aip", {**SURROGATE, "iterations": 2}),
]

RECOGNIZERS = [
    Case("recognizer", "small-cnn", SMALL_CNN),
    Case("recognizer", "haar", {"input_size": 48}),
    _case("recognizer", "yunet", {"input_size": 64}),
    _case("recognizer", "sface"),
    _case("recognizer", "sface", {"backend": "torch"}, label="sface(torch)"),
    Case(
        "recognizer",
        "torchvision-classifier",
        {
            "arch": "resnet18",
            "checkpoint": _stand_in("resnet18.pt"),
            "num_classes": 4,
            "input_size": 32,
        },
    ),
    Case(
        "recognizer",
        "places365-resnet50",
        {"checkpoint": _stand_in("resnet50-places365.pt"), "input_size": 32},
    ),
    Case(
        "recognizer",
        "cifar10-zoo",
        {"arch": "resnet18", "checkpoint": _stand_in("cifar10-resnet18.pt")},
    ),
    Case("recognizer", "deepface", {"model": "OpenFace", "checkpoint": _stand_in("openface.onnx")}),
    _case("recognizer", "facenet", {"checkpoint": _stand_in("facenet.pt")}),
    _case("recognizer", "mtcnn", {"input_size": 64}),
    _case("recognizer", "dlib"),
]

ATTACKS = [
    Case("attack", "none", declared=PER_IMAGE, batch_tolerance=0.0),
    # as the defense
    Case(
        "attack", "gaussian-blur", {"sigma": 1.0}, declared=PER_IMAGE, batch_tolerance=2 * gamma(50)
    ),
    # a median selects one of the values: exact
    Case("attack", "median-filter", declared=PER_IMAGE, batch_tolerance=0.0),
    # a sum of 9 values in [0, 1] (γ_8), divided by 9 (u): within γ_10 each, 2γ_10 apart
    Case("attack", "box-blur", declared=PER_IMAGE, batch_tolerance=2 * gamma(10)),
    # per pixel a direct sum over the kernel's taps, the same whatever the batch
    Case("attack", "deconvolve", {"iterations": 3}, declared=PER_IMAGE, batch_tolerance=0.0),
    # three products and their sum, weights summing to 1: γ_3 each, 2γ_3 apart
    Case("attack", "grayscale", declared=PER_IMAGE, batch_tolerance=2 * gamma(3)),
    # libjpeg on each photo's uint8 pixels, then k/255: the same bits
    Case("attack", "jpeg", declared=PER_IMAGE, batch_tolerance=0.0),
    # after the pool's median is fixed, λ·x + (1 − λ)·(1 − δ'): four roundings of values ≤ 1
    Case("attack", "estimation", {"m": 4}, declared=PER_IMAGE, batch_tolerance=8 * u),
    Case("attack", "bss-ica", {"max_iter": 200}),
    Case("attack", "overlay-guess"),
    # YuNet and the warp on each photo's uint8 pixels, then k/255: the same bits
    _case("attack", "face-align", {"detector_size": 64}, declared=PER_IMAGE, batch_tolerance=0.0),
    Case("attack", "spatial-tta", {"granularity": [2, 2, 2]}, recognizer=_fitted_cnn),
    Case("attack", "retrain", {"steps": 3, "batch": 8}, recognizer=_fitted_cnn),
    Case("attack", "aip-ensemble", {"draws": 1}, recognizer=_fitted_cnn),
]

NO_REFERENCE = {"full_reference": False}  # rates the protected photo alone
METRICS = [
    Case("metric", name)
    for name in ALL_REGISTRIES["metrics"].names()
    if not name.startswith("nima")
] + [
    Case("metric", name, {"checkpoint": _stand_in("nima-mobilenet.pt")}, declared=NO_REFERENCE)
    for name in ("nima", "nima_change")
]

DATASETS = [
    Case("dataset", "digits", {"size": 16, "max_probes": 8}),
    Case("dataset", "scenes", {"size": 16}),
    Case("dataset", "lfw-subset", {"max_probes": 8, "fit_views": 1}),
    Case("dataset", "folder", {"root": _stand_in("folder"), "max_probes": 4}),
    Case("dataset", "cifar10", {"root": _stand_in("cifar"), "max_fit": 20, "max_probes": 8}),
]

CASES = DEFENSES + RECOGNIZERS + ATTACKS + METRICS + DATASETS


def _write_onnx_embedder(path: Path, height: int, width: int) -> None:
    """A channels-last graph like deepface's exports: NHWC → conv → global mean → [N, 8]."""
    from onnx import TensorProto, helper, numpy_helper, save

    kernel = np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xc", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stand-in",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", height, width, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(kernel, "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


def _write_folder_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")


def _write_cifar_batches(root: Path) -> None:
    """CIFAR-10's python layout with a few random images per batch file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (6, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, 6)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


@pytest.fixture(scope="module", autouse=True)
def stand_ins():
    """Random-weight files of the architectures whose real weights are downloads, a folder
    tree and a CIFAR-10 layout; torchvision's md5 check of the CIFAR files is bypassed (they
    are not the published ones)."""
    import torchvision

    from defenses.cartoongan import CartoonGenerator
    from harness.metrics.nima import MobileNetNIMA
    from recognizers.cifar10_zoo import build_cifar10_model

    torch.manual_seed(0)
    models = {
        "resnet18.pt": torchvision.models.resnet18(weights=None, num_classes=4),
        "resnet50-places365.pt": torchvision.models.resnet50(weights=None, num_classes=365),
        "cifar10-resnet18.pt": build_cifar10_model("resnet18"),
        "cartoongan.pt": CartoonGenerator(),
        "nima-mobilenet.pt": MobileNetNIMA(),
    }
    if find_spec("facenet_pytorch"):
        from facenet_pytorch import InceptionResnetV1

        models["facenet.pt"] = InceptionResnetV1(pretrained=None, classify=False)
    for name, model in models.items():
        torch.save(model.state_dict(), STAND_INS / name)
    _write_onnx_embedder(STAND_INS / "openface.onnx", 96, 96)
    _write_folder_tree(STAND_INS / "folder")
    _write_cifar_batches(STAND_INS / "cifar")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
        yield STAND_INS


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on these tiny inputs a second costs more than it saves (a
    small-cnn fit takes about ten times the CPU time with two on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@parametrize_with_checks(CASES)
def test_conformance(case: Case, check) -> None:
    check(case)


def test_every_registered_method_has_a_case() -> None:
    kinds = {"defense": "defenses", "recognizer": "recognizers", "attack": "attacks"}
    kinds |= {"metric": "metrics", "dataset": "datasets"}
    for kind, registry in kinds.items():
        covered = {c.name for c in CASES if c.kind == kind}
        # what is installed (entry points), not what other tests add to the registries
        group = ALL_REGISTRIES[registry].group
        installed = {ep.name for ep in entry_points(group=group)}
        missing = installed - covered
        assert not missing, f"registered {registry} without a conformance case: {missing}"


# -- the checks fail where they should --------------------------------------------------------


class Noise(Defense):
    """A well-behaved reference: seeded per photo, batch independent, exact copy + noise."""

    params: ClassVar[dict[str, Param]] = {
        "epsilon": Param(float, 0.05, "noise radius", low=0.0, high=1.0),
    }

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        out = torch.empty_like(images)
        for i, photo_id in enumerate(ids):
            noise = torch.rand(images.shape[1:], generator=ctx.torch_generator("noise", photo_id))
            out[i] = images[i] + self.epsilon * (2 * noise - 1)
        return out.clamp(0.0, 1.0)


class Float64(Noise):
    def protect(self, images, ids, ctx):
        return super().protect(images, ids, ctx).double()


class InPlace(Noise):
    def protect(self, images, ids, ctx):
        images.mul_(0.5)
        return images


class Unseeded(Noise):
    def protect(self, images, ids, ctx):
        return (images + 0.05 * torch.rand(images.shape)).clamp(0.0, 1.0)


class BatchMean(Noise):
    def protect(self, images, ids, ctx):
        return (0.5 * images + 0.5 * images.mean(0, keepdim=True)).clamp(0.0, 1.0)


class Reversible(Defense):
    """The negative, undone (exact on the 8-bit grid); ``bias`` levels off on the way back."""

    reversible = True
    params: ClassVar[dict[str, Param]] = {
        "bias": Param(float, 0.0, "levels added by recover", low=0.0, high=10.0)
    }

    def protect(self, images, ids, ctx):
        return 1.0 - images

    def recover(self, protected, ids, ctx):
        return (1.0 - protected + self.bias / 255).clamp(0.0, 1.0)


class Keyed(Defense):
    """Adds a keyed value per photo; ``leak`` keeps the key's hex in an attribute."""

    keyed = True
    params: ClassVar[dict[str, Param]] = {
        "leak": Param(bool, False, "remember the key in an attribute"),
        "use_key": Param(bool, True, "let the key change the output"),
    }

    def protect(self, images, ids, ctx):
        if ctx.keyring is None:
            raise PrivbenchError("needs a key")
        if self.leak:
            self.last_key = ctx.keyring.key.hex()
        shift = int(ctx.keyring.tag("t", b"")[:2], 16) / 255 if self.use_key else 0.1
        return (images * 0.5 + shift / 2).clamp(0.0, 1.0)


class Unranged(Noise):
    params: ClassVar[dict[str, Param]] = {"epsilon": Param(float, 0.05, "noise radius")}


class BadDefault(Noise):
    params: ClassVar[dict[str, Param]] = {
        "epsilon": Param(float, 2.0, "noise radius", low=0.0, high=1.0)
    }


class LaxParam(Param):
    def validate(self, name: str, value: Any) -> Any:
        return value


class Lax(Noise):
    params: ClassVar[dict[str, Param]] = {
        "epsilon": LaxParam(float, 0.05, "noise radius", low=0.0, high=1.0)
    }


class SmokeTypo(Noise):
    smoke: ClassVar[dict[str, Any]] = {"epsilom": 0.01}


class Reports(Noise):
    def fit_report(self) -> dict[str, float]:
        return {"learn_seconds": float("nan")}


class Forgetful(Noise):
    """Drops its parameter from the config, so no cache key sees it."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.config = {}


class Stamped(Noise):
    """Puts something of the instance into its identity."""

    def dependencies(self) -> dict[str, Any]:
        return {"instance": id(self)}


class Labels(Recognizer):
    """Predicts the brightest channel; ``dtype`` and ``offset`` break the contract."""

    params: ClassVar[dict[str, Param]] = {
        "dtype": Param(str, "int64", "label dtype", choices=("int64", "int32")),
        "offset": Param(int, 0, "added to each label", low=-5, high=5),
    }

    def scores(self, images, ctx):
        return images.mean((2, 3)).numpy().astype(np.float64)

    def decide(self, scores):
        return scores.argmax(1).astype(np.int64)

    def predict(self, images, ctx):
        return (self.decide(self.scores(images, ctx)) + self.offset).astype(self.dtype)


class Tamper(CounterAttack):
    """Retrains by changing the recognizer it was given (the shared one)."""

    knows = "parameters"
    targets: ClassVar[frozenset[str]] = frozenset({"every-defense"})

    def adapt(self, recognizer, protected_train, ctx):
        with torch.no_grad():
            next(recognizer.torch_module().parameters()).add_(1.0)
        return recognizer


class Oblivious(Tamper):
    @classmethod
    def threat(cls, params):
        return {"knows": "parameters", "adaptive": False}


class StickerRemover(CounterAttack):
    """Targets a defense family privbench does not know."""

    knows = "algorithm"
    targets: ClassVar[frozenset[str]] = frozenset({"overlay", "sticker"})


class AdaptiveSomewhere(CounterAttack):
    """Declares itself adaptive the way counter-attacks did before targets: against what?"""

    knows = "algorithm"
    oblivious = False


class Sticker(Noise):
    family: ClassVar[str | None] = "sticker"


class NanMetric(Metric):
    def compute(self, records):
        return MetricValue(float("nan"), len(records.ids))


class EmptyIsNan(Metric):
    def compute(self, records):
        r = records.recognized_protected
        return MetricValue(float(r.sum() / len(r)) if len(r) else float("nan"), len(r))


class Outside(Metric):
    def compute(self, records):
        return MetricValue(0.5, 3, 0.6, 0.9)


class Repeats(Dataset):
    def load(self, seed: int) -> DataSplit:
        split = synthetic_split()
        split.probe.ids[1] = split.probe.ids[0]
        return split


class Int32Labels(Dataset):
    def load(self, seed: int) -> DataSplit:
        split = synthetic_split()
        split.probe.labels = split.probe.labels.astype(np.int32)
        return split


BROKEN = [
    ("defense", Float64, {}, images.check_output_contract, "float64, not float32"),
    ("defense", InPlace, {}, images.check_output_contract, "in place"),
    ("defense", Unseeded, {}, images.check_seeded_determinism, "differ by up to"),
    ("defense", BatchMean, {}, images.check_batch_independence, "batch_tolerance"),
    ("defense", Reversible, {"bias": 2.0}, images.check_recovery, "misses x by 2 levels"),
    ("defense", Keyed, {"leak": True}, images.check_no_key_leaks, "key shows in its attributes"),
    ("defense", Keyed, {"use_key": False}, images.check_no_key_leaks, "the key changes nothing"),
    ("defense", Unranged, {}, common.check_params_declared, "without a range"),
    ("defense", BadDefault, {}, common.check_params_declared, "default fails validation"),
    ("defense", Lax, {}, common.check_bad_params_refused, "was accepted"),
    ("defense", SmokeTypo, {}, common.check_smoke_params_valid, "undeclared parameters"),
    ("defense", Reports, {}, images.check_defense_reports, "fit_report 'learn_seconds': nan"),
    ("defense", Forgetful, {}, common.check_identity_follows_params, "not the resolved"),
    ("defense", Stamped, {}, common.check_identity_follows_params, "equal parameters differ"),
    ("recognizer", Labels, {"dtype": "int32"}, recognizers.check_predictions, "not int64"),
    ("recognizer", Labels, {"offset": -3}, recognizers.check_predictions, "below −1"),
    ("recognizer", Labels, {"offset": 1}, recognizers.check_predictions, "decide"),
    ("attack", Tamper, {}, images.check_model_side, "changed the weights"),
    ("attack", Oblivious, {}, threat.check_threat_declared, "declares itself oblivious"),
    ("attack", StickerRemover, {}, threat.check_threat_declared, "targets 'sticker', neither"),
    ("attack", AdaptiveSomewhere, {}, threat.check_threat_declared, "targets no defense"),
    ("defense", Sticker, {}, threat.check_family_declared, "family 'sticker' is not one of"),
    ("metric", NanMetric, {}, metrics.check_metric_value, "value nan"),
    ("metric", Outside, {}, metrics.check_metric_value, "ci_low 0.6 > value 0.5"),
    ("metric", EmptyIsNan, {}, metrics.check_metric_without_data, "value nan with n 0"),
    ("dataset", Repeats, {}, datasets.check_split_contract, "ids repeat"),
    ("dataset", Int32Labels, {}, datasets.check_split_contract, "labels int32"),
]


@pytest.mark.parametrize(
    "kind, cls, params, check, message",
    BROKEN,
    ids=[f"{b[1].__name__}-{b[3].__name__}" for b in BROKEN],
)
def test_a_check_fails_on_a_method_that_breaks_it(kind, cls, params, check, message) -> None:
    declared = {"batch_independent": True} if cls is BatchMean else {}
    case = Case(
        kind,
        cls.__name__.lower(),
        params,
        cls=cls,
        declared=declared,
        recognizer=_fitted_cnn if kind == "attack" else None,
    )
    with pytest.raises(AssertionError, match=re.escape(message)):
        check(case)


def test_the_well_behaved_reference_passes_every_check() -> None:
    check_method(Case("defense", "noise", cls=Noise, declared={"batch_independent": True}))
    check_method(Case("recognizer", "labels", cls=Labels))
    check_method(Case("defense", "reversible", cls=Reversible))
    check_method(Case("defense", "keyed", cls=Keyed))


def test_parametrize_gives_readable_ids_and_marks() -> None:
    cases = [
        Case("defense", "noise", cls=Noise, xfail={"check_output_contract": "known bug #1"}),
        Case("recognizer", "labels", cls=Labels, skip="needs a file"),
    ]
    [mark] = [parametrize_with_checks(cases)]
    params = mark.args[1]
    ids = [p.id for p in params]
    assert "defense:noise-check_output_contract" in ids
    assert "recognizer:labels-check_predictions" in ids
    assert "defense:noise-check_no_key_leaks" not in ids  # not keyed
    marks = {p.id: [m.name for m in p.marks] for p in params}
    assert marks["defense:noise-check_output_contract"] == ["xfail"]
    assert marks["defense:noise-check_seeded_determinism"] == []
    assert all(marks[i] == ["skip"] for i in ids if i.startswith("recognizer:"))
