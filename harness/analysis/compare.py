"""Paired comparisons of two runs, or of two defense configs within one run.

Both sides were measured on the same probes, so every difference is paired, by the test each
metric declares (:class:`harness.api.contracts.Metric`): a cell's fooling rate (the privacy
metric) by the exact McNemar test on the per-image outcomes (with the Bonett-Price interval of
the paired difference), a defense's quality metrics with per-image values (SSIM, PSNR, …) by a
paired bootstrap interval and a sign-flip permutation test on the per-image differences. The
p-values of one comparison are corrected together by Holm's method. Runs whose data, protocol,
upload or shared recognizer and counter-attack configurations differ are refused, naming the
difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tabulate import tabulate

from harness.api.contracts import NUMBER, MetricFormat
from harness.core.errors import PrivbenchError
from harness.metrics.declared import MetricCatalog, MetricInfo
from harness.metrics.stats import (
    holm,
    mcnemar_exact,
    paired_difference_interval,
    paired_mean_difference,
)
from harness.runs.folder import Run

BOOTSTRAP_SEED = 0


def protocol_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """What two runs must share for their per-image outcomes to be paired."""
    ds = manifest.get("dataset", {})
    cfg = manifest.get("config", {})
    return {
        "data fingerprint": ds.get("fingerprint"),
        "protocol": ds.get("protocol"),
        "dataset": cfg.get("dataset"),
        "upload": cfg.get("upload"),
        "objective": cfg.get("objective"),
    }


def check_compatible(a: Run, b: Run) -> None:
    """PrivbenchError naming the first difference that makes ``a`` and ``b`` unpairable."""
    pa, pb = protocol_of(a.manifest), protocol_of(b.manifest)
    for key in pa:
        if pa[key] != pb[key]:
            raise PrivbenchError(
                f"{a.source} and {b.source} differ in {key} ({pa[key]!r} vs {pb[key]!r}): their "
                "images are not the same, so nothing can be paired"
            )
    for kind in ("recognizers", "counter_attacks"):
        ca, cb = a.configs(kind), b.configs(kind)
        for label in sorted(set(ca) & set(cb)):
            if ca[label] != cb[label]:
                raise PrivbenchError(
                    f"{kind[:-1].replace('_', '-')} {label!r} is configured differently in "
                    f"{a.source} ({ca[label]}) and {b.source} ({cb[label]})"
                )


@dataclass
class Difference:
    """One paired difference (B − A)."""

    defense: str  # "A-label → B-label" when the labels differ
    counter_attack: str | None
    recognizer: str | None
    metric: str
    a: float
    b: float
    delta: float
    ci_low: float
    ci_high: float
    n: int
    p: float
    p_holm: float = float("nan")
    display: MetricFormat = NUMBER  # how the metric's values are printed


def fooling_difference(
    a: Run, da: str, b: Run, db: str, attack: str, recognizer: str, info: MetricInfo
) -> Difference | None:
    """Fooling rate (``info``: the metric the outcomes measure) of B minus A in one cell, on
    probes eligible (recognised clean) in both."""
    oa, ob = a.outcomes.get((da, attack, recognizer)), b.outcomes.get((db, attack, recognizer))
    if oa is None or ob is None:
        return None
    if oa.ids != ob.ids:
        raise PrivbenchError(
            f"cell {da} × {attack} × {recognizer}: the two runs hold different probes"
        )
    both = oa.eligible & ob.eligible
    fa, fb = oa.fooled[both], ob.fooled[both]
    n = int(both.sum())
    if n == 0:
        return None
    only_b, only_a = int((fb & ~fa).sum()), int((fa & ~fb).sum())
    delta, lo, hi = paired_difference_interval(
        int((fa & fb).sum()), only_b, only_a, int((~fa & ~fb).sum())
    )
    label = da if da == db else f"{da} → {db}"
    p = mcnemar_exact(only_a, only_b)
    mean_a, mean_b = float(fa.mean()), float(fb.mean())
    return Difference(
        label,
        attack,
        recognizer,
        info.label,
        mean_a,
        mean_b,
        delta,
        lo,
        hi,
        n,
        p,
        display=info.display,
    )


def quality_difference(
    a: Run, da: str, b: Run, db: str, metric: str, display: MetricFormat = NUMBER
) -> Difference | None:
    """Mean per-image ``metric`` of B minus A over the probes both hold."""
    qa, qb = a.quality.get(da, {}).get(metric), b.quality.get(db, {}).get(metric)
    if not qa or not qb:
        return None
    ids = sorted(set(qa) & set(qb))
    va = np.array([qa[i] for i in ids], dtype=np.float64)
    vb = np.array([qb[i] for i in ids], dtype=np.float64)
    keep = np.isfinite(va) & np.isfinite(vb)
    if not keep.any():
        return None
    delta, lo, hi, p = paired_mean_difference(vb[keep], va[keep], BOOTSTRAP_SEED)
    label = da if da == db else f"{da} → {db}"
    mean_a, mean_b, n = float(va[keep].mean()), float(vb[keep].mean()), int(keep.sum())
    return Difference(
        label,
        None,
        None,
        metric,
        mean_a,
        mean_b,
        delta,
        lo,
        hi,
        n,
        p,
        display=display or MetricFormat(),
    )


def per_image_quality(catalog: MetricCatalog) -> list[MetricInfo]:
    """The quality metrics compared per image (those that declare the bootstrap test)."""
    infos = [catalog[m] for m in catalog.labels("quality")]
    return [i for i in infos if i.paired_test == "bootstrap"]


def _pairs(a: Run, b: Run, pairs: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The given defense pairs, or every defense label both runs hold."""
    if pairs is None:
        da = list(dict.fromkeys(r["defense"] for r in a.rows if r["defense"]))
        db = {r["defense"] for r in b.rows if r["defense"]}
        pairs = [(d, d) for d in da if d in db]
    if not pairs:
        raise PrivbenchError(
            f"{a.source} and {b.source} share no defense config label: nothing to compare"
        )
    return pairs


