"""A prompt_toolkit container that draws rows one grapheme cluster per screen cell.

prompt_toolkit's ``Window`` puts each code point in its own cell with its own
width, so a ZWJ emoji (👨‍👩‍👧) takes six cells on its screen and two on the
terminal: everything right of it on that row (the member list's separator) is
drawn where the terminal's cursor is not, and later cursor moves land in the
wrong columns (another row's input line ended up cut to ``[#gene``). A
:class:`CellRows` writes each cluster as one cell as wide as
:func:`~securechat.ui.wrap.cluster_width` says, and pads every row to its full
width, so its screen and the terminal agree. It draws what it is given, cut at
its width (never through a cluster); wrapping happens before, in wrap.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.layout import Container, Dimension
from prompt_toolkit.layout.mouse_handlers import MouseHandlers
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.layout.screen import Char, Screen, WritePosition
from prompt_toolkit.layout.utils import explode_text_fragments
from prompt_toolkit.mouse_events import MouseEvent
from wcwidth import iter_graphemes

from .wrap import cells, code_point_width, is_disputed

if TYPE_CHECKING:  # defined for type checkers only
    from prompt_toolkit.key_binding.key_bindings import NotImplementedOrNone

__all__ = ["ZERO_WIDTH_SPACE", "ApartClusters", "CellRows", "SyncedColumns"]

ZERO_WIDTH_SPACE = "\u200b"
"""Ends a grapheme cluster (Unicode treats it as a control) and takes no column."""

GetRows = Callable[[int, int], list[StyleAndTextTuples]]
"""Given the width and height to fill, the rows to draw from the top."""


class _Cluster(Char):
    """A screen cell holding a whole grapheme cluster, with the terminal's width."""

    __slots__ = ()

    def __init__(self, cluster: str, style: str, columns: int) -> None:
        super().__init__(cluster, style)
        self.width = columns


class _Disputed(_Cluster):
    """A cluster some terminals draw wider than we do (see :func:`is_disputed`)."""

    __slots__ = ()


@lru_cache(maxsize=65536)
def _cell(cluster: str, style: str, columns: int) -> _Cluster:
    """The cell for ``cluster`` (cells are never changed once made, so they are shared)."""
    kind = _Disputed if is_disputed(cluster) else _Cluster
    return kind(cluster, style, columns)


class CellRows(Container):
    """Rows of formatted text, drawn cluster by cluster; see the module docstring.

    ``width`` gives the preferred width (None: as wide as allowed), ``height`` a
    fixed height (None: as tall as allowed), and ``on_mouse`` handles mouse events
    over it (the pane's wheel).
    """

    def __init__(
        self,
        get_rows: GetRows,
        *,
        style: str = "",
        width: Callable[[], Dimension] | None = None,
        height: int | None = None,
        on_mouse: Callable[[MouseEvent], NotImplementedOrNone] | None = None,
    ) -> None:
        self._get_rows = get_rows
        self._style = style
        self._width = width
        self._height = height
        self._on_mouse = on_mouse
        self.size = (0, 0)
        """Width and height it was last drawn with."""

    def reset(self) -> None:
        """Nothing is kept between draws."""

    def preferred_width(self, max_available_width: int) -> Dimension:
        """The width asked for, or whatever is available."""
        return self._width() if self._width is not None else Dimension()

    def preferred_height(self, width: int, max_available_height: int) -> Dimension:
        """The fixed height, or whatever is available."""
        return Dimension() if self._height is None else Dimension.exact(self._height)

    def write_to_screen(  # noqa: PLR0917  (prompt_toolkit's signature)
        self,
        screen: Screen,
        mouse_handlers: MouseHandlers,
        write_position: WritePosition,
        parent_style: str,
        erase_bg: bool,
        z_index: int | None,
    ) -> None:
        """Draw the rows, padding each with spaces to the full width."""
        x0, y0 = write_position.xpos, write_position.ypos
        columns, height = write_position.width, write_position.height
        self.size = (columns, height)
        base = f"{parent_style} {self._style}"
        blank = Char(" ", base)
        rows = self._get_rows(columns, height)[:height]
        for y in range(height):
            line = screen.data_buffer[y0 + y]
            x = 0
            for style, cluster, wide in cells(rows[y]) if y < len(rows) else ():
                if x + wide > columns:
                    break
                line[x0 + x] = _cell(cluster, f"{base} {style}", wide)
                for extra in range(1, wide):
                    line[x0 + x + extra] = Char("", base)  # covered by the wide cell
                x += wide
            for pad in range(x, columns):
                line[x0 + pad] = blank
        if self._on_mouse is not None:
            mouse_handlers.set_mouse_handler_for_range(
                x0, x0 + columns, y0, y0 + height, self._on_mouse
            )

    def get_children(self) -> list[Container]:
        """None: it draws itself."""
        return []


