"""The plugin SDK: every hook is declared with its default, registries are typed, and weight
files are declared beside the methods that read them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import harness.api as api
from harness.api import (
    ALL_REGISTRIES,
    DATASETS,
    DEFENSES,
    RECOGNIZERS,
    ExactArrays,
    Method,
    PhotoIds,
    Recognizer,
    Registry,
)
from harness.core.errors import PrivbenchError
from harness.toolkit import weights

SDK = {
    "Method", "Defense", "Recognizer", "CounterAttack", "Metric", "QualityMetric", "Dataset",
    "Context", "ImageSet", "DataSplit", "InputSpec", "WeightFile", "Param", "PrivbenchError",
    "ParamError", "ModelFileError", "DataError", "PhotoIds", "ExactArrays", "DEFENSES",
    "RECOGNIZERS", "ATTACKS", "METRICS", "DATASETS", "Registry",
}  # fmt: skip


def _classes() -> list[tuple[str, type[Method]]]:
    return [(name, reg.get(name)) for reg in ALL_REGISTRIES.values() for name in reg.names()]


def test_the_sdk_exports_what_a_plugin_needs() -> None:
    assert set(api.__all__) >= SDK
    assert all(hasattr(api, name) for name in api.__all__)


def test_readiness_is_listed_for_the_classes_that_say_what_they_need() -> None:
    """``checks_readiness`` is true exactly where a class below Method defines ``missing``
    (every recognizer and data set, and methods such as chain or cartoongan)."""
    for name, cls in _classes():
        declares = any("missing" in vars(k) for k in cls.__mro__ if k is not Method)
        assert cls.checks_readiness() == declares, name
        assert cls.missing.__func__ is Method.missing.__func__ or declares, name
    assert RECOGNIZERS.get("small-cnn").checks_readiness()
    assert DATASETS.get("digits").checks_readiness()
    assert DEFENSES.get("chain").checks_readiness()
    assert not DEFENSES.get("gaussian-blur").checks_readiness()
    assert DEFENSES.get("gaussian-blur").missing({}) == []


def test_gradient_hooks_are_declared_and_reported() -> None:
    for name, cls in _classes():
        if issubclass(cls, Recognizer):
            defines = {h for k in cls.__mro__[: cls.__mro__.index(Recognizer)] for h in vars(k)}
            assert cls.has_logits() == ("logits" in defines), name
            assert cls.has_embeddings() == ("embed_torch" in defines), name
    assert RECOGNIZERS.get("small-cnn").gradient_problem({}) is None
    assert RECOGNIZERS.get("sface").gradient_problem({"backend": "torch"}) is None
    assert "no gradients" in RECOGNIZERS.get("haar").gradient_problem({})
    haar = RECOGNIZERS.create("haar")
    with pytest.raises(NotImplementedError, match="no differentiable logits"):
        haar.logits(None)
    assert haar.torch_module() is None and haar.classes is None


def test_the_owner_file_hooks_are_protocols() -> None:
    krtio, blur = DEFENSES.create("krtio"), DEFENSES.create("gaussian-blur")
    assert isinstance(krtio, PhotoIds) and isinstance(krtio, ExactArrays)
    assert not isinstance(blur, PhotoIds) and not isinstance(blur, ExactArrays)


def test_a_registry_holds_only_its_kind() -> None:
    with pytest.raises(PrivbenchError, match="not a Defense subclass"):
        DEFENSES.add("test-not-a-defense", RECOGNIZERS.get("haar"))
    assert "test-not-a-defense" not in DEFENSES
    reg: Registry[Method] = Registry("widget", "privbench.no-such-group", Method)
    with pytest.raises(PrivbenchError, match="not a Method subclass"):
        reg.add("thing", dict)  # type: ignore[arg-type]


def test_the_builtin_module_still_names_the_data_sets() -> None:
    from harness.datasets import builtin

    for name in DATASETS.names():
        cls = DATASETS.get(name)
        assert issubclass(cls, api.Dataset)
        assert getattr(builtin, cls.__name__) is cls
    assert builtin.describe_protocol("detection").startswith("detection: probes are faces")


def test_the_catalogue_lists_every_declared_weight_file_with_its_users() -> None:
    known = weights.catalogue()
    assert len(known) == 33
    assert known["nima-mobilenet"].used_by == ("nima", "nima_change")
    assert known["resnet50-places365"].used_by == ("places365-resnet50",)
    assert known["resnet18-imagenet"].used_by == ("torchvision-classifier",)
    assert known["cifar10-googlenet"].used_by == ("cifar10-zoo",)
    assert known["cartoongan-hayao"].filename == "cartoongan/Hayao_net_G_float.pth"
    for _, cls in _classes():
        for w in cls.weight_files:
            assert w.used_by == () and known[w.name].filename == w.filename


def test_declared_input_specs_agree_with_what_the_recognizers_feed() -> None:
    for name, default in (
        ("torchvision-classifier", "resnet50-imagenet"),
        ("places365-resnet50", "resnet50-places365"),
        ("cifar10-zoo", "cifar10-resnet18"),
    ):
        cls = RECOGNIZERS.get(name)
        params = RECOGNIZERS.resolve(name, {})
        built = cls.build_input_spec(SimpleNamespace(**params, normalisation=cls.normalisation))
        assert weights.get(default).input_spec == built, name


def test_a_method_finds_its_own_weights_without_importing_the_others(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRIVBENCH_HOME", str(tmp_path))

    def no_walk() -> None:
        raise AssertionError("walked the registries")

    monkeypatch.setattr(weights, "catalogue", no_walk)
    lacking = RECOGNIZERS.get("places365-resnet50").missing(
        RECOGNIZERS.resolve("places365-resnet50", {})
    )
    assert "resnet50_places365.pth.tar" in lacking[0]


def test_a_method_may_name_weights_another_method_declares(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRIVBENCH_HOME", str(tmp_path))
    params = RECOGNIZERS.resolve("torchvision-classifier", {"weights": "resnet50-places365"})
    lacking = RECOGNIZERS.get("torchvision-classifier").missing(params)
    assert str(tmp_path / "weights" / "resnet50_places365.pth.tar") in lacking[0]
