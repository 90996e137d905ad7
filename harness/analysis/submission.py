"""Submission archives: one finished run packed with everything needed to judge and merge it.

``privbench submit RUN_DIR`` writes a ``.tar.gz`` holding the run's manifest, metric rows,
per-image records, per-image quality and sample thumbnails under ``run/``, the suite files it
ran (when they still hash to the run's suite sha256) under ``suite/``, optionally the plugins'
source under ``source/``, and ``submission.json``: the suite hash, the data fingerprint and
protocol, each plugin's distribution name, version and the sha256 of its source files, the
environment the run had, and the sha256 of every other member.

Reading an archive verifies every member against those digests and refuses unlisted, missing
or unsafe members. The digests catch damage, not forgery: whoever trusts a submission reruns
its suite with the plugin whose source hashes it names.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import __version__
from harness.core.errors import PrivbenchError
from harness.runs.archive import (
    ARCHIVE_SUFFIXES,
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    RUN_CONTENT,
    RUN_PREFIX,
    sha256_hex,
)
from harness.runs.folder import load_run


def _run_members(run_dir: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in RUN_CONTENT:
        path = run_dir / name
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in found:
            if p.is_file():
                out[f"{RUN_PREFIX}/{p.relative_to(run_dir).as_posix()}"] = p.read_bytes()
    return out


def _suite_members(manifest: dict[str, Any]) -> tuple[dict[str, bytes], str]:
    """The suite's files, if they still are the ones the run used, and what was done."""
    from harness.engine.suite import load_suite

    suite = manifest.get("suite", {})
    path = suite.get("path")
    try:
        current = load_suite(path).sha256 if path else None
    except (PrivbenchError, OSError):
        current = None
    if current != suite.get("sha256"):
        return {}, "not included: the suite file is gone or has changed since the run"
    files = [Path(f) for f in suite.get("files", [])]
    if len({f.name for f in files}) != len(files):
        return {}, "not included: two of its files share a name"
    return {f"suite/{f.name}": f.read_bytes() for f in files}, "included under suite/"


def _source_members(plugins: list[dict[str, Any]]) -> dict[str, bytes]:
    from harness.runs.plugins import package_root, source_files

    out: dict[str, bytes] = {}
    for plugin in plugins:
        for provided in plugin["provides"].values():
            for method in provided:
                module = method["class"].rsplit(".", 1)[0]
                base = package_root(module).parent
                for rel in source_files(module):
                    out[f"source/{plugin['distribution']}/{rel}"] = (base / rel).read_bytes()
    return out


def pack(run_dir: Path, output: Path | None = None, with_source: bool = False) -> Path:
    """Write the submission archive of the finished run ``run_dir``; returns its path."""
    from harness.runs.plugins import verify_installed

    run_dir = Path(run_dir)
    manifest, _ = load_run(run_dir)
    if manifest.get("status") != "complete":
        raise PrivbenchError(
            f"{run_dir} is {manifest.get('status')!r}, not complete: only a finished run "
            "without failures can be submitted"
        )
    if manifest.get("smoke"):
        raise PrivbenchError(
            f"{run_dir} is a smoke run (--smoke): its numbers measure nothing; submit a full run"
        )
    if "plugins" not in manifest:
        raise PrivbenchError(
            f"{run_dir} was made by a privbench that did not record its plugins; run it again"
        )
    plugins = manifest["plugins"]
    verify_installed(plugins)
    members = _run_members(run_dir)
    suite_files, suite_note = _suite_members(manifest)
    members.update(suite_files)
    if with_source:
        members.update(_source_members(plugins))
    ds = manifest.get("dataset", {})
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(),
        "packed_by": f"privbench {__version__}",
        "run_id": manifest.get("run_id"),
        "suite": {
            "name": manifest.get("suite", {}).get("name"),
            "sha256": manifest.get("suite", {}).get("sha256"),
            "files": suite_note,
        },
        "data": {
            "fingerprint": ds.get("fingerprint"),
            "protocol": ds.get("protocol"),
            "dataset": manifest.get("config", {}).get("dataset"),
        },
        "defenses": [d["label"] for d in manifest.get("config", {}).get("defenses", [])],
        "plugins": plugins,
        "source_included": with_source,
        "environment": {
            "privbench": manifest.get("privbench_version"),
            "git": manifest.get("git"),
            "packages": manifest.get("packages"),
            "machine": manifest.get("machine"),
        },
        "files": {name: sha256_hex(data) for name, data in sorted(members.items())},
    }
    members[INDEX] = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
    if output is None:
        output = Path(f"{manifest['suite']['name']}-{manifest['run_id']}.tar.gz")
    output = Path(output)
    if not str(output).endswith(ARCHIVE_SUFFIXES):
        raise PrivbenchError(f"{output}: name the archive *.tar.gz")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name in [INDEX, *sorted(set(members) - {INDEX})]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(members[name]), 0o644
            tar.addfile(info, io.BytesIO(members[name]))
    partial.replace(output)
    return output
