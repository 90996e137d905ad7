"""The closing summary ``privbench run`` prints: the answer and where the rest is, in at most
:data:`MAX_LINES` lines, whatever the size of the run.

It holds the run's status line, the verdict (lines its caller passes in:
:mod:`harness.boards.verdict`), the top :data:`TOP` defense configs of each recognizer role's
ranking (:mod:`harness.boards.roles`; a conceal suite's one ranking), the failures and skips
(counted, the first :data:`NAMED` named), what the cache held and the paths of
``leaderboard.md`` and ``report.html``. Every part is cut to fit, saying how
much it left out; the full board is ``leaderboard.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.boards.conceal_board import conceal_rows, ranked
from harness.boards.ranking import RankedRow, Ranking, RoleRanking, move_in_words, no_defense
from harness.boards.roles import build_ranking
from harness.core.limits import printable, shorten
from harness.runs.folder import Run

MAX_LINES = 40  # the summary's bound, every part included
TOP = 3  # defense configs shown per ranking group
NAMED = 3  # failures (and skips) named before "… and N more"
MAX_VERDICT = 12  # lines of the verdict kept (three roles' paragraphs)
LINE_CHARS = 160  # a failure's message is cut to this (with its middle marked)
LABEL_CHARS = 60  # a defense config's label, likewise
MORE_HINT = "--verbose or --debug for all"


@dataclass(frozen=True)
class Podium:
    """The top of one ranking group: its title, and (defense config, figure) best first, of
    ``ranked`` configs ranked in it."""

    title: str
    entries: list[tuple[str, str]]
    ranked: int


def _line(text: Any, limit: int = LINE_CHARS) -> str:
    """``text`` on one line (whitespace runs, newlines included, made one space), safe for a
    terminal and cut to ``limit`` characters."""
    return shorten(printable(" ".join(str(text).split())), limit)


def _pct(value: float) -> str:
    return f"{100 * value:5.1f}%"


def _move(attack: str | None) -> str:
    """The platform's move behind a worst case, in words."""
    if attack is None:
        return "per-image union of the counter-attacks"
    return move_in_words(attack)


def _figure(role: RoleRanking, row: RankedRow) -> str:
    """What ``row`` is ranked on in ``role``: one recognizer's worst case and the move behind
    it (a counter-attack, or the per-image union for a detector), else the role's score (the
    mean over its black-box recognizers); ``=`` when it does not differ significantly from the
    row above, as on the board."""
    if len(role.recognizers) == 1 and role.recognizers[0] in row.ranking_cells:
        wc = row.ranking_cells[role.recognizers[0]]
        figure = f"{_pct(wc.value)} ({_move(wc.attack)})"
    else:
        figure = f"{_pct(row.score or 0.0)} (mean of its recognizers)"
    if row.tied and row.tie_p is not None:
        figure += f", = the row above (McNemar p = {row.tie_p:.2g})"
    return figure


def _title(role: RoleRanking) -> str:
    """'sface (identifier)', 'classifiers (cnn-a, cnn-b)' or 'classifiers (12 recognizers)'."""
    recs = role.recognizers
    if len(recs) == 1:
        return f"{recs[0]} ({role.role})"
    named = ", ".join(recs) if len(recs) <= 3 else f"{len(recs)} recognizers"
    return f"{role.role}s ({named})"


def _name(defense: str, baseline: frozenset[str]) -> str:
    """A config's label, the ``none`` defense's marked as the reference it is."""
    return f"{defense} (no defense)" if defense in baseline else defense


def evade_podiums(ranking: Ranking, baseline: frozenset[str] = frozenset()) -> list[Podium]:
    """The top :data:`TOP` configs of each role's ranking (configs that do not clear the
    quality floor are not ranked); ``baseline``: the labels of the ``none`` defense."""
    out = []
    for role in ranking.roles:
        ranked_rows = [r for r in role.ranked if r.score is not None]
        entries = [(_name(r.defense, baseline), _figure(role, r)) for r in ranked_rows[:TOP]]
        if entries:
            out.append(Podium(_title(role), entries, len(ranked_rows)))
    return out


