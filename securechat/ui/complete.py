"""Tab completion: /commands, their arguments, and nicknames.

``/jo<Tab>`` gives ``/join ``; ``/join #d<Tab>`` (or ``/j``, ``/who``, ``/names``) a
room; ``/msg a<Tab>`` (or ``/query``, ``/kick``, ``/ban``, ``/mute``, ``/invite``...) a
user; ``/accept <Tab>`` a pending offer's id; ``/sendfile bob ~/re<Tab>`` a path. In plain
text (and after ``/me``), a nickname from the current buffer: at the start of the
line with ``: `` after it (``ali<Tab>`` gives ``alice: ``), elsewhere bare.
Candidates come from the COMMANDS table and the model, matched regardless of case.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from ..client.commands import COMMANDS
from ..wire.names import fold
from .model import ChatModel

__all__ = ["COMMAND_NAMES", "ChatCompleter"]

COMMAND_NAMES = tuple(sorted({c.name.split()[0] for c in COMMANDS}))
"""The words that may follow ``/``."""

_HISTORY_WORDS = tuple(
    sorted({c.name.split()[1] for c in COMMANDS if c.name.startswith("history ")})
)


def _matching(word: str, candidates: Iterable[str], *, suffix: str = "") -> Iterator[Completion]:
    wanted = word.lower()
    for candidate in candidates:
        if candidate.lower().startswith(wanted):
            yield Completion(candidate + suffix, start_position=-len(word), display=candidate)


class ChatCompleter(Completer):
    """Completes the input line from the COMMANDS table and ``model``'s rooms, users, files."""

    def __init__(self, model: ChatModel) -> None:
        self._model = model
        self._paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        """Completions for the word before the cursor."""
        text = document.text_before_cursor
        if text.startswith("/") and not text.startswith("//"):
            command, space, rest = text[1:].partition(" ")
            if not space:
                yield from _matching(command, COMMAND_NAMES, suffix=" ")
            else:
                yield from self._argument(command.lower(), rest, complete_event)
            return
        word = text.rpartition(" ")[2]
        at_start = len(word) == len(text)
        yield from _matching(word, self._nicknames(), suffix=": " if at_start else "")

    def _argument(
        self, command: str, rest: str, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        words = rest.split(" ")
        index, word = len(words) - 1, words[-1]
        model = self._model
        if command == "sendfile" and index >= 1:
            path = rest.partition(" ")[2]
            yield from self._paths.get_completions(Document(path), complete_event)
            return
        if command in ("topic", "nolog", "me", "away") or (
            command in ("msg", "query") and index >= 1
        ):
            yield from _matching(word, self._nicknames())
            return
        if index > 0:
            return
        candidates: Iterable[str] = ()
        if command in ("join", "j", "who", "names"):
            candidates = model.rooms()
        elif command == "part":
            candidates = [b.name for b in model.buffers if b.kind == "room"]
        elif command in ("msg", "query", "sendfile", "ban", "unban", "mute", "unmute", "invite"):
            candidates = model.users()
        elif command == "kick":
            candidates = [*model.rooms(), *model.users()]
        elif command == "history":
            candidates = [*_HISTORY_WORDS, *model.rooms(), *model.users()]
        elif command == "help":
            candidates = COMMAND_NAMES
        elif command in ("accept", "reject"):
            candidates = self._transfer_ids(offered=True)
        elif command == "cancel":
            candidates = self._transfer_ids(offered=False)
        yield from _matching(word, candidates, suffix=" ")

    def _nicknames(self) -> list[str]:
        """The people in the current buffer, other than the user."""
        buffer = self._model.current
        if buffer.kind == "server":
            return []
        names = buffer.member_names() if buffer.kind == "room" else [buffer.name]
        return [n for n in names if fold(n) != fold(self._model.user)]

    def _transfer_ids(self, *, offered: bool) -> list[str]:
        transfers = self._model.transfers.values()
        if offered:
            wanted = [t for t in transfers if t.state == "offered" and t.direction == "receive"]
        else:
            wanted = [t for t in transfers if t.state in ("offered", "moving")]
        return [str(t.id) for t in sorted(wanted, key=lambda t: t.id)]
