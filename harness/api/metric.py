"""The metric contract: a metric turns records into a value with n and an interval, and
declares what the boards need to show and test it (role, direction, paired test, format).

Importable from :mod:`harness.api.contracts` too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from harness.api.method import Method

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MetricValue:
    """A measured value with its sample size and confidence interval (None when undefined).

    ``ci_level`` is the interval's real coverage (0.95 unless too few measurements allow it);
    ``extra`` holds JSON-ready facts the row carries besides (e.g. where a timing was made).
    """

    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    note: str = ""
    ci_level: float = 0.95
    extra: dict[str, Any] = field(default_factory=dict)


MetricScope = Literal["cell", "defense", "recognizer"]
MetricRole = Literal[
    "privacy",
    "recognition",
    "detection",
    "utility_loss",
    "clean",
    "quality",
    "recovery",
    "cost",
    "target",
    "other",
]
PairedTest = Literal["mcnemar", "bootstrap", "none"]


@dataclass(frozen=True)
class MetricFormat:
    """How boards print a metric's values.

    ``style``: ``percent`` (a share, printed ×100), ``number`` or ``flag`` (1 = yes, 0 = NO);
    ``digits``: decimals in tables; ``delta_digits``: decimals of a paired difference
    (``privbench compare``); ``unit_label``: the unit as column headers print it (None: the
    metric's ``unit``).
    """

    style: Literal["percent", "number", "flag"] = "number"
    digits: int = 3
    delta_digits: int = 4
    unit_label: str | None = None


PERCENT = MetricFormat("percent", 1, 1)
NUMBER = MetricFormat()


class Metric(Method, ABC):
    """Takes records, returns a :class:`MetricValue`.

    ``scope`` says which records: 'cell' (per-image recognition outcomes of one defense ×
    counter-attack × recognizer), 'defense' (per-image quality values and timings of one defense
    config), 'recognizer' (clean outcomes of one recognizer). ``parity`` holds the settings that
    define the number (e.g. SSIM window), written into the results.

    What the boards (leaderboard, report, compare, check) do with the metric they read from
    its declaration, which the runner writes into the manifest (:meth:`describe`), never from
    its name:

    - ``role``: what it measures. ``privacy``: the share of probes a defense fools (the evade
      ranking's score; its per-image values are the cell outcomes' fooled bits);
      ``recognition``: the share the platform recognises (the conceal ranking's accuracies);
      ``detection``: the share in which a face is still found; ``utility_loss``: what the
      owner's trusted target loses (the conceal ranking's tolerance); ``clean``: a recognizer
      on clean photos; ``quality``: the upload against the original (the ranking's quality
      column and floor, compare, check); ``recovery``: what the owner gets back against the
      original; ``cost``: time or storage; ``target``: whether a learned defense reached its
      own target (the leaderboard warns when not); ``other``: shown in tables only.
    - ``higher_is_better``: the direction.
    - ``paired_test``: how two runs' values are compared on the same probes. ``mcnemar``: exact
      McNemar on the cell outcomes' fooled bits (the privacy metric); ``bootstrap``: paired
      BCa bootstrap interval and sign-flip permutation test on the per-image values (a
      :class:`QualityMetric`); ``none``: not compared. ``gate_tolerance``: the drop
      ``privbench check`` accepts in a quality mean (None: not checked).
    - ``display``: how values are printed (:class:`MetricFormat`); ``headline``: the metric of
      its role that boards show where there is room for one (the ranking's quality column,
      the conceal ranking's quality and cost columns, the report's trade-off plots).
    """

    scope: ClassVar[MetricScope] = "cell"
    role: ClassVar[MetricRole] = "other"
    higher_is_better: ClassVar[bool] = True
    unit: ClassVar[str] = ""
    paired_test: ClassVar[PairedTest] = "none"
    gate_tolerance: ClassVar[float | None] = None
    display: ClassVar[MetricFormat | None] = None  # None: by scope (see :meth:`display_format`)
    headline: ClassVar[bool] = False
    parity: ClassVar[dict[str, Any]] = {}
    display_order: ClassVar[int] = 100  # position in default metric lists and leaderboards
    needs_timing: ClassVar[bool] = False  # the runner times protect() only if a metric asks
    by_default: ClassVar[bool] = True  # in a suite's metrics when it lists none
    objectives: ClassVar[tuple[str, ...]] = ("evade", "conceal")  # ... of suites with these
    kinds: ClassVar[tuple[str, ...] | None] = None  # the recognizer kinds it scores; None: all
    key: str = ""  # the suite label of this metric instance, set by the runner

    @classmethod
    def display_format(cls) -> MetricFormat:
        """The declared :attr:`display`; by default a share in percent for cell and recognizer
        metrics, a number with three decimals for defense metrics."""
        if cls.display is not None:
            return cls.display
        return NUMBER if cls.scope == "defense" else PERCENT

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The declaration boards read (role, paired test, gate tolerance, display, headline),
        JSON-ready: the runner adds it to the manifest's ``metrics``, beside ``scope``,
        ``higher_is_better`` and ``unit``, so a run folder renders without the metric
        installed."""
        return {
            "role": cls.role,
            "paired_test": cls.paired_test,
            "gate_tolerance": cls.gate_tolerance,
            "display": asdict(cls.display_format()),
            "headline": cls.headline,
        }

    @abstractmethod
    def compute(self, records: Any) -> MetricValue:
        """Aggregate records into a value with n and CI."""


class QualityMetric(Metric, ABC):
    """A per-image comparison of original and protected images, averaged with a t-interval.

    With ``recovery = True`` the comparison is between the original and what the owner recovers
    from the upload (reversible defenses only), after an optional JPEG re-encoding.
    """

    scope: ClassVar[MetricScope] = "defense"
    role: ClassVar[MetricRole] = "quality"
    paired_test: ClassVar[PairedTest] = "bootstrap"
    recovery: ClassVar[bool] = False
    jpeg_quality: int | None = None

    @abstractmethod
    def per_image(self, original: torch.Tensor, protected: torch.Tensor) -> np.ndarray:
        """float64 [B] values for a batch."""
