"""Conformance checks every method passes, whoever wrote it (scikit-learn's ``check_estimator``
and ``parametrize_with_checks`` idea): declared and validated parameters, the output contract
of its kind, seeded determinism, batch independence where declared, recovery where promised,
an identity that follows the parameters, no key in any repr, identity or report, and a threat
model in known words (a defense's family, a counter-attack's targets).

A :class:`Case` names one configuration of a defense, recognizer, counter-attack, metric or
data set and builds fresh instances of it; :func:`checks_for` gives the checks that apply to
it, :func:`check_method` runs them all, and :func:`parametrize_with_checks` makes them one
pytest test each, with ids such as ``defense:krtio-check_recovery``::

    from harness.api.testing import Case, parametrize_with_checks

    @parametrize_with_checks([Case("defense", "my-noise", {"epsilon": 0.03})])
    def test_conformance(case, check):
        check(case)

Each check raises AssertionError saying what broke. Inputs are small and seeded, and the
checks run offline on the CPU. Float outputs are compared bit for bit only where the same
computation runs twice (determinism); between batch shapes a case states its tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from harness.api.testing import common, datasets, images, metrics, recognizers, threat
from harness.api.testing.case import CASE_KEY, CHECK_KEY, UNIT_ROUNDOFF, Case, synthetic_split

__all__ = [
    "CASE_KEY",
    "CHECKS",
    "CHECK_KEY",
    "UNIT_ROUNDOFF",
    "Case",
    "check_method",
    "checks_for",
    "parametrize_with_checks",
    "synthetic_split",
]

Check = Callable[[Case], None]
ALL = frozenset({"defense", "recognizer", "attack", "metric", "dataset"})
IMAGES = frozenset({"defense", "attack"})


def _always(case: Case) -> bool:
    return True


def _has_missing(case: Case) -> bool:
    return case.method_class.checks_readiness()


# (check, the kinds it applies to, whether it applies to a case of those kinds)
CHECKS: list[tuple[Check, frozenset[str], Callable[[Case], bool]]] = [
    (common.check_params_declared, ALL, _always),
    (common.check_bad_params_refused, ALL, _always),
    (common.check_smoke_params_valid, ALL, _always),
    (common.check_missing_is_empty_when_ready, ALL, _has_missing),
    (common.check_identity_follows_params, ALL, _always),
    (images.check_output_contract, IMAGES, _always),
    (images.check_seeded_determinism, IMAGES, _always),
    (images.check_defense_reports, frozenset({"defense"}), _always),
    (images.check_batch_independence, IMAGES, lambda c: c.declares("batch_independent")),
    (images.check_recovery, frozenset({"defense"}), lambda c: c.declares("reversible")),
    (images.check_no_key_leaks, frozenset({"defense"}), lambda c: c.declares("keyed")),
    (threat.check_family_declared, frozenset({"defense"}), _always),
    (threat.check_threat_declared, frozenset({"attack"}), _always),
    (images.check_model_side, frozenset({"attack"}), images.model_side_applies),
    (recognizers.check_predictions, frozenset({"recognizer"}), _always),
    (recognizers.check_predict_determinism, frozenset({"recognizer"}), _always),
    (
        recognizers.check_gradients_reach_the_input,
        frozenset({"recognizer"}),
        recognizers.offers_gradients,
    ),
    (metrics.check_metric_value, frozenset({"metric"}), _always),
    (metrics.check_metric_without_data, frozenset({"metric"}), _always),
    (metrics.check_quality_values, frozenset({"metric"}), metrics.is_quality_metric),
    (
        metrics.check_identical_photos_rate_best,
        frozenset({"metric"}),
        metrics.compares_with_the_original,
    ),
    (datasets.check_split_contract, frozenset({"dataset"}), _always),
    (datasets.check_load_determinism, frozenset({"dataset"}), _always),
]


def checks_for(case: Case) -> Iterator[tuple[Case, Check]]:
    """(case, check) for every check that applies to ``case`` (all of its kind's, when the
    case is skipped and its method cannot be inspected)."""
    for check, kinds, applies in CHECKS:
        if case.kind in kinds and (case.skip is not None or applies(case)):
            yield case, check


def check_method(case: Case) -> None:
    """Run every applicable check on ``case``; the first failure raises."""
    for _, check in checks_for(case):
        if check.__name__ not in case.xfail:
            check(case)


def parametrize_with_checks(cases: Iterable[Case]) -> Any:
    """``pytest.mark.parametrize("case, check", ...)`` over every (case, check) pair, with ids
    ``<kind>:<name>-<check>``; a case's ``skip`` skips its checks with its reason, and its
    ``xfail`` marks the named checks as expected failures (strict: a fix is noticed)."""
    import pytest

    params = []
    for case in cases:
        for _, check in checks_for(case):
            marks = []
            if case.skip is not None:
                marks.append(pytest.mark.skip(reason=case.skip))
            elif check.__name__ in case.xfail:
                marks.append(pytest.mark.xfail(reason=case.xfail[check.__name__], strict=True))
            params.append(pytest.param(case, check, id=f"{case.id}-{check.__name__}", marks=marks))
    return pytest.mark.parametrize("case, check", params)
