"""A prompt_toolkit container that draws rows one grapheme cluster per screen cell.

prompt_toolkit's ``Window`` puts each code point in its own cell with its own
width, so a ZWJ emoji (👨‍👩‍👧) takes six cells on its screen and two on the
terminal: everything right of it on that row (the member list's separator) is
drawn where the terminal's cursor is not, and later cursor moves land in the
wrong columns (another row's input line ended up cut to ``[#gene``). A
:class:`CellRows` writes each cluster as one cell as wide as
:func:`~securechat.ui.wrap.cluster_width` says, and pads every row to its full
width, so its screen and the terminal agree. It draws what it is given: laying
text out (wrapping, clipping) happens before, in wrap.py and render.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.layout import Container, Dimension
from prompt_toolkit.layout.mouse_handlers import MouseHandlers
from prompt_toolkit.layout.screen import Char, Screen, WritePosition
from prompt_toolkit.mouse_events import MouseEvent

from .wrap import cells, is_disputed

if TYPE_CHECKING:  # defined for type checkers only
    from prompt_toolkit.key_binding.key_bindings import NotImplementedOrNone

__all__ = ["CellRows", "GetRows", "SyncedColumns"]

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
                kind = _Disputed if is_disputed(cluster) else _Cluster
                line[x0 + x] = kind(cluster, f"{base} {style}", wide)
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


_JOINERS = ("\u200d", "\ufe0f")
"""In a cell prompt_toolkit drew (the input line), a ZWJ or VS16 merged into a code point
means a terminal may join it with what follows, or widen it."""

_MODIFIERS = range(0x1F3FB, 0x1F400)
"""Emoji skin tone modifiers, which a terminal may join with the emoji before them."""


def _is_disputed_cell(char: Char) -> bool:
    if isinstance(char, _Cluster):
        return isinstance(char, _Disputed)
    text = char.char
    return any(j in text for j in _JOINERS) or any(ord(c) in _MODIFIERS for c in text)


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
            disputed = [x for x, char in line.items() if _is_disputed_cell(char)]
            if not disputed:
                continue
            x = min(disputed)
            x += line[x].width
            while x < end:
                screen.zero_width_escapes[y][x] = f"\x1b[{x + 1}G"  # CHA: 1-based column
                x += line[x].width or 1

    def get_children(self) -> list[Container]:
        """The content."""
        return [self._content]
