"""Planning a run: a suite becomes work units, and each unit's results get their cache keys.

The run has three parts (:mod:`harness.engine.runner` ties them together): this module plans,
:mod:`harness.engine.execute` computes a unit's records (locally or on a Dask worker, see
:mod:`harness.engine.executors`), and :mod:`harness.engine.score` turns records into metric rows.

A work unit is one defense config with all its counter-attack × recognizer cells: the protected
images are computed once per defense config and every cell of it reads them, so that is the
smallest unit that repeats nothing. Units are independent of each other; the order of the plan
is the order of the results, whatever order an executor finishes them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.api.registry import ATTACKS, DEFENSES
from harness.engine.cache_keys import cell_parts, protected_identity, protected_parts
from harness.engine.suite import MethodConfig, Suite

if TYPE_CHECKING:
    from harness.api.contracts import Context


@dataclass(frozen=True)
class WorkUnit:
    """One defense config and the counter-attacks it meets: ``cells`` of them with the
    recognizers of the suite. ``index`` is its place in the plan."""

    index: int
    defense: MethodConfig
    counter_attacks: tuple[MethodConfig, ...]
    cells: int


@dataclass(frozen=True)
class RunPlan:
    """What a suite asks for, in order: recognizers first, then one unit per defense config."""

    recognizers: tuple[MethodConfig, ...]
    units: tuple[WorkUnit, ...]

    @property
    def n_cells(self) -> int:
        return sum(u.cells for u in self.units)


def plan_run(suite: Suite) -> RunPlan:
    """The run's work units (no data is read and nothing is computed)."""
    attacks = tuple(suite.counter_attacks)
    per_unit = len(attacks) * len(suite.recognizers)
    units = tuple(WorkUnit(i, dcfg, attacks, per_unit) for i, dcfg in enumerate(suite.defenses))
    return RunPlan(tuple(suite.recognizers), units)


def planned_keys(
    suite: Suite,
    plan: RunPlan,
    split_fingerprint: str,
    ctx: Context,
    recognizers: dict[str, str],
) -> dict[tuple[str, str, str], str]:
    """The cache key of every cell's predictions, by (defense, counter-attack, recognizer)
    label, derived from the methods' identities alone (nothing is fitted or run).
    ``recognizers`` maps each recognizer's label to its identity (:func:`recognizer_identity`).
    A cell whose key the cache holds costs a file read; a run whose cells are all cached
    computes nothing."""
    keys: dict[tuple[str, str, str], str] = {}
    for unit in plan.units:
        defense = DEFENSES.create(unit.defense.name, unit.defense.params)
        protected = protected_identity(
            protected_parts(defense, split_fingerprint, "probe", ctx, suite.upload)
        )
        adapted: str | None = None
        for acfg in unit.counter_attacks:
            attack = ATTACKS.create(acfg.name, acfg.params)
            if attack.adapts() and adapted is None:
                fit = protected_parts(defense, split_fingerprint, "fit", ctx, suite.upload)
                adapted = protected_identity(fit)
            for rlabel, identity in recognizers.items():
                on = adapted if attack.adapts() else None
                parts = cell_parts(protected, attack, identity, on)
                keys[(unit.defense.label, acfg.label, rlabel)] = ctx.cache.key("cell", parts)
    return keys


def describe(plan: RunPlan) -> dict[str, Any]:
    """The plan's shape, for the manifest."""
    return {
        "units": len(plan.units),
        "cells": plan.n_cells,
        "unit": "defense config × every counter-attack × every recognizer",
    }
