"""Readiness for systemd's ``Type=notify``: the sd_notify protocol, in a few lines.

systemd passes a datagram socket's path in ``$NOTIFY_SOCKET`` (a leading ``@`` means
the abstract namespace); each state is one datagram of ``KEY=VALUE`` lines. The server
says ``READY=1`` once it listens, ``RELOADING=1`` then ``READY=1`` around a SIGHUP
reload, and ``STOPPING=1`` when it begins to shut down. Without the variable (not under
systemd) nothing is sent. A failure to send is logged and never stops the server: the
service manager's timeout is the remedy, not a crash.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["notify", "reloading"]

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to the service manager; True if it went."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", path, exc)
        return False
    return True


def reloading() -> bool:
    """Say a reload began; systemd 253+ wants the monotonic clock alongside."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
