"""``securechat-admin``: accounts, invites, bans, backups and counts, on the store a
server uses, whether the server runs or not (see docs/server.md)."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
