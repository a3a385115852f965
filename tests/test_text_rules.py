"""Rules for names and message text, terminal sanitising, and /command parsing."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securechat.client.commands import COMMANDS, Local, Request, help_lines, parse_input
from securechat.errors import ChatError
from securechat.wire.names import (
    MAX_MESSAGE_CHARS,
    MAX_TOPIC_CHARS,
    check_room_name,
    check_text,
    check_user_name,
    fold,
)
from securechat.wire.protocol import MAX_HEADER, Decoder, Frame, encode
from securechat.wire.sanitize import sanitize

# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "alice", "Bob_99", "x-y_z", "0", "a" * 32])
def test_valid_user_name_is_returned_unchanged(name: str) -> None:
    assert check_user_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 33, "al ice", "ålice", "#alice", "a.b", "alice\n", "\nalice", "al\x00ice", "a/b"],
)
def test_invalid_user_name_is_refused_with_invalid_name(name: str) -> None:
    with pytest.raises(ChatError) as info:
        check_user_name(name)
    assert info.value.code == "invalid_name"
    assert "1-32 letters, digits" in info.value.text


def test_invalid_user_name_message_is_bounded_for_huge_input() -> None:
    with pytest.raises(ChatError) as info:
        check_user_name("x" * 100_000)
    assert len(info.value.text) < 200


@pytest.mark.parametrize("name", ["#general", "#a", "#R2-d2_x", "#" + "r" * 32])
def test_valid_room_name_is_returned_unchanged(name: str) -> None:
    assert check_room_name(name) == name


@pytest.mark.parametrize(
    "name", ["general", "#", "##x", "#a b", "#" + "r" * 33, "#room\n", "#röom", " #a", "#a!"]
)
def test_invalid_room_name_is_refused_with_invalid_room(name: str) -> None:
    with pytest.raises(ChatError) as info:
        check_room_name(name)
    assert info.value.code == "invalid_room"
    assert "'#' then 1-32" in info.value.text


def test_fold_makes_names_case_insensitive() -> None:
    assert fold("Alice") == fold("ALICE") == fold("alice") == "alice"
    assert fold("#General") == "#general"
    assert fold("bob") != fold("alice")


# -- message text --------------------------------------------------------------------


def _refusal(text: str, **kwargs: object) -> ChatError:
    with pytest.raises(ChatError) as info:
        check_text(text, **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    "text", ["hi", "x" * MAX_MESSAGE_CHARS, "🎉" * MAX_MESSAGE_CHARS, "日本語", " "]
)
def test_text_up_to_the_limit_is_accepted(text: str) -> None:
    assert check_text(text) == text


def test_message_limit_is_4000_characters() -> None:
    assert MAX_MESSAGE_CHARS == 4000


def test_text_one_over_the_limit_is_refused_and_says_nothing_was_sent() -> None:
    error = _refusal("x" * (MAX_MESSAGE_CHARS + 1))
    assert error.code == "too_long"
    assert "4001 characters" in error.text
    assert "limit is 4000" in error.text
    assert "nothing was sent" in error.text.lower()


def test_topic_limit_and_wording_follow_arguments() -> None:
    assert check_text("t" * MAX_TOPIC_CHARS, limit=MAX_TOPIC_CHARS, what="topic")
    error = _refusal("t" * (MAX_TOPIC_CHARS + 1), limit=MAX_TOPIC_CHARS, what="topic")
    assert error.code == "too_long"
    assert error.text.startswith("topic is 301 characters")


def test_empty_text_is_refused() -> None:
    error = _refusal("")
    assert error.code == "empty"
    assert "empty message" in error.text


@pytest.mark.parametrize(
    ("text", "codepoint"),
    [
        ("\x00", "U+0000"),
        ("red \x1b[31m text", "U+001B"),
        ("bell\x07", "U+0007"),
        ("two\nlines", "U+000A"),
        ("carriage\rreturn", "U+000D"),
        ("tab\there", "U+0009"),
        ("del\x7f", "U+007F"),
        ("nel\x85", "U+0085"),
        ("csi\x9b2J", "U+009B"),
        ("\x9f", "U+009F"),
        ("lone \ud800 surrogate", "U+D800"),
        ("\udfff", "U+DFFF"),
    ],
)
def test_control_characters_are_refused_with_bad_text(text: str, codepoint: str) -> None:
    error = _refusal(text)
    assert error.code == "bad_text"
    assert codepoint in error.text


def test_limit_is_checked_before_control_characters() -> None:
    # A person who pasted too much should hear about the length first.
    assert _refusal("\x1b" * (MAX_MESSAGE_CHARS + 1)).code == "too_long"


def _longest_message_frame(text: str) -> bytes:
    """The frame the server sends for ``text`` with the widest envelope it can have."""
    return encode(
        "message",
        rid=2**63 - 1,
        id=2**63 - 1,
        ts="2026-12-31T23:59:59.999999+00:00",
        room="#" + "r" * 32,
        text=text,
        **{"from": "u" * 32},
    )


@pytest.mark.parametrize(
    "char",
    ["\U0001f600", '"', "\\", "\uffff", "\U0010fffd"],
    ids=["four_byte_emoji", "quote", "backslash", "three_byte", "max_codepoint"],
)
def test_longest_valid_message_fits_in_a_message_frame(char: str) -> None:
    text = check_text(char * MAX_MESSAGE_CHARS)
    data = _longest_message_frame(text)
    decoder = Decoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert frame.str_field("text") == text
    assert len(data) - 8 <= MAX_HEADER


@settings(max_examples=300, deadline=None)
@given(st.characters())
def test_every_sendable_character_costs_at_most_four_header_bytes(char: str) -> None:
    # 4,000 characters x 4 bytes + envelope < MAX_HEADER is why the limit is safe.
    try:
        check_text(char)
    except ChatError:
        return
    assert len(json.dumps(char, ensure_ascii=False).encode("utf-8")) - 2 <= 4


# -- sanitize ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J\x1b]0;pwned\x07", "^[[2J^[]0;pwned^G"),
        ("\x00", "^@"),
        ("a\tb\nc\rd", "a^Ib^Jc^Md"),
        ("\x1f", "^_"),
        ("del\x7f", "del^?"),
        ("\x85", "<U+0085>"),
        ("\x9b31m", "<U+009B>31m"),
        ("\x80\x9f", "<U+0080><U+009F>"),
        ("abc\u202edcba", "abc<U+202E>dcba"),
        ("\u2066isolate\u2069", "<U+2066>isolate<U+2069>"),
        ("zero\u200bwidth", "zero<U+200B>width"),
        ("\u200e\u200f", "<U+200E><U+200F>"),
        ("line\u2028sep", "line<U+2028>sep"),
        ("para\u2029sep", "para<U+2029>sep"),
        ("\ufeffbom", "<U+FEFF>bom"),
        ("soft\u00adhyphen", "soft<U+00AD>hyphen"),
        ("tag\U000e0041", "tag<U+E0041>"),
        ("kaithi\U000110bd", "kaithi<U+110BD>"),
    ],
)
def test_sanitize_makes_controls_and_invisibles_visible(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello, world!",
        "café naïve",
        "日本語のテキスト 中文 한국어",
        "🎉😀👍🏽",
        "👩\u200d👩\u200d👧",
        "🏳️\u200d🌈",
        "مرحبا بالعالم",
        "<U+0041> ^[ literal",
        "\ue000 private use",
    ],
)
def test_sanitize_leaves_ordinary_text_unchanged(text: str) -> None:
    assert sanitize(text) == text


_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_sanitized_text_has_no_controls_or_format_characters_but_zwj(text: str) -> None:
    out = sanitize(text)
    bad = [c for c in out if unicodedata.category(c) in _UNSAFE_CATEGORIES and c != "\u200d"]
    assert not bad, [f"U+{ord(c):04X}" for c in bad]
    assert sanitize(out) == out


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.characters(
            exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp"], include_characters="\u200d"
        )
    )
)
def test_sanitize_is_identity_on_safe_text(text: str) -> None:
    assert sanitize(text) == text


def test_no_format_character_anywhere_in_unicode_survives_sanitize() -> None:
    # Exhaustive over every code point this Python knows: the scan ranges are right.
    unsafe = "".join(
        chr(cp)
        for cp in range(0x110000)
        if unicodedata.category(chr(cp)) in _UNSAFE_CATEGORIES and cp != 0x200D
    )
    out = sanitize(unsafe)
    assert not any(unicodedata.category(c) in _UNSAFE_CATEGORIES for c in out)


# -- /commands -----------------------------------------------------------------------

ROOM = "#general"


def _error(line: str, current_room: str | None = ROOM) -> ChatError:
    with pytest.raises(ChatError) as info:
        parse_input(line, current_room=current_room)
    return info.value


@pytest.mark.parametrize("line", ["hello", "  leading spaces", "a/b", " /join #x", "#general"])
def test_plain_line_is_said_in_current_room(line: str) -> None:
    assert parse_input(line, current_room=ROOM) == Request("say", {"room": ROOM, "text": line})


@pytest.mark.parametrize(("line", "text"), [("//x", "/x"), ("//", "/"), ("///me", "//me")])
def test_double_slash_sends_a_leading_slash(line: str, text: str) -> None:
    assert parse_input(line, current_room=ROOM) == Request("say", {"room": ROOM, "text": text})


def test_plain_line_without_a_room_is_refused_with_no_room() -> None:
    error = _error("hello", current_room=None)
    assert error.code == "no_room"
    assert "/join" in error.text


def test_plain_line_obeys_text_rules() -> None:
    assert _error("").code == "empty"
    assert _error("x" * 4001).code == "too_long"
    assert _error("ring \x07").code == "bad_text"


@pytest.mark.parametrize("line", ["/join #rust", "/JOIN #rust", "/Join #rust", "/join   #rust  "])
def test_join_is_case_insensitive_and_waits(line: str) -> None:
    assert parse_input(line, current_room=None) == Request("join", {"room": "#rust"}, waits=True)


@pytest.mark.parametrize(
    ("line", "code"),
    [("/join", "usage"), ("/join #a #b", "usage"), ("/join rust", "invalid_room")],
)
def test_join_needs_exactly_one_valid_room(line: str, code: str) -> None:
    error = _error(line)
    assert error.code == code
    if code == "usage":
        assert "/join #room" in error.text


def test_part_defaults_to_current_room() -> None:
    assert parse_input("/part", current_room=ROOM) == Request("part", {"room": ROOM}, waits=True)


def test_part_names_a_room() -> None:
    assert parse_input("/part #x", current_room=ROOM) == Request("part", {"room": "#x"}, waits=True)
    assert _error("/part x").code == "invalid_room"


def test_part_without_room_or_current_room_is_no_room() -> None:
    assert _error("/part", current_room=None).code == "no_room"


def test_who_and_rooms() -> None:
    assert parse_input("/who", current_room=ROOM) == Request("who", {"room": ROOM})
    assert parse_input("/who #x", current_room=ROOM) == Request("who", {"room": "#x"})
    assert parse_input("/rooms", current_room=None) == Request("rooms")


def test_msg_sends_private_text_to_name() -> None:
    assert parse_input("/msg Bob hi there", current_room=None) == Request(
        "msg", {"to": "Bob", "text": "hi there"}
    )


@pytest.mark.parametrize("line", ["/msg", "/msg bob", "/msg bob   ", "/msg    "])
def test_msg_without_name_and_text_is_a_usage_error(line: str) -> None:
    error = _error(line)
    assert error.code == "usage"
    assert "/msg NAME text" in error.text


def test_msg_checks_the_name_and_text() -> None:
    assert _error("/msg bad!name hi").code == "invalid_name"
    assert _error("/msg bob " + "x" * 4001).code == "too_long"


def test_topic_without_text_queries_the_current_room() -> None:
    assert parse_input("/topic", current_room=ROOM) == Request("topic", {"room": ROOM})


def test_topic_with_text_sets_it() -> None:
    assert parse_input("/topic Rust talk", current_room=ROOM) == Request(
        "topic", {"room": ROOM, "text": "Rust talk"}
    )


def test_topic_needs_a_room_and_obeys_the_topic_limit() -> None:
    assert _error("/topic", current_room=None).code == "no_room"
    assert _error("/topic " + "t" * (MAX_TOPIC_CHARS + 1)).code == "too_long"


def test_nick_renames_and_waits() -> None:
    assert parse_input("/nick carol", current_room=None) == Request(
        "nick", {"name": "carol"}, waits=True
    )
    assert _error("/nick").code == "usage"
    assert _error("/nick a b").code == "usage"
    assert _error("/nick bad.name").code == "invalid_name"


def test_time_asks_the_server() -> None:
    assert parse_input("/time", current_room=None) == Request("time")


def test_help_lists_every_command() -> None:
    result = parse_input("/help", current_room=None)
    assert isinstance(result, Local)
    assert result.kind == "help"
    assert result.lines == help_lines()
    assert len(result.lines) == len(COMMANDS) + 1
    for command, line in zip(COMMANDS, result.lines, strict=False):
        assert line.startswith(command.usage)
        assert command.help in line
    assert "'//'" in result.lines[-1]


@pytest.mark.parametrize("topic", ["join", "/join", "JOIN"])
def test_help_on_one_command_is_one_line(topic: str) -> None:
    result = parse_input(f"/help {topic}", current_room=None)
    assert isinstance(result, Local)
    assert result.lines == ("/join #room  join a room (creating it if new) and make it current",)


def test_help_on_unknown_command_is_refused() -> None:
    error = _error("/help frobnicate")
    assert error.code == "unknown_command"
    assert "/frobnicate" in error.text


def test_every_command_has_usage_and_help_text() -> None:
    for command in COMMANDS:
        assert command.usage.startswith(f"/{command.name}")
        assert command.help
        assert f"{command.usage}  {command.help}" in help_lines(command.name)


@pytest.mark.parametrize("line", ["/frobnicate", "/frobnicate now", "/", "/ join"])
def test_unknown_command_is_refused(line: str) -> None:
    error = _error(line)
    assert error.code == "unknown_command"
    assert "/help" in error.text


def test_quit_is_local_with_reason() -> None:
    assert parse_input("/quit gone fishing", current_room=ROOM) == Local("quit", arg="gone fishing")
    assert parse_input("/QUIT", current_room=None) == Local("quit")


def test_parsed_requests_encode_as_frames() -> None:
    request = parse_input("/msg bob héllo 🎉", current_room=ROOM)
    assert isinstance(request, Request)
    decoder = Decoder()
    decoder.feed(encode(request.type, **request.fields))
    assert decoder.next_frame() == Frame("msg", {"to": "bob", "text": "héllo 🎉"})
