"""The run's progress bar (tqdm, on stderr): cells done of the plan's, and what runs now.

The bar counts cells as the units tick them. Its text names the step: the set-up (data set and
recognizers), then the defense config being run when the executor runs the units one after
the other in plan order (``in_plan_order``, the local executor), else how many units are
done; then the writing of the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

from harness.core.limits import shorten
from harness.engine.plan import WorkUnit

LABEL_CHARS = 40  # a defense label is cut to this in the bar, which must fit one line


class RunProgress:
    """A tqdm bar over ``n_cells`` cells of ``units``; ``in_plan_order``: the units run one
    after the other in plan order, so the one running is the first not done."""

    def __init__(
        self,
        name: str,
        n_cells: int,
        units: Sequence[WorkUnit],
        in_plan_order: bool,
        file: IO[str] | None = None,
    ) -> None:
        from tqdm import tqdm  # only when a bar is shown

        self.units = list(units)
        self.in_plan_order = in_plan_order
        self.done = 0
        self.bar: Any = tqdm(total=n_cells, desc=name, unit="cell", leave=False, file=file)
        self.bar.set_postfix_str("setting up the data set and recognizers")

    def tick(self) -> None:
        """One more cell done."""
        self.bar.update()

    def started(self) -> None:
        """The set-up is done; the units start."""
        self.bar.set_postfix_str(self.doing())

    def unit_done(self) -> None:
        """One more unit done (its cells have ticked)."""
        self.done += 1
        self.bar.set_postfix_str(self.doing())

    def doing(self) -> str:
        """What the run is doing now, in words."""
        n = len(self.units)
        if self.done >= n:
            return "writing the results"
        if self.in_plan_order:
            label = shorten(self.units[self.done].defense.label, LABEL_CHARS)
            return f"defense {label} ({self.done + 1}/{n})"
        return f"{self.done}/{n} defense configs done"

    def close(self) -> None:
        self.bar.close()
