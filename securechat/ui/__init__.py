"""The full-screen terminal client, for ``securechat-client`` on a terminal.

Built with prompt_toolkit over the same client core as line mode, and knowing
nothing of TLS or frames: ``model`` (plain state: ``buffers`` and ``status``,
fed by client events through ``handlers`` and ``transfer_events``),
``render`` (state to sanitised formatted text), ``wrap`` (widths per grapheme
cluster, word wrap), ``cells`` and ``screen`` (the layout, drawn cluster by
cluster), ``complete`` (Tab completion), ``actions`` (what a typed line means in
the current buffer), ``dialogue`` (questions asked before a request goes out),
``paste`` (pasted text) and ``app`` (the Application, its keys and its
threading). See docs/ui.md.
"""

from __future__ import annotations

from .app import ChatApp

__all__ = ["ChatApp"]
