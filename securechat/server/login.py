"""Logins: password checks and registrations off the I/O threads and the hub's lock.

scrypt is slow on purpose, and registering an account or summarising what
a returning user missed means asking the database, so the hub only checks
the login frame's shape and queues the rest to the login pool. There the
password is checked (skipped if the connection went away meanwhile), the
account registered if new, and its unread counts read; then the hub's lock
is taken once to admit the session. The queue is bounded: when it is full a
login is refused with ``busy`` rather than waiting behind thousands of others.

Guessing is throttled before any hashing: after a few failures from one
address, or for one name, further attempts are refused with
``login_throttled`` for exponentially longer, and an address may register
only so many accounts in a window (``registration_limited``). Both answers
carry ``retry_after``. A success clears the name's count, never the
address's: one valid account must not reset an attacker's throttle.

Registration and the store
--------------------------
Who may register follows the hub's policy (``open``, ``invite``, ``closed``).
A login that says ``register: false`` only logs in: an unknown name is answered
``no_such_account`` (and counts as a failure for the throttles), so a typo never
creates an account. Without the field, an open server registers a new name as it
always did (older clients). That answer tells which names exist; so does trying
to register a taken one, on any chat server (Ergo and Prosody accept the same),
and the throttles bound how fast anyone can ask.

Every login reads the account, and the bans, from the store again: a password,
role, ban or deletion made with ``securechat-admin`` (offline, or beside the
running server) applies from the account's next login, here and on every server.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from concurrent.futures import Executor

from ..errors import ChatError, ProtocolError, StoreError
from ..store.base import UnreadCount, utc_timestamp
from ..wire.names import DEFAULT_ROOM, check_user_name, fold
from ..wire.protocol import Frame
from .accounts import Identity
from .hub import Hub
from .limits import FailureThrottle, WindowCounter
from .moderation import address_of, ban_text, matching_ban
from .passwords import MAX_PASSWORD_BYTES, hash_password, verify_password
from .sessions import Session, State

__all__ = [
    "DEFAULT_REGISTRATIONS",
    "MAX_PENDING_CERTIFICATE_LOGINS",
    "MAX_PENDING_LOGINS",
    "MAX_RESUME_ROOMS",
    "REGISTRATION_WINDOW",
    "Logins",
]

log = logging.getLogger(__name__)

DEFAULT_REGISTRATIONS = 30
"""New accounts one address may register per ``REGISTRATION_WINDOW`` (Ergo's default)."""

REGISTRATION_WINDOW = 600.0
"""Seconds over which registrations per address are counted."""

MAX_PENDING_LOGINS = 256
"""Password logins queued for the pool at most: at ~40 scrypt checks a second per
core, the last of them is answered within a few seconds, well inside the login timeout."""

MAX_PENDING_CERTIFICATE_LOGINS = 4096
"""Certificate logins queued at most: they hash nothing (a millisecond each), so a
whole office reconnecting after a restart fits."""


class Logins:
    """The ``login`` request: validated under the lock, checked on ``pool``."""

    def __init__(
        self, hub: Hub, pool: Executor, *, registrations_per_source: int = DEFAULT_REGISTRATIONS
    ) -> None:
        self._hub = hub
        self._pool = pool
        self._pending = {True: 0, False: 0}  # by "is a password login"; the hub's lock
        self._by_source = FailureThrottle()
        self._by_name = FailureThrottle()
        self._registrations = WindowCounter(
            limit=registrations_per_source, window=REGISTRATION_WINDOW
        )

    def handle(self, hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
        """The login handler (under the hub's lock)."""
        if session.state is not State.NEW:
            raise ChatError("already_logged_in", "you are already logged in (or logging in)")
        password: str | None = None
        if session.cert_user is not None:
            name = _certificate_name(session.cert_user, frame.str_field("user", optional=True))
        else:
            name = check_user_name(frame.str_field("user"))
            password = frame.str_field("password", optional=True)
            if not password:
                raise ChatError(
                    "bad_password",
                    "a password is required: set SECURECHAT_PASSWORD or pass --password-file",
                )
            if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
                raise ChatError("bad_password", f"password longer than {MAX_PASSWORD_BYTES} bytes")
        now = time.monotonic()
        wait = max(self._by_source.delay(session.source, now), self._by_name.delay(fold(name), now))
        if wait:
            raise ChatError(
                "login_throttled",
                "too many failed logins from your address or for this name; "
                f"try again in {math.ceil(wait)} s",
                retry_after=wait,
            )
        queued = password is not None
        cap = MAX_PENDING_LOGINS if queued else MAX_PENDING_CERTIFICATE_LOGINS
        if self._pending[queued] >= cap:
            raise ChatError("busy", "the server has too many logins in progress", retry_after=2.0)
        self._pending[queued] += 1
        session.state = State.AUTHENTICATING
        replay = frame.get("replay") is not False
        since = _resume_points(frame)
        register = frame.get("register")
        if register is not None and not isinstance(register, bool):
            raise ProtocolError("'register' must be true or false")
        invite = frame.str_field("invite", optional=True)
        self._pool.submit(
            self._check,
            session,
            name,
            password,
            rid,
            replay=replay,
            since=since,
            register=register,
            invite=invite,
        )

    def _check(
        self,
        session: Session,
        name: str,
        password: str | None,
        rid: int | None,
        *,
        replay: bool,
        since: dict[str, int],
        register: bool | None = None,
        invite: str | None = None,
    ) -> None:
        """On the pool: check, register if new, summarise, then admit under the lock."""
        hub = self._hub
        error: ChatError | None = None
        identity: Identity | None = None
        new = False
        unread: list[UnreadCount] = []
        number: int | None = None
        try:
            if session.state is State.AUTHENTICATING:  # else the peer is gone: skip the work
                identity, new = self._identify(session, name, password, register, invite)
                self._check_bans(session, identity.id)
                if not new:
                    with hub.lock:
                        rooms = [room.key for room in hub.rooms.of(identity.id)]
                    unread = hub.store.unread(identity.id, rooms)
                if hub.cluster is not None:
                    number = hub.cluster.session_number()
        except ChatError as exc:
            error = exc
            if exc.code in ("bad_password", "no_such_account"):
                self.failed(session.source, fold(name))
                if hub.cluster is not None:
                    with hub.lock:
                        hub.cluster.publish("login_failed", source=session.source, name=fold(name))
        except StoreError as exc:
            log.error("login of %s failed: %s", name, exc)
            error = ChatError("unavailable", "the server cannot read its accounts; try later")
        with hub.lock:
            self._pending[password is not None] -= 1
            if session.state is not State.AUTHENTICATING:
                return  # the connection went away meanwhile
            try:
                if error is not None:
                    raise error
                assert identity is not None
                self._by_name.succeeded(fold(name))
                hub.admit(
                    session,
                    identity,
                    rid,
                    replay=replay,
                    since=since,
                    unread=unread,
                    new_account=new,
                    number=number,
                )
            except ChatError as exc:
                hub.refuse_login(session, exc, rid)
                log.info(
                    "%s: login as %s refused: %s (%s)", session.link.peer, name, exc.code, exc.text
                )

    def failed(self, source: str, name: str) -> None:
        """A wrong password from ``source`` for ``name`` (folded), here or, in cluster
        mode, on another server: both wait longer before their next attempt."""
        now = time.monotonic()
        self._by_source.failed(source, now)
        self._by_name.failed(name, now)

    def registered(self, source: str) -> None:
        """Another server registered an account for ``source``: it counts here too."""
        self._registrations.take(source, time.monotonic())

    def _check_bans(self, session: Session, account_id: int) -> None:
        """Refuse a banned account, certificate or address (read from the store, which
        ``securechat-admin`` may have changed; the in-memory list catches up)."""
        hub = self._hub
        bans = hub.store.load_bans(utc_timestamp())
        with hub.lock:
            hub.moderation.set_bans(bans)
        ban = matching_ban(
            bans,
            account=account_id,
            fingerprint=session.cert_fingerprint,
            address=address_of(session.link.peer),
        )
        if ban is not None:
            raise ChatError("banned", ban_text(ban), until=ban.expires, reason=ban.reason)

    def _refresh(self, identity: Identity) -> Identity:
        """The account as the store has it now: its password and role may have been
        changed, or the account deleted, by ``securechat-admin``."""
        hub = self._hub
        account = hub.store.find_account(identity.name)
        with hub.lock:
            if account is None or account.id != identity.id:
                hub.accounts.delete(identity)
                raise ChatError("account_deleted", f"the account {identity.name} was deleted")
            identity.password = account.password
            identity.role = account.role
        return identity

    def _register(
        self, session: Session, name: str, password: str | None, invite: str | None
    ) -> tuple[Identity, bool]:
        """A new account for ``name``, as the registration policy allows."""
        hub = self._hub
        if hub.registration == "closed":
            raise ChatError(
                "registration_closed",
                f"there is no account {name}, and this server registers none itself: "
                "ask an admin for one",
            )
        invite_hash = None
        if hub.registration == "invite":
            if not invite:
                raise ChatError(
                    "invite_required",
                    f"there is no account {name}; registering one here needs an invite code "
                    "from an admin",
                )
            invite_hash = hashlib.sha256(invite.strip().encode("utf-8")).hexdigest()
            if not hub.store.invite_usable(invite_hash, utc_timestamp()):
                raise ChatError(
                    "bad_invite", "that invite code is unknown, used, revoked or expired"
                )
        wait = self._registrations.take(session.source, time.monotonic())
        if wait:
            raise ChatError(
                "registration_limited",
                "too many new accounts from your address; log in to an existing one, "
                f"or try again in {math.ceil(wait / 60)} min",
                retry_after=wait,
            )
        account = hub.store.create_account(
            name,
            hash_password(password) if password is not None else None,
            rooms=[fold(DEFAULT_ROOM)],
            invite=invite_hash,
        )
        if account is None:
            if invite_hash is not None and not hub.store.invite_usable(
                invite_hash, utc_timestamp()
            ):
                raise ChatError("bad_invite", "that invite code was used just now")
            raise ChatError("name_in_use", f"{name} was registered just now; try again")
        log.info(
            "%s: registered account %s (registration %s)",
            session.link.peer,
            account.name,
            hub.registration,
        )
        if hub.cluster is not None:
            with hub.lock:
                hub.cluster.publish("account", name=account.name, source=session.source)
        return hub.accounts.add(account), True

    def _identify(
        self,
        session: Session,
        name: str,
        password: str | None,
        register: bool | None = None,
        invite: str | None = None,
    ) -> tuple[Identity, bool]:
        """The account, checked (and registered if the name is new and the policy and
        the login allow); True if new."""
        accounts = self._hub.accounts
        identity = accounts.find(name)
        if identity is None and self._hub.cluster is not None:
            # Another server may have registered it a moment ago.
            identity = self._hub.cluster.learn_account(name)
        if identity is None:
            if accounts.reserved_for(name) is not None:
                raise _reserved(name)
            if register is False:
                raise ChatError(
                    "no_such_account",
                    f"there is no account {name}: check the name, or register it "
                    "(--register, or answer yes on a terminal)",
                )
            return self._register(session, name, password, invite)
        identity = self._refresh(identity)
        if password is None:
            return identity, False  # the certificate is the proof
        if identity.password is None:
            raise ChatError(
                "bad_password",
                f"{identity.name} logs in with a client certificate: pass --cert and --key",
            )
        if not verify_password(password, identity.password):
            raise ChatError(
                "bad_password",
                f"wrong password for {identity.name}",
            )
        return identity, False


MAX_RESUME_ROOMS = 10_000
"""Rooms a login may name in ``since`` at most."""


def _resume_points(frame: Frame) -> dict[str, int]:
    """The login's ``since``: per room (folded), the newest message id the client has
    shown there. A reconnecting client gets what came after, before anything live."""
    since = frame.get("since")
    if since is None:
        return {}
    if not isinstance(since, dict) or len(since) > MAX_RESUME_ROOMS:
        raise ProtocolError(
            f"'since' must be an object of at most {MAX_RESUME_ROOMS} rooms and message ids"
        )
    points = {}
    for room, last in since.items():
        if not isinstance(last, int) or isinstance(last, bool) or last < 0:
            raise ProtocolError("'since' gives every room a message id (a whole number >= 0)")
        points[fold(room)] = last
    return points


def _certificate_name(name: str, asked: str | None) -> str:
    try:
        check_user_name(name)
    except ChatError as exc:
        raise ChatError(
            "invalid_name",
            f"your certificate's common name {name!r} is not a valid user name: "
            "ask for a certificate whose common name is your user name",
        ) from exc
    if asked and fold(asked) != fold(name):
        raise ChatError(
            "cert_mismatch",
            f"your client certificate is for {name!r}, not {asked!r}: "
            f"pass --user {name} or another certificate",
        )
    return name


def _reserved(name: str) -> ChatError:
    return ChatError(
        "name_reserved",
        f"{name} was the name of another account and stays reserved for it; pick another name",
    )
