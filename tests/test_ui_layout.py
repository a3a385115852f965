"""The full-screen client's screen layout: what reaches the terminal, cell by cell.

The app tests render into a real Vt100 output of a fixed size and read prompt_toolkit's
last drawn screen; :func:`check_columns` checks that a terminal, measuring each grapheme
cluster as ``wcwidth`` does, would put every cell in the column the screen has it in.
"""

from __future__ import annotations

import datetime
import importlib
import io
from collections.abc import Callable

import pyte
from prompt_toolkit.data_structures import Size
from prompt_toolkit.output.vt100 import Vt100_Output

from securechat.server.listener import Server
from securechat.ui.app import ChatApp
from securechat.ui.buffers import Line
from securechat.ui.render import (
    MARKER_TEXT,
    buflist_rows,
    day_separator,
    pane_fragments,
    pane_rows,
    status_fragments,
)
from securechat.ui.wrap import text_width, wrap

from .conftest import RawClient
from .test_ui import (
    ENTER,
    PAGE_UP,
    UI,
    alt,
    bob_joins,
    event,
    joined,
    logged_in,
    message,
    plain,
    private,
    run_ui,
)

__all__ = ["run_ui"]  # the fixture, used here

FAMILY, WAVE = "👨\u200d👩\u200d👧", "👋🏽"
F9, END, ALT_END = "\x1b[20~", "\x1b[F", "\x1b[1;3F"


def terminal(columns: int) -> tuple[io.StringIO, Vt100_Output]:
    screen = io.StringIO()
    return screen, Vt100_Output(screen, lambda: Size(rows=24, columns=columns), term="xterm")


def screen_rows(app: ChatApp) -> list[str]:
    """The last drawn screen as text, one string per row, wide cells once."""
    screen = app.application.renderer._last_screen
    if screen is None:
        return []
    size = app.application.output.get_size()
    rows = []
    for y in range(size.rows):
        row, x = [], 0
        while x < size.columns:
            char = screen.data_buffer[y][x]
            row.append(char.char)
            x += char.width or 1
        rows.append("".join(row))
    return rows


def check_columns(app: ChatApp) -> None:
    """Every cell of the screen is where a terminal measuring clusters would draw it."""
    screen = app.application.renderer._last_screen
    assert screen is not None
    size = app.application.output.get_size()
    for y in range(size.rows):
        text, x = "", 0
        while x < size.columns:
            char = screen.data_buffer[y][x]
            assert text_width(text) == x, f"row {y}: {text!r} is not {x} columns wide"
            text += char.char
            x += char.width or 1


# -- layout without a screen ---------------------------------------------------------------


def test_layout_modules_document_themselves() -> None:
    for stem in ("cells", "screen", "wrap"):
        module = importlib.import_module(f"securechat.ui.{stem}")
        assert module.__doc__
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                assert obj.__doc__, f"{module.__name__}.{name}"


def test_wrap_breaks_between_words_under_the_message_text() -> None:
    head = [("", "12:34 <bob> ")]
    body = [("", "the quick brown fox jumps over the lazy dog again and again")]
    rows = [plain(row) for row in wrap(head + body, 30, text_width(plain(head)))]
    assert rows == [
        "12:34 <bob> the quick brown",
        "            fox jumps over the",
        "            lazy dog again and",
        "            again",
    ]
    long = wrap([("", "x " + "y" * 50)], 20, 0)
    assert [len(plain(row)) for row in long] == [20, 20, 12]  # only a too-long word is cut


def test_wrap_measures_emoji_as_terminals_do() -> None:
    assert text_width(FAMILY) == text_width(WAVE) == 2
    assert text_width("中文") == 4
    rows = wrap([("", f"{FAMILY}{FAMILY}{FAMILY} {WAVE}")], 6, 0)
    assert [plain(row) for row in rows] == [FAMILY * 3, WAVE]


