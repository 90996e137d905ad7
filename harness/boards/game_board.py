"""The game section of the leaderboard and the report: per recognizer, the zero-sum game of
owner against platform (:mod:`harness.boards.game`) as a summary and payoff matrices."""

from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

from harness.boards.game import RecognizerGame, describe_mix, run_games
from harness.boards.ranking import Ranking
from harness.runs.outcomes import Outcomes


@dataclass(frozen=True)
class GameView:
    """The game section's parts, for the Markdown leaderboard and the HTML report alike."""

    intro: str
    summary: tuple[list[str], list[list[str]]]
    matrices: list[tuple[str, list[str], list[list[str]]]]  # recognizer, header, body


def game_view(ranking: Ranking, outcomes: Outcomes) -> GameView | None:
    """The zero-sum game per recognizer over the configs that clear the quality floor and have
    a black-box cell to rank on, or None when no recognizer has a complete game. Computed once
    a run has finished: it bootstraps."""
    defenses = [r.defense for r in ranking.rows if r.clears_floor and r.ranking_cells]
    if not defenses or not ranking.attacks:
        return None
    games = run_games(defenses, ranking.attacks, ranking.recognizers, outcomes, ranking.kinds)
    if not games:
        return None
    body = []
    for g in games:
        eq = g.equilibrium
        body.append(
            [
                g.recognizer,
                f"{100 * eq.value:.1f} [{100 * g.interval[0]:.1f}, {100 * g.interval[1]:.1f}]",
                f"{100 * eq.pure_value:.1f}",
                describe_mix(g.defenses, eq.owner),
                describe_mix(g.attacks, eq.platform),
            ]
        )
    header = ["recognizer", "value: recognition %", "pure worst case", "owner mixes"]
    header.append("platform mixes")
    intro = (
        "Per recognizer, a zero-sum game (Oh, Fritz and Schiele, ICCV 2017): the owner picks one "
        f"of the {len(defenses)} ranked defense configs, the platform one of the "
        f"{len(ranking.attacks)} counter-attacks (a detector's also all of them at once), each "
        "possibly at random; the payoff is the recognition rate. The value is the rate the "
        "platform can guarantee however the owner mixes; the best pure worst case is what the "
        "owner gets committing to one config. Solved by nashpy's linear program; 95% "
        "percentile bootstrap interval over the probes "
        f"({games[0].n} images, 1000 resamples, the same draw for every cell). Below, each "
        "payoff matrix in %, with each side's equilibrium weights."
    )
    return GameView(intro, (header, body), [payoff_matrix(g) for g in games])


def payoff_matrix(game: RecognizerGame) -> tuple[str, list[str], list[list[str]]]:
    """One recognizer's payoff matrix (recognition %), the owner's weights as the last column
    and the platform's as the last row; counter-attacks by letter."""
    eq = game.equilibrium
    letters = [chr(ord("A") + i) for i in range(len(game.attacks))]
    header = ["owner ↓ platform →", *letters, "owner's mix"]
    body = [
        [d, *(f"{100 * v:.1f}" for v in row), f"{w:.2f}"]
        for d, row, w in zip(game.defenses, game.payoff, eq.owner, strict=True)
    ]
    body.append(["platform's mix", *(f"{w:.2f}" for w in eq.platform), f"= {100 * eq.value:.1f}"])
    key = ", ".join(f"{x} = {a}" for x, a in zip(letters, game.attacks, strict=True))
    return f"{game.recognizer} ({key})", header, body


def game_section(ranking: Ranking, outcomes: Outcomes) -> list[str]:
    """The game section in Markdown (empty when there is no game)."""
    view = game_view(ranking, outcomes)
    if view is None:
        return []
    lines = ["## The game: owner against platform", "", view.intro, ""]
    lines += [
        tabulate(
            view.summary[1], headers=view.summary[0], tablefmt="github", disable_numparse=True
        ),
        "",
    ]
    for title, header, body in view.matrices:
        table = tabulate(body, headers=header, tablefmt="github", disable_numparse=True)
        lines += [f"**{title}**", "", table, ""]
    return lines