def _restyled(char: Char, extra: str) -> Char:
    if isinstance(char, _Cluster):
        return type(char)(char.char, char.style + extra, char.width)
    return Char(char.char, char.style + extra)


class SyncedColumns(Container):
    """``content``, with an absolute column move before every cell that follows a
    disputed cluster on its row (see the module docstring)."""

    def __init__(self, content: Container) -> None:
        self._content = content

    def reset(self) -> None:
        """Reset the content."""
        self._content.reset()

    def preferred_width(self, max_available_width: int) -> Dimension:
        """The content's."""
        return self._content.preferred_width(max_available_width)

    def preferred_height(self, width: int, max_available_height: int) -> Dimension:
        """The content's."""
        return self._content.preferred_height(width, max_available_height)

    def write_to_screen(  # noqa: PLR0917  (prompt_toolkit's signature)
        self,
        screen: Screen,
        mouse_handlers: MouseHandlers,
        write_position: WritePosition,
        parent_style: str,
        erase_bg: bool,
        z_index: int | None,
    ) -> None:
        """Draw the content, then mark the cells that need a column move."""
        self._content.write_to_screen(
            screen, mouse_handlers, write_position, parent_style, erase_bg, z_index
        )
        end = write_position.xpos + write_position.width
        for y in range(write_position.ypos, write_position.ypos + write_position.height):
            line = screen.data_buffer[y]
            disputed = sorted(x for x, char in line.items() if isinstance(char, _Disputed))
            for x in disputed:
                # The columns a terminal may paint it over are styled after it, so they
                # differ from the last screen and are drawn again whenever it is.
                cluster = line[x].char
                mark = " class:after-" + "-".join(f"{ord(c):x}" for c in cluster)
                for shadow in range(x + line[x].width, min(end, x + code_point_width(cluster))):
                    line[shadow] = _restyled(line[shadow], mark)
            x = disputed[0] + line[disputed[0]].width if disputed else end
            while x < end:
                screen.zero_width_escapes[y][x] = f"\x1b[{x + 1}G"  # CHA: 1-based column
                x += line[x].width or 1

    def get_children(self) -> list[Container]:
        """The content."""
        return [self._content]


class ApartClusters(Processor):
    """For the input line: a disputed cluster is shown with a zero-width space before
    each of its parts after the first, which ends the cluster there, so every terminal
    draws the parts apart, as wide as prompt_toolkit counts them. The text typed (and
    sent) is unchanged."""

    def apply_transformation(self, transformation_input: TransformationInput) -> Transformation:
        """The fragments with the zero-width spaces, and the cursor mapped across them."""
        fragments = explode_text_fragments(transformation_input.fragments)
        text = "".join(fragment[1] for fragment in fragments)
        joined: set[int] = set()
        start = 0
        for cluster in iter_graphemes(text):
            if is_disputed(cluster):
                joined.update(range(start + 1, start + len(cluster)))
            start += len(cluster)
        if not joined:
            return Transformation(transformation_input.fragments)
        out: StyleAndTextTuples = []
        to_display: dict[int, int] = {}
        for index, (style, char, *_) in enumerate(fragments):
            to_display[index] = len(out)
            if index in joined:
                out.append((style, ZERO_WIDTH_SPACE))
            out.append((style, char))
        to_display[len(fragments)] = len(out)
        to_source = {shown: index for index, shown in to_display.items()}

        def display_to_source(position: int) -> int:
            while position > 0 and position not in to_source:
                position -= 1
            return to_source.get(position, 0)

        added = len(out) - len(fragments)
        return Transformation(
            out,
            source_to_display=lambda position: to_display.get(position, position + added),
            display_to_source=display_to_source,
        )
