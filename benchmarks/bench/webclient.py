"""The load generator's browsers: clients whose frames travel over the web port's WebSocket.

A :class:`WebClient` is a :class:`~bench.client.Client` with wsproto between its TLS
socket and its frame decoder, as a browser has: every frame it writes goes out as a
binary WebSocket message, and the data of every binary message it receives is fed to
the decoder. Nothing else differs, so a scenario measures what the WebSocket costs
the server compared with the same load over TCP.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request

from .client import Client
from .common import EXPECT_TIMEOUT, ROOM, SERVER_NAME, BenchError, password_of
from .harness import Bench
from .server import ServerProcess

__all__ = ["WebClient", "login_web_many"]


class WebClient(Client):
    """A generator client speaking through ``wss://localhost:PORT/ws``."""

    def __init__(self, name: str, sock: ssl.SSLSocket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name, sock, loop)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.accepted: asyncio.Future[None] = loop.create_future()

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext, name: str) -> WebClient:
        """A WebSocket connection to the web port, upgrade done."""
        client = await cls.connect(port, ctx, name)
        assert isinstance(client, WebClient)
        host = f"{SERVER_NAME}:{port}"
        origin = f"https://{host}".encode()
        upgrade = Request(host=host, target="/ws", extra_headers=[(b"Origin", origin)])
        Client.write(client, client.ws.send(upgrade))  # the HTTP request goes out as it is
        try:
            await asyncio.wait_for(client.accepted, EXPECT_TIMEOUT)
        except BaseException:
            client.abort()
            raise
        return client

    def _received(self, data: bytes, now: float) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, BytesMessage):
                super()._received(bytes(event.data), now)
            elif isinstance(event, AcceptConnection):
                self.accepted.set_result(None)
            elif isinstance(event, Ping):
                Client.write(self, self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._lost(f"WebSocket closed: {event.code} {event.reason}")
            elif not self.accepted.done():
                self.accepted.set_exception(BenchError(f"{self.name}: upgrade refused: {event}"))

    def write(self, data: bytes) -> None:
        """Send encoded frames as one binary WebSocket message."""
        if not self.closed:
            super().write(self.ws.send(BytesMessage(data=data)))


async def login_web_many(
    bench: Bench, server: ServerProcess, names: Sequence[str], *, in_flight: int = 50
) -> list[Client]:
    """Log in every name (registering it) over the web port, ``in_flight`` at a time."""
    sem = asyncio.Semaphore(in_flight)
    ctx = bench.client_context()

    async def one(name: str) -> Client:
        async with sem:
            client = await WebClient.open(server.web_port, ctx, name)
            try:
                await client.expect("hello")
                client.request("login", user=name, password=password_of(name), replay=False)
                await client.expect("welcome")
                joined = await client.expect("joined", room=ROOM)
                client.joined_count = int(joined.get("count") or 0)
            except BaseException:
                client.abort()
                raise
            return client

    results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
    clients = [r for r in results if isinstance(r, Client)]
    failures = [r for r in results if not isinstance(r, Client)]
    if failures:
        for client in clients:
            client.abort()
        raise BenchError(f"{len(failures)} of {len(names)} web logins failed: {failures[0]!r}")
    return clients
