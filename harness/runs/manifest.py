"""A run's ``manifest.json`` as types: what a run folder says about itself.

:data:`SCHEMA_VERSION` numbers the shape of a run folder's files. A manifest written by an
older privbench is read through :func:`upgrade`, in memory (the user's folder is never
rewritten): keys a later release added get what they mean for a run that did not record
them, and entries written in an older form are brought to the current one. ``schema_version``
itself stays what the folder says, because its rows and records are read as they were written.

:meth:`Manifest.to_json` gives the keys in the order the runner has always written them, so
the file a run writes is the same byte for byte.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from harness import __version__
from harness.api.registry import RECOGNIZERS
from harness.core.errors import PrivbenchError, UnknownNameError
from harness.runs.validate import check_manifest

# 2: rows carry ci_level; latency rows the coverage they really have. 3: record and sample
# file names carry a hash of the whole label (runs.folder.slug); older folders are read by
# the names they were written with.
SCHEMA_VERSION = 3
# Schemas that changed only how files are named, with the schema whose rows theirs equal:
# runs of either share one ranking (harness.analysis.merge).
SAME_ROWS_AS = {3: 2}


def rows_schema(version: object) -> object:
    """The schema whose results rows a folder of schema ``version`` writes."""
    return SAME_ROWS_AS.get(version, version) if isinstance(version, int) else version


# Keys later releases added to the manifest, with what they are for a run that lacks them.
ADDED_KEYS: dict[str, Any] = {
    "roles": {},  # no defense named recognizers by role
    "plan": {},
    "stage_seconds": {},
    "failures": [],
    "skipped": [],
    "dataset": {},
    "metrics": {},
    "key": {},
}


@dataclass
class SuiteRef:
    """The suite a run ran: its name, the path it was read from, its sha256 and its files
    (includes too). A merged run has no path and no files."""

    name: str
    path: str | None
    sha256: str
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "files": self.files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteRef:
        return cls(data["name"], data.get("path"), data["sha256"], data.get("files", []))


@dataclass
class CacheCounts:
    """What the run found in the cache, computed, and found damaged (and recomputed)."""

    enabled: bool = True
    hits: int = 0
    misses: int = 0
    damaged_and_recomputed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "hits": self.hits,
            "misses": self.misses,
            "damaged_and_recomputed": self.damaged_and_recomputed,
        }


@dataclass
class Manifest:
    """Everything a run records about itself (docs/architecture.md, "Results").

    Open-ended parts stay JSON: ``config`` (the resolved suite), ``dataset`` (the split's
    sizes, fingerprint and protocol), ``machine``, ``packages``, ``git``, ``plan``, each
    metric's entry in ``metrics``, ``plugins``. ``extra`` keeps keys this release does not know
    (a merged run's ``merged_from``), written after the others."""

    run_id: str
    suite: SuiteRef
    config: dict[str, Any]
    status: str = "running"
    schema_version: int = SCHEMA_VERSION
    privbench_version: str | None = __version__
    recognizer_kinds: dict[str, str] = field(default_factory=dict)
    roles: dict[str, dict[str, str | None]] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    plugins: list[dict[str, Any]] | None = None  # None: made before runs recorded plugins
    packages: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=dict)  # {"source": …}; never the key
    seed: int | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    smoke: dict[str, Any] | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    updated: str | None = None
    duration_s: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cache: CacheCounts | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    finished: str | None = None
    # path in the folder → sha256 of results.jsonl and each records file, recorded when the
    # run finished (harness.runs.sealed). A later addition that needs no upgrade and no new
    # schema: absent (None) in folders written before, left out of to_json() while None, and
    # kept by older releases among the keys they do not know.
    digests: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- what readers ask ---------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def objective(self) -> str:
        return str(self.config.get("objective", "evade"))

    @property
    def fingerprint(self) -> str | None:
        """The data set's fingerprint: equal fingerprints, the same images."""
        return self.dataset.get("fingerprint")

    @property
    def protocol(self) -> str | None:
        return self.dataset.get("protocol")

    @property
    def sample_ids(self) -> list[str]:
        """The ids of the probes whose thumbnails are in the folder's samples."""
        return list(self.dataset.get("samples", []))

    @property
    def defense_labels(self) -> list[str]:
        return [d["label"] for d in self.config.get("defenses", [])]

    def configs(self, kind: str) -> dict[str, dict[str, Any]]:
        """label → {name, params} of the run's ``recognizers``, ``defenses`` or
        ``counter_attacks``."""
        return {
            c["label"]: {"name": c["name"], "params": c["params"]}
            for c in self.config.get(kind, [])
        }

    # -- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The manifest as written: keys in the order runs have always written them."""
        head = {
            "schema_version": self.schema_version,
            "privbench_version": self.privbench_version,
            "run_id": self.run_id,
            "status": self.status,
            "suite": self.suite.to_json(),
            "config": self.config,
            "recognizer_kinds": self.recognizer_kinds,
            "roles": self.roles,
            "git": self.git,
            **({} if self.plugins is None else {"plugins": self.plugins}),
            "packages": self.packages,
            "machine": self.machine,
            "key": self.key,
            "seed": self.seed,
            "metrics": self.metrics,
            "plan": self.plan,
            "started": self.started,
            **({} if self.smoke is None else {"smoke": self.smoke}),
            "dataset": self.dataset,
        }
        tail = {
            **({} if self.updated is None else {"updated": self.updated}),
            "duration_s": self.duration_s,
            "stage_seconds": self.stage_seconds,
            **({} if self.cache is None else {"cache": self.cache.to_json()}),
            "failures": self.failures,
            "skipped": self.skipped,
            **({} if self.finished is None else {"finished": self.finished}),
            **({} if self.digests is None else {"digests": self.digests}),
        }
        return {**head, **tail, **self.extra}

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str = "manifest") -> Manifest:
        """A manifest read from a folder, upgraded to the current shape (see :func:`upgrade`);
        ``source`` names it in errors."""
        data = upgrade(raw, source)
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        try:
            cache = data.get("cache")
            return cls(
                **{k: data[k] for k in known - {"suite", "cache"} if k in data},
                suite=SuiteRef.from_json(data["suite"]),
                cache=None if cache is None else CacheCounts(**cache),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise PrivbenchError(f"{source}: not a privbench manifest ({exc!r})") from None


def upgrade(raw: dict[str, Any], source: str = "manifest") -> dict[str, Any]:
    """``raw`` (a manifest as read, left unchanged) in the current shape: failures by scope,
    and every key a later release added, with what it is for a run that did not record it.
    PrivbenchError for a manifest of a newer schema, or not a manifest at all."""
    if not isinstance(raw, dict) or not {"run_id", "suite", "config"} <= set(raw):
        raise PrivbenchError(f"{source}: not a privbench manifest (no run_id, suite or config)")
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PrivbenchError(f"{source}: schema_version {version!r} is not a privbench schema")
    if version > SCHEMA_VERSION:
        raise PrivbenchError(
            f"{source} was written by a newer privbench (results schema {version}); privbench "
            f"{__version__} reads schemas up to {SCHEMA_VERSION}: upgrade privbench to read it"
        )
    data = copy.deepcopy(raw)
    data["schema_version"] = version  # the first releases wrote none: schema 1
    for key, default in ADDED_KEYS.items():
        if data.get(key) is None:
            data[key] = copy.deepcopy(default)
    check_manifest(data, f"{source}: not a privbench manifest")
    data["failures"] = [_failure_by_scope(f) for f in data["failures"]]
    data.setdefault("seed", data["config"].get("seed"))
    if "recognizer_kinds" not in data:
        data["recognizer_kinds"] = recognizer_kinds(data["config"])
    return data


def _failure_by_scope(entry: dict[str, Any]) -> dict[str, Any]:
    """A failure as the first releases wrote them (``defense``, ``error``) as they are written
    now (``scope``, ``name``, ``error``): ``(run)`` was the run itself, else a defense config."""
    if "scope" in entry:
        return entry
    name = str(entry.get("defense", "?"))
    scope = "run" if name == "(run)" else "defense"
    return {"scope": scope, "name": name, "error": str(entry.get("error", "?"))}


def recognizer_kinds(config: dict[str, Any]) -> dict[str, str]:
    """Recognizer label → kind for a run that did not record them, from the methods installed
    here (a recognizer that is not installed is left out)."""
    kinds = {}
    for cfg in config.get("recognizers", []):
        try:
            kinds[cfg["label"]] = RECOGNIZERS.get(cfg["name"]).kind
        except UnknownNameError:
            continue
    return kinds
