"""``privbench`` commands over finished runs: report, compare, baseline, check and submit; and
new-defense, which starts a plugin (the ``run``-side commands live in :mod:`harness.cli.run`)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from harness.analysis.submission import pack
from harness.cli.arg_types import non_negative, probability
from harness.cli.scaffold import names_for, new_defense
from harness.core.errors import PrivbenchError
from harness.core.files import atomic_write_text, read_regular_file
from harness.core.limits import BASELINE_BYTES
from harness.core.paths import check_apart
from harness.runs.archive import read_archive
from harness.runs.folder import Run
from harness.runs.sealed import check_finished


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.boards.report import write_report  # scipy and matplotlib: start-up

    path = write_report(Path(args.run_dir))
    print(f"privbench: wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from harness.analysis.compare import compare, render  # scipy: start-up

    a = _finished(Path(args.run_a), "compared")
    if args.defenses:
        if args.run_b:
            raise PrivbenchError("give either RUN_B or --defenses A B (two rows of one run)")
        pairs = [(args.defenses[0], args.defenses[1])]
        b = a
    else:
        if not args.run_b:
            raise PrivbenchError("give RUN_B, or --defenses A B to compare two rows of RUN_A")
        b, pairs = _finished(Path(args.run_b), "compared"), None
    if pairs:
        labels = sorted({r["defense"] for r in a.rows if r["defense"]})
        for d in pairs[0]:
            if d not in labels:
                raise PrivbenchError(
                    f"{d!r} is not a defense config of {a.source}; configs: {', '.join(labels)}"
                )
    differences = compare(a, b, pairs)
    print(f"run = {a.source}\n" if b is a else f"A = {a.source}\nB = {b.source}\n")
    print(render(differences, args.alpha))
    return 0


def _finished(path: Path, verb: str, accept: tuple[str, ...] = ("complete", "failed")) -> Run:
    """The run in ``path`` if its status is one of ``accept`` (``failed``: it finished, and
    lists the cells that failed) and it measured something; else UnsealedRunError saying its
    status and how to finish it."""
    run = Run.load(path).require_results()
    if run.info.status not in accept:
        check_finished(run.source or path, run.path, run.info, verb)
    return run


def _cmd_baseline(args: argparse.Namespace) -> int:
    from harness.analysis.gate import make_baseline  # scipy: start-up

    run = _finished(Path(args.run_dir), "taken as a baseline", accept=("complete",))
    baseline = make_baseline(run, args.cells)
    text = json.dumps(baseline, indent=1, sort_keys=True)
    if args.output:
        write_baseline(Path(args.output), text + "\n", [Path(args.run_dir), run.path])
    else:
        print(text)
    return 0


def write_baseline(out: Path, text: str, inputs: list[Path]) -> None:
    """``text`` into ``out`` atomically, outside the run it was made from; an existing file is
    replaced only if it is a privbench baseline (a link of that name is refused)."""
    check_apart(out, inputs, "baseline file")
    if os.path.lexists(out) and not _is_baseline(out):
        raise PrivbenchError(
            f"{out} exists and is not a privbench baseline (a link, a folder or another "
            "file); privbench replaces only its own baselines: choose another -o, or move it "
            "away yourself"
        )
    atomic_write_text(out, text)  # a full disk: main's named storage error


def _is_baseline(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a baseline ``privbench baseline`` wrote."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        data = json.loads(read_regular_file(path, BASELINE_BYTES.value(), "baseline file"))
    except (PrivbenchError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and {"schema", "cells", "suite"} <= set(data)


def _cmd_check(args: argparse.Namespace) -> int:
    from harness.analysis.baseline_file import read_baseline
    from harness.analysis.gate import check, render  # scipy: start-up

    baseline = read_baseline(Path(args.baseline))
    findings = check(
        _finished(Path(args.run_dir), "checked"),
        baseline,
        alpha=args.alpha,
        tolerance=args.tolerance,
        quality_tolerance={"ssim": args.ssim_tolerance, "psnr": args.psnr_tolerance},
    )
    print(render(findings))
    return 1 if any(f.failed for f in findings) else 0


def _env_commands() -> dict[str, str]:
    """How to call this environment's pip, python and privbench: bare names when its bin
    folder is what ``PATH`` finds (an active environment), else that folder's paths
    (``.venv/bin/pip`` from the repository root), so the next steps install into the
    environment that runs privbench rather than whatever ``pip`` the shell finds first."""
    bin_dir = Path(sys.executable).parent
    try:
        shown = bin_dir.relative_to(Path.cwd())
    except ValueError:
        shown = bin_dir
    found = shutil.which("privbench")
    active = found is not None and Path(found).parent == bin_dir
    prefix = "" if active else f"{shown}{os.sep}"
    pip = f"{prefix}pip" if (bin_dir / "pip").exists() else f"{prefix}python -m pip"
    return {"pip": pip, "python": f"{prefix}python", "privbench": f"{prefix}privbench"}


def _cmd_new_defense(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    written = new_defense(args.name, target)
    names = names_for(args.name)
    cmd = _env_commands()
    print(f"privbench: wrote {len(written)} files into {target}:")
    for path in written:
        print(f"  {path}")
    suite = target / "suites" / (args.name + ".yaml")
    print(
        f"next:\n  {cmd['pip']} install -e {target}\n"
        f"  {cmd['python']} -m pytest {target / 'tests'}\n"
        f"  {cmd['privbench']} run {suite} --run-id {args.name}\n"
        f"  {cmd['privbench']} submit results/{args.name}/{args.name}\n"
        f"(the defense class is {names['package']}.defense.{names['cls']})"
    )
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    path = pack(Path(args.run_dir), Path(args.output) if args.output else None, args.with_source)
    index, members = read_archive(path)  # what was written reads back and verifies
    plugins = ", ".join(
        f"{p['distribution']} {p['version']} (sources {p['sha256'][:12]})" for p in index["plugins"]
    )
    print(
        f"privbench: wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {len(members)} files "
        f"verified): suite {index['suite']['name']} `{index['suite']['sha256'][:12]}`, data "
        f"`{str(index['data']['fingerprint'])[:12]}`, plugins: {plugins or 'none'}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register report, compare, baseline, check, new-defense and submit on the ``privbench``
    parser."""
    rep = sub.add_parser("report", help="write a run's self-contained report.html (opens offline)")
    rep.add_argument("run_dir", help="a results/<suite>/<run-id> folder")
    rep.set_defaults(func=_cmd_report)
    _add_compare(sub)
    _add_baseline(sub)
    _add_check(sub)
    new = sub.add_parser(
        "new-defense",
        help="scaffold a defense as an installable plugin package (with tests and a suite)",
    )
    new.add_argument("name", help="the defense's name in suites, e.g. my-noise")
    new.add_argument("dir", help="folder to create (new or empty)")
    new.set_defaults(func=_cmd_new_defense)
    _add_submit(sub)


