"""The CI regression gate: ``privbench baseline RUN > baseline.json`` and ``privbench check RUN
--baseline baseline.json``.

A baseline stores, per chosen cell, the per-image outcome bits (which probes were recognised
when clean, which were fooled; packed, base64) with a digest of the probe ids, and per defense
the mean of each quality metric that declares a ``gate_tolerance`` (SSIM, PSNR) with its n.
``check`` pairs a new run's outcomes with the stored bits: a cell fails when its fooling rate
dropped significantly (exact McNemar, two-sided, at ``alpha``, and lower) or by more than
``tolerance``; a quality mean fails when it got worse (in its declared direction) by more than
its tolerance. A baseline of another suite, data set, protocol or recognizer and
counter-attack configuration is refused.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.baseline_file import BASELINE_SCHEMA, unpack_bits
from harness.analysis.compare import protocol_of
from harness.api.contracts import NUMBER, MetricFormat
from harness.core.errors import PrivbenchError
from harness.metrics import legacy
from harness.metrics.declared import MetricCatalog, MetricInfo
from harness.metrics.stats import mcnemar_exact
from harness.runs.folder import Run
from harness.runs.outcomes import CellOutcome


def _pack(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(bits.astype(bool)).tobytes()).decode("ascii")


def ids_digest(ids: tuple[str, ...]) -> str:
    """sha256 of the probe ids in order (the outcome bits are aligned to them)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def gated_quality(catalog: MetricCatalog) -> list[str]:
    """The quality metrics the gate checks: those that declare a tolerance."""
    return [m for m in catalog.labels("quality") if catalog[m].gate_tolerance is not None]


def _cell_entry(d: str, a: str, r: str, outcome: CellOutcome) -> dict[str, Any]:
    return {
        "defense": d,
        "counter_attack": a,
        "recognizer": r,
        "n_probes": len(outcome.ids),
        "ids_sha256": ids_digest(outcome.ids),
        "eligible": _pack(outcome.eligible),
        "fooled": _pack(outcome.fooled),
        # schema 1 stores the fooled share under the name of the metric the bits measure
        legacy.OUTCOME_METRIC: float(outcome.fooled.sum() / max(1, outcome.eligible.sum())),
    }


def _quality_means(run: Run, defenses: set[str]) -> dict[str, dict[str, Any]]:
    """Defense → gated quality metric → {mean, n}, and its 95% interval (ci_low, ci_high)
    when the run measured one (a figure that judges the quality floor needs it)."""
    gated = set(gated_quality(MetricCatalog.of_run(run.manifest, run.rows)))
    quality: dict[str, dict[str, Any]] = {
        r["defense"]: {} for r in run.rows if r["scope"] == "defense" and r["defense"] in defenses
    }
    for r in run.rows:
        if (
            r["scope"] == "defense"
            and r["defense"] in quality
            and r["metric"] in gated
            and r["value"] is not None
        ):
            interval = {k: r[k] for k in ("ci_low", "ci_high") if r.get(k) is not None}
            quality[r["defense"]][r["metric"]] = {"mean": r["value"], "n": r["n"], **interval}
    return quality


def make_baseline(run: Run, cells: list[str] | None = None) -> dict[str, Any]:
    """The baseline of ``run``: every cell, or those whose 'defense × counter-attack ×
    recognizer' matches one of the shell patterns in ``cells``."""
    if run.manifest.get("smoke"):
        raise PrivbenchError(f"{run.source} is a smoke run (--smoke): it cannot be a baseline")
    chosen = {
        f"{d} × {a} × {r}": _cell_entry(d, a, r, outcome)
        for (d, a, r), outcome in run.outcomes.items()
        if not cells or any(fnmatch.fnmatchcase(f"{d} × {a} × {r}", pat) for pat in cells)
    }
    if not chosen:
        raise PrivbenchError(
            f"no cell of {run.source} matches {cells}; cells look like 'defense × counter-attack "
            "× recognizer' (shell patterns, e.g. 'krtio* × * × sface')"
        )
    cfg = run.manifest.get("config", {})
    return {
        "schema": BASELINE_SCHEMA,
        "suite": run.manifest.get("suite", {}).get("name"),
        "suite_sha256": run.manifest.get("suite", {}).get("sha256"),
        "run_id": run.manifest.get("run_id"),
        "privbench_version": run.manifest.get("privbench_version"),
        "protocol": protocol_of(run.manifest),
        "recognizers": cfg.get("recognizers"),
        "counter_attacks": cfg.get("counter_attacks"),
        "cells": chosen,
        "quality": _quality_means(run, {v["defense"] for v in chosen.values()}),
    }


@dataclass
class Finding:
    cell: str
    metric: str
    before: float
    after: float
    n: int
    p: float | None
    failed: bool
    why: str
    display: MetricFormat = NUMBER  # how the metric's values are printed


def _configs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {c["label"]: {"name": c["name"], "params": c["params"]} for c in items or []}


