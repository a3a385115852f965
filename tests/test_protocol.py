"""The wire codec: one table drives encode and decode; every case is read whole,
byte by byte and with trailing data; limits are enforced before buffering; and
garbage, however it is chunked, raises only ProtocolError."""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securechat.errors import FrameTooLarge, ProtocolError
from securechat.wire.protocol import (
    MAX_BODY,
    MAX_HEADER,
    PREFIX,
    PROTOCOL_VERSION,
    Decoder,
    Frame,
    encode,
    encode_frame,
)

# The prefix layout written out independently of protocol.PREFIX, so a change to
# the codec's struct cannot silently change what these tests expect.
_PREFIX_FORMAT = "!BBHI"


def wire(header: bytes, body: bytes = b"", *, version: int = 1, flags: int = 0) -> bytes:
    """The bytes of a frame with this exact header and body."""
    return struct.pack(_PREFIX_FORMAT, version, flags, len(header), len(body)) + header + body


def prefix(header_len: int, body_len: int, *, version: int = 1, flags: int = 0) -> bytes:
    """Just the 8-byte prefix."""
    return struct.pack(_PREFIX_FORMAT, version, flags, header_len, body_len)


def decode_all(data: bytes) -> list[Frame]:
    """Every frame in ``data`` fed at once."""
    decoder = Decoder()
    decoder.feed(data)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    assert decoder.buffered == 0
    return frames


# -- the table ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A frame, its exact wire bytes, and what decoding those bytes gives back."""

    id: str
    frame: Frame
    wire: bytes
    decoded: Frame | None = None  # None: the same as ``frame``

    @property
    def expected(self) -> Frame:
        return self.frame if self.decoded is None else self.decoded


BINARY_BODY = bytes(range(256)) * 3

