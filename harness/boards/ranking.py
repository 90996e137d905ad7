"""The ranking of an evade suite: worst-case protection against image quality.

Rules (stated above every ranking the leaderboard and the report print):

- **Worst case per recognizer.** The platform picks its best move, so a defense is judged per
  recognizer by its lowest fooling rate over the counter-attacks (the *best single
  counter-attack*, RobustBench's "best known attack"). A second, stricter figure counts a probe
  as fooled only when *every* counter-attack fails on it (the *per-image union*). For a
  detector the union is what the platform really achieves (it runs every move; a face found by
  any one counts), so a detector is ranked on it; for an identifier or classifier it needs an
  oracle that knows which move's answer is right, so it is shown as an upper bound of the
  platform and not ranked on.
- **Black-box only.** A recognizer with the same weights as a model the defense took gradients
  from (UEP's local CNNs, an adversarial defense's surrogate) judges it *white-box*; such
  cells are shown in their own column and left out of the score.
- **Quality floor, Pareto front.** The score is the mean black-box worst case over
  recognizers. A suite's ``quality_floor`` (e.g. SSIM ≥ 0.5) lists configs below it without a
  rank: destroying the photo is not a privacy defense of the ``evade`` kind. Among ranked
  configs, those no other config beats on both score and quality form the Pareto front.
- **Ties.** A row is marked tied with the row above when an exact McNemar test on their
  per-image outcomes in the ranking cells (pooled over recognizers) finds no difference at
  α = 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.metrics.declared import MetricCatalog, MetricInfo
from harness.metrics.stats import mcnemar_exact, wilson_interval
from harness.runs.outcomes import CellOutcome, Outcomes

Row = dict[str, Any]
TIE_ALPHA = 0.05
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
    rank: int | None = None  # None: below the quality floor, or nothing to rank on
    below_floor: bool = False
    pareto: bool = False
    tie_p: float | None = None  # McNemar p against the ranked row above
    tied: bool = False
    threat: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ranking:
    rows: list[RankedRow]
    recognizers: list[str]
    kinds: dict[str, str]
    quality_metric: str | None
    floor: dict[str, Any] | None
    attacks: list[str]
    threats: dict[str, dict[str, dict[str, Any]]]  # counter-attack → defense → threat model
    any_white_box: bool
    quality_info: MetricInfo | None = None  # the declaration of ``quality_metric``


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
        threat = pair_threat(threats, r["counter_attack"], r["defense"])
        if r["scope"] == "cell" and threat is not None:
            seen = evaluated.setdefault(r["defense"], [])
            if threat not in seen:
                seen.append(threat)
    return evaluated


def no_defense(rows: list[Row]) -> set[str]:
    """Labels of the configs of the ``none`` defense (exempt from the ⚑ flag)."""
    return {r["defense"] for r in rows if r.get("defense_name") == "none"}


@dataclass(frozen=True)
class _Board:
    """What every row of one ranking is built from."""

    recognizers: list[str]
    kinds: dict[str, str]
    best: dict[tuple[str, str], WorstCase]
    union: dict[tuple[str, str], WorstCase]
    quality: dict[str, float]
    floor: dict[str, Any] | None
    evaluated: dict[str, list[dict[str, Any]]]
    exempt: frozenset[str] = frozenset()  # no defense: never flagged ⚑


def _row(board: _Board, d: str) -> RankedRow:
    """One defense config's row, before ordering."""
    singles = {rec: board.best[(d, rec)] for rec in board.recognizers if (d, rec) in board.best}
    unions = {rec: board.union[(d, rec)] for rec in board.recognizers if (d, rec) in board.union}
    ranking_cells: dict[str, WorstCase] = {}
    white: list[float] = []
    for rec, wc in singles.items():
        achievable = unions.get(rec, wc) if board.kinds.get(rec) == "detector" else wc
        if wc.white_box:
            white.append(achievable.value)
        else:
            ranking_cells[rec] = achievable
    q = board.quality.get(d)
    floor = board.floor
    return RankedRow(
        d,
        singles,
        unions,
        ranking_cells,
        _mean([wc.value for wc in ranking_cells.values()]),
        _mean(white),
        q,
        below_floor=bool(floor) and (q is None or q < floor["min"]),
        threat=_threat_summary(board.evaluated.get(d, []), d in board.exempt),
    )


