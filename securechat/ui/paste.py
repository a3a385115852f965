"""Pasted text in the full-screen client: kept whole in the input, sent only when confirmed.

A terminal with bracketed paste hands a paste over in one piece. Its tabs
become spaces (a tab is a control character the server refuses, and code
pasted from an editor is full of them), its line ends become newlines, and the
input line grows to show it. Enter on more than one line asks first, as irssi
and WeeChat do; then every line is checked before any is sent, so a line that
cannot go out stops the paste with its error, in place, instead of appearing
between lines already sent. Plain state, no prompt_toolkit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..errors import ChatError

__all__ = ["MAX_INPUT_ROWS", "TAB_WIDTH", "clean_paste", "interpret_all", "paste_lines"]

_Action = TypeVar("_Action")

TAB_WIDTH = 8
"""Columns a pasted tab stands for: the tab stops of a terminal, so columns still line up."""

MAX_INPUT_ROWS = 8
"""The input grows to show a paste of up to this many lines (and scrolls beyond)."""


def clean_paste(data: str) -> str:
    """Pasted ``data`` as the input takes it: newlines for line ends, tabs expanded."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.expandtabs(TAB_WIDTH) for line in lines)


def paste_lines(text: str) -> list[str]:
    """The lines of ``text`` that would be sent: every one that is not blank."""
    return [line for line in text.splitlines() if line.strip()]


def interpret_all(
    lines: list[str], interpret: Callable[[str], _Action]
) -> list[tuple[str, _Action]]:
    """Each line with its action, or ChatError for the first line that cannot go out,
    saying which it is and that nothing was sent."""
    actions = []
    for number, line in enumerate(lines, 1):
        try:
            actions.append((line, interpret(line)))
        except ChatError as exc:
            raise ChatError(
                exc.code, f"line {number} of {len(lines)}: {exc.text}; nothing was sent"
            ) from exc
    return actions
