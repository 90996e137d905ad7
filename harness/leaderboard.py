"""Leaderboards from results rows: Markdown (tabulate) and CSV.

The ranking follows RobustBench's "best known attack" idea: a defense is only as good as it is
against the platform's best counter-attack, so each defense config is ranked by its worst-case
fooling rate (the minimum over counter-attacks), averaged over recognizers.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.io import read_jsonl

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


def worst_case(rows: list[Row]) -> dict[tuple[str, str], Row]:
    """(defense, recognizer) → the fooling-rate row of the counter-attack that minimises it."""
    best: dict[tuple[str, str], Row] = {}
    for r in rows:
        if r["scope"] != "cell" or r["metric"] != "fooling_rate" or r["value"] is None:
            continue
        key = (r["defense"], r["recognizer"])
        if key not in best or r["value"] < best[key]["value"]:
            best[key] = r
    return best


def _metric_header(metric: str, rows: list[Row]) -> str:
    unit = next((r.get("unit") for r in rows if r["metric"] == metric and r.get("unit")), "")
    unit = {"ms": "ms/img", "flag": ""}.get(unit, unit)
    name = metric.replace("_", " ")
    return f"{name} ({unit})" if unit else name


def ranking_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the ranking: defense configs by mean worst-case fooling rate."""
    idx = _index(rows)
    defenses = _ordered([r["defense"] for r in rows])
    recognizers = _ordered([r["recognizer"] for r in rows if r["scope"] == "cell"])
    worst = worst_case(rows)

    def score(d: str) -> float:
        vals = [worst[(d, rec)]["value"] for rec in recognizers if (d, rec) in worst]
        return sum(vals) / len(vals) if vals else -math.inf

    # a column that no defense has a value for (e.g. learning time without learned defenses)
    # would only say "–" in every row
    defense_metrics = _ordered(
        [r["metric"] for r in rows if r["scope"] == "defense" and r["value"] is not None]
    )
    header = (
        ["rank", "defense"]
        + [f"{rec}: worst-case fooling" for rec in recognizers]
        + [_metric_header(m, rows) for m in defense_metrics]
    )
    body = []
    for rank, d in enumerate(sorted(defenses, key=lambda d: -score(d)), 1):
        cells = []
        for rec in recognizers:
            w = worst.get((d, rec))
            cells.append(f"{_pct(w)} ({w['counter_attack']})" if w else "–")
        for m in defense_metrics:
            row = idx.get(("defense", d, None, None, m))
            cells.append(_num(row, 1 if row and row.get("unit") == "dB" else 3))
        body.append([str(rank), d, *cells])
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


def render_markdown(manifest: dict[str, Any], rows: list[Row]) -> str:
    """The run's leaderboard page."""
    cfg = manifest.get("config", {})
    ds = manifest.get("dataset", {})
    machine = manifest.get("machine", {})
    lines = [f"# privbench leaderboard: {manifest.get('suite', {}).get('name', '?')}", ""]
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
        "- intervals are 95% unless marked: Wilson for rates, Student t for SSIM/PSNR means, "
        "order statistics for latency medians (with too few batches the full range, marked "
        "with its real coverage); n = images (rates: probes recognised when clean), batches "
        "(latency)",
        "",
    ]
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
    header, body = ranking_table(rows)
    if body:
        lines += [
            "## Ranking: worst case over counter-attacks",
            "",
            "Each cell is the lowest fooling rate any counter-attack achieves (the "
            "platform picks its best move), with that counter-attack in brackets.",
            "",
            tabulate(body, headers=header, tablefmt="github"),
            "",
        ]
        for r in unmet_targets(rows):
            lines.append(
                f"- **{r['defense']}: {r['metric'].replace('_', ' ')} = NO.** The learned "
                f"defense missed its own target ({r.get('note', '')}) and fell back to its "
                "best attempt; its row is ranked like the others."
            )
        if unmet_targets(rows):
            lines.append("")
    for rec in _ordered([r["recognizer"] for r in rows if r["scope"] == "cell"]):
        h, b = detail_table(rows, rec)
        lines += [f"## {rec}", "", tabulate(b, headers=h, tablefmt="github"), ""]
    failures = manifest.get("failures") or []
    if failures:
        lines += (
            ["## Failures", ""] + [f"- `{f['defense']}`: {f['error']}" for f in failures] + [""]
        )
    return "\n".join(lines)


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


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[Row]]:
    """Read a run folder's manifest and results."""
    import json

    from harness.errors import PrivbenchError

    manifest_path, results_path = run_dir / "manifest.json", run_dir / "results.jsonl"
    for p in (manifest_path, results_path):
        if not p.is_file():
            raise PrivbenchError(
                f"{p} not found: {run_dir} is not a privbench run folder "
                "(expected manifest.json and results.jsonl)"
            )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        rows = read_jsonl(results_path)
    except (json.JSONDecodeError, ValueError) as exc:
        raise PrivbenchError(f"{run_dir}: {exc}") from None
    return manifest, rows
