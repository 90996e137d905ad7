"""The evade ranking: one ranking per recognizer role, the quality floor judged by its interval
and the Pareto front, per-image union, white-box cells kept apart, ties by exact McNemar, every
counter-attack's declared threat model, and the trade-off plots ordered as the ranking."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from scipy import stats

from harness.api.contracts import (
    KNOWLEDGE_LEVELS,
    CounterAttack,
    Defense,
    MetricValue,
    QualityMetric,
)
from harness.api.registry import ATTACKS, DEFENSES, METRICS
from harness.api.threat import unknown_targets
from harness.boards.leaderboard import render_markdown
from harness.boards.ranking import per_image_union
from harness.boards.roles import build_ranking, rules
from harness.boards.tradeoffs import points
from harness.boards.verdict import verdict_paragraphs
from harness.core.errors import SuiteError
from harness.engine.runner import RunOptions, run_suite
from harness.engine.score import metric_row
from harness.engine.suite import load_suite
from harness.engine.suite_model import MethodConfig
from harness.runs.folder import RunFolder
from harness.runs.outcomes import CellOutcome
from tests.conftest import write_suite

IDS = tuple(f"p{i}" for i in range(20))


def _outcome(fooled: list[int], eligible: list[int] | None = None) -> CellOutcome:
    e = np.ones(len(IDS), bool) if eligible is None else np.array(eligible, bool)
    f = np.zeros(len(IDS), bool)
    f[fooled] = True
    return CellOutcome(IDS, e, f & e)


def _cell(d: str, a: str, rec: str, outcome: CellOutcome, **extra) -> dict:
    n, k = int(outcome.eligible.sum()), int(outcome.fooled.sum())
    return {
        "scope": "cell",
        "defense": d,
        "counter_attack": a,
        "recognizer": rec,
        "metric": "fooling_rate",
        "value": k / n,
        "n": n,
        "ci_low": None,
        "ci_high": None,
        "knows": "algorithm" if a == "sep" else "nothing",
        "adaptive": a == "sep",
        **extra,
    }


def _quality(d: str, value: float) -> dict:
    return {
        "scope": "defense",
        "defense": d,
        "counter_attack": None,
        "recognizer": None,
        "metric": "ssim",
        "value": value,
        "n": 20,
    }


MANIFEST = {
    "config": {"quality_floor": {"metric": "ssim", "min": 0.5}},
    "recognizer_kinds": {"face": "identifier", "det": "detector"},
}


def _board(
    cells: dict[tuple[str, str, str], CellOutcome],
    quality: dict[str, float],
    extra: dict[tuple[str, str, str], dict] | None = None,
):
    rows = [_cell(*k, o, **(extra or {}).get(k, {})) for k, o in cells.items()]
    rows += [_quality(d, q) for d, q in quality.items()]
    return rows, build_ranking(MANIFEST, rows, cells)


def test_destroying_the_photo_is_listed_below_the_floor_and_the_front_is_pareto() -> None:
    cells = {
        ("wreck", "none", "face"): _outcome(list(range(20))),  # fools all, SSIM 0.3
        ("good", "none", "face"): _outcome(list(range(15))),  # 0.75 at SSIM 0.7
        ("worse", "none", "face"): _outcome(list(range(10))),  # 0.5 at SSIM 0.6: dominated
        ("faint", "none", "face"): _outcome(list(range(5))),  # 0.25 at SSIM 0.9
    }
    _, ranking = _board(cells, {"wreck": 0.3, "good": 0.7, "worse": 0.6, "faint": 0.9})
    role = ranking.role("identifier")
    assert role is not None and [r.role for r in ranking.roles] == ["identifier"]
    order = [(r.defense, r.rank, r.pareto) for r in role.rows]
    assert order == [
        ("good", 1, True),
        ("worse", 2, False),
        ("faint", 3, True),
        ("wreck", None, False),
    ]
    assert role.rows[-1].below_floor and role.rows[-1].floor_by_mean  # no interval: the mean


def _distance_manifest(config: dict, headline: bool = False) -> dict:
    """A one-identifier run whose quality metric is a distance (lower is better)."""
    distance = {
        "name": "distance",
        "scope": "defense",
        "higher_is_better": False,
        "unit": "",
        **QualityMetric.describe(),
        **({"headline": True} if headline else {}),
    }
    return {
        "config": config,
        "metrics": {
            "fooling_rate": {"name": "fooling_rate", "scope": "cell", "unit": ""},
            "distance": distance,
        },
        "recognizer_kinds": {"face": "identifier"},
    }


def test_a_lower_is_better_quality_metric_is_ranked_and_fronted_in_its_direction() -> None:
    """A plugin's headline quality metric where lower is better (an error, a distance): the
    ranking shows it instead of SSIM, breaks score ties and draws the front its way."""
    manifest = _distance_manifest({}, headline=True)
    cells = {
        ("good", "none", "face"): _outcome(list(range(15))),  # 0.75 at distance 0.3
        ("worse", "none", "face"): _outcome(list(range(10))),  # 0.5 at 0.4: dominated
        ("near", "none", "face"): _outcome(list(range(10))),  # 0.5 at 0.2: ties above worse
        ("faint", "none", "face"): _outcome(list(range(5))),  # 0.25 at 0.1
    }
    distance = {"good": 0.3, "worse": 0.4, "near": 0.2, "faint": 0.1}
    rows = [_cell(*k, o) for k, o in cells.items()]
    rows += [{**_quality(d, q), "metric": "distance"} for d, q in distance.items()]
    ranking = build_ranking(manifest, rows, cells)
    assert ranking.quality_metric == "distance"
    order = [(r.defense, r.rank, r.pareto) for r in ranking.roles[0].rows]
    assert order == [("good", 1, True), ("near", 2, True), ("worse", 3, False), ("faint", 4, True)]


def test_per_image_union_counts_a_probe_only_when_every_counter_attack_fails() -> None:
    a = _outcome([0, 1, 2, 3, 4, 5])
    b = _outcome([3, 4, 5, 6, 7])
    union = per_image_union([a, b])
    assert union is not None and list(np.flatnonzero(union.fooled)) == [3, 4, 5]
    cells = {
        ("d", "none", "face"): a,
        ("d", "sep", "face"): b,
        ("d", "none", "det"): a,
        ("d", "sep", "det"): b,
    }
    _, ranking = _board(cells, {"d": 0.9})
    row = ranking.rows[0]  # the config over every recognizer; scores exist per role
    # the identifier is ranked on its best single counter-attack (5 of 20), the detector on
    # the union (3 of 20): its platform needs no oracle to combine the moves
    assert row.best_single["face"].value == 5 / 20 and row.best_single["face"].attack == "sep"
    assert row.union["face"].value == 3 / 20
    assert row.ranking_cells["face"].value == 5 / 20
    assert row.ranking_cells["det"].value == 3 / 20 and row.ranking_cells["det"].attack is None
    assert row.score is None
    identifiers, detectors = ranking.role("identifier"), ranking.role("detector")
    assert identifiers is not None and detectors is not None
    assert identifiers.rows[0].score == 5 / 20 and detectors.rows[0].score == 3 / 20


def test_white_box_cells_are_kept_apart_and_not_ranked_on() -> None:
    cells = {
        ("adv", "none", "face"): _outcome(list(range(18))),
        ("adv", "none", "det"): _outcome([0, 1]),
    }
    rows, ranking = _board(cells, {"adv": 0.9}, {("adv", "none", "face"): {"white_box": True}})
    assert ranking.any_white_box and set(ranking.rows[0].ranking_cells) == {"det"}
    face, det = ranking.role("identifier"), ranking.role("detector")
    assert face is not None and det is not None
    # the identifier judges it white-box only: nothing to rank it on there
    assert face.any_white_box and face.rows[0].white_score == 18 / 20
    assert face.rows[0].score is None and face.rows[0].rank is None
    assert not det.any_white_box and det.rows[0].score == 2 / 20 and det.rows[0].rank == 1
    board = render_markdown(MANIFEST, rows, cells)
    assert "wb" in board and "white-box" in board


def test_rows_that_do_not_differ_are_marked_tied_by_an_exact_mcnemar_test() -> None:
    cells = {
        ("a", "none", "face"): _outcome(list(range(12))),
        ("b", "none", "face"): _outcome(list(range(11))),  # one discordant pair: a tie
        ("c", "none", "face"): _outcome([]),  # eleven discordant pairs, all one way
    }
    _, ranking = _board(cells, {"a": 0.9, "b": 0.9, "c": 0.9})
    a, b, c = ranking.roles[0].rows
    assert a.tie_p is None and b.tied and b.tie_p == 1.0
    assert not c.tied
    # 2·0.5^11 = 2^-10 exactly; either float64 computation is within a few ulps of it
    assert c.tie_p == pytest.approx(stats.binomtest(11, 11, 0.5).pvalue, rel=1e-12)


def test_every_counter_attack_declares_its_threat_model() -> None:
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        threat = cls.threat(ATTACKS.resolve(name, {}))
        assert threat["knows"] in KNOWLEDGE_LEVELS, name
        assert isinstance(threat["adaptive"], bool), name
    assert ATTACKS.get("retrain").threat({})["adaptive"]
    assert not ATTACKS.get("jpeg").threat({})["adaptive"]


def _config(registry, name: str, params: dict | None = None, label: str = "") -> MethodConfig:
    return MethodConfig(name, registry.resolve(name, params or {}), label or name)


def _pair(defense: str, attack: str, defense_params: dict | None = None) -> dict:
    """The threat fields of the cell row the engine writes for (defense, counter-attack)."""
    row = metric_row(
        "fooling_rate",
        METRICS.create("fooling_rate"),
        MetricValue(0.5, 20),
        "cell",
        _config(DEFENSES, defense, defense_params),
        _config(ATTACKS, attack),
        MethodConfig("small-cnn", {}, "face"),
    )
    return {k: row[k] for k in ("knows", "adaptive", "retrains") if k in row}


OBLIVIOUS = {"knows": "nothing", "adaptive": False}


def test_a_counter_attack_is_adaptive_only_against_the_defenses_it_targets() -> None:
    assert _pair("krtio", "bss-ica") == {"knows": "algorithm", "adaptive": True}
    assert _pair("naive-overlay", "overlay-guess") == {"knows": "parameters", "adaptive": True}
    for defense in ("none", "gaussian-blur", "pixelate", "uep", "pgd"):
        assert _pair(defense, "bss-ica") == OBLIVIOUS, defense
    assert _pair("uep", "estimation")["adaptive"] and _pair("euclidean", "spatial-tta")["adaptive"]
    assert _pair("pgd", "aip-ensemble")["adaptive"] and _pair("krtio", "aip-ensemble") == OBLIVIOUS
    assert _pair("gaussian-blur", "deconvolve") == {"knows": "parameters", "adaptive": True}
    assert _pair("pixelate", "deconvolve") == OBLIVIOUS
    for attack in ("none", "gaussian-blur", "median-filter", "jpeg", "grayscale", "box-blur"):
        assert _pair("krtio", attack) == OBLIVIOUS, attack


def test_retraining_adapts_to_every_defense_and_a_chain_to_each_steps_family() -> None:
    for defense in ("none", "gaussian-blur", "pixelate", "krtio", "pgd", "ying-contrast"):
        assert _pair(defense, "retrain") == {
            "knows": "parameters",
            "adaptive": True,
            "retrains": True,
        }, defense
    chain = {"steps": ["gaussian-blur", {"name": "uep"}]}
    assert _pair("chain", "estimation", chain) == {"knows": "algorithm", "adaptive": True}
    assert _pair("chain", "bss-ica", chain) == OBLIVIOUS
    assert DEFENSES.get("chain").families(DEFENSES.resolve("chain", chain)) == {
        "blur",
        "universal-perturbation",
    }


class _Generic(CounterAttack):
    """A plugin's counter-attack that declares nothing."""


