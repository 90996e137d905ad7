"""What the owner's ``privbench protect`` / ``recover`` commands may ask of a defense beyond
:class:`~harness.api.contracts.Defense`: its own ids for photo files, and an exact integer path.

These are capabilities, not behaviour with a default: the benchmark never calls them, and a
defense without them is protected through its float ``protect`` under the file's path as id.
A defense has one by defining the methods (k-RTIO does, without naming these classes); the
commands test for it with ``isinstance(defense, PhotoIds)``, and type checkers check the
signatures against these declarations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from harness.core.keys import Keyring


@runtime_checkable
class PhotoIds(Protocol):
    """A defense whose photo files carry ids of its own (k-RTIO: a keyed hash of the pixels,
    so that two photos named alike never share an overlay). Without it the id is the file's
    path below its input folder, without the suffix."""

    def photo_id(self, relative: Path, pixels: np.ndarray, keyring: Keyring) -> str:
        """The id the photo at ``relative`` (its path below the input folder) with these
        pixels is protected under; stored in the protected file's metadata."""
        ...

    def id_from_file_name(self, path: Path) -> str | None:
        """The id of a protected file that carries no metadata, from its name, or None when
        the name cannot give it."""
        ...


@runtime_checkable
class ExactArrays(Protocol):
    """A defense with an exact integer path over a photo's pixels, [H, W, C] uint8 or uint16
    as the file holds them, run without torch (k-RTIO: the 2021 script's arithmetic, bit for
    bit); without it the commands run ``protect``/``recover`` on floats in [0, 1] and round."""

    def protect_array(self, array: np.ndarray, image_id: str, keyring: Keyring) -> np.ndarray:
        """The protected pixels of ``array`` (same shape and dtype)."""
        ...

    def recover_array(self, array: np.ndarray, image_id: str, keyring: Keyring) -> np.ndarray:
        """The recovered pixels of a protected ``array`` (same shape and dtype)."""
        ...
