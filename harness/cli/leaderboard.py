"""``privbench leaderboard``: a run's leaderboard drawn again, or one of several runs merged."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.core.errors import PrivbenchError
from harness.runs.folder import Run
from harness.runs.outcomes import Outcomes


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register leaderboard on the ``privbench`` parser."""
    lb = sub.add_parser(
        "leaderboard",
        help="re-render a run's leaderboard, or merge several runs into one",
        description="Print the leaderboard of RUN_DIR (a run folder or a submission archive), or "
        "with --merge one leaderboard of several runs or archives measured on the same images "
        "with the same recognizers, counter-attacks and metrics; others are refused, naming "
        "the difference.",
    )
    lb.add_argument("run_dir", nargs="?", help="a results/<suite>/<run-id> folder or archive")
    lb.add_argument("--merge", nargs="+", metavar="RUN_OR_ARCHIVE", help="runs to merge")
    lb.add_argument("-o", "--output", help="with --merge: also write the merged run folder here")
    lb.add_argument("--name", help="with --merge: the merged leaderboard's name")
    lb.add_argument("--format", choices=["md", "csv"], default="md")
    lb.set_defaults(func=_cmd_leaderboard)


def _merged(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]], Outcomes]:
    """The runs of ``--merge`` as one (written to ``--output`` when given)."""
    from harness.analysis.merge import merge_runs, write_merged  # scipy: start-up

    merged = merge_runs([Run.load(Path(p)) for p in args.merge], args.name)
    if args.output:
        target = write_merged(merged, Path(args.output))
        print(f"privbench: merged run in {target}", file=sys.stderr)
    return merged.manifest, merged.rows, merged.outcomes


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    # scipy (the ranking's tests): imported when a leaderboard is drawn, not for --help
    from harness.boards.leaderboard import render_csv, render_markdown

    if bool(args.run_dir) == bool(args.merge):
        raise PrivbenchError("give one RUN_DIR, or --merge RUN_OR_ARCHIVE ... (two or more)")
    if args.merge:
        manifest, rows, outcomes = _merged(args)
    else:
        if args.output:
            raise PrivbenchError("-o/--output goes with --merge")
        run = Run.load(Path(args.run_dir))
        manifest, rows, outcomes = run.manifest, run.rows, run.outcomes
    print(render_csv(rows) if args.format == "csv" else render_markdown(manifest, rows, outcomes))
    return 0
