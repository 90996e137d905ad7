"""Which id a photo is protected under, and the key check stored with it."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

from harness.api.contracts import Defense
from harness.api.photo_files import PhotoIds
from harness.core.errors import PrivbenchError
from harness.core.keys import Keyring
from harness.toolkit.photos import Photo


def photo_id(defense: Defense, relative: Path, photo: Photo, keyring: Keyring) -> str:
    """The id a photo is protected under: the defense's rule if it has one (k-RTIO: a keyed
    hash of the pixels), else the path relative to its input folder, without the suffix."""
    if isinstance(defense, PhotoIds):
        return str(defense.photo_id(relative, photo.pixels, keyring))
    return relative.with_suffix("").as_posix()


def recorded_id(defense: Defense, path: Path, photo: Photo, from_name: bool, hint: str = "") -> str:
    """The id a protected file was made under: its privbench metadata, else the defense's rule
    for bare files (the 2021 k-RTIO script's), else the file stem with ``--id-from-name``;
    ``hint`` ends the message when there is none."""
    if photo.metadata.get("id"):
        return str(photo.metadata["id"])
    found = defense.id_from_file_name(path) if isinstance(defense, PhotoIds) else None
    if found:
        return str(found)
    if from_name:
        return path.stem
    raise PrivbenchError(
        f"{path}: carries no privbench metadata: it was not protected by privbench, or its "
        "metadata was stripped, and the id cannot be derived from the file; files protected "
        f"as JPEG by privbench 0.1 used the file name: pass --id-from-name{hint}"
    )


def key_check(keyring: Keyring, defense: str, params: dict[str, Any], image_id: str) -> str:
    """The tag stored with a protected photo so that recovery can tell a wrong key (or altered
    metadata) from the right one: HMAC-SHA256 under the key of the defense, its parameters and
    the id, 64 bits in hex. It reveals nothing about the key."""
    message = json.dumps({"defense": defense, "params": params, "id": image_id}, sort_keys=True)
    return keyring.tag("privbench.key-check.v1", message.encode())[:16]


def verify_key(
    keyring: Keyring, name: str, defense: Defense, path: Path, photo: Photo, image_id: str
) -> str | None:
    """Refuse a photo whose stored key check does not match this key (defense ``name``); a
    note to print when the photo stores no check."""
    stored = photo.metadata.get("key_check")
    if stored is None:
        if photo.metadata:
            return (
                f"note: {path} stores no key check (written by privbench 0.1); the key "
                "cannot be verified"
            )
        return None
    expected = key_check(keyring, name, defense.config, image_id)
    if not hmac.compare_digest(str(stored), expected):
        raise PrivbenchError(
            f"{path}: this key is not the one the photo was protected with (or its privbench "
            "metadata was altered); nothing written"
        )
    return None
