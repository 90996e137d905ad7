"""A run with its leaderboard: the one place that wires the engine to the boards.

The engine writes a run folder and draws no leaderboard itself (it sits below the boards, see
docs/architecture.md, "Layers"); :func:`run_with_leaderboard` runs a suite with the boards'
Markdown leaderboard as its sink, so ``leaderboard.md`` is redrawn while the run goes and
written at the end. ``privbench run`` runs through it; so may any Python caller that wants the
folder ``privbench run`` writes. :func:`run_summary` is the closing summary ``privbench run``
prints of a finished run (:mod:`harness.boards.summary`, with the verdict's lines).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.boards.leaderboard import render_markdown
from harness.boards.roles import build_ranking
from harness.boards.summary import podiums, summary_lines
from harness.boards.verdict import verdict_lines
from harness.engine.runner import RunOptions, RunResult, run_suite
from harness.engine.suite import Suite
from harness.runs.folder import Run


def run_with_leaderboard(suite: Suite, options: RunOptions | None = None) -> RunResult:
    """:func:`harness.engine.runner.run_suite` drawing ``leaderboard.md`` with
    :func:`harness.boards.leaderboard.render_markdown` (unless ``options.board`` names another
    sink)."""
    options = options or RunOptions()
    if options.board is None:
        options = dataclasses.replace(options, board=render_markdown)
    return run_suite(suite, options)


def run_summary(run_dir: Path, report: Path | None, report_hint: str | None) -> list[str]:
    """The closing summary ``privbench run`` prints (:func:`harness.boards.summary.summary_lines`)
    of the run in ``run_dir``, with its verdict; ``report``: the report written, else
    ``report_hint`` says how to write it."""
    run = Run.load(run_dir)
    ranking = None
    if run.info.objective != "conceal":  # built once, for the verdict and the podiums
        ranking = build_ranking(run.manifest, run.rows, run.outcomes)
    verdict = verdict_lines(run, ranking)
    return summary_lines(run, verdict, report, report_hint, podiums(run, ranking))
