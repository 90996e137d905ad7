"""``privbench weights``: the pretrained weight files methods read (list, status, add)."""

from __future__ import annotations

import argparse

from harness.core.errors import PrivbenchError
from harness.toolkit import weights


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register weights on the ``privbench`` parser."""
    wt = sub.add_parser("weights", help="pretrained weight files: list, status, add (no downloads)")
    wt.add_argument("action", choices=["list", "status", "add"])
    wt.add_argument("names", nargs="*", help="weight names (add: NAME PATH)")
    wt.set_defaults(func=_cmd_weights)


def _cmd_weights(args: argparse.Namespace) -> int:
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
