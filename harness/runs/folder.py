"""A finished run read back from its folder (or from a submission archive)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import PrivbenchError
from harness.core.files import read_jsonl
from harness.runs.archive import run_folder
from harness.runs.outcomes import Outcomes, load_outcomes, load_quality

Row = dict[str, Any]


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[Row]]:
    """Read a run folder's manifest and results."""

    manifest_path, results_path = run_dir / "manifest.json", run_dir / "results.jsonl"
    for p in (manifest_path, results_path):
        if not p.is_file():
            raise PrivbenchError(
                f"{p} not found: {run_dir} is not a privbench run folder "
                "(expected manifest.json and results.jsonl)"
            )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        rows = read_jsonl(results_path)
    except (json.JSONDecodeError, ValueError) as exc:
        raise PrivbenchError(f"{run_dir}: {exc}") from None
    return manifest, rows


@dataclass
class Run:
    """A run read back: manifest, metric rows, per-image outcomes and quality. ``path`` is the
    folder its files are read from; ``source`` what the user named (the folder, or a submission
    archive verified and unpacked into ``path``)."""

    path: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]
    outcomes: Outcomes
    quality: dict[str, dict[str, dict[str, float]]]
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = self.path

    @classmethod
    def load(cls, path: Path) -> Run:
        """A run folder, or a submission archive (``privbench submit``)."""
        folder = run_folder(Path(path))
        manifest, rows = load_run(folder)
        defenses = list(dict.fromkeys(r["defense"] for r in rows if r["defense"]))
        return cls(
            folder,
            manifest,
            rows,
            load_outcomes(folder, rows),
            load_quality(folder, defenses),
            Path(path),
        )

    def configs(self, kind: str) -> dict[str, dict[str, Any]]:
        """label → {name, params} of the run's recognizers or counter_attacks."""
        return {
            c["label"]: {"name": c["name"], "params": c["params"]}
            for c in self.manifest.get("config", {}).get(kind, [])
        }
