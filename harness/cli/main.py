"""The ``privbench`` command line: run, validate, list, weights, leaderboard, and the owner's
keygen, protect and recover (:mod:`harness.owner.commands`).

User errors (a broken suite, a missing file) print one clear message and exit 2, without a
traceback; failed cells exit 1 after writing everything that did finish.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.core.errors import ParamError, PrivbenchError


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.core.keys import load_key
    from harness.engine.executors import make_executor
    from harness.engine.runner import RunOptions, Terminated, run_suite
    from harness.engine.smoke import SmokeSkipped
    from harness.engine.suite import load_suite

    suite = load_suite(args.suite)
    executor = make_executor(
        args.executor, args.scheduler, args.workers, args.device or suite.device
    )
    options = RunOptions(
        executor=executor,
        overwrite=args.overwrite,
        keyring=load_key(args.key) if args.key else None,
        out_root=Path(args.out),
        use_cache=not args.no_cache,
        progress=not args.quiet and sys.stderr.isatty(),
        run_id=args.run_id,
        device=args.device,
        smoke=args.smoke,
    )
    print(
        f"privbench: {suite.name}: {len(suite.defenses)} defense configs × "
        f"{len(suite.counter_attacks)} counter-attacks × {len(suite.recognizers)} recognizers "
        f"= {suite.n_cells} cells",
        file=sys.stderr,
    )
    try:
        result = run_suite(suite, options)
    except SmokeSkipped as skipped:
        for line in skipped.plan.skipped_lines():
            print(f"privbench: smoke: skipped {line}", file=sys.stderr)
        print(f"privbench: smoke: nothing of {suite.name} can run on this machine", file=sys.stderr)
        return 0
    except Terminated:
        print("privbench: terminated (SIGTERM); finished cells are saved", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("privbench: interrupted; finished cells are saved and cached", file=sys.stderr)
        return 130
    if not args.quiet:
        print((result.run_dir / "leaderboard.md").read_text(encoding="utf-8"))
    if args.html:
        from harness.boards.report import write_report

        print(f"privbench: report in {write_report(result.run_dir)}", file=sys.stderr)
    print(
        f"privbench: results in {result.run_dir} ({result.manifest['duration_s']} s)",
        file=sys.stderr,
    )
    for f in result.failures:
        print(f"privbench: {f['scope']} {f['name']!r} failed: {f['error']}", file=sys.stderr)
        if args.debug:
            print(f["traceback"], file=sys.stderr)
    if result.failures and not args.debug:
        print("privbench: run with --debug to see the tracebacks", file=sys.stderr)
    for s in result.manifest.get("skipped", []) if args.smoke else []:
        print(f"privbench: smoke: skipped {s['scope']} {s['name']}", file=sys.stderr)
    return 1 if result.failures else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from harness.engine.runner import missing_requirements, optional_missing
    from harness.engine.suite import load_suite

    status = 0
    for path in args.suites:
        try:
            suite = load_suite(path)
        except PrivbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
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
            if args.ready:
                status = max(status, 1)
        else:
            print(f"{path}: ok, ready ({shape})")
    return status


def _cmd_list(args: argparse.Namespace) -> int:
    from harness.api.registry import ALL_REGISTRIES

    kinds = [args.kind] if args.kind else list(ALL_REGISTRIES)
    for kind in kinds:
        registry = ALL_REGISTRIES[kind]
        print(f"{kind}:")
        for name in registry.names():
            cls = registry.get(name)
            doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            print(f"  {name}: {' '.join(doc.split())}")
            if hasattr(cls, "missing"):
                try:
                    lacking = cls.missing(registry.resolve(name, {}))
                except ParamError:  # required parameters (chain's steps): depends on them
                    lacking = []
                print(
                    "      ready on this machine"
                    if not lacking
                    else "      NOT READY: " + " | ".join(lacking)
                )
            for pname, param in getattr(cls, "params", {}).items():
                print(
                    f"      {pname}: {param.describe()}" + (f": {param.help}" if param.help else "")
                )
        print()
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from harness.toolkit import weights

    if args.action == "add":
        if len(args.names) != 2:
            raise PrivbenchError("usage: privbench weights add NAME PATH")
        target = weights.add(args.names[0], args.names[1])
        print(f"added {args.names[0]}: {target}")
        return 0
    names = args.names or list(weights.catalogue())
    worst = 0
    for name in names:
        w = weights.get(name)
        if args.action == "list":
            print(
                f"{w.name}: {w.filename} (used by {', '.join(w.used_by)}; {w.licence})\n"
                f"    source: {w.source}" + (f"\n    {w.note}" if w.note else "")
            )
        else:
            state, detail = weights.status(name)
            worst = max(worst, 0 if state == "ready" else 1)
            print(f"{name}: {state}: {detail}")
    print(f"weights folder: {weights.weights_dir()}")
    return worst


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.boards.leaderboard import render_csv, render_markdown
    from harness.runs.folder import Run

    if bool(args.run_dir) == bool(args.merge):
        raise PrivbenchError("give one RUN_DIR, or --merge RUN_OR_ARCHIVE ... (two or more)")
    if args.merge:
        from harness.analysis.merge import merge_runs, write_merged

        merged = merge_runs([Run.load(Path(p)) for p in args.merge], args.name)
        manifest, rows, outcomes = merged.manifest, merged.rows, merged.outcomes
        if args.output:
            target = write_merged(merged, Path(args.output))
            print(f"privbench: merged run in {target}", file=sys.stderr)
    else:
        if args.output:
            raise PrivbenchError("-o/--output goes with --merge")
        run = Run.load(Path(args.run_dir))
        manifest, rows, outcomes = run.manifest, run.rows, run.outcomes
    print(render_csv(rows) if args.format == "csv" else render_markdown(manifest, rows, outcomes))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from harness import __version__
    from harness.api.registry import ALL_REGISTRIES

    parser = argparse.ArgumentParser(
        prog="privbench",
        description="Benchmark image-privacy "
        "defenses against real recognizers and counter-attacks.",
    )
    parser.add_argument("--version", action="version", version=f"privbench {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print tracebacks of failures and unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite and print its leaderboard")
    run.add_argument("suite", help="suite YAML file")
    run.add_argument("--out", default="results", help="results root (default: results)")
    run.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="override the suite's device"
    )
    run.add_argument("--no-cache", action="store_true", help="recompute everything")
    run.add_argument(
        "--smoke",
        action="store_true",
        help="check that every method of the suite runs: a few probes, the fewest steps, a "
        "cold cache of its own; missing weights are skipped and listed; numbers mean nothing",
    )
    run.add_argument(
        "--run-id", help="name of the run folder (default: UTC time + suite hash + random)"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace the folder of an existing --run-id"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar, no leaderboard print")
    run.add_argument(
        "--html", action="store_true", help="also write report.html (privbench report)"
    )
    run.add_argument(
        "--key",
        help="key file for keyed defenses (default: $PRIVBENCH_KEY, "
        "$PRIVBENCH_KEY_FILE, else a benchmark key derived from the seed)",
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
        type=int,
        help="worker processes of the LocalCluster (default: one per core, or one per GPU)",
    )
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check suites without running them")
    val.add_argument("suites", nargs="+", help="suite YAML files")
    val.add_argument(
        "--ready", action="store_true", help="exit 1 if a valid suite cannot run on this machine"
    )
    val.set_defaults(func=_cmd_validate)

    lst = sub.add_parser("list", help="registered methods and their parameters")
    lst.add_argument("kind", nargs="?", choices=list(ALL_REGISTRIES))
    lst.set_defaults(func=_cmd_list)

    from harness.cli import results as results_cli
    from harness.owner import commands as owner_cli

    owner_cli.add_commands(sub)
    results_cli.add_commands(sub)

    wt = sub.add_parser("weights", help="pretrained weight files: list, status, add (no downloads)")
    wt.add_argument("action", choices=["list", "status", "add"])
    wt.add_argument("names", nargs="*", help="weight names (add: NAME PATH)")
    wt.set_defaults(func=_cmd_weights)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``privbench`` console script.

    Exit status: 0 success, 1 some files or cells failed (the rest is written), 2 bad input
    (one message naming the file, line or field), 3 an unexpected error (a bug: the traceback
    with --debug), 130 / 143 interrupted by Ctrl-C / SIGTERM."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PrivbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`privbench list | head`): stop quietly
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("privbench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (this is a bug in privbench or a "
            "plugin; run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 3


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
