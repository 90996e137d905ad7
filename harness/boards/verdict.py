"""The verdict in words: per recognizer role, which defense config wins, how often it fools
the platform (with its 95% interval and n), at what cost in quality and time, whether it
differs significantly from the runner-up (the exact McNemar test the ranking marks ties with)
and which threat it held against. Every number comes from the run; the order is the ranking's
(:mod:`harness.boards.roles`), read through the same :func:`~harness.boards.roles.ranked_value`.
"""

from __future__ import annotations

import textwrap
from typing import Any

from harness.boards.conceal_board import conceal_rows, ranked
from harness.boards.ranking import (
    TIE_ALPHA,
    RankedRow,
    Ranking,
    RoleRanking,
    move_in_words,
    pair_threat,
    threat_label,
)
from harness.boards.roles import build_ranking, ranked_value
from harness.boards.tables import role_plural
from harness.metrics.declared import MetricCatalog
from harness.runs.folder import Run
from harness.runs.outcomes import Outcomes

Row = dict[str, Any]
WIDTH = 100


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _fooling(ranking: Ranking, role: RoleRanking, row: RankedRow) -> str:
    """'fools sface on 58.0% (95% CI 48.2–67.2, n=100)', or the role's mean with each
    recognizer's figure."""
    parts = []
    for rec in role.recognizers:
        wc = row.ranking_cells.get(rec)
        if wc is None:
            continue
        ci = "" if wc.ci_low is None else f"95% CI {100 * wc.ci_low:.1f}–{100 * wc.ci_high:.1f}, "
        parts.append((rec, f"{_pct(wc.value)} ({ci}n={wc.n})"))
    if len(parts) == 1:
        return f"fools {parts[0][0]} on {parts[0][1]}"
    listed = "; ".join(f"{rec} {text}" for rec, text in parts)
    return f"fools them on {_pct(row.score or 0.0)} on average ({listed})"


def _number(row: Row | None, catalog: MetricCatalog) -> str | None:
    """A defense-scope value in its declared format with its unit ('3.21 ms/img')."""
    if row is None or row.get("value") is None:
        return None
    info = catalog[row["metric"]]
    unit = f" {info.unit_label}" if info.unit_label else ""
    return f"{row['value']:.{info.display.digits}f}{unit}"


def _cost(
    ranking: Ranking, row: RankedRow, rows: list[Row], catalog: MetricCatalog, clean: str | None
) -> str:
    """' at ssim 0.612 (none 1.000), latency 3.21 ms/img': the row's quality (the undefended
    photo's beside it) and headline cost; empty when neither was measured."""
    by = {(r["defense"], r["metric"]): r for r in rows if r["scope"] == "defense"}
    parts = []
    q = ranking.quality_metric
    if q is not None and row.quality is not None:
        text = f"{q.replace('_', ' ')} {_number(by.get((row.defense, q)), catalog)}"
        reference = _number(by.get((clean, q)), catalog) if clean else None
        if reference is not None and row.defense != clean:
            text += f" ({clean} {reference})"
        parts.append(text)
    cost = catalog.headline("cost", {r["metric"] for r in rows if r["scope"] == "defense"})
    spent = _number(by.get((row.defense, cost)), catalog) if cost else None
    if cost and spent:
        parts.append(f"{cost.replace('_', ' ')} {spent}")
    return (" at " + ", ".join(parts)) if parts else ""


def _against_runner_up(role: RoleRanking) -> str:
    """The exact McNemar test of the winner against the runner-up, in words."""
    ranked_rows = role.ranked
    if len(ranked_rows) < 2:
        return "It is the only ranked config."
    second = ranked_rows[1]
    name = f"runner-up {second.defense} ({_pct(second.score or 0.0)})"
    if second.tie_p is None:
        return f"No paired outcomes to test it against {name}."
    if second.tie_p >= TIE_ALPHA:
        return f"No significant difference from {name} (McNemar p = {second.tie_p:.2g})."
    return f"Beats {name}, McNemar p = {second.tie_p:.2g}."


