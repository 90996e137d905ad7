"""``privbench run SUITE --smoke``: the same suite, cut so that it only checks code paths.

Every defense, recognizer, counter-attack and metric of the suite still runs, on a handful of
probes, with the fewest iterations, epochs and steps that still take every branch: each method
declares its own cuts in ``Method.smoke`` (a chain and a surrogate defense also cut the methods
they hold). Labels stay those of the full suite, so the smoke leaderboard reads like the real
one, and the run is marked as smoke in its manifest and leaderboard. It is the idea of
lm-evaluation-harness's ``--limit`` (Gao et al., 2021): try a suite in seconds before a long
run, and let CI run every shipped suite.

Missing files do not refuse a smoke run as they refuse a full one: a recognizer or
counter-attack whose weights are absent is dropped and listed, and a suite whose data set (or
every recognizer) is absent is skipped as a whole, saying what to add.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS, Registry
from harness.engine.execute import missing
from harness.engine.suite import MethodConfig, Suite

SMOKE_PROBES = 8  # probes of a smoke run: one batch, every data set's cut
SMOKE_NOTE = (
    "SMOKE RUN: a handful of probes and the fewest steps, to check that every method runs; "
    "these numbers measure nothing"
)


@dataclass
class SmokePlan:
    """A suite cut for a smoke run, or None when nothing of it can run here; what was left out."""

    suite: Suite | None
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def skipped_lines(self) -> list[str]:
        return [f"{s['scope']} {s['name']}: {' | '.join(s['needs'])}" for s in self.skipped]


class SmokeSkipped(Exception):
    """Nothing of the suite can run on this machine; ``plan.skipped`` says what is missing."""

    def __init__(self, plan: SmokePlan) -> None:
        super().__init__("; ".join(plan.skipped_lines()))
        self.plan = plan


def smoke_config(registry: Registry[Any], cfg: MethodConfig) -> MethodConfig:
    """``cfg`` with the method's smoke cuts, validated again (same label)."""
    cls = registry.get(cfg.name)
    params = registry.resolve(cfg.name, cls.smoke_params(dict(cfg.params)))
    return dataclasses.replace(cfg, params=params)


def _available(
    registry: Registry[Any], configs: list[MethodConfig], scope: str
) -> tuple[list[MethodConfig], list[dict[str, Any]]]:
    keep, skipped = [], []
    for cfg in configs:
        lacking = missing(registry.get(cfg.name), cfg.params)
        if lacking:
            skipped.append({"scope": scope, "name": cfg.label, "needs": lacking})
        else:
            keep.append(cfg)
    return keep, skipped


def smoke_plan(suite: Suite) -> SmokePlan:
    """The smoke version of ``suite``: every method cut to its smoke parameters, recognizers and
    counter-attacks this machine lacks left out (listed); ``suite`` None when the data set or
    every recognizer is missing."""
    dataset = smoke_config(DATASETS, suite.dataset)
    lacking = missing(DATASETS.get(dataset.name), dataset.params)
    if lacking:
        return SmokePlan(None, [{"scope": "dataset", "name": dataset.label, "needs": lacking}])
    recognizers, skipped = _available(RECOGNIZERS, suite.recognizers, "recognizer")
    attacks, skipped_attacks = _available(ATTACKS, suite.counter_attacks, "counter-attack")
    skipped += skipped_attacks
    if not recognizers or not attacks:
        return SmokePlan(None, skipped)
    cut = dataclasses.replace(
        suite,
        dataset=dataset,
        recognizers=[smoke_config(RECOGNIZERS, c) for c in recognizers],
        defenses=[smoke_config(DEFENSES, c) for c in suite.defenses],
        counter_attacks=[smoke_config(ATTACKS, c) for c in attacks],
        metrics=[smoke_config(METRICS, c) for c in suite.metrics],
        batch_size=min(suite.batch_size, SMOKE_PROBES),
        smoke=True,
    )
    return SmokePlan(cut, skipped)
