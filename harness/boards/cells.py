"""How the boards print one value: a metric row in its declared format
(:class:`harness.api.contracts.MetricFormat`), a worst case, a counter-attack's letter."""

from __future__ import annotations

from typing import Any

from harness.boards.ranking import WorstCase
from harness.metrics.declared import MetricInfo

Row = dict[str, Any]


def ordered(values: list[Any]) -> list[Any]:
    """The distinct values that are not None, in first-seen order."""
    return list(dict.fromkeys(v for v in values if v is not None))


def index(rows: list[Row]) -> dict[tuple[Any, ...], Row]:
    """(scope, defense, counter-attack, recognizer, metric) → row."""
    return {
        (r["scope"], r["defense"], r["counter_attack"], r["recognizer"], r["metric"]): r
        for r in rows
    }


def rate_text(row: Row | None) -> str:
    """'12.5% [8.1, 18.7] n=120': a share in percent with its interval and n."""
    if row is None or row.get("value") is None:
        return "–"
    text = f"{100 * row['value']:.1f}%"
    if row.get("ci_low") is not None:
        text += f" [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
    return text + f" n={row['n']}"


def flag_text(row: Row) -> str:
    """A yes/no row, with the measured share against its target when given."""
    share, target = row.get("fooled_share"), row.get("target_share")
    detail = f" ({100 * share:.0f}% vs {100 * target:.0f}%)" if None not in (share, target) else ""
    return ("yes" if row["value"] else "NO") + detail


def number_text(row: Row | None, info: MetricInfo) -> str:
    """A value in its declared format with its interval (and the interval's coverage when it
    is below 95%); a flag as yes/NO."""
    if row is None or row.get("value") is None:
        return "–"
    if info.display.style == "flag":
        return flag_text(row)
    digits = info.display.digits
    text = f"{row['value']:.{digits}f}"
    if row.get("ci_low") is not None and row["ci_low"] != row["ci_high"]:
        level = row.get("ci_level")
        mark = "" if level is None or level >= 0.95 else f" ({100 * level:.0f}%)"
        text += f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]{mark}"
    return text


def row_text(row: Row | None, info: MetricInfo) -> str:
    """A row of any metric: a share as :func:`rate_text`, anything else as
    :func:`number_text`."""
    return rate_text(row) if info.percent else number_text(row, info)


def value_only(row: Row | None, info: MetricInfo) -> str:
    """The value alone in its declared format (a flag as yes/NO)."""
    if row is None or row.get("value") is None:
        return "–"
    if info.display.style == "flag":
        return flag_text(row)
    return f"{row['value']:.{info.display.digits}f}"


def letters(attacks: list[str]) -> dict[str, str]:
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


def worst_text(wc: WorstCase | None, usual_n: int | None, marks: dict[str, str]) -> str:
    """'62.5 [50.1, 73.4] b': a worst case in percent, n when unusual, the counter-attack's
    letter (∪ for the per-image union) and 'wb' for a white-box cell."""
    if wc is None:
        return "–"
    text = f"{100 * wc.value:.1f}"
    if wc.ci_low is not None:
        text += f" [{100 * wc.ci_low:.1f}, {100 * wc.ci_high:.1f}]"
    text += "" if wc.n == usual_n else f" n={wc.n}"
    text += f" {marks[wc.attack]}" if wc.attack is not None else " ∪"
    return text + (" wb" if wc.white_box else "")
