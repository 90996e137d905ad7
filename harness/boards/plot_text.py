"""User text in plots: labels, metric and recognizer names drawn as the characters they are."""

from __future__ import annotations

from typing import Any


def as_plain_text(*texts: Any) -> None:
    """Draw each matplotlib ``Text`` as the characters it holds: ``$...$`` is not read as
    mathtext and nothing goes through TeX, so no label can fail to draw or draw as another."""
    for text in texts:
        text.set_parse_math(False)
        text.set_usetex(False)


def plain_legend(ax: Any, handles: list[Any], labels: list[str], **kwargs: Any) -> None:
    """A legend of ``handles`` named by ``labels`` as plain text (given explicitly, so that a
    label starting with ``_`` is shown rather than hidden)."""
    legend = ax.legend(handles, labels, **kwargs)
    as_plain_text(*legend.get_texts())