CASES = [
    Case(
        "bare_type",
        Frame("ping"),
        b'\x01\x00\x00\x0f\x00\x00\x00\x00{"type":"ping"}',
    ),
    Case(
        "string_and_int_fields",
        Frame("say", {"rid": 1, "room": "#general", "text": "hi"}),
        wire(b'{"type":"say","rid":1,"room":"#general","text":"hi"}'),
    ),
    Case(
        "non_ascii_text_is_raw_utf8",
        Frame("say", {"text": "héllo wörld, 日本語, 🎉, مرحبا"}),
        wire('{"type":"say","text":"héllo wörld, 日本語, 🎉, مرحبا"}'.encode()),
    ),
    Case(
        "json_specials_are_escaped",
        Frame("say", {"text": 'a "quote" and a \\ backslash'}),
        wire(rb'{"type":"say","text":"a \"quote\" and a \\ backslash"}'),
    ),
    Case(
        "binary_body",
        Frame("file_chunk", {"id": 7, "seq": 0}, BINARY_BODY),
        wire(b'{"type":"file_chunk","id":7,"seq":0}', BINARY_BODY),
    ),
    Case(
        "body_that_looks_like_a_prefix",
        Frame("file_chunk", {"id": 1}, prefix(5, 5) + b'{"type":"x"}'),
        wire(b'{"type":"file_chunk","id":1}', prefix(5, 5) + b'{"type":"x"}'),
    ),
    Case(
        "none_fields_are_omitted",
        Frame("topic", {"room": "#a", "text": None, "rid": None}),
        wire(b'{"type":"topic","room":"#a"}'),
        decoded=Frame("topic", {"room": "#a"}),
    ),
    Case(
        "nested_values_bool_and_nested_null",
        Frame("rooms", {"rooms": [{"name": "#a", "users": 2, "topic": None}], "more": False}),
        wire(b'{"type":"rooms","rooms":[{"name":"#a","users":2,"topic":null}],"more":false}'),
    ),
    Case(
        "large_integers_and_negative",
        Frame("message", {"id": 2**63 - 1, "delta": -5}),
        wire(b'{"type":"message","id":9223372036854775807,"delta":-5}'),
    ),
]
CASE_IDS = [c.id for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode_gives_exact_wire_bytes(case: Case) -> None:
    assert encode_frame(case.frame) == case.wire


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode_shorthand_matches_encode_frame(case: Case) -> None:
    assert encode(case.frame.type, case.frame.body, **case.frame.fields) == case.wire


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decode_whole_frame(case: Case) -> None:
    decoder = Decoder()
    decoder.feed(case.wire)
    assert decoder.next_frame() == case.expected
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decode_byte_by_byte_yields_frame_only_at_last_byte(case: Case) -> None:
    decoder = Decoder()
    for i, byte in enumerate(case.wire[:-1]):
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None, f"frame returned after only {i + 1} bytes"
        assert decoder.buffered == i + 1
    decoder.feed(case.wire[-1:])
    assert decoder.next_frame() == case.expected
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


@pytest.mark.parametrize("cut", [1, 7, 8, 9, 20])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decode_with_trailing_data_keeps_the_rest(case: Case, cut: int) -> None:
    following = encode("pong", seq=2)
    decoder = Decoder()
    decoder.feed(case.wire + following[:cut])
    assert decoder.next_frame() == case.expected
    assert decoder.next_frame() is None
    assert decoder.buffered == cut
    decoder.feed(following[cut:])
    assert decoder.next_frame() == Frame("pong", {"seq": 2})
    assert decoder.buffered == 0


def test_every_case_back_to_back_in_one_feed() -> None:
    assert decode_all(b"".join(c.wire for c in CASES)) == [c.expected for c in CASES]


def test_decoded_fields_do_not_include_type() -> None:
    frame = decode_all(wire(b'{"type":"say","text":"x"}'))[0]
    assert frame.type == "say"
    assert dict(frame.fields) == {"text": "x"}


def test_prefix_struct_is_eight_bytes_big_endian() -> None:
    assert PREFIX.size == 8
    packed = PREFIX.pack(PROTOCOL_VERSION, 0, 0x0102, 0x03040506)
    assert packed == b"\x01\x00\x01\x02\x03\x04\x05\x06"


def test_long_stream_is_compacted_without_losing_frames() -> None:
    # Well past the decoder's 64 KiB compaction threshold, fed in odd-sized chunks.
    frames = [Frame("file_chunk", {"seq": i}, bytes([i % 256]) * 5000) for i in range(60)]
    data = b"".join(encode_frame(f) for f in frames)
    decoder = Decoder()
    got: list[Frame] = []
    for start in range(0, len(data), 7777):
        decoder.feed(data[start : start + 7777])
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
    assert got == frames
    assert decoder.buffered == 0


# -- limits -----------------------------------------------------------------------


def _frame_with_header_size(size: int) -> Frame:
    """A frame whose encoded header is exactly ``size`` bytes."""
    envelope = len(b'{"type":"x","p":""}')
    return Frame("x", {"p": "a" * (size - envelope)})


@pytest.mark.parametrize(
    ("header_len", "body_len"),
    [(MAX_HEADER + 1, 0), (0xFFFF, 0), (10, MAX_BODY + 1), (10, 0xFFFFFFFF)],
    ids=["header_one_over", "header_u16_max", "body_one_over", "body_u32_max"],
)
def test_oversize_prefix_is_refused_before_buffering(header_len: int, body_len: int) -> None:
    decoder = Decoder()
    data = prefix(header_len, body_len)
    for byte in data[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    with pytest.raises(FrameTooLarge, match="limit"):
        decoder.feed(data[-1:])
    # Nothing of the header or body has been accepted: just the prefix.
    assert decoder.buffered == PREFIX.size


def test_oversize_prefix_after_a_valid_frame_is_refused_with_nothing_more_buffered() -> None:
    decoder = Decoder()
    decoder.feed(encode("ping"))
    decoder.feed(prefix(MAX_HEADER + 1, 0))
    with pytest.raises(FrameTooLarge):
        while decoder.next_frame() is not None:
            pass
    assert decoder.buffered == PREFIX.size


def test_oversize_message_is_refused_by_decoder_with_custom_limits() -> None:
    decoder = Decoder(max_header=100, max_body=10)
    decoder.feed(wire(b'{"type":"ok"}', b"0123456789"))
    assert decoder.next_frame() == Frame("ok", {}, b"0123456789")
    with pytest.raises(FrameTooLarge, match="body of 11 bytes"):
        decoder.feed(prefix(5, 11))


def test_header_of_exactly_max_header_is_accepted() -> None:
    frame = _frame_with_header_size(MAX_HEADER)
    data = encode_frame(frame)
    assert len(data) == PREFIX.size + MAX_HEADER
    assert decode_all(data) == [frame]


def test_body_of_exactly_max_body_is_accepted() -> None:
    frame = Frame("file_chunk", {"seq": 1}, b"\xff" * MAX_BODY)
    assert decode_all(encode_frame(frame)) == [frame]


def test_encode_refuses_header_over_max_header() -> None:
    with pytest.raises(FrameTooLarge, match=f"{MAX_HEADER + 1} bytes"):
        encode_frame(_frame_with_header_size(MAX_HEADER + 1))


def test_encode_refuses_body_over_max_body() -> None:
    with pytest.raises(FrameTooLarge, match=f"{MAX_BODY + 1} bytes"):
        encode_frame(Frame("file_chunk", {}, b"\0" * (MAX_BODY + 1)))


def test_encode_refuses_unserialisable_field_with_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="cannot encode 'x'"):
        encode_frame(Frame("x", {"v": object()}))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_encode_refuses_nan_and_infinity_that_decode_would_reject(value: float) -> None:
    with pytest.raises(ProtocolError):
        encode_frame(Frame("x", {"v": value}))


# -- malformed --------------------------------------------------------------------

_DEEP = 10_000
_DEEP_CLOSED = 8_000

# (header bytes, a regex the error message must match) for headers that are complete
# but wrong; the error must come only once the whole frame is in.
MALFORMED_HEADERS: list[tuple[str, bytes, str]] = [
    ("invalid_utf8", b'{"type":"\xff\xfe"}', "not UTF-8 JSON"),
    ("truncated_utf8", b'{"type":"x","t":"\xe6\x97"}', "not UTF-8 JSON"),
    ("invalid_json", b'{"type":', "not UTF-8 JSON"),
    ("trailing_garbage", b'{"type":"x"} x', "not UTF-8 JSON"),
    ("json_array", b'["type","x"]', "must be a JSON object"),
    ("json_string", b'"ping"', "must be a JSON object"),
    ("json_null", b"null", "must be a JSON object"),
    ("json_number", b"42", "must be a JSON object"),
    ("missing_type", b'{"rid":1}', "needs a 'type'"),
    ("null_type", b'{"type":null}', "needs a 'type'"),
    ("int_type", b'{"type":1}', "needs a 'type'"),
    ("list_type", b'{"type":["ping"]}', "needs a 'type'"),
    ("empty_type", b'{"type":""}', "needs a 'type'"),
    ("uppercase_type", b'{"type":"Ping"}', "needs a 'type'"),
    ("type_with_space", b'{"type":"pi ng"}', "needs a 'type'"),
    ("type_with_newline", b'{"type":"ping\\n"}', "needs a 'type'"),
    ("type_leading_underscore", b'{"type":"_ping"}', "needs a 'type'"),
    ("type_33_chars", b'{"type":"' + b"a" * 33 + b'"}', "needs a 'type'"),
    ("nan", b'{"type":"x","v":NaN}', "NaN is not valid JSON"),
    ("infinity", b'{"type":"x","v":Infinity}', "Infinity is not valid JSON"),
    ("minus_infinity", b'{"type":"x","v":-Infinity}', "Infinity is not valid JSON"),
    ("deep_unclosed", b'{"type":"x","v":' + b"[" * _DEEP, "not UTF-8 JSON"),
    (
        "deep_closed",
        b'{"type":"x","v":' + b"[" * _DEEP_CLOSED + b"]" * _DEEP_CLOSED + b"}",
        "not UTF-8 JSON",
    ),
    ("huge_integer", b'{"type":"x","v":' + b"9" * 5000 + b"}", "not UTF-8 JSON"),
]


@pytest.mark.parametrize(
    ("header", "message"),
    [pytest.param(h, m, id=i) for i, h, m in MALFORMED_HEADERS],
)
def test_malformed_header_raises_protocol_error_once_complete(header: bytes, message: str) -> None:
    assert len(header) <= MAX_HEADER
    data = wire(header, b"body")
    decoder = Decoder()
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None
    decoder.feed(data[-1:])
    with pytest.raises(ProtocolError, match=message):
        decoder.next_frame()


@pytest.mark.parametrize(
    ("header", "message"),
    [pytest.param(h, m, id=i) for i, h, m in MALFORMED_HEADERS if len(h) < 100],
)
def test_malformed_header_fed_byte_by_byte_raises_protocol_error(
    header: bytes, message: str
) -> None:
    data = wire(header)
    decoder = Decoder()
    for byte in data[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(data[-1:])
    with pytest.raises(ProtocolError, match=message):
        decoder.next_frame()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(wire(b'{"type":"x"}', version=0), "unsupported protocol version 0", id="v0"),
        pytest.param(wire(b'{"type":"x"}', version=2), "unsupported protocol version 2", id="v2"),
        pytest.param(wire(b'{"type":"x"}', version=0x7B), "version 123", id="json_brace"),
        pytest.param(wire(b'{"type":"x"}', flags=1), "flags must be 0, got 0x01", id="flag1"),
        pytest.param(wire(b'{"type":"x"}', flags=0x80), "flags must be 0, got 0x80", id="flag80"),
        pytest.param(prefix(0, 0), "empty frame header", id="zero_header"),
        pytest.param(prefix(0, 5) + b"hello", "empty frame header", id="zero_header_body"),
    ],
)
def test_bad_prefix_raises_protocol_error_at_eighth_byte(data: bytes, message: str) -> None:
    decoder = Decoder()
    for byte in data[: PREFIX.size - 1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    with pytest.raises(ProtocolError, match=message):
        decoder.feed(data[PREFIX.size - 1 : PREFIX.size])


def test_plaintext_http_request_is_refused_as_bad_version() -> None:
    decoder = Decoder()
    with pytest.raises(ProtocolError, match="unsupported protocol version 71"):
        decoder.feed(b"GET / HTTP/1.1\r\n")


def test_protocol_errors_are_not_frame_too_large_for_malformed_json() -> None:
    decoder = Decoder()
    decoder.feed(wire(b"{"))
    with pytest.raises(ProtocolError) as info:
        decoder.next_frame()
    assert not isinstance(info.value, FrameTooLarge)


def test_valid_frame_before_a_malformed_one_is_still_returned() -> None:
    decoder = Decoder()
    decoder.feed(encode("say", text="last words") + wire(b'{"type":"x"}', version=9))
    assert decoder.next_frame() == Frame("say", {"text": "last words"})
    with pytest.raises(ProtocolError, match="version 9"):
        decoder.next_frame()


def test_valid_frame_before_an_oversize_prefix_is_still_returned() -> None:
    decoder = Decoder()
    decoder.feed(encode("bye", reason="done") + prefix(MAX_HEADER + 1, 0))
    assert decoder.next_frame() == Frame("bye", {"reason": "done"})
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


# -- Frame accessors ---------------------------------------------------------------

_FRAME = Frame(
    "t",
    {"s": "text", "empty": "", "i": 42, "zero": 0, "t": True, "f": False, "fl": 1.0, "n": None},
)


def test_get_returns_field_or_default() -> None:
    assert _FRAME.get("s") == "text"
    assert _FRAME.get("absent") is None
    assert _FRAME.get("absent", 7) == 7


@pytest.mark.parametrize(("key", "value"), [("s", "text"), ("empty", "")])
def test_str_field_returns_string(key: str, value: str) -> None:
    assert _FRAME.str_field(key) == value
    assert _FRAME.str_field(key, optional=True) == value


@pytest.mark.parametrize("key", ["absent", "n", "i", "t", "fl"])
def test_str_field_refuses_missing_or_non_string(key: str) -> None:
    with pytest.raises(ProtocolError, match=f"'t' frame needs a string field '{key}'"):
        _FRAME.str_field(key)


@pytest.mark.parametrize("key", ["absent", "n"])
def test_optional_str_field_reads_missing_as_empty(key: str) -> None:
    assert _FRAME.str_field(key, optional=True) == ""


@pytest.mark.parametrize("key", ["i", "t"])
def test_optional_str_field_still_refuses_wrong_type(key: str) -> None:
    with pytest.raises(ProtocolError):
        _FRAME.str_field(key, optional=True)


@pytest.mark.parametrize(("key", "value"), [("i", 42), ("zero", 0)])
def test_int_field_returns_integer(key: str, value: int) -> None:
    assert _FRAME.int_field(key) == value
    assert _FRAME.int_field(key, optional=True) == value


@pytest.mark.parametrize("key", ["t", "f", "fl", "s", "absent", "n"])
def test_int_field_refuses_bool_float_string_and_missing(key: str) -> None:
    with pytest.raises(ProtocolError, match=f"'t' frame needs an integer field '{key}'"):
        _FRAME.int_field(key)


@pytest.mark.parametrize("key", ["absent", "n"])
def test_optional_int_field_reads_missing_as_none(key: str) -> None:
    assert _FRAME.int_field(key, optional=True) is None


@pytest.mark.parametrize("key", ["t", "f", "s"])
def test_optional_int_field_still_refuses_bool_and_string(key: str) -> None:
    with pytest.raises(ProtocolError):
        _FRAME.int_field(key, optional=True)


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_int_field_accepts_the_signed_64_bit_range(value: int) -> None:
    assert Frame("t", {"i": value}).int_field("i", optional=True) == value


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**70, -(10**100)])
def test_int_field_refuses_integers_outside_64_bits(value: int) -> None:
    frame = decode_all(encode("t", i=value))[0]
    for optional in (False, True):
        with pytest.raises(ProtocolError, match="'i' is outside the 64-bit integer range"):
            frame.int_field("i", optional=optional)


