"""The photo owner's commands: ``keygen``, ``protect`` and ``recover`` over files and folders.

One bad file is reported and the batch continues; the exit status is 1 if any file failed.
Inputs are never overwritten; existing outputs only with ``--overwrite``. Keys come from
``--key`` (a key file, or the 2021 k-RTIO script's key folder) or the environment, and appear in
no output, log line or message.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness import __version__
from harness.api.contracts import Context, Defense
from harness.api.registry import DEFENSES
from harness.core.cache import Cache
from harness.core.errors import ParamError, PrivbenchError
from harness.core.keys import Keyring, key_from_env, keygen, load_key
from harness.toolkit.photos import IMAGE_SUFFIXES, PNG_COMPRESSION, Photo, read_photo, write_photo


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register keygen, protect and recover on the main parser."""
    kg = sub.add_parser("keygen", help="write a new random key file (mode 0600)")
    kg.add_argument("path", help="where to write the key (never overwritten)")
    kg.add_argument("--bits", type=int, choices=[128, 256], default=256)
    kg.set_defaults(func=_cmd_keygen)
    for name, helptext in (
        ("protect", "protect photos before upload"),
        ("recover", "remove a reversible protection with the key"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
        p.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
        p.add_argument("--defense", default="krtio", help="defense name (default: krtio)")
        p.add_argument(
            "--key",
            help="key file, or the 2021 script's folder with aeskey.bin and "
            "iv.bin (default: $PRIVBENCH_KEY or $PRIVBENCH_KEY_FILE)",
        )
        p.add_argument("--overlays", help="overlay folder (sets --param overlays=DIR)")
        p.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="set a declared parameter of the defense; repeatable",
        )
        p.add_argument(
            "--overwrite", action="store_true", help="replace outputs of an earlier call"
        )
        p.add_argument("--quiet", action="store_true", help="report failures only")
        p.add_argument(
            "--jobs",
            type=int,
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
                type=int,
                metavar="QUALITY",
                help="write JPEG at this quality instead of lossless PNG (recovery "
                "then loses detail; the loss is printed)",
            )
        p.set_defaults(func=_cmd_protect if name == "protect" else _cmd_recover)


def _cmd_keygen(args: argparse.Namespace) -> int:
    path = keygen(args.path, args.bits)
    print(
        f"wrote a {args.bits}-bit key to {path} (mode 0600); keep it: without it nothing can "
        "be recovered"
    )
    return 0


def _parse_params(items: list[str], overlays: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ParamError(f"--param {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        params[name.strip()] = yaml.safe_load(value) if value.strip() else None
    if overlays:
        params["overlays"] = overlays
    return params


def _keyring(args: argparse.Namespace) -> Keyring:
    if args.key:
        return load_key(args.key)
    ring = key_from_env()
    if ring is None:
        raise PrivbenchError(
            "no key: pass --key FILE (create one with `privbench keygen FILE`) "
            "or set $PRIVBENCH_KEY / $PRIVBENCH_KEY_FILE"
        )
    return ring


def _collect(inputs: list[str], out_dir: Path) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image under ``inputs``; refuses an
    output folder inside an input folder and inputs that hold no image."""
    found: list[tuple[Path, Path]] = []
    out = out_dir.resolve()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            if out == p.resolve() or p.resolve() in out.parents:
                raise PrivbenchError(
                    f"OUT_DIR {out_dir} is inside the input folder {p}: the outputs would land "
                    "beside the originals and be processed again by the next call; choose a "
                    "folder outside it"
                )
            images = [f for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise PrivbenchError(
                    f"{p} holds no image files (looked for {', '.join(IMAGE_SUFFIXES)} in it "
                    "and its sub-folders)"
                )
            found += [(f, f.relative_to(p)) for f in images]
        elif p.exists() or p.suffix:
            found.append((p, Path(p.name)))
        else:
            raise PrivbenchError(f"{p}: no such file or folder")
    return found


class _Batch:
    """Shared state of one protect/recover command."""

    def __init__(self, args: argparse.Namespace, recovering: bool) -> None:
        self.args = args
        self.explicit = _parse_params(args.param, args.overlays)
        DEFENSES.resolve(args.defense, self.explicit)  # fail fast on a bad name or value
        cls = DEFENSES.get(args.defense)
        if recovering and not getattr(cls, "reversible", False):
            raise PrivbenchError(f"defense {args.defense!r} is not reversible")
        self.keyring = _keyring(args)
        self.out_dir = Path(args.out_dir)
        self._defenses: dict[str, Defense] = {}
        self._claimed: dict[Path, Path] = {}

    def defense(self, metadata: dict[str, Any]) -> Defense:
        """The defense with explicit params, else the file's recorded ones, else defaults."""
        same = metadata.get("defense") == self.args.defense
        params = dict(metadata.get("params") or {}) if same else {}
        params.update(self.explicit)
        key = repr(sorted(params.items()))
        if key not in self._defenses:
            self._defenses[key] = DEFENSES.create(self.args.defense, params)
        return self._defenses[key]

    def output_path(self, relative: Path, suffix: str, inputs: set[Path]) -> Path:
        out = (self.out_dir / relative).with_suffix(suffix)
        if out.resolve() in inputs:
            raise PrivbenchError(
                f"{out} is an input; choose another OUT_DIR (inputs are never overwritten)"
            )
        if out.exists() and not self.args.overwrite:
            raise PrivbenchError(f"{out} exists; pass --overwrite to replace it")
        return out

    def claim(self, out: Path, source: Path) -> None:
        """Record that ``source`` writes ``out`` in this call; refused if another input does
        (call in input order: :meth:`FileJob.in_order`)."""
        if out.resolve() in self._claimed:
            raise PrivbenchError(
                f"its output {out} is already the output of {self._claimed[out.resolve()]} in "
                "this call (the names differ only in the suffix); rename one of them or "
                "protect it into another folder"
            )
        self._claimed[out.resolve()] = source

    def each(self, files: list[tuple[Path, Path]], handle: Callable[[FileJob], None]) -> int:
        """Run ``handle`` on every file, ``--jobs`` at a time; a file that fails is named with
        the reason and the others go on. Each file's messages are printed together, in input
        order. Ends with a summary; returns the exit status (1 if any file failed)."""
        verb = "protected" if self.args.func is _cmd_protect else "recovered"
        turns = [threading.Event() for _ in files]
        jobs = [FileJob(self, i, path, rel, turns) for i, (path, rel) in enumerate(files)]

        def attempt(job: FileJob) -> FileJob:
            try:
                handle(job)
            except Exception as exc:
                job.error = exc
                job.trace = traceback.format_exc()
            finally:
                job.pass_turn()
            return job

        workers = max(1, min(int(self.args.jobs), len(jobs)))
        with ThreadPoolExecutor(workers, thread_name_prefix="privbench-file") as pool:
            failed = sum(job.print() for job in pool.map(attempt, jobs))
        done = len(files) - failed
        summary = f"privbench: {verb} {done} of {len(files)} files"
        if failed or not self.args.quiet:
            print(summary + (f"; {failed} failed (above)" if failed else ""), file=sys.stderr)
        return 1 if failed else 0


class FileJob:
    """One file of a protect/recover call: its messages, its error, and its turn at the steps
    that must happen in input order (the first of two photos with the same id is the earlier
    one in the input, whichever thread gets there first)."""

    def __init__(
        self, batch: _Batch, index: int, path: Path, relative: Path, turns: list[threading.Event]
    ) -> None:
        self.batch = batch
        self.index = index
        self.path = path
        self.relative = relative
        self.turns = turns
        self.lines: list[tuple[bool, str]] = []  # (to stderr, text)
        self.error: Exception | None = None
        self.trace = ""

    def say(self, text: str, err: bool = False) -> None:
        self.lines.append((err, text))

    def report(self, text: str) -> None:
        if not self.batch.args.quiet:
            self.say(text)

    def read(self, path: Path) -> Photo:
        """The photo at ``path``; what the decoder warned about is printed as a note."""
        photo = read_photo(path)
        for note in photo.notes:
            self.say(f"note: {path}: {note}", err=True)
        return photo

    @contextmanager
    def in_order(self) -> Iterator[None]:
        """A step no file enters before every earlier file has passed it (or failed)."""
        if self.index:
            self.turns[self.index - 1].wait()
        try:
            yield
        finally:
            self.pass_turn()

    def pass_turn(self) -> None:
        self.turns[self.index].set()

    def print(self) -> bool:
        """Print this file's messages and error; True if it failed."""
        for err, text in self.lines:
            print(text, file=sys.stderr if err else sys.stdout)
        if self.error is None:
            return False
        exc = self.error
        text = str(exc) if isinstance(exc, PrivbenchError | OSError) else None
        if text is None:  # not an input problem: a bug worth reporting as such
            text = f"unexpected {type(exc).__name__}: {exc}"
            if getattr(self.batch.args, "debug", False):
                print(self.trace, file=sys.stderr)
        prefix = "" if text.startswith(str(self.path)) else f"{self.path}: "
        print(f"error: {prefix}{text}", file=sys.stderr)
        return True


def photo_id(defense: Defense, relative: Path, photo: Photo, keyring: Keyring) -> str:
    """The id a photo is protected under: the defense's rule if it has one (k-RTIO: a keyed
    hash of the pixels), else the path relative to its input folder, without the suffix."""
    rule = getattr(defense, "photo_id", None)
    if callable(rule):
        return str(rule(relative, photo.pixels, keyring))
    return relative.with_suffix("").as_posix()


def recorded_id(defense: Defense, path: Path, photo: Photo, from_name: bool) -> str:
    """The id a protected file was made under: its privbench metadata, else the defense's rule
    for bare files (the 2021 k-RTIO script's), else the file stem with ``--id-from-name``."""
    if photo.metadata.get("id"):
        return str(photo.metadata["id"])
    rule = getattr(defense, "id_from_file_name", None)
    found = rule(path) if callable(rule) else None
    if found:
        return str(found)
    if from_name:
        return path.stem
    raise PrivbenchError(
        f"{path}: carries no privbench metadata: it was not protected by privbench, or its "
        "metadata was stripped, and the id cannot be derived from the file; files protected "
        "as JPEG by privbench 0.1 used the file name: pass --id-from-name"
    )


def key_check(keyring: Keyring, defense: str, params: dict[str, Any], image_id: str) -> str:
    """The tag stored with a protected photo so that recovery can tell a wrong key (or altered
    metadata) from the right one: HMAC-SHA256 under the key of the defense, its parameters and
    the id, 64 bits in hex. It reveals nothing about the key."""
    message = json.dumps({"defense": defense, "params": params, "id": image_id}, sort_keys=True)
    return keyring.tag("privbench.key-check.v1", message.encode())[:16]


def verify_key(
    batch: _Batch, path: Path, photo: Photo, defense: Defense, image_id: str, job: FileJob
) -> None:
    """Refuse a photo whose stored key check does not match this key."""
    stored = photo.metadata.get("key_check")
    if stored is None:
        if photo.metadata:
            job.say(
                f"note: {path} stores no key check (written by privbench 0.1); the key "
                "cannot be verified",
                err=True,
            )
        return
    expected = key_check(batch.keyring, batch.args.defense, defense.config, image_id)
    if not hmac.compare_digest(str(stored), expected):
        raise PrivbenchError(
            f"{path}: this key is not the one the photo was protected with (or its privbench "
            "metadata was altered); nothing written"
        )


def apply_to_photo(
    defense: Defense, photo: Photo, image_id: str, keyring: Keyring, recovering: bool
) -> np.ndarray:
    """Protect or recover the pixels: the defense's exact integer path when it has one, else
    its float path (gray photos become RGB there)."""
    exact = getattr(defense, "recover_array" if recovering else "protect_array", None)
    if callable(exact):
        return exact(photo.pixels, image_id, keyring)
    # torch is imported here, not at the top: the exact paths (k-RTIO) run without it, and its
    # import is most of an owner command's start-up.
    import torch

    from harness.toolkit.imaging import to_uint8

    ctx = Context(torch.device("cpu"), 0, Cache(enabled=False), 1, keyring)
    scale = float(photo.max_value)
    x = torch.from_numpy(photo.pixels.astype(np.float32) / scale).permute(2, 0, 1)[None]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    fn = defense.recover if recovering else defense.protect
    y = fn(x, [image_id], ctx)
    if photo.pixels.dtype == np.uint8:
        return to_uint8(y)[0]
    return np.round(y.clamp(0, 1)[0].permute(1, 2, 0).numpy() * scale).astype(photo.pixels.dtype)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _cmd_protect(args: argparse.Namespace) -> int:
    batch = _Batch(args, recovering=False)
    files = _collect(args.inputs, batch.out_dir)
    inputs = {f.resolve() for f, _ in files}
    suffix = ".jpg" if args.jpeg is not None else ".png"
    ids: dict[str, tuple[Path, str]] = {}  # id -> (first file, its pixel digest)

    def protect(job: FileJob) -> None:
        path, relative = job.path, job.relative
        out = batch.output_path(relative, suffix, inputs)
        photo = job.read(path)
        defense = batch.defense({})
        image_id = photo_id(defense, relative, photo, batch.keyring)
        digest = hashlib.sha256(photo.pixels.tobytes()).hexdigest()
        with job.in_order():
            first = ids.setdefault(image_id, (path, digest))
            if first[1] != digest:
                raise PrivbenchError(
                    f"{path} gets the same image id as {first[0]} (the legacy scheme's id is "
                    "the file name), so both would carry the same overlay and two uploads "
                    "would cancel it; protect them in separate calls with different keys, or "
                    "use the pets2021 scheme"
                )
            batch.claim(out, path)
        protected = apply_to_photo(defense, photo, image_id, batch.keyring, recovering=False)
        metadata = {
            "privbench": __version__,
            "defense": args.defense,
            "params": defense.config,
            "id": image_id,
            "key_check": key_check(batch.keyring, args.defense, defense.config, image_id),
        }
        result = replace(photo, pixels=protected, metadata=metadata)
        write_photo(out, result, args.jpeg, args.png_compression)
        job.report(f"protected {path} -> {out}")
        if args.jpeg is not None and defense.reversible:
            back = apply_to_photo(defense, read_photo(out), image_id, batch.keyring, True)
            lossless = apply_to_photo(defense, result, image_id, batch.keyring, True)
            job.say(
                f"note: {out} is JPEG q{args.jpeg}: recovery from it reaches "
                f"{_psnr(back, photo.pixels, photo.max_value):.1f} dB PSNR, against "
                f"{_psnr(lossless, photo.pixels, photo.max_value):.1f} dB from a PNG"
            )

    return batch.each(files, protect)


def _cmd_recover(args: argparse.Namespace) -> int:
    batch = _Batch(args, recovering=True)
    files = _collect(args.inputs, batch.out_dir)
    inputs = {f.resolve() for f, _ in files}

    def recover(job: FileJob) -> None:
        path = job.path
        out = batch.output_path(job.relative, ".png", inputs)
        photo = job.read(path)
        recorded = photo.metadata.get("defense")
        if recorded is not None and recorded != args.defense:
            raise PrivbenchError(
                f"{path} was protected with {recorded!r}, not {args.defense!r}; "
                f"pass --defense {recorded}"
            )
        defense = batch.defense(photo.metadata)
        image_id = recorded_id(defense, path, photo, args.id_from_name)
        verify_key(batch, path, photo, defense, image_id, job)
        with job.in_order():
            batch.claim(out, path)
        recovered = apply_to_photo(defense, photo, image_id, batch.keyring, recovering=True)
        write_photo(out, replace(photo, pixels=recovered, metadata={}), None, args.png_compression)
        job.report(f"recovered {path} -> {out}")

    return batch.each(files, recover)
