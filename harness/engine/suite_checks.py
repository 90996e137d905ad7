"""Checks across a suite's parts: defenses that suit its objective, recognizers named by role,
counter-attacks that need class scores, the upload format and the quality floor."""

from __future__ import annotations

from typing import Any

from harness.api.registry import ATTACKS, DEFENSES, METRICS, RECOGNIZERS
from harness.core.errors import ParamError
from harness.core.params import Param, suggest
from harness.engine.suite_files import Source
from harness.engine.suite_model import QUALITY_FLOOR, UPLOAD, MethodConfig


def check_objective(defenses: list[MethodConfig], objective: str, src: Source) -> None:
    """Every defense works toward the suite's objective (or any)."""
    for d in defenses:
        obj = DEFENSES.get(d.name).objective
        if obj not in (objective, "any"):
            raise src.error(
                f"defense {d.name!r} has objective {obj!r} but the suite's objective is "
                f"{objective!r}",
                field_name="defenses",
            )


def check_conceal(attacks: list[MethodConfig], objective: str, src: Source) -> None:
    """A conceal suite has the ``none`` counter-attack (the trusted target sees the upload)."""
    if objective == "conceal" and "none" not in [a.name for a in attacks]:
        raise src.error(
            "a conceal suite needs the 'none' counter-attack: the trusted target classifies "
            "the upload as it is",
            field_name="counter_attacks",
        )


def check_roles(defenses: list[MethodConfig], recognizers: list[MethodConfig], src: Source) -> None:
    """Recognizers a defense names by role (protective U-Net's target and auxiliary) must be
    classifiers of this suite, named by label."""
    kinds = {r.label: RECOGNIZERS.get(r.name).kind for r in recognizers}
    for d in defenses:
        for role, label in DEFENSES.get(d.name).recognizer_roles(d.params).items():
            if label is None:
                continue
            if label not in kinds:
                raise src.error(
                    f"defense {d.label!r}: {role} {label!r} is not a recognizer label of this "
                    f"suite{suggest(label, list(kinds))}; labels: {', '.join(kinds)}",
                    field_name=f"defenses.{d.name}.params.{role}",
                )
            if kinds[label] != "classifier":
                raise src.error(
                    f"defense {d.label!r}: {role} {label!r} is a {kinds[label]}; it must be a "
                    "classifier",
                    field_name=f"defenses.{d.name}.params.{role}",
                )


def check_scores(attacks: list[MethodConfig], recognizers: list[MethodConfig], src: Source) -> None:
    """A counter-attack that pools class scores needs recognizers that have them."""
    lacking = [r for r in recognizers if not RECOGNIZERS.get(r.name).has_scores()]
    for a in attacks:
        if not lacking or not ATTACKS.get(a.name).needs_scores:
            continue
        having = [r.label for r in recognizers if r not in lacking]
        named = ", ".join(f"{r.label} (a {RECOGNIZERS.get(r.name).kind})" for r in lacking)
        raise src.error(
            f"counter-attack {a.label!r} sums the recognizer's class scores over processed "
            f"copies, and {named} has none; remove it from this suite or give the "
            f"counter-attack a suite of its own with recognizers that have scores"
            + (f" (here: {', '.join(having)})" if having else " (identifiers, classifiers)"),
            field_name="counter_attacks",
        )


def _settings(
    value: dict[str, Any], declared: dict[str, Param], src: Source, field_name: str
) -> dict[str, Any]:
    """A mapping of declared settings (``upload``, ``quality_floor``), defaults filled."""
    for key in value:
        if key not in declared:
            raise src.error(
                f"unknown key{suggest(str(key), list(declared))}; valid keys: "
                f"{', '.join(declared)}",
                value,
                key,
                f"{field_name}.{key}",
            )
    out = {}
    for key, param in declared.items():
        try:
            out[key] = param.validate(f"{field_name}.{key}", value.get(key, param.default))
        except ParamError as exc:
            raise src.error(
                str(exc).split(": ", 1)[-1], value, key, f"{field_name}.{key}"
            ) from None
    return out


def upload(value: Any, src: Source) -> dict[str, Any]:
    """``upload: {format, quality}``."""
    if not isinstance(value, dict):
        raise src.error(
            "expected a mapping with 'format' (png, jpeg or rgb565) and 'quality'",
            field_name="upload",
        )
    return _settings(value, UPLOAD, src, "upload")


def quality_floor(
    value: Any, src: Source, metrics: list[MethodConfig], objective: str
) -> dict[str, Any]:
    """``quality_floor: {metric, min}``: the metric must be a quality metric the suite
    measures on each defense config (higher is better)."""
    if objective != "evade":
        raise src.error(
            "quality_floor applies to evade suites (people must still see the photo)",
            field_name="quality_floor",
        )
    if not isinstance(value, dict):
        raise src.error(
            "expected a mapping such as {metric: ssim, min: 0.5}", field_name="quality_floor"
        )
    out = _settings(value, QUALITY_FLOOR, src, "quality_floor")
    usable = [
        m.label
        for m in metrics
        if (cls := METRICS.get(m.name)).scope == "defense"
        and cls.higher_is_better
        and cls.role == "quality"
    ]
    if out["metric"] not in usable:
        valid = ", ".join(usable) or "none (add ssim to metrics)"
        raise src.error(
            f"{out['metric']!r} is not a quality metric of this suite"
            f"{suggest(out['metric'], usable)}; valid: {valid}",
            value,
            "metric",
            "quality_floor.metric",
        )
    return out
