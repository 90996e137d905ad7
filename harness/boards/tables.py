"""The leaderboard's tables as (header, body) pairs, for the Markdown page and the HTML report
alike: the evade ranking, the per-image worst cases, quality and cost, clean recognition and
every cell of one recognizer. Metrics are chosen by scope and role and printed in their
declared format (:mod:`harness.metrics.declared`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.boards.cells import index, letters, ordered, row_text, worst_text
from harness.boards.ranking import RankedRow, Ranking, rules
from harness.boards.threats import attack_threat_text
from harness.metrics.declared import MetricCatalog

Row = dict[str, Any]
Table = tuple[list[str], list[list[str]]]


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


def _rank_text(r: RankedRow) -> str:
    if r.rank:
        return f"{r.rank}{' ★' if r.pareto else ''}"
    return "<floor" if r.below_floor else "–"


def _ranking_line(ranking: Ranking, r: RankedRow, n: int | None, marks: dict[str, str]) -> list:
    cells = []
    for rec in ranking.recognizers:
        wc = r.best_single.get(rec)
        if ranking.kinds.get(rec) == "detector" and rec in r.union:
            wc = r.union[rec]
        cells.append(worst_text(wc, n, marks))
    line = [_rank_text(r), r.defense, *cells, "–" if r.score is None else f"{100 * r.score:.1f}"]
    if ranking.any_white_box:
        line.append("–" if r.white_score is None else f"{100 * r.white_score:.1f}")
    if ranking.quality_info is not None:
        digits = ranking.quality_info.display.digits
        line.append("–" if r.quality is None else f"{r.quality:.{digits}f}")
    tie = "" if r.tie_p is None else ("= " if r.tied else "") + f"p={r.tie_p:.2g}"
    return [*line, tie, r.threat["knows"] + (" ⚑" if r.threat["oblivious_only"] else "")]


def ranking_table(ranking: Ranking) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body and legend of the evade ranking (:mod:`harness.boards.ranking` has the
    rules). Cells are compact (percent, interval, a letter for the counter-attack or ∪ for the
    per-image union); the legend says what the letters, marks and the usual n are."""
    marks = letters(ranking.attacks)
    n = usual_n(ranking)
    recognizers = ranking.recognizers
    short = {rec: rec if len(rec) <= 24 else f"R{i}" for i, rec in enumerate(recognizers, 1)}
    header = [
        "rank",
        "defense",
        *[short[r] + (" ∪" if ranking.kinds.get(r) == "detector" else "") for r in recognizers],
        "score",
        *(["white-box"] if ranking.any_white_box else []),
        *([ranking.quality_info.header] if ranking.quality_info is not None else []),
        "vs above",
        "knows",
    ]
    body = [_ranking_line(ranking, r, n, marks) for r in ranking.rows]
    legend = [
        *rules(ranking),
        "Each recognizer's cell is its worst-case fooling rate in % with the 95% Wilson "
        f"interval; n = {n} probes recognised when clean unless given. knows = the most "
        "any counter-attack of the row knows of the defense (nothing, its algorithm, its "
        "parameters, the owner's key); ⚑ = evaluated against oblivious counter-attacks only "
        "(none designed against this kind of defense).",
        attack_legend(ranking.threats, marks),
    ]
    aliased = [f"{short[rec]} = {rec}" for rec in recognizers if short[rec] != rec]
    if aliased:
        legend.append("Recognizers: " + ", ".join(aliased) + ".")
    return header, body, legend


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
