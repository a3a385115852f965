"""The full-screen client's layout around the input line.

Top to bottom: the buffer's title (room and topic); the message pane, with the
buffer list left of it (WeeChat's buflist: shown on wide terminals, toggled
with F9 or Alt+Shift+B) and the room's members right of it (hidden on narrow
terminals); the status line; then the input line the app supplies. Everything
here is drawn by :class:`~securechat.ui.cells.CellRows`, one grapheme cluster per
cell, and the whole screen goes through
:class:`~securechat.ui.cells.SyncedColumns`, so emoji do not shift the columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples, split_lines
from prompt_toolkit.layout import (
    ConditionalContainer,
    Container,
    Dimension,
    Float,
    FloatContainer,
    HSplit,
    VSplit,
    Window,
)
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.mouse_events import MouseEvent

from .cells import CellRows, SyncedColumns
from .model import ChatModel
from .render import (
    buflist_rows,
    members_fragments,
    pane_rows,
    status_fragments,
    title_fragments,
)
from .wrap import fragments_width, text_width

if TYPE_CHECKING:  # defined for type checkers only
    from prompt_toolkit.key_binding.key_bindings import NotImplementedOrNone

__all__ = [
    "MAX_BUFLIST_WIDTH",
    "MAX_MEMBERS_WIDTH",
    "MIN_COLUMNS_FOR_BUFLIST",
    "MIN_COLUMNS_FOR_MEMBERS",
    "ScreenLayout",
]

MAX_MEMBERS_WIDTH = 20
"""The side list never takes more columns than this (names are at most 32)."""

MIN_COLUMNS_FOR_MEMBERS = 60
"""Narrower terminals give the whole width to messages."""

MAX_BUFLIST_WIDTH = 20
"""The buffer list never takes more columns than this; longer names are cut."""

MIN_COLUMNS_FOR_BUFLIST = 100
"""Below this width the buffer list starts hidden (the status line still numbers buffers)."""


class ScreenLayout:
    """The containers of the screen over ``model``; ``columns`` gives the terminal's
    width and ``on_mouse`` handles the mouse over the message pane."""

    def __init__(
        self,
        model: ChatModel,
        *,
        columns: Callable[[], int],
        on_mouse: Callable[[MouseEvent], NotImplementedOrNone],
    ) -> None:
        self._model = model
        self._columns = columns
        self._on_mouse = on_mouse
        self.pane_shows = 0
        """How many of the current buffer's rows the pane showed last (a page)."""
        self.buflist_shown: bool | None = None
        """The buffer list toggled on or off; None until then (shown on wide terminals)."""

    def container(self, input_window: Window) -> Container:
        """The whole screen, with ``input_window`` at the bottom and Tab's menu over it."""
        model = self._model
        buflist = ConditionalContainer(
            VSplit(
                [
                    CellRows(lambda w, h: buflist_rows(model), width=self._buflist_width),
                    Window(width=1, char="│", style="class:separator"),
                ]
            ),
            filter=Condition(self.shows_buflist),
        )
        members = ConditionalContainer(
            VSplit(
                [
                    Window(width=1, char="│", style="class:separator"),
                    CellRows(
                        lambda w, h: list(split_lines(members_fragments(model.current, model))),
                        width=self._members_width,
                    ),
                ]
            ),
            filter=Condition(self._shows_members),
        )
        screen = HSplit(
            [
                CellRows(lambda w, h: [title_fragments(model)], height=1, style="class:title"),
                VSplit([buflist, CellRows(self._pane_rows, on_mouse=self._on_mouse), members]),
                CellRows(
                    lambda w, h: [status_fragments(model, time.monotonic())],
                    height=1,
                    style="class:status",
                ),
                input_window,
            ]
        )
        menu = Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))
        return SyncedColumns(FloatContainer(screen, floats=[menu]))

    def shows_buflist(self) -> bool:
        """Whether the buffer list is on screen."""
        if self.buflist_shown is not None:
            return self.buflist_shown
        return self._columns() >= MIN_COLUMNS_FOR_BUFLIST

    def toggle_buflist(self) -> None:
        """Show the buffer list if hidden, hide it if shown."""
        self.buflist_shown = not self.shows_buflist()

    def page(self) -> int:
        """Rows in a page: what the pane shows, less one line kept for context."""
        return max(1, self.pane_shows - 1) if self.pane_shows else 10

    def _pane_rows(self, width: int, height: int) -> list[StyleAndTextTuples]:
        rows, self.pane_shows = pane_rows(self._model.current, self._model, width, height)
        return rows

    def _buflist_width(self) -> Dimension:
        widest = max(fragments_width(row) for row in buflist_rows(self._model))
        return Dimension.exact(min(widest + 1, MAX_BUFLIST_WIDTH))

    def _shows_members(self) -> bool:
        return self._model.current.kind == "room" and self._columns() >= MIN_COLUMNS_FOR_MEMBERS

    def _members_width(self) -> Dimension:
        # As wide as the longest name, so the messages get every other column.
        names = self._model.current.members.values()
        longest = max((text_width(name) for name in names), default=0)
        return Dimension.exact(min(longest + 1, MAX_MEMBERS_WIDTH))
