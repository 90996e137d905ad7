"""``report.html``: one self-contained page per run (inline CSS, JavaScript, images and SVG
plots; no network), readable at a glance.

It holds the provenance header; the verdict (:mod:`harness.boards.verdict`); the ranking
(:mod:`harness.boards.roles`), sortable, with a tab per recognizer role and one per recognizer,
each ranked, rows that do not clear the quality floor greyed; per defense config a grid of the
run's seeded sample photos (original, uploaded, after the platform's best counter-attack, and
recovered where the defense is reversible: a column each, as many as the config has); the
trade-off plots per recognizer (:mod:`harness.boards.tradeoffs`); and the per-cell tables.
Thumbnails keep big runs small; :data:`SIZE_BUDGET` is the most a report may weigh.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from harness.boards.cells import letters as _letters
from harness.boards.game_board import game_view
from harness.boards.leaderboard import provenance_lines, render_markdown
from harness.boards.ranking import (
    RankedRow,
    Ranking,
    RoleRanking,
    WorstCase,
    move_in_words,
    pair_threat,
    threat_label,
)
from harness.boards.roles import build_ranking, ranked_value, rules
from harness.boards.tables import detail_table, quality_table, quality_text, role_title, tie_text
from harness.boards.threats import attack_threat_text, unadapted_note
from harness.boards.tradeoffs import tradeoff_plots
from harness.boards.verdict import verdict_paragraphs
from harness.core.errors import PrivbenchError
from harness.metrics.declared import MetricCatalog
from harness.runs.archive import is_archive
from harness.runs.folder import Run, RunFolder

SIZE_BUDGET = 4_000_000  # bytes; a report over it drops its image grids, saying so

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc::after{content:" ▲"}
th.sorted-desc::after{content:" ▼"}tr.unranked{color:#888}td.num{text-align:right}
tr.below-floor{color:#999;background:#f6f6f6}tr.borderline{color:#8a5a00;font-style:italic}
.verdict p{margin:4px 0}
.tabs button{border:1px solid #bbb;background:#f7f7f7;padding:4px 10px;margin-right:4px;
cursor:pointer}.tabs button.active{background:#246;color:#fff}.tab{display:none}
.tab.active{display:block}.grid{display:grid;gap:4px;justify-content:start}
.grid img{width:112px;height:auto;image-rendering:pixelated}
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


def _rank_cell(r: RankedRow) -> str:
    if r.rank:
        return _td(f"{r.rank}{' ★' if r.pareto else ''}", str(r.rank), True)
    if r.borderline:
        return _td("borderline", "9998", True)
    return _td("below floor" if r.below_floor else "–", "9999", True)


def _row_class(r: RankedRow) -> str:
    """' class="unranked below-floor"' and the like: greys the rows that are not ranked."""
    if r.rank:
        return ""
    why = " borderline" if r.borderline else (" below-floor" if r.below_floor else "")
    return f' class="unranked{why}"'


def _share_cell(value: float | None) -> str:
    """A score in percent, sorting by its value."""
    return _td(
        "–" if value is None else f"{100 * value:.1f}",
        "" if value is None else f"{value:.6f}",
        True,
    )


def _quality_cell(ranking: Ranking, r: RankedRow) -> str:
    """The row's quality in its metric's declared format with its interval, sorting by its
    value."""
    if r.quality is None or ranking.quality_info is None:
        return _td("–", "", True)
    return _td(_e(quality_text(ranking, r)), f"{r.quality:.6f}", True)


def _worst_cell(ranking: Ranking, r: RankedRow, rec: str, letters: dict[str, str]) -> str:
    wc = ranked_value(r, rec, ranking.kinds.get(rec))
    text, key = _pct(wc)
    mark = "" if wc is None else (f" {letters[wc.attack]}" if wc.attack else " ∪")
    mark += " wb" if wc is not None and wc.white_box else ""
    return _td(text + _e(mark), key, True)


def _tie_cell(r: RankedRow) -> str:
    return _td(_e(tie_text(r)), "" if r.tie_p is None else f"{r.tie_p:.6g}")


def _role_row(ranking: Ranking, role: RoleRanking, r: RankedRow, letters: dict[str, str]) -> str:
    cells = [_rank_cell(r), _td(_e(r.defense))]
    cells += [_worst_cell(ranking, r, rec, letters) for rec in role.recognizers]
    cells.append(_share_cell(r.score))
    if role.any_white_box:
        cells.append(_share_cell(r.white_score))
    cells += [_quality_cell(ranking, r), _tie_cell(r)]
    flag = " ⚑" if r.threat.get("oblivious_only") else ""
    cells.append(_td(_e(threat_label(r.threat) + flag)))
    return f'<tr data-defense="{_e(r.defense)}"{_row_class(r)}>{"".join(cells)}</tr>'


def _role_tab(ranking: Ranking, role: RoleRanking, letters: dict[str, str]) -> str:
    header = ["rank", "defense", *role.recognizers, "score (%)"]
    header += ["white-box (%)"] if role.any_white_box else []
    header += [ranking.quality_metric or "quality", "vs above", "threat model"]
    rows = [_role_row(ranking, role, r, letters) for r in role.rows]
    return f"<p><small>{_e(role_title(role))}</small></p>" + _table(header, rows)


def _recognizer_row(ranking: Ranking, r: RankedRow, rec: str, letters: dict[str, str]) -> str:
    wc = ranked_value(r, rec, ranking.kinds.get(rec))
    single = r.best_single[rec]
    if wc is not None and wc.attack is None:  # the per-image union: every counter-attack
        attack, threat = "∪ all at once", r.threat
    else:
        attack = f"{letters.get(single.attack or '', '')} {single.attack}"
        threat = pair_threat(ranking.threats, single.attack, r.defense)
    cells = [
        _rank_cell(r),
        _td(_e(r.defense)),
        _worst_cell(ranking, r, rec, letters),
        _td(_e(attack)),
        _td(_e(threat_label(threat) if threat else "")),
        _td(*_pct(single), True),
        _td(*_pct(r.union.get(rec)), True),
        _quality_cell(ranking, r),
        _tie_cell(r),
    ]
    return f"<tr{_row_class(r)}>{''.join(cells)}</tr>"


def _recognizer_tab(ranking: Ranking, rec: str, letters: dict[str, str]) -> str:
    header = ["rank", "defense", "ranked on (%)", "best counter-attack", "threat model"]
    header += ["best single (%)", "per-image union (%)", ranking.quality_metric or "quality"]
    header += ["vs above"]
    ranked = ranking.by_recognizer[rec]
    body = [_recognizer_row(ranking, r, rec, letters) for r in ranked.rows if rec in r.best_single]
    kind = ranking.kinds.get(rec, "?")
    note = (
        "A detector's platform reaches the per-image union without an oracle: ranked on it."
        if kind == "detector"
        else "Ranked on the best single counter-attack; the per-image union needs an oracle "
        "here: an upper bound of the platform."
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


def grid_columns(run: Run, ranking: Ranking, defense: str) -> list[tuple[str, Path]]:
    """The columns of one defense config's sample grid, as (header, folder of its images):
    the original, the upload, the upload after the platform's best counter-attack (where the
    config has cells), and what the owner recovers where the defense is reversible (the run
    writes recovered samples for reversible defenses only, so their images are the sign)."""
    folder = run.folder.samples_dir(defense)
    columns = [("original", run.folder.clean_samples_dir), ("uploaded", folder / "protected")]
    attack = best_attack(ranking, defense)
    if attack:
        # 'after none' would read as the none defense: the platform's best move was no move
        header = f"after {move_in_words(attack)}"
        columns.append((header, run.folder.samples_dir(defense, attack)))
    if any((folder / "recovered").glob("*.png")):
        columns.append(("recovered by the owner", folder / "recovered"))
    return columns


def _grid(columns: list[tuple[str, Path]], n_images: int) -> str:
    """A grid of as many columns as ``columns``: the headers, then one row per sample."""
    cells = [f'<div class="h">{_e(name)}</div>' for name, _ in columns]
    for k in range(n_images):
        for _, path in columns:
            p = path / f"{k}.png"
            cells.append(_image(p) if p.is_file() else "<div>–</div>")
    style = f"grid-template-columns:repeat({len(columns)},auto)"
    return f'<div class=grid style="{style}">{"".join(cells)}</div>'


def _grids(run: Run, ranking: Ranking) -> str:
    clean_dir = run.folder.clean_samples_dir
    clean = sorted(clean_dir.glob("*.png"), key=lambda p: int(p.stem))
    if not clean:
        return "<p>This run has no sample images (it was made by an older privbench).</p>"
    ids = run.info.sample_ids
    out = [f"<p><small>Seeded sample probes: {_e(', '.join(ids))}.</small></p>"]
    for r in ranking.rows:
        columns = grid_columns(run, ranking, r.defense)
        out.append(f"<h3>{_e(r.defense)}</h3>{_grid(columns, len(clean))}")
    return "\n".join(out)


def _cell_tables(run: Run, catalog: MetricCatalog) -> str:
    out = []
    q_header, q_body = quality_table(run.rows, catalog)
    if q_body and len(q_header) > 1:
        rows = ["<tr>" + "".join(_td(_e(c)) for c in line) + "</tr>" for line in q_body]
        out.append("<h3>Image quality and cost</h3>" + _table(q_header, rows))
    recognizers = list(dict.fromkeys(r["recognizer"] for r in run.rows if r["scope"] == "cell"))
    for rec in recognizers:
        header, body = detail_table(run.rows, rec, catalog)
        out.append(f"<h3>{_e(rec)}</h3>" + _table(header, _rows(body)))
    return "\n".join(out)


def _rows(body: list[list[str]]) -> list[str]:
    return ["<tr>" + "".join(_td(_e(c)) for c in line) + "</tr>" for line in body]


def _game(run: Run, ranking: Ranking) -> str:
    """The game section (value, mixes, payoff matrices), once the run has finished."""
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


def _tabs(tabs: list[tuple[str, str, str]]) -> str:
    """Tab buttons and panes of (id, title, body), the first shown."""
    buttons = "".join(
        f'<button data-tab="{tid}" class="{"active" if i == 0 else ""}">{_e(name)}</button>'
        for i, (tid, name, _) in enumerate(tabs)
    )
    panes = "".join(
        f'<div class="tab{" active" if i == 0 else ""}" id="{tid}">{body}</div>'
        for i, (tid, _, body) in enumerate(tabs)
    )
    return f"<div class=tabgroup><div class=tabs>{buttons}</div>{panes}</div>"


def _evade_ranking(ranking: Ranking) -> str:
    """The ranking's rules and its tabs: one per recognizer role, then one per recognizer."""
    letters = _letters(ranking.attacks)
    tabs = [
        (f"role-{i}", role_title(role), _role_tab(ranking, role, letters))
        for i, role in enumerate(ranking.roles)
    ]
    tabs += [
        (f"rec-{i}", rec, _recognizer_tab(ranking, rec, letters))
        for i, rec in enumerate(ranking.recognizers)
    ]
    legend = "".join(f"<li>{_md_inline(line)}</li>" for line in rules(ranking))
    attacks = ", ".join(
        f"{letters[a]} = {a}"
        + (f" ({attack_threat_text(ranking.threats[a])})" if a in ranking.threats else "")
        for a in ranking.attacks
    )
    legend += f"<li>Counter-attacks: {_e(attacks)}. Click a column header to sort.</li>"
    note = unadapted_note(ranking)
    flagged = f"<p class=flagged>{_md_inline(note)}</p>" if note else ""
    return f"<ul class=rules>{legend}</ul>{_tabs(tabs)}{flagged}"


