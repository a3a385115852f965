"""SIGHUP: load the certificate, key and client CA again, and what else can change safely.

What a reload does, in order:

1. Read the command line and the config file again, exactly as at start (the command
   line still wins). A file that no longer parses changes nothing and is logged.
2. Build a new TLS context from the certificate, key (and its password file) and client
   CA, even when their paths did not change: renewing a certificate in place is the
   common case. The listener hands the new context to new connections only; sessions
   already open keep theirs. A certificate or key that does not load keeps the old one,
   and the log says why.
3. Apply the other keys that can change under running sessions (:data:`RELOADABLE`),
   and log one line naming what changed and which changed keys need a restart.

It runs on the main thread, between signals, never in the signal handler itself.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from ..certcheck import Severity, check_server_certificate, log_findings
from ..errors import ConfigError
from .config import NOT_IN_FILE
from .keyfile import exposed_key_warning
from .listener import Server, ServerConfig

__all__ = ["RELOADABLE", "TLS_KEYS", "Reloader", "fingerprint"]

log = logging.getLogger(__name__)

TLS_KEYS = frozenset({"cert", "key", "key_password_file", "client_ca", "tls_min"})
"""What goes into the TLS context handed to new connections."""

RELOADABLE = TLS_KEYS | {"log_level", "max_sessions"}
"""Options (by ``dest``) a reload applies; any other change waits for a restart.

Turning mutual TLS on or off (``client_ca`` from unset to set, or back) is not among
them: it changes who the existing sessions are, so it needs a restart.
"""


def fingerprint(cert: Path) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file, as clients show it."""
    try:
        der = ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii", errors="replace"))
    except (OSError, ValueError):
        return "unreadable"
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class Reloader:
    """Applies a fresh reading of the configuration to a running server."""

    def __init__(
        self,
        server: Server,
        *,
        args: argparse.Namespace,
        load: Callable[[], argparse.Namespace],
        to_config: Callable[[argparse.Namespace], ServerConfig],
        on_log_level: Callable[[str], None],
    ) -> None:
        self._server = server
        self._running = argparse.Namespace(**vars(args))
        self._load = load
        self._to_config = to_config
        self._on_log_level = on_log_level

    def reload(self) -> None:
        """Read everything again and apply what can change; never raises for bad input."""
        try:
            new = self._load()
        except ConfigError as exc:
            log.error("reload: configuration not reloaded, nothing changed: %s", exc)
            return
        running = self._running
        changed = [
            dest
            for dest, value in vars(new).items()
            if dest not in NOT_IN_FILE and value != getattr(running, dest, None)
        ]
        restart = [d for d in changed if d not in RELOADABLE]
        if (new.client_ca is None) != (running.client_ca is None):
            restart.append("client_ca")
            new.client_ca = running.client_ca
        before = argparse.Namespace(**vars(running))
        applied: list[str] = []
        tls = argparse.Namespace(**vars(running))
        for dest in TLS_KEYS:
            setattr(tls, dest, getattr(new, dest))
        try:
            config = self._to_config(tls)
            # The checks made at start: a certificate clients would refuse is not
            # swapped in for one they accept.
            findings = check_server_certificate(
                config.cert, config.key, key_password=config.key_password
            )
            if not log_findings(findings, log, cert=config.cert):
                worst = next(f for f in findings if f.severity is Severity.ERROR)
                raise ConfigError(f"cannot load certificate {config.cert}: {worst.problem}")
            self._server.use_tls(config)
        except ConfigError as exc:
            log.error("reload: keeping the old certificate and key: %s", exc)
        else:
            applied += [d for d in changed if d in TLS_KEYS and d not in restart]
            if (warning := exposed_key_warning(new.key)) is not None:
                log.warning("%s", warning)
            log.info(
                "reload: certificate %s loaded for new connections (SHA-256 %s)",
                new.cert,
                fingerprint(new.cert),
            )
        if "max_sessions" in changed:
            with self._server.hub.lock:
                self._server.hub.max_sessions = new.max_sessions
            applied.append("max_sessions")
        if "log_level" in changed:
            self._on_log_level(new.log_level)
            applied.append("log_level")
        for dest in applied:
            setattr(running, dest, getattr(new, dest))
        log.info(
            "reload: changed: %s; need a restart to change: %s",
            ", ".join(f"{_option(d)} {getattr(before, d)} -> {getattr(new, d)}" for d in applied)
            or "nothing",
            ", ".join(_option(d) for d in restart) or "nothing",
        )


def _option(dest: str) -> str:
    return dest.replace("_", "-")
