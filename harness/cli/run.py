"""``privbench run``, ``validate`` and ``list``: suites and the methods they name."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api.registry import ALL_REGISTRIES, Registry
from harness.cli.arg_types import positive
from harness.core.errors import ParamError, PrivbenchError
from harness.core.keys import load_key
from harness.core.limits import GRID_CELLS, printable, shorten
from harness.core.paths import SEGMENT_RULE, segment_problem
from harness.core.signals import SIGINT_EXIT, SIGTERM_EXIT, Terminated
from harness.engine.suite import Suite, load_suite
from harness.runs.folder import RunFolder

if TYPE_CHECKING:
    from harness.engine.runner import RunOptions, RunResult


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register run, validate and list on the ``privbench`` parser."""
    _add_run(sub)
    val = sub.add_parser("validate", help="check suites without running them")
    val.add_argument("suites", nargs="+", help="suite YAML files")
    val.add_argument(
        "--ready", action="store_true", help="exit 1 if a valid suite cannot run on this machine"
    )
    _add_max_cells(val)
    val.set_defaults(func=_cmd_validate)

    lst = sub.add_parser("list", help="registered methods and their parameters")
    lst.add_argument("kind", nargs="?", choices=list(ALL_REGISTRIES))
    lst.set_defaults(func=_cmd_list)


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run a suite; print its summary and where its report is")
    run.add_argument("suite", help="suite YAML file")
    run.add_argument("--out", default="results", help="results root (default: results)")
    run.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="override the suite's device"
    )
    _add_cache_options(run)
    run.add_argument(
        "--smoke",
        action="store_true",
        help="check that every method of the suite runs: a few probes, the fewest steps, a "
        "cold cache of its own; missing weights are skipped and listed; numbers mean nothing",
    )
    run.add_argument(
        "--run-id",
        type=_run_id,
        help=f"name of the run folder, {SEGMENT_RULE} (default: UTC time + suite hash + random)",
    )
    again = run.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the folder of an existing --run-id, if it is a run folder privbench "
        "made (anything else is left alone and refused)",
    )
    again.add_argument(
        "--resume",
        action="store_true",
        help="finish the run of --run-id in its folder (one stopped by a full disk, a signal or "
        "a crash): units already done come from the cache",
    )
    _add_output_options(run)
    run.add_argument(
        "--key",
        help="path of a key file for keyed defenses (default: $PRIVBENCH_KEY, "
        "$PRIVBENCH_KEY_FILE, else a benchmark key derived from the seed); never the key "
        "itself: a command line is kept in shell history and shown by ps",
    )
    run.add_argument(
        "--executor",
        choices=["local", "dask"],
        default="local",
        help="local: this process (default); dask: a Dask cluster, see --scheduler",
    )
    run.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler (tcp://host:8786); without it --executor "
        "dask starts a LocalCluster for the run",
    )
    run.add_argument(
        "--workers",
        type=positive,
        help="worker processes of the LocalCluster (default: one per core, or one per GPU)",
    )
    _add_max_cells(run)
    run.set_defaults(func=_cmd_run)


def _add_output_options(run: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose`` (what is printed) and ``--html`` / ``--no-html``."""
    said = run.add_mutually_exclusive_group()
    said.add_argument(
        "--quiet",
        action="store_true",
        help="print only errors: no progress bar, no summary",
    )
    said.add_argument(
        "--verbose",
        action="store_true",
        help="print the whole leaderboard (leaderboard.md) before the summary, and every "
        "failure and skip",
    )
    run.add_argument(
        "--html",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write report.html at the end, as privbench report does (default; a few seconds)",
    )


def _run_id(value: str) -> str:
    """``--run-id``, checked before anything is made: one folder name under the suite's."""
    problem = segment_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(
            f"{shorten(repr(value), 160)} is not {SEGMENT_RULE} ({problem})"
        )
    return value


def _add_max_cells(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        GRID_CELLS.flag or "--max-cells",
        type=positive,
        metavar="N",
        help=f"refuse a suite of more than N cells, counted before its grids are expanded "
        f"(default: ${GRID_CELLS.env}, else {GRID_CELLS.default:,})",
    )


def _add_cache_options(run: argparse.ArgumentParser) -> None:
    """``--cache {auto,off,required}`` and its old spelling ``--no-cache``."""
    run.add_argument(
        "--cache",
        choices=["auto", "off", "required"],
        default="auto",
        help="auto: use the cache folder, and if it cannot be written warn once and go on "
        "storing nothing (default); off: recompute everything; required: stop before the run "
        "if the cache folder cannot be written",
    )
    run.add_argument(
        "--no-cache", dest="cache", action="store_const", const="off", help="--cache off"
    )


def _run_options(args: argparse.Namespace, suite: Suite) -> RunOptions:
    # torch: the engine is imported when a run starts, not for --help
    from harness.engine.executors import make_executor
    from harness.engine.runner import RunOptions

    executor = make_executor(
        args.executor, args.scheduler, args.workers, args.device or suite.device
    )
    return RunOptions(
        executor=executor,
        overwrite=args.overwrite,
        resume=args.resume,
        keyring=load_key(args.key) if args.key else None,
        out_root=Path(args.out),
        use_cache=args.cache != "off",
        cache_required=args.cache == "required",
        progress=not args.quiet and sys.stderr.isatty(),
        run_id=args.run_id,
        device=args.device,
        smoke=args.smoke,
    )


def _run(suite: Suite, options: RunOptions) -> RunResult | int:
    """The run's result, or the exit status of a run that ended early (Ctrl-C, SIGTERM, a
    smoke run that nothing of the suite could make)."""
    # torch and the boards: imported when a run starts, not for --help
    from harness.cli.wiring import run_with_leaderboard
    from harness.engine.smoke import SmokeSkipped

    try:
        return run_with_leaderboard(suite, options)
    except SmokeSkipped as skipped:
        for line in skipped.plan.skipped_lines():
            print(f"privbench: smoke: skipped {line}", file=sys.stderr)
        print(f"privbench: smoke: nothing of {suite.name} can run on this machine", file=sys.stderr)
        return 0
    except KeyboardInterrupt as exc:
        by = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"privbench: {by}; finished cells are saved and cached; --run-id RUN_ID --resume "
            "finishes the run",
            file=sys.stderr,
        )
        return SIGTERM_EXIT if isinstance(exc, Terminated) else SIGINT_EXIT


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume and (not args.run_id or args.smoke):
        raise PrivbenchError("--resume needs the --run-id of the run to finish (and no --smoke)")
    suite = load_suite(args.suite, args.max_cells)
    options = _run_options(args, suite)
    if not args.quiet:
        print(
            f"privbench: {suite.name}: {len(suite.defenses)} defense configs × "
            f"{len(suite.counter_attacks)} counter-attacks × {len(suite.recognizers)} "
            f"recognizers = {suite.n_cells} cells",
            file=sys.stderr,
        )
    result = _run(suite, options)
    if isinstance(result, int):
        return result
    report = None
    if args.html:
        from harness.boards.report import write_report  # scipy, matplotlib: only after a run

        report = write_report(result.run_dir)
    if not args.quiet:
        _print_summary(result.run_dir, args.verbose, report)
    return _failures(result, args)


