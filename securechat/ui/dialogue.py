"""Questions asked on the full-screen client's input line before a request goes out.

``/password`` asks for the old password and the new one twice, without echo;
``/account delete``, ``/history forget`` and a paste of several lines ask for a
yes. While a :class:`Dialogue` runs, the input
line shows its question instead of the buffer's name, hides what is typed when
the question is secret, keeps answers out of the input history, and sends
nothing until the last answer; an empty answer, or Ctrl+C, ends it with
nothing sent. Plain state, no prompt_toolkit: the app draws and feeds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..client.account import delete_warning, password_request
from ..client.actions import Request
from ..errors import ChatError

__all__ = ["Dialogue", "Question", "confirm_dialogue", "delete_dialogue", "password_dialogue"]


@dataclass(frozen=True, slots=True)
class Question:
    """One question: its prompt, and whether the answer is hidden as it is typed."""

    prompt: str
    secret: bool = False


class Dialogue:
    """Questions asked in turn; ``finish`` makes the request from the answers (or does
    what was confirmed itself and returns None)."""

    def __init__(
        self, questions: list[Question], finish: Callable[[list[str]], Request | None]
    ) -> None:
        self._questions = questions
        self._finish = finish
        self._answers: list[str] = []

    @property
    def question(self) -> Question:
        """The question being asked."""
        return self._questions[len(self._answers)]

    @property
    def finished(self) -> bool:
        """Every question is answered."""
        return len(self._answers) == len(self._questions)

    def answer(self, text: str) -> Request | None:
        """Take the answer to the current question: once every question is answered,
        the request to send (None if there is none), else None. ChatError (nothing to
        send) for an empty answer, or answers that cannot do."""
        if not text:
            raise ChatError("cancelled", "cancelled; nothing was sent")
        self._answers.append(text)
        if not self.finished:
            return None
        return self._finish(self._answers)


def confirm_dialogue(
    question: str, then: Callable[[], Request | None], *, refused: str = "nothing was sent"
) -> Dialogue:
    """A yes/no ``question`` (``[y/N]``: anything but yes is no); ``then`` runs on yes,
    a no says ``refused``."""

    def finish(answers: list[str]) -> Request | None:
        if answers[0].strip().lower() not in ("y", "yes"):
            raise ChatError("cancelled", refused)
        return then()

    return Dialogue([Question(question)], finish)


def password_dialogue() -> Dialogue:
    """``/password``: the old password, then the new one twice."""
    return Dialogue(
        [
            Question("old password: ", secret=True),
            Question("new password: ", secret=True),
            Question("new password again: ", secret=True),
        ],
        lambda answers: password_request(*answers),
    )


def delete_dialogue(me: str) -> tuple[str, Dialogue]:
    """``/account delete``: what it erases (to show first), and the yes/no question."""

    question = f"delete your account {me}? [y/N] "
    request = Request("account_delete")
    return delete_warning(me), confirm_dialogue(question, lambda: request, refused="not deleted")
