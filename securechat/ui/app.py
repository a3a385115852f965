"""The full-screen client: a prompt_toolkit Application over the client core.

Layout, top to bottom: the buffer's title (room and topic), the message pane
with the room's members beside it, the status line, and the input line.

Threading
---------
The core delivers events on its I/O thread, but prompt_toolkit state (and the
model it draws) belongs to the thread running the event loop. So
:meth:`ChatApp.post_event`, the client's ``on_event``, only queues the event
and, at most once until it has run, schedules :meth:`ChatApp._drain` on the
loop with ``call_soon_threadsafe``; ``_drain`` applies everything queued to the
model on the UI thread and redraws. Events from before the loop started (the
login happens before the screen opens) wait in the queue.

Sending a request only hands bytes to the I/O thread, so it happens right on
the UI thread. Slow actions (export, hashing a file to offer, opening a
download) run one at a time, in the order typed, on a worker thread, and their
results come back as events like everything else: the screen never freezes.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer as InputBuffer
from prompt_toolkit.data_structures import Point
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.completion import generate_completions
from prompt_toolkit.layout import (
    ConditionalContainer,
    Dimension,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    VSplit,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput, ConditionalProcessor, PasswordProcessor
from prompt_toolkit.mouse_events import MouseEvent, MouseEventType

from ..client.commands import Local, Request
from ..client.core import ChatClient, Event
from ..errors import ChatError, ConnectionLost
from .actions import CloseConversation, OpenConversation, interpret
from .complete import ChatCompleter
from .dialogue import Dialogue, delete_dialogue, password_dialogue
from .linemode import execute_local
from .model import ChatModel
from .render import (
    STYLE,
    members_fragments,
    pane_fragments,
    prompt_fragments,
    status_fragments,
    title_fragments,
)

if TYPE_CHECKING:  # defined for type checkers only
    from prompt_toolkit.key_binding.key_bindings import NotImplementedOrNone

__all__ = ["KEY_HELP", "ChatApp"]

MAX_MEMBERS_WIDTH = 20
"""The side list never takes more columns than this (names are at most 32)."""

MIN_COLUMNS_FOR_MEMBERS = 60
"""Narrower terminals give the whole width to messages."""

WHEEL_ROWS = 3
"""Rows one notch of the mouse wheel scrolls, as in most terminals."""

WRAP_INDENT = len("12:34:56 ")
"""Columns a wrapped message row is indented by."""

KEY_HELP = (
    "Keys: Enter sends; Up/Down recall input; Tab completes; PageUp/PageDown (or the wheel) scroll",
    "Ctrl+N/Ctrl+P next/previous buffer; Alt+1..9, Alt+0 buffer by number; Alt+A activity",
    "Ctrl+L redraws; /quit, Ctrl+D on an empty line or Ctrl+C leaves",
)
"""The keys, listed after /help."""

_TRANSFER_NOTICES = frozenset({"file_offered", "file_accepted"})


class _Worker:
    """One thread running slow actions in the order they were typed.

    A daemon thread: a multi-gigabyte file half hashed must not keep the
    process alive after /quit.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ui-worker", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()


def _execute_local(client: ChatClient, action: Local, *, keys: bool) -> None:
    """Line mode's local actions; the full /help also lists this screen's keys."""
    execute_local(client, action)
    for text in KEY_HELP if keys else ():
        client.show(Event("system", {"event": "help", "text": text}))


