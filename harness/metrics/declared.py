"""What a run's boards know about its metrics: each one's declaration, read from the run's
manifest (:meth:`harness.api.contracts.Metric.describe`), so that leaderboards, the report,
``compare`` and ``check`` select metrics by role and print them by their declared format, and
render a run folder whether or not its metrics are installed here. Folders written before
metrics described themselves are read through :mod:`harness.metrics.legacy`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.api.contracts import MetricFormat
from harness.metrics import legacy


@dataclass(frozen=True)
class MetricInfo:
    """One metric of a run, under its suite label."""

    label: str
    name: str
    scope: str
    role: str
    higher_is_better: bool
    unit: str
    paired_test: str
    gate_tolerance: float | None
    display: MetricFormat
    headline: bool

    @property
    def percent(self) -> bool:
        return self.display.style == "percent"

    @property
    def unit_label(self) -> str:
        """The unit as headers print it ('ms/img'; none for a flag)."""
        return "" if self.display.style == "flag" else (self.display.unit_label or self.unit)

    @property
    def header(self) -> str:
        """The column title: 'psnr (dB)', 'latency (ms/img)', 'ssim'."""
        name = self.label.replace("_", " ")
        return f"{name} ({self.unit_label})" if self.unit_label else name

    def oriented(self, value: float) -> float:
        """``value`` with the sign that makes larger better."""
        return value if self.higher_is_better else -value


def metric_info(label: str, entry: dict[str, Any]) -> MetricInfo:
    """A manifest's ``metrics`` entry as a :class:`MetricInfo`; an entry written before metrics
    declared a role is completed from :mod:`harness.metrics.legacy`."""
    name, scope, unit = entry.get("name", label), entry.get("scope", "cell"), entry.get("unit", "")
    declared = entry if "role" in entry else legacy.declaration(name, scope, unit)
    return MetricInfo(
        label=label,
        name=name,
        scope=scope,
        role=declared["role"],
        higher_is_better=bool(entry.get("higher_is_better", True)),
        unit=unit or "",
        paired_test=declared["paired_test"],
        gate_tolerance=declared["gate_tolerance"],
        display=MetricFormat(**declared["display"]),
        headline=bool(declared["headline"]),
    )


class MetricCatalog:
    """Label → :class:`MetricInfo` of one run's metrics, in suite order."""

    def __init__(self, infos: dict[str, MetricInfo]) -> None:
        self.infos = infos

    @classmethod
    def of_run(cls, manifest: dict[str, Any], rows: Iterable[dict[str, Any]] = ()) -> MetricCatalog:
        """From the manifest's ``metrics``; a row's metric the manifest does not describe is
        described from the row (its scope, unit and direction)."""
        described = manifest.get("metrics") or {}
        infos = {label: metric_info(label, entry) for label, entry in described.items()}
        for r in rows:
            if r["metric"] not in infos:
                facts = ("scope", "unit", "higher_is_better")
                entry = {k: r[k] for k in facts if r.get(k) is not None}
                infos[r["metric"]] = metric_info(r["metric"], entry)
        return cls(infos)

    def __getitem__(self, label: str) -> MetricInfo:
        """The metric under ``label``; one the run does not describe is read as a defense
        metric of that name (a quality floor naming a metric without rows)."""
        return self.infos.get(label) or metric_info(label, {"scope": "defense"})

    def labels(self, role: str, among: Iterable[str] | None = None) -> list[str]:
        """The labels of ``role``, in suite order (only those in ``among`` when given)."""
        wanted = None if among is None else set(among)
        return [
            label
            for label, info in self.infos.items()
            if info.role == role and (wanted is None or label in wanted)
        ]

    def first(self, role: str) -> str | None:
        """The first metric of ``role`` in the suite, or None."""
        return next(iter(self.labels(role)), None)

    def headline(self, role: str, among: Iterable[str] | None = None) -> str | None:
        """The first headline metric of ``role`` (among ``among`` when given), or None."""
        return next((m for m in self.labels(role, among) if self.infos[m].headline), None)

    def outcome_metric(self) -> MetricInfo:
        """The metric whose per-image values are the cell outcomes' fooled bits: the suite's
        first with the McNemar test, else the built-in one they measure."""
        label = next((m for m, i in self.infos.items() if i.paired_test == "mcnemar"), None)
        return self.infos[label] if label else metric_info(legacy.OUTCOME_METRIC, {})
