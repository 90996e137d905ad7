"""A run folder: the one place that names its files, reads them and writes them.

``results/<suite>/<run-id>/`` holds ``manifest.json`` (:mod:`harness.runs.manifest`),
``results.jsonl`` (one metric row per line), ``records/<defense>__<counter-attack>__<recognizer>
.jsonl`` (per-image outcomes of each cell), ``records/quality/<defense>.jsonl`` (per-image
quality of each defense config), ``samples/`` (thumbnails: ``clean/``, and per defense config
``protected/``, ``recovered/`` and one folder per counter-attack), ``leaderboard.md`` and, once
``privbench report`` wrote it, ``report.html``; each label in a name as :func:`slug` gives it.
:class:`RunFolder` knows these names;
:class:`Run` is a finished run read back from a folder or a submission archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import PrivbenchError, RunFileError
from harness.core.files import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_json,
    read_jsonl,
    sha256_of,
)
from harness.runs.archive import RUN_PREFIX, is_archive, run_folder
from harness.runs.manifest import SCHEMA_VERSION, Manifest
from harness.runs.outcomes import CellKey, CellOutcome, Outcomes, cell_keys
from harness.runs.validate import check_quality, check_record, check_row

Row = dict[str, Any]
Quality = dict[str, dict[str, dict[str, float]]]  # defense label → metric → {probe id: value}

MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
LEADERBOARD = "leaderboard.md"
REPORT = "report.html"
RECORDS = "records"
QUALITY = "quality"  # under records/
SAMPLES = "samples"
CLEAN = "clean"  # under samples/: the probes as they were
PACKED = (MANIFEST, RESULTS, LEADERBOARD, RECORDS, SAMPLES)  # what a submission archive holds
RUN_ENTRIES = (*PACKED, REPORT)  # everything a run folder holds but privbench's hidden files
THUMBNAIL_SIDE = 128  # the longest side of a sample image in a run folder


HASHED_NAMES_SCHEMA = 3  # the first schema whose file names carry a hash of the label


def file_name_part(text: str) -> str:
    """What a file name can hold of ``text``: each run of other characters becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def legacy_slug(text: str) -> str:
    """A label as a file-name part, as schemas before 3 wrote it: what a file name can hold,
    cut to 80 characters (two labels can share one)."""
    return file_name_part(text)[:80] or "x"


