"""The report's trade-off plots: per recognizer, the worst-case fooling rate the ranking ranks
on (:func:`harness.boards.roles.ranked_value`: a detector's per-image union, any other's best
single counter-attack) against the ranking's quality metric and against the headline cost
metric (latency, log scale), with interval bars; rows without a rank are drawn hollow.
matplotlib, inline SVG."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from harness.boards.plot_text import as_plain_text, plain_legend
from harness.boards.ranking import Ranking
from harness.boards.roles import ranked_value
from harness.metrics.declared import MetricCatalog
from harness.runs.folder import Run

Row = dict[str, Any]


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (imported when a report is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class _Axis:
    """A trade-off plot's x axis: each defense's row of one metric."""

    rows: dict[str, Row]
    label: str
    log: bool = False
    floor: bool = False  # draw the ranking's quality floor


def _axes(run: Run, ranking: Ranking, catalog: MetricCatalog) -> list[_Axis]:
    """The ranking's quality, and the headline cost metric on a log scale."""

    def by_defense(metric: str | None) -> dict[str, Row]:
        rows = [r for r in run.rows if r["scope"] == "defense" and r["metric"] == metric]
        return {r["defense"]: r for r in rows}

    quality = ranking.quality_metric
    axes = [_Axis(by_defense(quality), quality or "quality", floor=True)]
    cost = catalog.headline("cost", {r["metric"] for r in run.rows})
    if cost is not None:
        unit = catalog[cost].unit_label
        label = f"{cost.replace('_', ' ')} ({unit + ', ' if unit else ''}log)"
        axes.append(_Axis(by_defense(cost), label, log=True))
    return axes


def _error_bar(value: float, low: float | None, high: float | None) -> list[list[float]] | None:
    """Matplotlib's [[below], [above]] of an interval around ``value``; an interval that does
    not hold the value (a bootstrap's may not) is drawn to the value on that side."""
    if low is None or high is None:
        return None
    return [[max(value - low, 0.0)], [max(high - value, 0.0)]]


@dataclass(frozen=True)
class Point:
    """One defense config on one trade-off plot (y: the ranked worst case in %)."""

    defense: str
    x: float
    y: float
    xerr: list[list[float]] | None
    yerr: list[list[float]] | None
    ranked: bool


def points(ranking: Ranking, rec: str, x_rows: dict[str, Row], log: bool = False) -> list[Point]:
    """The points of ``rec``'s plot against the defense rows ``x_rows``: every row with a
    ranked value and an x value (a positive one on a log axis)."""
    out = []
    for r in ranking.by_recognizer[rec].rows:
        wc, q = ranked_value(r, rec, ranking.kinds.get(rec)), x_rows.get(r.defense)
        if wc is None or q is None or q.get("value") is None or (log and q["value"] <= 0):
            continue
        x, y = q["value"], 100 * wc.value
        xerr = _error_bar(x, q.get("ci_low"), q.get("ci_high"))
        yerr = None if wc.ci_low is None else _error_bar(y, 100 * wc.ci_low, 100 * wc.ci_high)
        out.append(Point(r.defense, x, y, xerr, yerr, r.rank is not None))
    return out


def _figure(ranking: Ranking, rec: str, axis: _Axis) -> str | None:
    """One trade-off plot as inline SVG, or None when no row has both values."""
    drawn = points(ranking, rec, axis.rows, axis.log)
    if not drawn:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=72)
    handles = [
        ax.errorbar(
            p.x, p.y, xerr=p.xerr, yerr=p.yerr, fmt="o", capsize=2, mfc=None if p.ranked else "none"
        )
        for p in drawn
    ]
    if axis.log:
        ax.set_xscale("log")
    if axis.floor and ranking.floor:
        ax.axvline(ranking.floor["min"], color="grey", linestyle="--", linewidth=1)
    as_plain_text(
        ax.set_xlabel(axis.label),
        ax.set_ylabel(
            "fooling rate, per-image union (%)"
            if ranking.kinds.get(rec) == "detector"
            else "worst-case fooling rate (%)"
        ),
        ax.set_title(rec, fontsize=10),
    )
    plain_legend(ax, handles, [p.defense for p in drawn], fontsize=6, loc="best")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return f"<figure>{svg[svg.index('<svg') :]}</figure>"


def tradeoff_plots(run: Run, ranking: Ranking, catalog: MetricCatalog) -> str:
    """Per recognizer: worst case against quality and against the headline cost (latency),
    as inline SVG."""
    axes = _axes(run, ranking, catalog)
    figures = [_figure(ranking, rec, axis) for rec in ranking.recognizers for axis in axes]
    return f"<div class=plots>{''.join(f for f in figures if f)}</div>"