def test_pane_wraps_with_a_hanging_indent_and_counts_what_it_shows() -> None:
    model = logged_in("bob")
    text = "word " * 30
    model.apply(message(1, text.strip()))
    rows, shown = pane_rows(model.current, model, 40, 10)
    drawn = [plain(row) for row in rows]
    start = drawn.index(next(r for r in drawn if "<bob>" in r))
    indent = drawn[start].index("word")
    assert all(text_width(row) <= 40 for row in drawn)
    assert all(row.startswith(" " * indent + "word") for row in drawn[start + 1 :])
    assert " ".join(r.strip() for r in drawn[start:]).endswith(text.strip())
    assert shown == 2  # "you joined", then the message (after its day separator)


def test_replayed_lines_show_the_time_and_each_day_once_as_a_separator() -> None:
    model = logged_in("bob")
    local = datetime.datetime.now().astimezone()
    today_noon = local.replace(hour=12, minute=5, second=0, microsecond=0)
    days = [today_noon - datetime.timedelta(days=2), today_noon - datetime.timedelta(days=1)]
    for mid, when in enumerate([days[0], days[0], days[1], today_noon], 1):
        stamp = when.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
        fields = {"id": mid, "ts": stamp, "room": "#general", "text": f"m{mid}", "from": "bob"}
        model.apply(event("message", history=True, **fields))
    rows = plain(pane_fragments(model.current, model, 100)[0]).split("\n")
    separators = [r for r in rows if r.startswith("────")]
    assert separators == [plain(day_separator(d.date())) for d in days] + [
        plain(day_separator(today_noon.date()))
    ]
    assert rows.index(separators[1]) == rows.index(separators[0]) + 3  # m1, m2 under day 1
    assert "12:05 <bob> m1" in rows and "12:05 <bob> m4" in rows
    assert plain(day_separator(datetime.date(2026, 12, 1))) == ("──── Tuesday 1 December 2026 ────")


def test_a_buffer_of_today_only_has_no_separator() -> None:
    model = logged_in("bob")
    model.apply(event("message", id=5, room="#general", text="now", **{"from": "bob"}))
    assert "────" not in plain(pane_fragments(model.current, model, 100)[0])


def test_more_counts_messages_that_arrive_while_scrolled_back() -> None:
    model = logged_in("bob")
    for mid in range(1, 41):
        model.apply(message(mid, f"m{mid}"))
    model.scroll(10)
    assert plain(status_fragments(model, 0.0)).endswith("-MORE-")
    model.apply(message(41, "m41"))
    model.apply(event("system", event="join", room="#general", user="carol", text="carol"))
    model.apply(message(42, "m42"))
    assert plain(status_fragments(model, 0.0)).endswith("-MORE(2)-")
    model.jump_to_newest()
    assert "MORE" not in plain(status_fragments(model, 0.0))
    assert model.current.scroll == 0


def test_buffer_list_numbers_buffers_with_unread_and_highlight_counts() -> None:
    model = logged_in("bob")
    model.apply(joined("#dev", "alice"))
    model.apply(message(1, "hi"))
    model.apply(message(2, "alice: look"))
    model.apply(private(3, "psst", sender="bob", to="alice"))
    rows = [plain(row) for row in buflist_rows(model)]
    assert rows == ["1.server", "2.#general (2) !1", "3.#dev", "4.bob (1) !1"]
    assert buflist_rows(model)[2][0][0] == "class:buflist.current"


def test_clearing_a_buffer_empties_its_rows_and_a_replay_does_not_refill_them() -> None:
    model = logged_in("bob")
    model.apply(message(1, "hi"))
    model.current.clear()
    assert model.current.lines == [] and model.current.rows == 0
    model.apply(message(1, "hi"))  # the same message again, as a reconnect replays it
    assert model.current.lines == []
    model.apply(message(2, "new"))
    assert [line.text for line in model.current.lines] == ["new"]
    assert isinstance(model.current.lines[0], Line)


# -- the real Application on a terminal of a fixed size ------------------------------------


def test_prompt_stays_after_a_line_wider_than_the_window(
    server: Server, run_ui: Callable[..., int]
) -> None:
    _, output = terminal(80)
    long = " ".join(f"word{n}" for n in range(60))  # about four screen widths

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type(long)
        await ui.until(lambda: "word59" in screen_rows(ui.app)[-1], "the end of the input shown")
        ui.type(ENTER)
        await ui.until(lambda: "word59" in ui.pane(), "the long line sent")
        ui.type("abc")
        await ui.until(lambda: screen_rows(ui.app)[-1].startswith("[#general] abc"), "the prompt")
        ui.type(alt("1"))
        await ui.until(lambda: screen_rows(ui.app)[-1].startswith("[server] abc"), "switched")

    assert run_ui(server, scenario, output=output) == 0


