"""``python -m securechat.admin``: the same as ``securechat-admin``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
