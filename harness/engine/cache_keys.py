"""Every cache key of a run, derived in one place from everything its result depends on.

:meth:`harness.core.cache.Cache.key` adds the code and the compute device to every key. This module
adds the rest, one function per kind of result (:data:`KEY_KINDS` lists them), and names the
engine modules that compute each kind: a key holds the code version of those modules and of
what they import (:mod:`harness.core.code_version`), so editing any other module keeps it.

- a method (defense, recognizer, counter-attack) is its class, declared ``version``, resolved
  parameters, the code version of its module (its source and what it imports, so an edited
  method or plugin is a new method) and its :meth:`~harness.api.contracts.Method.dependencies`
  (model files, overlay images by digest);
- a keyed defense's result depends on the owner's key, which enters only as
  :meth:`~harness.core.keys.Keyring.key_id`, a keyed hash: never the key, nor a plain hash of it;
- protected images depend on the defense, the data split, the seed and the upload format;
- a timing depends on the protected images' inputs, the machine that measured it and the timing
  protocol;
- a fitted recognizer depends on the split, the seed and the precision it runs at;
- a cell's predictions depend on the protected images, the counter-attack and the recognizer.

Methods that cache their own fits (a trained network, a gallery, a learned perturbation) make
those keys themselves: methods do not import the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.core.cache import content_key
from harness.core.code_version import declare_kind_code
from harness.core.errors import PrivbenchError
from harness.core.identity import method_identity

if TYPE_CHECKING:
    import numpy as np

    from harness.api.contracts import Context, Defense, Method


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


def predictions_parts(recognizer_key: str, on: str) -> dict[str, Any]:
    """A fitted recognizer's predictions on the clean images of one split role (probe,
    negatives)."""
    return {"recognizer": recognizer_key, "on": on}


def protected_parts(
    defense: Defense, split_fingerprint: str, role: str, ctx: Context, upload: dict[str, Any]
) -> dict[str, Any]:
    """Protected and uploaded images of one split ``role`` (probe, fit), as a whole."""
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


def protected_identity(parts: dict[str, Any]) -> str:
    """The identity of a whole set of protected images (:func:`protected_parts`): what the keys
    of everything made from them name, whichever shards it was stored in."""
    return content_key("protected", parts)


def protected_shard_parts(parts: dict[str, Any], rows: slice) -> dict[str, Any]:
    """One shard of protected images: the whole set's parts and the shard's row range."""
    return {**parts, "rows": [rows.start, rows.stop]}


def quality_parts(protected_key: str, metrics: Mapping[str, Method]) -> dict[str, Any]:
    """Per-image quality of protected images (and of what is recovered from them) under the
    quality metrics, by the suite's labels."""
    identities = {n: method_identity(m) for n, m in metrics.items()}
    return {"protected": protected_key, "metrics": identities}


def timing_parts(
    protected_key: str, host: dict[str, Any], protocol: dict[str, Any]
) -> dict[str, Any]:
    """Protect latency of the protected images ``protected_key`` names, on this host, under
    this timing protocol."""
    return {"protected": protected_key, "host": host, "protocol": protocol}


def sample_parts(protected_key: str, idx: np.ndarray) -> dict[str, Any]:
    """The report's sample rows ``idx`` of protected images; also the key of what the owner
    recovers from those rows."""
    return {"protected": protected_key, "idx": idx.tolist()}


def countered_sample_parts(protected_key: str, attack: Method, idx: np.ndarray) -> dict[str, Any]:
    """The report's sample rows ``idx`` of protected images after a counter-attack."""
    return {"protected": protected_key, "attack": method_identity(attack), "idx": idx.tolist()}


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


@dataclass(frozen=True)
class KeyKind:
    """One kind of key: the ``kind`` it is stored or hashed under, the function here that
    assembles it, what it depends on (for docs/architecture.md's key table) and the engine
    modules that compute it (``code``: with what they import, the key's code version)."""

    kind: str
    make: Callable[..., Any]
    description: str
    code: tuple[str, ...]


# The engine modules that compute each kind. A kind whose key names another kind's result (a
# cell names its protected images and fitted recognizer) lists that kind's modules too, since
# the nested identity (content_key) holds no code version of its own. Methods' modules are not
# listed: each method's identity holds the code version of its own module.
FIT_CODE = ("harness.engine.setup",)  # fits recognizers (set_up_recognizer)
PREDICT_CODE = (*FIT_CODE, "harness.engine.inference")
PROTECT_CODE = ("harness.engine.protect", "harness.engine.shards")
CELL_CODE = (*PROTECT_CODE, *PREDICT_CODE, "harness.engine.cells", "harness.engine.streaming")

# Every kind of key the engine makes, by kind name. "recognizer" and the whole-set "protected"
# identity are hashed into other keys (content_key); the others name cache entries (Cache.key).
KEY_KINDS: tuple[KeyKind, ...] = (
    KeyKind(
        "recognizer",
        recognizer_identity,
        "a fitted recognizer's identity (nested in other keys): the method without its "
        "scoring reference, the split, the seed and the precision",
        FIT_CODE,
    ),
    KeyKind(
        "predictions",
        predictions_parts,
        "a recognizer's clean predictions: its identity and the split role (probe, negatives)",
        PREDICT_CODE,
    ),
    KeyKind(
        "protected",
        protected_shard_parts,
        "one shard of protected, uploaded images: the defense, the split, the role, the seed, "
        "the upload format, the key's id for a keyed defense, and the shard's rows; the "
        "whole set's identity (protected_identity, nested in other keys) leaves out the rows",
        PROTECT_CODE,
    ),
    KeyKind(
        "quality",
        quality_parts,
        "per-image quality and recovery quality: the protected images and the quality "
        "metrics' identities",
        (*PROTECT_CODE, "harness.engine.quality"),
    ),
    KeyKind(
        "timing",
        timing_parts,
        "protect latency: the protected images, the host that measured it and the timing protocol",
        (*PROTECT_CODE, "harness.engine.latency"),
    ),
    KeyKind(
        "protected-samples",
        sample_parts,
        "the report's sample rows of the protected images: the protected images and the rows",
        (*PROTECT_CODE, "harness.engine.samples"),
    ),
    KeyKind(
        "recovered-samples",
        sample_parts,
        "what the owner recovers from the report's sample rows: the protected images and the rows",
        (*PROTECT_CODE, "harness.engine.samples"),
    ),
    KeyKind(
        "countered-samples",
        countered_sample_parts,
        "the report's sample rows after a counter-attack: the protected images, the "
        "counter-attack and the rows",
        CELL_CODE,
    ),
    KeyKind(
        "cell",
        cell_parts,
        "a cell's predictions: the protected images, the counter-attack, the fitted "
        "recognizer, and the protected fit images an adaptive counter-attack adapted on",
        CELL_CODE,
    ),
)

for _kind in KEY_KINDS:
    declare_kind_code([_kind.kind], _kind.code)