def _check_same_setting(run: Run, baseline: dict[str, Any]) -> None:
    if baseline.get("schema") != BASELINE_SCHEMA:
        raise PrivbenchError(
            f"baseline schema {baseline.get('schema')!r} is not {BASELINE_SCHEMA}: make it "
            "again with this privbench (privbench baseline RUN > baseline.json)"
        )
    suite = run.manifest.get("suite", {}).get("name")
    if suite != baseline.get("suite"):
        raise PrivbenchError(
            f"the baseline is of suite {baseline.get('suite')!r} but {run.source} ran {suite!r}"
        )
    now = protocol_of(run.manifest)
    for key, value in baseline["protocol"].items():
        if now.get(key) != value:
            raise PrivbenchError(
                f"{run.source} differs from the baseline in {key} ({now.get(key)!r} vs "
                f"{value!r}): the outcomes cannot be paired"
            )
    cfg = run.manifest.get("config", {})
    for kind in ("recognizers", "counter_attacks"):
        then, current = _configs(baseline.get(kind)), _configs(cfg.get(kind))
        for label, conf in then.items():
            if label in current and current[label] != conf:
                raise PrivbenchError(
                    f"{kind[:-1].replace('_', '-')} {label!r} is configured differently from "
                    f"the baseline ({current[label]} vs {conf})"
                )


def _cell_finding(
    run: Run, name: str, cell: dict[str, Any], alpha: float, tolerance: float, info: MetricInfo
) -> Finding | None:
    """The baseline cell ``name`` against the run's outcomes (None: no probe eligible in
    both)."""
    outcome: CellOutcome | None = run.outcomes.get(
        (cell["defense"], cell["counter_attack"], cell["recognizer"])
    )
    if outcome is None:
        raise PrivbenchError(
            f"{run.source} has no cell {name} (the baseline has it): the suite changed, or "
            "the run did not finish it"
        )
    if ids_digest(outcome.ids) != cell["ids_sha256"]:
        raise PrivbenchError(f"cell {name}: the run's probes are not the baseline's")
    eligible = unpack_bits(cell["eligible"], cell["n_probes"])
    fooled = unpack_bits(cell["fooled"], cell["n_probes"])
    both = eligible & outcome.eligible
    before, after = fooled[both], outcome.fooled[both]
    n = int(both.sum())
    if n == 0:
        return None
    p = mcnemar_exact(int((before & ~after).sum()), int((after & ~before).sum()))
    b, a = float(before.mean()), float(after.mean())
    worse_sig = a < b and p < alpha
    worse_tol = b - a > tolerance
    why = []
    if worse_sig:
        why.append(f"significantly lower (McNemar p = {p:.3g} < {alpha})")
    if worse_tol:
        why.append(f"dropped {100 * (b - a):.1f} points > tolerance {100 * tolerance:.1f}")
    failed = worse_sig or worse_tol
    return Finding(name, info.label, b, a, n, p, failed, "; ".join(why), info.display)


def _quality_findings(
    run: Run, baseline: dict[str, Any], catalog: MetricCatalog, tolerances: dict[str, float]
) -> list[Finding]:
    """Each stored quality mean against the run's: a failure when it got worse, in the
    metric's direction, by more than its tolerance."""
    current = {
        (r["defense"], r["metric"]): r
        for r in run.rows
        if r["scope"] == "defense" and r["value"] is not None
    }
    findings = []
    for defense, metrics in baseline.get("quality", {}).items():
        for metric, stored in metrics.items():
            row = current.get((defense, metric))
            if row is None:
                raise PrivbenchError(f"{run.source} has no {metric} for {defense}")
            info = catalog[metric]
            drop = info.oriented(stored["mean"]) - info.oriented(row["value"])
            limit = tolerances.get(metric, 0.0)
            failed = drop > limit
            why = f"dropped {drop:.4g} > tolerance {limit:g}" if failed else ""
            findings.append(
                Finding(
                    defense,
                    metric,
                    stored["mean"],
                    row["value"],
                    row["n"],
                    None,
                    failed,
                    why,
                    info.display,
                )
            )
    return findings


def check(
    run: Run,
    baseline: dict[str, Any],
    alpha: float = 0.05,
    tolerance: float = 0.05,
    quality_tolerance: dict[str, float] | None = None,
) -> list[Finding]:
    """Every baseline cell and quality mean against ``run``; a Finding fails when it got
    worse as the module docstring says (quality tolerances: each metric's declared
    ``gate_tolerance``, replaced by ``quality_tolerance``). A baseline cell the run lacks is an
    error."""
    _check_same_setting(run, baseline)
    catalog = MetricCatalog.of_run(run.manifest, run.rows)
    declared = {m: catalog[m].gate_tolerance for m in gated_quality(catalog)}
    tolerances = {m: t for m, t in declared.items() if t is not None}
    tolerances.update(quality_tolerance or {})
    info = catalog.outcome_metric()
    cells = [
        _cell_finding(run, name, cell, alpha, tolerance, info)
        for name, cell in baseline["cells"].items()
    ]
    findings = [f for f in cells if f is not None]
    return findings + _quality_findings(run, baseline, catalog, tolerances)


def render(findings: list[Finding]) -> str:
    """One line per finding, failures first."""
    lines = []
    for f in sorted(findings, key=lambda f: not f.failed):
        percent = f.display.style == "percent"
        scale, unit = (100.0, " %") if percent else (1.0, "")
        status = "FAIL" if f.failed else "ok"
        p = "" if f.p is None else f", p = {f.p:.3g}"
        lines.append(
            f"{status:4} {f.cell}: {f.metric} {scale * f.before:.4g} → {scale * f.after:.4g}{unit}"
            f" (n = {f.n}{p})" + (f": {f.why}" if f.why else "")
        )
    failed = sum(f.failed for f in findings)
    lines.append(
        f"privbench check: {failed} of {len(findings)} checks got worse"
        if failed
        else f"privbench check: all {len(findings)} checks pass"
    )
    return "\n".join(lines)
