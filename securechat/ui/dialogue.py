"""Questions asked on the full-screen client's input line before a request goes out.

``/password`` asks for the old password and the new one twice, without echo;
``/account delete`` asks for a yes. While a :class:`Dialogue` runs, the input
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

__all__ = ["Dialogue", "Question", "delete_dialogue", "password_dialogue"]


@dataclass(frozen=True, slots=True)
class Question:
    """One question: its prompt, and whether the answer is hidden as it is typed."""

    prompt: str
    secret: bool = False


class Dialogue:
    """Questions asked in turn; ``finish`` makes the request from the answers."""

    def __init__(self, questions: list[Question], finish: Callable[[list[str]], Request]) -> None:
        self._questions = questions
        self._finish = finish
        self._answers: list[str] = []

    @property
    def question(self) -> Question:
        """The question being asked."""
        return self._questions[len(self._answers)]

    def answer(self, text: str) -> Request | None:
        """Take the answer to the current question: the request once every question is
        answered, else None. ChatError (nothing to send) for an empty answer, or
        answers that cannot do."""
        if not text:
            raise ChatError("cancelled", "cancelled; nothing was sent")
        self._answers.append(text)
        if len(self._answers) < len(self._questions):
            return None
        return self._finish(self._answers)


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

    def finish(answers: list[str]) -> Request:
        if answers[0].strip().lower() not in ("y", "yes"):
            raise ChatError("cancelled", "not deleted")
        return Request("account_delete")

    question = Question(f"delete your account {me}? [y/N] ")
    return delete_warning(me), Dialogue([question], finish)