def slug(text: str) -> str:
    """A label as a file-name part: what a file name can hold of it (60 characters at most)
    and the first 8 hex digits of the sha256 of the whole label, so that two labels never
    share a file."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{legacy_slug(text)[:60]}-{digest}"


def resume_command(suite_path: str | None, run_id: str, run_dir: Path | None = None) -> str:
    """The command that finishes a stopped run in its folder (Markdown code), with the results
    root it was written under where ``run_dir`` is known."""
    suite = suite_path or "SUITE"
    if run_dir is None:
        return f"`privbench run {suite} --run-id {run_id} --resume` (with the run's --out)"
    return f"`privbench run {suite} --out {Path(run_dir).parent.parent} --run-id {run_id} --resume`"


def cell_file_stem(defense: str, attack: str, recognizer: str, schema: int = SCHEMA_VERSION) -> str:
    """The records file of one cell, without ``.jsonl``, as a folder of ``schema`` names it."""
    name = slug if schema >= HASHED_NAMES_SCHEMA else legacy_slug
    return f"{name(defense)}__{name(attack)}__{name(recognizer)}"


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder at ``path``: where each is, how it is read and written."""

    path: Path
    schema: int = SCHEMA_VERSION  # the results schema the folder's files are named by

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def name(self, label: str) -> str:
        """``label`` as this folder's file names hold it."""
        return slug(label) if self.schema >= HASHED_NAMES_SCHEMA else legacy_slug(label)

    # -- where ----------------------------------------------------------------------------------
    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS

    @property
    def leaderboard_file(self) -> Path:
        return self.path / LEADERBOARD

    @property
    def report_file(self) -> Path:
        return self.path / REPORT

    @property
    def records_dir(self) -> Path:
        return self.path / RECORDS

    def cell_records_file(self, defense: str, attack: str, recognizer: str) -> Path:
        """The per-image outcomes of one (defense, counter-attack, recognizer) cell."""
        stem = cell_file_stem(defense, attack, recognizer, self.schema)
        return self.records_dir / f"{stem}.jsonl"

    def quality_file(self, defense: str) -> Path:
        """The per-image quality of one defense config."""
        return self.records_dir / QUALITY / f"{self.name(defense)}.jsonl"

    def samples_dir(self, defense: str | None = None, attack: str | None = None) -> Path:
        """Thumbnails: all of them; of one defense config (its ``protected/``, ``recovered/``
        and one folder per counter-attack); or of one counter-attack on it."""
        folder = self.path / SAMPLES
        if defense is not None:
            folder = folder / self.name(defense)
        return folder if attack is None else folder / self.name(attack)

    @property
    def clean_samples_dir(self) -> Path:
        return self.path / SAMPLES / CLEAN

    def packed_files(self) -> list[Path]:
        """The files a submission archive holds, in a fixed order."""
        out: list[Path] = []
        for name in PACKED:
            path = self.path / name
            out += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return [p for p in out if p.is_file()]

    def digests(self) -> dict[str, str]:
        """The sha256 of ``results.jsonl`` and of every file under ``records/``, by path
        relative to the folder (what the manifest records when the run finishes). Symbolic
        links are left out: a run writes none."""
        files = [self.results_file] if self.results_file.is_file() else []
        if self.records_dir.is_dir():
            files += sorted(p for p in self.records_dir.rglob("*") if p.is_file())
        return {
            p.relative_to(self.path).as_posix(): sha256_of(p) for p in files if not p.is_symlink()
        }

    # -- reading --------------------------------------------------------------------------------
    def check(self) -> None:
        """PrivbenchError unless this is a run folder (it has a manifest)."""
        if self.path.is_dir() and not any(self.path.iterdir()):
            raise PrivbenchError(
                f"{self.path} is empty, not a privbench run folder: a run killed before it wrote "
                f"its {MANIFEST} leaves such a "
                "folder; run the suite again with --run-id "
                f"{self.path.name} --overwrite, or remove it"
            )
        if not self.manifest_file.is_file():
            raise PrivbenchError(
                f"{self.manifest_file} not found: {self.path} is not a privbench run folder "
                f"(expected {MANIFEST} and {RESULTS})"
            )

    def read_manifest(self) -> Manifest:
        """The manifest, upgraded to the current shape in memory (the file is left as it is)."""
        self.check()
        return Manifest.from_json(read_json(self.manifest_file), str(self.manifest_file))

    def read_rows(self) -> list[Row]:
        """The metric rows of ``results.jsonl``; none for a run stopped before it wrote any (a
        run killed during its set-up), which readers show as incomplete."""
        self.check()
        if not self.results_file.is_file():
            if self.read_manifest().complete:
                raise PrivbenchError(
                    f"{self.results_file} not found: {self.path} says it is complete but has "
                    "no results"
                )
            return []
        return read_jsonl(self.results_file, check_row)

    def read_outcomes(self, rows: list[Row]) -> Outcomes:
        """The per-image outcomes of every cell of ``rows`` whose records file exists."""
        out: Outcomes = {}
        for key in cell_keys(rows):
            path = self.cell_records_file(*key)
            if path.is_file():
                out[key] = CellOutcome.from_rows(read_jsonl(path, check_record))
        return out

    def read_quality(self, defenses: list[str]) -> Quality:
        """defense label → metric → {probe id: value}, for the defenses whose file exists."""
        out: Quality = {}
        for d in defenses:
            path = self.quality_file(d)
            if not path.is_file():
                continue
            per_metric: dict[str, dict[str, float]] = {}
            for row in read_jsonl(path, check_quality):
                for m, v in row.items():
                    if m != "id":
                        per_metric.setdefault(m, {})[str(row["id"])] = math.nan if v is None else v
            out[d] = per_metric
        return out

    # -- writing (each file atomically) ---------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_json(self.manifest_file, manifest.to_json())

    def write_rows(self, rows: list[Row]) -> None:
        atomic_write_jsonl(self.results_file, rows)

    def write_cell_records(self, key: CellKey, rows: list[Row]) -> None:
        atomic_write_jsonl(self.cell_records_file(*key), rows)

    def write_quality(self, defense: str, rows: list[Row]) -> None:
        atomic_write_jsonl(self.quality_file(defense), rows)

    def write_leaderboard(self, text: str) -> None:
        atomic_write_text(self.leaderboard_file, text)

    def write_report(self, text: str) -> None:
        atomic_write_text(self.report_file, text)

    def write_samples(self, folder: Path | str, images: np.ndarray) -> None:
        """Sample images as ``<folder>/<k>.png``, ``folder`` relative to the run folder (the
        keys of a unit's samples)."""
        write_thumbnails(self.path / folder, images)


