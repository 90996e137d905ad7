"""Checks of the threat-model declarations: a defense's family, a counter-attack's targets and
what it knows of a defense it targets (:mod:`harness.api.threat`)."""

from __future__ import annotations

from harness.api.registry import DEFENSES
from harness.api.testing.case import Case
from harness.api.threat import DEFENSE_FAMILIES, KNOWLEDGE_LEVELS, unknown_targets


def check_family_declared(case: Case) -> None:
    """A defense's families (``family``, or ``families(params)``) are words of
    DEFENSE_FAMILIES, so a counter-attack that targets the family finds it."""
    cls = case.method_class
    families = cls.families(case.resolve())
    assert isinstance(families, frozenset), f"{case.id}: families() is not a frozenset"
    unknown = sorted(f for f in families if f not in DEFENSE_FAMILIES)
    assert not unknown, (
        f"{case.id}: family {unknown[0]!r} is not one of {sorted(DEFENSE_FAMILIES)} "
        "(harness.api.threat.DEFENSE_FAMILIES)"
    )


def check_threat_declared(case: Case) -> None:
    """``targets`` names defense families, registered defenses or ``every-defense``; ``threat``
    says what the platform knows of a targeted defense (one of KNOWLEDGE_LEVELS) and that it is
    adaptive there; a counter-attack that targets nothing is not adaptive anywhere (so one that
    declares itself adaptive says what against), and one that retrains on protected photos is
    adaptive."""
    cls = case.method_class
    targets = cls.targets
    assert isinstance(targets, frozenset), f"{case.id}: targets is not a frozenset"
    unknown = unknown_targets(targets, frozenset(DEFENSES.names()))
    assert not unknown, (
        f"{case.id}: targets {unknown[0]!r}, neither a defense family "
        f"({', '.join(sorted(DEFENSE_FAMILIES))}), a registered defense nor 'every-defense'"
    )
    threat = cls.threat(case.resolve())
    assert threat.get("knows") in KNOWLEDGE_LEVELS, (
        f"{case.id}: threat knows {threat.get('knows')!r}, not one of {KNOWLEDGE_LEVELS}"
    )
    assert isinstance(threat.get("adaptive"), bool), f"{case.id}: threat adaptive is not a bool"
    assert threat["adaptive"] or not cls.adapts(), (
        f"{case.id}: retrains on protected photos (overrides adapt) yet declares itself oblivious"
    )
    declared_adaptive = threat["adaptive"] or getattr(cls, "oblivious", True) is False
    assert targets or cls.adapts() or not declared_adaptive, (
        f"{case.id}: declares itself adaptive but targets no defense: declare `targets` "
        "(defense families or names) so the pair's threat model can be told"
    )
