"""The CI regression gate: ``privbench baseline RUN > baseline.json`` and ``privbench check RUN
--baseline baseline.json``.

A baseline stores, per chosen cell, the per-image outcome bits (which probes were recognised
when clean, which were fooled; packed, base64) with a digest of the probe ids, and per defense
the mean quality (SSIM, PSNR) with its n. ``check`` pairs a new run's outcomes with the stored
bits: a cell fails when its fooling rate dropped significantly (exact McNemar, two-sided, at
``alpha``, and lower) or by more than ``tolerance``; a quality mean fails when it dropped by
more than its tolerance. A baseline of another suite, data set, protocol or recognizer and
counter-attack configuration is refused.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.compare import protocol_of
from harness.core.errors import PrivbenchError
from harness.metrics.stats import mcnemar_exact
from harness.runs.folder import Run
from harness.runs.outcomes import CellOutcome

BASELINE_SCHEMA = 1
QUALITY_METRICS = ("ssim", "psnr")


def _pack(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(bits.astype(bool)).tobytes()).decode("ascii")


def _unpack(text: str, n: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw)[:n].astype(bool)


def ids_digest(ids: tuple[str, ...]) -> str:
    """sha256 of the probe ids in order (the outcome bits are aligned to them)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def make_baseline(run: Run, cells: list[str] | None = None) -> dict[str, Any]:
    """The baseline of ``run``: every cell, or those whose 'defense × counter-attack ×
    recognizer' matches one of the shell patterns in ``cells``."""
    if run.manifest.get("smoke"):
        raise PrivbenchError(f"{run.source} is a smoke run (--smoke): it cannot be a baseline")
    chosen = {}
    for (d, a, r), outcome in run.outcomes.items():
        name = f"{d} × {a} × {r}"
        if cells and not any(fnmatch.fnmatchcase(name, pat) for pat in cells):
            continue
        chosen[name] = {
            "defense": d,
            "counter_attack": a,
            "recognizer": r,
            "n_probes": len(outcome.ids),
            "ids_sha256": ids_digest(outcome.ids),
            "eligible": _pack(outcome.eligible),
            "fooled": _pack(outcome.fooled),
            "fooling_rate": float(outcome.fooled.sum() / max(1, outcome.eligible.sum())),
        }
    if not chosen:
        raise PrivbenchError(
            f"no cell of {run.source} matches {cells}; cells look like 'defense × counter-attack "
            "× recognizer' (shell patterns, e.g. 'krtio* × * × sface')"
        )
    defenses = {v["defense"] for v in chosen.values()}
    quality = {
        r["defense"]: {} for r in run.rows if r["scope"] == "defense" and r["defense"] in defenses
    }
    for r in run.rows:
        if (
            r["scope"] == "defense"
            and r["defense"] in quality
            and r["metric"] in QUALITY_METRICS
            and r["value"] is not None
        ):
            quality[r["defense"]][r["metric"]] = {"mean": r["value"], "n": r["n"]}
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
        "quality": quality,
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


def check(
    run: Run,
    baseline: dict[str, Any],
    alpha: float = 0.05,
    tolerance: float = 0.05,
    quality_tolerance: dict[str, float] | None = None,
) -> list[Finding]:
    """Every baseline cell and quality mean against ``run``; a Finding fails when it got
    worse as the module docstring says. A baseline cell the run lacks is an error."""
    _check_same_setting(run, baseline)
    qtol = {"ssim": 0.01, "psnr": 0.5, **(quality_tolerance or {})}
    findings = []
    for name, cell in baseline["cells"].items():
        key = (cell["defense"], cell["counter_attack"], cell["recognizer"])
        outcome: CellOutcome | None = run.outcomes.get(key)
        if outcome is None:
            raise PrivbenchError(
                f"{run.source} has no cell {name} (the baseline has it): the suite changed, or "
                "the run did not finish it"
            )
        if ids_digest(outcome.ids) != cell["ids_sha256"]:
            raise PrivbenchError(f"cell {name}: the run's probes are not the baseline's")
        eligible = _unpack(cell["eligible"], cell["n_probes"])
        fooled = _unpack(cell["fooled"], cell["n_probes"])
        both = eligible & outcome.eligible
        before, after = fooled[both], outcome.fooled[both]
        n = int(both.sum())
        if n == 0:
            continue
        lost, gained = int((before & ~after).sum()), int((after & ~before).sum())
        p = mcnemar_exact(lost, gained)
        b, a = float(before.mean()), float(after.mean())
        worse_sig = a < b and p < alpha
        worse_tol = b - a > tolerance
        why = []
        if worse_sig:
            why.append(f"significantly lower (McNemar p = {p:.3g} < {alpha})")
        if worse_tol:
            why.append(f"dropped {100 * (b - a):.1f} points > tolerance {100 * tolerance:.1f}")
        findings.append(
            Finding(name, "fooling_rate", b, a, n, p, worse_sig or worse_tol, "; ".join(why))
        )
    current = {
        (r["defense"], r["metric"]): r
        for r in run.rows
        if r["scope"] == "defense" and r["value"] is not None
    }
    for defense, metrics in baseline.get("quality", {}).items():
        for metric, stored in metrics.items():
            row = current.get((defense, metric))
            if row is None:
                raise PrivbenchError(f"{run.source} has no {metric} for {defense}")
            drop = stored["mean"] - row["value"]
            failed = drop > qtol.get(metric, 0.0)
            why = f"dropped {drop:.4g} > tolerance {qtol.get(metric, 0.0):g}" if failed else ""
            findings.append(
                Finding(
                    f"{defense}", metric, stored["mean"], row["value"], row["n"], None, failed, why
                )
            )
    return findings


def render(findings: list[Finding]) -> str:
    """One line per finding, failures first."""
    lines = []
    for f in sorted(findings, key=lambda f: not f.failed):
        scale = 100.0 if f.metric == "fooling_rate" else 1.0
        unit = " %" if f.metric == "fooling_rate" else ""
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