def write_thumbnails(folder: Path, images: np.ndarray) -> None:
    """``images`` as ``folder/<k>.png``, downscaled to at most THUMBNAIL_SIDE pixels."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        img = Image.fromarray(np.ascontiguousarray(image))
        if max(img.size) > THUMBNAIL_SIDE:
            img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        tmp, target = folder / f".{k}.png.tmp", folder / f"{k}.png"
        try:
            img.save(tmp, format="PNG")
            tmp.replace(target)
        except OSError as exc:  # a full disk: name the file, leave no partial one
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, str(target)) from exc


@dataclass
class Run:
    """A run read back: its manifest (typed, ``info``; as JSON, ``manifest``), metric rows,
    per-image outcomes and quality. ``path`` is the folder its files are read from; ``source``
    what the user named (the folder, or a submission archive verified and unpacked into
    ``path``)."""

    path: Path
    info: Manifest
    rows: list[Row]
    outcomes: Outcomes
    quality: Quality
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = self.path

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path, self.info.schema_version)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as JSON, in the current shape (what the boards render)."""
        return self.info.to_json()

    @classmethod
    def load(cls, path: Path) -> Run:
        """A run folder, or a submission archive (``privbench submit``)."""
        unpacked = run_folder(Path(path))
        try:
            folder = RunFolder(unpacked)
            info, rows = folder.read_manifest(), folder.read_rows()
            folder = RunFolder(folder.path, info.schema_version)
            defenses = list(dict.fromkeys(r["defense"] for r in rows if r["defense"]))
            outcomes, quality = folder.read_outcomes(rows), folder.read_quality(defenses)
        except RunFileError as exc:
            if unpacked == Path(path):
                raise
            # name the archive's member, not the temporary folder it was unpacked into
            text = str(exc).replace(f"{unpacked}/", f"{path}: {RUN_PREFIX}/")
            raise RunFileError(text) from None
        return cls(folder.path, info, rows, outcomes, quality, Path(path))

    def require_results(self) -> Run:
        """This run, unless it stopped before it measured anything (killed during its set-up):
        then PrivbenchError saying so and how to finish it."""
        if self.rows or self.info.complete:
            return self
        here = None if is_archive(Path(str(self.source))) else self.path
        how = (
            resume_command(self.info.suite.path, self.info.run_id, here)
            if here is not None
            else "--resume on the machine that ran it, then a new submission"
        )
        raise PrivbenchError(
            f"{self.source} is incomplete (status {self.info.status!r}, no results yet): it "
            f"stopped before it measured anything; finish it with {how}"
        )

    def configs(self, kind: str) -> dict[str, dict[str, Any]]:
        """label → {name, params} of the run's recognizers or counter_attacks."""
        return self.info.configs(kind)
