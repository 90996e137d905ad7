"""Defenses applied one after another, e.g. CartoonGAN then iterative least-likely (Sakha,
MediaEval 2019, runs 1-3). Each later step treats the output of the earlier ones as its clean
image: an L∞ budget is measured from that output, not from the original photo. Every step is
fitted on the owner's original fit split (a surrogate stands for the platform, which trains on
ordinary photos). The chain is keyed if any step is, and reversible if every step is
(recovery undoes the steps in reverse order); its families are its steps' (a counter-attack
that targets one step's family is adaptive against the chain)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from harness.api.contracts import Context, Defense, ImageSet
from harness.api.registry import DEFENSES
from harness.core.errors import ParamError
from harness.core.identity import method_identity
from harness.core.params import Param


def _steps(owner: str, value: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """[(name, resolved params)] from the ``steps`` list; ParamError naming the bad step."""
    if not value:
        raise ParamError(f"{owner}.steps: give at least one defense")
    out = []
    for i, step in enumerate(value):
        where = f"{owner}.steps[{i}]"
        if isinstance(step, str):
            step = {"name": step}
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise ParamError(f"{where}: expected a defense name or {{name, params}}, got {step!r}")
        unknown = set(step) - {"name", "params"}
        if unknown:
            raise ParamError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid: name, params")
        name = step["name"]
        if name == "chain":
            raise ParamError(f"{where}: a chain cannot contain a chain; list its steps instead")
        if name not in DEFENSES:
            raise ParamError(f"{where}: {DEFENSES.unknown_message(name)}")
        try:
            resolved = DEFENSES.resolve(name, step.get("params") or {})
        except ParamError as exc:
            raise ParamError(f"{where}: {exc}") from None
        out.append((name, resolved))
    return out


class Chain(Defense):
    """The listed defenses in order."""

    params: ClassVar[dict[str, Param]] = {
        "steps": Param(list, None, "defenses in order: names or {name, params}", required=True),
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        _steps("chain", params["steps"])

    @classmethod
    def smoke_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        steps = [
            {"name": name, "params": DEFENSES.get(name).smoke_params(resolved)}
            for name, resolved in _steps("chain", params["steps"])
        ]
        return {**params, "steps": steps}

    @classmethod
    def families(cls, params: dict[str, Any]) -> frozenset[str]:
        """Every step's families: a counter-attack designed against any step adapts to the
        chain."""
        steps = _steps("chain", params["steps"])
        return frozenset().union(*(DEFENSES.get(n).families(p) for n, p in steps))

    @classmethod
    def target_names(cls, name: str, params: dict[str, Any]) -> frozenset[str]:
        steps = _steps("chain", params["steps"])
        return frozenset({name}).union(*(DEFENSES.get(n).target_names(n, p) for n, p in steps))

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        lacking = []
        for name, resolved in _steps("chain", params["steps"]):
            lacking += [f"{name}: {m}" for m in DEFENSES.get(name).missing(resolved)]
        return lacking

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.parts: list[Defense] = [
            DEFENSES.get(name)(**resolved) for name, resolved in _steps("chain", self.steps)
        ]
        self.keyed = any(p.keyed for p in self.parts)  # type: ignore[misc]
        self.reversible = all(p.reversible for p in self.parts)  # type: ignore[misc]

    def dependencies(self) -> dict[str, Any]:
        # the steps are made by name (entry points), so their code is not among this module's
        # imports: their identities carry it, with their own dependencies
        return {"steps": [method_identity(p) for p in self.parts]}

    def fit(self, train: ImageSet, ctx: Context) -> None:
        for part in self.parts:
            part.fit(train, ctx)

    def surrogate_weights(self) -> frozenset[str]:
        return frozenset().union(*(p.surrogate_weights() for p in self.parts))

    def fit_report(self) -> dict[str, float]:
        report: dict[str, float] = {}
        for i, part in enumerate(self.parts):
            report.update({f"step{i}.{k}": v for k, v in part.fit_report().items()})
        return report

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        x = images
        for part in self.parts:
            x = part.protect(x, ids, ctx)
        return x

    def recover(self, protected: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        x = protected
        for part in reversed(self.parts):
            x = part.recover(x, ids, ctx)
        return x
