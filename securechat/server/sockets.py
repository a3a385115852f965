"""The server's listening sockets and the process limits they need."""

from __future__ import annotations

import errno
import ipaddress
import resource
import socket

from ..errors import ConfigError

__all__ = ["BACKLOG", "is_unspecified", "listen", "raise_fd_limit"]

BACKLOG = 1024
"""Connections the kernel holds for the accept thread: a reconnect storm after a
restart must not be refused while the thread catches up."""


def listen(host: str, port: int, option: str) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; ConfigError naming ``option`` if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    # A restarted server must bind at once, despite connections in TIME_WAIT.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use: stop the other server or pass {option}"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return listener


def is_unspecified(host: str) -> bool:
    """True for an address that means "every interface", which nobody can dial."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return not host  # a name


def raise_fd_limit() -> None:
    """Each client is a file descriptor; the usual soft limit of 1,024 is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                pass
