"""One's own account from the chat: what ``/password`` and ``/account delete`` ask and send.

Both ask the user first, and the front ends ask differently: the full-screen
client asks on its input line (passwords without echo), line mode cannot ask
at all (its input is a script's, or a pipe's), so ``/password`` is refused there
and ``/account delete`` needs the user's own name typed as the confirmation.
What they say and what they send is decided here, once.
"""

from __future__ import annotations

from ..errors import ChatError
from ..wire.names import fold
from .actions import Request

__all__ = [
    "SECRETS_NEED_A_TERMINAL",
    "delete_confirmed",
    "delete_warning",
    "password_request",
]

SECRETS_NEED_A_TERMINAL = (
    "/password needs the full-screen client on a terminal, which asks without echo: "
    "passwords never go through a pipe or onto a command line. An admin can set one "
    "with securechat-admin user passwd NAME"
)
"""Line mode's refusal of /password."""


def delete_warning(me: str) -> str:
    """What deleting the account ``me`` erases, said before it is done."""
    return (
        f"deleting your account {me} erases every message you sent (as /history forget "
        "does: rows, search index and the freed pages), ends all your sessions, and "
        "keeps the name reserved: nobody can take it, and you cannot have it back"
    )


def delete_confirmed(target: str, me: str) -> Request:
    """The ``account_delete`` request, when ``target`` (typed as ``/account delete NAME``)
    is the user's own name; ChatError otherwise, and nothing is sent."""
    if not target:
        raise ChatError(
            "confirm", f"nothing deleted: {delete_warning(me)}. To go ahead: /account delete {me}"
        )
    if fold(target) != fold(me):
        raise ChatError(
            "usage", f"{target} is not your name; nothing deleted (/account delete {me})"
        )
    return Request("account_delete")


def password_request(old: str, new: str, again: str) -> Request:
    """The ``password`` request for the three answers; ChatError if they cannot do."""
    if not old or not new:
        raise ChatError("empty", "an empty password; nothing was changed")
    if new != again:
        raise ChatError("password_mismatch", "the new passwords differ; nothing was changed")
    return Request("password", {"old": old, "new": new})
