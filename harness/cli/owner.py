"""The photo owner's commands: ``keygen``, ``protect`` and ``recover`` (the work is done by
:mod:`harness.owner.protect`)."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path

from harness.cli.arg_types import positive, whole
from harness.core.keys import keygen
from harness.owner.files import FileOptions
from harness.owner.protect import protect_files, recover_files
from harness.toolkit.photos import PNG_COMPRESSION


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register keygen, protect and recover on the ``privbench`` parser."""
    kg = sub.add_parser("keygen", help="write a new random key file (mode 0600)")
    kg.add_argument("path", help="where to write the key (never overwritten)")
    kg.add_argument("--bits", type=int, choices=[128, 256], default=256)
    kg.set_defaults(func=_cmd_keygen)
    for name, helptext in (
        ("protect", "protect photos before upload"),
        ("recover", "remove a reversible protection with the key"),
    ):
        p = sub.add_parser(name, help=helptext)
        _add_file_options(p)
        p.add_argument(
            "--index",
            metavar="PATH",
            help=(
                "the photo index that recognises photos whose metadata a platform stripped "
                "(default: beside the key; docs/security.md says where): "
                + (
                    "protect adds every output's perceptual hash and id to it"
                    if name == "protect"
                    else "used for files without privbench metadata, also re-encoded (JPEG "
                    "quality 75 or more) or resized (to half size or more)"
                )
            ),
        )
        if name == "recover":
            p.add_argument(
                "--id-from-name",
                action="store_true",
                help="for files without privbench metadata: the id is the file name without "
                "its suffix (files protected as JPEG by privbench 0.1)",
            )
        if name == "protect":
            p.add_argument(
                "--jpeg",
                type=whole(1, 100),
                metavar="QUALITY",
                help="write JPEG at this quality instead of lossless PNG (recovery "
                "then loses detail; the loss is printed)",
            )
        p.set_defaults(func=_cmd_protect if name == "protect" else _cmd_recover)


def _add_file_options(p: argparse.ArgumentParser) -> None:
    """What protect and recover share."""
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    p.add_argument("--defense", default="krtio", help="defense name (default: krtio)")
    p.add_argument(
        "--key",
        help="path of a key file, or of the 2021 script's folder with aeskey.bin and "
        "iv.bin (default: $PRIVBENCH_KEY or $PRIVBENCH_KEY_FILE); never the key itself: a "
        "command line is kept in shell history and shown by ps",
    )
    p.add_argument("--overlays", help="overlay folder (sets --param overlays=DIR)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        dest="params",
        metavar="NAME=VALUE",
        help="set a declared parameter of the defense; repeatable",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier call")
    p.add_argument("--quiet", action="store_true", help="report failures only")
    p.add_argument(
        "--jobs",
        type=positive,
        default=os.cpu_count() or 1,
        metavar="N",
        help="files in flight at once: decoding, protecting and encoding overlap in N "
        "threads (default: one per core); messages still come in input order",
    )
    p.add_argument(
        "--png-compression",
        type=int,
        choices=range(10),
        default=PNG_COMPRESSION,
        metavar="0-9",
        help=f"zlib level of written PNGs (default {PNG_COMPRESSION}); higher levels "
        "write smaller files more slowly, the pixels are the same",
    )


def _options(args: argparse.Namespace) -> FileOptions:
    given = vars(args)
    wanted = {f.name: given[f.name] for f in fields(FileOptions) if f.name in given}
    return FileOptions(**{**wanted, "out_dir": Path(args.out_dir)})


def _cmd_keygen(args: argparse.Namespace) -> int:
    path = keygen(args.path, args.bits)
    print(
        f"wrote a {args.bits}-bit key to {path} (mode 0600); keep it: without it nothing can "
        "be recovered"
    )
    return 0


def _cmd_protect(args: argparse.Namespace) -> int:
    return protect_files(_options(args))


def _cmd_recover(args: argparse.Namespace) -> int:
    return recover_files(_options(args))
