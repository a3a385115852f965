"""Cluster mode: this server's share of a chat served by several.

Every server holds the same in-memory picture the single server has (accounts,
rooms, memberships, topics: see :mod:`securechat.server.hub`), loaded from the
shared store at start and kept current by *events*: whatever changes that
picture on one server is applied there under the hub's lock as usual and also
published on the bus (:mod:`securechat.server.cluster.bus`); the others apply it under
their own lock and tell their own sessions. The store stays the truth: events
are sent only after the change is committed (messages) or queued to be
(everything else), and a server that misses one catches up from the store.

Messages
--------
A committed message is delivered to this server's sessions at once and
published with everything a receiver needs to show it. Receivers deliver it
to their own sessions of the room (or of the two accounts). Every stored
message passes a :class:`~securechat.server.cluster.sequencer.Sequencer`, so each
conversation's messages reach sessions in number order without holes or
repeats, whichever server committed them and whichever notice came first;
holes left by lost notices are filled from the store. Messages that are not
stored (history off, ``/nolog``) have no number: they are delivered as they
come, and one lost with a Redis outage is lost.

Presence
--------
Each server publishes its accounts' arrivals and departures and keeps its
online table in Redis; ``present()`` counts an account's sessions on every
server. Arrival and quit notices follow the account's presence in the whole
cluster (the first session anywhere arrives, the last one anywhere quits). A
server whose liveness key lapses is taken to be dead: its users leave.

Threads
-------
Events arrive on the bus's reader thread. Anything that needs the store (an
account registered elsewhere, a hole to fill) is read there, never under the
hub's lock; then the lock is taken to apply the event.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import StoreError
from ...store.base import StoredMessage
from ...wire.protocol import encode
from ..away import set_away
from ..presence import presence, tell_rename
from .bus import HEARTBEAT, Event, RedisBus
from .moderation_events import MODERATION_HANDLERS
from .sequencer import Gap, Sequencer

if TYPE_CHECKING:
    from ..accounts import Identity
    from ..hub import Hub
    from ..limits import ConnectionCaps
    from ..login import Logins

__all__ = ["Cluster", "ClusterLimits", "new_server_id"]

log = logging.getLogger(__name__)

# A server's key missing this long means it died. Not at once: after a Redis restart
# every key is gone until each server's next heartbeat puts its own back. With the
# key's own lifetime, a dead server's users leave within about 12 s (30 s promised).
_DEAD_AFTER = 2 * HEARTBEAT + 1.0
_CHECK_EVERY = HEARTBEAT  # seconds between liveness checks


@dataclass(frozen=True, slots=True)
class ClusterLimits:
    """The budgets that would multiply by the number of servers if each kept its own:
    failed logins and registrations (per address and name), connections per address."""

    logins: Logins
    connections: ConnectionCaps


def new_server_id() -> str:
    """A name for this server process, unique in the cluster."""
    return uuid.uuid4().hex[:12]


class Cluster:
    """Applies other servers' events to the hub and publishes its own (see module notes)."""

    def __init__(self, hub: Hub, bus: RedisBus, last_seqs: dict[str, int]) -> None:
        self._hub = hub
        self.bus = bus
        self.sequencer = Sequencer(last_seqs)
        # server -> account -> its sessions there (descriptions for /sessions)
        self._remote: dict[str, dict[int, list[dict[str, Any]]]] = {}
        self._missing: dict[str, float] = {}  # server -> since when its key is missing
        self._next_check = 0.0
        self._healthy = True
        self.on_server_gone: Callable[[str], None] = lambda server: None
        """Called (under the hub's lock) when another server leaves or is found dead."""
        self.limits: ClusterLimits | None = None
        """Where budgets shared by every server hear of what happened elsewhere."""
        bus.on_events = self._on_events
        bus.on_tick = self._on_tick
        bus.on_health = self._on_health

    def start(self) -> None:
        """Learn who is online elsewhere, then start the bus."""
        self._hub_lock_apply(lambda: self._learn_servers(self.bus.servers()))
        self.bus.start()

    def stop(self) -> None:
        """Leave the cluster: the others take this server's users offline at once."""
        self.publish("gone")
        self.bus.stop()

    # -- presence ------------------------------------------------------------------------------

    def remote_sessions(self, account_id: int) -> int:
        """Sessions of ``account_id`` on other servers."""
        return sum(len(online.get(account_id, ())) for online in self._remote.values())

    def servers_of(self, account_id: int) -> int:
        """How many other servers ``account_id`` has a session on."""
        return sum(1 for online in self._remote.values() if online.get(account_id))

    def servers_with(self, account_id: int) -> list[str]:
        """The other servers ``account_id`` has a session on, in a stable order."""
        return sorted(server for server, online in self._remote.items() if online.get(account_id))

    def sessions_elsewhere(self, account_id: int) -> list[tuple[str, dict[str, Any]]]:
        """The account's sessions on other servers: (server, description) pairs."""
        return [
            (server, described)
            for server, online in sorted(self._remote.items())
            for described in online.get(account_id, ())
        ]

    def remote_accounts(self) -> set[int]:
        """Every account online on another server."""
        return {account for online in self._remote.values() for account in online}

    def session_number(self) -> int | None:
        """A session number unique in the cluster, or None if Redis cannot give one now
        (the server then numbers the session itself). Waits for Redis: login pool only."""
        try:
            return self.bus.next_session_number()
        except Exception as exc:  # redis-py's errors are many; any means "not now"
            log.warning("cluster: no session number from Redis: %s", exc)
            return None

    # -- publishing (under the hub's lock; never waits) -----------------------------------------

    def publish(self, kind: str, **fields: Any) -> None:
        """Tell the other servers about a change made here."""
        self.bus.publish({"t": kind, **fields})

    def online(self, account_id: int, sessions: list[dict[str, Any]]) -> None:
        """The account now has these ``sessions`` on this server (described)."""
        self.bus.set_online(account_id, sessions)

    # -- receiving (the bus's reader thread) -----------------------------------------------------

    def _hub_lock_apply(self, fn: Callable[[], None]) -> None:
        with self._hub.lock:
            fn()

    def learn_account(self, name: str) -> Identity | None:
        """An account another server registered (or renamed) that this one has not heard
        of: read it and its rooms from the store, then add it (not under the hub's lock:
        this reads the store)."""
        account = self._hub.store.find_account(name)
        if account is None:
            return None
        rooms = [m.room for m in self._hub.store.load_memberships() if m.account == account.id]
        with self._hub.lock:
            identity = self._hub.accounts.add(account)
            for key in rooms:
                room = self._hub.rooms.get(key)
                if room is not None and identity.id not in room.members:
                    self._hub.rooms.join(room, identity.id, self._hub.sessions.of(identity.id))
        return identity

    def _on_events(self, events: list[Event]) -> None:
        # What needs the store is read first, outside the lock.
        for event in events:
            if event.get("t") == "account":
                try:
                    self.learn_account(str(event["name"]))
                except StoreError as exc:
                    log.error("cannot read account %s registered elsewhere: %s", event, exc)
        with self._hub.lock:
            for event in events:
                kind = str(event.get("t"))
                handler = _HANDLERS.get(kind)
                moderation = MODERATION_HANDLERS.get(kind)
                if handler is None and moderation is None:
                    log.warning("cluster: unknown event %r", event.get("t"))
                    continue
                try:
                    if handler is not None:
                        handler(self, event)
                    elif moderation is not None:
                        moderation(self._hub, event)
                except (KeyError, TypeError, ValueError) as exc:
                    log.error("cluster: bad event %r: %s", event, exc)

    def _on_tick(self) -> None:
        now = time.monotonic()
        with self._hub.lock:
            gaps = self.sequencer.overdue(now)
        for gap in gaps:
            self._fill(gap)
        if now >= self._next_check:
            self._next_check = now + _CHECK_EVERY
            try:
                servers = self.bus.servers()
            except Exception as exc:  # Redis down: the reader reports it
                log.debug("cluster: cannot list servers: %s", exc)
                return
            with self._hub.lock:
                self._check_servers(servers, now)

    def _on_health(self, healthy: bool) -> None:
        text = (
            "this server is in touch with the rest of the cluster again"
            if healthy
            else "this server lost touch with the rest of the cluster: people on other "
            "servers may not see your messages, nor you theirs, until it is back "
            "(reconnecting to another server may help)"
        )
        data = encode("system", event="cluster", healthy=healthy, text=text)
        with self._hub.lock:
            self._healthy = healthy
            for session in self._hub.sessions.all():
                session.send(data)

    # -- servers coming and going ------------------------------------------------------------------

    def _learn_servers(self, servers: dict[str, dict[int, list[dict[str, Any]]]]) -> None:
        for server, online in servers.items():
            for account, listed in online.items():
                self._set_remote(server, account, listed)

    def _check_servers(
        self, servers: dict[str, dict[int, list[dict[str, Any]]]], now: float
    ) -> None:
        for server in list(self._remote):
            if server in servers:
                self._missing.pop(server, None)
                continue
            since = self._missing.setdefault(server, now)
            if now - since >= _DEAD_AFTER:
                log.warning("cluster: server %s is gone; its users leave", server)
                self._drop_server(server, "server lost")
        for server, online in servers.items():
            if server not in self._remote:
                for account, listed in online.items():
                    self._set_remote(server, account, listed)

    def _drop_server(self, server: str, reason: str) -> None:
        self._missing.pop(server, None)
        if self.limits is not None:
            self.limits.connections.drop_remote(server)
        for account in list(self._remote.get(server, {})):
            self._set_remote(server, account, [], reason=reason)
        self._remote.pop(server, None)
        self.on_server_gone(server)

    def _set_remote(
        self, server: str, account: int, sessions: list[dict[str, Any]], *, reason: str = ""
    ) -> None:
        """Record ``account``'s sessions on ``server``, announcing an arrival in (or
        departure from) the whole cluster."""
        hub = self._hub
        before = hub.sessions.count(account) + self.remote_sessions(account)
        online = self._remote.setdefault(server, {})
        if sessions:
            online[account] = sessions
        else:
            online.pop(account, None)
        after = hub.sessions.count(account) + self.remote_sessions(account)
        identity = hub.accounts.get(account)
        if identity is None or (before > 0) == (after > 0):
            return
        if not after:
            identity.away = ""  # away ends with the last session anywhere (see away.py)
        for room in hub.rooms.of(account):
            if after:
                room.announce(presence("join", room, identity.name))
            else:
                room.announce(presence("quit", room, identity.name, reason or "quit"))

    # -- filling holes ----------------------------------------------------------------------

    def _fill(self, gap: Gap) -> None:
        store = self._hub.store
        try:
            if gap.conversation.startswith("#"):
                rows = store.room_history(
                    gap.conversation, after_seq=gap.first - 1, limit=gap.upto - gap.first
                )
            else:
                a, b = (int(part) for part in gap.conversation.split(":"))
                rows = store.private_history(
                    a, b, after_seq=gap.first - 1, limit=gap.upto - gap.first
                )
        except StoreError as exc:
            log.error("cluster: cannot fill a hole in %s: %s", gap.conversation, exc)
            return
        with self._hub.lock:
            found = {
                row.seq: self._stored_release(gap.conversation, row)
                for row in rows
                if row.seq is not None and row.seq < gap.upto
            }
            self.sequencer.fill(gap, found)

    def _stored_release(self, conversation: str, row: StoredMessage) -> Callable[[], None]:
        data = encode(row.frame_type, **row.wire_fields(), stored=True)
        delivery = self._hub.delivery
        if row.room is not None:
            room = self._hub.rooms.get(conversation)
            return lambda: delivery.remote_room(room, row.id, row.seq, data) if room else None
        a, b = (int(part) for part in conversation.split(":"))
        sender = self._hub.accounts.find(row.sender)
        recipient = b if sender is not None and sender.id == a else a
        sender_id = a if recipient == b else b
        return lambda: delivery.remote_private(sender_id, recipient, row.id, data)

    # -- event handlers (under the hub's lock) -----------------------------------------------

    def _message(self, event: Event) -> None:
        hub = self._hub
        fields = event["fields"]
        seq = fields.get("seq")
        room_key = event.get("room")
        # Every server reads every event; the frame is encoded only where someone is
        # to get it (a skipped number costs nothing but the sequencer's step).
        if room_key is not None:
            room = hub.rooms.get(room_key)

            def deliver() -> None:
                if room is not None:
                    data = encode(event["frame"], **fields)
                    hub.delivery.remote_room(room, int(fields["id"]), seq, data)

            interested = room is not None and bool(room.live)
            conversation = str(room_key)
        else:
            sender, recipient = int(event["sender"]), int(event["recipient"])

            def deliver() -> None:
                data = encode(event["frame"], **fields)
                hub.delivery.remote_private(sender, recipient, int(fields["id"]), data)

            interested = bool(hub.sessions.count(sender) or hub.sessions.count(recipient))
            conversation = str(event["conversation"])
        hub.writer.saw_id(int(fields["id"]))
        if seq is None:
            deliver()
        elif interested:
            self.sequencer.release(conversation, int(seq), deliver)
        else:
            self.sequencer.skip(conversation, int(seq))

    def _presence(self, event: Event) -> None:
        sessions = [s for s in event["sessions"] if isinstance(s, dict)]
        self._set_remote(str(event["o"]), int(event["account"]), sessions, reason=event["reason"])

    def _close(self, event: Event) -> None:
        """Someone closed one of their sessions that is on this server."""
        if event["server"] != self.bus.server_id:
            return
        for session in self._hub.sessions.of(int(event["account"])):
            if session.number == event["session"]:
                session.send(encode("bye", code="session_closed", reason=str(event["reason"])))
                session.link.close("closed from another session")

    def _room(self, event: Event) -> None:
        """A room created elsewhere, or a topic set there (``by`` says who).

        A creation never renames a room this server already has: two people creating
        ``#Dev`` and ``#dev`` at once on two servers each keep the spelling they saw."""
        hub = self._hub
        room = hub.rooms.get(str(event["name"]))
        if room is None:
            room = hub.rooms.create(str(event["name"]))
            room.topic = str(event["topic"])
        elif event.get("by") and room.topic != event["topic"]:
            room.topic = str(event["topic"])
            room.broadcast(encode("topic", room=room.name, topic=room.topic, by=str(event["by"])))

    def _member(self, event: Event) -> None:
        hub = self._hub
        room = hub.rooms.get(str(event["room"]))
        identity = hub.accounts.get(int(event["account"]))
        if room is None or identity is None:
            return
        mine = hub.sessions.of(identity.id)
        if event["joined"]:
            if identity.id in room.members:
                return
            hub.rooms.join(room, identity.id, mine)
            room.announce(presence("join", room, identity.name), skip=None)
            for session in mine:
                hub.send_joined(session, room, None)
        else:
            if identity.id not in room.members:
                return
            hub.rooms.part(room, identity.id, mine)
            room.announce(presence("part", room, identity.name))
            for session in mine:
                session.send(encode("parted", room=room.name))

    def _rename(self, event: Event) -> None:
        hub = self._hub
        identity = hub.accounts.get(int(event["account"]))
        if identity is None:
            return
        old, new = identity.name, str(event["new"])
        hub.accounts.rename(identity, new)
        tell_rename(hub, identity, old, new)
        mine = encode("nick", old=old, new=new, text=f"you are now {new}")
        for session in hub.sessions.of(identity.id):
            session.send(mine)

    def _keep(self, event: Event) -> None:
        identity = self._hub.accounts.get(int(event["account"]))
        if identity is not None:
            identity.keep_history = bool(event["keep"])

    def _read(self, event: Event) -> None:
        """The account's read marker moved (and is stored): its sessions here hear it."""
        data = encode("read", id=int(event["id"]), **event["fields"])
        for session in self._hub.sessions.of(int(event["account"])):
            session.send(data)

    def _away(self, event: Event) -> None:
        """The account was marked away (or back) on another server."""
        identity = self._hub.accounts.get(int(event["account"]))
        if identity is None:
            return
        # Arriving after the account's last session left (events of two servers race):
        # away has ended already.
        online = self._hub.sessions.count(identity.id) + self.remote_sessions(identity.id)
        set_away(self._hub, identity, str(event["text"]) if online else "")

    def _gone(self, event: Event) -> None:
        self._drop_server(str(event["o"]), "server shut down")

    def _account(self, event: Event) -> None:
        """Registered elsewhere (added from the store in ``_on_events``): the address
        that registered it has one registration less here too."""
        if self.limits is not None and event.get("source"):
            self.limits.logins.registered(str(event["source"]))

    def _login_failed(self, event: Event) -> None:
        if self.limits is not None:
            self.limits.logins.failed(str(event["source"]), str(event["name"]))

    def _connections(self, event: Event) -> None:
        if self.limits is not None:
            self.limits.connections.set_remote(
                str(event["o"]), str(event["source"]), int(event["count"])
            )


_HANDLERS: dict[str, Callable[[Cluster, Event], None]] = {
    "message": Cluster._message,
    "presence": Cluster._presence,
    "room": Cluster._room,
    "member": Cluster._member,
    "rename": Cluster._rename,
    "keep": Cluster._keep,
    "account": Cluster._account,
    "gone": Cluster._gone,
    "read": Cluster._read,
    "away": Cluster._away,
    "login_failed": Cluster._login_failed,
    "connections": Cluster._connections,
    "close": Cluster._close,
}
