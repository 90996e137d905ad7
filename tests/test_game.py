"""The owner-against-platform game: nashpy's equilibrium checked against a linear program,
textbook games, the AIP paper's own table, and the bootstrap interval of the value."""

from __future__ import annotations

import numpy as np
import pytest

from harness.boards.game import (
    ALL_MOVES,
    describe_mix,
    game_value,
    payoff_from_outcomes,
    run_games,
    solve,
    value_interval,
)
from harness.runs.outcomes import CellOutcome

# Oh, Fritz and Schiele, ICCV 2017, Table 4: recognition rate (%) of 6 AIP variants (rows)
# against 6 counter-measures (columns), as the authors' equilibrium script holds it.
AIP_TABLE = np.array(
    [
        [4.0, 6.6, 15.0, 22.2, 16.7, 9.9],
        [2.5, 2.3, 11.6, 18.5, 7.2, 4.9],
        [5.8, 7.6, 4.6, 23.6, 16.6, 9.1],
        [0.4, 0.8, 8.6, 5.8, 3.1, 1.4],
        [2.6, 2.2, 11.8, 18.1, 3.4, 4.3],
        [0.7, 0.9, 5.2, 9.5, 3.2, 2.0],
    ]
)
# HiGHS solves to a primal/dual feasibility tolerance of 1e-7 by default. With payoffs in
# [0, 1] (or scaled to them) and at most 8 rows, a constraint violated by 1e-7 moves the
# value by at most 1e-7 per row of the mix plus 1e-7 for the sum-to-one row: ≤ 9e-7.
LP_TOLERANCE = 1e-6


def test_the_aip_table_gives_the_papers_equilibrium() -> None:
    eq = solve(AIP_TABLE)
    # the script's output as printed (3 and 4 decimals): within half a unit of the last
    # printed place, plus the solver's tolerance (scaled by the payoffs' range, ≤ 25)
    assert eq.value == pytest.approx(7.259, abs=5e-4 + 25 * LP_TOLERANCE)
    np.testing.assert_allclose(eq.owner, [0, 0, 0, 0.6056, 0, 0.3944], atol=5e-5 + LP_TOLERANCE)
    np.testing.assert_allclose(eq.platform, [0, 0, 0.5211, 0.4789, 0, 0], atol=5e-5 + LP_TOLERANCE)
    # committing to one AIP is worse for the owner: the best row's worst case is 8.6
    assert (eq.pure_value, eq.pure_row) == (8.6, 3)