def _print_summary(run_dir: Path, verbose: bool, report: Path | None) -> None:
    """The whole board first if ``verbose``; then the summary (stdout)."""
    from harness.cli.wiring import run_summary  # the boards: imported once a run has finished

    if verbose:
        print(RunFolder(run_dir).leaderboard_file.read_text(encoding="utf-8"))
    hint = None if report else f"privbench report {shlex.quote(str(run_dir))} writes it"
    print("\n".join(run_summary(run_dir, report, hint)))


def _failures(result: RunResult, args: argparse.Namespace) -> int:
    """The exit status; on stderr, with --quiet (where no summary names them), --verbose or
    --debug, every failure (tracebacks with --debug) and every config a smoke run skipped."""
    every = args.quiet or args.verbose or args.debug
    for f in result.failures if every else []:
        print(f"privbench: {f['scope']} {f['name']!r} failed: {f['error']}", file=sys.stderr)
        if args.debug:
            print(f["traceback"], file=sys.stderr)
    if result.failures and not args.debug:
        print("privbench: run with --debug to see the tracebacks", file=sys.stderr)
    for s in result.info.skipped if args.smoke and every else []:
        print(f"privbench: smoke: skipped {s['scope']} {s['name']}", file=sys.stderr)
    return 1 if result.failures else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.suites:
        try:
            suite = load_suite(path, args.max_cells)
        except PrivbenchError as exc:
            print(f"error: {printable(shorten(str(exc)))}", file=sys.stderr)
            status = 2
            continue
        status = max(status, _readiness(path, suite, args.ready))
    return status


def _readiness(path: str, suite: Suite, ready: bool) -> int:
    """Print whether ``suite`` can run here and what it would skip; 1 if it cannot run and
    ``ready`` asks that it can."""
    # torch: the readiness checks live with the engine, imported only when a suite is valid
    from harness.engine.runner import missing_requirements, optional_missing

    lacking = missing_requirements(suite)
    for line in lacking:
        print(f"{path}: NOT READY on this machine: {line}")
    for line in optional_missing(suite):
        print(f"{path}: will be skipped on this machine: {line}")
    shape = (
        f"{suite.name}: {suite.n_cells} cells = {len(suite.defenses)} defense configs × "
        f"{len(suite.counter_attacks)} counter-attacks × {len(suite.recognizers)} recognizers"
    )
    if lacking:
        print(f"{path}: valid, but not ready here ({shape}); `run` will refuse it")
        return 1 if ready else 0
    print(f"{path}: ok, ready ({shape})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(ALL_REGISTRIES)
    for kind in kinds:
        registry = ALL_REGISTRIES[kind]
        print(f"{kind}:")
        for name, cls in registry.loadable().items():
            _describe(registry, name, cls)
        print()
    return 0


def _describe(registry: Registry[Any], name: str, cls: type[Any]) -> None:
    """One method: its summary, whether it is ready here, its parameters."""
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    print(f"  {name}: {' '.join(doc.split())}")
    if cls.checks_readiness():
        try:
            lacking = cls.missing(registry.resolve(name, {}))
        except ParamError:  # required parameters (chain's steps): depends on them
            lacking = []
        ready = "ready on this machine" if not lacking else "NOT READY: " + " | ".join(lacking)
        print(f"      {ready}")
    for pname, param in cls.params.items():
        print(f"      {pname}: {param.describe()}" + (f": {param.help}" if param.help else ""))
