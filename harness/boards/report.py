"""``report.html``: one self-contained page per run (inline CSS, JavaScript, images and SVG
plots; no network), readable at a glance.

It holds the provenance header; the ranking (:mod:`harness.boards.ranking`), sortable, with a tab
for the overall score and one per recognizer; per defense config a grid of the run's seeded
sample photos (clean, uploaded, after the platform's best counter-attack, recovered); the
trade-off plots per recognizer (worst-case fooling rate against SSIM and against latency,
with interval bars; matplotlib, inline SVG); and the per-cell tables. Thumbnails keep big
runs small; :data:`SIZE_BUDGET` is the most a report may weigh.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Any

from harness.boards.leaderboard import _letters, detail_table, provenance_lines, quality_table
from harness.boards.ranking import Ranking, WorstCase, build_ranking, rules, threat_label
from harness.runs.folder import Run, RunFolder

SIZE_BUDGET = 4_000_000  # bytes; a report over it drops its image grids, saying so

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc::after{content:" ▲"}
th.sorted-desc::after{content:" ▼"}tr.unranked{color:#888}td.num{text-align:right}
.tabs button{border:1px solid #bbb;background:#f7f7f7;padding:4px 10px;margin-right:4px;
cursor:pointer}.tabs button.active{background:#246;color:#fff}.tab{display:none}
.tab.active{display:block}.grid{display:grid;grid-template-columns:repeat(4,auto);gap:4px;
justify-content:start}.grid img{width:112px;height:auto;image-rendering:pixelated}
.grid .h{font-size:12px;color:#555}.rules li{margin:2px 0}.plots{display:flex;flex-wrap:wrap}
.plots figure{margin:4px}small{color:#666}code{background:#f3f3f3;padding:0 3px}
"""

