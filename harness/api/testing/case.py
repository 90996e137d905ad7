"""The method configuration a conformance check runs on (:class:`Case`) and its inputs: a
small seeded data split, photos as tensors, a context with a cache of its own."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.api.contracts import (
    Context,
    DataSplit,
    ImageSet,
    Recognizer,
    SuiteRecognizer,
)
from harness.api.registry import ALL_REGISTRIES
from harness.core.cache import Cache
from harness.core.keys import Keyring
from harness.core.params import resolve_params

UNIT_ROUNDOFF = 2.0**-24  # float32: each rounded operation errs by at most u, relatively
KINDS = {
    "defense": "defenses",
    "recognizer": "recognizers",
    "attack": "attacks",
    "metric": "metrics",
    "dataset": "datasets",
}
CHECK_KEY = bytes.fromhex("5eed0fc0ffee" * 5 + "ab12")  # 32 bytes no real key ever is
# A case's key for keyed methods (not secret, like a benchmark key).
CASE_KEY = Keyring(bytes(range(101, 133)), None, source="conformance checks (not secret)")


def synthetic_split(
    classes: int = 4, per_class: int = 6, size: int | tuple[int, int] = (28, 37), seed: int = 0
) -> DataSplit:
    """A seeded RGB DataSplit of ``size`` (a side, or height and width; by default neither
    square nor a multiple of any block or stride): each class a colour gradient of its own
    plus noise; half of each class fits and enrolls, the other half are probes."""
    rng = np.random.default_rng(seed)
    height, width = (size, size) if isinstance(size, int) else size
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    images, labels, ids = [], [], []
    for c in range(classes):
        base = rng.uniform(40, 215, 3) + 60 * (ramp - 0.5) * rng.choice([-1, 1], 3)
        for i in range(per_class):
            noise = rng.normal(0, 25, (height, width, 3))
            images.append(np.clip(np.round(base + noise), 0, 255).astype(np.uint8))
            labels.append(c)
            ids.append(f"c{c}-{i}")
    everything = ImageSet(np.stack(images), np.asarray(labels, np.int64), ids)
    fit = [i for i in range(len(ids)) if i % per_class < per_class // 2]
    probe = [i for i in range(len(ids)) if i % per_class >= per_class // 2]
    return DataSplit(
        fit=everything.subset(fit),
        enroll=everything.subset(fit),
        probe=everything.subset(probe),
        protocol="conformance",
        class_names=[f"c{c}" for c in range(classes)],
    )


def as_tensor(images: np.ndarray):
    """uint8 [N, H, W, C] → float32 [N, 3, H, W] in [0, 1], gray replicated."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t.contiguous()


@dataclass
class Case:
    """One method configuration under test. Calling it builds a fresh instance.

    ``params``: the (small) parameters; ``split``: the data it fits on and whose first
    ``photos`` probes it processes (default :func:`synthetic_split`). ``declared``: what the
    contracts do not (yet) declare, overriding the class: ``batch_independent`` (each output
    depends only on its own photo, id and the seed) and, for quality metrics,
    ``full_reference`` (False: the photo is rated alone). ``batch_tolerance``: the most a
    photo processed alone may differ from its output in a batch (absolute, on [0, 1]; derive
    it from the arithmetic). ``recovery_levels``: the most 8-bit levels a reversible
    defense's recovery may miss after an 8-bit upload (None: no promise). ``recognizers``: the
    suite's fitted recognizers, for defenses built against them; ``recognizer``: a fitted
    recognizer for a counter-attack's model side. ``label`` tells two cases of one method
    apart; ``skip`` says why the method cannot run here; ``xfail`` maps a check's name to why
    it is expected to fail.
    """

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    cls: type | None = None
    split: Callable[[], DataSplit] = synthetic_split
    photos: int = 4
    seed: int = 0
    declared: dict[str, bool] = field(default_factory=dict)
    batch_tolerance: float = 8 * UNIT_ROUNDOFF
    recovery_levels: int | None = 0
    recognizers: Callable[[Context], dict[str, SuiteRecognizer]] | None = None
    recognizer: Callable[[Context], Recognizer] | None = None
    label: str = ""
    skip: str | None = None
    xfail: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Case.kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        self._memo: dict[str, Any] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="privbench-checks-"))
        weakref.finalize(self, shutil.rmtree, str(self.workdir), True)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.label or self.name}"

    def __repr__(self) -> str:
        return f"Case({self.id})"

    @property
    def method_class(self) -> type:
        return self.cls or ALL_REGISTRIES[KINDS[self.kind]].get(self.name)

    def resolve(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """``given`` (default: the case's params) validated and completed as the registry
        does it (through the registry itself for a registered method)."""
        given = self.params if given is None else given
        if self.cls is None:
            return ALL_REGISTRIES[KINDS[self.kind]].resolve(self.name, given)
        resolved = resolve_params(self.name, self.cls.params, given)
        check = getattr(self.cls, "check_params", None)
        if callable(check):
            check(resolved)
        return resolved

    def __call__(self, **overrides: Any) -> Any:
        return self.method_class(**self.resolve({**self.params, **overrides}))

    def context(self, cache: str = "shared", keyring: Keyring | None = CASE_KEY) -> Context:
        """A CPU context with the case's seed and a cache of its own (``cache`` names it)."""
        import torch

        ctx = Context(torch.device("cpu"), self.seed, Cache(self.workdir / cache), 16, keyring)
        if self.recognizers is not None:
            ctx.recognizers = self.recognizers(ctx)
        return ctx

    def data(self) -> DataSplit:
        if "split" not in self._memo:
            self._memo["split"] = self.split()
        return self._memo["split"]

    def inputs(self):
        """(images [B, 3, H, W], ids) of the first ``photos`` probes."""
        probe = self.data().probe.subset(list(range(min(self.photos, len(self.data().probe)))))
        return as_tensor(probe.images), list(probe.ids)

    def fitted(self, ctx: Context, method: Any = None) -> Any:
        """A fresh (or the given) instance, fitted as its kind is before use."""
        method = self() if method is None else method
        if self.kind == "defense":
            method.fit(self.data().fit, ctx)
        elif self.kind == "recognizer":
            method.fit(self.data(), ctx)
        elif self.kind == "attack":
            method.fit(self.inputs()[0], ctx)
        return method

    def ready(self) -> tuple[Any, Context]:
        """One fitted instance and its context, shared by the checks of this case."""
        if "ready" not in self._memo:
            ctx = self.context()
            self._memo["ready"] = (self.fitted(ctx), ctx)
        return self._memo["ready"]

    def declares(self, flag: str, default: bool = False) -> bool:
        """``flag`` as the case declares it, else as a fresh instance does (a chain is keyed
        or reversible per instance), else as the class does, else ``default``."""
        if flag in self.declared:
            return self.declared[flag]
        if self.skip is None:
            try:
                return bool(getattr(self(), flag, default))
            except Exception:  # the checks themselves report a constructor that fails
                pass
        return bool(getattr(self.method_class, flag, default))
