"""A white-box surrogate works however its network was first built (issue: SFace's torch graph,
converted lazily, was first converted under a prediction's inference mode, and every gradient
through it then failed). Each test starts from an empty PRIVBENCH_HOME, so the fp32 graph is
converted inside the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from defenses.surrogate import Surrogate
from harness.api.contracts import Context
from harness.api.registry import DATASETS, RECOGNIZERS
from harness.core.cache import Cache
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from harness.toolkit.imaging import to_tensor
from tests.conftest import write_suite


@pytest.fixture
def cold_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cold-home"
    monkeypatch.setenv("PRIVBENCH_HOME", str(home))
    return home


def _faces(n: int) -> torch.Tensor:
    split = DATASETS.create("lfw-subset", {"max_probes": n}).load(seed=0)
    return to_tensor(split.probe.images, "cpu")


def _input_gradient(logits_of, images: torch.Tensor) -> torch.Tensor:
    x = images.clone().requires_grad_(True)
    logits_of(x).logsumexp(1).sum().backward()
    assert x.grad is not None
    return x.grad


def test_sface_torch_surrogate_from_a_cold_cache_takes_gradients(cold_home: Path) -> None:
    split = DATASETS.create("lfw-subset", {"max_probes": 6}).load(seed=0)
    ctx = Context(torch.device("cpu"), seed=0, cache=Cache(cold_home / "cache"), batch_size=8)
    surrogate = Surrogate("sface", {"backend": "torch"})
    surrogate.fit(split.fit, ctx)  # the centroids pass (inference mode) builds the network
    grad = _input_gradient(surrogate.logits, to_tensor(split.probe.images[:4], "cpu"))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_sface_first_used_under_inference_mode_then_differentiated(cold_home: Path) -> None:
    sface = RECOGNIZERS.create("sface", {"backend": "torch"})
    faces = _faces(4)
    with torch.inference_mode():
        sface.embed(faces)  # the network is converted here, inside inference mode
    assert all(not p.is_inference() for p in sface._net.parameters())
    grad = _input_gradient(sface.embed_torch, faces)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_a_suite_with_an_sface_torch_surrogate_runs_from_a_cold_cache(
    tmp_path: Path, cold_home: Path
) -> None:
    suite = load_suite(
        write_suite(
            tmp_path / "pgd.yaml",
            """
name: cold-surrogate
seed: 0
dataset: {name: lfw-subset, params: {max_probes: 6}}
recognizers: [sface]
defenses:
  - {name: pgd, params: {eps: 8, iterations: 2, surrogate: sface,
                         surrogate_params: {backend: torch}}}
counter_attacks: [none]
metrics: [fooling_rate]
batch_size: 6
""",
        )
    )
    result = run_suite(suite, RunOptions(out_root=tmp_path / "out", progress=False))
    assert result.failures == []
    fooling = [r for r in result.rows if r["metric"] == "fooling_rate" and r["defense"] != "none"]
    assert len(fooling) == 1 and fooling[0]["n"] > 0
