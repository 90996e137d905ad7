"""The ranking of a conceal suite (Ye et al., ACM MMSys 2022): the owner's trusted *target*
classifier must keep working, every other model must fail.

A defense config is ranked only if its target loses at most the suite's
``target_drop_tolerance`` of accuracy (the point estimate of the paired drop; the interval is
shown). Ranked rows are ordered by auxiliary accuracy, lower first, taken at the platform's
best counter-attack (the highest over the counter-attacks). A defense without an auxiliary
(the paper's no-auxiliary variant) is ranked by the most accurate other recognizer. The
target's accuracy is read without a counter-attack: the trusted service classifies the upload
as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.metrics.declared import MetricCatalog

Row = dict[str, Any]


@dataclass
class ConcealRow:
    """What the ranking knows about one defense config."""

    defense: str
    target: str | None
    auxiliary: str | None
    target_accuracy: Row | None
    drop: Row | None
    auxiliary_plain: Row | None  # the named auxiliary on the upload as it is (the paper's number)
    auxiliary_worst: Row | None  # the named auxiliary at its best counter-attack
    best_other: Row | None  # the most accurate non-target recognizer at its best counter-attack

    @property
    def key(self) -> Row | None:
        """The row the ranking orders by."""
        return self.auxiliary_worst if self.auxiliary else self.best_other

    def within(self, tolerance: float) -> bool:
        return (
            self.drop is not None
            and self.drop.get("value") is not None
            and self.drop["value"] <= tolerance + 1e-12
        )


def identity_attack(manifest: dict[str, Any]) -> str | None:
    """Label of the suite's 'none' counter-attack."""
    for a in manifest.get("config", {}).get("counter_attacks", []):
        if a.get("name") == "none":
            return a.get("label")
    return None


def _highest(rows: list[Row]) -> Row | None:
    valid = [r for r in rows if r.get("value") is not None]
    return max(valid, key=lambda r: r["value"]) if valid else None


def _role_rows(manifest: dict[str, Any], rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """The cell rows of the suite's recognition metric (accuracies) and of its utility-loss
    metric (the target's drop)."""
    catalog = MetricCatalog.of_run(manifest, rows)
    accuracy, drop = catalog.first("recognition"), catalog.first("utility_loss")
    cells = [r for r in rows if r["scope"] == "cell"]
    return [r for r in cells if r["metric"] == accuracy], [r for r in cells if r["metric"] == drop]


def _as_uploaded(rows: list[Row], none_label: str | None) -> dict[tuple[str, str], Row]:
    """(defense, recognizer) → the row without a counter-attack."""
    return {(r["defense"], r["recognizer"]): r for r in rows if r["counter_attack"] == none_label}


def conceal_rows(manifest: dict[str, Any], rows: list[Row]) -> list[ConcealRow]:
    """One :class:`ConcealRow` per defense config, in suite order."""
    roles: dict[str, dict[str, str | None]] = manifest.get("roles", {})
    none_label = identity_attack(manifest)
    accuracy, drops = _role_rows(manifest, rows)
    plain = {
        (r["defense"], r["recognizer"]): r for r in accuracy if r["counter_attack"] == none_label
    }
    drop = {(r["defense"], r["recognizer"]): r for r in drops if r["counter_attack"] == none_label}
    defenses = list(dict.fromkeys(r["defense"] for r in rows if r.get("defense")))
    out = []
    for d in defenses:
        target, aux = roles.get(d, {}).get("target"), roles.get(d, {}).get("auxiliary")
        mine = [r for r in accuracy if r["defense"] == d]
        out.append(
            ConcealRow(
                defense=d,
                target=target,
                auxiliary=aux,
                target_accuracy=plain.get((d, target)),
                drop=drop.get((d, target)),
                auxiliary_plain=plain.get((d, aux)),
                auxiliary_worst=_highest([r for r in mine if r["recognizer"] == aux])
                if aux
                else None,
                best_other=_highest([r for r in mine if r["recognizer"] != target]),
            )
        )
    return out


def ranked(table: list[ConcealRow], tolerance: float) -> tuple[list[ConcealRow], list[ConcealRow]]:
    """(ranked rows, best first; rows listed but not ranked)."""
    eligible = [c for c in table if c.target and c.within(tolerance) and c.key is not None]
    eligible.sort(key=lambda c: (c.key["value"], c.defense))  # type: ignore[index]
    rest = [c for c in table if c not in eligible]
    return eligible, rest


def _pct(row: Row | None, letter: str = "") -> str:
    if row is None or row.get("value") is None:
        return "–"
    text = f"{100 * row['value']:.1f}"
    if row.get("ci_low") is not None:
        text += f" [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
    return text + (f" {letter}" if letter else "")


def _why_unranked(c: ConcealRow, tolerance: float) -> str:
    if not c.target:
        return "reference (no target)"
    if c.drop is None or c.drop.get("value") is None:
        return "no target accuracy"
    return f"target drop over {100 * tolerance:g} points"


def conceal_table(
    manifest: dict[str, Any],
    rows: list[Row],
    letters: dict[str, str],
    quality: list[tuple[str, dict[str, str]]],
) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body and legend of a conceal suite's ranking. ``letters`` mark counter-attacks;
    ``quality`` is (column title, defense → formatted value) per quality column."""
    tolerance = float(manifest.get("config", {}).get("target_drop_tolerance", 0.05))
    table = conceal_rows(manifest, rows)
    good, rest = ranked(table, tolerance)

    def mark(row: Row | None) -> str:
        return letters.get(row["counter_attack"], "") if row else ""

    header = [
        "rank",
        "defense",
        "target",
        "target acc %",
        "target drop (points)",
        "auxiliary",
        "auxiliary acc % (as uploaded)",
        "auxiliary acc % (worst)",
        "best other model acc % (worst)",
        *[title for title, _ in quality],
    ]
    body = []
    for rank, c in [*((str(i), c) for i, c in enumerate(good, 1)), *(("–", c) for c in rest)]:
        drop = "–"
        if c.drop is not None and c.drop.get("value") is not None:
            drop = _pct(c.drop)
        label = c.defense if rank != "–" else f"{c.defense} ({_why_unranked(c, tolerance)})"
        body.append(
            [
                rank,
                label,
                c.target or "–",
                _pct(c.target_accuracy),
                drop,
                c.auxiliary or ("none" if c.target else "–"),
                _pct(c.auxiliary_plain),
                _pct(c.auxiliary_worst, mark(c.auxiliary_worst)),
                _pct(c.best_other, mark(c.best_other))
                + (f" ({c.best_other['recognizer']})" if c.best_other else ""),
                *[values.get(c.defense, "–") for _, values in quality],
            ]
        )
    legend = [
        f"Conceal ranking: only defenses whose target loses at most {100 * tolerance:g} points "
        "of accuracy (the paired drop's point estimate; its 95% Bonett-Price interval is shown) "
        "are ranked; "
        "lower auxiliary accuracy ranks higher. Auxiliary and other models' accuracies are the "
        "owner's worst case: the highest over the platform's counter-attacks (the letter names "
        "it); 'as uploaded' is the auxiliary with no counter-attack, the number the paper "
        "reports. Without an auxiliary the most accurate other recognizer is ranked on. The "
        "target's accuracy is read with no counter-attack (the trusted service classifies the "
        "upload as it is). Accuracies in % of all probes with 95% Wilson intervals.",
    ]
    return header, body, legend