def test_emoji_keep_every_column_where_the_terminal_draws_it(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    _, output = terminal(80)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        bob = bob_joins(server, raw_client)
        bob.send("say", room="#general", text=f"family {FAMILY} wave {WAVE} " + "x " * 40)
        bob.send("topic", room="#general", text=f"emoji {FAMILY}{WAVE} topic")
        await ui.until(lambda: any("wave" in r for r in screen_rows(ui.app)), "the message")
        await ui.until(lambda: any("topic" in r for r in screen_rows(ui.app)[:1]), "the topic")
        check_columns(ui.app)
        rows = [row for row in screen_rows(ui.app)[1:-2] if "│" in row]
        separators = {text_width(row[: row.index("│")]) for row in rows}
        assert len(separators) == 1  # the member list does not move
        assert screen_rows(ui.app)[-1].startswith("[#general]")

    assert run_ui(server, scenario, output=output) == 0


def test_a_terminal_that_draws_emoji_wider_keeps_the_member_list_and_input_in_place(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    # pyte, like tmux 3.3 or an older xterm, gives 👋🏽 four columns and 👨‍👩‍👧 six.
    written, output = terminal(80)
    emulator = pyte.Screen(80, 24)

    def shown() -> list[str]:
        emulator.reset()
        pyte.Stream(emulator).feed(written.getvalue())
        return emulator.display

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        bob = bob_joins(server, raw_client)
        bob.send("say", room="#general", text=f"{WAVE}{FAMILY} after the emoji")
        ui.type("draft typed")
        await ui.until(lambda: any("after the emoji" in r for r in shown()), "the message")
        await ui.until(lambda: shown()[-1].startswith("[#general] draft"), "the input")
        rows = shown()
        cells = emulator.buffer
        assert all(cells[y][73].data == "│" for y in range(1, 22)), rows
        y = next(y for y, row in enumerate(rows) if "after the emoji" in row)
        start = len("03:42 <bob> ") + 2 + 2 + 1  # the emoji as we count them
        assert "".join(cells[y][x].data for x in range(start, start + 5)) == "after", rows
        assert rows[-1].rstrip().endswith("typed")

    assert run_ui(server, scenario, output=output) == 0


def test_no_stale_part_of_a_disputed_emoji_is_left_when_the_pane_scrolls(
    server: Server, run_ui: Callable[..., int]
) -> None:
    written, output = terminal(80)
    emulator = pyte.Screen(80, 24)

    def modifiers_left() -> list[tuple[int, int]]:
        """Where the terminal shows a skin tone our screen does not have there."""
        emulator.reset()
        pyte.Stream(emulator).feed(written.getvalue())
        ours = screen_rows(ui_ref[0].app)
        return [
            (y, x)
            for y in range(24)
            for x in range(80)
            if "🏽" in emulator.buffer[y][x].data and WAVE not in ours[y]
        ]

    ui_ref: list[UI] = []

    async def scenario(ui: UI) -> None:
        ui_ref.append(ui)
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        for n in range(30):  # each pushes the earlier ones up a row, over blank columns
            text = f"{n} {WAVE}" if n % 7 == 0 else f"p {n}"
            ui.app.post_event(message(3000 + n, text))
            await ui.until(
                lambda text=text: any(f"<bob> {text} " in r for r in screen_rows(ui.app)),
                text,
            )
        assert modifiers_left() == []

    assert run_ui(server, scenario, output=output) == 0


def test_the_input_line_shows_disputed_emoji_apart_and_sends_them_whole(
    server: Server, run_ui: Callable[..., int]
) -> None:
    _, output = terminal(80)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type(f"hi {WAVE} {FAMILY} there")
        apart = "👋\u200b🏽 👨\u200b\u200d\u200b👩\u200b\u200d\u200b👧 there"
        await ui.until(lambda: screen_rows(ui.app)[-1].rstrip().endswith(apart), "the input")
        ui.type("\x1b[D" * len(" there") + "!")  # Left, so the cursor is mapped across them
        await ui.until(lambda: ui.app.input.text.endswith(f"{FAMILY}! there"), "the insert")
        ui.type(ENTER)
        await ui.until(lambda: f"hi {WAVE} {FAMILY}! there" in ui.pane(), "the message whole")

    assert run_ui(server, scenario, output=output) == 0


def test_buffer_list_shows_on_wide_screens_and_toggles_with_f9(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    _, output = terminal(120)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        await ui.until(lambda: screen_rows(ui.app)[2].startswith("2.#general"), "the list")
        assert screen_rows(ui.app)[1].startswith("1.server")
        ui.app.post_event(private(9_000, "psst alice", sender="bob", to="alice"))
        await ui.until(
            lambda: screen_rows(ui.app)[3].startswith("3.bob (1) !1"), "the unread conversation"
        )
        ui.type(F9)
        await ui.until(lambda: not screen_rows(ui.app)[1].startswith("1.server"), "hidden")
        ui.type(alt("B"))
        await ui.until(lambda: screen_rows(ui.app)[1].startswith("1.server"), "shown again")
        check_columns(ui.app)

    assert run_ui(server, scenario, output=output) == 0


def test_end_and_alt_end_jump_to_the_newest_line_and_more_counts_arrivals(
    server: Server, run_ui: Callable[..., int]
) -> None:
    _, output = terminal(80)

    def status() -> str:
        return screen_rows(ui_ref[0].app)[-2]

    ui_ref: list[UI] = []

    async def scenario(ui: UI) -> None:
        ui_ref.append(ui)
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        for n in range(60):
            ui.app.post_event(message(1000 + n, f"line {n}"))
        await ui.until(lambda: "line 59" in screen_rows(ui.app)[-3], "the lines")
        ui.type(PAGE_UP)
        await ui.until(lambda: status().rstrip().endswith("-MORE-"), "scrolled back")
        ui.app.post_event(message(2000, "new one"))
        ui.app.post_event(message(2001, "new two"))
        await ui.until(lambda: status().rstrip().endswith("-MORE(2)-"), "two new messages")
        ui.type("draft" + "\x01")  # Ctrl+A: the cursor to the start of the input
        ui.type(END)
        await ui.until(lambda: "new two" in screen_rows(ui.app)[-3], "the newest line")
        assert "MORE" not in status() and ui.app.input.cursor_position == len("draft")
        ui.type(PAGE_UP)
        await ui.until(lambda: "MORE" in status(), "scrolled back again")
        ui.type(ALT_END)
        await ui.until(lambda: "MORE" not in status(), "Alt+End")

    assert run_ui(server, scenario, output=output) == 0


def test_resizing_rewraps_and_keeps_the_layout(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    size = [Size(rows=24, columns=200)]
    output = Vt100_Output(io.StringIO(), lambda: size[0], term="xterm")

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        bob = bob_joins(server, raw_client)
        bob.send("say", room="#general", text="alpha " * 40 + "omega")
        await ui.until(lambda: any("omega" in r for r in screen_rows(ui.app)), "the message")
        wide = [r for r in screen_rows(ui.app) if "alpha" in r]
        size[0] = Size(rows=24, columns=80)
        ui.app.application._on_resize()
        await ui.until(lambda: len(screen_rows(ui.app)[0]) == 80, "the resize")
        await ui.until(lambda: any("omega" in r for r in screen_rows(ui.app)), "rewrapped")
        narrow = [r for r in screen_rows(ui.app) if "alpha" in r or "omega" in r]
        assert len(narrow) > len(wide)
        assert not any("alph" in r and "alpha" not in r for r in narrow)  # never mid-word
        assert screen_rows(ui.app)[-1].startswith("[#general]")
        check_columns(ui.app)

    assert run_ui(server, scenario, output=output) == 0


def test_marker_and_separator_rows_are_not_wrapped_away() -> None:
    model = logged_in("bob")
    model.apply(joined("#dev", "alice"))
    model.apply(message(1, "m1"))
    general = model.find("#general")
    assert general is not None
    model.switch(general)
    drawn = [plain(row) for row in pane_rows(general, model, 80, 10)[0]]
    assert MARKER_TEXT in drawn