class _Named(CounterAttack):
    """A plugin's counter-attack aimed at one defense by name."""

    knows = "key"
    targets: ClassVar[frozenset[str]] = frozenset({"my-defense"})


def test_a_plugin_that_declares_nothing_is_oblivious_and_names_work_as_targets() -> None:
    krtio = DEFENSES.get("krtio").target_names("krtio", {})
    assert krtio == {"krtio", "overlay"}
    assert _Generic.threat_against({}, krtio) == OBLIVIOUS
    assert _Named.threat_against({}, krtio) == OBLIVIOUS
    mine = Defense.target_names("my-defense", {})  # declares no family
    assert mine == {"my-defense"}
    assert _Named.threat_against({}, mine) == {"knows": "key", "adaptive": True}
    assert unknown_targets(frozenset({"overlay", "my-defense", "sticker"}), mine) == ["sticker"]


def test_a_row_seen_only_by_oblivious_counter_attacks_is_flagged() -> None:
    cells = {("d", "none", "face"): _outcome([1])}
    rows, ranking = _board(cells, {"d": 0.9})
    assert ranking.rows[0].threat["oblivious_only"]
    assert "nothing ⚑" in render_markdown(MANIFEST, rows, cells)


QUICK_DEFENSES = {"none": {}, "gaussian-blur": {"sigma": 1.5}, "pixelate": {}, "krtio": {}}


