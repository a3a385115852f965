"""File transfer between users on different servers of a cluster.

Strategy
--------
A transfer lives on the *sender's* server, in its
:class:`~securechat.server.relay.FileRelay`, exactly as between two users of
one server: every check, the flow control (at most ``FILE_WINDOW`` bytes
unacknowledged by the recipient, end to end) and every outcome stay there.
When the recipient has no session on the sender's server but has one on
another, the relay is handed a *proxy* :class:`Session` instead: a session
whose ``link`` forwards whatever the relay sends it over a peer link
(:mod:`securechat.server.cluster.peers`) to the recipient's server, which hands it to
the real session. What the real session then says about the transfer
(``file_accept``, ``file_ack``, ``file_result``...) goes back over the link
and is fed to the sender's relay as if the proxy had said it. So file bytes
cross between servers only inside mutually authenticated TLS, never through
Redis or PostgreSQL; the bytes in flight per transfer stay bounded by the
window, whatever the number of hops; and the link's outbox is bounded like a
client's, a link that stops reading being dropped.

On the link (both directions) travel the client protocol's own frames, each
with a field ``via``: the number of the proxy it belongs to, chosen by the
sender's server (the *origin*, the one that dialed the link). Two more frames:

* ``bind {via, account}`` (origin to destination): proxy ``via`` stands for the
  account's newest session on the destination (the same rule as an offer on
  one server). One proxy serves every transfer from the origin to that
  session, so the relay's caps (offers per sender, files being received per
  recipient) count as they do on one server.
* ``unbound {via}`` (destination to origin): that session is gone (or there
  was none): the origin fails its transfers (resumable) and forgets the proxy.

A ``refuse {via, text}`` from the origin says the recipient's frame broke the
protocol: the destination answers it ``bad_frame`` and closes that session,
as the origin would have closed it had it been local.

Failure: a link that closes (the other server died, the network failed, a
ping went unanswered, the cluster found the server dead) fails every
transfer across it on both sides with ``file_failed``, resumable.

Everything here runs under the hub's lock.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ...errors import ChatError, ProtocolError
from ...outbox import Stream
from ...wire.protocol import Decoder, Frame, encode
from ..accounts import Identity
from ..sessions import Session, State
from .peers import PeerLink, PeerNetwork

if TYPE_CHECKING:
    from ..hub import Hub
    from .node import Cluster

__all__ = ["MAX_ROUTES", "RemoteFiles"]

log = logging.getLogger(__name__)

MAX_ROUTES = 1024
"""Transfers from other servers remembered per recipient session; the oldest are
forgotten first (a finished transfer's route is never removed otherwise)."""

# What a recipient may say about a transfer from another server.
_FROM_RECIPIENT = frozenset(
    {
        "file_accept",
        "file_reject",
        "file_cancel",
        "file_chunk",
        "file_ack",
        "file_done",
        "file_result",
    }
)


# What the relay (and the hub, answering) may say to a recipient: nothing else reaches
# a session through a link, whatever the other server sends.
_TO_RECIPIENT = frozenset({"file_offer", "file_chunk", "file_done", "file_failed", "ok", "error"})

_ROUTING = ("via", "bulk")  # fields the link adds; a client's own are dropped


class _RemotePeer:
    """The ``link`` of a proxy session: forwards what the relay sends it."""

    __slots__ = ("_files", "link", "via")

    def __init__(self, files: RemoteFiles, link: PeerLink, via: int) -> None:
        self._files = files
        self.link = link
        self.via = via

    @property
    def peer(self) -> str:
        return f"server {self.link.server}"

    def send(self, data: bytes, *, bulk: bool = False) -> bool:
        # The relay hands over encoded frames; each gets the proxy's number. (The
        # copies cost far less than the TLS that follows.)
        decoder = Decoder()
        decoder.feed(data)
        parts = []
        while (frame := decoder.next_frame()) is not None:
            parts.append(_tagged(frame, self.via, bulk=True if bulk else None))
        return self.link.send(b"".join(parts), bulk=bulk)

    def send_stream(self, stream: Stream) -> bool:
        return False  # nothing streams to a recipient of files

    def close(self, reason: str) -> None:
        self._files._forget_proxy(self.link, self.via)

    def cancel_deadline(self) -> None:
        pass


class RemoteFiles:
    """Both ends of transfers that cross servers (see the module notes)."""

    def __init__(self, hub: Hub, cluster: Cluster) -> None:
        self._hub = hub
        self._cluster = cluster
        self.network: PeerNetwork | None = None
        """The links to other servers; None when this server has no peer port."""
        self._numbers = itertools.count(1)
        # Origin side: proxies by link and number, and by (server, account) for reuse.
        self._proxies: dict[PeerLink, dict[int, Session]] = {}
        self._proxy_of: dict[tuple[str, int], Session] = {}
        # Destination side: bound sessions by link and number, the bindings of each
        # session, and each session's transfers from elsewhere (id -> link, number).
        self._bound: dict[PeerLink, dict[int, Session]] = {}
        self._bindings: dict[Session, set[tuple[PeerLink, int]]] = {}
        self._routes: dict[Session, OrderedDict[int, tuple[PeerLink, int]]] = {}

    # -- the sender's server --------------------------------------------------------------

    def is_online_elsewhere(self, identity: Identity) -> bool:
        """True if the account has a session on another server."""
        return bool(self._cluster.remote_sessions(identity.id))

    def recipient(self, identity: Identity) -> Session:
        """The proxy for the account's newest session on another server."""
        if self.network is None:
            raise ChatError(
                "unavailable",
                f"{identity.name} is connected to another server of this chat, and this "
                "server cannot send files there (its operator has not set --peer-port); "
                "try again when they are on this server",
            )
        servers = self._cluster.servers_with(identity.id)
        if not servers:
            raise ChatError("not_online", f"{identity.name} is not online; try again when they are")
        server = servers[0]
        proxy = self._proxy_of.get((server, identity.id))
        if proxy is not None:
            return proxy
        link = self.network.link_to(server)
        via = next(self._numbers)
        proxy = Session(_RemotePeer(self, link, via), cert_user=None, tls_version="", source="")
        proxy.identity = identity
        proxy.state = State.READY
        self._proxies.setdefault(link, {})[via] = proxy
        self._proxy_of[(server, identity.id)] = proxy
        link.send(encode("bind", via=via, account=identity.id))
        return proxy

    def _forget_proxy(self, link: PeerLink, via: int) -> Session | None:
        proxy = self._proxies.get(link, {}).pop(via, None)
        if proxy is not None:
            key = (link.server, proxy.account_id)
            if self._proxy_of.get(key) is proxy:
                del self._proxy_of[key]
        return proxy

    def _from_destination(self, link: PeerLink, frame: Frame, via: int) -> None:
        """A frame from the recipient's server about proxy ``via``."""
        if frame.type == "unbound":
            proxy = self._forget_proxy(link, via)
            if proxy is not None:
                self._hub.relay.drop(proxy)
            return
        proxy = self._proxies.get(link, {}).get(via)
        if proxy is None:
            return  # crossed the proxy's end: the recipient heard file_failed already
        if frame.type not in _FROM_RECIPIENT:
            raise ProtocolError(f"{frame.type!r} has no business on a peer link")
        try:
            self._hub.handle(proxy, Frame(frame.type, _untagged(frame), frame.body))
        except ProtocolError as exc:
            # The recipient broke the protocol: its own server hangs up on it, not on us.
            link.send(encode("refuse", via=via, text=str(exc)))

    # -- the recipient's server -----------------------------------------------------------

    def forward(self, session: Session, frame: Frame) -> bool:
        """Send a recipient's frame about a transfer from another server to that
        server; False if the transfer is not from elsewhere (the local relay's)."""
        routes = self._routes.get(session)
        tid = frame.get("id")
        route = routes.get(tid) if routes is not None and isinstance(tid, int) else None
        if route is None:
            return False
        link, via = route
        link.send(_tagged(frame, via), bulk=frame.type == "file_chunk")
        return True

    def session_closed(self, session: Session) -> None:
        """A session ended: the servers whose transfers it received hear so."""
        self._routes.pop(session, None)
        for link, via in self._bindings.pop(session, ()):
            self._bound.get(link, {}).pop(via, None)
            link.send(encode("unbound", via=via))

    def _from_origin(self, link: PeerLink, frame: Frame, via: int) -> None:
        """A frame from the sender's server for the session bound to ``via``."""
        if frame.type == "bind":
            account = frame.int_field("account")
            assert account is not None
            sessions = self._hub.sessions.of(account)
            if not sessions:
                link.send(encode("unbound", via=via))
                return
            self._bound.setdefault(link, {})[via] = sessions[-1]
            self._bindings.setdefault(sessions[-1], set()).add((link, via))
            return
        session = self._bound.get(link, {}).get(via)
        if session is None:
            return  # it left; the origin has been told (unbound)
        if frame.type == "refuse":
            text = f"protocol error: {frame.str_field('text')}"
            session.send(encode("error", code="bad_frame", text=text))
            session.link.close(text)
            return
        if frame.type not in _TO_RECIPIENT:
            raise ProtocolError(f"{frame.type!r} has no business on a peer link")
        fields = _untagged(frame)
        tid = fields.get("id")
        if isinstance(tid, int):
            routes = self._routes.setdefault(session, OrderedDict())
            if frame.type == "file_offer":
                routes[tid] = (link, via)
                if len(routes) > MAX_ROUTES:
                    routes.popitem(last=False)
            elif frame.type == "file_failed":
                routes.pop(tid, None)
        session.send(encode(frame.type, frame.body, **fields), bulk=frame.get("bulk") is True)

    # -- the links ----------------------------------------------------------------------------

    def on_link_frame(self, link: PeerLink, frame: Frame) -> None:
        """A frame from another server (on the link's I/O loop)."""
        via = frame.int_field("via")
        assert via is not None
        with self._hub.lock:
            if link.dialed:
                self._from_destination(link, frame, via)
            else:
                self._from_origin(link, frame, via)

    def on_link_closed(self, link: PeerLink, reason: str) -> None:
        """A link ended: every transfer across it fails, on this side (resumable)."""
        with self._hub.lock:
            for proxy in self._proxies.pop(link, {}).values():
                key = (link.server, proxy.account_id)
                if self._proxy_of.get(key) is proxy:
                    del self._proxy_of[key]
                self._hub.relay.drop(
                    proxy, f"lost the connection to {proxy.name}'s server ({reason})"
                )
            for via, session in self._bound.pop(link, {}).items():
                self._bindings.get(session, set()).discard((link, via))
                routes = self._routes.get(session, OrderedDict())
                for tid, route in list(routes.items()):
                    if route[0] is link:
                        del routes[tid]
                        session.send(
                            encode(
                                "file_failed",
                                id=tid,
                                reason=f"lost the connection to the sender's server ({reason})",
                                resumable=True,
                            )
                        )

    def server_gone(self, server: str) -> None:
        """The cluster found ``server`` dead or gone: close its links now."""
        if self.network is not None:
            self.network.close_server(server, f"server {server} left the cluster")


def _tagged(frame: Frame, via: int | None, **extra: Any) -> bytes:
    """``frame`` again, naming proxy ``via`` (None: without the routing fields)."""
    return encode(frame.type, frame.body, **_untagged(frame), via=via, **extra)


def _untagged(frame: Frame) -> dict[str, Any]:
    return {k: v for k, v in frame.fields.items() if k not in _ROUTING}
