"""Metrics describe themselves (role, direction, paired test, gate tolerance, display,
headline), the manifest carries it, and the boards read it back: for a folder written before,
through the legacy table, which must say what the built-in classes say."""

from __future__ import annotations

import typing

import pytest

from harness.api.contracts import MetricRole, PairedTest, QualityMetric
from harness.api.registry import METRICS
from harness.metrics import legacy
from harness.metrics.declared import MetricCatalog, metric_info

BUILT_IN = sorted(legacy.BUILT_IN)


def _manifest_entry(name: str) -> dict:
    """A manifest's ``metrics`` entry as the runner writes it."""
    cls = METRICS.get(name)
    return {
        "name": name,
        "params": {},
        "scope": cls.scope,
        "higher_is_better": cls.higher_is_better,
        "unit": cls.unit,
        **cls.describe(),
    }


def test_every_built_in_metric_is_in_the_legacy_table_as_its_class_declares_it() -> None:
    privbench = {
        n for n in METRICS.names() if METRICS.get(n).__module__.startswith("harness.metrics.")
    }
    assert privbench == set(BUILT_IN)
    for name in BUILT_IN:
        assert METRICS.get(name).describe() == legacy.BUILT_IN[name], name


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_declaration_is_one_of_the_documented_choices(name: str) -> None:
    cls = METRICS.get(name)
    assert cls.role in typing.get_args(MetricRole)
    assert cls.paired_test in typing.get_args(PairedTest)
    assert cls.display_format().style in ("percent", "number", "flag")
    # the bootstrap pairs per-image values, which only a QualityMetric writes
    assert (cls.paired_test == "bootstrap") == issubclass(cls, QualityMetric)
    assert cls.gate_tolerance is None or cls.role == "quality"


def test_each_role_a_board_relies_on_has_one_built_in_metric_and_its_headlines() -> None:
    roles: dict[str, list[str]] = {}
    for name in BUILT_IN:
        roles.setdefault(METRICS.get(name).role, []).append(name)
    for role in ("privacy", "recognition", "utility_loss", "detection", "target"):
        assert len(roles[role]) == 1, role
    assert [n for n in BUILT_IN if METRICS.get(n).paired_test == "mcnemar"] == roles["privacy"]
    assert legacy.OUTCOME_METRIC in roles["privacy"]
    headlines = {METRICS.get(n).role for n in BUILT_IN if METRICS.get(n).headline}
    assert headlines == {"quality", "cost"}


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_folder_without_declarations_reads_the_same(name: str) -> None:
    entry = _manifest_entry(name)
    old = {k: v for k, v in entry.items() if k not in METRICS.get(name).describe()}
    assert metric_info(name, old) == metric_info(name, entry)


def test_a_metric_the_legacy_table_does_not_know_is_read_as_the_boards_did() -> None:
    defense = {"scope": "defense", "higher_is_better": False}
    timing = metric_info("plugin_ms", {**defense, "unit": "ms"})
    assert timing.role == "other" and timing.header == "plugin ms (ms/img)"
    assert metric_info("plugin_db", {**defense, "unit": "dB"}).display.digits == 1
    assert metric_info("plugin_flag", {**defense, "unit": "flag"}).role == "target"
    share = metric_info("plugin_share", {"scope": "cell"})
    assert share.percent and share.paired_test == "none"


def test_the_catalog_selects_by_role_in_suite_order_and_describes_rows_it_lacks() -> None:
    manifest = {"metrics": {n: _manifest_entry(n) for n in ("psnr", "latency", "ssim")}}
    rows = [{"scope": "cell", "metric": "fooling_rate", "unit": ""}]
    catalog = MetricCatalog.of_run(manifest, rows)
    assert catalog.labels("quality") == ["psnr", "ssim"]
    assert catalog.headline("quality") == "ssim" and catalog.headline("cost") == "latency"
    assert catalog.headline("quality", among={"psnr"}) is None
    assert catalog.first("privacy") == "fooling_rate"
    assert catalog.outcome_metric().label == "fooling_rate"
    assert catalog["psnr"].header == "psnr (dB)" and catalog["latency"].oriented(2.0) == -2.0
    # a suite without the privacy metric: the outcomes still measure the fooling rate
    assert MetricCatalog.of_run({}).outcome_metric().percent
