"""Torch networks built and moved outside inference mode.

A tensor created under ``torch.inference_mode()`` can never be saved for autograd. Recognizers
load their networks lazily and move them to the run's device on first use, and that first use
is often a prediction under inference mode; the same network may later be an owner's white-box
surrogate that needs gradients (Sakha's MediaEval 2019 runs, AIP). Building and moving networks
through this module keeps their parameters ordinary tensors whichever came first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

M = TypeVar("M")


def build_module(make: Callable[[], M]) -> M:
    """``make()`` with inference mode switched off (also inside an inference-mode block)."""
    with torch.inference_mode(False):
        return make()


def module_on(module: Any, device: torch.device | str) -> Any:
    """``module.to(device)``; parameters created by the move are ordinary tensors."""
    with torch.inference_mode(False):
        return module.to(device)
