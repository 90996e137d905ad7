"""Reading a baseline file (``privbench baseline``) that may have been changed by hand or by
someone else: bounded in size and nesting, and checked field by field before ``check`` uses it.

A baseline that fails these checks is refused with a PrivbenchError naming the file, the cell
and the field; it can never make ``check`` pass.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import PrivbenchError
from harness.core.files import read_regular_file
from harness.core.limits import BASELINE_BYTES, shorten
from harness.metrics import legacy
from harness.runs.validate import fits

HEX64 = re.compile(r"[0-9a-f]{64}")
CELL_TEXT = ("defense", "counter_attack", "recognizer")
BASELINE_SCHEMA = 1


class BaselineError(PrivbenchError):
    """A baseline file that is not one ``privbench baseline`` wrote (or that was changed)."""


def read_baseline(path: Path, limit: int | None = None) -> dict[str, Any]:
    """The baseline in ``path``, read within :data:`BASELINE_BYTES` (or ``limit``) and
    validated by :func:`validate_baseline`."""
    data = read_regular_file(path, BASELINE_BYTES.value(limit), "baseline file")
    try:
        baseline = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BaselineError(
            f"{path}: not a privbench baseline ({shorten(str(exc), 200)})"
        ) from None
    except RecursionError:
        raise BaselineError(f"{path}: not a privbench baseline (JSON nested too deeply)") from None
    validate_baseline(baseline, path)
    return baseline


def _fail(path: Path, where: str, why: str) -> BaselineError:
    return BaselineError(f"{path}: {where}: {why}; make the baseline again with privbench baseline")


def _number(value: Any) -> bool:
    return fits(value, (float,))


def _count(value: Any) -> bool:
    return fits(value, (int,)) and value >= 0


def validate_baseline(baseline: Any, path: Path) -> None:
    """BaselineError unless ``baseline`` has the shape :func:`harness.analysis.gate.make_baseline`
    gives: a JSON object with ``schema``, ``suite``, ``protocol``, configs, cells and quality
    means, each field of its type, every number finite and in range, every bit vector as long
    as its cell's ``n_probes``."""
    if not isinstance(baseline, dict):
        raise _fail(path, "the file", "a JSON object is expected")
    if baseline.get("schema") != BASELINE_SCHEMA:
        raise BaselineError(
            f"{path}: baseline schema {shorten(repr(baseline.get('schema')), 40)} is not "
            f"{BASELINE_SCHEMA}: make it again with this privbench (privbench baseline RUN > "
            "baseline.json)"
        )
    for key in ("suite", "protocol", "cells"):
        if key not in baseline:
            raise _fail(path, f"field {key!r}", "missing")
    for key in ("suite", "suite_sha256", "run_id", "privbench_version"):
        if baseline.get(key) is not None and not isinstance(baseline[key], str):
            raise _fail(path, f"field {key!r}", "text (or null) expected")
    if not isinstance(baseline["protocol"], dict):
        raise _fail(path, "field 'protocol'", "a JSON object expected")
    for kind in ("recognizers", "counter_attacks"):
        _check_configs(baseline.get(kind), path, kind)
    cells = baseline["cells"]
    if not isinstance(cells, dict) or not cells:
        raise _fail(path, "field 'cells'", "a non-empty JSON object of cells expected")
    for name, cell in cells.items():
        _check_cell(cell, path, f"cell {shorten(name, 120)!r}")
    _check_quality(baseline.get("quality", {}), path)


def _check_configs(items: Any, path: Path, kind: str) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        raise _fail(path, f"field {kind!r}", "a list of configs expected")
    for i, item in enumerate(items):
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("label"), str)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("params"), dict)
        )
        if not ok:
            raise _fail(path, f"{kind}[{i}]", "{label: text, name: text, params: object} expected")


def _check_cell(cell: Any, path: Path, where: str) -> None:
    if not isinstance(cell, dict):
        raise _fail(path, where, "a JSON object expected")
    for key in CELL_TEXT:
        if not isinstance(cell.get(key), str):
            raise _fail(path, f"{where}, field {key!r}", "text expected")
    n = cell.get("n_probes")
    if not _count(n):
        raise _fail(path, f"{where}, field 'n_probes'", f"a whole number ≥ 0 expected, got {n!r}")
    if not isinstance(cell.get("ids_sha256"), str) or not HEX64.fullmatch(cell["ids_sha256"]):
        raise _fail(path, f"{where}, field 'ids_sha256'", "64 lowercase hex digits expected")
    eligible = _bits(cell.get("eligible"), n, path, f"{where}, field 'eligible'")
    fooled = _bits(cell.get("fooled"), n, path, f"{where}, field 'fooled'")
    rate = cell.get(legacy.OUTCOME_METRIC)
    field = f"{where}, field {legacy.OUTCOME_METRIC!r}"
    if not _number(rate) or not 0 <= rate <= 1:
        raise _fail(
            path, field, f"a finite number in [0, 1] expected, got {shorten(repr(rate), 40)}"
        )
    if abs(rate - fooled.sum() / max(1, eligible.sum())) > 1e-9:
        raise _fail(path, field, f"{rate!r} is not the share of fooled among eligible probes")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """The first ``n`` bits packed (numpy's ``packbits``) in the base64 ``text``, as bools."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def _bits(text: Any, n: int, path: Path, where: str) -> np.ndarray:
    """The ``n`` bits packed in the base64 ``text``; BaselineError unless it decodes to
    exactly the bytes ``n`` bits take, with the padding bits after the ``n``-th zero."""
    if not isinstance(text, str):
        raise _fail(path, where, "base64 text expected")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(path, where, "not valid base64") from None
    if len(raw) != (n + 7) // 8:
        raise _fail(path, where, f"{len(raw)} bytes of bits, but n_probes {n} takes {(n + 7) // 8}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits[n:].any():
        raise _fail(path, where, f"bits set after the n_probes = {n} probes")
    return bits[:n].astype(bool)


def _check_quality(quality: Any, path: Path) -> None:
    if not isinstance(quality, dict):
        raise _fail(path, "field 'quality'", "a JSON object expected")
    for defense, metrics in quality.items():
        if not isinstance(metrics, dict):
            raise _fail(path, f"quality of {shorten(defense, 80)!r}", "a JSON object expected")
        for metric, stored in metrics.items():
            where = f"quality {shorten(metric, 40)!r} of {shorten(defense, 80)!r}"
            if not isinstance(stored, dict):
                raise _fail(path, where, "{mean: number, n: count} expected")
            if not _number(stored.get("mean")):
                raise _fail(path, f"{where}, field 'mean'", "a finite number expected")
            if not _count(stored.get("n")):
                raise _fail(path, f"{where}, field 'n'", "a whole number ≥ 0 expected")
            for bound in ("ci_low", "ci_high"):
                if bound in stored and not _number(stored[bound]):
                    raise _fail(path, f"{where}, field {bound!r}", "a finite number expected")
