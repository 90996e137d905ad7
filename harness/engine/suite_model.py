"""What a validated suite is (:class:`Suite`, :class:`MethodConfig`) and the keys and values a
suite file may hold (:mod:`harness.engine.suite` documents the schema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.core.params import Param

TOP_LEVEL = (
    "name",
    "description",
    "include",
    "seed",
    "device",
    "objective",
    "dataset",
    "recognizers",
    "defenses",
    "counter_attacks",
    "metrics",
    "upload",
    "batch_size",
    "precision",
    "target_drop_tolerance",
    "quality_floor",
)
REQUIRED = ("dataset", "recognizers", "defenses")
METHOD_KEYS = ("name", "params", "label")
OBJECTIVES = ("evade", "conceal")

SCALARS: dict[str, Param] = {
    "seed": Param(int, 0, "master seed of the run (numpy's range)", low=0, high=2**32 - 1),
    "batch_size": Param(int, 64, "images per batch", low=1, high=100000),
    "precision": Param(
        str,
        "fp32",
        "torch recognizers run under autocast unless fp32",
        choices=("fp32", "bf16", "fp16"),
    ),
    "target_drop_tolerance": Param(
        float,
        0.05,
        "conceal suites: the largest drop of the target's accuracy (a share) for a defense to "
        "be ranked",
        low=0.0,
        high=1.0,
    ),
}
UPLOAD: dict[str, Param] = {
    "format": Param(
        str, "png", "how protected photos are uploaded", choices=("png", "jpeg", "rgb565")
    ),
    "quality": Param(int, 95, "JPEG quality when format is jpeg", low=1, high=100),
}
QUALITY_FLOOR: dict[str, Param] = {
    "metric": Param(str, "ssim", "a defense-scope quality metric of the suite (ssim, psnr, nima)"),
    "min": Param(float, 0.5, "the floor a ranked defense's 95% interval of that metric must clear"),
}


@dataclass(frozen=True)
class MethodConfig:
    """One fully resolved method: registry name, every parameter (defaults filled), a label."""

    name: str
    params: dict[str, Any]
    label: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (used in manifests and cache keys)."""
        return {"name": self.name, "params": self.params, "label": self.label}


@dataclass
class Suite:
    """A validated, expanded suite."""

    name: str
    path: str
    sha256: str
    description: str
    seed: int
    device: str
    objective: str
    dataset: MethodConfig
    recognizers: list[MethodConfig]
    defenses: list[MethodConfig]
    counter_attacks: list[MethodConfig]
    metrics: list[MethodConfig]
    upload: dict[str, Any]
    batch_size: int
    precision: str = "fp32"
    target_drop_tolerance: float = 0.05
    quality_floor: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    smoke: bool = False  # cut by harness.engine.smoke: a code-path check, not a measurement

    def resolved(self) -> dict[str, Any]:
        """The resolved configuration written into the manifest."""
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "device": self.device,
            "objective": self.objective,
            "dataset": self.dataset.as_dict(),
            "recognizers": [m.as_dict() for m in self.recognizers],
            "defenses": [m.as_dict() for m in self.defenses],
            "counter_attacks": [m.as_dict() for m in self.counter_attacks],
            "metrics": [m.as_dict() for m in self.metrics],
            "upload": self.upload,
            "batch_size": self.batch_size,
            "precision": self.precision,
            **(
                {"target_drop_tolerance": self.target_drop_tolerance}
                if self.objective == "conceal"
                else {}
            ),
            **({"quality_floor": self.quality_floor} if self.quality_floor else {}),
            **({"smoke": True} if self.smoke else {}),
        }

    @property
    def n_cells(self) -> int:
        """Number of (defense config, counter-attack, recognizer) cells."""
        return len(self.defenses) * len(self.counter_attacks) * len(self.recognizers)