JS = """
function sortTable(th){const table=th.closest('table');const i=[...th.parentNode.children]
.indexOf(th);const body=table.tBodies[0];const rows=[...body.rows];const asc=!th.classList
.contains('sorted-asc');table.querySelectorAll('th').forEach(h=>h.classList.remove(
'sorted-asc','sorted-desc'));th.classList.add(asc?'sorted-asc':'sorted-desc');
const key=r=>{const c=r.cells[i];const v=c.dataset.sort!==undefined?c.dataset.sort:c.textContent;
const n=parseFloat(v);return isNaN(n)?v:n};rows.sort((a,b)=>{const x=key(a),y=key(b);
const c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
return asc?c:-c});rows.forEach(r=>body.appendChild(r))}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',
()=>sortTable(th)));
document.querySelectorAll('.tabs button').forEach(b=>b.addEventListener('click',()=>{
const group=b.closest('.tabgroup');group.querySelectorAll('.tabs button').forEach(x=>x
.classList.toggle('active',x===b));group.querySelectorAll('.tab').forEach(t=>t.classList
.toggle('active',t.id===b.dataset.tab))}));
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _md_inline(text: str) -> str:
    """The few Markdown marks the provenance lines use: `code` and **bold**."""
    out = _e(text)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", out)


def _header(manifest: dict[str, Any]) -> str:
    parts, bullets = [], []
    for line in provenance_lines(manifest):
        if line.startswith("# "):
            parts.append(f"<h1>{_e(line[2:])}</h1>")
        elif line.startswith("- "):
            bullets.append(f"<li>{_md_inline(line[2:])}</li>")
        elif line.strip():
            parts.append(f"<p>{_md_inline(line)}</p>")
    return "\n".join(parts) + f"<ul>{''.join(bullets)}</ul>"


def _pct(wc: WorstCase | None) -> tuple[str, str]:
    """(display text, sort key) of a worst case."""
    if wc is None:
        return "–", ""
    text = f"{100 * wc.value:.1f}"
    if wc.ci_low is not None:
        text += f" <small>[{100 * wc.ci_low:.1f}, {100 * wc.ci_high:.1f}] n={wc.n}</small>"
    return text, f"{wc.value:.6f}"


def _td(text: str, sort: str | None = None, num: bool = False) -> str:
    attr = f' data-sort="{_e(sort)}"' if sort is not None else ""
    return f"<td{attr}{' class=num' if num else ''}>{text}</td>"


def _table(header: list[str], body: list[str], sortable: bool = True) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _rank_cell(r: Any) -> str:
    if r.rank:
        return _td(f"{r.rank}{' ★' if r.pareto else ''}", str(r.rank), True)
    return _td("below floor" if r.below_floor else "–", "9999", True)


def _overall_tab(ranking: Ranking, letters: dict[str, str]) -> str:
    header = ["rank", "defense", *ranking.recognizers, "score (%)"]
    header += ["white-box (%)"] if ranking.any_white_box else []
    header += [ranking.quality_metric or "quality", "vs above", "threat model"]
    body = []
    for r in ranking.rows:
        cells = [_rank_cell(r), _td(_e(r.defense))]
        for rec in ranking.recognizers:
            wc = r.ranking_cells.get(rec) or r.best_single.get(rec)
            text, key = _pct(wc)
            mark = "" if wc is None else (f" {letters[wc.attack]}" if wc.attack else " ∪")
            mark += " wb" if wc is not None and wc.white_box else ""
            cells.append(_td(text + _e(mark), key, True))
        score = "–" if r.score is None else f"{100 * r.score:.1f}"
        cells.append(_td(score, "" if r.score is None else f"{r.score:.6f}", True))
        if ranking.any_white_box:
            ws = "–" if r.white_score is None else f"{100 * r.white_score:.1f}"
            cells.append(_td(ws, "" if r.white_score is None else f"{r.white_score:.6f}", True))
        q = "–" if r.quality is None else f"{r.quality:.3f}"
        cells.append(_td(q, "" if r.quality is None else f"{r.quality:.6f}", True))
        tie = "" if r.tie_p is None else ("= " if r.tied else "") + f"p={r.tie_p:.2g}"
        cells.append(_td(_e(tie), "" if r.tie_p is None else f"{r.tie_p:.6g}"))
        flag = " ⚑" if r.threat.get("oblivious_only") else ""
        cells.append(_td(_e(threat_label(r.threat) + flag)))
        cls = "" if r.rank else ' class="unranked"'
        body.append(f'<tr data-defense="{_e(r.defense)}"{cls}>{"".join(cells)}</tr>')
    return _table(header, body)


def _recognizer_tab(ranking: Ranking, rec: str, letters: dict[str, str]) -> str:
    header = ["defense", "worst case (%)", "counter-attack", "threat model", "per-image union (%)"]
    header += [ranking.quality_metric or "quality"]
    body = []
    for r in ranking.rows:
        wc = r.best_single.get(rec)
        if wc is None:
            continue
        text, key = _pct(wc)
        utext, ukey = _pct(r.union.get(rec))
        threat = ranking.threats.get(wc.attack or "")
        q = "–" if r.quality is None else f"{r.quality:.3f}"
        body.append(
            "<tr>"
            + _td(_e(r.defense))
            + _td(text + (" wb" if wc.white_box else ""), key, True)
            + _td(_e(f"{letters.get(wc.attack or '', '')} {wc.attack}"))
            + _td(_e(threat_label(threat) if threat else ""))
            + _td(utext, ukey, True)
            + _td(q, "" if r.quality is None else f"{r.quality:.6f}", True)
            + "</tr>"
        )
    kind = ranking.kinds.get(rec, "?")
    note = (
        "A detector's platform reaches the per-image union without an oracle."
        if kind == "detector"
        else "The per-image union needs an oracle here: an upper bound of the platform."
    )
    return f"<p><small>{_e(rec)} ({_e(kind)}). {_e(note)}</small></p>" + _table(header, body)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(path.parent.name)} {_e(path.stem)}" src="data:image/png;base64,{data}">'


def best_attack(ranking: Ranking, defense: str) -> str | None:
    """The counter-attack that most often gives this defense its worst case."""
    row = next(r for r in ranking.rows if r.defense == defense)
    counts: dict[str, int] = {}
    for wc in row.best_single.values():
        if wc.attack:
            counts[wc.attack] = counts.get(wc.attack, 0) + 1
    return max(counts, key=lambda a: counts[a]) if counts else None


def _grids(run: Run, ranking: Ranking) -> str:
    clean_dir = run.folder.clean_samples_dir
    clean = sorted(clean_dir.glob("*.png"), key=lambda p: int(p.stem))
    if not clean:
        return "<p>This run has no sample images (it was made by an older privbench).</p>"
    ids = run.info.sample_ids
    out = [f"<p><small>Seeded sample probes: {_e(', '.join(ids))}.</small></p>"]
    for r in ranking.rows:
        folder = run.folder.samples_dir(r.defense)
        attack = best_attack(ranking, r.defense)
        columns = [("clean", clean_dir), ("uploaded", folder / "protected")]
        if attack:
            columns.append((f"after {attack}", run.folder.samples_dir(r.defense, attack)))
        if (folder / "recovered").is_dir():
            columns.append(("recovered by the owner", folder / "recovered"))
        cells = [f'<div class="h">{_e(name)}</div>' for name, _ in columns]
        cells += [""] * (4 - len(columns))
        for k in range(len(clean)):
            for _, path in columns:
                p = path / f"{k}.png"
                cells.append(_image(p) if p.is_file() else "<div>–</div>")
            cells += ["<div></div>"] * (4 - len(columns))
        out.append(f"<h3>{_e(r.defense)}</h3><div class=grid>{''.join(cells)}</div>")
    return "\n".join(out)


def _plots(run: Run, ranking: Ranking) -> str:
    """Per recognizer: worst case against quality and against latency, as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency = {
        r["defense"]: r for r in run.rows if r["scope"] == "defense" and r["metric"] == "latency"
    }
    quality = {
        r["defense"]: r
        for r in run.rows
        if r["scope"] == "defense" and r["metric"] == ranking.quality_metric
    }
    figures = []
    for rec in ranking.recognizers:
        for axis, source, label in (
            ("quality", quality, ranking.quality_metric or "quality"),
            ("latency", latency, "latency (ms/img, log)"),
        ):
            fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=72)
            drawn = 0
            for r in ranking.rows:
                wc, q = r.best_single.get(rec), source.get(r.defense)
                if wc is None or q is None or q.get("value") is None:
                    continue
                if axis == "latency" and q["value"] <= 0:
                    continue
                x, y = q["value"], 100 * wc.value
                xerr = None
                if q.get("ci_low") is not None:
                    xerr = [[x - q["ci_low"]], [q["ci_high"] - x]]
                yerr = None
                if wc.ci_low is not None:
                    yerr = [[y - 100 * wc.ci_low], [100 * wc.ci_high - y]]
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=2, label=r.defense)
                drawn += 1
            if not drawn:
                plt.close(fig)
                continue
            if axis == "latency":
                ax.set_xscale("log")
            if axis == "quality" and ranking.floor:
                ax.axvline(ranking.floor["min"], color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel(label)
            ax.set_ylabel("worst-case fooling rate (%)")
            ax.set_title(rec, fontsize=10)
            ax.legend(fontsize=6, loc="best")
            fig.tight_layout()
            buf = io.StringIO()
            fig.savefig(buf, format="svg")
            plt.close(fig)
            svg = buf.getvalue()
            svg = svg[svg.index("<svg") :]
            figures.append(f"<figure>{svg}</figure>")
    return f"<div class=plots>{''.join(figures)}</div>"


def _cell_tables(run: Run) -> str:
    out = []
    q_header, q_body = quality_table(run.rows)
    if q_body and len(q_header) > 1:
        rows = ["<tr>" + "".join(_td(_e(c)) for c in line) + "</tr>" for line in q_body]
        out.append("<h3>Image quality and cost</h3>" + _table(q_header, rows))
    recognizers = list(dict.fromkeys(r["recognizer"] for r in run.rows if r["scope"] == "cell"))
    for rec in recognizers:
        header, body = detail_table(run.rows, rec)
        out.append(f"<h3>{_e(rec)}</h3>" + _table(header, _rows(body)))
    return "\n".join(out)


def _rows(body: list[list[str]]) -> list[str]:
    return ["<tr>" + "".join(_td(_e(c)) for c in line) + "</tr>" for line in body]


def _game(run: Run, ranking: Ranking) -> str:
    """The game section (value, mixes, payoff matrices), once the run has finished."""
    from harness.boards.leaderboard import game_view

    if not run.outcomes or run.manifest.get("status") == "running":
        return ""
    view = game_view(ranking, run.outcomes)
    if view is None:
        return ""
    parts = ["<h2>The game: owner against platform</h2>", f"<p>{_e(view.intro)}</p>"]
    parts.append(_table(view.summary[0], _rows(view.summary[1]), sortable=False))
    for title, header, body in view.matrices:
        parts += [f"<h3>{_e(title)}</h3>", _table(header, _rows(body), sortable=False)]
    return "\n".join(parts)


def render_report(run: Run, with_images: bool = True) -> str:
    """The report page of ``run`` as one HTML string."""
    if run.manifest.get("config", {}).get("objective") == "conceal":
        from harness.boards.leaderboard import render_markdown

        ranking_html = f"<pre>{_e(render_markdown(run.manifest, run.rows, run.outcomes))}</pre>"
        ranking = None
    else:
        ranking = build_ranking(run.manifest, run.rows, run.outcomes)
        letters = _letters(ranking.attacks)
        tabs = [("overall", "overall score", _overall_tab(ranking, letters))]
        tabs += [
            (f"rec-{i}", rec, _recognizer_tab(ranking, rec, letters))
            for i, rec in enumerate(ranking.recognizers)
        ]
        buttons = "".join(
            f'<button data-tab="{tid}" class="{"active" if i == 0 else ""}">{_e(name)}</button>'
            for i, (tid, name, _) in enumerate(tabs)
        )
        panes = "".join(
            f'<div class="tab{" active" if i == 0 else ""}" id="{tid}">{body}</div>'
            for i, (tid, _, body) in enumerate(tabs)
        )
        legend = "".join(f"<li>{_md_inline(line)}</li>" for line in rules(ranking))
        attacks = ", ".join(
            f"{letters[a]} = {a}"
            + (f" ({threat_label(ranking.threats[a])})" if a in ranking.threats else "")
            for a in ranking.attacks
        )
        legend += f"<li>Counter-attacks: {_e(attacks)}. Click a column header to sort.</li>"
        ranking_html = (
            f"<ul class=rules>{legend}</ul><div class=tabgroup><div class=tabs>{buttons}</div>"
            f"{panes}</div>"
        )
    sections = [
        _header(run.manifest),
        "<h2>Ranking</h2>",
        ranking_html,
    ]
    if ranking is not None:
        sections += [_game(run, ranking)]
        sections += ["<h2>Trade-offs</h2>", _plots(run, ranking)]
        sections += ["<h2>What the photos look like</h2>"]
        sections += [
            _grids(run, ranking)
            if with_images
            else "<p>Image grids left out: the page would exceed its size budget.</p>"
        ]
    sections += ["<h2>Every cell</h2>", _cell_tables(run)]
    title = _e(run.manifest.get("suite", {}).get("name", "privbench"))
    return (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>privbench: {title}"
        f"</title><meta name=viewport content='width=device-width'><style>{CSS}</style></head>"
        f"<body>{''.join(sections)}<script>{JS}</script></body></html>"
    )


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` beside the run's files; returns its path."""
    run = Run.load(Path(run_dir))
    page = render_report(run)
    if len(page.encode()) > SIZE_BUDGET:
        page = render_report(run, with_images=False)
    path = RunFolder(Path(run_dir)).report_file
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