def _verdict(run: Run, ranking: Ranking | None) -> str:
    """The verdict paragraphs (:mod:`harness.boards.verdict`), or nothing."""
    paragraphs = verdict_paragraphs(run.manifest, run.rows, run.outcomes, ranking)
    if not paragraphs:
        return ""
    body = "".join(f"<p>{_e(p)}</p>" for p in paragraphs)
    return f"<h2>Verdict</h2><div class=verdict>{body}</div>"


def render_report(run: Run, with_images: bool = True) -> str:
    """The report page of ``run`` as one HTML string."""
    catalog = MetricCatalog.of_run(run.manifest, run.rows)
    evade = run.manifest.get("config", {}).get("objective") != "conceal"
    ranking = build_ranking(run.manifest, run.rows, run.outcomes) if evade else None
    sections = [_header(run.manifest), _verdict(run, ranking), "<h2>Ranking</h2>"]
    if ranking is None:
        sections.append(f"<pre>{_e(render_markdown(run.manifest, run.rows, run.outcomes))}</pre>")
    else:
        sections += [_evade_ranking(ranking), _game(run, ranking)]
        sections += ["<h2>Trade-offs</h2>", tradeoff_plots(run, ranking, catalog)]
        sections += ["<h2>What the photos look like</h2>"]
        sections += [
            _grids(run, ranking)
            if with_images
            else "<p>Image grids left out: the page would exceed its size budget.</p>"
        ]
    sections += ["<h2>Every cell</h2>", _cell_tables(run, catalog)]
    title = _e(run.manifest.get("suite", {}).get("name", "privbench"))
    return (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>privbench: {title}"
        f"</title><meta name=viewport content='width=device-width'><style>{CSS}</style></head>"
        f"<body>{''.join(sections)}<script>{JS}</script></body></html>"
    )


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` beside the run's files (atomically: a link of that name is
    replaced, never followed); returns its path. A submission archive is refused: the report
    goes into a run folder."""
    if is_archive(Path(run_dir)):
        raise PrivbenchError(
            f"{run_dir} is a submission archive; report writes report.html into a run folder: "
            f"unpack it (tar -xzf {run_dir}) and give its run/ folder"
        )
    run = Run.load(Path(run_dir))
    page = render_report(run)
    if len(page.encode()) > SIZE_BUDGET:
        page = render_report(run, with_images=False)
    folder = RunFolder(Path(run_dir))
    folder.write_report(page)  # atomic; a full disk is the CLI's named storage error
    return folder.report_file
