"""Text as wide as terminals draw it, and word wrap with a hanging indent.

Widths here are per grapheme cluster (``wcwidth.width``), not per code point:
a family emoji joined with ZWJ (👨‍👩‍👧) or a hand with a skin tone (👋🏽) is one
cluster two columns wide, where summing its code points (as prompt_toolkit's own
``get_cwidth`` does) says six or four. Everything the client lays out itself
(the message pane, the lists, the title and status lines) is measured and cut
here, one cluster at a time, so the screen and the terminal agree on where
each column is. Pure functions: no prompt_toolkit state.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from prompt_toolkit.formatted_text import StyleAndTextTuples
from wcwidth import iter_graphemes, wcwidth, width

__all__ = [
    "Cell",
    "cells",
    "cluster_width",
    "code_point_width",
    "fragments_width",
    "is_disputed",
    "text_width",
    "wrap",
]

Cell = tuple[str, str, int]
"""One grapheme cluster to draw: its style, the cluster, and its width in columns."""

MIN_WRAPPED_TEXT = 12
"""Columns a hanging indent leaves for text at least; a narrower pane does not indent."""


@lru_cache(maxsize=4096)
def cluster_width(cluster: str) -> int:
    """Columns a terminal gives one grapheme cluster (0 for a lone zero-width one)."""
    return max(0, width(cluster))


def code_point_width(text: str) -> int:
    """Columns ``text`` takes where each code point is drawn apart (older terminals,
    tmux 3.3, prompt_toolkit's own ``Window``)."""
    return sum(max(0, wcwidth(point)) for point in text)


@lru_cache(maxsize=4096)
def is_disputed(cluster: str) -> bool:
    """True for a cluster some terminals draw wider or narrower than :func:`cluster_width`
    says: several code points whose own widths add up to something else (a skin tone
    modifier drawn as a second emoji, each part of a ZWJ sequence drawn apart, a VS16
    ignored)."""
    return len(cluster) > 1 and code_point_width(cluster) != cluster_width(cluster)


def text_width(text: str) -> int:
    """Columns ``text`` takes on a terminal, cluster by cluster."""
    return sum(cluster_width(cluster) for cluster in iter_graphemes(text))


def fragments_width(fragments: StyleAndTextTuples) -> int:
    """Columns ``fragments`` take on a terminal."""
    return sum(cell[2] for cell in cells(fragments))


def cells(fragments: StyleAndTextTuples) -> Iterator[Cell]:
    """The clusters of ``fragments`` with their styles and widths; zero-width ones dropped
    (the sanitiser has already made every invisible character visible)."""
    for style, text, *_ in fragments:
        for cluster in iter_graphemes(text):
            columns = cluster_width(cluster)
            if columns:
                yield style, cluster, columns


def _words(fragments: StyleAndTextTuples) -> Iterator[list[Cell]]:
    """Runs of spaces and runs of everything else, in order."""
    run: list[Cell] = []
    for cell in cells(fragments):
        if run and (run[-1][1] == " ") != (cell[1] == " "):
            yield run
            run = []
        run.append(cell)
    if run:
        yield run


def wrap(fragments: StyleAndTextTuples, columns: int, indent: int) -> list[StyleAndTextTuples]:
    """``fragments`` as rows of at most ``columns`` columns, broken between words.

    Rows after the first start with ``indent`` spaces (the hanging indent that puts
    them under the message text); a word wider than a whole row is the only thing
    broken inside, and spaces at a break are dropped.
    """
    columns = max(1, columns)
    if columns - indent < MIN_WRAPPED_TEXT:
        indent = 0
    rows: list[list[Cell]] = [[]]
    used = start = 0  # columns in the row, and where its text starts

    def new_row() -> None:
        nonlocal used, start
        while rows[-1] and rows[-1][-1][1] == " ":
            rows[-1].pop()  # the space at the break
        rows.append([("", " ", 1)] * indent)
        used = start = indent

    for word in _words(fragments):
        size = sum(cell[2] for cell in word)
        if word[0][1] == " ":
            if used == start and start:
                continue  # no leading spaces on a continuation row
            if used + size > columns:
                new_row()
                continue
        elif used + size > columns and used > start and size <= columns - indent:
            new_row()
        for cell in word:
            if used + cell[2] > columns:
                new_row()
            rows[-1].append(cell)
            used += cell[2]
    return [[(style, cluster) for style, cluster, _ in row] for row in rows]
