"""The CIFAR-10 zoo of Ye et al., MMSys 2022 (huyvnphan/PyTorch_CIFAR10), built from torchvision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api.contracts import Context
from harness.api.registry import RECOGNIZERS
from harness.core.errors import ModelFileError
from harness.toolkit import weights
from harness.toolkit.imaging import apply_input_spec
from recognizers.cifar10_zoo import (
    ARCHITECTURES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    PUBLISHED_PARAMS,
    build_cifar10_model,
    parameter_count,
)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parameter_count_matches_the_published_table(arch: str) -> None:
    millions = parameter_count(build_cifar10_model(arch)) / 1e6
    # The table rounds to 0.001 M; inception_v3 counts 21.638954 M against a printed 21.640.
    assert abs(millions - PUBLISHED_PARAMS[arch]) <= 0.0011, millions


# Stem tensors as they are in the published state dicts (names and shapes).
STEM_KEYS = {
    "vgg13_bn": ("classifier.0.weight", (4096, 512)),
    "resnet18": ("conv1.weight", (64, 3, 3, 3)),
    "densenet121": ("features.conv0.weight", (64, 3, 3, 3)),
    "mobilenet_v2": ("features.0.0.weight", (32, 3, 3, 3)),
    "googlenet": ("conv1.conv.weight", (192, 3, 3, 3)),
    "inception_v3": ("Conv2d_1a_3x3.conv.weight", (192, 3, 3, 3)),
}


@pytest.mark.parametrize("arch", sorted(STEM_KEYS))
def test_cifar_stems_have_the_published_keys(arch: str) -> None:
    state = build_cifar10_model(arch).state_dict()
    key, shape = STEM_KEYS[arch]
    assert tuple(state[key].shape) == shape
    removed = {"googlenet": "conv2.", "inception_v3": "Conv2d_2a_3x3."}.get(arch)
    if removed:
        assert not any(k.startswith(removed) for k in state)


def test_resnet_stem_keeps_its_max_pool() -> None:
    """32 → 16 at the max-pool, then 16 → 8 → 4 → 2 through layers 2-4."""
    model = build_cifar10_model("resnet18")
    seen: dict[str, tuple[int, ...]] = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.update(layer4=tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert seen["layer4"] == (2, 512, 2, 2)


def _save_checkpoint(path: Path, arch: str) -> torch.nn.Module:
    torch.manual_seed(1)
    model = build_cifar10_model(arch)
    for m in model.modules():  # non-trivial BN statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model.eval()


def test_recognizer_loads_a_checkpoint_and_predicts_like_the_model(
    tmp_path: Path, ctx: Context
) -> None:
    reference = _save_checkpoint(tmp_path / "m.pt", "mobilenet_v2")
    params = RECOGNIZERS.resolve(
        "cifar10-zoo", {"arch": "mobilenet_v2", "checkpoint": str(tmp_path / "m.pt")}
    )
    rec = RECOGNIZERS.get("cifar10-zoo")(**params)
    assert rec.input_spec.size == (32, 32)
    assert rec.input_spec.mean == CIFAR10_MEAN and rec.input_spec.std == CIFAR10_STD
    images = torch.rand(6, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(apply_input_spec(images, rec.input_spec)).argmax(1).numpy()
    # the same layers with the same weights on the same batch of 6 (predict runs the whole
    # batch in one pass): the same float32 arithmetic, so even a near-tie of this untrained
    # network's logits breaks the same way
    np.testing.assert_array_equal(rec.predict(images, ctx), expected)
    # Differentiable for white-box use.
    x = images.clone().requires_grad_(True)
    rec.logits(x)[:, 3].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_registered_weights_are_found_after_add_and_missing_ones_say_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctx: Context
) -> None:
    monkeypatch.setenv("PRIVBENCH_HOME", str(tmp_path / "home"))
    lacking = RECOGNIZERS.get("cifar10-zoo").missing(
        RECOGNIZERS.resolve("cifar10-zoo", {"arch": "googlenet"})
    )
    assert len(lacking) == 1
    assert "cifar10-googlenet" in lacking[0] and "rutgers.box.com" in lacking[0]
    assert str(tmp_path / "home" / "weights" / "cifar10" / "googlenet.pt") in lacking[0]

    _save_checkpoint(tmp_path / "googlenet.pt", "googlenet")
    weights.add("cifar10-googlenet", tmp_path / "googlenet.pt")
    params = RECOGNIZERS.resolve("cifar10-zoo", {"arch": "googlenet"})
    assert RECOGNIZERS.get("cifar10-zoo").missing(params) == []
    rec = RECOGNIZERS.get("cifar10-zoo")(**params)
    assert rec.predict(torch.rand(2, 3, 32, 32), ctx).shape == (2,)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    _save_checkpoint(tmp_path / "r.pt", "resnet18")
    params = RECOGNIZERS.resolve(
        "cifar10-zoo", {"arch": "resnet34", "checkpoint": str(tmp_path / "r.pt")}
    )
    with pytest.raises(ModelFileError, match=r"does not fit resnet34"):
        RECOGNIZERS.get("cifar10-zoo")(**params)
