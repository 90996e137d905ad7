"""Leaderboards from results rows: Markdown (tabulate) and CSV.

The ranking follows RobustBench's "best known attack" idea: a defense is only as good as it is
against the platform's best counter-attack, so each defense config is ranked by its worst-case
fooling rate (the minimum over counter-attacks), within each recognizer role
(:mod:`harness.boards.roles`). The verdict (:mod:`harness.boards.verdict`) opens the page.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from typing import Any

from tabulate import tabulate

from harness.boards.cells import index, letters, ordered, value_only
from harness.boards.conceal_board import conceal_table
from harness.boards.game_board import game_section
from harness.boards.ranking import Ranking, attack_threats
from harness.boards.roles import build_ranking
from harness.boards.tables import (
    attack_legend,
    clean_table,
    defense_metrics,
    detail_table,
    quality_table,
    ranking_tables,
    union_table,
)
from harness.boards.threats import unadapted_note
from harness.boards.verdict import verdict_paragraphs
from harness.metrics.declared import MetricCatalog
from harness.runs.folder import resume_command
from harness.runs.outcomes import Outcomes

Row = dict[str, Any]

UNION_NOTE = (
    "The best single counter-attack (its letter) beside the per-image union: a probe counts as "
    "fooled only when every counter-attack fails on it. A detector's platform achieves the "
    "union without help; an identifier's or classifier's would need an oracle that knows which "
    "answer is right, so for those the union is an upper bound of the platform."
)


def _table(header: list[str], body: list[list[str]]) -> str:
    return tabulate(body, headers=header, tablefmt="github", disable_numparse=True)


def unmet_targets(rows: list[Row], catalog: MetricCatalog) -> list[Row]:
    """Defense rows of target metrics that say a learned defense missed its own target."""
    return [
        r
        for r in rows
        if r["scope"] == "defense" and catalog[r["metric"]].role == "target" and r.get("value") == 0
    ]


def conceal_section(manifest: dict[str, Any], rows: list[Row]) -> list[str]:
    """The ranking section of a conceal suite (:mod:`harness.boards.conceal_board`), with the
    headline quality and cost metrics beside it."""
    catalog = MetricCatalog.of_run(manifest, rows)
    marks = letters(ordered([r["counter_attack"] for r in rows if r["scope"] == "cell"]))
    idx = index(rows)
    defenses = ordered([r["defense"] for r in rows])
    measured = defense_metrics(rows)
    shown = {catalog.headline("quality", measured), catalog.headline("cost", measured)}
    quality = [
        (
            catalog[m].header,
            {d: value_only(idx.get(("defense", d, None, None, m)), catalog[m]) for d in defenses},
        )
        for m in measured
        if m in shown
    ]
    header, body, legend = conceal_table(manifest, rows, marks, quality)
    if not body:
        return []
    return [
        "## Ranking: concealment",
        "",
        *legend,
        attack_legend(attack_threats(rows), marks),
        "",
        _table(header, body),
        "",
    ]


def _resume_command(manifest: dict[str, Any]) -> str:
    """The command that finishes the run of ``manifest`` in its folder (Markdown code)."""
    return resume_command(manifest.get("suite", {}).get("path"), str(manifest.get("run_id")))


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
            "is still running, or it was killed. The tables hold what it had finished; "
            f"{_resume_command(manifest)} finishes a killed run.",
            "",
        ]
    elif manifest.get("status") in ("interrupted", "terminated"):
        by = f" ({manifest['interrupted_by']})" if manifest.get("interrupted_by") else ""
        lines += [
            f"**This run was {manifest['status']}{by}**: the tables hold what it finished; "
            f"{_resume_command(manifest)} finishes it.",
            "",
        ]
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


def evade_sections(
    manifest: dict[str, Any],
    rows: list[Row],
    outcomes: Outcomes | None,
    catalog: MetricCatalog,
    ranking: Ranking,
) -> list[str]:
    """The evade ranking of each recognizer role (``ranking``, built from ``rows``), the
    per-image worst cases, the game and unmet targets (Markdown)."""
    tables, legend = ranking_tables(ranking)
    if not any(body for _, _, body in tables):
        return []
    lines = [
        "## Ranking: worst case over counter-attacks, per recognizer role",
        "",
        *[f"- {line}" for line in legend],
        "",
    ]
    for title, header, body in tables:
        lines += [f"### {title}", "", _table(header, body), ""]
    if note := unadapted_note(ranking):
        lines += [note, ""]
    if outcomes:
        lines += ["## Worst case per image", "", UNION_NOTE, "", _table(*union_table(ranking)), ""]
    if outcomes and manifest.get("status") != "running":
        lines += game_section(ranking, outcomes)
    unmet = unmet_targets(rows, catalog)
    for r in unmet:
        lines.append(
            f"- **{r['defense']}: {r['metric'].replace('_', ' ')} = NO.** The learned "
            f"defense missed its own target ({r.get('note', '')}) and fell back to its "
            "best attempt; its row is ranked like the others."
        )
    return lines + ([""] if unmet else [])


def _problems(manifest: dict[str, Any]) -> list[str]:
    """The skipped configs and failures sections."""
    lines = []
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
    return lines


def render_markdown(
    manifest: dict[str, Any], rows: list[Row], outcomes: Outcomes | None = None
) -> str:
    """The run's leaderboard page; ``outcomes`` (per-image, :mod:`harness.runs.outcomes`) add the
    per-image union and the tie tests."""
    catalog = MetricCatalog.of_run(manifest, rows)
    lines = provenance_lines(manifest)
    evade = manifest.get("config", {}).get("objective") != "conceal"
    ranking = build_ranking(manifest, rows, outcomes or {}) if evade else None
    verdict = verdict_paragraphs(manifest, rows, outcomes, ranking)
    if verdict:
        lines += ["## Verdict", "", *[f"- {p}" for p in verdict], ""]
    if any(r["scope"] == "recognizer" for r in rows):
        header, body = clean_table(rows, catalog)
        table = tabulate(body, headers=header, tablefmt="github")
        lines += ["## Recognizers on clean photos", "", table, ""]
    if ranking is None:
        lines += conceal_section(manifest, rows)
    else:
        lines += evade_sections(manifest, rows, outcomes, catalog, ranking)
    q_header, q_body = quality_table(rows, catalog)
    if q_body and len(q_header) > 1:
        lines += ["## Image quality and cost, with intervals", "", _table(q_header, q_body), ""]
    for rec in ordered([r["recognizer"] for r in rows if r["scope"] == "cell"]):
        h, b = detail_table(rows, rec, catalog)
        lines += [f"## {rec}", "", tabulate(b, headers=h, tablefmt="github"), ""]
    lines += _problems(manifest)
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
