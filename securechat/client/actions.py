"""What a typed line becomes: a frame to send, or something the client does itself.

Kept apart from the parsers (:mod:`securechat.client.commands` and
:mod:`securechat.client.moderation_commands`), which both make them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Command", "Local", "Request"]


@dataclass(frozen=True, slots=True)
class Command:
    """A /command: its name, usage line and one-line help."""

    name: str
    usage: str
    help: str


@dataclass(frozen=True, slots=True)
class Request:
    """A frame to send. ``waits``: later input depends on its answer (it changes state)."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    waits: bool = False


@dataclass(frozen=True, slots=True)
class Local:
    """Something the client does itself: ``help`` (with ``lines`` to show), ``quit``
    (reason in ``arg``), ``export`` (file in ``arg``), ``sendfile`` (user in ``target``,
    path in ``arg``), ``accept``/``reject``/``cancel`` (transfer id in ``number``),
    ``files``, what only the full-screen client's buffers mean: ``clear``, ``query``
    (user in ``target``), or what asks the user first: ``password`` and
    ``account_delete`` (the name typed to confirm, if any, in ``target``)."""

    kind: str
    lines: tuple[str, ...] = ()
    arg: str = ""
    target: str = ""
    number: int = 0