def _add_compare(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmp = sub.add_parser(
        "compare",
        help="paired differences of two runs (or two defense configs of one run)",
        description="For each shared (defense, counter-attack, recognizer) cell: the fooling "
        "rate difference B − A by an exact McNemar test on the per-image outcomes, SSIM and "
        "PSNR by a paired bootstrap; Holm-corrected. Runs on different data or protocols are "
        "refused.",
    )
    cmp.add_argument("run_a", help="results/<suite>/<run-id> folder (A)")
    cmp.add_argument("run_b", nargs="?", help="second run folder (B)")
    cmp.add_argument(
        "--defenses", nargs=2, metavar=("A", "B"), help="compare two defense configs of RUN_A"
    )
    cmp.add_argument(
        "--alpha", type=probability, default=0.05, help="significance level in (0, 1) (0.05)"
    )
    cmp.set_defaults(func=_cmd_compare)


def _add_baseline(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    base = sub.add_parser(
        "baseline",
        help="store a run's per-image outcomes as a CI baseline (JSON on stdout)",
    )
    base.add_argument("run_dir")
    base.add_argument(
        "--cells",
        nargs="+",
        metavar="PATTERN",
        help="only cells whose 'defense × counter-attack × recognizer' matches (shell patterns)",
    )
    base.add_argument("-o", "--output", help="write to this file instead of stdout")
    base.set_defaults(func=_cmd_baseline)


def _add_check(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    chk = sub.add_parser(
        "check",
        help="CI gate: exit 1 if a defense got worse than the baseline",
        description="Exit 0 when every baseline cell holds; 1 when a fooling rate dropped "
        "significantly (exact McNemar at --alpha) or by more than --tolerance, or a quality "
        "mean dropped by more than its tolerance; 2 when the run and baseline do not match.",
    )
    chk.add_argument("run_dir")
    chk.add_argument("--baseline", required=True, help="file written by privbench baseline")
    chk.add_argument(
        "--alpha", type=probability, default=0.05, help="significance level in (0, 1) (0.05)"
    )
    chk.add_argument(
        "--tolerance",
        type=non_negative,
        default=0.05,
        help="largest fooling-rate drop (a share, ≥ 0)",
    )
    chk.add_argument("--ssim-tolerance", type=non_negative, default=0.01, help="≥ 0")
    chk.add_argument("--psnr-tolerance", type=non_negative, default=0.5, help="dB, ≥ 0")
    chk.set_defaults(func=_cmd_check)


def _add_submit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sbm = sub.add_parser(
        "submit",
        help="pack a finished run into a verified submission archive (.tar.gz)",
        description="The archive holds the run's results, manifest and per-image records, the "
        "suite files, each plugin's name, version and sha256 of its source files, the suite "
        "hash, the data fingerprint and the environment. The installed plugins must still be "
        "the code that made the run.",
    )
    sbm.add_argument("run_dir", help="a results/<suite>/<run-id> folder")
    sbm.add_argument("-o", "--output", help="archive path (default: <suite>-<run-id>.tar.gz)")
    sbm.add_argument(
        "--with-source", action="store_true", help="also pack the plugins' source files"
    )
    sbm.set_defaults(func=_cmd_submit)