def _pareto(ranked: list[RankedRow], q: dict[str, float]) -> None:
    """Mark the ranked rows no other ranked row matches on score and quality and beats on one
    (``q``: defense → quality, oriented so that larger is better)."""
    points = [(r, r.score, q[r.defense]) for r in ranked if r.defense in q]
    for row, score, quality in points:
        row.pareto = not any(
            o is not row and s >= score and oq >= quality and (s > score or oq > quality)
            for o, s, oq in points
        )


def _order(out: list[RankedRow], better: Callable[[float], float]) -> list[RankedRow]:
    """Ranked rows by score then quality, with Pareto marks and ties; then the unranked.
    ``better`` orients a quality value so that larger is better."""
    q = {r.defense: better(r.quality) for r in out if r.quality is not None}
    ranked = sorted(
        (r for r in out if r.score is not None and not r.below_floor),
        key=lambda r: (-(r.score or 0.0), -q.get(r.defense, -math.inf)),
    )
    _pareto(ranked, q)
    for i, row in enumerate(ranked, 1):
        row.rank = i
        if i > 1:
            row.tie_p = tie_test(ranked[i - 2], row)
            row.tied = row.tie_p is not None and row.tie_p >= TIE_ALPHA
    rest = [r for r in out if r.rank is None]
    rest.sort(key=lambda r: -(r.score if r.score is not None else -math.inf))
    return ranked + rest


def build_ranking(manifest: dict[str, Any], rows: list[Row], outcomes: Outcomes) -> Ranking:
    """Rank the defense configs of an evade run (see the module docstring for the rules)."""
    catalog = MetricCatalog.of_run(manifest, rows)
    floor = manifest.get("config", {}).get("quality_floor")
    defenses = _ordered([r["defense"] for r in rows if r["scope"] in ("cell", "defense")])
    recognizers = _ordered([r["recognizer"] for r in rows if r["scope"] == "cell"])
    attacks = _ordered([r["counter_attack"] for r in rows if r["scope"] == "cell"])
    threats = attack_threats(rows)
    q_metric = quality_metric(floor, rows, catalog)
    quality = {
        r["defense"]: r["value"]
        for r in rows
        if r["scope"] == "defense" and r["metric"] == q_metric and r["value"] is not None
    }
    board = _Board(
        recognizers,
        recognizer_kinds(manifest, rows, catalog),
        _best_single(rows, outcomes, catalog.first("privacy")),
        _union(rows, outcomes, attacks),
        quality,
        floor,
        _evaluated(rows, threats),
        frozenset(no_defense(rows)),
    )
    out = [_row(board, d) for d in defenses]
    q_info = catalog[q_metric] if q_metric else None
    return Ranking(
        _order(out, q_info.oriented if q_info else float),
        recognizers,
        board.kinds,
        q_metric,
        floor,
        attacks,
        threats,
        any(wc.white_box for r in out for wc in r.best_single.values()),
        q_info,
    )


def rules(ranking: Ranking) -> list[str]:
    """The ranking's rules in words, as printed above its table."""
    floor = ranking.floor
    q = ranking.quality_metric
    lines = [
        "Score: the mean over black-box recognizers of the worst-case fooling rate, i.e. the "
        "lowest over the counter-attacks (the platform picks its best move; the letter names "
        "it). Detectors are scored on the per-image union (a probe counts as fooled only if "
        "every counter-attack fails on it; the platform needs no oracle to combine them).",
        (
            f"Quality floor: {q} ≥ {floor['min']:g} (the suite's `quality_floor`); configs below "
            "it are listed without a rank."
            if floor
            else "No quality floor declared (suite key `quality_floor`): every config is ranked."
        ),
        (
            f"★ = on the Pareto front of score against {q} (no ranked config is better on "
            "both). = = not significantly different from the row above (exact McNemar test on "
            f"the per-image outcomes of the ranking cells, α = {TIE_ALPHA})."
            if q
            else f"= = not significantly different from the row above (exact McNemar, α = "
            f"{TIE_ALPHA})."
        ),
    ]
    if ranking.any_white_box:
        lines.append(
            "wb = white-box: the recognizer has the same weights as a model the defense took "
            "gradients from; white-box cells are averaged apart and not ranked on."
        )
    return lines


def threat_label(threat: dict[str, Any]) -> str:
    """'knows parameters, adaptive' or 'knows nothing, oblivious'."""
    return f"knows {threat['knows']}, {'adaptive' if threat['adaptive'] else 'oblivious'}"
