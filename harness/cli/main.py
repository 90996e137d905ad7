"""The ``privbench`` command line: run, validate, list, the owner's keygen, protect and
recover, the commands over finished runs, weights and leaderboard; one module per group of
commands (:mod:`harness.cli.run`, :mod:`harness.cli.owner`, :mod:`harness.cli.results`,
:mod:`harness.cli.weights`, :mod:`harness.cli.leaderboard`).

User errors (a broken suite, a missing file, a path the file system refuses) print one clear
message and exit 2, without a traceback; failed cells exit 1 after writing everything that did
finish.
"""

from __future__ import annotations

import argparse
import os
import sys

from harness import __version__
from harness.cli import leaderboard, owner, results, run, weights
from harness.core.errors import PrivbenchError
from harness.core.files import is_storage_error
from harness.core.limits import printable, shorten
from harness.core.signals import SIGINT_EXIT, SIGTERM_EXIT, Terminated, sigterm_raises

# The commands in the order ``privbench --help`` lists them.
COMMAND_GROUPS = (run, owner, results, weights, leaderboard)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
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
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``privbench`` console script.

    Exit status: 0 success, 1 some files or cells failed (the rest is written), 2 bad input
    (one message naming the file, line or field; also a file that a full or read-only disk
    would not take), 3 an unexpected error (a bug: the traceback
    with --debug), 130 / 143 interrupted by Ctrl-C / SIGTERM.

    SIGTERM raises :class:`Terminated` in every command, as Ctrl-C raises KeyboardInterrupt,
    so that temporary folders (an archive unpacked for reading) are removed either way."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_single_values(parser, args)
    with sigterm_raises():
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; its exit status, with user errors, bugs and signals turned into
    one line on stderr and the status :func:`main` documents."""
    try:
        return int(args.func(args))
    except PrivbenchError as exc:
        print(f"error: {printable(shorten(str(exc)))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`privbench list | head`): stop quietly
        _silence_stdout()
        return 0
    except Terminated:
        print("privbench: terminated (SIGTERM)", file=sys.stderr)
        return SIGTERM_EXIT
    except KeyboardInterrupt:
        print("privbench: interrupted", file=sys.stderr)
        return SIGINT_EXIT
    except OSError as exc:  # a path the user gave, or a disk that is full: not a bug
        if args.debug:
            raise
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {printable(shorten(str(exc)))} (this is a "
            "bug in privbench or a plugin; run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 3


def _check_single_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error (exit 2) where argparse gave a list for an argument that takes one
    value, as it does after a second ``--``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[args.command]
    for action in command._actions:
        single = action.nargs is None or action.nargs == "?"
        if single and not action.option_strings and isinstance(getattr(args, action.dest), list):
            command.error(f"{action.metavar or action.dest}: expected one value")


def os_error_message(exc: OSError) -> str:
    """An OSError as one short line: the path, and what the system said about it."""
    what = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else ""
    return printable(shorten(f"{where}: {what}" if where else f"{what} ({exc})"))


def _os_error(exc: OSError) -> str:
    """One line for an OSError that reached the command line: a disk that would not take a
    file says what to do; any other names the path the file system refused."""
    if is_storage_error(exc):
        return (
            f"cannot write {exc.filename or 'a file'}: {exc.strerror}; free space on that disk "
            "(or make the folder writable) and run the command again"
        )
    return os_error_message(exc)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
