"""What the evade ranking is built from: per (defense, recognizer) the worst case over the
counter-attacks (the best single counter-attack and the per-image union), the threat model
each counter-attack declares, the exact McNemar test between two rows, and the ranking's data
types. :mod:`harness.boards.roles` ranks the rows within each recognizer role and states the
rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.metrics.declared import MetricCatalog, MetricInfo
from harness.metrics.stats import mcnemar_exact, wilson_interval
from harness.runs.outcomes import CellOutcome, Outcomes

Row = dict[str, Any]
TIE_ALPHA = 0.05
FLOOR_PASS, FLOOR_BORDERLINE, FLOOR_BELOW = "pass", "borderline", "below"
KNOWLEDGE_ORDER = ("nothing", "algorithm", "parameters", "key")


@dataclass(frozen=True)
class WorstCase:
    """One (defense, recognizer) worst case: a rate with its interval, and where it came from
    (a counter-attack label, or None for the per-image union)."""

    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    attack: str | None
    white_box: bool = False
    outcome: CellOutcome | None = None  # per-image fooled bits behind the value


@dataclass
class RankedRow:
    defense: str
    best_single: dict[str, WorstCase]
    union: dict[str, WorstCase]
    ranking_cells: dict[str, WorstCase]  # the cell the score uses, per black-box recognizer
    score: float | None  # mean black-box worst case
    white_score: float | None  # mean white-box worst case
    quality: float | None
    rank: int | None = None  # None: not cleared the quality floor, or nothing to rank on
    below_floor: bool = False  # the whole quality interval is under the floor
    pareto: bool = False
    tie_p: float | None = None  # McNemar p against the ranked row above
    tied: bool = False
    threat: dict[str, Any] = field(default_factory=dict)
    quality_ci: tuple[float | None, float | None] = (None, None)
    floor_status: str | None = None  # FLOOR_PASS, FLOOR_BORDERLINE, FLOOR_BELOW; None: no floor
    floor_by_mean: bool = False  # the quality row had no interval: judged on its mean

    @property
    def borderline(self) -> bool:
        """The quality interval straddles the floor: neither ranked nor below it."""
        return self.floor_status == FLOOR_BORDERLINE

    @property
    def clears_floor(self) -> bool:
        """No floor, or the quality interval clears it."""
        return self.floor_status in (None, FLOOR_PASS)


@dataclass
class RoleRanking:
    """The ranking within one recognizer role (identifier, detector, classifier), or of one
    recognizer: rows restricted to ``recognizers``, ranked first, then the unranked."""

    role: str
    recognizers: list[str]
    rows: list[RankedRow]
    any_white_box: bool = False

    @property
    def ranked(self) -> list[RankedRow]:
        return [r for r in self.rows if r.rank is not None]


@dataclass
class Ranking:
    """An evade run's rankings. ``rows``: one per defense config over every recognizer, in
    first-seen order and without a rank (ranks exist only within a role: ``roles``, and within
    one recognizer: ``by_recognizer``)."""

    rows: list[RankedRow]
    recognizers: list[str]
    kinds: dict[str, str]
    quality_metric: str | None
    floor: dict[str, Any] | None
    attacks: list[str]
    threats: dict[str, dict[str, dict[str, Any]]]  # counter-attack → defense → threat model
    any_white_box: bool
    quality_info: MetricInfo | None = None  # the declaration of ``quality_metric``
    roles: list[RoleRanking] = field(default_factory=list)
    by_recognizer: dict[str, RoleRanking] = field(default_factory=dict)

    def role(self, kind: str) -> RoleRanking | None:
        """The ranking of one recognizer role, or None when the run has none of that kind."""
        return next((r for r in self.roles if r.role == kind), None)


def _ordered(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


def recognizer_kinds(
    manifest: dict[str, Any], rows: list[Row], catalog: MetricCatalog
) -> dict[str, str]:
    """Recognizer label → kind, from the manifest; a run written before it recorded kinds
    gives a recognizer with rows of a detection metric 'detector', any other 'classifier'."""
    kinds = dict(manifest.get("recognizer_kinds") or {})
    detection = set(catalog.labels("detection"))
    detectors = {r["recognizer"] for r in rows if r["metric"] in detection}
    for cfg in manifest.get("config", {}).get("recognizers", []):
        if cfg["label"] not in kinds:
            kinds[cfg["label"]] = "detector" if cfg["label"] in detectors else "classifier"
    return kinds


def _best_single(
    rows: list[Row], outcomes: Outcomes, privacy: str | None
) -> dict[tuple[str, str], WorstCase]:
    """(defense, recognizer) → the lowest ``privacy`` rate over the counter-attacks."""
    best: dict[tuple[str, str], WorstCase] = {}
    for r in rows:
        if r["scope"] != "cell" or r["metric"] != privacy or r["value"] is None:
            continue
        key = (r["defense"], r["recognizer"])
        if key not in best or r["value"] < best[key].value:
            best[key] = WorstCase(
                r["value"],
                r.get("ci_low"),
                r.get("ci_high"),
                r["n"],
                r["counter_attack"],
                bool(r.get("white_box")),
                outcomes.get((r["defense"], r["counter_attack"], r["recognizer"])),
            )
    return best


def per_image_union(cells: list[CellOutcome]) -> CellOutcome | None:
    """A probe is fooled only if it is fooled in every cell (None when the cells do not cover
    the same probes in the same order)."""
    if not cells or any(c.ids != cells[0].ids for c in cells):
        return None
    eligible = cells[0].eligible
    fooled = np.logical_and.reduce([c.fooled for c in cells]) & eligible
    return CellOutcome(cells[0].ids, eligible, fooled)


def _union(
    rows: list[Row], outcomes: Outcomes, attacks: list[str]
) -> dict[tuple[str, str], WorstCase]:
    white = {
        (r["defense"], r["recognizer"]) for r in rows if r["scope"] == "cell" and r.get("white_box")
    }
    grouped: dict[tuple[str, str], list[CellOutcome]] = {}
    for (d, a, rec), outcome in outcomes.items():
        if a in attacks:
            grouped.setdefault((d, rec), []).append(outcome)
    out = {}
    for key, cells in grouped.items():
        union = per_image_union(cells)
        if union is None:
            continue
        n, k = int(union.eligible.sum()), int(union.fooled.sum())
        if n == 0:
            continue
        lo, hi = wilson_interval(k, n)
        out[key] = WorstCase(k / n, lo, hi, n, None, key in white, union)
    return out


def attack_threats(rows: list[Row]) -> dict[str, dict[str, dict[str, Any]]]:
    """Counter-attack label → defense label → the pair's threat model, as the cell rows carry
    it (a run written before threat models were per pair repeats one per counter-attack)."""
    threats: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["scope"] == "cell" and "adaptive" in r:
            threat = {"knows": r.get("knows", "nothing"), "adaptive": bool(r["adaptive"])}
            threats.setdefault(r["counter_attack"], {})[r["defense"]] = threat
    return threats


def pair_threat(
    threats: dict[str, dict[str, dict[str, Any]]], attack: str | None, defense: str
) -> dict[str, Any] | None:
    """The threat model of (``defense``, ``attack``), or None when the rows carry none."""
    return threats.get(attack or "", {}).get(defense)


def _threat_summary(threats: list[dict[str, Any]], exempt: bool = False) -> dict[str, Any]:
    """The strongest threat model a row was evaluated against, and whether all were
    oblivious (RobustBench flags such rows: no adaptive evaluation). ``exempt``: no defense
    (``none``), which has nothing to adapt to and is never flagged."""
    if not threats:
        return {"knows": "nothing", "adaptive": False, "oblivious_only": not exempt}
    knows = max((t.get("knows", "nothing") for t in threats), key=KNOWLEDGE_ORDER.index)
    adaptive = any(t.get("adaptive") for t in threats)
    return {"knows": knows, "adaptive": adaptive, "oblivious_only": not adaptive and not exempt}


def _pooled(cells: dict[str, WorstCase]) -> dict[tuple[str, str], bool]:
    """(recognizer, probe id) → fooled, over the eligible probes of the ranking cells."""
    out = {}
    for rec, wc in cells.items():
        if wc.outcome is None:
            continue
        for i, ok, f in zip(wc.outcome.ids, wc.outcome.eligible, wc.outcome.fooled, strict=True):
            if ok:
                out[(rec, i)] = bool(f)
    return out


def tie_test(upper: RankedRow, lower: RankedRow) -> float | None:
    """Exact McNemar p of two rows' ranking cells, paired on (recognizer, probe); None when
    they share no probes with outcomes."""
    a, b = _pooled(upper.ranking_cells), _pooled(lower.ranking_cells)
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    only_a = sum(a[k] and not b[k] for k in shared)
    only_b = sum(b[k] and not a[k] for k in shared)
    return mcnemar_exact(only_a, only_b)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def quality_metric(
    floor: dict[str, Any] | None, rows: list[Row], catalog: MetricCatalog
) -> str | None:
    """The quality the ranking shows and fronts on: the floor's metric, else the suite's
    headline quality metric when some defense has a value for it."""
    if floor:
        return floor["metric"]
    measured = {r["metric"] for r in rows if r["scope"] == "defense" and r["value"] is not None}
    return catalog.headline("quality", measured)


def _evaluated(
    rows: list[Row], threats: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, list[Any]]:
    """Defense label → the distinct threat models its cells were evaluated against."""
    evaluated: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["scope"] != "cell":
            continue
        threat = pair_threat(threats, r["counter_attack"], r["defense"])
        if threat is not None:
            seen = evaluated.setdefault(r["defense"], [])
            if threat not in seen:
                seen.append(threat)
    return evaluated


def no_defense(rows: list[Row]) -> set[str]:
    """Labels of the configs of the ``none`` defense (exempt from the ⚑ flag)."""
    return {r["defense"] for r in rows if r.get("defense_name") == "none"}


def move_in_words(attack: str) -> str:
    """A counter-attack label as a sentence names it: the ``none`` counter-attack is 'no
    counter-attack' (a bare 'none' beside a defense reads as the ``none`` defense)."""
    return "no counter-attack" if attack == "none" else attack


def threat_label(threat: dict[str, Any]) -> str:
    """'knows parameters, adaptive' or 'knows nothing, oblivious'."""
    return f"knows {threat['knows']}, {'adaptive' if threat['adaptive'] else 'oblivious'}"