def conceal_podiums(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> list[Podium]:
    """A conceal run's one ranking: lower auxiliary accuracy first, the target within its
    tolerated drop (:mod:`harness.boards.conceal_board`)."""
    tolerance = float(manifest.get("config", {}).get("target_drop_tolerance", 0.05))
    good, _ = ranked(conceal_rows(manifest, rows), tolerance)
    entries = [
        (c.defense, f"auxiliary accuracy {_pct(c.key['value'])}")  # type: ignore[index]
        for c in good[:TOP]
    ]
    title = "concealment (target kept, lower auxiliary accuracy is better)"
    return [Podium(title, entries, len(good))] if entries else []


def podiums(run: Run, ranking: Ranking | None = None) -> list[Podium]:
    """The ranking groups of ``run``'s summary; ``ranking``: its evade ranking when the caller
    has built it already (else it is built here)."""
    if run.info.objective == "conceal":
        return conceal_podiums(run.manifest, run.rows)
    if ranking is None:
        ranking = build_ranking(run.manifest, run.rows, run.outcomes)
    return evade_podiums(ranking, frozenset(no_defense(run.rows)))


EVADE_TITLE = "Top of the ranking (% of probes fooled at the platform's best counter-attack):"
CONCEAL_TITLE = "Top of the ranking:"


def ranking_lines(groups: list[Podium], budget: int, title: str = EVADE_TITLE) -> list[str]:
    """The ranking part in at most ``budget`` lines (nothing if not even a group fits):
    ``title``, then each group's top configs while they fit, then how many groups were left
    out."""
    if not groups or budget < 3:
        return []
    lines = [title]
    shown = 0
    for group in groups:
        left = len(groups) - shown - 1  # groups after this one
        size = 1 + len(group.entries) + (1 if left else 0)
        if len(lines) + size > budget:
            break
        top = f"top {len(group.entries)} of {group.ranked} ranked"
        lines.append(f"  {_line(group.title)}: {top}")
        labels = [_line(d, LABEL_CHARS) for d, _ in group.entries]
        width = max(len(label) for label in labels)
        lines += [
            f"    {i}. {label:<{width}}  {fig}"
            for i, (label, (_, fig)) in enumerate(zip(labels, group.entries, strict=True), 1)
        ]
        shown += 1
    if shown == 0:
        return []
    if shown < len(groups):
        lines.append(f"  … and {len(groups) - shown} more (leaderboard.md has them all)")
    return lines


def _named(title: str, items: list[str]) -> list[str]:
    """``title (N):`` and the first :data:`NAMED` items, then how many more."""
    if not items:
        return []
    lines = [f"{title} ({len(items)}):", *[f"  - {_line(i)}" for i in items[:NAMED]]]
    if len(items) > NAMED:
        lines.append(f"  … and {len(items) - NAMED} more ({MORE_HINT})")
    return lines


def problem_lines(manifest: dict[str, Any]) -> list[str]:
    """What failed and what was skipped here, each counted and the first few named."""
    failures = [
        f"{f.get('scope', 'defense')} {f.get('name', f.get('defense'))}: {f.get('error', '')}"
        for f in manifest.get("failures") or []
    ]
    skipped = [
        f"{s.get('scope', '?')} {s.get('name', '?')}: "
        + ("needs " + "; ".join(s["needs"]) if s.get("needs") else str(s.get("why", "")))
        for s in manifest.get("skipped") or []
    ]
    return _named("Failed", failures) + _named("Skipped here", skipped)


def cache_line(manifest: dict[str, Any]) -> list[str]:
    """What the cache held, as far as the manifest knows."""
    cache = manifest.get("cache")
    if not cache:
        return []
    if not cache.get("enabled", True):
        return ["Cache: off (everything computed)"]
    plan = manifest.get("plan") or {}
    at_start, cells = plan.get("cells_cached_at_start"), plan.get("cells")
    text = "Cache: "
    if at_start is not None and cells:
        text += f"{at_start} of {cells} cells cached at the start; "
    text += f"{cache.get('hits', 0)} entries read, {cache.get('misses', 0)} computed"
    damaged = len(cache.get("damaged_and_recomputed") or [])
    return [text + (f", {damaged} damaged and recomputed" if damaged else "")]


def status_line(manifest: dict[str, Any]) -> str:
    """'quickstart: complete, 84 cells in 171 s (run base)'."""
    name = manifest.get("suite", {}).get("name", "?")
    cells = (manifest.get("plan") or {}).get("cells")
    size = f", {cells} cells" if cells else ""
    took = f" in {manifest['duration_s']:.0f} s" if manifest.get("duration_s") else ""
    smoke = "; a smoke run: its numbers mean nothing" if manifest.get("smoke") else ""
    return _line(
        f"{name}: {manifest.get('status')}{size}{took} (run {manifest.get('run_id')}){smoke}"
    )


def file_lines(leaderboard: Path, report: Path | None, report_hint: str | None) -> list[str]:
    """Where the full board and the report are (or how to make the report)."""
    lines = [f"Leaderboard: {leaderboard}"]
    if report is not None:
        lines.append(f"Report:      {report}")
    elif report_hint:
        lines.append(f"Report:      not written; {report_hint}")
    return lines


def summary_lines(
    run: Run,
    verdict: list[str],
    report: Path | None = None,
    report_hint: str | None = None,
    groups: list[Podium] | None = None,
) -> list[str]:
    """The closing summary of ``run`` in at most :data:`MAX_LINES` lines.

    ``verdict``: the verdict's lines (kept to :data:`MAX_VERDICT`); ``report``: the path of the
    report written, else ``report_hint`` says how to write it; ``groups``: the ranking groups
    (default: :func:`podiums` of ``run``). The ranking gets the lines the other parts leave."""
    manifest = run.manifest
    head = [status_line(manifest)]
    verdict = [_line(v) for text in verdict for v in str(text).splitlines() if v.strip()]
    if len(verdict) > MAX_VERDICT:
        left = len(verdict) - (MAX_VERDICT - 1)
        verdict = [*verdict[: MAX_VERDICT - 1], f"… and {left} more lines of the verdict"]
    problems, cache = problem_lines(manifest), cache_line(manifest)
    files = file_lines(run.folder.leaderboard_file, report, report_hint)
    parts = [verdict, problems, cache, files]
    used = len(head) + sum(len(p) + 1 for p in parts if p)  # each part after a blank line
    title = CONCEAL_TITLE if run.info.objective == "conceal" else EVADE_TITLE
    groups = podiums(run) if groups is None else groups
    ranking = ranking_lines(groups, MAX_LINES - used - 1, title)
    lines = [*head]
    for part in (verdict, ranking, problems, cache, files):
        if part:
            lines += ["", *part]
    return lines[:MAX_LINES]
