"""The threat models of a run in words: each counter-attack's, per defense it met, for the
legends, and the defenses never tried against an adaptive counter-attack (RobustBench's flag;
Carlini et al., "On Evaluating Adversarial Robustness", arXiv 2019, §3: a defense evaluated
only against attacks not designed for it has not been evaluated)."""

from __future__ import annotations

from typing import Any

from harness.api.threat import OBLIVIOUS
from harness.boards.ranking import Ranking, threat_label

OBLIVIOUS_KEY = (OBLIVIOUS["knows"], OBLIVIOUS["adaptive"])


def attack_threat_text(per_defense: dict[str, dict[str, Any]]) -> str:
    """A counter-attack's threat models over the defenses it met: one label when they agree
    ('knows nothing, oblivious'), else each model with its defenses, oblivious ones last as
    'the others' ('knows algorithm, adaptive vs krtio; knows nothing, oblivious vs the
    others')."""
    groups: dict[tuple[str, bool], list[str]] = {}
    for defense, threat in per_defense.items():
        groups.setdefault((threat["knows"], bool(threat["adaptive"])), []).append(defense)
    if len(groups) == 1:
        (knows, adaptive), _ = next(iter(groups.items()))
        return threat_label({"knows": knows, "adaptive": adaptive})
    parts = [
        f"{threat_label({'knows': k, 'adaptive': a})} vs {', '.join(ds)}"
        for (k, a), ds in groups.items()
        if (k, a) != OBLIVIOUS_KEY
    ]
    if OBLIVIOUS_KEY in groups:
        parts.append(f"{threat_label(OBLIVIOUS)} vs the others")
    return "; ".join(parts)


def unadapted(ranking: Ranking) -> list[str]:
    """The defense configs of the ranking flagged ⚑: none of their counter-attacks was
    designed against them (no defense, ``none``, is exempt)."""
    return [r.defense for r in ranking.rows if r.threat.get("oblivious_only")]


def unadapted_note(ranking: Ranking) -> str | None:
    """The sentence under the ranking that names the ⚑ rows, or None when there are none."""
    flagged = unadapted(ranking)
    if not flagged:
        return None
    return (
        f"⚑ Never tried against an adaptive counter-attack (one designed against its kind of "
        f"defense): {', '.join(flagged)}. Their scores say how they fare against generic "
        "moves only; a platform that adapts to them may do better. The `none` row (no "
        "defense) is exempt: it has nothing to adapt to."
    )