def test_decoded_true_is_not_an_integer_field() -> None:
    frame = decode_all(wire(b'{"type":"x","rid":true}'))[0]
    with pytest.raises(ProtocolError):
        frame.int_field("rid")


# -- hypothesis ---------------------------------------------------------------------

_PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_types = st.from_regex(r"[a-z][a-z_]{0,31}", fullmatch=True)
_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
_json_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_json_values = st.recursive(
    st.one_of(st.none(), _json_scalars),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=10,
)
_frames = st.builds(
    Frame,
    _types,
    st.dictionaries(
        _text.filter(lambda k: k != "type"),
        st.one_of(_json_scalars, st.lists(_json_values, max_size=3)),
        max_size=5,
    ),
    st.binary(max_size=200),
)


def _chunks(data: bytes, draw: Any) -> list[bytes]:
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=12))
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _feed_garbage(data: bytes, chunks: list[bytes]) -> list[Frame]:
    """Feed chunks, collecting frames, until the end or a ProtocolError."""
    decoder = Decoder()
    frames: list[Frame] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
    except ProtocolError:
        pass
    return frames


_garbage = st.one_of(
    st.binary(max_size=400),
    # Start with a plausible prefix so that the header parser is reached too.
    st.builds(
        lambda h, b, rest: prefix(h, b) + rest,
        st.integers(0, 300),
        st.integers(0, 300),
        st.binary(max_size=600),
    ),
)