def _quickstart_like() -> tuple[list[dict], dict]:
    """Cells of the quickstart's defenses against none and bss-ica, with the threat fields
    the engine writes for each pair."""
    cells, rows = {}, []
    for i, (d, params) in enumerate(QUICK_DEFENSES.items()):
        for a in ("none", "bss-ica"):
            outcome = _outcome(list(range(i + (a == "none"))))
            cells[(d, a, "face")] = outcome
            extra = {"defense_name": d, **_pair(d, a, params)}
            rows.append({**_cell(d, a, "face", outcome), **extra})
    rows += [_quality(d, 0.9) for d in QUICK_DEFENSES]
    return rows, cells


def test_defenses_no_counter_attack_adapts_to_are_flagged_and_named_and_none_is_exempt() -> None:
    rows, cells = _quickstart_like()
    ranking = build_ranking(MANIFEST, rows, cells)
    flagged = {r.defense for r in ranking.rows if r.threat["oblivious_only"]}
    assert flagged == {"gaussian-blur", "pixelate"}
    assert ranking.threats["bss-ica"]["krtio"] == {"knows": "algorithm", "adaptive": True}
    assert ranking.threats["bss-ica"]["pixelate"] == OBLIVIOUS
    drawn = render_markdown(MANIFEST, rows, cells)
    board = " ".join(drawn.split())
    assert (
        "b = bss-ica (knows algorithm, adaptive vs krtio; knows nothing, oblivious vs the "
        "others)" in board
    )
    named = re.search(r"Never tried against an adaptive counter-attack \(.*?\): (.*?)\. ", board)
    assert named and set(named.group(1).split(", ")) == {"gaussian-blur", "pixelate"}
    assert "The `none` row (no defense) is exempt" in board
    ranking_lines = drawn.split("## Ranking")[1].split("## Worst case")[0].splitlines()
    cells_of = [[c.strip() for c in line.split("|")] for line in ranking_lines if "|" in line]
    knows = {c[2]: c[-2] for c in cells_of if c[2] in QUICK_DEFENSES}
    assert knows == {
        "none": "nothing",
        "gaussian-blur": "nothing ⚑",
        "pixelate": "nothing ⚑",
        "krtio": "algorithm",
    }