def _threat(ranking: Ranking, role: RoleRanking, row: RankedRow) -> str:
    """The counter-attack(s) that gave the winner its worst case, with their threat models."""
    moves = []
    for rec in role.recognizers:
        wc = ranked_value(row, rec, ranking.kinds.get(rec))
        if wc is None or wc.white_box:
            continue
        if wc.attack is None:
            moves.append(f"all counter-attacks at once ({threat_label(row.threat)})")
        else:
            threat = pair_threat(ranking.threats, wc.attack, row.defense)
            moves.append(
                move_in_words(wc.attack) + (f" ({threat_label(threat)})" if threat else "")
            )
    text = "Worst case: " + ", ".join(dict.fromkeys(moves)) + "."
    if row.threat.get("oblivious_only"):
        text += " Never tested against an adaptive counter-attack."
    return text


def clean_label(manifest: dict[str, Any]) -> str | None:
    """The label of the suite's undefended config (the ``none`` defense), if it has one."""
    for d in manifest.get("config", {}).get("defenses", []):
        if d.get("name") == "none":
            return d.get("label")
    return None


def role_paragraph(
    ranking: Ranking,
    role: RoleRanking,
    rows: list[Row],
    catalog: MetricCatalog,
    clean: str | None = "none",
) -> str | None:
    """One role's verdict as one paragraph, or None when the role has no rows. ``clean``: the
    label of the undefended config whose quality is quoted beside the winner's."""
    title = f"{role_plural(role)} ({', '.join(role.recognizers)})"
    if not role.rows:
        return None
    if not role.ranked:
        return f"{title}: no config ranked (none clears the quality floor with a score)."
    win = role.ranked[0]
    if not win.score:
        return (
            f"{title}: no ranked config fools it in the worst case; first on quality: "
            f"{win.defense}, which {_fooling(ranking, role, win)}"
            f"{_cost(ranking, win, rows, catalog, clean)}. {_threat(ranking, role, win)}"
        )
    return (
        f"{title}: {win.defense} wins: {_fooling(ranking, role, win)}"
        f"{_cost(ranking, win, rows, catalog, clean)}. {_against_runner_up(role)} "
        f"{_threat(ranking, role, win)}"
    )


def _conceal_paragraph(manifest: dict[str, Any], rows: list[Row]) -> list[str]:
    """The conceal board's winner in one sentence (empty when nothing is ranked)."""
    tolerance = float(manifest.get("config", {}).get("target_drop_tolerance", 0.05))
    good, _ = ranked(conceal_rows(manifest, rows), tolerance)
    if not good:
        return []
    win = good[0]
    key = win.key or {}
    drop = (win.drop or {}).get("value")
    text = (
        f"Conceal: {win.defense} wins; {key.get('recognizer')} recognises "
        f"{_pct(key['value'])} of n = {key.get('n')} probes at its best counter-attack "
        f"({key.get('counter_attack')})"
    )
    if drop is not None:
        text += f", while the target {win.target} loses {100 * drop:.1f} points of accuracy"
    return [text + "."]


def verdict_paragraphs(
    manifest: dict[str, Any],
    rows: list[Row],
    outcomes: Outcomes | None,
    ranking: Ranking | None = None,
) -> list[str]:
    """One paragraph per recognizer role (for a conceal run, one from its board); empty when
    there is nothing to rank. ``ranking``: the run's evade ranking when the caller has built
    it already (else it is built here)."""
    if manifest.get("config", {}).get("objective") == "conceal":
        return _conceal_paragraph(manifest, rows)
    if ranking is None:
        ranking = build_ranking(manifest, rows, outcomes or {})
    if not any(role.ranked for role in ranking.roles):
        return []
    catalog = MetricCatalog.of_run(manifest, rows)
    clean = clean_label(manifest)
    out = [role_paragraph(ranking, role, rows, catalog, clean) for role in ranking.roles]
    return [p for p in out if p]


def verdict_lines(run: Run, ranking: Ranking | None = None) -> list[str]:
    """The verdict as plain-text lines of at most 100 characters, paragraph after paragraph
    (each paragraph's first line starts with its role); ``ranking`` as for
    :func:`verdict_paragraphs`."""
    return [
        line
        for paragraph in verdict_paragraphs(run.manifest, run.rows, run.outcomes, ranking)
        for line in textwrap.wrap(paragraph, WIDTH, break_on_hyphens=False)
    ]