def test_matching_pennies_is_a_fair_coin_for_both() -> None:
    eq = solve(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert eq.value == pytest.approx(0.5, abs=LP_TOLERANCE)
    np.testing.assert_allclose(eq.owner, [0.5, 0.5], atol=LP_TOLERANCE)
    np.testing.assert_allclose(eq.platform, [0.5, 0.5], atol=LP_TOLERANCE)
    assert eq.pure_value == 1.0


def test_a_dominated_defense_gets_no_weight() -> None:
    payoff = np.array([[0.9, 0.8], [0.5, 0.4], [0.6, 0.7]])  # row 1 beats both others
    eq = solve(payoff)
    np.testing.assert_allclose(eq.owner, [0, 1, 0], atol=LP_TOLERANCE)
    np.testing.assert_allclose(eq.platform, [1, 0], atol=LP_TOLERANCE)
    # a saddle point: game_value returns the payoff entry itself, solve a mix of entries
    assert eq.value == pytest.approx(0.5, abs=LP_TOLERANCE) and game_value(payoff) == 0.5


@pytest.mark.parametrize("seed", range(20))
def test_nashpy_and_the_linear_program_agree_and_the_mixes_guarantee_the_value(seed: int) -> None:
    rng = np.random.default_rng(seed)
    payoff = rng.random((int(rng.integers(2, 8)), int(rng.integers(2, 8))))
    eq = solve(payoff)
    assert game_value(payoff) == pytest.approx(eq.value, abs=LP_TOLERANCE)
    assert eq.owner.sum() == pytest.approx(1.0, abs=LP_TOLERANCE)
    assert eq.platform.sum() == pytest.approx(1.0, abs=LP_TOLERANCE)
    # the owner's mix holds every column to the value; the platform's forces it on every row
    assert (eq.owner @ payoff <= eq.value + LP_TOLERANCE).all()
    assert (payoff @ eq.platform >= eq.value - LP_TOLERANCE).all()
    assert eq.value <= eq.pure_value + LP_TOLERANCE


def test_the_bootstrap_interval_covers_the_value_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    eligible = np.ones((3, 2, 200), dtype=bool)
    recognized = rng.random((3, 2, 200)) < np.array([[0.2, 0.6], [0.5, 0.3], [0.7, 0.8]])[..., None]
    value = solve(payoff_from_outcomes(eligible, recognized)).value
    low, high = value_interval(eligible, recognized, resamples=300)
    # percentiles of 300 resampled game values: the interval is 0.07 wide with the value
    # 0.03 from either end (float64 LPs err by ≤ 1e-6), not a float tie
    assert low < value < high
    assert (low, high) == value_interval(eligible, recognized, resamples=300)
    assert low >= 0.0 and high <= 1.0


def test_payoffs_count_only_probes_recognised_when_clean() -> None:
    eligible = np.array([[[True, True, False, False]]])
    recognized = np.array([[[True, False, True, True]]])
    assert payoff_from_outcomes(eligible, recognized)[0, 0] == 0.5


def _cell(fooled: list[bool]) -> CellOutcome:
    ids = tuple(f"p{i}" for i in range(len(fooled)))
    return CellOutcome(ids, np.ones(len(fooled), dtype=bool), np.array(fooled))


def test_a_detectors_platform_may_also_run_every_counter_attack() -> None:
    outcomes = {
        ("d", "a", "det"): _cell([True, True, False, False]),
        ("d", "b", "det"): _cell([True, False, True, False]),
        ("d", "a", "id"): _cell([True, True, False, False]),
        ("d", "b", "id"): _cell([True, False, True, False]),
    }
    kinds = {"det": "detector", "id": "identifier"}
    det, ident = run_games(["d"], ["a", "b"], ["det", "id"], outcomes, kinds)
    assert det.attacks == ["a", "b", ALL_MOVES] and ident.attacks == ["a", "b"]
    # found by any move: only p0 stays hidden from the detector, so it recognises 3 of 4
    np.testing.assert_allclose(det.payoff, [[0.5, 0.5, 0.75]], rtol=0, atol=0)  # k/4: exact
    assert det.equilibrium.value == 0.75 and ident.equilibrium.value == 0.5
    assert describe_mix(det.attacks, det.equilibrium.platform) == f"{ALL_MOVES} 1.00"


def test_the_payoff_matrix_carries_both_mixes() -> None:
    from harness.boards.game_board import payoff_matrix

    outcomes = {
        ("d1", "a", "id"): _cell([True, True, False, False]),
        ("d1", "b", "id"): _cell([False, False, False, False]),
        ("d2", "a", "id"): _cell([False, False, False, False]),
        ("d2", "b", "id"): _cell([True, True, False, False]),
    }
    (game,) = run_games(["d1", "d2"], ["a", "b"], ["id"], outcomes, {"id": "identifier"})
    title, header, body = payoff_matrix(game)
    assert title == "id (A = a, B = b)"
    assert header == ["owner ↓ platform →", "A", "B", "owner's mix"]
    # recognition 50/100 against 100/50: both sides mix evenly, value 75%
    assert body == [
        ["d1", "50.0", "100.0", "0.50"],
        ["d2", "100.0", "50.0", "0.50"],
        ["platform's mix", "0.50", "0.50", "= 75.0"],
    ]