def test_the_quality_floor_must_name_a_quality_metric_of_the_suite(tmp_path: Path) -> None:
    text = (
        "dataset: {name: digits}\nrecognizers: [small-cnn]\ndefenses: [none]\n"
        "metrics: [fooling_rate, ssim, latency]\nquality_floor: {metric: latency, min: 1}\n"
    )
    with pytest.raises(SuiteError, match=r"s.yaml:5.*quality_floor.metric.*valid: ssim"):
        load_suite(write_suite(tmp_path / "s.yaml", text))
    bad_key = text.replace("metric: latency", "metrc: ssim")
    with pytest.raises(SuiteError, match=r"unknown key.*metric"):
        load_suite(write_suite(tmp_path / "s.yaml", bad_key))


SURROGATE_SUITE = """\
name: whitebox
dataset: {name: digits, params: {max_probes: 30}}
recognizers:
  - {name: small-cnn, params: {steps: 30, width: 4}, label: same}
  - {name: small-cnn, params: {steps: 30, width: 4, seed: 1}, label: other}
defenses:
  - {name: pgd, params: {eps: 16, iterations: 3, surrogate_params: {steps: 30, width: 4}}}
counter_attacks: [none, jpeg]
metrics: [fooling_rate, ssim]
quality_floor: {metric: ssim, min: 0.1}
batch_size: 64
"""


