"""pbx.sip.framing.StreamFramer: RFC 3261 18.3 stream framing and RFC 5626 3.5.1 keep-alives."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.errors import RemoteProtocolError
from pbx.sip.framing import KEEPALIVE, KeepAliveReceived, StreamFramer
from pbx.sip.message import SipRequest
from pbx.sip.parse import MAX_MESSAGE_SIZE, parse_message


def message(body: bytes = b"", *, cseq: int = 1, length_header: str | None = None) -> bytes:
    length = length_header if length_header is not None else f"Content-Length: {len(body)}"
    return (
        "OPTIONS sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK74bf9\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=9fxced76sl\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: 3848276298220188511@example.com\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        f"{length}\r\n"
        "\r\n"
    ).encode() + body


def feed_bytewise(framer: StreamFramer, data: bytes) -> list[bytes | KeepAliveReceived]:
    out: list[bytes | KeepAliveReceived] = []
    for i in range(len(data)):
        out.extend(framer.feed(data[i : i + 1]))
    return out


def test_one_message_in_one_chunk() -> None:
    framer = StreamFramer()
    data = message(b"hello")
    assert framer.feed(data) == [data]
    assert framer.buffered == 0


def test_messages_fed_one_byte_at_a_time() -> None:
    first, second = message(b"v=0\r\n\r\n\r\nbody with blank lines", cseq=1), message(cseq=2)
    framer = StreamFramer()
    assert feed_bytewise(framer, first + second) == [first, second]
    assert framer.buffered == 0
    parsed = parse_message(first, stream=True)
    assert isinstance(parsed, SipRequest)
    assert parsed.body == b"v=0\r\n\r\n\r\nbody with blank lines"


def test_several_messages_in_one_chunk_and_a_split_one() -> None:
    a, b, c = message(b"a", cseq=1), message(b"bb", cseq=2), message(b"ccc", cseq=3)
    framer = StreamFramer()
    stream = a + b + c
    cut = len(a) + len(b) + 10
    assert framer.feed(stream[:cut]) == [a, b]
    assert framer.buffered == 10
    assert framer.feed(stream[cut:]) == [c]


def test_split_inside_the_body() -> None:
    data = message(b"0123456789")
    framer = StreamFramer()
    assert framer.feed(data[:-4]) == []
    assert framer.buffered == len(data) - 4
    assert framer.feed(data[-4:]) == [data]


def test_crlf_crlf_between_messages_is_a_ping() -> None:
    framer = StreamFramer()
    data = message(cseq=1)
    out = framer.feed(b"\r\n\r\n" + data + b"\r\n\r\n\r\n\r\n" + data)
    assert out == [KEEPALIVE, data, KEEPALIVE, KEEPALIVE, data]
    assert isinstance(out[0], KeepAliveReceived)
    assert out[0] is KEEPALIVE


def test_ping_fed_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    assert feed_bytewise(framer, b"\r\n\r\n") == [KEEPALIVE]
    assert framer.buffered == 0
    assert feed_bytewise(framer, b"\r\n\r\n" + message()) == [KEEPALIVE, message()]


def test_single_leading_crlf_is_skipped() -> None:
    framer = StreamFramer()
    data = message()
    assert framer.feed(b"\r\n" + data) == [data]
    assert framer.feed(b"\r\n") == []
    assert framer.buffered == 0  # a pending pong or half ping is not a message in progress
    assert framer.feed(data) == [data]


def test_compact_and_folded_content_length() -> None:
    framer = StreamFramer()
    compact = message(b"xyz", length_header="l: 3")
    folded = message(b"xyz", length_header="Content-Length:\r\n   3")
    odd_case = message(b"xyz", length_header="CONTENT-LENGTH :3")
    assert framer.feed(compact + folded + odd_case) == [compact, folded, odd_case]


def test_equal_duplicate_content_lengths_are_fine() -> None:
    framer = StreamFramer()
    data = message(b"xy", length_header="Content-Length: 2\r\nl: 2")
    assert framer.feed(data) == [data]


@pytest.mark.parametrize(
    "length_header",
    [
        "X-Nothing: here",  # missing
        "Content-Length: -999",
        "Content-Length: five",
        "Content-Length: 1.5",
        "Content-Length: 13\r\nContent-Length: 5",
        "Content-Length:",
    ],
)
def test_bad_content_length_is_a_framing_error(length_header: str) -> None:
    framer = StreamFramer()
    with pytest.raises(RemoteProtocolError) as info:
        framer.feed(message(b"hello", length_header=length_header))
    assert info.value.status_hint == 400
    # The stream cannot be resynchronised: the framer refuses anything further.
    with pytest.raises(RemoteProtocolError):
        framer.feed(message())


def test_content_length_over_the_limit_fails_as_soon_as_the_head_is_read() -> None:
    framer = StreamFramer()
    with pytest.raises(RemoteProtocolError) as info:
        framer.feed(message(length_header=f"Content-Length: {MAX_MESSAGE_SIZE}"))
    assert info.value.status_hint == 513


def test_absurd_content_length_is_refused_without_overflow() -> None:
    framer = StreamFramer()
    with pytest.raises(RemoteProtocolError):
        framer.feed(message(length_header="Content-Length: " + "9" * 400))


def test_endless_header_block_is_refused_at_the_limit() -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:bob@example.com SIP/2.0\r\n")
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    fed = len(b"OPTIONS sip:bob@example.com SIP/2.0\r\n")
    while fed + len(line) <= MAX_MESSAGE_SIZE:
        assert framer.feed(line) == []
        fed += len(line)
        assert framer.buffered == fed
    with pytest.raises(RemoteProtocolError) as info:
        framer.feed(line)
    assert info.value.status_hint == 513
    assert framer.buffered == 0


def test_message_of_exactly_the_limit_is_framed() -> None:
    head = len(message(length_header="Content-Length: 00000"))
    body = b"b" * (MAX_MESSAGE_SIZE - head)
    data = message(body)
    assert len(data) == MAX_MESSAGE_SIZE
    framer = StreamFramer()
    assert framer.feed(data) == [data]
    too_big = message(body + b"!")
    with pytest.raises(RemoteProtocolError):
        StreamFramer().feed(too_big)


def test_custom_limit() -> None:
    framer = StreamFramer(max_message_size=100)
    with pytest.raises(RemoteProtocolError):
        framer.feed(message())


def test_bytewise_feeding_of_a_large_message_is_not_quadratic() -> None:
    body = b"z" * 60000
    data = message(body)
    framer = StreamFramer()
    # Byte-at-a-time through the header block, then the body in one go.
    head_end = data.index(b"\r\n\r\n") + 4
    assert feed_bytewise(framer, data[:head_end]) == []
    assert framer.feed(data[head_end:]) == [data]


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.one_of(st.just(b"\r\n\r\n"), st.binary(max_size=40).map(message)), max_size=5
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_chunking_gives_the_same_frames(items: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(items)
    expected = [KEEPALIVE if item == b"\r\n\r\n" else item for item in items]
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    framer = StreamFramer()
    out: list[bytes | KeepAliveReceived] = []
    for lo, hi in itertools.pairwise(bounds):
        out.extend(framer.feed(stream[lo:hi]))
    assert out == expected
    assert framer.buffered == 0


def test_a_framer_that_failed_is_freed_by_reference_counting() -> None:
    # It keeps the error's message and status, not the raised error: that one's traceback
    # holds the framer, a cycle that only a full collection frees, and the server runs none
    # under load (issue #21). A peer could leave one behind per bad TCP connection.
    import gc
    import weakref

    collecting = gc.isenabled()
    gc.disable()
    try:
        framer = StreamFramer()
        for _ in range(2):  # the failure, then the refusal of anything further
            with pytest.raises(RemoteProtocolError) as info:
                framer.feed(message(b"hello", length_header="Content-Length:"))
            assert info.value.status_hint == 400
        del info
        gone = weakref.ref(framer)
        del framer
        assert gone() is None
    finally:
        if collecting:
            gc.enable()
