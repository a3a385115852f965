"""Away (``/away``) and who is online (``/list``).

The away state belongs to the account, not to one session: it is held on the
account's shared :class:`~securechat.server.accounts.Identity`, so every session
shows it, and in cluster mode an ``away`` event carries each change to the other
servers. It is not stored: it ends with the account's last session anywhere (as
an IRC user's away message ends when they disconnect). Someone who has left is
offline, not away, and a stale text would otherwise greet their next login and
whoever writes to them meanwhile. Every server clears it by itself when it sees
that last session go (its own, or another server's presence event), so nothing
needs publishing then.

Handlers run under the hub's lock and never wait (see :mod:`securechat.server.hub`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..wire.names import MAX_AWAY_CHARS, check_text, fold
from ..wire.protocol import Frame, encode

if TYPE_CHECKING:
    from ..errors import StoreError
    from .accounts import Identity
    from .hub import Hub
    from .sessions import Session
    from .writer import Outgoing

__all__ = [
    "away",
    "away_texts",
    "deliver_then_tell_away",
    "online_names",
    "set_away",
]


def away(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Mark the account away with ``text``, or back without it (or with ``""``)."""
    identity = session.identity
    assert identity is not None
    text = frame.str_field("text", optional=True)
    if text:
        check_text(text, limit=MAX_AWAY_CHARS, what="away text")
    set_away(hub, identity, text, rid=rid, asked_by=session)
    if hub.cluster is not None:
        hub.cluster.publish("away", account=identity.id, text=text)


def set_away(
    hub: Hub,
    identity: Identity,
    text: str,
    *,
    rid: int | None = None,
    asked_by: Session | None = None,
) -> None:
    """Set the account's away text ("" for back) and tell its sessions here; the one
    that asked gets its ``rid`` (under the lock)."""
    identity.away = text
    said = f"you are marked as away: {text}" if text else "you are no longer marked as away"
    for mine in hub.sessions.of(identity.id):
        mine.send(
            encode(
                "system",
                rid=rid if mine is asked_by else None,
                event="away",
                user=identity.name,
                away=text,
                text=said,
            )
        )


def deliver_then_tell_away(
    hub: Hub, session: Session, target: Identity, rid: int | None
) -> Callable[[Outgoing, StoreError | None], None]:
    """The ``on_done`` of a private message: deliver it, then tell the sender if the
    recipient is away, below their own message as IRC clients show it."""

    def _done(message: Outgoing, error: StoreError | None) -> None:
        hub.delivery.private(session, target, rid, message, error)
        away = target.away
        if error is None and not message.duplicate and away:
            # IRC's RPL_AWAY, queued behind the sender's echo.
            notice = encode(
                "system",
                event="away",
                user=target.name,
                away=away,
                text=f"{target.name} is away: {away}",
            )
            hub.delivery.send_after(session, notice)

    return _done


def online_names(hub: Hub) -> list[str]:
    """Every account with a session now, on any server, sorted as /who sorts."""
    accounts = {s.account_id for s in hub.sessions.all()}
    if hub.cluster is not None:
        accounts |= hub.cluster.remote_accounts()
    identities = (hub.accounts.get(a) for a in accounts)
    return sorted((i.name for i in identities if i is not None), key=fold)


def away_texts(hub: Hub, names: list[str]) -> dict[str, str]:
    """The away texts of those of ``names`` who are away."""
    found = (hub.accounts.find(n) for n in names)
    return {i.name: i.away for i in found if i is not None and i.away}
