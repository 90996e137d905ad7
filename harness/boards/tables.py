"""The leaderboard's tables as (header, body) pairs, for the Markdown page and the HTML report
alike: the evade ranking of each recognizer role, the per-image worst cases, quality and cost,
clean recognition and every cell of one recognizer. Metrics are chosen by scope and role and
printed in their declared format (:mod:`harness.metrics.declared`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.boards.cells import index, letters, ordered, row_text, worst_text
from harness.boards.ranking import RankedRow, Ranking, RoleRanking
from harness.boards.roles import ranked_value, rules
from harness.boards.threats import attack_threat_text
from harness.metrics.declared import MetricCatalog

Row = dict[str, Any]
Table = tuple[list[str], list[list[str]]]
ROLE_TITLES = {"identifier": "Identifiers", "detector": "Detectors", "classifier": "Classifiers"}
SHORT_CHARS = 24  # a recognizer name longer than this heads its column as R1, R2, …


def defense_metrics(rows: list[Row]) -> list[str]:
    """Defense-scope metrics that some defense has a value for (an all-"–" column says
    nothing)."""
    return ordered(
        [r["metric"] for r in rows if r["scope"] == "defense" and r["value"] is not None]
    )


def usual_n(ranking: Ranking) -> int | None:
    """The most common n of the ranking's worst cases (cells print n only when it differs)."""
    ns = [wc.n for r in ranking.rows for wc in r.best_single.values()]
    return max(set(ns), key=ns.count) if ns else None


def attack_legend(threats: dict[str, dict[str, dict[str, Any]]], marks: dict[str, str]) -> str:
    """'Counter-attacks: a = none (knows nothing, oblivious), b = bss-ica (knows algorithm,
    adaptive vs krtio; knows nothing, oblivious vs the others).' (``threats``: counter-attack
    → defense → the pair's threat model)."""
    parts = []
    for a, mark in marks.items():
        per_defense = threats.get(a)
        parts.append(
            f"{mark} = {a}" + (f" ({attack_threat_text(per_defense)})" if per_defense else "")
        )
    return "Counter-attacks: " + ", ".join(parts) + "."


def rank_text(r: RankedRow) -> str:
    """'2 ★', or why the row has no rank: ≈floor (its quality interval straddles the floor),
    <floor (wholly under it), – (nothing to rank on)."""
    if r.rank:
        return f"{r.rank}{' ★' if r.pareto else ''}"
    if r.borderline:
        return "≈floor"
    return "<floor" if r.below_floor else "–"


def quality_text(ranking: Ranking, r: RankedRow) -> str:
    """The row's quality in its declared format with its interval ('0.612 [0.580, 0.644]')."""
    info = ranking.quality_info
    if r.quality is None or info is None:
        return "–"
    digits = info.display.digits
    lo, hi = r.quality_ci
    text = f"{r.quality:.{digits}f}"
    return text if lo is None or hi is None else text + f" [{lo:.{digits}f}, {hi:.{digits}f}]"


def tie_text(r: RankedRow) -> str:
    """'= p=0.41' for a row tied with the one above, 'p=0.0012' otherwise."""
    return "" if r.tie_p is None else ("= " if r.tied else "") + f"p={r.tie_p:.2g}"


def _ranking_line(
    ranking: Ranking, role: RoleRanking, r: RankedRow, n: int | None, marks: dict[str, str]
) -> list[str]:
    cells = [
        worst_text(ranked_value(r, rec, ranking.kinds.get(rec)), n, marks)
        for rec in role.recognizers
    ]
    line = [rank_text(r), r.defense, *cells, "–" if r.score is None else f"{100 * r.score:.1f}"]
    if role.any_white_box:
        line.append("–" if r.white_score is None else f"{100 * r.white_score:.1f}")
    if ranking.quality_info is not None:
        line.append(quality_text(ranking, r))
    return [*line, tie_text(r), r.threat["knows"] + (" ⚑" if r.threat["oblivious_only"] else "")]


def role_plural(role: RoleRanking) -> str:
    """'Identifiers': a role's recognizer kind in the plural."""
    return ROLE_TITLES.get(role.role, role.role + "s")


def role_title(role: RoleRanking) -> str:
    """'Identifiers: sface' (a role's recognizer kind in the plural, then its recognizers)."""
    return f"{role_plural(role)}: {', '.join(role.recognizers)}"


def _short_names(recognizers: list[str]) -> dict[str, str]:
    """Recognizer → its column header: the name, or R1, R2, … (by place) when it is long."""
    return {
        rec: rec if len(rec) <= SHORT_CHARS else f"R{i}" for i, rec in enumerate(recognizers, 1)
    }


