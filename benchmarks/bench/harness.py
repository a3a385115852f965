"""What a scenario is: the :class:`Bench` it gets, the :data:`Figures` it returns, and
the :class:`Figure` rows of the table that judge them."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pki import Pki
from .server import ServerProcess

__all__ = ["Bench", "Figure", "Figures", "Scenario"]

Figures = dict[str, Any]


CAPACITY_ARGS = (
    "--connection-limit=127.0.0.0/8=1000000",
    "--message-burst=1000000",
    "--message-rate=1000000",
    "--registrations-per-ip=1000000",
)
"""Server options that take the per-address and per-account budgets out of the way."""


@dataclass
class Bench:
    """What a scenario run gets: the scale, the certificates and a scratch directory."""

    scale: float
    pki: Pki
    workdir: Path
    profile: Path | None = None
    server_args: tuple[str, ...] = ()
    _context: ssl.SSLContext | None = None

    def n(self, full: float, minimum: float) -> int:
        """``full`` scaled, at least ``minimum``."""
        return max(int(minimum), round(full * self.scale))

    def seconds(self, full: float, minimum: float) -> float:
        """A duration scaled, at least ``minimum``."""
        return max(minimum, full * self.scale)

    def server(self, *extra: str, label: str = "server", budgets: bool = False) -> ServerProcess:
        """A fresh server subprocess (use with ``async with``).

        The capacity scenarios are thousands of clients and messages from one
        address, which the server's per-address and per-account budgets exist to
        refuse, so they are lifted unless ``budgets`` (the stall scenarios measure
        the server as it is configured by default).
        """
        lifted = () if budgets else CAPACITY_ARGS
        return ServerProcess(
            self.pki,
            self.workdir,
            (*lifted, *extra, *self.server_args),
            label,
            profile=self.profile,
        )

    def client_context(self) -> ssl.SSLContext:
        """The one SSLContext shared by every password client."""
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.pki.ca_pem))
        return self._context


@dataclass(frozen=True)
class Figure:
    """A figure shown in the table, with its target if it has one."""

    key: str
    label: str
    target: tuple[str, float] | None = None

    def verdict(self, value: float) -> str:
        """``met``, ``not met`` or empty (no target)."""
        if self.target is None:
            return ""
        op, bound = self.target
        ok = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]
        return "met" if ok else "not met"


@dataclass(frozen=True)
class Scenario:
    """A scenario's function and the figures its table rows show."""

    run: Callable[[Bench], Awaitable[Figures]]
    figures: tuple[Figure, ...]
    certificates: int = 0
