"""The evade ranking: one ranking per recognizer role, worst-case protection against quality.

Rules (stated above every ranking the leaderboard and the report print, :func:`rules`):

- **One ranking per role.** An identifier, a detector and a classifier answer different
  questions, so a defense config is ranked within each recognizer role (the recognizer kinds:
  identifier, detector, classifier), never on one number averaged across them. The report's
  per-recognizer tabs rank within one recognizer the same way.
- **Worst case per recognizer.** The platform picks its best move, so a defense is judged per
  recognizer by its lowest fooling rate over the counter-attacks (the *best single
  counter-attack*, RobustBench's "best known attack"; Croce et al., NeurIPS 2021 Datasets and
  Benchmarks). A stricter figure counts a probe as fooled only when *every* counter-attack
  fails on it (the *per-image union*). For a detector the union is what the platform really
  achieves (it runs every move; a face found by any one counts), so a detector is ranked on it;
  for an identifier or classifier it needs an oracle that knows which move's answer is right,
  so it is shown as an upper bound and not ranked on. :func:`ranked_value` is that choice, and
  the ranking, the trade-off plots and the verdict all read it.
- **Black-box only.** A recognizer with the same weights as a model the defense took gradients
  from judges it *white-box*; such cells are shown apart and left out of the score.
- **Score.** The mean black-box worst case over the role's recognizers.
- **Quality floor by its interval.** A suite's ``quality_floor`` (e.g. SSIM ≥ 0.5) ranks a
  config only when its quality's 95% interval clears the floor (the lower bound for a
  higher-is-better metric, the upper bound otherwise); an interval that straddles the floor is
  *borderline*, one wholly on the wrong side *below*; neither is ranked. A quality row without
  an interval is judged on its mean, and the table says so.
- **Pareto front, ties.** Among a role's ranked configs, those no other beats on both score
  and quality form the Pareto front (★). A row is marked tied (=) with the row above when an
  exact McNemar test on their per-image outcomes in the role's ranking cells (pooled over its
  recognizers) finds no difference at α = 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from harness.boards.ranking import (
    FLOOR_BELOW,
    FLOOR_BORDERLINE,
    FLOOR_PASS,
    TIE_ALPHA,
    RankedRow,
    Ranking,
    RoleRanking,
    WorstCase,
    _best_single,
    _evaluated,
    _mean,
    _ordered,
    _threat_summary,
    _union,
    attack_threats,
    no_defense,
    quality_metric,
    recognizer_kinds,
    tie_test,
)
from harness.metrics.declared import MetricCatalog, MetricInfo
from harness.runs.outcomes import Outcomes

Row = dict[str, Any]
ROLE_ORDER = ("identifier", "detector", "classifier")


def ranked_value(row: RankedRow, rec: str, kind: str | None) -> WorstCase | None:
    """The worst case ``row`` is ranked on for recognizer ``rec`` of ``kind``: a detector's
    per-image union (its best single counter-attack when there is no union), any other's best
    single counter-attack. The one aggregation the ranking, the plots and the verdict share."""
    single = row.best_single.get(rec)
    if kind == "detector":
        return row.union.get(rec, single)
    return single


def floor_status(
    value: float | None,
    interval: tuple[float | None, float | None],
    floor: dict[str, Any] | None,
    info: MetricInfo | None,
) -> tuple[str | None, bool]:
    """(status, judged on the mean) of one quality value against the floor: FLOOR_PASS when
    the interval's worse bound clears it, FLOOR_BELOW when its better bound does not,
    FLOOR_BORDERLINE between; the mean alone when there is no interval; None without a floor.
    No value at all is below it, judged on nothing."""
    if not floor:
        return None, False
    if value is None:
        return FLOOR_BELOW, False
    oriented = info.oriented if info else float  # larger is better
    floor_at = oriented(floor["min"])
    lo, hi = interval
    if lo is None or hi is None:
        return (FLOOR_PASS if oriented(value) >= floor_at else FLOOR_BELOW), True
    worse, better = sorted((oriented(lo), oriented(hi)))
    if worse >= floor_at:
        return FLOOR_PASS, False
    return (FLOOR_BORDERLINE if better >= floor_at else FLOOR_BELOW), False


@dataclass(frozen=True)
class _Board:
    """What every row of one ranking is built from."""

    recognizers: list[str]
    attacks: list[str]
    threats: dict[str, dict[str, dict[str, Any]]]
    kinds: dict[str, str]
    best: dict[tuple[str, str], WorstCase]
    union: dict[tuple[str, str], WorstCase]
    quality: dict[str, Row]
    floor: dict[str, Any] | None
    quality_info: MetricInfo | None
    evaluated: dict[str, list[dict[str, Any]]]
    exempt: frozenset[str] = frozenset()  # no defense: never flagged ⚑


def _row(board: _Board, d: str) -> RankedRow:
    """One defense config's row over every recognizer: its cells, quality and floor status,
    without a score (scores exist per role: :func:`_restrict`)."""
    singles = {rec: board.best[(d, rec)] for rec in board.recognizers if (d, rec) in board.best}
    unions = {rec: board.union[(d, rec)] for rec in board.recognizers if (d, rec) in board.union}
    q_row = board.quality.get(d) or {}
    q = q_row.get("value")
    interval = (q_row.get("ci_low"), q_row.get("ci_high"))
    status, by_mean = floor_status(q, interval, board.floor, board.quality_info)
    row = RankedRow(
        d,
        singles,
        unions,
        {},
        None,
        None,
        q,
        below_floor=status == FLOOR_BELOW,
        threat=_threat_summary(board.evaluated.get(d, []), d in board.exempt),
        quality_ci=interval,
        floor_status=status,
        floor_by_mean=by_mean,
    )
    row.ranking_cells = {
        rec: wc
        for rec in singles
        if not singles[rec].white_box and (wc := ranked_value(row, rec, board.kinds.get(rec)))
    }
    return row


def _restrict(row: RankedRow, recognizers: list[str], kinds: dict[str, str]) -> RankedRow:
    """``row`` over ``recognizers`` only, scored: the mean black-box ranked value, and the
    mean white-box one apart."""
    singles = {rec: wc for rec, wc in row.best_single.items() if rec in recognizers}
    cells: dict[str, WorstCase] = {}
    white: list[float] = []
    for rec, wc in singles.items():
        value = ranked_value(row, rec, kinds.get(rec))
        if value is None:
            continue
        if wc.white_box:
            white.append(value.value)
        else:
            cells[rec] = value
    return replace(
        row,
        best_single=singles,
        union={rec: wc for rec, wc in row.union.items() if rec in recognizers},
        ranking_cells=cells,
        score=_mean([wc.value for wc in cells.values()]),
        white_score=_mean(white),
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
    """Ranked rows by score then quality, with Pareto marks and ties; then the unranked, the
    borderline first, each by score. ``better`` orients a quality value so that larger is better."""
    q = {r.defense: better(r.quality) for r in out if r.quality is not None}
    ranked = sorted(
        (r for r in out if r.score is not None and r.clears_floor),
        key=lambda r: (-(r.score or 0.0), -q.get(r.defense, -math.inf)),
    )
    _pareto(ranked, q)
    for i, row in enumerate(ranked, 1):
        row.rank = i
        if i > 1:
            row.tie_p = tie_test(ranked[i - 2], row)
            row.tied = row.tie_p is not None and row.tie_p >= TIE_ALPHA
    rest = [r for r in out if r.rank is None]
    rest.sort(key=lambda r: (not r.borderline, -(r.score if r.score is not None else -math.inf)))
    return ranked + rest


def rank_within(
    rows: list[RankedRow],
    role: str,
    recognizers: list[str],
    kinds: dict[str, str],
    better: Callable[[float], float] = float,
) -> RoleRanking:
    """The ranking of ``rows`` over ``recognizers`` (one role's, or one recognizer)."""
    scoped = [_restrict(r, recognizers, kinds) for r in rows]
    white = any(wc.white_box for r in scoped for wc in r.best_single.values())
    return RoleRanking(role, list(recognizers), _order(scoped, better), white)


def roles_of(recognizers: list[str], kinds: dict[str, str]) -> dict[str, list[str]]:
    """Role → its recognizers: identifiers, detectors, classifiers, then any other kind."""
    by_role: dict[str, list[str]] = {}
    for rec in recognizers:
        by_role.setdefault(kinds.get(rec, "classifier"), []).append(rec)
    known = [k for k in ROLE_ORDER if k in by_role]
    return {k: by_role[k] for k in known + [k for k in by_role if k not in known]}


def _board(manifest: dict[str, Any], rows: list[Row], outcomes: Outcomes) -> _Board:
    catalog = MetricCatalog.of_run(manifest, rows)
    floor = manifest.get("config", {}).get("quality_floor")
    recognizers = _ordered([r["recognizer"] for r in rows if r["scope"] == "cell"])
    attacks = _ordered([r["counter_attack"] for r in rows if r["scope"] == "cell"])
    threats = attack_threats(rows)
    q_metric = quality_metric(floor, rows, catalog)
    quality = {
        r["defense"]: r
        for r in rows
        if r["scope"] == "defense" and r["metric"] == q_metric and r["value"] is not None
    }
    return _Board(
        recognizers,
        attacks,
        threats,
        recognizer_kinds(manifest, rows, catalog),
        _best_single(rows, outcomes, catalog.first("privacy")),
        _union(rows, outcomes, attacks),
        quality,
        floor,
        catalog[q_metric] if q_metric else None,
        _evaluated(rows, threats),
        frozenset(no_defense(rows)),
    )


def build_ranking(manifest: dict[str, Any], rows: list[Row], outcomes: Outcomes) -> Ranking:
    """Rank the defense configs of an evade run within each recognizer role (see the module
    docstring for the rules), and within each recognizer."""
    board = _board(manifest, rows, outcomes)
    defenses = _ordered([r["defense"] for r in rows if r["scope"] in ("cell", "defense")])
    out = [_row(board, d) for d in defenses]
    q_info = board.quality_info
    better = q_info.oriented if q_info else float
    kinds = board.kinds
    roles = [
        rank_within(out, role, recs, kinds, better)
        for role, recs in roles_of(board.recognizers, kinds).items()
    ]
    alone = {role.recognizers[0]: role for role in roles if len(role.recognizers) == 1}
    by_rec = {  # a recognizer alone in its role is ranked already
        rec: alone[rec]
        if rec in alone
        else rank_within(out, kinds.get(rec, "classifier"), [rec], kinds, better)
        for rec in board.recognizers
    }
    return Ranking(
        out,
        board.recognizers,
        kinds,
        q_info.label if q_info else None,
        board.floor,
        board.attacks,
        board.threats,
        any(wc.white_box for r in out for wc in r.best_single.values()),
        q_info,
        roles,
        by_rec,
    )


def _floor_rule(ranking: Ranking) -> str:
    floor, q = ranking.floor, ranking.quality_metric
    if not floor:
        return "No quality floor declared (suite key `quality_floor`): every config is ranked."
    higher = ranking.quality_info is None or ranking.quality_info.higher_is_better
    sign, bound = ("≥", "lower") if higher else ("≤", "upper")
    text = (
        f"Quality floor: {q} {sign} {floor['min']:g} (the suite's `quality_floor`), judged by "
        f"the 95% interval: a config is ranked only when its interval's {bound} bound clears "
        "the floor; borderline (≈floor) when the interval straddles it, below (<floor) when it "
        "lies wholly on the wrong side; neither is ranked."
    )
    by_mean = [r.defense for r in ranking.rows if r.floor_by_mean]
    if by_mean:
        text += f" No interval for {', '.join(by_mean)}: judged on the mean."
    return text


def rules(ranking: Ranking) -> list[str]:
    """The ranking's rules in words, as printed above its tables."""
    q = ranking.quality_metric
    lines = [
        "Ranked within each recognizer role (identifier, detector, classifier), never averaged "
        "across roles. Score: the mean over the role's black-box recognizers of the worst-case "
        "fooling rate, i.e. the lowest over the counter-attacks (the platform picks its best "
        "move; the letter names it). Detectors are scored on the per-image union (∪: a probe "
        "counts as fooled only if every counter-attack fails on it; the platform needs no "
        "oracle to combine them).",
        _floor_rule(ranking),
        (
            f"★ = on the role's Pareto front of score against {q} (no ranked config is better "
            "on both). = = not significantly different from the row above (exact McNemar test "
            f"on the per-image outcomes of the role's ranking cells, α = {TIE_ALPHA})."
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
