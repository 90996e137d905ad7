"""The verdict: per recognizer role, the winner with its fooling rate, interval and n, its
quality beside the undefended photo's and its latency, the exact McNemar test against the
runner-up, and the threat it held against; built from the run's numbers only."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy import stats

from harness.boards.leaderboard import render_markdown
from harness.boards.verdict import verdict_lines, verdict_paragraphs
from harness.metrics.stats import wilson_interval
from harness.runs.outcomes import CellOutcome

IDS = tuple(f"p{i}" for i in range(20))
MANIFEST = {
    "config": {
        "quality_floor": {"metric": "ssim", "min": 0.5},
        "defenses": [{"name": "none", "params": {}, "label": "none"}],
    },
    "recognizer_kinds": {"face": "identifier", "det": "detector"},
}


def _outcome(fooled: list[int]) -> CellOutcome:
    f = np.zeros(len(IDS), bool)
    f[fooled] = True
    return CellOutcome(IDS, np.ones(len(IDS), bool), f)


def _cell(d: str, a: str, rec: str, outcome: CellOutcome) -> dict:
    n, k = int(outcome.eligible.sum()), int(outcome.fooled.sum())
    lo, hi = wilson_interval(k, n)
    adaptive = a == "sep"
    return {
        "scope": "cell",
        "defense": d,
        "counter_attack": a,
        "recognizer": rec,
        "metric": "fooling_rate",
        "value": k / n,
        "n": n,
        "ci_low": lo,
        "ci_high": hi,
        "knows": "algorithm" if adaptive else "nothing",
        "adaptive": adaptive,
    }


def _defense(d: str, metric: str, value: float, low: float, high: float) -> dict:
    return {
        "scope": "defense",
        "defense": d,
        "counter_attack": None,
        "recognizer": None,
        "metric": metric,
        "value": value,
        "n": 20,
        "ci_low": low,
        "ci_high": high,
    }


def _run(cells: dict[tuple[str, str, str], CellOutcome], quality: dict[str, float]):
    rows = [_cell(*k, o) for k, o in cells.items()]
    for d, q in quality.items():
        rows.append(_defense(d, "ssim", q, q - 0.02, min(q + 0.02, 1.0)))
        rows.append(_defense(d, "latency", 1.5 if d != "none" else 0.01, 1.0, 2.0))
    return SimpleNamespace(manifest=MANIFEST, rows=rows, outcomes=cells)


def test_the_verdict_names_the_winner_its_interval_cost_and_a_clear_win() -> None:
    cells = {
        ("krtio", "none", "face"): _outcome(list(range(12))),
        ("krtio", "sep", "face"): _outcome(list(range(11))),  # its worst case: 11 of 20
        ("blur", "none", "face"): _outcome([]),
        ("blur", "sep", "face"): _outcome([]),
        ("none", "none", "face"): _outcome([]),
        ("none", "sep", "face"): _outcome([]),
    }
    run = _run(cells, {"krtio": 0.62, "blur": 0.7, "none": 1.0})
    (paragraph,) = verdict_paragraphs(run.manifest, run.rows, run.outcomes)
    lo, hi = wilson_interval(11, 20)
    assert paragraph.startswith("Identifiers (face): krtio wins: fools face on 55.0%")
    assert f"(95% CI {100 * lo:.1f}–{100 * hi:.1f}, n=20)" in paragraph
    assert "at ssim 0.620 (none 1.000), latency 1.500 ms/img" in paragraph
    # 11 discordant pairs, all one way: p = 2·0.5^11 exactly (the ranking's own test)
    p = stats.binomtest(11, 11, 0.5).pvalue
    # none and blur both fool nobody: the better quality (none's) is the runner-up
    assert f"Beats runner-up none (0.0%), McNemar p = {p:.2g}." in paragraph
    assert "Worst case: sep (knows algorithm, adaptive)." in paragraph
    assert "Never tested" not in paragraph


def test_a_runner_up_that_does_not_differ_is_said_to_be_no_significant_difference() -> None:
    cells = {
        ("a", "none", "face"): _outcome(list(range(12))),
        ("b", "none", "face"): _outcome(list(range(11))),  # one discordant pair
    }
    run = _run(cells, {"a": 0.9, "b": 0.8})
    (paragraph,) = verdict_paragraphs(run.manifest, run.rows, run.outcomes)
    assert "a wins" in paragraph
    assert "No significant difference from runner-up b (55.0%) (McNemar p = 1)." in paragraph
    # only the oblivious 'none' counter-attack ever ran
    assert "Worst case: no counter-attack (knows nothing, oblivious)." in paragraph
    assert "Never tested against an adaptive counter-attack." in paragraph


def test_each_role_gets_its_paragraph_and_a_detector_its_per_image_union() -> None:
    cells = {
        ("a", "none", "face"): _outcome(list(range(6))),
        ("a", "sep", "face"): _outcome(list(range(6))),
        ("a", "none", "det"): _outcome(list(range(10))),
        ("a", "sep", "det"): _outcome(list(range(5, 15))),  # union 5 of 20
        ("b", "none", "face"): _outcome(list(range(9))),
        ("b", "sep", "face"): _outcome(list(range(9))),
        ("b", "none", "det"): _outcome(list(range(8))),
        ("b", "sep", "det"): _outcome(list(range(8))),
    }
    run = _run(cells, {"a": 0.9, "b": 0.9})
    lines = verdict_lines(run)  # type: ignore[arg-type]
    assert lines and all(len(line) <= 100 for line in lines)
    face, det = verdict_paragraphs(run.manifest, run.rows, run.outcomes)
    assert face.startswith("Identifiers (face): b wins: fools face on 45.0%")
    assert det.startswith("Detectors (det): b wins: fools det on 40.0%")
    assert "runner-up a (25.0%)" in det  # a's union, not its best single 50%
    assert "Worst case: all counter-attacks at once (knows algorithm, adaptive)." in det
    board = render_markdown(run.manifest, run.rows, run.outcomes)
    assert board.index("## Verdict") < board.index("## Ranking")


def test_nothing_to_rank_gives_no_verdict() -> None:
    cells = {("wreck", "none", "face"): _outcome(list(range(20)))}
    run = _run(cells, {"wreck": 0.2})  # wholly under the floor
    assert verdict_lines(run) == []  # type: ignore[arg-type]
    assert "## Verdict" not in render_markdown(run.manifest, run.rows, run.outcomes)
    empty = SimpleNamespace(manifest=MANIFEST, rows=[], outcomes={})
    assert verdict_lines(empty) == []  # type: ignore[arg-type]


def test_a_conceal_run_names_its_board_winner() -> None:
    manifest = {
        "config": {
            "objective": "conceal",
            "target_drop_tolerance": 0.05,
            "counter_attacks": [{"name": "none", "label": "none"}],
        },
        "roles": {"unet": {"target": "tgt", "auxiliary": "aux"}},
    }

    def cell(rec: str, metric: str, value: float) -> dict:
        return {
            "scope": "cell",
            "defense": "unet",
            "counter_attack": "none",
            "recognizer": rec,
            "metric": metric,
            "value": value,
            "n": 50,
        }

    rows = [
        cell("tgt", "recognition_rate", 0.96),
        cell("aux", "recognition_rate", 0.12),
        cell("tgt", "accuracy_drop", 0.02),
    ]
    lines = verdict_lines(SimpleNamespace(manifest=manifest, rows=rows, outcomes={}))  # type: ignore[arg-type]
    text = " ".join(lines)
    assert text.startswith("Conceal: unet wins; aux recognises 12.0% of n = 50 probes")
    assert "the target tgt loses 2.0 points of accuracy" in text


def test_when_no_ranked_config_fools_the_role_the_verdict_says_so() -> None:
    cells = {
        ("none", "none", "face"): _outcome([]),
        ("blur", "none", "face"): _outcome([]),
    }
    run = _run(cells, {"none": 1.0, "blur": 0.9})
    (paragraph,) = verdict_paragraphs(run.manifest, run.rows, run.outcomes)
    assert paragraph.startswith(
        "Identifiers (face): no ranked config fools it in the worst case; first on quality: "
        "none, which fools face on 0.0%"
    )
    assert "wins" not in paragraph
