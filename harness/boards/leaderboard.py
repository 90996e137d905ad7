"""Leaderboards from results rows: Markdown (tabulate) and CSV.

The ranking follows RobustBench's "best known attack" idea: a defense is only as good as it is
against the platform's best counter-attack, so each defense config is ranked by its worst-case
fooling rate (the minimum over counter-attacks), averaged over recognizers.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from harness.boards.ranking import (
    Ranking,
    WorstCase,
    attack_threats,
    build_ranking,
    rules,
    threat_label,
)
from harness.runs.outcomes import Outcomes

if TYPE_CHECKING:
    from harness.boards.game import RecognizerGame

Row = dict[str, Any]


def _pct(row: Row | None) -> str:
    if row is None or row.get("value") is None:
        return "–"
    text = f"{100 * row['value']:.1f}%"
    if row.get("ci_low") is not None:
        text += f" [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
    return text + f" n={row['n']}"


def _num(row: Row | None, digits: int) -> str:
    if row is None or row.get("value") is None:
        return "–"
    if row.get("unit") == "flag":
        return _flag(row)
    text = f"{row['value']:.{digits}f}"
    if row.get("ci_low") is not None and row["ci_low"] != row["ci_high"]:
        level = row.get("ci_level")
        mark = "" if level is None or level >= 0.95 else f" ({100 * level:.0f}%)"
        text += f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]{mark}"
    return text


def _flag(row: Row) -> str:
    """A yes/no row (unit 'flag'), with the measured share against its target when given."""
    share, target = row.get("fooled_share"), row.get("target_share")
    detail = f" ({100 * share:.0f}% vs {100 * target:.0f}%)" if None not in (share, target) else ""
    return ("yes" if row["value"] else "NO") + detail


def unmet_targets(rows: list[Row]) -> list[Row]:
    """Defense rows of flag metrics that say a learned defense missed its own target."""
    return [
        r
        for r in rows
        if r["scope"] == "defense" and r.get("unit") == "flag" and r.get("value") == 0
    ]


def _index(rows: list[Row]) -> dict[tuple[Any, ...], Row]:
    return {
        (r["scope"], r["defense"], r["counter_attack"], r["recognizer"], r["metric"]): r
        for r in rows
    }


def _ordered(values: list[Any]) -> list[Any]:
    seen: dict[Any, None] = {}
    for v in values:
        if v is not None:
            seen.setdefault(v, None)
    return list(seen)


def _metric_header(metric: str, rows: list[Row]) -> str:
    unit = next((r.get("unit") for r in rows if r["metric"] == metric and r.get("unit")), "")
    unit = {"ms": "ms/img", "flag": ""}.get(unit, unit)
    name = metric.replace("_", " ")
    return f"{name} ({unit})" if unit else name


def _letters(attacks: list[str]) -> dict[str, str]:
    """A short mark per counter-attack for the ranking (a, b, …, z, aa, ab, …)."""
    marks = []
    for i in range(len(attacks)):
        mark, k = "", i
        while True:
            mark = chr(ord("a") + k % 26) + mark
            k = k // 26 - 1
            if k < 0:
                break
        marks.append(mark)
    return dict(zip(attacks, marks, strict=True))


def _short_pct(row: Row, usual_n: int | None) -> str:
    text = f"{100 * row['value']:.1f}"
    if row.get("ci_low") is not None:
        text += f" [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
    return text + ("" if row["n"] == usual_n else f" n={row['n']}")


def _defense_metrics(rows: list[Row]) -> list[str]:
    """Defense-scope metrics that some defense has a value for (an all-"–" column says
    nothing)."""
    return _ordered(
        [r["metric"] for r in rows if r["scope"] == "defense" and r["value"] is not None]
    )


def _worst_text(wc: WorstCase | None, usual_n: int | None, letters: dict[str, str]) -> str:
    if wc is None:
        return "–"
    text = f"{100 * wc.value:.1f}"
    if wc.ci_low is not None:
        text += f" [{100 * wc.ci_low:.1f}, {100 * wc.ci_high:.1f}]"
    text += "" if wc.n == usual_n else f" n={wc.n}"
    text += f" {letters[wc.attack]}" if wc.attack is not None else " ∪"
    return text + (" wb" if wc.white_box else "")


def _usual_n(ranking: Ranking) -> int | None:
    ns = [wc.n for r in ranking.rows for wc in r.best_single.values()]
    return max(set(ns), key=ns.count) if ns else None


def ranking_table(
    ranking: Ranking, rows: list[Row]
) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body and legend of the evade ranking (:mod:`harness.boards.ranking` has the rules).
    Cells are compact (percent, interval, a letter for the counter-attack or ∪ for the
    per-image union); the legend says what the letters, marks and the usual n are."""
    letters = _letters(ranking.attacks)
    usual_n = _usual_n(ranking)
    recognizers = ranking.recognizers
    short = {rec: rec if len(rec) <= 24 else f"R{i}" for i, rec in enumerate(recognizers, 1)}
    header = [
        "rank",
        "defense",
        *[
            short[rec] + (" ∪" if ranking.kinds.get(rec) == "detector" else "")
            for rec in recognizers
        ],
        "score",
        *(["white-box"] if ranking.any_white_box else []),
        *([_metric_header(ranking.quality_metric, rows)] if ranking.quality_metric else []),
        "vs above",
        "knows",
    ]
    body = []
    for r in ranking.rows:
        cells = []
        for rec in recognizers:
            wc = r.best_single.get(rec)
            if ranking.kinds.get(rec) == "detector" and rec in r.union:
                wc = r.union[rec]
            cells.append(_worst_text(wc, usual_n, letters))
        rank = (
            f"{r.rank}{' ★' if r.pareto else ''}"
            if r.rank
            else ("<floor" if r.below_floor else "–")
        )
        body.append(
            [
                rank,
                r.defense,
                *cells,
                "–" if r.score is None else f"{100 * r.score:.1f}",
                *(
                    ["–" if r.white_score is None else f"{100 * r.white_score:.1f}"]
                    if ranking.any_white_box
                    else []
                ),
                *(
                    ["–" if r.quality is None else f"{r.quality:.3f}"]
                    if ranking.quality_metric
                    else []
                ),
                "" if r.tie_p is None else ("= " if r.tied else "") + f"p={r.tie_p:.2g}",
                r.threat["knows"] + (" ⚑" if r.threat["oblivious_only"] else ""),
            ]
        )
    legend = [
        *rules(ranking),
        "Each recognizer's cell is its worst-case fooling rate in % with the 95% Wilson "
        f"interval; n = {usual_n} probes recognised when clean unless given. knows = the most "
        "any counter-attack of the row knows of the defense (nothing, its algorithm, its "
        "parameters, the owner's key); ⚑ = evaluated against oblivious counter-attacks only "
        "(none designed against this kind of defense).",
        _attack_legend(ranking.threats, letters),
    ]
    aliased = [f"{short[rec]} = {rec}" for rec in recognizers if short[rec] != rec]
    if aliased:
        legend.append("Recognizers: " + ", ".join(aliased) + ".")
    return header, body, legend


