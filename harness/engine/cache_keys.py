"""Every cache key of a run, derived in one place from everything its result depends on.

:meth:`harness.core.cache.Cache.key` adds the code and the compute device to every key. This module
adds the rest, per kind of result:

- a method (defense, recognizer, counter-attack) is its class, declared ``version``, resolved
  parameters, the digest of the file that defines it (so an edited plugin is a new method) and
  its :meth:`~harness.api.contracts.Method.dependencies` (model files, overlay images by digest);
- a keyed defense's result depends on the owner's key, which enters only as
  :meth:`~harness.core.keys.Keyring.key_id`, a keyed hash: never the key, nor a plain hash of it;
- protected images depend on the defense, the data split, the seed and the upload format;
- a timing depends on the protected images' inputs, the machine that measured it and the timing
  protocol;
- a fitted recognizer depends on the split, the seed and the precision it runs at;
- a cell's predictions depend on the protected images, the counter-attack and the recognizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.core.cache import content_key
from harness.core.errors import PrivbenchError
from harness.core.identity import method_identity

if TYPE_CHECKING:
    from harness.api.contracts import Context, Defense, Method


def protected_parts(
    defense: Defense, split_fingerprint: str, role: str, ctx: Context, upload: dict[str, Any]
) -> dict[str, Any]:
    """Protected and uploaded images of one split ``role`` (probe, fit)."""
    parts: dict[str, Any] = {
        "defense": method_identity(defense),
        "split": split_fingerprint,
        "role": role,
        "seed": ctx.seed,
        "upload": upload,
    }
    if defense.keyed:
        if ctx.keyring is None:
            raise PrivbenchError(f"{type(defense).__name__} is keyed but the run has no key")
        parts["key_id"] = ctx.keyring.key_id()
    return parts


def timing_parts(
    protected_key: str, host: dict[str, Any], protocol: dict[str, Any]
) -> dict[str, Any]:
    """Protect latency of the protected images ``protected_key`` names, on this host, under
    this timing protocol."""
    return {"protected": protected_key, "host": host, "protocol": protocol}


def recognizer_identity(
    recognizer: Method, split_fingerprint: str, seed: int, precision: str
) -> str:
    """A fitted recognizer: what it is, what it was fitted on, the seed and its precision. How
    predictions are scored (``reference``) does not change the model, so it is left out."""
    return content_key(
        "recognizer",
        {
            "state": method_identity(recognizer, exclude=("reference",)),
            "split": split_fingerprint,
            "seed": seed,
            "precision": precision,
        },
    )


def cell_parts(
    protected_key: str, attack: Method, recognizer_key: str, adapted_on: str | None
) -> dict[str, Any]:
    """A cell's predictions: protected images, counter-attack, fitted recognizer, and (for a
    counter-attack that adapts the recognizer) the protected fit images it adapted on."""
    return {
        "protected": protected_key,
        "attack": method_identity(attack),
        "recognizer": recognizer_key,
        "adapted_on": adapted_on,
    }