def role_table(ranking: Ranking, role: RoleRanking, marks: dict[str, str], n: int | None) -> Table:
    """Header and body of one role's ranking (:mod:`harness.boards.roles` has the rules).
    Cells are compact (percent, interval, a letter for the counter-attack or ∪ for the
    per-image union); ``marks``: the counter-attacks' letters, ``n``: the usual n."""
    short = _short_names(role.recognizers)
    header = [
        "rank",
        "defense",
        *[
            short[r] + (" ∪" if ranking.kinds.get(r) == "detector" else "")
            for r in role.recognizers
        ],
        "score",
        *(["white-box"] if role.any_white_box else []),
        *([ranking.quality_info.header] if ranking.quality_info is not None else []),
        "vs above",
        "knows",
    ]
    return header, [_ranking_line(ranking, role, r, n, marks) for r in role.rows]


def ranking_tables(
    ranking: Ranking,
) -> tuple[list[tuple[str, list[str], list[list[str]]]], list[str]]:
    """One (title, header, body) per recognizer role, and the legend they share: the rules,
    what the cells, letters and marks are, and the usual n."""
    marks = letters(ranking.attacks)
    n = usual_n(ranking)
    tables = [(role_title(role), *role_table(ranking, role, marks, n)) for role in ranking.roles]
    legend = [
        *rules(ranking),
        "Each recognizer's cell is its worst-case fooling rate in % with the 95% Wilson "
        f"interval; n = {n} probes recognised when clean unless given. knows = the most "
        "any counter-attack of the row knows of the defense (nothing, its algorithm, its "
        "parameters, the owner's key); ⚑ = evaluated against oblivious counter-attacks only "
        "(none designed against this kind of defense).",
        attack_legend(ranking.threats, marks),
    ]
    aliased = [
        f"{short} = {rec}"
        for role in ranking.roles
        for rec, short in _short_names(role.recognizers).items()
        if short != rec
    ]
    if aliased:
        legend.append("Recognizers: " + ", ".join(aliased) + ".")
    return tables, legend


def union_table(ranking: Ranking) -> Table:
    """Per defense config and recognizer: the best single counter-attack beside the per-image
    union over all counter-attacks."""
    marks = letters(ranking.attacks)
    n = usual_n(ranking)
    header = ["defense", "recognizer", "best single counter-attack", "per-image union"]
    body = [
        [
            r.defense,
            rec,
            worst_text(r.best_single.get(rec), n, marks),
            worst_text(r.union.get(rec), n, marks),
        ]
        for r in ranking.rows
        for rec in ranking.recognizers
        if rec in r.best_single or rec in r.union
    ]
    return header, body


def quality_table(rows: list[Row], catalog: MetricCatalog) -> Table:
    """Every defense-scope metric of every defense config, with its interval."""
    idx = index(rows)
    metrics = defense_metrics(rows)
    defenses = ordered([r["defense"] for r in rows if r["scope"] == "defense"])
    header = ["defense", *[catalog[m].header for m in metrics]]
    body = [
        [d, *[row_text(idx.get(("defense", d, None, None, m)), catalog[m]) for m in metrics]]
        for d in defenses
    ]
    return header, body


def clean_table(rows: list[Row], catalog: MetricCatalog) -> Table:
    """Each recognizer's recognizer-scope metrics (its behaviour on clean photos)."""
    rec_rows = [r for r in rows if r["scope"] == "recognizer"]
    metrics = ordered([r["metric"] for r in rec_rows])
    by_rec: dict[str, dict[str, Row]] = defaultdict(dict)
    for r in rec_rows:
        by_rec[r["recognizer"]][r["metric"]] = r
    body = [[rec, *[row_text(m.get(k), catalog[k]) for k in metrics]] for rec, m in by_rec.items()]
    return ["recognizer", *[k.replace("_", " ") for k in metrics]], body


def detail_table(rows: list[Row], recognizer: str, catalog: MetricCatalog) -> Table:
    """Every defense × counter-attack cell of one recognizer."""
    cell_rows = [r for r in rows if r["scope"] == "cell" and r["recognizer"] == recognizer]
    metrics = ordered([r["metric"] for r in cell_rows])
    by_cell: dict[tuple[str, str], dict[str, Row]] = defaultdict(dict)
    for r in cell_rows:
        by_cell[(r["defense"], r["counter_attack"])][r["metric"]] = r
    header = ["defense", "counter-attack", *[m.replace("_", " ") for m in metrics]]
    body = [
        [d, a, *[row_text(cells.get(m), catalog[m]) for m in metrics]]
        for (d, a), cells in by_cell.items()
    ]
    return header, body