class _PaneControl(FormattedTextControl):
    """The current buffer's newest rows, bottom-aligned; the mouse wheel scrolls it.

    The cursor (hidden) sits on the last row, so the window shows the bottom
    even when long lines wrap.
    """

    def __init__(self, chat: ChatApp) -> None:
        self._chat = chat
        self._rows = 0
        super().__init__(
            self._pane_fragments,
            focusable=False,
            show_cursor=False,
            get_cursor_position=lambda: Point(x=0, y=max(0, self._rows - 1)),
        )

    def _pane_fragments(self) -> StyleAndTextTuples:
        model = self._chat.model
        height = self._chat.application.output.get_size().rows  # at least the pane's height
        fragments, self._rows = pane_fragments(model.current, model, height)
        return fragments

    def mouse_handler(self, mouse_event: MouseEvent) -> NotImplementedOrNone:
        """Scroll on the wheel; anything else as FormattedTextControl does."""
        if mouse_event.event_type == MouseEventType.SCROLL_UP:
            self._chat.scroll(WHEEL_ROWS)
            return None
        if mouse_event.event_type == MouseEventType.SCROLL_DOWN:
            self._chat.scroll(-WHEEL_ROWS)
            return None
        return super().mouse_handler(mouse_event)


class ChatApp:
    """The full-screen chat client.

    Make one, give :meth:`post_event` to the :class:`~securechat.client.core.ChatClient`
    as its ``on_event``, connect the client, then :meth:`run` it. Build it inside
    the prompt_toolkit app session whose input and output it should use.
    """

    def __init__(self) -> None:
        self.model = ChatModel()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_pending = False
        self._client: ChatClient | None = None
        self._quit_reason = ""
        self._worker = _Worker()
        self._dialogue: Dialogue | None = None
        """Questions being asked on the input line (/password, /account delete)."""
        self.input = InputBuffer(
            name="input",
            multiline=False,
            completer=ChatCompleter(self.model),
            complete_while_typing=False,
        )
        self._pane_window = Window(
            _PaneControl(self),
            wrap_lines=True,
            always_hide_cursor=True,
            # Wrapped rows start under the text, clear of the timestamps' column.
            get_line_prefix=lambda line, wrap_count: " " * WRAP_INDENT if wrap_count else "",
        )
        self.application: Application[None] = Application(
            layout=self._layout(),
            key_bindings=self._key_bindings(),
            style=STYLE,
            full_screen=True,
            mouse_support=True,
            refresh_interval=1.0,  # the clock, and the reconnect countdown
            enable_page_navigation_bindings=False,
        )

    # -- running -------------------------------------------------------------------------

    def run(self, client: ChatClient) -> int:
        """Show the chat until the user quits; 0, or 1 if the connection was lost for good."""
        return asyncio.run(self.run_async(client))

    async def run_async(self, client: ChatClient) -> int:
        """:meth:`run` on the running event loop; quits ``client`` when the screen closes."""
        self._client = client
        loop = asyncio.get_running_loop()
        with self._lock:
            self._loop = loop
            self._drain_pending = True
        loop.call_soon(self._drain)  # what arrived while logging in
        try:
            await self.application.run_async()
        finally:
            with self._lock:
                self._loop = None
            self._worker.stop()
            lost = client.closed
            await asyncio.to_thread(client.quit, self._quit_reason)
        return 1 if lost else 0

    def post_event(self, event: Event) -> None:
        """Take an event from the client; safe to call from any thread."""
        self._events.put(event)
        with self._lock:
            if self._loop is None or self._drain_pending:
                return
            self._drain_pending = True
            loop = self._loop
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop closed as the screen did: nobody is left to show it to

    def quit(self, reason: str = "") -> None:
        """Close the screen; the client then says goodbye with ``reason``."""
        self._quit_reason = reason
        if self.application.is_running and not self.application.is_done:
            self.application.exit()

    def scroll(self, rows: int) -> None:
        """Scroll the message pane up (positive) or down by ``rows``."""
        info = self._pane_window.render_info
        on_screen = len(set(info.displayed_lines)) if info is not None else 1
        self.model.scroll(rows, keep=on_screen)
        self.application.invalidate()

    def _drain(self) -> None:
        with self._lock:
            self._drain_pending = False
        bell = False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if self._client is not None and (
                event.type.startswith("file_") or event.data.get("event") in _TRANSFER_NOTICES
            ):
                # Progress events carry only ids: names and peers come from the core.
                self.model.learn_transfers(self._client.transfers())
            outcome = self.model.apply(event)
            bell = bell or outcome.bell
            for request in outcome.requests:
                self._send(request, quiet=True)
        if bell:
            self.application.output.bell()
        self._mark_read()
        self.application.invalidate()

    def _mark_read(self) -> None:
        """The visible buffer is read up to its newest message (for the account's other
        sessions; the client sends at most one marker a second per conversation)."""
        buffer = self.model.current
        newest = buffer.newest_id()
        if self._client is None or newest is None or buffer.kind == "server":
            return
        if buffer.kind == "room":
            self._client.mark_read(room=buffer.name, mid=newest)
        else:
            self._client.mark_read(user=buffer.name, mid=newest)

    # -- input ---------------------------------------------------------------------------

    def submit(self, text: str) -> None:
        """Act on what the user typed; a paste of several lines is several inputs."""
        self.model.history.add(text)
        for line in text.splitlines():
            if line.strip():
                self._execute(line)
        self.application.invalidate()

    def _execute(self, line: str) -> None:
        try:
            action = interpret(line, self.model)
        except ChatError as exc:
            self.model.apply(Event("error", {"code": exc.code, "text": exc.text}))
            return
        if isinstance(action, OpenConversation):
            self.model.switch(self.model.open_private(action.name))
            if action.then is not None:
                self._send(action.then, quiet=False)
        elif isinstance(action, CloseConversation):
            self.model.close(self.model.current)
        elif isinstance(action, Local) and action.kind == "clear":
            self.model.current.clear()
        elif isinstance(action, Local):
            if action.kind == "quit":
                self.quit(action.arg)
            elif action.kind == "password":
                self._dialogue = password_dialogue()
            elif action.kind == "account_delete" and not action.target:
                warning, self._dialogue = delete_dialogue(self.model.user)
                self.model.apply(Event("system", {"event": "confirm", "text": warning}))
            elif self._client is not None:
                keys = action.kind == "help" and not line.partition(" ")[2].strip()
                self._worker.submit(partial(_execute_local, self._client, action, keys=keys))
        else:
            if action.type == "msg":
                # As irssi and WeeChat: the conversation opens, and the view stays here.
                self.model.open_private(action.fields["to"])
            elif action.type == "join" and (joined := self.model.find(action.fields["room"])):
                self.model.switch(joined)  # already in: the answer will not switch
            self._send(action, quiet=False)

    def answer(self, text: str) -> None:
        """Take what was typed as the answer to the dialogue's question (never echoed
        into the buffer or the input history); the request goes once all are answered."""
        dialogue = self._dialogue
        if dialogue is None:
            return
        try:
            request = dialogue.answer(text)
        except ChatError as exc:
            self._dialogue = None
            self.model.apply(Event("error", {"code": exc.code, "text": exc.text}))
        else:
            if request is not None:
                self._dialogue = None
                self._send(request, quiet=False)
        self.application.invalidate()

    def _cancel_dialogue(self) -> None:
        self.answer("")

    def _prompt(self) -> StyleAndTextTuples:
        if self._dialogue is not None:
            return [("class:prompt", self._dialogue.question.prompt)]
        return prompt_fragments(self.model)

    def _send(self, request: Request, *, quiet: bool) -> None:
        """Send ``request``; ``quiet`` ones refresh state and fail silently."""
        if self._client is None:
            return
        try:
            self._client.request(request.type, request.fields)
        except ConnectionLost as exc:
            if quiet:
                self.model.cancel_quiet(request)
            else:
                self.model.apply(Event("error", {"code": "not_connected", "text": str(exc)}))
        except ChatError as exc:  # too much kept while reconnecting
            if quiet:
                self.model.cancel_quiet(request)
            else:
                self.model.apply(Event("error", {"code": exc.code, "text": exc.text}))

    def _history(self, older: bool) -> None:
        entry = self.model.history.back(self.input.text) if older else self.model.history.forward()
        if entry is not None:
            self.input.document = Document(entry)

    # -- layout and keys -----------------------------------------------------------------

    def _layout(self) -> Layout:
        members = ConditionalContainer(
            VSplit(
                [
                    Window(width=1, char="│", style="class:separator"),
                    Window(
                        FormattedTextControl(
                            lambda: members_fragments(self.model.current, self.model)
                        ),
                        width=self._members_width,
                    ),
                ]
            ),
            filter=Condition(self._show_members),
        )
        input_window = Window(
            BufferControl(
                self.input,
                input_processors=[
                    BeforeInput(self._prompt),
                    ConditionalProcessor(
                        PasswordProcessor(),
                        Condition(
                            lambda: self._dialogue is not None and self._dialogue.question.secret
                        ),
                    ),
                ],
            ),
            height=1,
        )
        screen = HSplit(
            [
                Window(
                    FormattedTextControl(lambda: title_fragments(self.model)),
                    height=1,
                    style="class:title",
                ),
                VSplit([self._pane_window, members]),
                Window(
                    FormattedTextControl(lambda: status_fragments(self.model, time.monotonic())),
                    height=1,
                    style="class:status",
                ),
                input_window,
            ]
        )
        menu = Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))
        return Layout(FloatContainer(screen, floats=[menu]), focused_element=input_window)

    def _show_members(self) -> bool:
        columns = self.application.output.get_size().columns
        return self.model.current.kind == "room" and columns >= MIN_COLUMNS_FOR_MEMBERS

    def _members_width(self) -> Dimension:
        # As wide as the longest name, so the messages get every other column.
        longest = max((len(n) for n in self.model.current.members.values()), default=0)
        return Dimension.exact(min(longest + 1, MAX_MEMBERS_WIDTH))

    def _key_bindings(self) -> KeyBindings:
        kb = KeyBindings()
        model = self.model
        menu_open = Condition(lambda: self.input.complete_state is not None)
        input_empty = Condition(lambda: not self.input.text)

        def redraw_after(action: Callable[[], None]) -> Callable[[KeyPressEvent], None]:
            def handler(event: KeyPressEvent) -> None:
                action()
                self._mark_read()  # another buffer may be showing now
                self.application.invalidate()

            return handler

        asking = Condition(lambda: self._dialogue is not None)

        @kb.add("enter")
        def _(event: KeyPressEvent) -> None:
            text = self.input.text
            self.input.reset()
            if self._dialogue is not None:
                self.answer(text)
            else:
                self.submit(text)

        kb.add("up", filter=menu_open)(redraw_after(self.input.complete_previous))
        kb.add("down", filter=menu_open)(redraw_after(self.input.complete_next))
        kb.add("up", filter=~menu_open)(redraw_after(partial(self._history, True)))
        kb.add("down", filter=~menu_open)(redraw_after(partial(self._history, False)))
        kb.add("tab")(generate_completions)
        kb.add("s-tab")(redraw_after(self.input.complete_previous))
        kb.add("pageup")(redraw_after(lambda: self.scroll(self._page())))
        kb.add("pagedown")(redraw_after(lambda: self.scroll(-self._page())))
        kb.add("c-n")(redraw_after(partial(model.cycle, 1)))
        kb.add("c-p")(redraw_after(partial(model.cycle, -1)))
        for digit in "1234567890":
            number = int(digit) or 10
            kb.add("escape", digit)(redraw_after(partial(model.switch_to_number, number)))
        kb.add("escape", "a")(redraw_after(model.switch_to_activity))
        kb.add("c-d", filter=input_empty)(lambda event: self.quit())
        kb.add("c-c", filter=asking)(lambda event: self._cancel_dialogue())
        kb.add("c-c", filter=~asking)(lambda event: self.quit("interrupted"))
        kb.add("<sigint>")(lambda event: self.quit("interrupted"))
        kb.add("c-l")(lambda event: self.application.renderer.clear())
        return kb

    def _page(self) -> int:
        """Rows in a page: what the pane shows, less one line kept for context."""
        info = self._pane_window.render_info
        return max(1, len(set(info.displayed_lines)) - 1) if info is not None else 10