def test_a_surrogate_with_the_judges_weights_makes_its_cells_white_box(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", SURROGATE_SUITE))
    result = run_suite(suite, RunOptions(out_root=tmp_path / "r", progress=False))
    cells = [r for r in result.rows if r["scope"] == "cell"]
    assert {r["recognizer"] for r in cells if r.get("white_box")} == {"same"}
    assert all(r["knows"] == "nothing" and r["adaptive"] is False for r in cells)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    outcomes = RunFolder(result.run_dir).read_outcomes(result.rows)
    assert len(outcomes) == 4
    ranking = build_ranking(manifest, result.rows, outcomes)
    classifiers = ranking.role("classifier")
    assert classifiers is not None and classifiers.recognizers == ["same", "other"]
    pgd = next(r for r in classifiers.rows if r.defense.startswith("pgd"))
    assert set(pgd.ranking_cells) == {"other"} and pgd.white_score is not None


ROLES_MANIFEST = {
    "config": {"quality_floor": {"metric": "ssim", "min": 0.5}},
    "recognizer_kinds": {"face": "identifier", "det": "detector", "cls": "classifier"},
}


def test_each_recognizer_role_is_ranked_on_its_own() -> None:
    """An identifier, a detector and a classifier are never averaged into one number: each
    role has its own order, and here all three differ (and differ from the old mean over
    every recognizer, which put 'middle' first, then 'hider', then 'id-breaker')."""
    fooled = {  # probes fooled of 20, per defense and recognizer
        "id-breaker": {"face": 16, "det": 1, "cls": 6},
        "hider": {"face": 4, "det": 18, "cls": 2},
        "middle": {"face": 10, "det": 8, "cls": 14},
    }
    cells = {
        (d, "none", rec): _outcome(list(range(k)))
        for d, per in fooled.items()
        for rec, k in per.items()
    }
    rows = [_cell(*key, o) for key, o in cells.items()]
    rows += [_quality(d, 0.9) for d in fooled]
    ranking = build_ranking(ROLES_MANIFEST, rows, cells)
    orders = {role.role: [r.defense for r in role.ranked] for role in ranking.roles}
    assert orders == {
        "identifier": ["id-breaker", "middle", "hider"],
        "detector": ["hider", "middle", "id-breaker"],
        "classifier": ["middle", "id-breaker", "hider"],
    }
    for role in ranking.roles:
        (rec,) = role.recognizers
        assert all(r.score == fooled[r.defense][rec] / 20 for r in role.rows)
    board = render_markdown(ROLES_MANIFEST, rows, cells)
    titles = ["### Identifiers: face", "### Detectors: det", "### Classifiers: cls"]
    assert [board.index(t) for t in titles] == sorted(board.index(t) for t in titles)


def _quality_ci(d: str, value: float, low: float | None, high: float | None) -> dict:
    return {**_quality(d, value), "ci_low": low, "ci_high": high}


def test_the_quality_floor_is_judged_by_its_interval() -> None:
    """SSIM ≥ 0.5: ranked only when the interval's lower bound clears it; an interval that
    straddles it is borderline, one wholly under it below; without an interval, the mean."""
    cells = {
        ("straddles", "none", "face"): _outcome(list(range(19))),  # fools most: mean 0.51
        ("clears", "none", "face"): _outcome(list(range(12))),
        ("at-floor", "none", "face"): _outcome(list(range(10))),  # lower bound exactly 0.5
        ("mean-only", "none", "face"): _outcome(list(range(8))),
        ("under", "none", "face"): _outcome(list(range(18))),
    }
    rows = [_cell(*k, o) for k, o in cells.items()]
    rows += [
        _quality_ci("straddles", 0.51, 0.45, 0.57),
        _quality_ci("clears", 0.6, 0.55, 0.65),
        _quality_ci("at-floor", 0.55, 0.5, 0.6),
        _quality_ci("mean-only", 0.52, None, None),
        _quality_ci("under", 0.45, 0.4, 0.49),
    ]
    ranking = build_ranking(MANIFEST, rows, cells)
    role = ranking.roles[0]
    seen = [(r.defense, r.rank, r.floor_status) for r in role.rows]
    assert seen == [
        ("clears", 1, "pass"),
        ("at-floor", 2, "pass"),
        ("mean-only", 3, "pass"),
        ("straddles", None, "borderline"),
        ("under", None, "below"),
    ]
    straddles, under = role.rows[3], role.rows[4]
    assert straddles.borderline and not straddles.below_floor
    assert under.below_floor and not under.borderline
    assert [r.defense for r in ranking.rows if r.floor_by_mean] == ["mean-only"]
    board = render_markdown(MANIFEST, rows, cells)
    assert "| ≈floor | straddles" in board and "| <floor | under" in board
    text = " ".join(rules(ranking))  # the board wraps it
    assert "lower bound" in text and "No interval for mean-only: judged on the mean" in text


def test_a_lower_is_better_floor_is_judged_by_the_upper_bound() -> None:
    manifest = _distance_manifest({"quality_floor": {"metric": "distance", "min": 0.3}})
    cells = {
        (d, "none", "face"): _outcome(list(range(k)))
        for d, k in (("tight", 5), ("straddles", 15), ("far", 18), ("mean-only", 3))
    }
    rows = [_cell(*k, o) for k, o in cells.items()]
    distance = {
        "tight": (0.2, 0.15, 0.3),  # upper bound exactly at the floor: clears it
        "straddles": (0.28, 0.25, 0.35),
        "far": (0.4, 0.31, 0.45),
        "mean-only": (0.29, None, None),
    }
    rows += [{**_quality_ci(d, *v), "metric": "distance"} for d, v in distance.items()]
    ranking = build_ranking(manifest, rows, cells)
    status = {r.defense: (r.rank, r.floor_status) for r in ranking.roles[0].rows}
    assert status == {
        "tight": (1, "pass"),
        "mean-only": (2, "pass"),
        "straddles": (None, "borderline"),
        "far": (None, "below"),
    }
    text = " ".join(rules(ranking))
    assert "distance ≤ 0.3" in text and "upper bound" in text


def test_the_plots_the_ranking_and_the_verdict_agree_on_the_order() -> None:
    """A detector is ranked on the per-image union; its plot draws the same value, so sorting
    the plot's points by height gives the ranking's order, and the verdict names its first.
    Here the best single counter-attack would order the two configs the other way round."""
    cells = {
        ("a", "none", "det"): _outcome(list(range(12))),  # best single 12/20 …
        ("a", "sep", "det"): _outcome(list(range(6, 18))),  # … union 6/20
        ("b", "none", "det"): _outcome(list(range(10))),  # 10/20 either way
        ("b", "sep", "det"): _outcome(list(range(10))),
        ("c", "none", "det"): _outcome(list(range(2))),
        ("c", "sep", "det"): _outcome(list(range(2))),
        ("a", "none", "face"): _outcome(list(range(7))),
        ("a", "sep", "face"): _outcome(list(range(9))),
        ("b", "none", "face"): _outcome(list(range(14))),
        ("b", "sep", "face"): _outcome(list(range(3))),
        ("c", "none", "face"): _outcome(list(range(11))),
        ("c", "sep", "face"): _outcome(list(range(16))),
    }
    rows, ranking = _board(cells, {"a": 0.7, "b": 0.8, "c": 0.9})
    x_rows = {r["defense"]: r for r in rows if r["scope"] == "defense"}
    for rec, expected in (("det", ["b", "a", "c"]), ("face", ["c", "a", "b"])):
        drawn = points(ranking, rec, x_rows)
        by_height = [p.defense for p in sorted(drawn, key=lambda p: -p.y) if p.ranked]
        assert by_height == expected
        assert [r.defense for r in ranking.by_recognizer[rec].ranked] == expected
    detectors, identifiers = ranking.role("detector"), ranking.role("identifier")
    assert detectors is not None and identifiers is not None
    assert [r.defense for r in detectors.ranked] == ["b", "a", "c"]
    assert [r.defense for r in identifiers.ranked] == ["c", "a", "b"]
    verdict = verdict_paragraphs(MANIFEST, rows, cells)
    assert verdict[0].startswith("Identifiers (face): c wins")
    assert verdict[1].startswith("Detectors (det): b wins")