@_PROPERTY
@given(_garbage, st.data())
def test_garbage_in_any_chunks_raises_only_protocol_error(data: bytes, draw: st.DataObject) -> None:
    frames = _feed_garbage(data, _chunks(data, draw.draw))
    assert all(isinstance(f, Frame) for f in frames)


@_PROPERTY
@given(st.lists(_frames, max_size=6), st.data())
def test_frames_survive_any_chunking(frames: list[Frame], draw: st.DataObject) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    decoder = Decoder()
    got: list[Frame] = []
    for chunk in _chunks(data, draw.draw):
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
    assert got == frames
    assert decoder.buffered == 0


_json_ish = st.text(alphabet='{}[]":,0123456789.eE+-truefalsnNIiy\\ ptx', max_size=80).map(
    lambda s: s.encode("utf-8")
)
_mutated_json = st.builds(
    lambda h, i, b: h[:i] + b + h[i:],
    st.sampled_from([b'{"type":"x","v":[1,{"a":null}]}', b'{"type":"say","text":"hi"}']),
    st.integers(0, 30),
    st.binary(min_size=1, max_size=4),
)


@_PROPERTY
@given(
    st.one_of(st.binary(min_size=1, max_size=300), _json_ish, _mutated_json), st.binary(max_size=50)
)
def test_valid_prefix_with_random_header_raises_only_protocol_error(
    header: bytes, body: bytes
) -> None:
    if not header:
        header = b"{"
    decoder = Decoder()
    decoder.feed(wire(header, body))
    try:
        frame = decoder.next_frame()
    except ProtocolError:
        return
    assert frame is not None
    assert frame.body == body
    assert "type" not in frame.fields
    # Whatever the decoder accepted, it is a JSON object with a valid type.
    assert json.loads(header)["type"] == frame.type
