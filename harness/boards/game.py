"""The privacy game: owner against platform, both free to randomise.

Oh, Fritz and Schiele (ICCV 2017; their Table 4 and its equilibrium) model the owner
choosing a defense and the platform choosing a counter-measure as a two-player zero-sum game
whose payoff is the recognition rate: the platform maximises it, the owner minimises it. A
per-defense worst case answers "which single defense should the owner commit to"; the value
of the game answers "what recognition rate can the platform guarantee when the owner may mix
defenses at random", which is never higher and often lower.

The equilibrium is solved with nashpy's linear program for zero-sum games. The value's
interval is a percentile bootstrap over the probe images: every resample draws the same
images for every cell (the cells are paired), rebuilds the payoff matrix and solves it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.boards.ranking import per_image_union
from harness.runs.outcomes import Outcomes

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
MIX_SHOWN = 0.005  # strategies with less weight are left out of a printed mix


@dataclass(frozen=True)
class Equilibrium:
    """A solved game: the platform's guaranteed payoff and both mixed strategies, with the
    best the owner can do committing to one row (the pure worst case)."""

    value: float
    owner: np.ndarray  # probabilities over rows (defense configs)
    platform: np.ndarray  # probabilities over columns (counter-attacks)
    pure_value: float
    pure_row: int


def _clean(mix: np.ndarray) -> np.ndarray:
    """A solver's strategy as a probability vector (tiny negative round-off removed)."""
    mix = np.clip(np.asarray(mix, dtype=np.float64), 0.0, None)
    return mix / mix.sum()


def solve(payoff: np.ndarray) -> Equilibrium:
    """Equilibrium of the zero-sum game in which ``payoff[i, j]`` is what the platform (column
    player, maximising) gets when the owner (row player, minimising) plays ``i``."""
    import nashpy

    payoff = np.asarray(payoff, dtype=np.float64)
    if payoff.ndim != 2 or 0 in payoff.shape or not np.isfinite(payoff).all():
        raise ValueError(f"a payoff matrix must be finite and 2-D, got shape {payoff.shape}")
    owner, platform = nashpy.Game(-payoff).linear_program()
    owner, platform = _clean(owner), _clean(platform)
    worst = payoff.max(axis=1)
    pure_row = int(worst.argmin())
    return Equilibrium(float(owner @ payoff @ platform), owner, platform, worst[pure_row], pure_row)


def game_value(payoff: np.ndarray) -> float:
    """The value alone, for the bootstrap's thousands of resamples: a pure saddle point when
    there is one, else one linear program (scipy's HiGHS). nashpy's solver finds both players'
    strategies with two programs, which the resamples do not need; the tests check the two
    agree."""
    from scipy.optimize import linprog

    payoff = np.asarray(payoff, dtype=np.float64)
    upper, lower = payoff.max(axis=1).min(), payoff.min(axis=0).max()
    if upper == lower:
        return float(upper)
    rows, cols = payoff.shape
    # variables (x_1..x_rows, v): minimise v with x·payoff[:, j] <= v for every j, sum x = 1
    cost = np.r_[np.zeros(rows), 1.0]
    a_ub = np.c_[payoff.T, -np.ones(cols)]
    a_eq = np.r_[np.ones(rows), 0.0][None, :]
    bounds = [(0, None)] * rows + [(None, None)]
    result = linprog(cost, a_ub, np.zeros(cols), a_eq, [1.0], bounds, method="highs")
    if not result.success:
        raise RuntimeError(f"the game's linear program failed: {result.message}")
    return float(result.x[-1])


def payoff_from_outcomes(eligible: np.ndarray, recognized: np.ndarray) -> np.ndarray:
    """Recognition rates [rows, columns] from per-image bits [rows, columns, images]: the share
    of eligible probes (recognised when clean) still recognised."""
    n = eligible.sum(axis=-1)
    return np.divide(
        (recognized & eligible).sum(axis=-1), n, out=np.full(n.shape, np.nan), where=n > 0
    )


def value_interval(
    eligible: np.ndarray,
    recognized: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the game value, resampling the images (the last axis)
    with replacement, the same draw for every cell."""
    rng = np.random.default_rng(seed)
    n_images = eligible.shape[-1]
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, n_images, n_images)
        payoff = payoff_from_outcomes(eligible[..., pick], recognized[..., pick])
        if np.isfinite(payoff).all():
            values.append(game_value(payoff))
    if not values:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def describe_mix(labels: list[str], mix: np.ndarray) -> str:
    """'a 0.61, b 0.39': the strategies that carry weight, heaviest first."""
    order = np.argsort(-mix, kind="stable")
    return ", ".join(f"{labels[i]} {mix[i]:.2f}" for i in order if mix[i] >= MIX_SHOWN)


@dataclass(frozen=True)
class RecognizerGame:
    """The game of one recognizer over a run's defense configs and counter-attacks."""

    recognizer: str
    defenses: list[str]
    attacks: list[str]
    payoff: np.ndarray
    equilibrium: Equilibrium
    interval: tuple[float, float]
    n: int  # probe images resampled


ALL_MOVES = "all of them (∪)"


def run_games(
    defenses: list[str],
    attacks: list[str],
    recognizers: list[str],
    outcomes: Outcomes,
    kinds: dict[str, str],
) -> list[RecognizerGame]:
    """One game per recognizer whose cells all have per-image outcomes on the same probes. A
    detector's platform has one more pure strategy, running every counter-attack (a face found
    by any counts), as in the ranking's per-image union."""
    games = []
    for rec in recognizers:
        cells = [[outcomes.get((d, a, rec)) for a in attacks] for d in defenses]
        flat = [c for row in cells for c in row]
        if not flat or any(c is None for c in flat) or len({c.ids for c in flat}) != 1:
            continue
        columns = list(attacks)
        if kinds.get(rec) == "detector" and len(attacks) > 1:
            cells = [[*row, per_image_union(row)] for row in cells]
            columns.append(ALL_MOVES)
        eligible = np.array([[c.eligible for c in row] for row in cells], dtype=bool)
        fooled = np.array([[c.fooled for c in row] for row in cells], dtype=bool)
        recognized = eligible & ~fooled
        payoff = payoff_from_outcomes(eligible, recognized)
        if not np.isfinite(payoff).all():
            continue
        games.append(
            RecognizerGame(
                rec,
                defenses,
                columns,
                payoff,
                solve(payoff),
                value_interval(eligible, recognized),
                eligible.shape[-1],
            )
        )
    return games
