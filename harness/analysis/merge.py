"""One leaderboard from several runs or submission archives (``privbench leaderboard --merge``).

Rows from different runs can share a ranking only when they were measured the same way: the
same images (data fingerprint, protocol, data-set configuration, seed, upload), the same
recognizers and counter-attacks under the same labels (a worst case over fewer moves is not
the same number), the same metrics and quality floor, and the same recognizers' clean scores
(the same models). Anything else is refused, naming the first difference. A defense config
label that appears in two runs must have the same configuration; it is then taken from the
first run that holds it.

The merged run is a run folder of its own (manifest, results, per-image records and quality,
sample thumbnails), so ``report``, ``compare`` and ``check`` work on it; its manifest lists
where each row came from.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.compare import check_compatible
from harness.boards.leaderboard import render_markdown
from harness.core.errors import PrivbenchError
from harness.core.paths import check_apart
from harness.runs.folder import Run, RunFolder
from harness.runs.lock import RunLock
from harness.runs.manifest import SCHEMA_VERSION, Manifest, rows_schema
from harness.runs.outcomes import Outcomes
from harness.runs.plugins import PRIVBENCH_DISTRIBUTION
from harness.runs.replace import (
    ReplaceRefusedError,
    discard,
    made_by_privbench,
    move_aside,
    put_back,
)
from harness.runs.sealed import check_finished, check_sealed

HOST_FIELDS = ("device", "cpu", "cores", "torch_threads", "gpu")


@dataclass
class Merged:
    """The merged run: its manifest, rows, per-image outcomes, and which source holds each
    defense config."""

    manifest: dict[str, Any]
    rows: list[dict[str, Any]]
    outcomes: Outcomes
    runs: list[Run]
    owner: dict[str, Run] = field(default_factory=dict)


def _labels(run: Run, kind: str) -> list[str]:
    return [c["label"] for c in run.manifest.get("config", {}).get(kind, [])]


def check_mergeable(a: Run, b: Run) -> None:
    """PrivbenchError naming the first reason rows of ``a`` and ``b`` cannot share a ranking."""
    for run in (a, b):
        check_finished(Path(str(run.source)), run.path, run.info, "merged")
        if run.manifest.get("smoke"):
            raise PrivbenchError(f"{run.source} is a smoke run (--smoke): it cannot be merged")
    check_compatible(a, b)
    ca, cb = a.manifest.get("config", {}), b.manifest.get("config", {})
    facts = {
        "results schema": (
            rows_schema(a.manifest.get("schema_version")),
            rows_schema(b.manifest.get("schema_version")),
        ),
        "seed": (ca.get("seed"), cb.get("seed")),
        "metrics": (ca.get("metrics"), cb.get("metrics")),
        "quality floor": (ca.get("quality_floor"), cb.get("quality_floor")),
        "precision": (ca.get("precision"), cb.get("precision")),
    }
    for what, (x, y) in facts.items():
        if x != y:
            raise PrivbenchError(f"{a.source} and {b.source} differ in {what} ({x!r} vs {y!r})")
    for kind, noun in (("recognizers", "recognizer"), ("counter_attacks", "counter-attack")):
        la, lb = _labels(a, kind), _labels(b, kind)
        for x, y, has, lacks in ((la, lb, a, b), (lb, la, b, a)):
            missing = [label for label in x if label not in y]
            if missing:
                raise PrivbenchError(
                    f"{lacks.source} has no {noun} {missing[0]!r}, which {has.source} has: "
                    f"every row of one leaderboard must face the same {noun}s"
                )
    clean_a, clean_b = _clean_scores(a), _clean_scores(b)
    for key in sorted(set(clean_a) & set(clean_b)):
        if clean_a[key] != clean_b[key]:
            raise PrivbenchError(
                f"recognizer {key[0]!r} scored {key[1]} = {clean_a[key]} on clean photos in "
                f"{a.source} but {clean_b[key]} in {b.source}: not the same model"
            )


def _check_same_row(
    label: str, a: Run, b: Run, config_a: dict[str, Any], config_b: dict[str, Any]
) -> None:
    """A defense config both runs hold must be configured alike and, on the same images
    against the same recognizers and counter-attacks, give the same per-image outcomes;
    otherwise some code differs between the runs and none of their rows can be compared."""
    if config_a != config_b:
        raise PrivbenchError(
            f"defense config {label!r} is {config_a} in {a.source} but {config_b} in "
            f"{b.source}; rename one"
        )
    for key in sorted(k for k in a.outcomes if k[0] == label):
        oa, ob = a.outcomes[key], b.outcomes.get(key)
        same = ob is not None and oa.ids == ob.ids
        if not (same and (oa.fooled == ob.fooled).all() and (oa.eligible == ob.eligible).all()):
            raise PrivbenchError(
                f"cell {' × '.join(key)} gives different per-image outcomes in {a.source} and "
                f"{b.source}: the same config on the same images, so the code or models "
                "differ between the runs and their rows cannot be ranked together"
            )


def _clean_scores(run: Run) -> dict[tuple[str, str], Any]:
    return {
        (r["recognizer"], r["metric"]): r["value"] for r in run.rows if r["scope"] == "recognizer"
    }


def _host(run: Run) -> dict[str, Any]:
    machine = run.manifest.get("machine", {})
    return {k: machine.get(k) for k in HOST_FIELDS if machine.get(k) is not None}


def _source_entry(run: Run, defenses: list[str]) -> dict[str, Any]:
    m = run.manifest
    return {
        "source": str(run.source),
        "run_id": m.get("run_id"),
        "suite": m.get("suite", {}).get("name"),
        "suite_sha256": m.get("suite", {}).get("sha256"),
        "privbench_version": m.get("privbench_version"),
        "git": m.get("git"),
        "plugins": [
            {k: p[k] for k in ("distribution", "version", "sha256")} for p in m.get("plugins", [])
        ],
        "host": _host(run),
        "finished": m.get("finished"),
        "defenses": defenses,
    }


def merge_runs(runs: list[Run], name: str | None = None) -> Merged:
    """Merge ``runs`` (at least two) into one run, refusing incompatible ones."""
    if len(runs) < 2:
        raise PrivbenchError("--merge needs at least two runs or submission archives")
    for run in runs:
        check_sealed(Path(str(run.source)), run.folder, run.info, "merged")
    first = runs[0]
    for other in runs[1:]:
        check_mergeable(first, other)
    owner: dict[str, Run] = {}
    configs: dict[str, dict[str, Any]] = {}
    taken: dict[int, list[str]] = {}
    for i, run in enumerate(runs):
        taken[i] = []
        for d in run.manifest["config"].get("defenses", []):
            label = d["label"]
            if label in configs:
                _check_same_row(label, owner[label], run, configs[label], d)
                continue
            configs[label], owner[label] = d, run
            taken[i].append(label)
    rows = [r for r in first.rows if r["scope"] == "recognizer"]
    outcomes: Outcomes = {}
    for label, run in owner.items():
        rows += [r for r in run.rows if r["scope"] != "recognizer" and r["defense"] == label]
        outcomes.update({k: v for k, v in run.outcomes.items() if k[0] == label})
    manifest = _merged_manifest(runs, owner, configs, taken, name)
    return Merged(manifest, rows, outcomes, runs, owner)


def _plugins(runs: list[Run]) -> list[dict[str, Any]]:
    """The plugins of every run (privbench itself left out), each distinct one once."""
    plugins: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:
        for p in run.manifest.get("plugins", []):
            if p["distribution"] != PRIVBENCH_DISTRIBUTION:
                plugins.setdefault((p["distribution"], p["version"], p["sha256"]), p)
    return list(plugins.values())


def _suite_entry(runs: list[Run], name: str | None) -> dict[str, Any]:
    """The merged run's suite: the sources' names joined (or ``name``), a digest of theirs."""
    suites = [r.manifest.get("suite", {}) for r in runs]
    digest = hashlib.sha256("\0".join(s.get("sha256", "") for s in suites).encode()).hexdigest()
    merged_name = name or "+".join(dict.fromkeys(s.get("name", "?") for s in suites))
    return {"name": merged_name, "path": None, "sha256": digest, "files": []}


def _merged_manifest(
    runs: list[Run],
    owner: dict[str, Run],
    configs: dict[str, dict[str, Any]],
    taken: dict[int, list[str]],
    name: str | None,
) -> dict[str, Any]:
    manifest = copy.deepcopy(runs[0].manifest)
    manifest.pop("digests", None)  # the first source's files; write_merged records its own
    manifest["schema_version"] = SCHEMA_VERSION  # write_merged names every file as it does now
    suites = [r.manifest.get("suite", {}) for r in runs]
    ids = hashlib.sha256("\0".join(str(r.manifest.get("run_id")) for r in runs).encode())
    suite = _suite_entry(runs, name)
    manifest.update(
        {
            "run_id": f"merged-{ids.hexdigest()[:12]}",
            "status": "complete",
            "suite": suite,
            "roles": {
                label: roles
                for label, run in owner.items()
                if (roles := run.manifest.get("roles", {}).get(label))
            },
            "plugins": _plugins(runs),
            "merged_from": [_source_entry(run, taken[i]) for i, run in enumerate(runs)],
            "duration_s": round(sum(r.manifest.get("duration_s") or 0 for r in runs), 3),
            "failures": [f for r in runs for f in r.manifest.get("failures") or []],
            "skipped": [s for r in runs for s in r.manifest.get("skipped") or []],
        }
    )
    manifest["config"]["name"] = suite["name"]
    manifest["config"]["defenses"] = list(configs.values())
    manifest["config"]["description"] = (
        f"One leaderboard from {len(runs)} runs measured on the same images with the same "
        "recognizers and counter-attacks: "
        + "; ".join(f"{s.get('name')} ({len(taken[i])} configs)" for i, s in enumerate(suites))
        + "."
    )
    return manifest


def write_merged(merged: Merged, target: Path) -> Path:
    """Write the merged run as a run folder in ``target``: a new or empty folder, or the
    folder of an earlier merge, which is replaced (moved aside, deleted once the new one is
    written). Anything else there, and a target that holds or is inside a source, is refused.
    """
    target = Path(os.path.abspath(target))
    check_apart(target, [p for r in merged.runs for p in (Path(str(r.source)), r.path)])
    with RunLock(target.parent, target.name):
        existed = target.is_dir()
        aside = _clear(target)
        try:
            _write_folder(merged, RunFolder(target))
        except BaseException:
            _undo(target, aside, existed)
            raise
        if aside is not None:
            discard(aside)
    return target


def _undo(target: Path, aside: Path | None, existed: bool) -> None:
    """Leave ``target`` as it was before a failed write: the earlier merged run put back, an
    empty folder emptied again, a folder this merge made removed."""
    if aside is not None:
        put_back(aside, target)
    elif existed:
        for part in target.iterdir():
            if part.is_dir() and not part.is_symlink():
                shutil.rmtree(part, ignore_errors=True)
            else:
                part.unlink(missing_ok=True)
    else:
        shutil.rmtree(target, ignore_errors=True)


def _clear(target: Path) -> Path | None:
    """Make ``target`` a new empty folder, moving an earlier merged run there aside (its new
    name is returned; None when there was none)."""
    hint = "choose a new folder for -o, or move it away yourself"
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        return None
    aside = None
    if os.path.lexists(target):
        manifest = made_by_privbench(target, hint)
        if "merged_from" not in manifest.extra:
            raise ReplaceRefusedError(
                f"{target} is a run folder, but not one that privbench leaderboard --merge "
                f"wrote; merging replaces only its own output: {hint}"
            )
        aside = move_aside(target)
    try:
        target.mkdir(parents=True)
    except BaseException:
        if aside is not None:
            put_back(aside, target)
        raise
    return aside


def _write_folder(merged: Merged, out: RunFolder) -> None:
    """The merged run's files in the empty folder ``out``; the manifest last, with the
    digests of the results and records written."""
    clean = [r.folder.clean_samples_dir for r in merged.runs]
    if all(c.is_dir() for c in clean):
        shutil.copytree(clean[0], out.clean_samples_dir)
    attacks = {a for _, a, _ in merged.outcomes}
    for label, run in merged.owner.items():
        # each file gets the name this release gives it (a source may name it by an older
        # schema: runs.folder.legacy_slug)
        for d, attack, recognizer in merged.outcomes:
            if d == label:
                src = run.folder.cell_records_file(d, attack, recognizer)
                _copy(src, out.cell_records_file(d, attack, recognizer))
        _copy(run.folder.quality_file(label), out.quality_file(label))
        _copy_samples(run.folder, out, label, attacks)
    out.write_rows(merged.rows)
    manifest = Manifest.from_json(merged.manifest)
    manifest.digests = out.digests()
    out.write_manifest(manifest)
    out.write_leaderboard(render_markdown(merged.manifest, merged.rows, merged.outcomes))


def _copy(path: Path, target: Path) -> None:
    if path.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _copy_samples(source: RunFolder, out: RunFolder, label: str, attacks: set[str]) -> None:
    """The thumbnails of defense ``label``: its own folders as they are, and one folder per
    counter-attack under the name ``out`` gives it."""
    samples = source.samples_dir(label)
    if not samples.is_dir():
        return
    by_attack = {source.samples_dir(label, a).name: a for a in attacks}
    for part in sorted(samples.iterdir()):
        attack = by_attack.get(part.name)
        target = out.samples_dir(label, attack) if attack else out.samples_dir(label) / part.name
        if part.is_dir():
            shutil.copytree(part, target)
        else:
            _copy(part, target)
