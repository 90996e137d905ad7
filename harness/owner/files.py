"""What a ``protect`` or ``recover`` call is asked: its options, the photo files under its
inputs, the defense's parameters and the owner's key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import ParamError, PrivbenchError
from harness.core.keys import Keyring, key_from_env, load_key
from harness.toolkit.photos import IMAGE_SUFFIXES, PNG_COMPRESSION


@dataclass(frozen=True)
class FileOptions:
    """One protect or recover call (``privbench protect|recover --help`` says what each
    means)."""

    inputs: list[str]
    out_dir: Path
    defense: str = "krtio"
    key: str | None = None
    overlays: str | None = None
    params: list[str] = field(default_factory=list)  # NAME=VALUE
    overwrite: bool = False
    quiet: bool = False
    jobs: int = 1
    png_compression: int = PNG_COMPRESSION
    debug: bool = False
    jpeg: int | None = None  # protect: JPEG at this quality instead of PNG
    id_from_name: bool = False  # recover: a bare file's id is its name
    index: str | None = None  # the photo index (default: beside the key)


def parse_params(items: list[str], overlays: str | None) -> dict[str, Any]:
    """``NAME=VALUE`` items (values read as YAML) and ``--overlays`` as parameters."""
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ParamError(f"--param {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        params[name.strip()] = yaml.safe_load(value) if value.strip() else None
    if overlays:
        params["overlays"] = overlays
    return params


def keyring_for(key: str | None) -> Keyring:
    """The key of ``--key``, else of the environment; PrivbenchError saying how to get one."""
    if key:
        return load_key(key)
    ring = key_from_env()
    if ring is None:
        raise PrivbenchError(
            "no key: pass --key FILE (create one with `privbench keygen FILE`) "
            "or set $PRIVBENCH_KEY / $PRIVBENCH_KEY_FILE"
        )
    return ring


def collect(inputs: list[str], out_dir: Path) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image under ``inputs``; refuses an
    output folder inside (or equal to) an input folder, an input folder inside the output
    folder, and inputs that hold no image."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += _folder_images(p, out_dir)
        elif p.exists() or p.suffix:
            found.append((p, Path(p.name)))
        else:
            raise PrivbenchError(f"{p}: no such file or folder")
    return found


def _folder_images(folder: Path, out_dir: Path) -> list[tuple[Path, Path]]:
    out = out_dir.resolve()
    if out == folder.resolve() or folder.resolve() in out.parents:
        raise PrivbenchError(
            f"OUT_DIR {out_dir} is inside the input folder {folder}: the outputs would land "
            "beside the originals and be processed again by the next call; choose a "
            "folder outside it"
        )
    if out in folder.resolve().parents:
        raise PrivbenchError(
            f"the input folder {folder} is inside OUT_DIR {out_dir}: the outputs would land "
            "among the inputs' folders and be read again by the next call; choose an OUT_DIR "
            "that does not hold the input"
        )
    images = [f for f in sorted(folder.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise PrivbenchError(
            f"{folder} holds no image files (looked for {', '.join(IMAGE_SUFFIXES)} in it "
            "and its sub-folders)"
        )
    return [(f, f.relative_to(folder)) for f in images]