def union_table(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    """Per defense config and recognizer: the best single counter-attack beside the per-image
    union over all counter-attacks."""
    letters = _letters(ranking.attacks)
    usual_n = _usual_n(ranking)
    header = ["defense", "recognizer", "best single counter-attack", "per-image union"]
    body = [
        [
            r.defense,
            rec,
            _worst_text(r.best_single.get(rec), usual_n, letters),
            _worst_text(r.union.get(rec), usual_n, letters),
        ]
        for r in ranking.rows
        for rec in ranking.recognizers
        if rec in r.best_single or rec in r.union
    ]
    return header, body


def _attack_legend(threats: dict[str, dict[str, Any]], letters: dict[str, str]) -> str:
    """'Counter-attacks: a = none (knows nothing, oblivious), b = retrain (…).'"""
    parts = []
    for a, mark in letters.items():
        threat = threats.get(a)
        parts.append(f"{mark} = {a}" + (f" ({threat_label(threat)})" if threat else ""))
    return "Counter-attacks: " + ", ".join(parts) + "."


def conceal_section(manifest: dict[str, Any], rows: list[Row]) -> list[str]:
    """The ranking section of a conceal suite (:mod:`harness.boards.conceal_board`)."""
    from harness.boards.conceal_board import conceal_table

    attacks = _ordered([r["counter_attack"] for r in rows if r["scope"] == "cell"])
    letters = _letters(attacks)
    idx = _index(rows)
    defenses = _ordered([r["defense"] for r in rows])
    quality = [
        (
            _metric_header(m, rows),
            {d: _value_only(idx.get(("defense", d, None, None, m))) for d in defenses},
        )
        for m in _defense_metrics(rows)
        if m in ("ssim", "latency")
    ]
    header, body, legend = conceal_table(manifest, rows, letters, quality)
    if not body:
        return []
    return [
        "## Ranking: concealment",
        "",
        *legend,
        _attack_legend(attack_threats(rows), letters),
        "",
        tabulate(body, headers=header, tablefmt="github", disable_numparse=True),
        "",
    ]


def _value_only(row: Row | None) -> str:
    if row is None or row.get("value") is None:
        return "–"
    if row.get("unit") == "flag":
        return _flag(row)
    return f"{row['value']:.{1 if row.get('unit') in ('dB', 's') else 3}f}"


def quality_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Every defense-scope metric of every defense config, with its interval."""
    idx = _index(rows)
    metrics = _defense_metrics(rows)
    defenses = _ordered([r["defense"] for r in rows if r["scope"] == "defense"])
    header = ["defense", *[_metric_header(m, rows) for m in metrics]]
    body = []
    for d in defenses:
        cells = []
        for m in metrics:
            row = idx.get(("defense", d, None, None, m))
            cells.append(_num(row, 1 if row and row.get("unit") in ("dB", "s") else 3))
        body.append([d, *cells])
    return header, body


def detail_table(rows: list[Row], recognizer: str) -> tuple[list[str], list[list[str]]]:
    """Every defense × counter-attack cell of one recognizer."""
    cell_rows = [r for r in rows if r["scope"] == "cell" and r["recognizer"] == recognizer]
    metrics = _ordered([r["metric"] for r in cell_rows])
    by_cell: dict[tuple[str, str], dict[str, Row]] = defaultdict(dict)
    for r in cell_rows:
        by_cell[(r["defense"], r["counter_attack"])][r["metric"]] = r
    header = ["defense", "counter-attack", *[m.replace("_", " ") for m in metrics]]
    body = [[d, a, *[_pct(cells.get(m)) for m in metrics]] for (d, a), cells in by_cell.items()]
    return header, body


def provenance_lines(manifest: dict[str, Any]) -> list[str]:
    """The leaderboard's header: title, status, description and provenance bullets (Markdown)."""
    cfg = manifest.get("config", {})
    ds = manifest.get("dataset", {})
    machine = manifest.get("machine", {})
    title = manifest.get("suite", {}).get("name", "?") + (
        " (smoke)" if manifest.get("smoke") else ""
    )
    lines = [f"# privbench leaderboard: {title}", ""]
    if manifest.get("status") == "running":
        lines += [
            f"**This run has not finished** (last written {manifest.get('updated', '?')}): it "
            "is still running, or it was killed. The tables hold what it had finished.",
            "",
        ]
    elif manifest.get("status") in ("interrupted", "terminated"):
        lines += [f"**This run was {manifest['status']}**: the tables hold what it finished.", ""]
    if manifest.get("smoke"):
        smoke = manifest["smoke"]
        lines += [f"**{smoke.get('note', 'SMOKE RUN')}** ({smoke.get('probes')} probes).", ""]
    if cfg.get("description"):
        lines += [cfg["description"].strip(), ""]
    sizes = ds.get("sizes", {})
    commit = (manifest.get("git") or {}).get("commit") or "?"
    lines += [
        f"- run `{manifest.get('run_id')}` ({manifest.get('status')}), suite sha256 "
        f"`{manifest.get('suite', {}).get('sha256', '')[:12]}`, privbench "
        f"{manifest.get('privbench_version')}, commit `{commit}`",
        f"- dataset `{cfg.get('dataset', {}).get('name')}` ({ds.get('protocol', '?')}): "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + f"; fingerprint `{str(ds.get('fingerprint', ''))[:12]}`",
        *([f"- protocol: {ds['protocol_description']}"] if ds.get("protocol_description") else []),
        f"- device {machine.get('device')} ({machine.get('gpu') or machine.get('cpu')}, "
        f"{machine.get('torch_threads')} threads), seed {manifest.get('seed')}, upload "
        f"{cfg.get('upload', {}).get('format')}, duration {manifest.get('duration_s')} s",
        *plugin_lines(manifest),
        "- intervals are 95% unless marked: Wilson for rates, Student t for SSIM/PSNR means, "
        "order statistics for latency medians (with too few batches the full range, marked "
        "with its real coverage); n = images (rates: probes recognised when clean), batches "
        "(latency)",
        "",
    ]
    return lines


@dataclass(frozen=True)
class GameView:
    """The game section's parts, for the Markdown leaderboard and the HTML report alike."""

    intro: str
    summary: tuple[list[str], list[list[str]]]
    matrices: list[tuple[str, list[str], list[list[str]]]]  # recognizer, header, body


def game_view(ranking: Ranking, outcomes: Outcomes) -> GameView | None:
    """The zero-sum game per recognizer over the ranked configs, or None when no recognizer
    has a complete game. Computed once a run has finished: it bootstraps."""
    from harness.boards.game import describe_mix, run_games

    defenses = [r.defense for r in ranking.rows if r.rank is not None]
    if not defenses or not ranking.attacks:
        return None
    games = run_games(defenses, ranking.attacks, ranking.recognizers, outcomes, ranking.kinds)
    if not games:
        return None
    body = []
    for g in games:
        eq = g.equilibrium
        body.append(
            [
                g.recognizer,
                f"{100 * eq.value:.1f} [{100 * g.interval[0]:.1f}, {100 * g.interval[1]:.1f}]",
                f"{100 * eq.pure_value:.1f}",
                describe_mix(g.defenses, eq.owner),
                describe_mix(g.attacks, eq.platform),
            ]
        )
    header = ["recognizer", "value: recognition %", "pure worst case", "owner mixes"]
    header.append("platform mixes")
    intro = (
        "Per recognizer, a zero-sum game (Oh, Fritz and Schiele, ICCV 2017): the owner picks one "
        f"of the {len(defenses)} ranked defense configs, the platform one of the "
        f"{len(ranking.attacks)} counter-attacks (a detector's also all of them at once), each "
        "possibly at random; the payoff is the recognition rate. The value is the rate the "
        "platform can guarantee however the owner mixes; the best pure worst case is what the "
        "owner gets committing to one config. Solved by nashpy's linear program; 95% "
        "percentile bootstrap interval over the probes "
        f"({games[0].n} images, 1000 resamples, the same draw for every cell). Below, each "
        "payoff matrix in %, with each side's equilibrium weights."
    )
    return GameView(intro, (header, body), [payoff_matrix(g) for g in games])


def payoff_matrix(game: RecognizerGame) -> tuple[str, list[str], list[list[str]]]:
    """One recognizer's payoff matrix (recognition %), the owner's weights as the last column
    and the platform's as the last row; counter-attacks by letter."""
    eq = game.equilibrium
    letters = [chr(ord("A") + i) for i in range(len(game.attacks))]
    header = ["owner ↓ platform →", *letters, "owner's mix"]
    body = [
        [d, *(f"{100 * v:.1f}" for v in row), f"{w:.2f}"]
        for d, row, w in zip(game.defenses, game.payoff, eq.owner, strict=True)
    ]
    body.append(["platform's mix", *(f"{w:.2f}" for w in eq.platform), f"= {100 * eq.value:.1f}"])
    key = ", ".join(f"{x} = {a}" for x, a in zip(letters, game.attacks, strict=True))
    return f"{game.recognizer} ({key})", header, body


def game_section(ranking: Ranking, outcomes: Outcomes) -> list[str]:
    """The game section in Markdown (empty when there is no game)."""
    view = game_view(ranking, outcomes)
    if view is None:
        return []
    lines = ["## The game: owner against platform", "", view.intro, ""]
    lines += [
        tabulate(
            view.summary[1], headers=view.summary[0], tablefmt="github", disable_numparse=True
        ),
        "",
    ]
    for title, header, body in view.matrices:
        table = tabulate(body, headers=header, tablefmt="github", disable_numparse=True)
        lines += [f"**{title}**", "", table, ""]
    return lines


def plugin_lines(manifest: dict[str, Any]) -> list[str]:
    """Provenance bullets for the plugins a run used and, for a merged run, its sources."""
    lines = [
        f"- plugin {p['distribution']} {p['version']} (sha256 of its sources "
        f"`{p['sha256'][:12]}`) provides "
        + ", ".join(m["name"] for provided in p["provides"].values() for m in provided)
        for p in manifest.get("plugins") or []
    ]
    sources = manifest.get("merged_from") or []
    if sources:
        lines.append(
            f"- merged from {len(sources)} runs on the same images, recognizers and "
            "counter-attacks; each row comes from one of them:"
        )
    for s in sources:
        commit = (s.get("git") or {}).get("commit") or "?"
        lines.append(
            f"- `{s['run_id']}` (suite {s['suite']} `{str(s['suite_sha256'])[:12]}`, privbench "
            f"{s['privbench_version']}, commit `{commit[:12]}`): "
            + (", ".join(s["defenses"]) or "no new rows")
        )
    hosts = {json.dumps(s.get("host"), sort_keys=True) for s in sources}
    if len(hosts) > 1:
        lines.append(
            "- **latency was measured on different machines** (see the sources): compare "
            "latencies only between rows of one source"
        )
    return lines


def render_markdown(
    manifest: dict[str, Any], rows: list[Row], outcomes: Outcomes | None = None
) -> str:
    """The run's leaderboard page; ``outcomes`` (per-image, :mod:`harness.runs.outcomes`) add the
    per-image union and the tie tests."""
    lines = provenance_lines(manifest)
    cfg = manifest.get("config", {})
    rec_rows = [r for r in rows if r["scope"] == "recognizer"]
    if rec_rows:
        metrics = _ordered([r["metric"] for r in rec_rows])
        by_rec: dict[str, dict[str, Row]] = defaultdict(dict)
        for r in rec_rows:
            by_rec[r["recognizer"]][r["metric"]] = r
        lines += [
            "## Recognizers on clean photos",
            "",
            tabulate(
                [[rec, *[_pct(m.get(k)) for k in metrics]] for rec, m in by_rec.items()],
                headers=["recognizer", *[k.replace("_", " ") for k in metrics]],
                tablefmt="github",
            ),
            "",
        ]
    header, body, legend = [], [], []
    if cfg.get("objective") == "conceal":
        lines += conceal_section(manifest, rows)
    else:
        ranking = build_ranking(manifest, rows, outcomes or {})
        header, body, legend = ranking_table(ranking, rows)
    if body:
        lines += [
            "## Ranking: worst case over counter-attacks",
            "",
            *[f"- {line}" for line in legend],
            "",
            tabulate(body, headers=header, tablefmt="github", disable_numparse=True),
            "",
        ]
        if outcomes:
            u_header, u_body = union_table(ranking)
            lines += [
                "## Worst case per image",
                "",
                "The best single counter-attack (its letter) beside the per-image union: a "
                "probe counts as fooled only when every counter-attack fails on it. A "
                "detector's platform achieves the union without help; an identifier's or "
                "classifier's would need an oracle that knows which answer is right, so for "
                "those the union is an upper bound of the platform.",
                "",
                tabulate(u_body, headers=u_header, tablefmt="github", disable_numparse=True),
                "",
            ]
        if outcomes and manifest.get("status") != "running":
            lines += game_section(ranking, outcomes)
        for r in unmet_targets(rows):
            lines.append(
                f"- **{r['defense']}: {r['metric'].replace('_', ' ')} = NO.** The learned "
                f"defense missed its own target ({r.get('note', '')}) and fell back to its "
                "best attempt; its row is ranked like the others."
            )
        if unmet_targets(rows):
            lines.append("")
    q_header, q_body = quality_table(rows)
    if q_body and len(q_header) > 1:
        lines += [
            "## Image quality and cost, with intervals",
            "",
            tabulate(q_body, headers=q_header, tablefmt="github", disable_numparse=True),
            "",
        ]
    for rec in _ordered([r["recognizer"] for r in rows if r["scope"] == "cell"]):
        h, b = detail_table(rows, rec)
        lines += [f"## {rec}", "", tabulate(b, headers=h, tablefmt="github"), ""]
    skipped = manifest.get("skipped") or []
    if skipped:
        lines += ["## Skipped here", ""]
        lines += [
            f"- {x['scope']} `{x['name']}`: "
            + ("needs " + "; ".join(x["needs"]) if x.get("needs") else x.get("why", ""))
            for x in skipped
        ]
        lines.append("")
    failures = manifest.get("failures") or []
    if failures:
        lines += ["## Failures", ""]
        lines += [
            f"- {f.get('scope', 'defense')} `{f.get('name', f.get('defense'))}`: {f['error']}"
            for f in failures
        ]
        lines.append("")
    return "\n".join(_wrap_prose("\n".join(lines).split("\n")))


def _wrap_prose(lines: list[str], width: int = 100) -> list[str]:
    """Wrap paragraphs and bullets to ``width`` (tables and headings stay as they are), so the
    page reads in a terminal as well as rendered."""
    out: list[str] = []
    for line in lines:
        if len(line) <= width or line.startswith(("|", "#")):
            out.append(line)
        else:
            indent = "  " if line.startswith("- ") else ""
            out += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)
    return out


def render_csv(rows: list[Row]) -> str:
    """Flat CSV of every metric row."""
    fields = [
        "scope",
        "defense",
        "counter_attack",
        "recognizer",
        "metric",
        "value",
        "n",
        "ci_low",
        "ci_high",
        "unit",
        "higher_is_better",
        "note",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
