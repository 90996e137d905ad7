"""Test settings: offline, deterministic, and a private PRIVBENCH_HOME per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def privbench_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("privbench-home")
    os.environ["PRIVBENCH_HOME"] = str(home)
    os.environ["TORCH_HOME"] = str(home / "torch")
    return home


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def ctx(tmp_path: Path):
    from harness.cache import Cache
    from harness.contracts import Context

    return Context(torch.device("cpu"), seed=0, cache=Cache(tmp_path / "cache"), batch_size=16)


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