def compare(a: Run, b: Run, pairs: list[tuple[str, str]] | None = None) -> list[Difference]:
    """Every shared cell and quality metric of the defense pairs (A label, B label); default:
    the defense labels both runs hold. p-values are Holm-corrected together."""
    check_compatible(a, b)
    pairs = _pairs(a, b, pairs)
    catalog = MetricCatalog.of_run(a.manifest, a.rows)
    outcome, quality = catalog.outcome_metric(), per_image_quality(catalog)
    attacks = [c for c in a.configs("counter_attacks") if c in b.configs("counter_attacks")]
    recognizers = [c for c in a.configs("recognizers") if c in b.configs("recognizers")]
    found: list[Difference | None] = []
    for da, db in pairs:
        found += [
            fooling_difference(a, da, b, db, attack, rec, outcome)
            for attack in attacks
            for rec in recognizers
        ]
        found += [quality_difference(a, da, b, db, q.label, q.display) for q in quality]
    out = [d for d in found if d is not None]
    for d, p in zip(out, holm([d.p for d in out]), strict=True):
        d.p_holm = p
    return out


def _row(d: Difference, alpha: float) -> list[Any]:
    scale = 100.0 if d.display.style == "percent" else 1.0
    digits = d.display.delta_digits

    def f(x: float) -> str:
        return f"{scale * x:.{digits}f}"

    return [
        d.defense,
        d.counter_attack or "–",
        d.recognizer or "–",
        d.metric + (" (%)" if scale == 100.0 else ""),
        f(d.a),
        f(d.b),
        f"{f(d.delta)} [{f(d.ci_low)}, {f(d.ci_high)}]",
        d.n,
        f"{d.p:.3g}",
        f"{d.p_holm:.3g}" + (" *" if d.p_holm < alpha else ""),
    ]


def render(differences: list[Difference], alpha: float = 0.05) -> str:
    """A table of the differences (B − A), significant ones marked."""
    header = ["defense", "counter-attack", "recognizer", "metric", "A", "B", "Δ = B − A [95%]"]
    header += ["n", "p", "p (Holm)"]
    body = [_row(d, alpha) for d in differences]
    return (
        tabulate(body, headers=header, tablefmt="github", disable_numparse=True)
        + f"\n\n* = significant at α = {alpha} after Holm's correction over the "
        f"{len(differences)} tests. Fooling rate: exact McNemar test, Bonett-Price interval; "
        "SSIM/PSNR: paired BCa bootstrap interval, sign-flip permutation test."
    )
